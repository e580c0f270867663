"""The test world: an authoritative DNS with the signed zone ``test.`` (and two under public
suffixes, see tests/world/knot.py), a network on which mailstack sites reach each other at the
addresses their records name, and a forger.

    world = World.start()
    address = world.address_for("mail.a.test")       # publish the site's ports there
    world.add_site_records(zone_text)                # `mailstack dns SITE --format zone`
    world.attach_site("mail.a.test", project_name)   # after its compose project is up
    world.dns.replace("_25._tcp.mail.b.test.", "TLSA", ["3 1 1 00…"])
    world.resolver()                                 # what a site's resolver forwards to
    world.stop()

How each party appears to a site is described in tests/world/net.py.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.reversename
import docker
from docker.models.containers import Container

from tests.world import knot
from tests.world.images import IMAGES, ensure_images
from tests.world.net import DNS, FORGER, LABEL, POOL, PREFIX, NatGlue, WorldNet, remove_glue, tagged_worlds

FORGER_DOMAIN = "forger.test"
FORGER_HOST = "mail.forger.test"
DNSBL_ZONE = "dnsbl.test"
LISTED = "127.0.0.2"  # a DNSBL's usual "listed" answer (RFC 5782 §2.1)


@dataclass
class Forger:
    """A third party on the world network with a domain of its own (forger.test) and SPF
    that names only its addresses; it sends with Python's smtplib from its container."""

    container: Container
    address: ipaddress.IPv4Address
    address6: ipaddress.IPv6Address
    domain: str = FORGER_DOMAIN
    hostname: str = FORGER_HOST

    def python(self, code: str, *args: str, timeout: int = 60) -> str:
        """Run ``python3 -c code args…`` in the forger; its standard output."""
        command = ["timeout", str(timeout), "python3", "-c", code, *args]
        result = self.container.exec_run(command, demux=True)
        out, err = (part.decode(errors="replace") if part else "" for part in result.output)
        if result.exit_code != 0:
            raise AssertionError(f"the forger's python3 failed ({result.exit_code}):\n{err or out}")
        return out

    def connect(self, host: str, port: int, *, timeout: int = 10) -> str:
        """Open TCP to host:port and return the first line the peer sends."""
        code = (
            "import socket, sys\n"
            "host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
            "with socket.create_connection((host, port), timeout=timeout) as s:\n"
            "    print(s.makefile('rb').readline().decode().rstrip())\n"
        )
        return self.python(code, host, str(port), str(timeout), timeout=timeout + 5).strip()

    def send_mail(
        self, host: str, port: int, mail_from: str, rcpt_to: list[str], message: bytes, *, timeout: int = 30
    ) -> str:
        """One SMTP transaction from the forger, HELO its own host name; the server's reply to
        a NOOP after the message was accepted (smtplib raises on a refusal)."""
        code = (
            "import base64, smtplib, sys\n"
            "host, port, timeout, helo, sender, message, *rcpts = sys.argv[1:]\n"
            "with smtplib.SMTP(host, int(port), local_hostname=helo, timeout=float(timeout)) as smtp:\n"
            "    smtp.sendmail(sender, rcpts, base64.b64decode(message))\n"
            "    print(smtp.noop())\n"
        )
        encoded = base64.b64encode(message).decode()
        return self.python(
            code,
            host,
            str(port),
            str(timeout),
            self.hostname,
            mail_from,
            encoded,
            *rcpt_to,
            timeout=timeout + 30,
        )


