"""The service catalogue: one typed entry per container of the stack.

The compose file, `mailstack dns` (SRV), `check`, `up` (checks, reloads, health, the summary),
`audit` and the Ansible role's checks and handlers all read these entries; adding a service
is one entry (in mail.py, the mail path's, or edge.py, the others'), its place in CATALOGUE
below, and its configuration templates.

Texts in ``why`` fields become comments of the compose file. Three values differ per site and
are written as ``{placeholders}`` (render/compose.py fills them in): ``{state}`` (the state
directory, relative to the compose file), ``{fence_table}`` and ``{acme_directory}``.
"""

from __future__ import annotations

from mailstack.service_types import Port, Service
from mailstack.services.backup import BACKUP
from mailstack.services.edge import ACME, DANE_POLICY, FENCE, GUARD, MTA_STS, RESOLVER, WEB
from mailstack.services.groupware import MEMCACHED, POSTGRES, SOGO
from mailstack.services.mail import DMARC_REPORTS, DOVECOT, POSTFIX, REDIS, RSPAMD
from mailstack.services.paths import (
    ACME_CHALLENGE_DIR,
    ACME_CONFIG_DIR,
    ACME_ROOT,
    ACME_STATE_DIR,
    BACKUP_CONFIG_DIR,
    BACKUP_DATA,
    BACKUP_HOME,
    BACKUP_REPOSITORY,
    BACKUP_STATUS,
    DMARC_REPORTS_NEXT,
    DMARC_REPORTS_SCRIPT,
    DMARC_REPORTS_SMTP_PORT,
    GUARD_CONFIG_DIR,
    GUARD_DATA_DIR,
    GUARD_POLICY_HOST,
    OUTBOUND_CA_BUNDLE,
    REDIS_SECRETS,
    RSPAMD_SECRETS,
    STATE_MOUNT,
    WEB_CONFIG_DIR,
    WEB_HTTP_PORT,
    WEB_HTTPS_PORT,
)
from mailstack.site.models import Site

__all__ = [
    "ACME_CHALLENGE_DIR",
    "ACME_CONFIG_DIR",
    "ACME_ROOT",
    "ACME_STATE_DIR",
    "BACKUP_CONFIG_DIR",
    "BACKUP_DATA",
    "BACKUP_HOME",
    "BACKUP_REPOSITORY",
    "BACKUP_STATUS",
    "CATALOGUE",
    "DMARC_REPORTS_NEXT",
    "DMARC_REPORTS_SCRIPT",
    "DMARC_REPORTS_SMTP_PORT",
    "GUARD_CONFIG_DIR",
    "GUARD_DATA_DIR",
    "GUARD_POLICY_HOST",
    "OUTBOUND_CA_BUNDLE",
    "REDIS_SECRETS",
    "RSPAMD_SECRETS",
    "STATE_MOUNT",
    "WEB_CONFIG_DIR",
    "WEB_HTTPS_PORT",
    "WEB_HTTP_PORT",
    "absent_configs",
    "client_address",
    "images",
    "ports",
    "present",
    "rendered",
    "service",
]

# The compose file lists the services in this order.
CATALOGUE: tuple[Service, ...] = (
    RESOLVER,
    DANE_POLICY,
    MTA_STS,
    POSTFIX,
    DOVECOT,
    RSPAMD,
    REDIS,
    DMARC_REPORTS,
    POSTGRES,
    MEMCACHED,
    SOGO,
    WEB,
    ACME,
    GUARD,
    FENCE,
    BACKUP,
)


def images(site: Site | None = None) -> tuple[str, ...]:
    """The images to build, each once (the guard image also runs the fence service); each
    image's rendered configuration is config/<image>/. For a site: without the images of
    optional services it does not have."""
    return tuple(dict.fromkeys(s.image for s in rendered(site)))


def rendered(site: Site | None = None) -> list[Service]:
    """The services a site's rendered tree knows of (checks, reloads, images): every one but
    the optional services it does not have. Without a site: all of them."""
    return [s for s in CATALOGUE if site is None or not s.optional or s.present(site)]


def absent_configs(site: Site) -> set[str]:
    """The config/<dir> trees not rendered for the site: those of its absent optional services."""
    kept = {s.config.top for s in rendered(site)}
    return {s.config.top for s in CATALOGUE if s.config.top not in kept}


def present(site: Site) -> list[Service]:
    """The services of the site's compose project, in the catalogue's order."""
    return [s for s in CATALOGUE if s.present(site)]


def service(name: str) -> Service:
    return next(s for s in CATALOGUE if s.name == name)


def ports() -> dict[str, tuple[Service, Port]]:
    """Every protocol a service can publish → the service and its port."""
    return {p.protocol: (s, p) for s in CATALOGUE for p in s.ports}


def client_address(bind: str) -> str:
    """Where a client on this machine reaches a port published on ``bind``: a wildcard
    address is reached through loopback of the same family."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)  # noqa: S104 - compared, not bound
