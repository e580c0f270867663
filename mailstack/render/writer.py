"""Plan → diff → write for the rendered tree.

The output directory carries a manifest of the files mailstack wrote, so that a re-render
removes files it no longer plans and never touches files it did not write.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mailstack.errors import OutputError

MANIFEST = ".mailstack-render.json"


class Change(StrEnum):
    CREATE = "create"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    REMOVE = "remove"


@dataclass(frozen=True)
class PlannedFile:
    path: str  # relative, POSIX
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Action:
    path: str
    change: Change
    planned: PlannedFile | None


def with_manifest(files: Iterable[PlannedFile]) -> list[PlannedFile]:
    files = sorted(files, key=lambda f: f.path)
    listing = {"generated_by": "mailstack", "files": [f.path for f in files]}
    manifest = PlannedFile(MANIFEST, (json.dumps(listing, indent=2) + "\n").encode())
    return [*files, manifest]


def diff(out_dir: Path, files: list[PlannedFile]) -> list[Action]:
    """Compare the plan with what is on disk; nothing is written."""
    previous = _previous_files(out_dir)
    actions = []
    for planned in files:
        target = out_dir / planned.path
        if not target.exists():
            change = Change.CREATE
        elif target.read_bytes() != planned.content or stat.S_IMODE(target.stat().st_mode) != planned.mode:
            change = Change.CHANGED
        else:
            change = Change.UNCHANGED
        actions.append(Action(planned.path, change, planned))
    planned_paths = {f.path for f in files}
    for stale in sorted(previous - planned_paths):
        if (out_dir / stale).exists():
            actions.append(Action(stale, Change.REMOVE, None))
    return actions


def write(out_dir: Path, actions: list[Action]) -> None:
    for action in actions:
        target = out_dir / action.path
        if action.change is Change.REMOVE:
            target.unlink()
        elif action.change is not Change.UNCHANGED and action.planned is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            _replace(target, action.planned.content, action.planned.mode)


def _previous_files(out_dir: Path) -> set[str]:
    manifest = out_dir / MANIFEST
    if not out_dir.exists():
        return set()
    if not out_dir.is_dir():
        raise OutputError(f"output path {out_dir} exists and is not a directory")
    if not manifest.exists():
        if any(out_dir.iterdir()):
            raise OutputError(
                f"{out_dir} is not empty and was not written by mailstack (no {MANIFEST}); "
                "choose another output directory with -o"
            )
        return set()
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise OutputError(
            f"{manifest} is damaged ({exc}); delete the output directory and re-render"
        ) from None
    # Only plain relative paths inside the output directory are ever removed.
    return {
        p for p in listed if isinstance(p, str) and not Path(p).is_absolute() and ".." not in Path(p).parts
    }


def _replace(target: Path, content: bytes, mode: int) -> None:
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    tmp.chmod(mode)  # the umask may have narrowed it
    tmp.replace(target)
