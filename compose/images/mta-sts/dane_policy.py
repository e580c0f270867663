#!/usr/bin/python3
"""mailstack-dane-policy: a Postfix socketmap (smtp_tls_policy_maps) that puts DANE first.

postfix-mta-sts-resolver answers ``secure match=…`` for every destination with an MTA-STS
policy, and a policy-table answer overrides Postfix's ``dane`` security level, so a
destination with both would be checked against the web PKI only. RFC 8461 §2: "senders who
implement MTA-STS validation MUST NOT allow MTA-STS Policy validation to override a failing
DANE validation". The resolver's README recommends a DANE policy map listed before it; this
is that map:

- the destination's MX RRset (or, without MX, the domain itself: RFC 5321 §5.1) is
  DNSSEC-validated and every MX host has a validated TLSA RRset with a usable record
  (DANE-TA(2) or DANE-EE(3), RFC 7672 §3.1): ``OK dane-only``;
- some MX hosts have one: ``OK dane`` (Postfix authenticates those with DANE and uses
  opportunistic TLS with the others, RFC 7672 §2.2);
- none, or the MX RRset is not validated (RFC 7672 §2.2.1: DANE does not apply):
  ``NOTFOUND``, and Postfix asks the next map (mta-sts);
- a lookup fails (SERVFAIL, timeout): ``TEMP``, so Postfix defers rather than choose a
  weaker policy.

Names are looked up through the container's resolv.conf (Docker's DNS, which forwards to the
stack's validating resolver) with the DO bit; the answer counts as validated when the
resolver set AD.

    mailstack-dane-policy serve ADDRESS PORT
    mailstack-dane-policy healthcheck ADDRESS PORT
"""

from __future__ import annotations

import socket
import socketserver
import sys
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.name
import dns.rdatatype
import dns.resolver

TIMEOUT = 4.0  # seconds per question; Postfix waits smtp_tls_policy_maps' socketmap_timeout (10 s)
USABLE_USAGES = (2, 3)  # DANE-TA, DANE-EE (RFC 7672 §3.1); PKIX-TA/-EE are unusable for SMTP
MAX_REQUEST = 10000  # bytes of one netstring; a domain name is at most 253
HEALTH_NAME = "healthcheck.invalid"  # RFC 6761: never a policy, answered without a lookup


class DnsLookupError(Exception):
    """DNS could not answer (SERVFAIL, timeout, no server): the policy is unknown."""


@dataclass(frozen=True)
class Answer:
    """What one DNS question found: the records' texts, and whether the resolver validated them."""

    records: tuple[str, ...]
    secure: bool
    exists: bool = True  # False: NXDOMAIN


Lookup = Callable[[str, str], Answer]


def policy(domain: str, lookup: Lookup) -> str:
    """The socketmap reply (without netstring framing) for a next-hop ``domain``."""
    name = domain.strip().rstrip(".").lower()
    if not name or name.startswith((".", "[")) or name == HEALTH_NAME or _is_address(name):
        return "NOTFOUND "  # parent-domain probes, [host]:port next hops and addresses
    try:
        hosts = _mx_hosts(name, lookup)
        if not hosts:
            return "NOTFOUND "
        dane = [_has_usable_tlsa(host, lookup) for host in hosts]
    except DnsLookupError as exc:
        return f"TEMP {exc}"
    if all(dane):
        return "OK dane-only"
    if any(dane):
        return "OK dane"
    return "NOTFOUND "


def _mx_hosts(name: str, lookup: Lookup) -> list[str]:
    """The MX hosts of a domain whose MX RRset is validated; [] when DANE cannot apply."""
    mx = lookup(name, "MX")
    if not mx.secure or not mx.exists:
        return []
    if not mx.records:
        return [name]  # no MX: the domain is its own host (RFC 5321 §5.1)
    hosts = []
    for record in mx.records:
        _, _, exchange = record.partition(" ")
        host = exchange.rstrip(".").lower()
        if host:  # "0 ." is a null MX (RFC 7505): no mail at all, nothing to secure
            hosts.append(host)
    return hosts


