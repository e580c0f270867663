"""What `mailstack check` found: one result per probe, each pass, warn or fail, with the fix."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

# skip: the probe does not apply to this site (an offline site has no resolver).
Status = Literal["pass", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Result:
    probe: str  # what was probed: "imaps 127.0.0.1:993", "round trip", "dkim rsa"
    status: Status
    reason: str  # one line: what was seen
    fix: str = ""  # one line: what to do about it (empty when it passed)


def passed(probe: str, reason: str) -> Result:
    return Result(probe, "pass", reason)


def warned(probe: str, reason: str, fix: str) -> Result:
    return Result(probe, "warn", reason, fix)


def failed(probe: str, reason: str, fix: str) -> Result:
    return Result(probe, "fail", reason, fix)


def skipped(probe: str, reason: str) -> Result:
    return Result(probe, "skip", reason)


@dataclass
class CheckReport:
    site: str
    target: str
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.status != "fail" for r in self.results)

    def to_json(self) -> str:
        data = {
            "site": self.site,
            "target": self.target,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "results": [asdict(r) for r in self.results],
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
