"""Configs are generated whole: no image build, entrypoint or play patches a file in place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# Where a config could be patched: the images' build files and scripts, the plays, the templates.
TREES = ("compose", "playbooks", "templates")
# sed or perl with -i (alone or among other short options) anywhere in the same command.
IN_PLACE = re.compile(r"\b(sed|perl)\b[^|;&\n]*\s-[a-zA-Z]*i")


def _files() -> list[Path]:
    return sorted(p for tree in TREES for p in (ROOT / tree).rglob("*") if p.is_file())


def test_no_file_is_patched_in_place() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
        if IN_PLACE.search(line) and not line.lstrip().startswith("#")
    ]
    assert found == []


def test_the_pattern_sees_what_it_must_refuse() -> None:
    for line in ("sed -i '/x/d' f", "sed -e s/a/b/ -i f", "perl -pi -e s/a/b/ f"):
        assert IN_PLACE.search(line), line
    assert not IN_PLACE.search("sed -n 1p f | grep -i x")
