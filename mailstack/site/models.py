"""The site description as typed, frozen models.

Every YAML key is a field; unknown keys are errors. Rules that involve several fields live
in ``Site.check_rules`` and report each problem with its own field path. The larger
sections have modules of their own: tls, limits, abuse, records (DNS settings).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from mailstack.site.abuse import Abuse
from mailstack.site.backup import Backup
from mailstack.site.base import Model
from mailstack.site.dav_sharing import SharedFolder, dav_sharing_rules
from mailstack.site.encryption import Encryption, Mode, encryption_rules
from mailstack.site.fields import (
    Address,
    Addresses,
    DisplayName,
    Domain,
    HostAddress,
    IPAddress,
    IPAddresses,
    PasswordHash,
    Rate,
    Size,
    parse_network,
)
from mailstack.site.front import FrontSubnet6, default_front_subnet6
from mailstack.site.groupware import Groupware, groupware_rules
from mailstack.site.limits import Limits
from mailstack.site.records import Dmarc, Dns, MtaSts, Spf
from mailstack.site.reports import Reports, report_rules
from mailstack.site.resolver import default_internal_subnet, resolver_address
from mailstack.site.retention import Retention, RetentionOverride
from mailstack.site.sharing import Group, SharedMailbox, sharing_rules
from mailstack.site.tls import ACME_MAX_NAMES, TLS

Loc = tuple[str | int, ...]


Port = Annotated[int, Field(ge=1, le=65535)]

# `mailstack check` keeps a mailbox of its own, <this>@<first domain>, for its round trips.
PROBE_LOCAL_PART = "mailstack-probe"

STANDARD_PORTS: dict[str, int] = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "pop3": 110,
    "pop3s": 995,
    "managesieve": 4190,
    # The web service (nginx): MTA-STS policy, autoconfig, autodiscover, Apple profiles over
    # HTTPS; plain HTTP only redirects (and serves ACME HTTP-01 challenges).
    "http": 80,
    "https": 443,
}


class Ports(Model):
    """Host ports to publish. A protocol left out is not published."""

    smtp: Port | None = None
    submission: Port | None = None
    submissions: Port | None = None
    imap: Port | None = None
    imaps: Port | None = None
    pop3: Port | None = None
    pop3s: Port | None = None
    managesieve: Port | None = None
    http: Port | None = Field(default=None, description="Web service: redirects to HTTPS, ACME challenges.")
    https: Port | None = Field(
        default=None, description="Web service: MTA-STS policy, autoconfig, autodiscover, Apple profiles."
    )

    def published(self) -> dict[str, int]:
        """Protocol → host port, for the protocols that are published, in a fixed order."""
        return {name: port for name in STANDARD_PORTS if (port := getattr(self, name)) is not None}


class Network(Model):
    bind: IPAddresses = Field(
        default=("0.0.0.0", "::"),  # noqa: S104 - a mail server listens on all addresses by default
        min_length=1,
        description=(
            "Host addresses the published ports listen on. Default: every IPv4 and IPv6 address "
            "(0.0.0.0 and ::). With an IPv6 address here, the front network gets an IPv6 subnet "
            "so that daemons see IPv6 clients' own addresses (the engine needs ip6tables); a host "
            "without IPv6 lists 0.0.0.0 alone."
        ),
    )
    ports: Ports = Field(default_factory=lambda: Ports(**STANDARD_PORTS))
    internal_subnet: InternalSubnet | None = Field(
        default=None,
        description=(
            "IPv4 subnet of the stack's internal (back) network, where its resolver has a fixed "
            "address (a /28 or larger). Default: a /27 of 10.251.0.0/16 chosen by the site id; "
            "set it when that meets a network of the host."
        ),
    )
    ipv6_subnet: FrontSubnet6 | None = Field(
        default=None,
        description=(
            "Unique local IPv6 subnet of the front network, used when `bind` has an IPv6 "
            "address. Default: a /64 of fd00::/8 chosen by the site id."
        ),
    )


def _internal_subnet(value: object) -> str:
    network = ipaddress.ip_network(parse_network(value))
    if network.version != 4 or not network.is_private or network.is_loopback:
        raise ValueError(f"{value!r} is not a private IPv4 network (such as 10.251.3.0/27)")
    if network.prefixlen > MAX_INTERNAL_PREFIX:
        raise ValueError(f"{value!r} is too small: the stack needs a /{MAX_INTERNAL_PREFIX} or larger")
    return str(network)


MAX_INTERNAL_PREFIX = 28
InternalSubnet = Annotated[
    str,
    BeforeValidator(_internal_subnet),
    WithJsonSchema({"type": "string", "description": "A private IPv4 network: 10.251.3.0/27."}),
]


class DomainEntry(Model):
    name: Domain
    catch_all: Address | None = Field(
        default=None, description="Mailbox or alias that receives mail for unknown local parts."
    )
    spf: Spf | None = Field(default=None, description="This domain's SPF record [default: dns.spf].")
    dmarc: Dmarc | None = Field(default=None, description="Overrides of dns.dmarc for this domain.")
    retention: RetentionOverride | None = Field(
        default=None, description="Overrides of the site's retention for this domain's mailboxes."
    )


class Mailbox(Model):
    address: Address
    name: DisplayName | None = Field(default=None, description="Display name.")
    password_hash: PasswordHash
    quota: Size | None = Field(default=None, description="Storage quota; none means unlimited.")
    send_as: tuple[Address, ...] = Field(
        default=(), description="Extra From/envelope addresses this mailbox may send as."
    )
    send_rate: Rate | None = Field(
        default=None, description="Outbound limit of this mailbox [default: limits.send_rate]."
    )
    encryption: Mode | None = Field(
        default=None,
        description=(
            "How this mailbox's mail is stored: site, per_user or none [default: "
            "encryption.default]. A per_user mailbox's password is changed with `mailstack "
            "password` (which re-wraps its key), never by editing password_hash."
        ),
    )
    retention: RetentionOverride | None = Field(
        default=None, description="Overrides of its domain's and the site's retention for this mailbox."
    )


class Alias(Model):
    address: Address
    to: Addresses = Field(min_length=1)


class Host(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=63)
    address: HostAddress
    ssh_user: str = Field(default="root", pattern=r"^[a-z_][a-z0-9_-]*\$?$", max_length=32)
    ssh_port: Port = 22
    ssh_key: str | None = Field(default=None, description="Private key file for SSH.")
    public_addresses: tuple[IPAddress, ...] = Field(
        default=(),
        description=(
            "The host's public IPv4 and IPv6 addresses, for the A and AAAA records that "
            "`mailstack dns` prints, when `address` is a name or not the only one (a server "
            "usually has one of each)."
        ),
    )
    packages: Literal["mirror", "cache"] = Field(
        default="mirror",
        description=(
            "Where the host's Debian packages come from: mirror (its configured Debian mirror; "
            "apt's lists are refreshed at most hourly) or cache (the host reaches no mirror: "
            "the packages and their lists must already be in its apt cache)."
        ),
    )

    @property
    def become(self) -> bool:
        """Whether Ansible needs sudo on this host: not when it logs in as root (a minimal
        server has no sudo at all)."""
        return self.ssh_user != "root"

    @property
    def apt_update(self) -> bool:
        return self.packages == "mirror"


class Site(Model):
    """A mail site: its domains, mailboxes, aliases, limits, TLS and hosts."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="mailstack site description",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    site: str = Field(
        pattern=r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$",
        description="Site id: names the compose project, the state directory and the inventory group.",
    )
    hostname: Domain = Field(description="FQDN of the mail server: MX target, HELO, certificate.")
    admin_email: Address = Field(description="Where postmaster, abuse and reports land.")
    offline: bool = Field(
        default=False,
        description=(
            "The site reaches no DNS or web beyond itself (the demo, air-gapped and test sites). "
            "Switches off: the resolver service; Rspamd's SPF, DMARC, RBLs, hfilter, phishing, "
            "URL and ASN lookups, reputation, fuzzy, neural, known senders and rule updates; "
            "postscreen's DNSBLs; DANE and MTA-STS outbound (TLS stays opportunistic). DKIM and "
            "ARC signing, the From rules, rate limits and Bayes stay on."
        ),
    )
    network: Network = Field(default_factory=Network)
    tls: TLS = Field(default_factory=TLS)
    limits: Limits = Field(default_factory=Limits)
    abuse: Abuse = Field(default_factory=Abuse)
    domains: tuple[DomainEntry, ...] = Field(min_length=1)
    mailboxes: tuple[Mailbox, ...] = ()
    aliases: tuple[Alias, ...] = ()
    groups: tuple[Group, ...] = Field(default=(), description="Named sets of mailboxes, for rights.")
    shared_mailboxes: tuple[SharedMailbox, ...] = Field(
        default=(),
        description=(
            "Addresses without a login of their own (office@…): their mail is delivered to them "
            "and read by the mailboxes given rights, over IMAP under shared/<address>/."
        ),
    )
    calendars: tuple[SharedFolder, ...] = Field(
        default=(),
        description=(
            "Calendars (with their tasks) shared with the site's mailboxes: the owner's own, "
            "over CalDAV, ActiveSync and the webmail (groupware)."
        ),
    )
    address_books: tuple[SharedFolder, ...] = Field(
        default=(),
        description="Address books shared with the site's mailboxes: the owner's own (groupware).",
    )
    hosts: tuple[Host, ...] = ()
    dns: Dns = Field(default_factory=Dns)
    mta_sts: MtaSts = Field(default_factory=MtaSts)
    reports: Reports = Field(default_factory=Reports)
    groupware: Groupware = Field(default_factory=Groupware)
    backup: Backup | None = Field(default=None, description="Encrypted backups with restic [default: none].")
    encryption: Encryption = Field(default_factory=Encryption)
    retention: Retention = Field(
        default_factory=Retention,
        description="How long folders keep mail (Trash and Junk 30d by default), and POP3 deletion.",
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Site:
        problems = list(self.check_rules())
        if problems:
            raise PydanticCustomError(
                "site_rules",
                "{summary}",
                {
                    "summary": "; ".join(f"{_dotted(loc)}: {msg}" for loc, msg in problems),
                    "problems": problems,
                },
            )
        return self

    @property
    def domain_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains)

    @property
    def https_published(self) -> bool:
        return self.network.ports.https is not None

    @property
    def internal_subnet(self) -> str:
        """The back network's subnet: network.internal_subnet, or the site id's default."""
        return self.network.internal_subnet or default_internal_subnet(self.site)

    @property
    def front_subnet6(self) -> str | None:
        """The front network's IPv6 subnet when the site listens on IPv6, else None."""
        if not any(ipaddress.ip_address(a).version == 6 for a in self.network.bind):
            return None
        return self.network.ipv6_subnet or default_front_subnet6(self.site)

    @property
    def resolver_address(self) -> str | None:
        """Where the stack's resolver answers on the back network; None offline (no resolver)."""
        return None if self.offline else resolver_address(self.internal_subnet)

    @property
    def probe_address(self) -> str:
        """The mailbox `mailstack check` sends to and reads from; its password is in the state."""
        return f"{PROBE_LOCAL_PART}@{self.domains[0].name}"

    @property
    def delivered_addresses(self) -> list[str]:
        """Every address Dovecot delivers to: the mailboxes, the shared mailboxes, the probe."""
        return (
            [m.address for m in self.mailboxes]
            + [s.address for s in self.shared_mailboxes]
            + [self.probe_address]
        )

    def check_rules(self) -> Iterator[tuple[Loc, str]]:
        """Yield (field path, message) for every cross-field rule the site breaks."""
        duplicates = list(self._duplicates())
        yield from duplicates
        yield from self._unlisted_domains()
        yield from self._dangling_targets()
        if not duplicates:  # with an address defined twice, loops are ill-defined
            yield from self._alias_loops()
        yield from self._port_clashes()
        yield from self._acme_needs_http()
        yield from self._size_against_quota()
        yield from self._exempt_everyone()
        yield from self._probe_address_taken()
        yield from report_rules(self)
        yield from self._dqs_offline()
        yield from sharing_rules(self)
        yield from dav_sharing_rules(self)
        yield from groupware_rules(self)
        yield from encryption_rules(self)

    def _dqs_offline(self) -> Iterator[tuple[Loc, str]]:
        if self.offline and self.abuse.spamhaus_dqs:
            yield (
                ("abuse", "spamhaus_dqs"),
                "Spamhaus DQS is asked over DNS, which an offline site has not; remove offline: "
                "true or spamhaus_dqs",
            )

    def _probe_address_taken(self) -> Iterator[tuple[Loc, str]]:
        taken = [("mailboxes", i, m.address) for i, m in enumerate(self.mailboxes)]
        taken += [("aliases", i, a.address) for i, a in enumerate(self.aliases)]
        for section, i, address in taken:
            if address == self.probe_address:
                yield (
                    (section, i, "address"),
                    f"{address} is reserved for the probe mailbox of `mailstack check`",
                )

    def _duplicates(self) -> Iterator[tuple[Loc, str]]:
        domains = [("domains", i, "name", d.name) for i, d in enumerate(self.domains)]
        yield from _repeated("domain", domains)
        addresses = [("mailboxes", i, "address", m.address) for i, m in enumerate(self.mailboxes)]
        addresses += [("aliases", i, "address", a.address) for i, a in enumerate(self.aliases)]
        yield from _repeated("address", addresses)
        yield from _repeated("host name", [("hosts", i, "name", h.name) for i, h in enumerate(self.hosts)])

    def _unlisted_domains(self) -> Iterator[tuple[Loc, str]]:
        listed = set(self.domain_names)

        def check(loc: Loc, address: str) -> Iterator[tuple[Loc, str]]:
            domain = address.rpartition("@")[2]
            if domain not in listed:
                yield loc, f"{address} is in domain {domain}, which is not listed under domains"

        for i, m in enumerate(self.mailboxes):
            yield from check(("mailboxes", i, "address"), m.address)
            for j, extra in enumerate(m.send_as):
                yield from check(("mailboxes", i, "send_as", j), extra)
        for i, a in enumerate(self.aliases):
            yield from check(("aliases", i, "address"), a.address)
        for i, d in enumerate(self.domains):
            if d.catch_all is not None:
                yield from check(("domains", i, "catch_all"), d.catch_all)

    def _dangling_targets(self) -> Iterator[tuple[Loc, str]]:
        """Targets in the site's own domains must exist, or mail to them is lost."""
        listed = set(self.domain_names)
        known = {m.address for m in self.mailboxes} | {a.address for a in self.aliases}
        known |= {s.address for s in self.shared_mailboxes}

        def check(loc: Loc, address: str, role: str) -> Iterator[tuple[Loc, str]]:
            if address.rpartition("@")[2] in listed and address not in known:
                yield loc, f"{role} {address} is not a mailbox or alias of this site"

        for i, a in enumerate(self.aliases):
            for j, target in enumerate(a.to):
                yield from check(("aliases", i, "to", j), target, "alias target")
        for i, d in enumerate(self.domains):
            if d.catch_all is not None and d.catch_all.rpartition("@")[2] in listed:
                yield from check(("domains", i, "catch_all"), d.catch_all, "catch-all target")

    def _alias_loops(self) -> Iterator[tuple[Loc, str]]:
        graph = {a.address: list(a.to) for a in self.aliases}
        index = {a.address: i for i, a in enumerate(self.aliases)}
        reported: set[frozenset[str]] = set()
        for start in graph:
            path = _find_cycle(start, graph)
            if path and frozenset(path) not in reported:
                reported.add(frozenset(path))
                chain = " → ".join([*path, path[0]])
                yield ("aliases", index[path[0]], "to"), f"alias loop: {chain}"

    def _port_clashes(self) -> Iterator[tuple[Loc, str]]:
        owner: dict[int, str] = {}
        for name, port in self.network.ports.published().items():
            if port in owner:
                yield (
                    ("network", "ports", name),
                    f"port {port} is already published for {owner[port]}",
                )
            owner.setdefault(port, name)

    def _acme_needs_http(self) -> Iterator[tuple[Loc, str]]:
        if self.tls.mode != "acme":
            return
        if self.network.ports.http is None:
            yield (
                ("network", "ports", "http"),
                "tls.mode acme answers the CA's http-01 challenges on the http port; publish it",
            )
        if len(self.hosts) > 1:
            yield (
                ("hosts", 1),
                "tls.mode acme orders certificates on the host itself; with several hosts each "
                "would hold other keys than DNS pins (TLSA): one host per site, or tls.mode files",
            )
        names = 1 + 3 * len(self.domains)
        if names > ACME_MAX_NAMES:
            yield (
                ("domains",),
                f"tls.mode acme puts {names} names in one certificate (hostname, and mta-sts, "
                f"autoconfig and autodiscover per domain); CAs allow {ACME_MAX_NAMES} at most",
            )

    def _size_against_quota(self) -> Iterator[tuple[Loc, str]]:
        boxes: list[Mailbox | SharedMailbox] = [*self.mailboxes, *self.shared_mailboxes]
        quotas = [(m.quota, m.address) for m in boxes if m.quota is not None]
        if not quotas:
            return
        smallest, address = min(quotas)
        if self.limits.message_size > smallest:
            yield (
                ("limits", "message_size"),
                (
                    f"message_size ({self.limits.message_size} bytes) is larger than the smallest "
                    f"quota ({smallest} bytes, {address}); such a message could never be delivered"
                ),
            )

    def _exempt_everyone(self) -> Iterator[tuple[Loc, str]]:
        for i, network in enumerate(self.abuse.auth_ban.exempt):
            if network.endswith("/0"):
                yield (
                    ("abuse", "auth_ban", "exempt", i),
                    f"{network} covers every address, so nobody would ever be banned; "
                    "set abuse.auth_ban.enabled: false instead",
                )


def _find_cycle(start: str, graph: dict[str, list[str]]) -> list[str] | None:
    """Return the alias cycle reachable from ``start`` that passes through it, if any."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    visited: set[str] = set()
    while stack:
        node, path = stack.pop()
        for target in graph.get(node, []):
            if target == start:
                return path
            if target in graph and target not in visited:
                visited.add(target)
                stack.append((target, [*path, target]))
    return None


def _dotted(loc: Loc) -> str:
    """``mailboxes[0].address``. A key that is empty, has blanks at its ends or unprintable
    characters (a newline, a zero-width space, a lone surrogate) is quoted, ``['a\\nb']``:
    each problem stays on its one line and can be printed whatever the key holds."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.isprintable() or part != part.strip() or not part:
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


def _repeated(what: str, entries: list[tuple[str, int, str, str]]) -> Iterator[tuple[Loc, str]]:
    """Each entry (section, index, field, value) whose value an earlier entry has, naming that one."""
    first: dict[str, str] = {}
    for section, i, field, value in entries:
        if value in first:
            yield (section, i, field), f"duplicate {what} {value} (also {first[value]})"
        first.setdefault(value, f"{section}[{i}]")