@dataclass
class World:
    id: str
    client: docker.DockerClient
    net: WorldNet
    glue: NatGlue
    dns: knot.DnsServer
    forger: Forger
    labels: dict[str, str] = field(default_factory=dict)  # on everything the world makes
    started_in: float = 0.0
    sites: dict[str, str] = field(default_factory=dict)  # host name → compose project

    @property
    def name(self) -> str:
        return self.net.name

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.net.subnet

    @property
    def subnet6(self) -> ipaddress.IPv6Network:
        return self.net.subnet6

    @property
    def client_address(self) -> str:
        """The host's own address on the world (the gateway): bind a test client to it to
        reach a site from the world rather than from 127.0.0.1."""
        return str(self.net.v4(1))

    def gateways(self) -> list[str]:
        """The host's own addresses on the world (IPv4 and IPv6), as networks."""
        return [f"{self.net.v4(1)}/32", f"{self.net.v6(1)}/128"]

    # -- starting and stopping -------------------------------------------------------------
    @classmethod
    def start(cls, client: docker.DockerClient | None = None) -> World:
        started = time.monotonic()
        client = client or docker.from_env()
        sweep(client)
        ensure_images(client)
        world_id = secrets.token_hex(3)
        labels = {LABEL: "1", f"{LABEL}.pid": str(os.getpid()), f"{LABEL}.host": socket.gethostname()}
        net = WorldNet.create(client, world_id, labels)
        glue = NatGlue(net.name, net.subnet, net.subnet6)
        try:
            glue.install()
            secret = knot.DnsServer.new_secret()
            forger4, forger6 = net.v4(FORGER), net.v6(FORGER)
            zones = {
                knot.zone_file(zone): knot.zone_text(
                    net.v4(DNS),
                    net.v6(DNS),
                    world_records(forger4, forger6) if zone == knot.ZONE else [],
                    zone,
                )
                for zone in knot.ZONES
            }
            dns_container = _container(
                client,
                net,
                "dns",
                DNS,
                labels,
                files={"/etc/knot/knot.conf": knot.DnsServer.config(secret), **zones},
            )
            server = knot.DnsServer(dns_container, net.v4(DNS), net.v6(DNS), secret)
            forger = Forger(
                _container(client, net, "forger", FORGER, labels, dns=[str(net.v4(DNS))]), forger4, forger6
            )
            server.wait_ready()
        except BaseException:
            glue.remove()
            net.remove()
            raise
        return cls(world_id, client, net, glue, server, forger, labels, time.monotonic() - started)

    def stop(self) -> None:
        """Rules first (a sweep takes rules without a network for leftovers), then the
        containers and the network with the host's addresses on its bridge."""
        self.glue.remove()
        self.net.remove()

    # -- sites -----------------------------------------------------------------------------
    def address_for(self, hostname: str) -> str:
        """The world address of a site's host name (the same one when asked again), published
        as its A record; the site binds its ports there (network.bind)."""
        name = hostname.rstrip(".")
        fresh = name not in self.net.host_addresses
        address = self.net.add_host_address(name)
        self.glue.sources[name] = address
        if fresh:
            self.dns.replace(f"{name}.", "A", [str(address)])
        return str(address)

    def address6_for(self, hostname: str) -> str:
        """The world IPv6 address of a site's host name, for network.bind. Not published as
        AAAA: sites reach each other over IPv4 only (net.py); tests dial it directly."""
        self.address_for(hostname)  # its IPv4 address (and A record) first: the same offset
        return str(self.net.add_host_address6(hostname.rstrip(".")))

    def add_site_records(self, zone_text: str) -> int:
        """Publish a site's records (``mailstack dns SITE --format zone``); each name and type
        given replaces what the zone had. Returns the zone's new serial."""
        return self.dns.add_rrsets(knot.parse_records(zone_text))

    def attach_site(self, hostname: str, project: str) -> None:
        """After the site's compose project is up (and again after an up that recreated its
        containers): connections from its networks to the world leave from its address, and
        connections from other sites to its ports reach it by DNAT, not docker-proxy."""
        name = hostname.rstrip(".")
        if name not in self.net.host_addresses:
            raise ValueError(f"{name} has no world address: call address_for({name!r}) first")
        self.sites[name] = project
        self.sync()

    def detach_site(self, hostname: str) -> None:
        """Before the site's compose project goes away: its glue goes with it."""
        if self.sites.pop(hostname.rstrip("."), None) is not None:
            self.sync()

    def sync(self) -> None:
        self.glue.sync({host: project_subnets(self.client, project) for host, project in self.sites.items()})

    def resolver(self) -> dict[str, object]:
        """What a site's resolver needs: where to forward, and the anchor to validate with."""
        return {
            "mode": "forward",
            "forward": [str(self.dns.address)],
            "trust_anchors": self.dns.trust_anchors(),
        }

    def logs(self, lines: int = 40) -> str:
        parts = []
        for role, container in (("dns", self.dns.container), ("forger", self.forger.container)):
            text = container.logs(tail=lines).decode(errors="replace")
            parts.append(f"===== world {role} (last {lines} lines) =====\n{text}")
        return "\n".join(parts)


