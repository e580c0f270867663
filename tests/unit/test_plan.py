"""The render pipeline's plan: nothing is written until write(), a dry run writes nothing at
all, stage() copies the whole tree, and the live paths are what the tree refers to."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack import render
from mailstack.render.writer import MANIFEST, Change
from mailstack.site.loader import load_site
from mailstack.site.models import Site
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(FIXTURES / "valid" / "base.yaml")


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_plan_writes_nothing_until_written(site: Site, tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    plan = render.plan(site, out, state)
    assert not out.exists()
    assert (state / "state.json").exists()  # the state the tree needs is made with the plan
    assert plan.state.created
    assert {a.change for a in plan.actions} == {Change.CREATE}
    assert plan.changed == {a.path for a in plan.actions}
    assert MANIFEST in plan.changed
    assert plan.summary() == f"{len(plan.actions)} create"
    plan.write()
    assert set(tree(out)) == plan.changed
    assert tree(out) == {f.path: f.content for f in plan.files}


def test_a_second_plan_changes_nothing_and_finds_what_changed(site: Site, tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    render.plan(site, out, state).write()
    again = render.plan(site, out, state)
    assert again.changed == set()
    assert again.state.created == []
    assert again.summary() == f"{len(again.actions)} unchanged"
    (out / "compose.yaml").write_text("edited by hand\n")
    stale = out / "config" / "postfix" / "main.cf"
    listing = (out / MANIFEST).read_text().replace('"config/postfix/main.cf"', '"config/postfix/gone.cf"')
    (out / MANIFEST).write_text(listing)
    (out / "config" / "postfix" / "gone.cf").write_text("no longer planned\n")
    edited = render.plan(site, out, state)
    changes = {a.path: a.change for a in edited.actions if a.change is not Change.UNCHANGED}
    assert changes == {
        "compose.yaml": Change.CHANGED,
        MANIFEST: Change.CHANGED,
        "config/postfix/gone.cf": Change.REMOVE,
    }
    assert "1 remove" in edited.summary()
    edited.write()
    assert not (out / "config" / "postfix" / "gone.cf").exists()
    assert stale.exists()
    assert render.plan(site, out, state).changed == set()


def test_a_dry_run_makes_no_state_and_refuses_to_write(site: Site, tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    plan = render.plan(site, out, state, dry_run=True)
    assert plan.dry_run
    assert plan.state.created  # what a real run would create
    assert not state.exists()
    with pytest.raises(ValueError, match="dry-run"):
        plan.write()
    assert not out.exists()


def test_render_site_writes_unless_dry_run(site: Site, tmp_path: Path) -> None:
    schema = tmp_path / ".mailstack" / "site.schema.json"
    dry = render.render_site(site, tmp_path / "out", tmp_path / "state", dry_run=True, schema_path=schema)
    assert not (tmp_path / "out").exists()
    assert not schema.exists()
    done = render.render_site(site, tmp_path / "out", tmp_path / "state", schema_path=schema)
    assert {a.path for a in done.actions} == {a.path for a in dry.actions}
    assert set(tree(tmp_path / "out")) == done.changed
    assert schema.exists()


def test_stage_copies_the_whole_tree_elsewhere(site: Site, tmp_path: Path) -> None:
    out, state, staging = tmp_path / "out", tmp_path / "state", tmp_path / "staging"
    render.plan(site, out, state).write()
    plan = render.plan(site, out, state)
    assert plan.changed == set()
    plan.stage(staging)
    assert tree(staging) == tree(out)  # unchanged files too: each daemon checks a whole tree


def compose_of(plan: render.Plan) -> str:
    return next(f.content.decode() for f in plan.files if f.path == "compose.yaml")


def test_the_tree_refers_to_the_live_paths(site: Site, tmp_path: Path) -> None:
    out, state = tmp_path / "a" / "b" / "release", tmp_path / "state"
    assert 'file: "../../../state/' in compose_of(render.plan(site, out, state))
    live = Path("/opt/mailstack") / site.site
    plan = render.plan(site, out, state, live_out_dir=live / "live", live_state_dir=live / "state")
    assert plan.out_dir == out  # written here, for the hosts' layout
    assert 'file: "../state/' in compose_of(plan)
    assert str(tmp_path) not in compose_of(plan)
