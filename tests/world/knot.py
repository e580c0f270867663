"""The world's authoritative DNS: Knot serving DNSSEC-signed zones, ``test.`` and two under
public suffixes, ``example.com.`` and ``example.net.`` (RFC 2606 names, served only inside
the world network).

Every world domain of ``test.`` (a.test, b.test, forger.test, dnsbl.test) is a name inside
that one zone, without delegations. The other two exist because Rspamd's DMARC reporter
only reports about, and to, domains under a public suffix (the public suffix list has no
``test``); site A hosts them. Each zone has one key, so a validating resolver needs one trust
anchor per zone: its DS. Knot signs a zone when it loads it and again after every dynamic
update (RFC 2136, signed with TSIG), bumping its serial; the harness only ever sends updates
and queries.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import secrets
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.dnssec
import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.zonefile
from docker.models.containers import Container

ZONE = dns.name.from_text("test.")
# Under public suffixes (com, net): Rspamd's DMARC reporter drops domains outside them.
PUBLIC_ZONES = (dns.name.from_text("example.com."), dns.name.from_text("example.net."))
ZONES = (ZONE, *PUBLIC_ZONES)
TSIG_NAME = "world-update."
TTL = 60  # short, so that a resolver's cache never hides a change for long
QUERY_TIMEOUT = 3.0

KNOT_CONF = """\
# The world's Knot DNS (tests/world/dns.py); test-only.
server:
    rundir: /run/knot
    user: knot:knot
    listen: [ 0.0.0.0@53, ::@53 ]

log:
  - target: stdout
    any: info

database:
    storage: /var/lib/knot

key:
  - id: {tsig_name}
    algorithm: hmac-sha256
    secret: {secret}

acl:
  - id: world-update
    key: {tsig_name}
    action: update

policy:
  - id: world
    algorithm: ecdsap256sha256
    # One key signs everything: its DS is the whole trust anchor.
    single-type-signing: on

template:
  - id: default
    # The harness owns the zone files: Knot never writes them back, updates live in the journal.
    zonefile-sync: -1
    journal-content: changes
    serial-policy: increment
    dnssec-signing: on
    dnssec-policy: world
    acl: world-update

zone:
{zones}
"""


def zone_file(zone: dns.name.Name) -> str:
    """Where the zone's file is copied into the Knot container."""
    return f"/var/lib/knot/zones/{zone.to_text(omit_final_dot=True)}.zone"


def zone_of(name: dns.name.Name | str) -> dns.name.Name:
    """The world zone that holds ``name`` (ValueError outside every one)."""
    name = dns.name.from_text(name) if isinstance(name, str) else name
    for zone in ZONES:
        if name.is_subdomain(zone):
            return zone
    raise ValueError(f"{name} is in none of the world's zones {[z.to_text() for z in ZONES]}")


def zone_text(
    ns4: ipaddress.IPv4Address, ns6: ipaddress.IPv6Address, records: Iterable[str], zone: dns.name.Name = ZONE
) -> str:
    """A zone as Knot first loads it: SOA, NS and the given records (absolute names). Every
    zone names ns.test. as its server; its address lives in test."""
    head = [
        f"$ORIGIN {zone}",
        f"$TTL {TTL}",
        f"@ SOA ns.test. hostmaster.test. 1 {TTL} {TTL} 86400 {TTL}",
        "@ NS ns.test.",
        *([f"ns A {ns4}", f"ns AAAA {ns6}"] if zone == ZONE else []),
    ]
    return "\n".join([*head, *records]) + "\n"


