"""The front network's IPv6 subnet: where clients' IPv6 connections arrive, un-proxied.

Docker publishes a port on an IPv6 host address by DNAT (with the engine's ip6tables) to the
container's address on an IPv6-enabled network; without one, docker-proxy relays the
connection and every IPv6 client appears as the same IPv4 gateway, so SPF, postscreen, rate
limits and bans would all judge the wrong address.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from mailstack.site.fields import parse_network

# Unique local addresses (RFC 4193): fd00::/8 with a 40-bit global id. The site id stands in
# for the random id, so the subnet is stable across renders and distinct between sites.
ULA = ipaddress.IPv6Network("fc00::/7")
FRONT_PREFIX = 64
MIN_PREFIX, MAX_PREFIX = 48, 112


def default_front_subnet6(site_id: str) -> str:
    global_id = int.from_bytes(hashlib.sha256(site_id.encode()).digest()[:5], "big")
    base = (0xFD << 120) | (global_id << 80)
    return str(ipaddress.IPv6Network((base, FRONT_PREFIX)))


def front_gateway6(subnet: str) -> str:
    """Docker's gateway on the front network (its first address): the host's side, which
    docker-proxy's relayed connections come from."""
    return str(ipaddress.IPv6Network(subnet)[1])


def _front_subnet6(value: Any) -> str:
    network = ipaddress.ip_network(parse_network(value))
    if not isinstance(network, ipaddress.IPv6Network) or not network.subnet_of(ULA):
        raise ValueError(
            f"{value!r} is not a unique local IPv6 network (fc00::/7, such as fd12:3456:789a::/64)"
        )
    if not MIN_PREFIX <= network.prefixlen <= MAX_PREFIX:
        raise ValueError(
            f"{value!r}: the prefix must be between /{MIN_PREFIX} and /{MAX_PREFIX} (a /64 is usual)"
        )
    return str(network)


FrontSubnet6 = Annotated[
    str,
    BeforeValidator(_front_subnet6),
    WithJsonSchema({"type": "string", "description": "A unique local IPv6 network: fd12:3456:789a::/64."}),
]
