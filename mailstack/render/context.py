"""Derived values for the templates.

Templates only loop and substitute; every string that needs building (map lines, port
bindings, IPv6 brackets, paths) is built here, where it is unit-tested.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from mailstack import __version__
from mailstack.site.fields import format_size
from mailstack.site.models import Site
from mailstack.state import StateView

# Where each protocol listens inside its container, and which service serves it.
CONTAINER_PORTS: dict[str, tuple[str, int]] = {
    "smtp": ("postfix", 25),
    "submission": ("postfix", 587),
    "submissions": ("postfix", 465),
    "imap": ("dovecot", 143),
    "imaps": ("dovecot", 993),
    "pop3": ("dovecot", 110),
    "pop3s": ("dovecot", 995),
    "managesieve": ("dovecot", 4190),
}
STATE_MOUNT = "/run/mailstack/state"


@dataclass(frozen=True)
class DkimSelector:
    domain: str
    selector: str
    algorithm: str
    key_path: str  # inside the rspamd container
    dns_name: str
    dns_value: str


@dataclass(frozen=True)
class Context:
    site: Site
    version: str
    state_mount: str  # compose volume: the state directory, relative to the output, read-only
    published: dict[str, list[str]]  # service → compose "ip:host:container" bindings
    message_size: int
    message_size_human: str
    virtual_domains: list[str]
    virtual_mailboxes: list[str]
    virtual_aliases: list[str]
    sender_logins: list[str]
    dovecot_users: list[str]
    dkim: list[DkimSelector]
    tls: dict[str, str]  # role → path inside the containers

    def as_template_vars(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def build_context(site: Site, state: StateView, state_dir: Path, out_dir: Path) -> Context:
    return Context(
        site=site,
        version=__version__,
        state_mount=f"{os.path.relpath(state_dir.resolve(), out_dir.resolve())}:{STATE_MOUNT}:ro",
        published=published_ports(site),
        message_size=site.limits.message_size,
        message_size_human=format_size(site.limits.message_size),
        virtual_domains=[f"{name}\tOK" for name in site.domain_names],
        virtual_mailboxes=[f"{m.address}\tOK" for m in site.mailboxes],
        virtual_aliases=virtual_alias_lines(site),
        sender_logins=sender_login_lines(site),
        dovecot_users=dovecot_user_lines(site),
        dkim=dkim_selectors(state),
        tls=tls_paths(site, state),
    )


def bind_host(address: str) -> str:
    """An address as compose's ports syntax wants it: IPv6 in brackets."""
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def published_ports(site: Site) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for protocol, host_port in site.network.ports.published().items():
        service, container_port = CONTAINER_PORTS[protocol]
        for address in site.network.bind:
            out.setdefault(service, []).append(f"{bind_host(address)}:{host_port}:{container_port}")
    return out


def virtual_alias_lines(site: Site) -> list[str]:
    """Postfix virtual_alias_maps: aliases, then catch-alls (which Postfix tries last)."""
    lines = [f"{a.address}\t{','.join(a.to)}" for a in site.aliases]
    lines += [f"@{d.name}\t{d.catch_all}" for d in site.domains if d.catch_all]
    return lines


def sender_login_lines(site: Site) -> list[str]:
    """smtpd_sender_login_maps: each address → the logins that may send as it."""
    owners: dict[str, list[str]] = {}
    for m in site.mailboxes:
        for address in (m.address, *m.send_as):
            owners.setdefault(address, []).append(m.address)
    return [f"{address}\t{','.join(logins)}" for address, logins in sorted(owners.items())]


def dovecot_user_lines(site: Site) -> list[str]:
    """passwd-file lines: user:password:uid:gid:gecos:home:shell:extra fields.

    The quota needs the userdb_ prefix or Dovecot 2.4 ignores it silently.
    """
    lines = []
    for m in site.mailboxes:
        extra = f"userdb_quota_storage_size={m.quota}B" if m.quota is not None else ""
        lines.append(f"{m.address}:{m.password_hash}::::::{extra}")
    return lines


def dkim_selectors(state: StateView) -> list[DkimSelector]:
    return [
        DkimSelector(
            domain=k.domain,
            selector=k.selector,
            algorithm=k.algorithm,
            key_path=f"{STATE_MOUNT}/{k.relpath}",
            dns_name=f"{k.selector}._domainkey.{k.domain}",
            dns_value=f"v=DKIM1; k={k.algorithm}; p={k.public_b64}",
        )
        for k in state.dkim
    ]


def tls_paths(site: Site, state: StateView) -> dict[str, str]:
    if site.tls.mode == "files":
        return {"cert": "/run/mailstack/tls/cert.pem", "key": "/run/mailstack/tls/key.pem"}
    return {role: f"{STATE_MOUNT}/{path}" for role, path in sorted(state.tls_files.items())}
