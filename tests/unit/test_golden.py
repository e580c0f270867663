"""The rendered tree of every example, compared byte for byte with tests/golden/.

After an intended template change: `make golden` (pytest --update-golden) and review the diff.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mailstack.render import plan_files
from mailstack.render.writer import with_manifest
from mailstack.site.loader import load_site
from tests.conftest import EXAMPLES, ROOT, fake_state

GOLDEN = ROOT / "tests" / "golden"


def planned_tree(example: Path) -> dict[str, bytes]:
    site = load_site(example)
    base = Path("/srv/sites")
    files = plan_files(
        site,
        fake_state(site.domain_names, site.tls.mode),
        base / ".mailstack" / site.site,
        base / "build" / site.site,
    )
    return {f.path: f.content for f in with_manifest(files)}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_rendered_tree_matches_golden(example: Path, update_golden: bool) -> None:
    planned = planned_tree(example)
    golden = GOLDEN / example.stem
    if update_golden:
        shutil.rmtree(golden, ignore_errors=True)
        for name, content in planned.items():
            (golden / name).parent.mkdir(parents=True, exist_ok=True)
            (golden / name).write_bytes(content)
    on_disk = {p.relative_to(golden).as_posix(): p.read_bytes() for p in golden.rglob("*") if p.is_file()}
    assert sorted(on_disk) == sorted(planned), "file list differs; run `make golden` if intended"
    for name, content in planned.items():
        assert content == on_disk[name], f"{name} differs from tests/golden; run `make golden` if intended"
