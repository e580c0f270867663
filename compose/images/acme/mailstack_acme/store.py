"""The state directory's acme/ (bind-mounted): keys by generation, the live certificates,
status.json, and the lock that keeps to one attempt at a time."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .clock import iso, now
from .config import Config
from .keys import spki_sha256


def write_atomic(path: Path, content: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` by rename: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def write_new(path: Path, content: bytes) -> bool:
    """Create ``path`` (0600) unless it exists; never replaces a key."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    write_atomic(tmp, content)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


class Store:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.state_dir

    def live(self, kind: str, suffix: str) -> Path:
        return self.root / "tls" / "live" / f"{kind}.{suffix}"

    def key_path(self, kind: str, generation: int) -> Path:
        return self.root / "keys" / f"{kind}-{generation:04d}.key"

    def live_cert(self, kind: str) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.live(kind, "crt").read_bytes())[0]

    def generations(self, kind: str) -> dict[int, Path]:
        found = {}
        for path in (self.root / "keys").glob(f"{kind}-*.key"):
            number = path.stem.removeprefix(f"{kind}-")
            if number.isdigit():
                found[int(number)] = path
        return dict(sorted(found.items()))

    def load_key(self, path: Path) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{path} is neither an ECDSA nor an RSA key")
        return key

    def generation_in_use(self, kind: str) -> int | None:
        served = spki_sha256(self.live_cert(kind).public_key())
        for generation, path in self.generations(kind).items():
            if spki_sha256(self.load_key(path).public_key()) == served:
                return generation
        return None

    def status(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "status.json").read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def save_status(self, status: dict[str, Any]) -> None:
        status["updated"] = iso(now())
        write_atomic(
            self.root / "status.json", (json.dumps(status, indent=2, sort_keys=True) + "\n").encode()
        )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One attempt at a time (the daemon, or `renew` run with docker compose exec)."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
