"""groupware: SOGo (webmail, CalDAV, CardDAV and, optionally, ActiveSync) behind the web service.

Off unless set. SOGo authenticates against a table rendered from the mailboxes' own
``{SCHEME}`` hashes and logs in to Dovecot and submission with the user's password: no
master secret. Groups and shared mailboxes are described elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from pydantic import Field

from mailstack.site.base import Model

# SOGo's guide: 3 workers are "a reasonable default for low usage". Every ActiveSync device
# that pushes holds one worker for as long as its Ping lasts, so a site with phones needs
# about one per device plus spares (the guide: 10 devices → 15 workers).
DEFAULT_WORKERS = 3
MAX_WORKERS = 32
# SxVMemLimit: a worker that grows past it is replaced (SOGo's default, MB).
WORKER_MEMORY_MB = 384


class Groupware(Model):
    """SOGo with PostgreSQL and memcached, behind the web service (https)."""

    enabled: bool = Field(default=False, description="Run SOGo: webmail, CalDAV and CardDAV.")
    activesync: bool = Field(
        default=False,
        description="Also serve Exchange ActiveSync (/Microsoft-Server-ActiveSync) for phones and Outlook.",
    )
    free_busy: bool = Field(
        default=True,
        description=(
            "Every mailbox's own calendar shows when it is busy (times only, no titles) to the "
            "other mailboxes, for scheduling; what else they see is up to calendars."
        ),
    )
    workers: int = Field(
        default=DEFAULT_WORKERS,
        ge=1,
        le=MAX_WORKERS,
        description=(
            "SOGo worker processes (WOWorkersCount): requests served at once. With ActiveSync, "
            "about one per pushing device plus a few."
        ),
    )


class _Addressed(Protocol):
    @property
    def address(self) -> str: ...


class _Site(Protocol):
    """What the rules below read of the site (models.Site, which imports this module)."""

    @property
    def groupware(self) -> Groupware: ...
    @property
    def https_published(self) -> bool: ...
    @property
    def mailboxes(self) -> Sequence[_Addressed]: ...
    @property
    def shared_mailboxes(self) -> Sequence[_Addressed]: ...


# Valid in an address, but not in SOGo: its URLs carry the login as a path segment (/), and
# sogo-tool, which sets the calendars' rights, writes the login into SQL unescaped (').
SOGO_UNSAFE = "/'"


def groupware_rules(site: _Site) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(field path, message) for each rule of the groupware section the site breaks."""
    groupware = site.groupware
    if groupware.activesync and not groupware.enabled:
        yield (
            ("groupware", "activesync"),
            "ActiveSync is served by SOGo: set groupware.enabled: true, or remove activesync",
        )
    if groupware.enabled and not site.https_published:
        yield (
            ("groupware", "enabled"),
            "SOGo is reached through the web service over HTTPS: publish network.ports.https",
        )
    if groupware.enabled:
        for field in ("mailboxes", "shared_mailboxes"):
            boxes: Sequence[_Addressed] = getattr(site, field)
            for i, box in enumerate(boxes):
                if unsafe := sorted({c for c in box.address if c in SOGO_UNSAFE}):
                    yield (
                        (field, i, "address"),
                        f"SOGo (groupware.enabled) cannot serve an address with {' or '.join(unsafe)} in "
                        "it: its URLs carry the login as a path segment and sogo-tool writes it into "
                        "SQL unescaped; rename the mailbox, or turn groupware off",
                    )