def _has_usable_tlsa(host: str, lookup: Lookup) -> bool:
    tlsa = lookup(f"_25._tcp.{host}", "TLSA")
    if not tlsa.secure:
        return False
    return any(int(record.split()[0]) in USABLE_USAGES for record in tlsa.records)


def _is_address(name: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, name)
        except OSError:
            continue
        return True
    return False


def dns_lookup(resolver: dns.resolver.Resolver) -> Lookup:
    """A Lookup through ``resolver``, asking for DNSSEC (DO) and reading AD from the answer."""

    def lookup(name: str, rdtype: str) -> Answer:
        qname = dns.name.from_text(name)
        try:
            answer = resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer((), secure=False, exists=False)
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.YXDOMAIN) as exc:
            raise DnsLookupError(f"{name} {rdtype}: {exc.__class__.__name__}") from None
        secure = bool(answer.response.flags & dns.flags.AD)
        records = tuple(r.to_text() for r in answer.rrset) if answer.rrset is not None else ()
        return Answer(records, secure)

    return lookup


def make_resolver() -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver()  # /etc/resolv.conf: Docker's DNS → the stack's resolver
    resolver.use_edns(0, dns.flags.DO, 1232)
    resolver.flags = dns.flags.RD | dns.flags.AD
    resolver.lifetime = TIMEOUT
    resolver.cache = None  # the stack's resolver caches, and honours the records' TTLs
    return resolver


# --- the socketmap protocol (https://www.postfix.org/socketmap_table.5.html) ---------------


def netstring(text: str) -> bytes:
    data = text.encode()
    return b"%d:%s," % (len(data), data)


def read_netstring(stream: socketserver.StreamRequestHandler) -> bytes | None:
    """One netstring from the connection; None at a clean end of the connection."""
    length = b""
    while (char := stream.rfile.read(1)) != b":":
        if not char:
            if length:
                raise ValueError("connection closed inside a netstring length")
            return None
        if not char.isdigit() or len(length) > len(str(MAX_REQUEST)):
            raise ValueError(f"bad netstring length {length + char!r}")
        length += char
    size = int(length)
    if size > MAX_REQUEST:
        raise ValueError(f"netstring of {size} bytes")
    data = stream.rfile.read(size)
    if len(data) != size or stream.rfile.read(1) != b",":
        raise ValueError("truncated netstring")
    return data


class Handler(socketserver.StreamRequestHandler):
    """Postfix keeps a connection open and asks one ``name key`` question after another."""

    def handle(self) -> None:
        server = self.server
        assert isinstance(server, Server)  # noqa: S101 - the only server that uses this handler
        while True:
            try:
                request = read_netstring(self)
            except ValueError as exc:
                print(f"dane-policy: {self.client_address[0]}: {exc}", file=sys.stderr, flush=True)
                return
            if request is None:
                return
            _, _, key = request.decode(errors="replace").partition(" ")
            reply = policy(key, server.lookup)
            if not reply.startswith("NOTFOUND"):
                print(f"dane-policy: {key}: {reply}", file=sys.stderr, flush=True)
            self.wfile.write(netstring(reply))


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], lookup: Lookup) -> None:
        self.lookup = lookup
        super().__init__(address, Handler)


def serve(address: str, port: int) -> None:
    with Server((address, port), dns_lookup(make_resolver())) as server:
        print(f"dane-policy: listening on {address}:{port}", file=sys.stderr, flush=True)
        server.serve_forever()


def healthcheck(address: str, port: int) -> str | None:
    """None when the map answers the health name with NOTFOUND, else what went wrong."""
    try:
        with socket.create_connection((address, port), timeout=4) as conn:
            conn.sendall(netstring(f"dane {HEALTH_NAME}"))
            reply = conn.recv(512)
    except OSError as exc:
        return f"mailstack-dane-policy does not answer on {address}:{port}: {exc}"
    return None if reply == netstring("NOTFOUND ") else f"mailstack-dane-policy answered {reply!r}"


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("serve", "healthcheck"):
        print("usage: mailstack-dane-policy serve|healthcheck ADDRESS PORT", file=sys.stderr)
        return 2
    command, address, port = argv[0], argv[1], int(argv[2])
    if command == "serve":
        serve(address, port)
        return 0
    problem = healthcheck(address, port)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
