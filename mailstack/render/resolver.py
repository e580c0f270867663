"""The resolver service (Unbound) and the back network's fixed subnet it needs."""

from __future__ import annotations

from dataclasses import dataclass

from mailstack.site.models import Site
from mailstack.site.resolver import dynamic_range

# Small caches: a mail server asks for few names (MX, TLSA, SPF, DKIM, DMARC, blocklists) and
# the container's memory limit is 128m. Unbound's rrset cache should be about twice the message cache.
MSG_CACHE = "16m"
RRSET_CACHE = "32m"
# The control socket: the healthcheck, `check` and statistics use it (no TCP control port).
CONTROL_SOCKET = "/tmp/unbound-control"  # noqa: S108 - the container's own tmpfs
# Debian's dns-root-data, in the image: the root zone's trust anchor and hints.
ROOT_KEY = "/usr/share/dns/root.key"
ROOT_HINTS = "/usr/share/dns/root.hints"


@dataclass(frozen=True)
class BackNetwork:
    subnet: str
    ip_range: str


@dataclass(frozen=True)
class ResolverSettings:
    address: str  # where it answers on the back network
    subnet: str  # who may ask: the back network
    forward: tuple[str, ...]  # empty: recursive from the root
    trust_anchors: tuple[str, ...]
    # The anchors' zones: Unbound answers some names itself (test., home.arpa., private reverse
    # zones: RFC 6761/6303), which would hide a private zone of that name.
    private_zones: tuple[str, ...]
    msg_cache: str
    rrset_cache: str
    control_socket: str
    root_key: str
    root_hints: str


@dataclass(frozen=True)
class FrontNetwork:
    subnet6: str  # IPv6 (the IPv4 subnet is Docker's choice)


def front_network(site: Site) -> FrontNetwork | None:
    """The front network's IPv6 subnet, when the site listens on an IPv6 address."""
    return None if site.front_subnet6 is None else FrontNetwork(subnet6=site.front_subnet6)


def back_network(site: Site) -> BackNetwork | None:
    """The back network's fixed subnet, when the site has a resolver (online) at a fixed address."""
    if site.offline:
        return None
    return BackNetwork(subnet=site.internal_subnet, ip_range=dynamic_range(site.internal_subnet))


def resolver_settings(site: Site) -> ResolverSettings | None:
    if site.resolver_address is None:
        return None
    resolver = site.dns.resolver
    return ResolverSettings(
        address=site.resolver_address,
        subnet=site.internal_subnet,
        forward=resolver.forward,
        trust_anchors=resolver.trust_anchors,
        private_zones=tuple(dict.fromkeys(anchor.split()[0] for anchor in resolver.trust_anchors)),
        msg_cache=MSG_CACHE,
        rrset_cache=RRSET_CACHE,
        control_socket=CONTROL_SOCKET,
        root_key=ROOT_KEY,
        root_hints=ROOT_HINTS,
    )
