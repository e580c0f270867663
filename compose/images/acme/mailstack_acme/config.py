"""The service's configuration (acme.toml, rendered by mailstack into config/acme)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    directory_url: str
    email: str
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    state_dir: Path
    challenge_dir: Path
    ca_bundle: str
    retry_min: int
    retry_max: int

    @classmethod
    def load(cls, path: str) -> Config:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            directory_url=data["directory_url"],
            email=data["email"],
            names=tuple(data["names"]),
            kinds=tuple(data["kinds"]),
            state_dir=Path(data["state_dir"]),
            challenge_dir=Path(data["challenge_dir"]),
            ca_bundle=data.get("ca_bundle", ""),
            retry_min=int(data["retry_min_seconds"]),
            retry_max=int(data["retry_max_seconds"]),
        )
