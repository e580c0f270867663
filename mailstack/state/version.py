"""The format version a state directory records (state.json), and the refusal to touch a
directory that is not a state, belongs to another site, or has a format this mailstack
does not understand."""

from __future__ import annotations

import json

from mailstack.errors import StateError
from mailstack.state.files import StateFiles
from mailstack.state.layout import STATE_FORMAT


def check_format(files: StateFiles, site_id: str) -> None:
    """Record the format in a new state directory; refuse a foreign or a newer one."""
    marker = files.root / "state.json"
    if not marker.exists():
        if files.root.exists() and any(files.root.iterdir()):
            raise StateError(
                f"{files.root} is not empty and has no state.json; is it a mailstack state directory?"
            )
        files.create("state.json", lambda: _json({"format": STATE_FORMAT, "site": site_id}))
        return
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        fmt, owner = int(info["format"]), str(info["site"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{marker} is damaged ({exc}); restore it from a backup") from None
    if fmt > STATE_FORMAT:
        raise StateError(
            f"{files.root} has state format {fmt}, newer than this mailstack understands "
            f"({STATE_FORMAT}); upgrade mailstack instead of touching it"
        )
    if fmt < STATE_FORMAT:
        raise StateError(f"{files.root} has state format {fmt}; run `mailstack state migrate` first")
    if owner != site_id:
        raise StateError(f"{files.root} belongs to site {owner!r}, not {site_id!r}")


def _json(data: object) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
