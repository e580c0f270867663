"""dns.resolver: where the stack's own validating resolver (Unbound) gets its answers."""

from __future__ import annotations

import ipaddress
import zlib
from typing import Annotated, Any, Literal

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from mailstack.site.base import Model
from mailstack.site.fields import IPAddress

_ANCHOR_TYPES = (dns.rdatatype.DS, dns.rdatatype.DNSKEY)


def parse_trust_anchor(value: Any) -> str:
    """A DS or DNSKEY record in zone-file form, ``<zone> [TTL] [IN] DS|DNSKEY <data>``, as
    Unbound's trust-anchor takes it; normalised to ``<zone>. <TYPE> <data>``."""
    if not isinstance(value, str):
        raise ValueError(f"expected a DS or DNSKEY record such as 'corp. DS 12345 13 2 AB…', got {value!r}")
    words = value.split()
    if len(words) < 3:
        raise ValueError(f"{value!r} is not a DS or DNSKEY record ('<zone> DS <key tag> <algorithm> …')")
    owner, rest = words[0], words[1:]
    if rest[0].isdigit():  # a TTL, as dig prints it
        rest = rest[1:]
    if rest and rest[0].upper() == "IN":
        rest = rest[1:]
    if not rest or rest[0].upper() not in ("DS", "DNSKEY"):
        raise ValueError(f"{value!r} is neither a DS nor a DNSKEY record")
    try:
        name = dns.name.from_text(owner)
        rdtype = dns.rdatatype.from_text(rest[0].upper())
        data = dns.rdata.from_text(dns.rdataclass.IN, rdtype, " ".join(rest[1:]))
    except (dns.exception.DNSException, ValueError) as exc:
        raise ValueError(f"{value!r} is not a valid {rest[0].upper()} record: {exc}") from None
    if rdtype not in _ANCHOR_TYPES:  # pragma: no cover - filtered above
        raise ValueError(f"{value!r} is neither a DS nor a DNSKEY record")
    return f"{name.to_text()} {dns.rdatatype.to_text(rdtype)} {data.to_text()}"


TrustAnchor = Annotated[
    str,
    BeforeValidator(parse_trust_anchor),
    WithJsonSchema(
        {
            "type": "string",
            "description": "A DS or DNSKEY record of a zone whose signatures the resolver "
            "checks from there: 'corp.example. DS 12345 13 2 3F…'.",
        }
    ),
]


class Resolver(Model):
    """The stack's own resolver (Unbound): DNSSEC-validating and caching, reachable only from
    inside the stack. Postfix (MX, TLSA for DANE, postscreen's DNSBLs), Rspamd (SPF, DKIM,
    DMARC, RBLs) and the MTA-STS policy lookups ask it, never Docker's DNS or a public resolver:
    blocklists refuse queries that come through shared public resolvers, and DANE needs
    answers whose signatures were checked by a resolver the server trusts."""

    mode: Literal["recursive", "forward"] = Field(
        default="recursive",
        description=(
            "recursive: resolve from the root servers (needs outbound DNS, port 53). forward: "
            "send every query to `forward` (a company resolver); answers are still validated here."
        ),
    )
    forward: tuple[IPAddress, ...] = Field(
        default=(), description="Resolvers to forward to (mode forward); port 53."
    )
    trust_anchors: tuple[TrustAnchor, ...] = Field(
        default=(),
        description=(
            "Extra DNSSEC trust anchors, for private zones signed with keys no parent zone "
            "vouches for. The root's anchor is always there."
        ),
    )

    @model_validator(mode="after")
    def _forward_needs_addresses(self) -> Resolver:
        if self.mode == "forward" and not self.forward:
            raise ValueError("mode forward needs at least one address under forward")
        if self.mode == "recursive" and self.forward:
            raise ValueError("forward addresses are used by mode forward only; set mode: forward")
        return self


# The back network's default subnet is one /27 of this block, chosen by the site id, so that
# two sites on one host rarely meet. Docker's own address pools (172.17.0.0/12 and
# 192.168.0.0/16) never hand it out.
INTERNAL_BLOCK = ipaddress.IPv4Network("10.251.0.0/16")
INTERNAL_PREFIX = 27


def default_internal_subnet(site_id: str) -> str:
    count = 2 ** (INTERNAL_PREFIX - INTERNAL_BLOCK.prefixlen)
    index = zlib.crc32(site_id.encode()) % count
    base = int(INTERNAL_BLOCK.network_address) + index * 2 ** (32 - INTERNAL_PREFIX)
    return str(ipaddress.IPv4Network((base, INTERNAL_PREFIX)))


# Services with a fixed address on the back network, counted down from the subnet's last host
# address, in its upper half (outside dynamic_range; a /28 has 8 such addresses). The resolver:
# other services name it in their dns:. postfix and dmarc-reports: the reporter (Rspamd's
# rspamadm, whose DNS is the resolver, so it cannot look up "postfix") reaches Postfix's
# listener for it by address, and that listener admits the reporter's address alone.
FIXED_ADDRESSES = ("resolver", "postfix", "dmarc-reports")


def fixed_address(subnet: str, service: str) -> str:
    """The fixed address of ``service`` (one of FIXED_ADDRESSES) on the back network ``subnet``."""
    network = ipaddress.IPv4Network(subnet)
    return str(network.broadcast_address - 1 - FIXED_ADDRESSES.index(service))


def resolver_address(subnet: str) -> str:
    """The resolver's fixed address: the subnet's last host address, outside dynamic_range."""
    return fixed_address(subnet, "resolver")


def dynamic_range(subnet: str) -> str:
    """The lower half of the subnet, where Docker hands out the other containers' addresses."""
    network = ipaddress.IPv4Network(subnet)
    return str(next(network.subnets(prefixlen_diff=1)))


def subnet_clash(subnet: str, taken: dict[str, list[str]]) -> tuple[str, str] | None:
    """The first (network name, subnet) among ``taken`` that overlaps ``subnet``."""
    ours = ipaddress.IPv4Network(subnet)
    for name, subnets in sorted(taken.items()):
        for other in subnets:
            network = ipaddress.ip_network(other, strict=False)
            if network.version == 4 and ours.overlaps(network):
                return name, other
    return None


def free_internal_subnet(site_id: str, taken: dict[str, list[str]]) -> str:
    """A /27 of INTERNAL_BLOCK that no ``taken`` subnet overlaps, starting at the site's default."""
    first = ipaddress.IPv4Network(default_internal_subnet(site_id))
    candidates = list(INTERNAL_BLOCK.subnets(new_prefix=INTERNAL_PREFIX))
    start = candidates.index(first)
    for candidate in candidates[start:] + candidates[:start]:
        if subnet_clash(str(candidate), taken) is None:
            return str(candidate)
    return "a private /27 that no Docker network uses"
