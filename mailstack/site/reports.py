"""reports: reports the site sends to other domains (DMARC aggregate reports, RFC 7489 §7.2)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Protocol

from pydantic import AfterValidator, Field, WithJsonSchema

from mailstack.site.base import Model
from mailstack.site.fields import Address

# The local part of the default sender, in the site's first domain.
DEFAULT_SENDER_LOCAL = "noreply-dmarc"

_ORG_NAME = re.compile(r"^[ !#-\[\]-~]{1,64}$")
_SEND_AT = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def _org_name(value: str) -> str:
    # Printable ASCII without double quotes and backslashes: Rspamd writes the name unescaped
    # into the quoted display name of the reports' From header (and escaped into their XML).
    if not _ORG_NAME.fullmatch(value):
        raise ValueError(f"{value!r}: 1 to 64 printable ASCII characters without quotes or backslashes")
    return value


def _send_at(value: str) -> str:
    if not _SEND_AT.fullmatch(value):
        raise ValueError(f"{value!r} is not a time of day such as 01:00 (HH:MM, UTC)")
    return value


OrgName = Annotated[str, AfterValidator(_org_name), WithJsonSchema({"type": "string", "maxLength": 64})]
SendAt = Annotated[
    str, AfterValidator(_send_at), WithJsonSchema({"type": "string", "pattern": _SEND_AT.pattern})
]


class DmarcReports(Model):
    """Aggregate DMARC reports (RFC 7489 §7.2): Rspamd keeps the DMARC results of inbound
    mail in Redis, and once a day the dmarc-reports service mails each sender domain that
    asks for them (rua=) a report of yesterday's, DKIM-signed like any mail of the site."""

    enabled: bool = Field(default=False, description="Collect DMARC results and send daily reports.")
    sender: Address | None = Field(
        default=None,
        description=(
            "Envelope and header From of the reports, an address in a domain of the site "
            f"[default: {DEFAULT_SENDER_LOCAL}@<first domain>]."
        ),
    )
    org_name: OrgName | None = Field(
        default=None, description="The reporting organisation's name [default: the sender's domain]."
    )
    send_at: SendAt = Field(
        default="01:00", description="When the day's reports go out (UTC): those of the day before."
    )


class Reports(Model):
    """Reports the site sends to other domains."""

    dmarc: DmarcReports = Field(default_factory=DmarcReports)


class _Site(Protocol):
    """What the rules below read of the site (models.Site, which imports this module)."""

    @property
    def offline(self) -> bool: ...
    @property
    def domain_names(self) -> tuple[str, ...]: ...
    @property
    def reports(self) -> Reports: ...


def dmarc_sender(site: _Site) -> str:
    return site.reports.dmarc.sender or f"{DEFAULT_SENDER_LOCAL}@{site.domain_names[0]}"


def dmarc_org_name(site: _Site) -> str:
    return site.reports.dmarc.org_name or dmarc_sender(site).rpartition("@")[2]


def report_rules(site: _Site) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(field path, message) for each rule of the reports section the site breaks."""
    dmarc = site.reports.dmarc
    if not dmarc.enabled:
        return
    if site.offline:
        yield (
            ("reports", "dmarc", "enabled"),
            "DMARC reports need DNS (each sender domain's DMARC record) and outbound mail, "
            "which an offline site has not; remove offline: true or disable the reports",
        )
    domain = dmarc_sender(site).rpartition("@")[2]
    if dmarc.sender is not None and domain not in site.domain_names:
        yield (
            ("reports", "dmarc", "sender"),
            f"{dmarc.sender} is in domain {domain}, which is not listed under domains: reports "
            "are signed with the site's DKIM keys, so they come from one of its domains",
        )