def world_records(forger4: ipaddress.IPv4Address, forger6: ipaddress.IPv6Address) -> list[str]:
    """The forger's domain, and a DNSBL that lists the forger (and its RFC 5782 test entry)."""

    def listed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        reverse = dns.reversename.from_address(str(address))
        suffix = (
            dns.reversename.ipv4_reverse_domain
            if address.version == 4
            else dns.reversename.ipv6_reverse_domain
        )
        return reverse.relativize(suffix).to_text() + f".{DNSBL_ZONE}."

    spf = f'"v=spf1 ip4:{forger4} ip6:{forger6} -all"'
    return [
        f"{FORGER_DOMAIN}. MX 10 {FORGER_HOST}.",
        f"{FORGER_DOMAIN}. TXT {spf}",
        f'_dmarc.{FORGER_DOMAIN}. TXT "v=DMARC1; p=reject"',
        f"{FORGER_HOST}. A {forger4}",
        f"{FORGER_HOST}. AAAA {forger6}",
        f"{FORGER_HOST}. TXT {spf}",
        *(f"{listed(a)} A {LISTED}" for a in (forger4, forger6, ipaddress.ip_address(LISTED))),
        *(f'{listed(a)} TXT "listed by the mailstack test world"' for a in (forger4, forger6)),
    ]


def project_subnets(client: docker.DockerClient, project: str) -> list[str]:
    """IPv4 subnets of a compose project's networks."""
    networks = client.networks.list(filters={"label": f"com.docker.compose.project={project}"})
    subnets = [
        pool["Subnet"]
        for net in networks
        for pool in (net.attrs.get("IPAM") or {}).get("Config") or []
        if ipaddress.ip_network(pool["Subnet"], strict=False).version == 4
    ]
    if not subnets:
        raise AssertionError(f"compose project {project} has no networks (is it up?)")
    return subnets


def _container(
    client: docker.DockerClient,
    net: WorldNet,
    role: str,
    offset: int,
    labels: dict[str, str],
    *,
    files: dict[str, str] | None = None,
    dns: Iterable[str] = (),
) -> Container:
    """A container of the world at its fixed offset in the subnets, its files copied in before it starts."""
    endpoint = client.api.create_endpoint_config(
        ipv4_address=str(net.v4(offset)), ipv6_address=str(net.v6(offset))
    )
    container = client.containers.create(
        IMAGES[role],
        name=f"{net.name}-{role}",
        hostname=role,
        labels=labels,
        network=net.name,
        networking_config={net.name: endpoint},
        dns=list(dns) or None,
        detach=True,
    )
    if files:
        container.put_archive("/", knot.files_tar(files))
    container.start()
    return container


def sweep(client: docker.DockerClient) -> None:
    """Remove the worlds that runs on this machine left behind (their pytest is gone), and
    rules of worlds whose network no longer exists; never a living run's world."""
    host = socket.gethostname()
    for net in client.networks.list(filters={"label": LABEL}):
        labels = net.attrs.get("Labels") or {}
        if labels.get(f"{LABEL}.host") != host or _alive(int(labels.get(f"{LABEL}.pid", "0"))):
            continue
        remove_glue(net.name)
        for container in client.containers.list(all=True, filters={"network": net.id}):
            container.remove(force=True)
        net.remove()
    existing = {n.name for n in client.networks.list(names=[PREFIX])}
    for name in tagged_worlds() - existing:
        remove_glue(name)
    sweep_orphan_sites(client)


SITE_PROJECT = "com.docker.compose.project"


def sweep_orphan_sites(client: docker.DockerClient) -> None:
    """Remove world sites (compose projects `mailstack-world-*`, made by `mailstack up`, so
    without the world's label) whose ports are published on world addresses of no existing
    world: a run killed before its teardown left them, and their docker-proxy would hold the
    addresses of the next world that draws the same /24."""
    live = [
        ipaddress.ip_network(pool["Subnet"], strict=False)
        for net in client.networks.list(filters={"label": LABEL})
        for pool in (net.attrs.get("IPAM") or {}).get("Config") or []
    ]
    orphans: set[str] = set()
    for container in client.containers.list(all=True, filters={"label": SITE_PROJECT}):
        project = container.labels.get(SITE_PROJECT, "")
        if not project.startswith(PREFIX):
            continue
        bindings = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
        hosts = {
            ipaddress.ip_address(b["HostIp"]) for bs in bindings.values() for b in bs or [] if b.get("HostIp")
        }
        if any(h in POOL for h in hosts) and not any(h in net for h in hosts for net in live):
            orphans.add(project)
    for project in sorted(orphans):
        label = {"label": f"{SITE_PROJECT}={project}"}
        for container in client.containers.list(all=True, filters=label):
            container.remove(force=True, v=True)
        for net in client.networks.list(filters=label):
            net.remove()
        for volume in client.volumes.list(filters=label):
            volume.remove(force=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0
