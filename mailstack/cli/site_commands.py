"""Commands on the site description and its files: nothing here runs a service."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel

from mailstack.cli import show
from mailstack.cli.options import (
    DryRun,
    OutDir,
    SitePath,
    StateDir,
    VaultFile,
    VaultPassword,
    project,
    read_password,
    read_secret,
    site_dir,
    user_errors,
)
from mailstack.dns import FORMATS as DNS_FORMATS
from mailstack.dns import site_records
from mailstack.errors import UserError
from mailstack.passwords import SCHEMES, hash_password
from mailstack.render import render_site
from mailstack.site.loader import load_site
from mailstack.site.schema import SCHEMA_RELPATH, schema_text
from mailstack.starter import create_starter
from mailstack.state import State, set_operator_secret
from mailstack.state.layout import OPERATOR_SECRETS
from mailstack.vault import Vault, decrypt_state, encrypt_state, open_vault

out = show.out


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


@user_errors
def validate(site: SitePath) -> None:
    """Check a site file and print a one-line summary."""
    s = load_site(site)
    out.print(
        f"{site}: site {s.site} is valid: {show.count(len(s.domains), 'domain')}, "
        f"{show.count(len(s.mailboxes), 'mailbox', 'mailboxes')}, "
        f"{show.count(len(s.aliases), 'alias', 'aliases')}"
        + (
            f", {show.count(len(s.shared_mailboxes), 'shared mailbox', 'shared mailboxes')}"
            if s.shared_mailboxes
            else ""
        )
    )


@user_errors
def render(
    site: SitePath,
    output: OutDir = None,
    state: StateDir = None,
    dry_run: DryRun = False,
    vault_password_file: VaultFile = None,
) -> None:
    """Render the compose project, Ansible inventory and DNS records (plan → diff → write)."""
    p = project(site, output, state)
    vault = open_vault(vault_password_file)
    schema = site_dir(site) / SCHEMA_RELPATH
    show.plan(render_site(p.site, p.out_dir, p.state_dir, dry_run=dry_run, vault=vault, schema_path=schema))


@user_errors
def dns(
    site: SitePath,
    fmt: Annotated[
        str, typer.Option("--format", help="table, zone (one $ORIGIN section per zone) or json.")
    ] = "table",
    state: StateDir = None,
    vault_password_file: VaultFile = None,
) -> None:
    """Print the DNS records to publish for every domain, each with why it exists."""
    if fmt not in DNS_FORMATS:
        raise UserError(f"--format must be one of {', '.join(DNS_FORMATS)}, not {fmt!r}")
    p = project(site, None, state)
    show.records(p.site, site_records(p.site, p.state_dir, vault=open_vault(vault_password_file)), fmt)


@user_errors
def hash_password_command(
    scheme: Annotated[str, typer.Option(help=f"One of {', '.join(SCHEMES)}.")] = "ARGON2ID",
) -> None:
    """Hash a password for a site file. Reads it without echo, or from standard input."""
    if scheme not in SCHEMES:
        raise UserError(f"--scheme must be one of {', '.join(SCHEMES)}, not {scheme!r}")
    typer.echo(hash_password(read_password(), scheme))


@user_errors
def vault_encrypt(site: SitePath, vault_password_file: VaultPassword, state: StateDir = None) -> None:
    """Encrypt every state file in place (state.json stays plain)."""
    p = project(site, None, state)
    result = encrypt_state(p.state_dir, Vault(vault_password_file))
    out.print(f"encrypted {len(result.changed)} files in {p.state_dir} ({result.skipped} already were)")


@user_errors
def vault_decrypt(site: SitePath, vault_password_file: VaultPassword, state: StateDir = None) -> None:
    """Decrypt every state file in place, for `mailstack up` on this machine."""
    p = project(site, None, state)
    result = decrypt_state(p.state_dir, Vault(vault_password_file))
    out.print(f"decrypted {len(result.changed)} files in {p.state_dir} ({result.skipped} were plain)")


@user_errors
def secret_set(
    site: SitePath,
    name: Annotated[str, typer.Argument(help=f"Which secret: {', '.join(OPERATOR_SECRETS)}.")],
    state: StateDir = None,
    vault_password_file: VaultFile = None,
) -> None:
    """Keep a secret you were given (a vendor key) in the state, read from standard input.

    Never an argument: it would stay in the shell history and show in the process list.
    """
    p = project(site, None, state)
    value = read_secret(name)
    files = State(p.state_dir, vault=open_vault(vault_password_file))
    relpath = set_operator_secret(files, p.site.site, name, value)
    out.print(
        f"{name} kept in {p.state_dir / relpath} (0600); `mailstack up` (or deploy) gives it to the "
        "services that use it, which read it when they start"
    )


def schema() -> None:
    """Print the JSON Schema of the site description."""
    sys.stdout.write(schema_text())
