"""`mailstack backup` and `mailstack restore`: the site's restic backups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack import backup as backups
from mailstack.cli import show
from mailstack.cli.options import OutDir, StateDir, TlsHost, host, project, site_dir, user_errors
from mailstack.errors import UserError

out = show.out
ACTIONS = ("list", "check")


@user_errors
def backup(
    what: Annotated[
        str,
        typer.Argument(
            metavar="SITE|list|check", help="A site file: back it up now; list or check: see SITE."
        ),
    ],
    site_path: Annotated[
        Path | None,
        typer.Argument(metavar="SITE", help="After list or check: the site file.", show_default=False),
    ] = None,
    host_name: TlsHost = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="check: the structure only; do not read every pack.")
    ] = False,
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Back up the site now (restic; progress shown), list its backups, or check the repository."""
    action, site = (what, site_path) if what in ACTIONS else ("run", Path(what))
    if site is None or (action == "run" and site_path is not None):
        raise UserError("usage: mailstack backup SITE | backup list SITE | backup check SITE")
    p = project(site, output, state)
    target = backups.Target(p, host(p.site, host_name, site), site_dir(site))
    if action == "list":
        show.backups(backups.list_runs(target, site))
    elif action == "check":
        backups.check_repository(target, site, quick=quick, say=show.plain)
        out.print("the repository is sound" + (" (structure only: --quick)" if quick else ""))
    else:
        last = backups.run_backup(target, site, show.plain)
        out.print(f"backup {last.snapshot} saved in {last.seconds} s (run {last.run}; added {last.added})")


@user_errors
def restore(
    site: Annotated[Path, typer.Argument(help="The site description (YAML).", show_default=False)],
    snapshot: Annotated[
        str | None, typer.Option("--snapshot", help="A backup's id (`backup list`) [default: the latest].")
    ] = None,
    host_name: TlsHost = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every service to be healthy.")] = 300,
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Restore a backup into the site's fresh stack (after `down --volumes`) and start it."""
    p = project(site, output, state)
    target = backups.Target(p, host(p.site, host_name, site), site_dir(site))
    result = backups.restore(target, site, snapshot, timeout=timeout, say=out.print)
    out.print(
        f"restored backup {result.run.id} ({', '.join(result.restored)}) in {result.seconds:.0f} s; "
        f"{p.name} is up {target.where()}"
    )