def files_tar(files: dict[str, str]) -> bytes:
    """A tar of text files (path → content), world-readable, for ``put_archive`` at /."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def parse_records(text: str) -> list[dns.rrset.RRset]:
    """The records of zone-file text (``mailstack dns --format zone``: $ORIGIN sections,
    absolute names), every one inside a world zone."""
    # read_rrsets takes no directives; mailstack's names are absolute and its TTLs explicit,
    # so the $ORIGIN and $TTL lines say nothing the records do not.
    records = "\n".join(line for line in text.splitlines() if not line.startswith(("$ORIGIN", "$TTL")))
    # Origin the root: dnspython skips, without a word, records outside the origin it is given.
    rrsets = dns.zonefile.read_rrsets(
        records, rdclass=None, default_ttl=TTL, origin=dns.name.root, relativize=False
    )
    outside = sorted({str(r.name) for r in rrsets if not any(r.name.is_subdomain(z) for z in ZONES)})
    if outside:
        raise ValueError(f"records outside the world's zones {[z.to_text() for z in ZONES]}: {outside}")
    return rrsets


@dataclass
class DnsServer:
    """The Knot container at ``address`` (and ``address6``) on the world network."""

    container: Container
    address: ipaddress.IPv4Address
    address6: ipaddress.IPv6Address
    tsig_secret: str

    @staticmethod
    def new_secret() -> str:
        return base64.b64encode(secrets.token_bytes(32)).decode()

    @staticmethod
    def config(secret: str) -> str:
        zones = "\n".join(f"  - domain: {zone}\n    file: {zone_file(zone)}" for zone in ZONES)
        return KNOT_CONF.format(tsig_name=TSIG_NAME, secret=secret, zones=zones)

    # -- queries ---------------------------------------------------------------------------
    def query(self, name: str, rtype: str, *, dnssec: bool = True) -> dns.message.Message:
        """One query over UDP (TCP when truncated), with the DO bit for the RRSIGs."""
        request = dns.message.make_query(name, rtype, want_dnssec=dnssec)
        response, _ = dns.query.udp_with_fallback(request, str(self.address), timeout=QUERY_TIMEOUT)
        return response

    def rrset(self, name: str, rtype: str) -> tuple[dns.rrset.RRset | None, dns.rrset.RRset | None]:
        """The answer's RRset and the RRSIG covering it (None when absent)."""
        response = self.query(name, rtype)
        qname, qtype = dns.name.from_text(name), dns.rdatatype.from_text(rtype)
        found = response.get_rrset(response.answer, qname, dns.rdataclass.IN, qtype)
        sigs = response.get_rrset(response.answer, qname, dns.rdataclass.IN, dns.rdatatype.RRSIG, qtype)
        return found, sigs

    def serial(self, zone: dns.name.Name = ZONE) -> int:
        soa, _ = self.rrset(zone.to_text(), "SOA")
        if soa is None:
            raise AssertionError(f"the world's DNS answers no SOA for {zone}")
        return int(soa[0].serial)

    def wait_ready(self, timeout: float = 20) -> None:
        """Until every zone is served signed: an SOA with its RRSIG."""
        deadline, last = time.monotonic() + timeout, "no answer yet"
        pending = list(ZONES)
        while pending and time.monotonic() < deadline:
            try:
                soa, sig = self.rrset(pending[0].to_text(), "SOA")
                if soa is not None and sig is not None:
                    pending.pop(0)
                    continue
                last = f"{pending[0]} SOA served without RRSIG (not signed yet)"
            except (OSError, dns.exception.DNSException) as exc:
                last = f"{pending[0]}: {type(exc).__name__}: {exc}"
            time.sleep(0.1)
        if not pending:
            return
        logs = self.container.logs(tail=30).decode(errors="replace")
        raise AssertionError(
            f"gave up after {timeout:.0f}s waiting for Knot at {self.address} to serve the signed zones "
            f"{[z.to_text() for z in pending]} ({last}); its log:\n{logs}"
        )

    # -- trust anchor ----------------------------------------------------------------------
    def trust_anchor(self, zone: dns.name.Name = ZONE) -> str:
        """The zone's DS (SHA-256) in presentation format, ``test. DS <tag> 13 2 <hex>``, as
        Knot's key store has it (keymgr), not as the server answers."""
        command = ["keymgr", "-c", "/etc/knot/knot.conf", zone.to_text(), "ds"]
        code, output = self.container.exec_run(command)
        if code != 0:
            raise AssertionError(f"keymgr {zone} ds failed ({code}): {output.decode(errors='replace')}")
        lines = [line for line in output.decode().splitlines() if line.split()[1:2] == ["DS"]]
        sha256 = [line for line in lines if line.split()[4] == "2"]
        if len(sha256) != 1:
            raise AssertionError(f"expected one SHA-256 DS of {zone}, keymgr printed: {lines}")
        return " ".join(sha256[0].split())

    def trust_anchors(self) -> list[str]:
        """The DS of every world zone: what a validating resolver needs."""
        return [self.trust_anchor(zone) for zone in ZONES]

    def trust_anchor_rrset(self) -> dns.rrset.RRset:
        name, rdtype, rdata = self.trust_anchor().split(" ", 2)
        return dns.rrset.from_text(name, TTL, "IN", rdtype, rdata)

    # -- changes ---------------------------------------------------------------------------
    def update(self, update: dns.update.UpdateMessage) -> None:
        response = dns.query.tcp(update, str(self.address), timeout=10)
        if response.rcode() != dns.rcode.NOERROR:
            raise AssertionError(f"the world's DNS refused an update: {dns.rcode.to_text(response.rcode())}")

    def new_update(self, zone: dns.name.Name = ZONE) -> dns.update.UpdateMessage:
        keyring = dns.tsigkeyring.from_text({TSIG_NAME: self.tsig_secret})
        return dns.update.UpdateMessage(zone, keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256)

    def replace(
        self, name: str, rtype: str, values: Sequence[str], *, ttl: int = TTL, timeout: float = 10
    ) -> int:
        """Make ``values`` the whole RRset ``name``/``rtype`` (none: delete it); Knot re-signs
        it and bumps its zone's serial. Waits until it is served signed; returns the new serial."""
        zone = zone_of(name)
        before = self.serial(zone)
        update = self.new_update(zone)
        if values:
            update.replace(name, ttl, rtype, *values)
        else:
            update.delete(name, rtype)
        self.update(update)
        self.wait_served(name, rtype, values, after_serial=before, timeout=timeout)
        return self.serial(zone)

    def add_rrsets(self, rrsets: Iterable[dns.rrset.RRset]) -> int:
        """Replace each RRset's name/type with it, one update per zone; returns the new serial
        of ``test.`` (or of the one zone touched when that is another)."""
        by_zone: dict[dns.name.Name, list[dns.rrset.RRset]] = {}
        for rrset in rrsets:
            by_zone.setdefault(zone_of(rrset.name), []).append(rrset)
        for zone, members in by_zone.items():
            before = self.serial(zone)
            update = self.new_update(zone)
            for rrset in members:
                update.replace(rrset.name, rrset)
            self.update(update)
            for rrset in members:
                values = [r.to_text() for r in rrset]
                self.wait_served(
                    str(rrset.name), dns.rdatatype.to_text(rrset.rdtype), values, after_serial=before
                )
        return self.serial(ZONE if ZONE in by_zone or not by_zone else next(iter(by_zone)))

    def wait_served(
        self, name: str, rtype: str, values: Sequence[str], *, after_serial: int, timeout: float = 10
    ) -> None:
        """Until the server answers exactly ``values`` for name/type, signed, under a serial
        newer than ``after_serial``."""
        qtype = dns.rdatatype.from_text(rtype)
        wanted = {
            dns.rdata.from_text(dns.rdataclass.IN, qtype, v, origin=ZONE, relativize=False) for v in values
        }
        deadline, last = time.monotonic() + timeout, "nothing yet"
        while time.monotonic() < deadline:
            found, sig = self.rrset(name, rtype)
            served = set(found) if found is not None else set()
            serial = self.serial(zone_of(name))
            if served == wanted and (sig is not None or not wanted) and serial > after_serial:
                return
            shown = sorted(r.to_text() for r in served)
            last = f"serial {serial}, served {shown}, RRSIG {'yes' if sig else 'no'}"
            time.sleep(0.1)
        raise AssertionError(
            f"gave up after {timeout:.0f}s waiting for the world's DNS to serve {name} {rtype} "
            f"{sorted(values)} signed after serial {after_serial}; {last}"
        )
