"""The `mailstack` command line: one thin function per command."""

from __future__ import annotations

import functools
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.panel import Panel

from mailstack import __version__
from mailstack.errors import UserError
from mailstack.passwords import SCHEMES, hash_password
from mailstack.render import default_paths, render_site
from mailstack.render.writer import Change
from mailstack.site.loader import load_site
from mailstack.site.schema import SCHEMA_RELPATH, schema_text, write_schema
from mailstack.starter import create_starter

app = typer.Typer(
    name="mailstack",
    help="Run your own mail server from one typed site description.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")

SitePath = Annotated[Path, typer.Argument(help="The site description (YAML).", show_default=False)]


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print a UserError's message and exit 1; anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mailstack {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Run your own mail server from one typed site description."""


@app.command()
@user_errors
def init(
    domain: Annotated[str, typer.Argument(help="The first mail domain, such as example.org.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Site file to write.")] = Path("site.yaml"),
    user: Annotated[str, typer.Option(help="Local part of the first mailbox.")] = "admin",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter site with a first mailbox and a generated password."""
    starter = create_starter(domain, output, user=user, force=force)
    out.print(f"Wrote {starter.path} (JSON Schema for editors: {starter.path.parent / SCHEMA_RELPATH})")
    out.print(
        Panel(
            f"Mailbox  {starter.address}\nPassword {starter.password}",
            title="Shown once — only its hash is stored",
            expand=False,
        )
    )


@app.command()
@user_errors
def validate(site: SitePath) -> None:
    """Check a site file and print a one-line summary."""
    s = load_site(site)
    out.print(
        f"{site}: site {s.site} is valid: {_count(len(s.domains), 'domain')}, "
        f"{_count(len(s.mailboxes), 'mailbox', 'mailboxes')}, {_count(len(s.aliases), 'alias', 'aliases')}"
    )


@app.command()
@user_errors
def render(
    site: SitePath,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Output directory [default: build/<site> beside the site file]."),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="State directory [default: .mailstack/<site> beside the site file]."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; write nothing.")] = False,
) -> None:
    """Render the compose project, Ansible inventory and DNS records (plan → diff → write)."""
    s = load_site(site)
    default_out, default_state = default_paths(s, site)
    result = render_site(s, output or default_out, state or default_state, dry_run=dry_run)
    verb = "would create" if dry_run else "created"
    for item in result.state.created:
        out.print(f"state     {verb} {item}")
    for action in result.actions:
        out.print(f"{action.change.value:<9} {action.path}")
    counts = {c: sum(1 for a in result.actions if a.change is c) for c in Change}
    summary = ", ".join(f"{n} {c.value}" for c, n in counts.items() if n)
    if dry_run:
        out.print(f"dry run: nothing written to {result.out_dir} ({summary})")
    else:
        write_schema(site.resolve().parent / SCHEMA_RELPATH)
        out.print(f"rendered {result.out_dir} ({summary})")


@app.command("hash-password")
@user_errors
def hash_password_command(
    scheme: Annotated[str, typer.Option(help=f"One of {', '.join(SCHEMES)}.")] = "ARGON2ID",
) -> None:
    """Hash a password for a site file. Reads it without echo, or from standard input."""
    if scheme not in SCHEMES:
        raise UserError(f"--scheme must be one of {', '.join(SCHEMES)}, not {scheme!r}")
    password = _read_password()
    typer.echo(hash_password(password, scheme))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the site description."""
    sys.stdout.write(schema_text())


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise UserError("the passwords differ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise UserError("the password is empty")
    return password


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
