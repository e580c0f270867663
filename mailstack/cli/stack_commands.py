"""Commands on the compose project on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from mailstack import engine, tls
from mailstack.backup import Target, last_run
from mailstack.backup import status_lines as backup_status
from mailstack.check import run_check
from mailstack.check.probe import round_trip
from mailstack.cli import show
from mailstack.cli.options import (
    BaseImage,
    Bootstrap,
    NoCheck,
    OutDir,
    SitePath,
    StateDir,
    project,
    read_password,
    user_errors,
)
from mailstack.images import ensure_images
from mailstack.purge import purge_hosts, purge_local

out = show.out


@user_errors
def up(
    site: SitePath,
    output: OutDir = None,
    state: StateDir = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every service to be healthy.")] = 180,
    base_image: BaseImage = None,
    bootstrap_base: Bootstrap = False,
    check: NoCheck = True,
) -> None:
    """Render, build images if needed, start the stack, wait until it is healthy, check it."""
    p = project(site, output, state)
    show.up(p, engine.up(p, timeout=timeout, base=base_image, bootstrap=bootstrap_base, say=out.print))
    show.lines(tls.status(p), indent="  ")
    if check:
        show.check(run_check(p.site, p.state_dir), as_json=False)


@user_errors
def down(
    site: SitePath,
    output: OutDir = None,
    state: StateDir = None,
    volumes: Annotated[
        bool, typer.Option("--volumes", help="Also delete mail, queue and data volumes.")
    ] = False,
) -> None:
    """Stop the stack. Mail and queues are kept unless --volumes is given."""
    p = project(site, output, state)
    engine.down(p, volumes=volumes)
    out.print(f"{p.name} is down" + (" and its volumes are deleted" if volumes else "; volumes kept"))


@user_errors
def status(site: SitePath, output: OutDir = None, state: StateDir = None) -> None:
    """Show each service's state, health and published ports, and the certificates."""
    p = project(site, output, state)
    rows = engine.status(p)
    if not rows:
        out.print(f"{p.name} is not running")
        raise typer.Exit(3)
    show.status(rows)
    show.lines(tls.status(p))
    show.lines(backup_status(p.site, last_run(Target(p))))


@user_errors
def logs(
    site: SitePath,
    service: Annotated[str | None, typer.Argument(help="postfix, dovecot, rspamd or redis.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines of each service.")] = None,
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Print the stack's logs, or one service's."""
    raise typer.Exit(engine.logs(project(site, output, state), service, follow=follow, tail=tail))


@user_errors
def probe(
    site: SitePath,
    user: Annotated[str, typer.Option(help="Mailbox to log in as (the message goes to itself).")],
    password: Annotated[
        str | None, typer.Option(help="Its password [default: read from standard input].")
    ] = None,
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Send a message through submission and read it back over IMAP, as a mail client would."""
    p = project(site, output, state)
    result = round_trip(p.site, p.state_dir, user, password or read_password())
    out.print(
        f"sent {result.subject!r} via {result.sent_via}; found it via {result.found_via} "
        f"after {result.seconds:.1f}s"
    )
    out.print(show.connect_help(p, user))


@user_errors
def images_build(
    base_image: BaseImage = None,
    bootstrap_base: Bootstrap = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build even when nothing changed.")] = False,
) -> None:
    """Build every service image (cached by content)."""
    engine.check_engine()
    for result in ensure_images(base=base_image, bootstrap=bootstrap_base, rebuild=rebuild, say=out.print):
        out.print(f"{result.tag:<28} {'built' if result.built else 'up to date'}")


@user_errors
def purge(
    site: SitePath,
    address: Annotated[str, typer.Argument(help="The address whose stored mail is deleted.")],
    yes: Annotated[bool, typer.Option("--yes", help="Really delete it.")] = False,
    hosts: Annotated[bool, typer.Option("--hosts", help="On the site's hosts instead of here.")] = False,
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Delete the stored mail of an address that is no longer in the site."""
    p = project(site, output, state)
    if hosts:
        raise typer.Exit(purge_hosts(p, address, yes=yes))
    removed = purge_local(p, address, yes=yes)
    out.print(f"purged {address}: {'nothing was stored' if removed == 'none' else removed + ' deleted'}")
