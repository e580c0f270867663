"""Rendering: (site, state) → file tree, planned in memory, diffed, then written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailstack.dns import records_json
from mailstack.render.context import Context, build_context
from mailstack.render.environment import environment
from mailstack.render.web import web_files
from mailstack.render.writer import Action, PlannedFile, diff, with_manifest, write
from mailstack.resources import resource_dir
from mailstack.site.models import Site
from mailstack.state import State
from mailstack.state.files import StateChanges
from mailstack.state.view import StateView
from mailstack.vault import Vault

# Template subtree → output subtree. compose/<service>/… lands in config/<service>/….
_TREES = {"compose": "config", "ansible": "ansible"}
_TOP_LEVEL = {"compose/compose.yaml.j2": "compose.yaml"}


@dataclass(frozen=True)
class RenderResult:
    out_dir: Path
    actions: list[Action]
    state: StateChanges
    dry_run: bool


def default_paths(site: Site, site_path: Path) -> tuple[Path, Path]:
    """Output and state directories beside the site file: build/<site>, .mailstack/<site>."""
    base = site_path.resolve().parent
    return base / "build" / site.site, base / ".mailstack" / site.site


def render_site(
    site: Site, out_dir: Path, state_dir: Path, *, dry_run: bool = False, vault: Vault | None = None
) -> RenderResult:
    state = State(state_dir, write=not dry_run, vault=vault)
    view = state.ensure(site)
    files = with_manifest(plan_files(site, view, state_dir, out_dir))
    actions = diff(out_dir, files)
    if not dry_run:
        write(out_dir, actions)
    return RenderResult(out_dir=out_dir, actions=actions, state=state.changes, dry_run=dry_run)


def plan_files(site: Site, view: StateView, state_dir: Path, out_dir: Path) -> list[PlannedFile]:
    """The whole output tree in memory: a pure function of its arguments."""
    context = build_context(site, view, state_dir, out_dir)
    files = [_render_template(name, context) for name in template_names()]
    # JSON has no comments, so no header; the same bytes as `mailstack dns --format json`.
    files.append(PlannedFile("dns/records.json", records_json(site, view)))
    # The web service's static answers: one file per domain and per mailbox (render/web.py).
    files += web_files(site)
    return files


def template_names() -> list[str]:
    root = resource_dir("templates")
    return sorted(p.relative_to(root).as_posix() for tree in _TREES for p in (root / tree).rglob("*.j2"))


def output_path(template: str) -> str:
    if template in _TOP_LEVEL:
        return _TOP_LEVEL[template]
    top, _, rest = template.removesuffix(".j2").partition("/")
    return f"{_TREES[top]}/{rest}"


def _render_template(name: str, context: Context) -> PlannedFile:
    text = environment().get_template(name).render(context.as_template_vars())
    return PlannedFile(output_path(name), text.encode("utf-8"))
