"""Where the resource trees (templates, compose, playbooks, examples) live.

An installed wheel carries them under ``mailstack/_data``; a checkout (editable install)
has them at the repository's top level.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Return the directory of resource tree ``name`` (for example ``"templates"``)."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"mailstack resource tree {name!r} is missing from this install")
