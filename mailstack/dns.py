"""The DNS records to publish for a site, built from the site and its state.

Every record says why it exists (``purpose``). They are printed by ``mailstack dns`` as a
zone file, JSON or a table, and rendered into ``dns/records.json`` (the same JSON).

Zones: each record belongs to one site domain (``domain``). Records of the server's own
name (its A/AAAA reminders, the HELO name's SPF, TLSA) go, once, into the site domain that
contains ``hostname``; when no site domain does, into a section of their own named after
``hostname``'s parent domain.

Values are in DNS presentation format (targets end with a dot), except TXT values, which
are the record's text as one string: the zone format quotes it and splits it into
character-strings of at most 255 bytes (RFC 1035 §3.3.14). A value that starts with ``<``
is a reminder to fill in, not a record: the zone format prints it commented out.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from mailstack import services
from mailstack.discovery import dav
from mailstack.site.models import DomainEntry, Site
from mailstack.site.records import Dmarc
from mailstack.state import State
from mailstack.state.view import StateView
from mailstack.vault import Vault

RecordType = Literal["MX", "A", "AAAA", "TXT", "SRV", "CNAME", "CAA", "TLSA"]
FORMATS = ("table", "zone", "json")
MX_PRIORITY = 10

# RFC 6186 services: (service label, protocol in network.ports, implicit TLS), the mail client
# ports of the catalogue. Implicit TLS gets priority 0 and the STARTTLS variant 10, so that
# clients prefer implicit TLS (RFC 8314); implicit ones are listed first.
CLIENT_SERVICES: tuple[tuple[str, str, bool], ...] = tuple(
    (f"_{p.protocol}._tcp", p.protocol, p.tls == "implicit")
    for _, p in sorted(services.ports().values(), key=lambda sp: sp[1].tls != "implicit")
    if p.client is not None
)


@dataclass(frozen=True)
class Record:
    domain: str  # the zone (site domain) it is published in
    name: str  # fully qualified, without the trailing dot
    type: RecordType
    value: str
    ttl: int
    purpose: str

    @property
    def placeholder(self) -> bool:
        """A reminder (such as the server's IPv6 address) that the site cannot know."""
        return self.value.startswith("<")

    def zone_line(self) -> str:
        rdata = txt_strings(self.value) if self.type == "TXT" else self.value
        line = f"{self.name}. {self.ttl} IN {self.type} {rdata}"
        return f"; {line}" if self.placeholder else line


_ALGORITHMS = {"rsa": "RSA", "ed25519": "Ed25519"}
_DMARC_ACTIONS = {"none": "only monitor", "quarantine": "quarantine", "reject": "reject"}

# The record factory of one zone: (name, type, value, purpose) → Record.
_Rec = Callable[[str, RecordType, str, str], Record]


@dataclass(frozen=True)
class SiteRecords:
    """What ``mailstack dns`` prints: the records, notes for the operator, state it created."""

    records: tuple[Record, ...]
    notes: tuple[str, ...]
    state_created: tuple[str, ...] = ()


# -- building ---------------------------------------------------------------------------------
def site_records(site: Site, state_dir: Path, *, vault: Vault | None = None) -> SiteRecords:
    """Records from the site's state, creating what is missing (as `render` does) so that
    the keys printed are the keys that will sign and serve."""
    state = State(state_dir, vault=vault)
    view = state.ensure(site)
    return SiteRecords(
        records=tuple(build_records(site, view)),
        notes=tuple(notes(site, view)),
        state_created=tuple(state.changes.created),
    )


def build_records(site: Site, view: StateView) -> list[Record]:
    """Every record to publish, zone by zone in the site's order: a pure function."""
    records: list[Record] = []
    for zone in zones(site):
        records += _zone_records(site, view, zone)
    return records


def zones(site: Site) -> list[str]:
    """The site's domains, then hostname's zone when no site domain contains it."""
    host = host_zone(site)
    return [*site.domain_names, *([host] if host not in site.domain_names else [])]


def host_zone(site: Site) -> str:
    """The zone for records of ``hostname``: the longest site domain that contains it, else
    its parent domain."""
    containing = [d for d in site.domain_names if _within(site.hostname, d)]
    return max(containing, key=len) if containing else site.hostname.partition(".")[2]


def _zone_records(site: Site, view: StateView, zone: str) -> Iterator[Record]:
    entry = next((d for d in site.domains if d.name == zone), None)
    ttl = site.dns.ttl

    def rec(name: str, rtype: RecordType, value: str, purpose: str) -> Record:
        return Record(zone, name, rtype, value, ttl, purpose)

    if entry is not None:
        yield from _mail_records(site, view, entry, rec)
    if zone == host_zone(site):
        yield from _host_records(site, view, rec, own_zone=entry is None)
    if entry is not None:
        yield from _report_authorisations(site, zone, rec)


def _mail_records(site: Site, view: StateView, entry: DomainEntry, rec: _Rec) -> Iterator[Record]:
    d, host = entry.name, site.hostname
    yield rec(d, "MX", f"{MX_PRIORITY} {host}.", f"mail for {d} is delivered to {host} (RFC 5321 §5.1)")
    spf = entry.spf or site.dns.spf
    yield rec(d, "TXT", spf, f"SPF: the hosts that may send mail from {d} (RFC 7208)")
    for key in sorted((k for k in view.dkim if k.domain == d), key=lambda k: k.algorithm != "rsa"):
        yield rec(
            f"{key.selector}._domainkey.{d}",
            "TXT",
            f"v=DKIM1; k={key.algorithm}; p={key.public_b64}",
            f"DKIM: the {_ALGORITHMS[key.algorithm]} public key that verifies mail signed by {d} "
            f"(selector {key.selector}; RFC 6376, RFC 8463)",
        )
    dmarc = effective_dmarc(site, entry)
    yield rec(
        f"_dmarc.{d}",
        "TXT",
        dmarc_value(site, dmarc),
        f"DMARC: receivers {_DMARC_ACTIONS[dmarc.policy]} mail from {d} that passes neither aligned SPF "
        "nor aligned DKIM" + (", and send reports" if dmarc_rua(site, dmarc) else "") + " (RFC 7489)",
    )
    published = site.network.ports.published()
    # The web service's names, only where it serves HTTPS (network.ports.https).
    https = published.get("https")
    if https is not None:
        yield rec(
            f"_mta-sts.{d}",
            "TXT",
            f"v=STSv1; id={mta_sts_id(site)}",
            f"MTA-STS: senders fetch the policy (mode {site.mta_sts.mode}) from "
            f"https://mta-sts.{d}/.well-known/mta-sts.txt; the id changes with the policy (RFC 8461)",
        )
        yield from _cname(
            site, f"mta-sts.{d}", "MTA-STS: the web host that serves the policy over HTTPS", rec
        )
    yield rec(
        f"_smtp._tls.{d}",
        "TXT",
        f"v=TLSRPTv1; rua={_mailto(site.admin_email)}",
        f"TLS-RPT: senders report TLS failures delivering to {d} to {site.admin_email} (RFC 8460)",
    )
    for label, protocol, implicit in CLIENT_SERVICES:
        port = published.get(protocol)
        if port is None:
            value, why = "0 0 0 .", f"{protocol} is not offered: clients must not look for it (RFC 6186 §4)"
        else:
            value = f"{0 if implicit else 10} 1 {port} {host}."
            tls = "implicit TLS" if implicit else "STARTTLS, required before login; less preferred"
            why = f"mail clients find {protocol} ({tls}) of {d} on {host}:{port} (RFC 6186, RFC 8314)"
        yield rec(f"{label}.{d}", "SRV", value, why)
    if https is not None:
        yield from _cname(site, f"autoconfig.{d}", "Thunderbird and others fetch autoconfig XML here", rec)
        yield from _cname(site, f"autodiscover.{d}", "Outlook posts its autodiscover request here", rec)
        yield rec(
            f"_autodiscover._tcp.{d}",
            "SRV",
            f"0 1 {https} {host}.",
            "Outlook finds the autodiscover service over HTTPS on the mail server",
        )
    yield from _dav_records(site, d, rec)
    yield from _caa(site, d, rec)


def _dav_records(site: Site, d: str, rec: _Rec) -> Iterator[Record]:
    """RFC 6764: CalDAV and CardDAV over TLS on the mail server, and their context path; the
    plain-text variants are marked as not offered (RFC 2782's "."), so clients never try them."""
    service = dav(site)
    if service is None:
        return
    for label, what in (("caldav", "calendars (CalDAV)"), ("carddav", "contacts (CardDAV)")):
        yield rec(
            f"_{label}s._tcp.{d}",
            "SRV",
            f"0 1 {service.port} {service.host}.",
            f"clients find the groupware's {what} over HTTPS on {service.host} (RFC 6764 §3)",
        )
        yield rec(
            f"_{label}s._tcp.{d}",
            "TXT",
            f"path={service.root}",
            "… under this path, where the user's principal is found (RFC 6764 §4)",
        )
        yield rec(
            f"_{label}._tcp.{d}",
            "SRV",
            "0 0 0 .",
            f"{what} without TLS is not offered: clients must not look for it (RFC 6764 §3)",
        )


def _host_records(site: Site, view: StateView, rec: _Rec, *, own_zone: bool) -> Iterator[Record]:
    host = site.hostname
    addresses = public_addresses(site)
    families: tuple[tuple[RecordType, int], ...] = (("A", 4), ("AAAA", 6))
    for rtype, version in families:
        found = sorted({str(a) for a in addresses if a.version == version})
        values = found or [f"<public IPv{version} address of {host}, if it has one>"]
        for value in values:
            yield rec(
                host,
                rtype,
                value,
                f"the mail server's IPv{version} address: MX and client records point to {host}"
                + ("" if found else "; fill in (or leave out): neither hosts[] nor network.bind gives one"),
            )
    if host not in site.domain_names:  # a site domain's own SPF record already stands there
        yield rec(
            host,
            "TXT",
            "v=spf1 a -all",
            f"SPF for the HELO name {host}: checked for bounces, whose MAIL FROM is empty (RFC 7208 §2.3)",
        )
    if own_zone:
        yield from _caa(site, host, rec)
    for pin in view.tlsa:
        if pin.role == "current":
            why = f"DANE: pins the {pin.kind.upper()} server key in use ({pin.source})"
        else:
            why = (
                f"DANE: pins the next {pin.kind.upper()} server key ({pin.source}), published ahead "
                "so that a renewal switching to it does not break DANE (RFC 7671 §8.1)"
            )
        yield rec(
            f"_25._tcp.{host}",
            "TLSA",
            f"3 1 1 {pin.spki_sha256}",
            why + "; effective only in a DNSSEC-signed zone (RFC 7672)",
        )


def _report_authorisations(site: Site, zone: str, rec: _Rec) -> Iterator[Record]:
    """DMARC reports for another site domain, sent to an address here, must be authorised in
    this zone, or receivers do not send them (RFC 7489 §7.1)."""
    for other in site.domains:
        if other.name == zone:
            continue
        targets = {a.rpartition("@")[2] for a in dmarc_rua(site, effective_dmarc(site, other))}
        if zone in targets and not _within(other.name, zone):
            yield rec(
                f"{other.name}._report._dmarc.{zone}",
                "TXT",
                "v=DMARC1",
                f"DMARC: {zone} accepts the reports about {other.name} (RFC 7489 §7.1)",
            )


def _cname(site: Site, name: str, purpose: str, rec: _Rec) -> Iterator[Record]:
    if name != site.hostname:  # a name cannot be both a CNAME and the server's address
        yield rec(name, "CNAME", f"{site.hostname}.", f"{purpose}; the mail server answers")


def _caa(site: Site, name: str, rec: _Rec) -> Iterator[Record]:
    if not site.dns.caa:
        return
    for issuer in site.dns.caa:
        yield rec(
            name,
            "CAA",
            f'0 issue "{issuer}"',
            f"CAA: {issuer} may issue certificates for {name}; CAs not listed must not (RFC 8659)",
        )
    yield rec(
        name,
        "CAA",
        f'0 iodef "{_mailto(site.admin_email)}"',
        "CAA: where CAs report refused certificate requests (RFC 8659)",
    )


# -- policies -----------------------------------------------------------------------------------
def effective_dmarc(site: Site, entry: DomainEntry) -> Dmarc:
    """The site's DMARC settings, with the fields a domain gives replacing the site's."""
    base = site.dns.dmarc
    if entry.dmarc is None:
        return base
    return base.model_copy(update={f: getattr(entry.dmarc, f) for f in entry.dmarc.model_fields_set})


def dmarc_rua(site: Site, dmarc: Dmarc) -> tuple[str, ...]:
    return (site.admin_email,) if dmarc.rua is None else dmarc.rua


def dmarc_value(site: Site, dmarc: Dmarc) -> str:
    rua = dmarc_rua(site, dmarc)
    return f"v=DMARC1; p={dmarc.policy}" + (f"; rua={','.join(_mailto(a) for a in rua)}" if rua else "")


def mta_sts_policy(site: Site) -> str:
    """The policy file served at https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 §3.2)."""
    lines = [
        "version: STSv1",
        f"mode: {site.mta_sts.mode}",
        f"mx: {site.hostname}",
        f"max_age: {site.mta_sts.max_age}",
    ]
    return "\r\n".join(lines) + "\r\n"


def mta_sts_id(site: Site) -> str:
    """The policy id: changes exactly when the policy text does (1-32 alphanumerics, RFC 8461 §3.1)."""
    return hashlib.sha256(mta_sts_policy(site).encode()).hexdigest()[:20]


def notes(site: Site, view: StateView) -> Iterator[str]:
    """What the operator must know beyond the records."""
    if site.tls.mode == "files":
        if view.tlsa:
            yield (
                f"TLSA pins the key of {site.tls.cert_file} only; no next key is known. Before a renewal "
                "with a new key, publish the new key's TLSA record next to it and wait two TTLs."
            )
        else:
            yield f"cannot read a certificate from {site.tls.cert_file}: no TLSA record for {site.hostname}"
    if site.tls.mode == "acme":
        yield (
            "tls.mode acme: TLSA pins the keys in use and the keys the next renewal switches to. "
            "A renewal makes a new next key: run `mailstack dns` again after it (for a server, "
            "after the next `mailstack deploy`, which brings its keys back) and publish the new "
            "TLSA record before the following renewal; `mailstack check --dns` warns until then."
        )
    listed = set(site.domain_names)
    for entry in site.domains:
        for address in dmarc_rua(site, effective_dmarc(site, entry)):
            target = address.rpartition("@")[2]
            if target not in listed and not _within(entry.name, target):
                yield (
                    f"DMARC reports for {entry.name} go to {target}: it must publish "
                    f'{entry.name}._report._dmarc.{target} TXT "v=DMARC1" (RFC 7489 §7.1)'
                )
    zone = host_zone(site)
    if zone not in listed:
        yield f"{site.hostname} is in no site domain: publish its records in the zone that holds it ({zone}?)"
    versions = {a.version for a in public_addresses(site)}
    if not versions:
        yield (
            f"neither hosts[] nor network.bind gives a public address: fill in the A/AAAA records "
            f"of {site.hostname}"
        )
    elif 6 not in versions and site.front_subnet6 is not None:
        yield (
            f"the site listens on IPv6 but no public IPv6 address is known: publish {site.hostname}'s "
            "AAAA record if the server has one (hosts[].public_addresses), or IPv6 clients find no way in"
        )


def public_addresses(site: Site) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The server's public addresses, for its A and AAAA records: the hosts' (their SSH
    address when it is one, and public_addresses) and the global addresses the ports are
    bound to."""
    found = [ipaddress.ip_address(h.address) for h in site.hosts if _is_ip(h.address)]
    found += [ipaddress.ip_address(a) for h in site.hosts for a in h.public_addresses]
    found += [a for a in map(ipaddress.ip_address, site.network.bind) if a.is_global]
    return found


# -- output ---------------------------------------------------------------------------------------
def format_json(records: Iterable[Record]) -> str:
    """A list of {domain, name, type, value, ttl, purpose}: dns/records.json."""
    return json.dumps([asdict(r) for r in records], indent=2, ensure_ascii=False) + "\n"


def records_json(site: Site, view: StateView) -> bytes:
    return format_json(build_records(site, view)).encode("utf-8")


# -- helpers --------------------------------------------------------------------------------------
def _mailto(address: str) -> str:
    """A mailto: URI; characters DMARC and TLS-RPT use as separators (, ! ;) are escaped."""
    local, _, domain = address.rpartition("@")
    return f"mailto:{quote(local, safe='')}@{domain}"


def _within(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


TXT_CHUNK = 255  # bytes per character-string (RFC 1035 §3.3.14)


def txt_strings(text: str) -> str:
    """TXT rdata: quoted character-strings of at most 255 bytes each."""
    raw = text.encode("utf-8")
    chunks = [raw[i : i + TXT_CHUNK] for i in range(0, len(raw), TXT_CHUNK)] or [b""]
    return " ".join(f'"{"".join(_zone_char(b) for b in chunk)}"' for chunk in chunks)


def _zone_char(byte: int) -> str:
    """One byte inside a quoted zone-file string (RFC 1035 §5.1): \\DDD unless printable."""
    if 0x20 <= byte < 0x7F and byte not in b'"\\':
        return chr(byte)
    return f"\\{byte:03d}"
