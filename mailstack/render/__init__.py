"""Rendering: (site, state) → file tree, planned in memory, diffed, then written.

:func:`plan` is the one pipeline: `mailstack render`, `mailstack up` (which stages and checks
the plan before it writes) and `mailstack deploy` (the release for the hosts) all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailstack import services
from mailstack.dns import records_json
from mailstack.render.context import Context, build_context
from mailstack.render.environment import environment
from mailstack.render.web import web_files
from mailstack.render.writer import Action, Change, PlannedFile, diff, with_manifest, write
from mailstack.resources import resource_dir
from mailstack.site.models import Site
from mailstack.site.schema import write_schema
from mailstack.state import State
from mailstack.state.files import StateChanges
from mailstack.state.view import StateView
from mailstack.vault import Vault

# Template subtree → output subtree. compose/<service>/… lands in config/<service>/….
_TREES = {"compose": "config", "ansible": "ansible", "groupware": "groupware"}
_TOP_LEVEL = {"compose/compose.yaml.j2": "compose.yaml"}


@dataclass(frozen=True)
class Plan:
    """The rendered tree in memory and how it differs from ``out_dir``; the state items it
    needed are already made (in memory only for a dry run)."""

    out_dir: Path
    actions: list[Action]
    state: StateChanges
    dry_run: bool = False

    @property
    def files(self) -> list[PlannedFile]:
        return [a.planned for a in self.actions if a.planned is not None]

    @property
    def changed(self) -> set[str]:
        """Paths that the write creates, changes or removes."""
        return {a.path for a in self.actions if a.change is not Change.UNCHANGED}

    def summary(self) -> str:
        """Such as "3 create, 40 unchanged", in the order of :class:`Change`."""
        counts = {c: sum(1 for a in self.actions if a.change is c) for c in Change}
        return ", ".join(f"{n} {c.value}" for c, n in counts.items() if n)

    def write(self) -> None:
        if self.dry_run:
            raise ValueError("a dry-run plan is not written")
        write(self.out_dir, self.actions)

    def stage(self, directory: Path) -> None:
        """The whole planned tree into ``directory`` (for checks before the real write)."""
        write(directory, diff(directory, self.files))


def default_paths(site: Site, site_path: Path) -> tuple[Path, Path]:
    """Output and state directories beside the site file: build/<site>, .mailstack/<site>."""
    base = site_path.resolve().parent
    return base / "build" / site.site, base / ".mailstack" / site.site


def plan(
    site: Site,
    out_dir: Path,
    state_dir: Path,
    *,
    vault: Vault | None = None,
    dry_run: bool = False,
    live_out_dir: Path | None = None,
    live_state_dir: Path | None = None,
) -> Plan:
    """Make the missing state, render the tree and diff it against ``out_dir``.

    ``live_out_dir`` and ``live_state_dir`` are where the running stack finds the tree and the
    state when that is not where they are here (a host's layout); the tree refers to them.
    """
    state = State(state_dir, write=not dry_run, vault=vault)
    view = state.ensure(site)
    files = plan_files(site, view, live_state_dir or state_dir, live_out_dir or out_dir)
    return Plan(out_dir, diff(out_dir, with_manifest(files)), state.changes, dry_run)


def render_site(
    site: Site,
    out_dir: Path,
    state_dir: Path,
    *,
    dry_run: bool = False,
    vault: Vault | None = None,
    schema_path: Path | None = None,
) -> Plan:
    """`mailstack render`: plan, then write (unless a dry run), with the JSON Schema for
    editors at ``schema_path``."""
    result = plan(site, out_dir, state_dir, vault=vault, dry_run=dry_run)
    if not dry_run:
        result.write()
        if schema_path is not None:
            write_schema(schema_path)
    return result


def plan_files(site: Site, view: StateView, state_dir: Path, out_dir: Path) -> list[PlannedFile]:
    """The whole output tree in memory: a pure function of its arguments."""
    context = build_context(site, view, state_dir, out_dir)
    # Optional services the site does not have (groupware) leave no file behind.
    absent = tuple(f"config/{top}/" for top in services.absent_configs(site))
    if not site.groupware.enabled:
        absent += ("groupware/",)
    files = [
        _render_template(name, context)
        for name in template_names()
        if not output_path(name).startswith(absent)
    ]
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
