"""abuse: postscreen's DNS blocklists, and bans after repeated failed logins."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mailstack.site.base import Model
from mailstack.site.fields import Duration, IPNetwork

Dnsbl = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(=[0-9.;\[\]-]+)?(\*-?[0-9]+)?$",
        description="A postscreen DNSBL: domain[=reply filter][*weight], e.g. zen.spamhaus.org*3.",
    ),
]


class AuthBan(Model):
    """Bans of client addresses after repeated failed logins (guard and fence services).

    Dovecot's auth service (IMAP, POP3, ManageSieve, and SMTP AUTH on 587/465 through
    Postfix's SASL) reports every login to the guard. An address with `failures` failed
    logins (distinct passwords or user names) within `window` is banned for `ban`: every
    login from it is refused, and with `firewall` its connections to the published ports are
    reset on the host. Loopback and Docker's proxy address are never banned.
    """

    enabled: bool = Field(default=True, description="Ban addresses after repeated failed logins.")
    failures: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Failed logins (distinct passwords or user names) from one address that ban it.",
    )
    window: Duration = Field(default=600, le=86400, description="… counted within this time (at most 1d).")
    ban: Duration = Field(default=3600, le=30 * 86400, description="How long a ban lasts (at most 30d).")
    exempt: tuple[IPNetwork, ...] = Field(
        default=(),
        description=(
            "Addresses and networks that are never banned (monitoring, an office's NAT). Loopback "
            "and the Docker gateway that local clients come from are always exempt."
        ),
    )
    firewall: bool = Field(
        default=True,
        description=(
            "Also reset a banned address's connections to every published port, with an nftables "
            "table on the host (the fence service: host network, CAP_NET_ADMIN). false: only its "
            "logins are refused."
        ),
    )


class Abuse(Model):
    """Screening of clients on port 25 before they reach smtpd, and bans after failed logins."""

    dnsbl: tuple[Dnsbl, ...] | None = Field(
        default=None,
        description=(
            "DNS blocklists postscreen asks about each new client on port 25, through the "
            "stack's resolver. Default: Spamhaus ZEN (3), SpamCop (2), Mailspike (2), and "
            "DNSWL's trusted senders (-2), which are free for servers with modest volume "
            "(check their terms); [] asks none. An offline site asks none."
        ),
    )
    dnsbl_threshold: int = Field(
        default=3, ge=1, description="Sum of DNSBL weights at which postscreen rejects a client."
    )
    spamhaus_dqs: bool = Field(
        default=False,
        description=(
            "Ask Spamhaus through its Data Query Service (DQS) with the site's key, kept in the "
            "state (`mailstack secret set SITE spamhaus-dqs`), never in the site file or the "
            "rendered files. Rspamd then asks ZEN and DBL at <key>.*.dq.spamhaus.net, and the "
            "default postscreen list leaves Spamhaus out (main.cf cannot carry a secret). "
            "Refused on an offline site."
        ),
    )
    auth_ban: AuthBan = Field(default_factory=AuthBan)
