"""Mailbox passwords and per-user encryption keys: `password`, `recover`, `recovery-key`."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailstack import engine
from mailstack.cli import show
from mailstack.cli.options import OutDir, SitePath, StateDir, VaultFile, project, user_errors
from mailstack.deploy import DeployOptions
from mailstack.deploy import deploy as run_deploy
from mailstack.errors import UserError
from mailstack.mailbox_password import change_password, login_mailbox, recover_password
from mailstack.state import State
from mailstack.state.mailcrypt import new_recovery_identity
from mailstack.vault import Vault, open_vault

out = show.out

Address = Annotated[str, typer.Argument(help="The mailbox's address.")]
RecoveryKey = Annotated[
    Path,
    typer.Option(
        "--recovery-key", exists=True, dir_okay=False, help="The age identity file (AGE-SECRET-KEY-1…)."
    ),
]


LocalOnly = Annotated[
    bool, typer.Option("--local-only", help="Do not deploy the change to the site's hosts.")
]


@user_errors
def password(
    site: SitePath,
    address: Address,
    output: OutDir = None,
    state: StateDir = None,
    vault_password_file: VaultFile = None,
    local_only: LocalOnly = False,
) -> None:
    """Change a mailbox's password: asks for the old and the new one (or reads them, one per
    line, from standard input), writes the new hash into the site file and re-wraps a per_user
    mailbox's key; then a running local stack and the site's hosts (`deploy --tags stack`)
    take it."""
    p = project(site, output, state)
    login_mailbox(p.site, address)  # before asking for anything
    old = _read("Old password: ")
    new = _read_new()
    vault = open_vault(vault_password_file)
    done = change_password(p.site, site, State(p.state_dir, vault=vault), address, old, new)
    out.print(f"{address}: new password hash written to {site}; {done}")
    _apply(site, output, state, vault, hosts=not local_only)


@user_errors
def recover(
    site: SitePath,
    address: Address,
    recovery_key: RecoveryKey,
    output: OutDir = None,
    state: StateDir = None,
    vault_password_file: VaultFile = None,
    local_only: LocalOnly = False,
) -> None:
    """Set a per_user mailbox's new password without the old one, with the recovery key
    (whose recipient is encryption.recovery): its mail stays readable. Applied like `password`."""
    p = project(site, output, state)
    login_mailbox(p.site, address)
    identity = recovery_key.read_text(encoding="utf-8")
    new = _read_new()
    vault = open_vault(vault_password_file)
    done = recover_password(p.site, site, State(p.state_dir, vault=vault), address, identity, new)
    out.print(f"{address}: new password hash written to {site}; {done}")
    _apply(site, output, state, vault, hosts=not local_only)


@user_errors
def recovery_key(
    file: Annotated[Path, typer.Argument(help="Where to write the identity (kept offline).")],
) -> None:
    """Make an age key pair for encryption.recovery: writes the identity to FILE (0600) and
    prints the recipient to put into the site file."""
    identity, recipient = new_recovery_identity()
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"{file} exists; not overwriting a recovery key") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"# public key: {recipient}\n{identity}\n")
    out.print(f"recovery identity written to {file}: keep it offline, never on the server")
    typer.echo(recipient)


def _apply(site: Path, output: Path | None, state: Path | None, vault: Vault | None, *, hosts: bool) -> None:
    """The running local stack (if one runs) and the site's hosts take the new hash and key."""
    p = project(site, output, state)
    running = bool(engine.container_ids(p))
    if running:
        engine.up(p, timeout=180, base=None, bootstrap=False, say=out.print)
        out.print("the running local stack has the new password")
    if hosts and p.site.hosts:
        names = ", ".join(h.name for h in p.site.hosts)
        out.print(f"deploying the change to {names} (deploy --tags stack)")
        result = run_deploy(
            p.site, p.out_dir, p.state_dir, DeployOptions(tags="stack"), vault=vault, say=show.plain
        )
        show.deploy(result)
    elif not running:
        out.print("no local stack runs and the site has no hosts: the next `up` carries the change")


def _read(prompt: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(prompt)
    else:
        value = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not value:
        raise UserError(f"{prompt.strip(' :').lower()} is empty")
    return value


def _read_new() -> str:
    new = _read("New password: ")
    if sys.stdin.isatty() and getpass.getpass("Again: ") != new:
        raise UserError("the new passwords differ")
    return new
