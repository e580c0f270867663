"""Audit findings and the report they make: Markdown for people, JSON for machines."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["pass", "fail", "skip"]


@dataclass(frozen=True)
class Item:
    """One audited requirement: pass or fail with the evidence, or skip with the reason."""

    id: str  # stable, dotted: tls.protocols.smtp, container.redis.read_only, host.lynis
    title: str
    status: Status
    detail: str
    source: str  # the standard or document the requirement comes from

    @classmethod
    def check(cls, id: str, title: str, ok: bool, detail: str, source: str) -> Item:
        return cls(id, title, "pass" if ok else "fail", detail, source)


@dataclass
class Report:
    site: str
    target: str  # "local" or the host's name
    started: str  # ISO 8601, UTC
    seconds: float = 0.0
    tools: dict[str, str] = field(default_factory=dict)  # tool → version, or why it did not run
    items: list[Item] = field(default_factory=list)
    evidence: dict[str, object] = field(default_factory=dict)  # raw tool output, by tool and port

    @property
    def ok(self) -> bool:
        return not any(item.status == "fail" for item in self.items)

    def counts(self) -> dict[str, int]:
        counted = Counter(item.status for item in self.items)
        return {status: counted.get(status, 0) for status in ("pass", "fail", "skip")}

    def to_json(self) -> str:
        data = {
            "site": self.site,
            "target": self.target,
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
            "counts": self.counts(),
            "tools": self.tools,
            "items": [asdict(item) for item in self.items],
            "evidence": self.evidence,
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    def to_markdown(self) -> str:
        counts = self.counts()
        lines = [
            f"# mailstack audit: {self.site} ({self.target})",
            "",
            f"Started {self.started}, took {self.seconds:.0f} s. "
            f"**{counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skipped.**",
            "",
            "## Tools",
            "",
            *[f"- {tool}: {version}" for tool, version in sorted(self.tools.items())],
            "",
            "## Findings",
            "",
            "| Result | Item | Detail | Source |",
            "|---|---|---|---|",
        ]
        marks = {"pass": "PASS", "fail": "**FAIL**", "skip": "skip"}
        for item in self.items:
            cells = (marks[item.status], f"`{item.id}` {item.title}", item.detail, item.source)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        markdown, data = directory / "audit.md", directory / "audit.json"
        markdown.write_text(self.to_markdown(), encoding="utf-8")
        data.write_text(self.to_json(), encoding="utf-8")
        return markdown, data


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
