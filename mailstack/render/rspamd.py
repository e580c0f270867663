"""Rspamd's DKIM signing, send rate limits and online modules."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mailstack.services import RSPAMD_SECRETS
from mailstack.site.fields import rate_parts
from mailstack.site.models import Site
from mailstack.state.view import StateView

# Redis keeps this much data at most (Rspamd's rate limits, history, Bayes), below its memory limit.
REDIS_MAXMEMORY = "192mb"
# Rspamd modules that look things up on the internet (DNS lists, HTTP feeds, rspamd.com
# services). Without a resolver that reaches the world they only add latency and errors.
RSPAMD_ONLINE_MODULES: tuple[str, ...] = (
    "asn",
    "dmarc",
    "fuzzy_check",
    "hfilter",
    "known_senders",
    "neural",
    "phishing",
    "rbl",
    "reputation",
    "rspamd_update",
    "spf",
    "url_redirector",
)


@dataclass(frozen=True)
class DkimSelector:
    domain: str
    selector: str
    algorithm: str
    key_path: str  # inside the rspamd container (its secrets tmpfs, readable by _rspamd)
    dns_name: str
    dns_value: str


@dataclass(frozen=True)
class DkimDomain:
    """One signing domain: every selector signs (RSA and Ed25519); ARC seals with RSA."""

    domain: str
    selectors: tuple[DkimSelector, ...]
    arc: DkimSelector | None  # RFC 8617 only defines rsa-sha256 for ARC


@dataclass(frozen=True)
class RateLimit:
    """An Rspamd ratelimit rule: one bucket per authenticated user it selects."""

    name: str
    selector: str  # a UCL-quoted string: Rspamd's selector language
    burst: int
    rate: str  # "100 / 1h"


def dkim_selectors(state: StateView) -> list[DkimSelector]:
    return [
        DkimSelector(
            domain=k.domain,
            selector=k.selector,
            algorithm=k.algorithm,
            key_path=f"{RSPAMD_SECRETS}/{k.relpath}",
            dns_name=f"{k.selector}._domainkey.{k.domain}",
            dns_value=f"v=DKIM1; k={k.algorithm}; p={k.public_b64}",
        )
        for k in state.dkim
    ]


def dkim_domains(selectors: list[DkimSelector]) -> list[DkimDomain]:
    """Selectors grouped by domain, in the order they come; RSA first within a domain."""
    grouped: dict[str, list[DkimSelector]] = {}
    for s in selectors:
        grouped.setdefault(s.domain, []).append(s)
    out = []
    for domain, items in grouped.items():
        ordered = tuple(sorted(items, key=lambda s: s.algorithm != "rsa"))
        arc = next((s for s in ordered if s.algorithm == "rsa"), None)
        out.append(DkimDomain(domain=domain, selectors=ordered, arc=arc))
    return out


def send_limits(site: Site) -> list[RateLimit]:
    """Rspamd ratelimit rules for authenticated senders: one for every mailbox without a
    send_rate of its own (limits.send_rate), one per distinct mailbox send_rate.

    The selectors never pick the same user twice (the bucket key is the selected value).
    The ratelimit bucket counts recipients: burst = the rate's count, refilled over its period.
    """
    own: dict[str, list[str]] = {}
    for m in site.mailboxes:
        if m.send_rate is not None:
            own.setdefault(m.send_rate, []).append(m.address)
    rules = []
    if site.limits.send_rate is not None:
        listed = [address for addresses in own.values() for address in addresses]
        selector = "user.lower" + (f".not_in({_selector_args(listed)})" if listed else "")
        rules.append(_rate_rule("mailstack_send", selector, site.limits.send_rate))
    for i, (rate, addresses) in enumerate(sorted(own.items(), key=lambda kv: kv[1][0]), start=1):
        rules.append(_rate_rule(f"mailstack_send_{i}", f"user.lower.in({_selector_args(addresses)})", rate))
    return rules


def _selector_args(addresses: list[str]) -> str:
    # Double-quoted selector arguments; addresses never contain '"' or '\' (see fields.py).
    return ", ".join(f'"{a}"' for a in addresses)


def _rate_rule(name: str, selector: str, rate: str) -> RateLimit:
    count, period = rate_parts(rate)
    return RateLimit(name=name, selector=json.dumps(selector), burst=count, rate=f"{count} / {period}")


def rspamd_disabled(*, offline: bool) -> dict[str, bool]:
    """Each module that needs the internet → whether to switch it off (all of them offline)."""
    return dict.fromkeys(RSPAMD_ONLINE_MODULES, offline)
