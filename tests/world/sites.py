"""mailstack sites in the test world: real site files, rendered, published in the world's
signed zone, brought up with `mailstack up`, and reached at their world addresses.

Each site runs online (its own resolver forwards to the world's DNS with the world's trust
anchor), publishes the standard ports on its own world address, and has an internal subnet
that no network of the engine uses.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from mailstack import engine
from mailstack.passwords import hash_password
from mailstack.site.loader import load_site
from mailstack.site.resolver import free_internal_subnet
from tests.integration.conftest import start_stack
from tests.integration.stack import Stack
from tests.world.world import World

MAILSTACK = Path(sys.executable).parent / "mailstack"
PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "imap": 143, "imaps": 993}


@dataclass
class WorldStack(Stack):
    """A Stack whose mailboxes' passwords are made by the test that wrote the site."""

    passwords: dict[str, str] = field(default_factory=dict)
    domain: str = ""
    address6: str = ""  # its world IPv6 address, when it listens on one (ipv6=True)

    def password(self, user: str) -> str:
        return self.passwords[user]

    def address(self, local: str) -> str:
        return f"{local}@{self.domain}"

    def dns_zone(self) -> str:
        return mailstack("dns", str(self.site_path), "--state", str(self.state_dir), "--format", "zone")


def authentication_results(message: EmailMessage) -> str:
    """Every Authentication-Results header of ``message``, joined: what the receiver concluded."""
    return " ".join(str(v) for v in message.get_all("Authentication-Results", []))


def mailstack(*args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(MAILSTACK), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"mailstack {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def write_site(
    world: World,
    base: Path,
    domain: str,
    locals_: list[str],
    *,
    dmarc: str = "reject",
    dnsbl: list[str] | None = None,
    dmarc_reports: bool = False,
    https: bool = False,
    outbound_ca_bundle: Path | None = None,
    ipv6: bool = False,
    auth_ban: dict[str, object] | None = None,
    more_domains: tuple[dict[str, object], ...] = (),
    more_mailboxes: tuple[str, ...] = (),
    taken: list[ipaddress.IPv4Network],
) -> WorldStack:
    """The site file of ``domain`` with these mailboxes (SHA512-CRYPT hashes of UTF-8 passwords).

    ``https``: the web service publishes port 443, so the site serves its MTA-STS policy at
    mta-sts.<domain>; ``outbound_ca_bundle``: CAs the site trusts for other servers' TLS;
    ``ipv6``: it listens on a world IPv6 address too; ``auth_ban``: bans after failed logins
    (default: none); ``more_domains`` (site file entries) with ``more_mailboxes`` (addresses):
    after ``domain``."""
    hostname = f"mail.{domain}"
    addresses = [*(f"{local}@{domain}" for local in locals_), *more_mailboxes]
    passwords = {a: f"{a.partition('@')[0]}-Pässwort-{secrets.token_urlsafe(8)}" for a in addresses}
    site_id = f"world-{domain.split('.')[0]}-{secrets.token_hex(3)}"
    # The product's own choice (the site id's default /27, or the next free one), away from
    # every network and route of this host, and from the other sites written before.
    subnet = free_internal_subnet(site_id, {"in use": [str(n) for n in taken]})
    ipv6_bind = [world.address6_for(hostname)] if ipv6 else []
    taken.append(ipaddress.IPv4Network(subnet))
    site = {
        "site": site_id,
        "hostname": hostname,
        "admin_email": next(iter(passwords)),
        "network": {
            "bind": [world.address_for(hostname), *ipv6_bind],
            "ports": {**PORTS, **({"https": 443} if https else {})},
            "internal_subnet": subnet,
        },
        "tls": {
            "mode": "selfsigned",
            **({"outbound_ca_bundle": str(outbound_ca_bundle)} if outbound_ca_bundle else {}),
        },
        "dns": {"ttl": 60, "dmarc": {"policy": dmarc}, "resolver": world.resolver()},
        "abuse": {
            "auth_ban": auth_ban or {"enabled": False},
            **({"dnsbl": dnsbl} if dnsbl is not None else {}),
        },
        "domains": [{"name": domain}, *more_domains],
        **({"reports": {"dmarc": {"enabled": True}}} if dmarc_reports else {}),
        "mailboxes": [
            {"address": address, "password_hash": hash_password(password, "SHA512-CRYPT")}
            for address, password in passwords.items()
        ],
    }
    base.mkdir(parents=True, exist_ok=True)
    site_path = base / "site.yaml"
    site_path.write_text(json.dumps(site, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    # Rendering makes the state (DKIM keys, the CA, the server certificate) that the records name.
    mailstack("render", str(site_path), "--output", str(base / "build"), "--state", str(base / "state"))
    return WorldStack(
        site_path=site_path,
        project=_project(site_path, base),
        passwords=passwords,
        domain=domain,
        address6=ipv6_bind[0] if ipv6_bind else "",
    )


def export_ca(site: WorldStack, target: Path) -> Path:
    """The site's local CA certificate (tls.mode selfsigned), as a company would hand its CA
    to partners: a public copy, readable by everyone."""
    target.write_bytes(site.ca_path.read_bytes())
    target.chmod(0o644)
    return target


def _project(site_path: Path, base: Path) -> engine.Project:
    return engine.Project(site=load_site(site_path), out_dir=base / "build", state_dir=base / "state")


def bring_up(world: World, site: WorldStack) -> WorldStack:
    """Publish the site's records, `mailstack up`, and glue it into the world."""
    world.add_site_records(site.dns_zone())
    started = start_stack(site.site_path)
    site.project, site.up_result, site.up_error = started.project, started.up_result, started.up_error
    if site.up_error is None:
        world.attach_site(site.site.hostname, f"mailstack-{site.site.site}")
    return site
