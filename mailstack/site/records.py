"""Settings of the DNS records `mailstack dns` prints: SPF, DMARC, CAA, TTL, and the MTA-STS policy."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mailstack.site.base import Model
from mailstack.site.fields import Addresses, Domain
from mailstack.site.resolver import Resolver

Spf = Annotated[
    str,
    Field(
        pattern=r"^v=spf1( [!-~]+)*$",
        max_length=450,
        description="An SPF record (RFC 7208), such as 'v=spf1 mx -all'.",
    ),
]


class Dmarc(Model):
    """A DMARC policy (RFC 7489 §6.3). Per domain, only the fields given override the site's."""

    policy: Literal["none", "quarantine", "reject"] = Field(
        default="quarantine", description="p=: what receivers do with mail that fails DMARC."
    )
    rua: Addresses | None = Field(
        default=None, description="Where aggregate reports go (rua=) [default: admin_email]."
    )


class MtaSts(Model):
    """The MTA-STS policy (RFC 8461) served on mta-sts.<domain> and announced in DNS."""

    mode: Literal["enforce", "testing", "none"] = "enforce"
    max_age: int = Field(
        default=604800, ge=604800, le=31557600, description="Seconds senders keep the policy (≥ 1 week)."
    )


class Dns(Model):
    """Settings of the records `mailstack dns` prints, and of the stack's own resolver; every
    one has a default."""

    ttl: int = Field(default=3600, ge=60, le=86400, description="TTL of every record, in seconds.")
    spf: Spf = "v=spf1 mx -all"
    dmarc: Dmarc = Field(default_factory=Dmarc)
    caa: tuple[Domain, ...] = Field(
        default=("letsencrypt.org",),
        description="CAs that may issue certificates (CAA issue); empty publishes no CAA.",
    )
    resolver: Resolver = Field(
        default_factory=Resolver, description="The stack's own validating resolver (not used offline)."
    )
