"""`mailstack purge`: delete the stored mail of an address that left the site.

Removing a mailbox from the site only disables its login and delivery; its mail stays on
the `mail` volume until it is purged here, on purpose and by name.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mailstack.deploy import inventory_file
from mailstack.engine import Project, check_engine
from mailstack.errors import UserError
from mailstack.site.fields import parse_address

MAIL_ROOT = "/var/vmail"  # Dovecot's mail_home is <root>/<domain>/<local part>


def mail_home(address: str) -> str:
    try:
        normal = parse_address(address)
    except ValueError as exc:
        raise UserError(f"ADDRESS: {exc}") from None
    local, _, domain = normal.rpartition("@")
    return f"{MAIL_ROOT}/{domain}/{local}"


def _guard(project: Project, address: str, yes: bool) -> str:
    home = mail_home(address)
    normal = parse_address(address)
    if normal in project.site.delivered_addresses:
        raise UserError(
            f"{normal} is still a mailbox of the site (or a shared one); remove it from the site file first"
        )
    if not yes:
        raise UserError(f"this deletes every message of {normal} for good; pass --yes to do it")
    return home


def purge_local(project: Project, address: str, *, yes: bool) -> str:
    """Delete the mail of ``address`` from the stack on this machine; return what was removed."""
    home = _guard(project, address, yes)
    check_engine()
    script = f'if [ -e "{home}" ]; then du -sh "{home}" | cut -f1; rm -rf -- "{home}"; else echo none; fi'
    run = project.compose("exec", "-T", "dovecot", "sh", "-c", script)
    if run.returncode != 0:
        raise UserError(f"purge failed: {run.stderr.strip() or run.stdout.strip()}")
    return run.stdout.strip()


def purge_hosts(project: Project, address: str, *, yes: bool) -> int:
    """Delete the mail of ``address`` on every host of the site, through Ansible."""
    home = _guard(project, address, yes)
    # The hosts of the last deploy; without one Ansible would match no host and succeed.
    inventory = inventory_file(project.out_dir)
    if not inventory.exists():
        raise UserError(f"no deployed release at {inventory.parent.parent}: run `mailstack deploy` first")
    command = [
        str(Path(sys.executable).with_name("ansible")),
        "all",
        "--inventory",
        str(inventory),
        "--become",
        "--module-name",
        "ansible.builtin.command",
        "--args",
        f"docker compose --project-name {project.name} exec -T dovecot rm -rf -- {home}",
    ]
    return subprocess.run(command, check=False).returncode
