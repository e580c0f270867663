"""The options the commands share, and the helpers that turn options into library arguments."""

from __future__ import annotations

import functools
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from mailstack.engine import Project
from mailstack.errors import UserError
from mailstack.render import default_paths
from mailstack.site.loader import load_site
from mailstack.site.models import Host, Site

P = ParamSpec("P")
R = TypeVar("R")

SitePath = Annotated[Path, typer.Argument(help="The site description (YAML).", show_default=False)]
OutDir = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="Output directory [default: build/<site> beside the site file]."),
]
StateDir = Annotated[
    Path | None,
    typer.Option("--state", help="State directory [default: .mailstack/<site> beside the site file]."),
]
BaseImage = Annotated[
    str | None, typer.Option("--base-image", help="Base image to build FROM [default: first present].")
]
Bootstrap = Annotated[
    bool,
    typer.Option(
        "--bootstrap-base", help="Without a base image, build one from Debian's mirror (debootstrap)."
    ),
]
NoCheck = Annotated[
    bool,
    typer.Option("--check/--no-check", help="End with `mailstack check` (its failure fails the command)."),
]
# Optional: rendering and checks read a vaulted state through it (see open_vault).
VaultFile = Annotated[
    Path | None,
    typer.Option("--vault-password-file", help="Password file for state encrypted with ansible-vault."),
]
VaultPassword = Annotated[Path, typer.Option("--vault-password-file", help="The vault password.")]
TlsHost = Annotated[str | None, typer.Option("--host", help="A deployed host (its name in hosts), over SSH.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show the plan; write nothing.")]
Json = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]
AnsibleCheck = Annotated[bool, typer.Option("--check", help="Change nothing; report what would change.")]
AnsibleDiff = Annotated[bool, typer.Option("--diff", help="Show the changes to files.")]
Limit = Annotated[str | None, typer.Option(help="Only these hosts (Ansible pattern).")]
Tags = Annotated[str | None, typer.Option(help="Only these roles: host, docker, harden, stack.")]
Images = Annotated[str, typer.Option(help="build: build on the hosts; load: ship `docker save` archives.")]
LiveCheck = Annotated[
    bool,
    typer.Option(
        "--live-check/--no-live-check",
        help="End with `mailstack check` on each host (its failure fails the deploy).",
    ),
]


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


def project(site: Path, output: Path | None, state: Path | None) -> Project:
    """The site file loaded, with its output and state directories (defaults beside it)."""
    s = load_site(site)
    default_out, default_state = default_paths(s, site)
    return Project(site=s, out_dir=output or default_out, state_dir=state or default_state)


def site_dir(site: Path) -> Path:
    """The site file's directory: a relative ssh_key is relative to it."""
    return site.resolve().parent


def host(site: Site, name: str | None, path: Path) -> Host | None:
    """The site's host called ``name`` (None for None)."""
    if name is None:
        return None
    for candidate in site.hosts:
        if candidate.name == name:
            return candidate
    known = ", ".join(h.name for h in site.hosts) or "none"
    raise UserError(f"no host named {name!r} in {path} (hosts: {known})")


def sections(only: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """``--only``: comma-separated names out of ``known``."""
    chosen = tuple(part.strip() for part in only.split(",") if part.strip())
    unknown = sorted(set(chosen) - set(known))
    if unknown or not chosen:
        raise UserError(f"--only takes {', '.join(known)}, not {', '.join(unknown) or 'nothing'}")
    return chosen


def read_secret(name: str) -> str:
    """A secret from standard input: asked without echo on a terminal, else its first line."""
    value = getpass.getpass(f"{name}: ") if sys.stdin.isatty() else sys.stdin.readline()
    value = value.strip()
    if not value:
        raise UserError(f"{name}: nothing was given on standard input")
    return value


def read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise UserError("the passwords differ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise UserError("the password is empty")
    return password
