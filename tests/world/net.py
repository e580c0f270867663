"""The world's network: one Docker bridge, addresses of the host on it, and the NAT glue that
makes every party appear to the others under its own address.

Measured on Docker 20.10 (userland proxy on, no ip6tables), for a site whose ports are
published on an address of the host on the world bridge:

- from a container of the world network (the forger): Docker DNATs the connection, then its
  isolation rules drop it between two bridges. With the world's FORWARD rule below it
  arrives, and the site sees the forger's own address (the world network does no masquerading).
- from another site's container: Docker never DNATs traffic that comes from a bridge it
  masquerades; docker-proxy takes it and the site sees *its own* gateway (172.x.0.1), the
  same for every peer. The world's copy of Docker's DNAT rules is consulted first, and an
  SNAT rule makes the peer's connections leave from the peer's own world address.
- from the host: DNAT; the site sees the address the client binds to (the world's gateway
  by default, so bind a source address to be a distinct party).
- over IPv6 (the engine runs with ip6tables, as `make install` starts it): a site that binds
  an IPv6 address of the host on the bridge (add_host_address6) is DNATed like over IPv4, and
  the world's ip6tables FORWARD rule lets the forger's connections through. Sites reach each
  other over IPv4 only (no IPv6 SNAT/DNAT glue between sites): the world publishes no AAAA
  for them, and tests dial the IPv6 addresses directly.

The network is `internal`: its containers have no route off this machine.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

import docker
from docker.models.networks import Network
from docker.types import IPAMConfig, IPAMPool

PREFIX = "mailstack-world-"
LABEL = "mailstack-world"
# Private /24s for worlds; 10.251/16 holds the sites' internal networks, 10.252/16 the
# integration tests' namespaces (tests/integration/netns.py).
POOL = ipaddress.IPv4Network("10.253.0.0/16")
# Fixed offsets in a world's /24 (and its /64): the host is the gateway.
GATEWAY, DNS, FORGER = 1, 53, 66
SITE_HOSTS = range(101, 200)


def run(*command: str) -> str:
    done = subprocess.run(list(command), capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def taken_networks(client: docker.DockerClient) -> list[ipaddress.IPv4Network]:
    """IPv4 subnets that Docker's networks and this host's routes already use."""
    found: list[ipaddress.IPv4Network] = []
    for net in client.networks.list():
        for pool in (net.attrs.get("IPAM") or {}).get("Config") or []:
            subnet = ipaddress.ip_network(pool.get("Subnet", "::/128"), strict=False)
            if isinstance(subnet, ipaddress.IPv4Network):
                found.append(subnet)
    for line in run("ip", "-4", "route", "show", "table", "all").splitlines():
        word = line.split()[0] if line.split() else ""
        if word[:1].isdigit():
            found.append(ipaddress.IPv4Network(word, strict=False))
    return found


@dataclass
class WorldNet:
    """The Docker network `mailstack-world-<id>` (bridge `msw-<id>`) and its addresses."""

    id: str
    network: Network
    subnet: ipaddress.IPv4Network
    subnet6: ipaddress.IPv6Network
    host_addresses: dict[str, ipaddress.IPv4Address] = field(default_factory=dict)
    host_addresses6: dict[str, ipaddress.IPv6Address] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return PREFIX + self.id

    @property
    def bridge(self) -> str:
        return f"msw-{self.id}"

    def v4(self, offset: int) -> ipaddress.IPv4Address:
        return self.subnet[offset]

    def v6(self, offset: int) -> ipaddress.IPv6Address:
        return self.subnet6[offset]

    @classmethod
    def create(cls, client: docker.DockerClient, world_id: str, labels: dict[str, str]) -> WorldNet:
        """A free /24 of POOL and a random ULA /64; a racing creator makes Docker refuse the
        overlap, and the next free /24 is tried."""
        errors: list[str] = []
        for _ in range(5):
            taken = taken_networks(client)
            free = [s for s in POOL.subnets(new_prefix=24) if not any(s.overlaps(t) for t in taken)]
            if not free:
                break
            subnet = secrets.choice(free)
            subnet6 = ipaddress.IPv6Network(
                (int(ipaddress.IPv6Address("fd00::")) | secrets.randbits(56) << 64, 64)
            )
            ipam = IPAMConfig(
                pool_configs=[
                    IPAMPool(subnet=str(subnet), gateway=str(subnet[GATEWAY])),
                    IPAMPool(subnet=str(subnet6), gateway=str(subnet6[GATEWAY])),
                ]
            )
            try:
                network = client.networks.create(
                    PREFIX + world_id,
                    driver="bridge",
                    internal=True,
                    enable_ipv6=True,
                    ipam=ipam,
                    options={"com.docker.network.bridge.name": f"msw-{world_id}"},
                    labels=labels,
                )
            except docker.errors.APIError as exc:
                errors.append(str(exc))
                continue
            return cls(world_id, network, subnet, subnet6)
        raise RuntimeError(f"no free /24 for the world in {POOL}: {errors or 'all taken'}")

    def add_host_address(self, name: str) -> ipaddress.IPv4Address:
        """An address of the host on the bridge for ``name`` (the same one when asked again):
        a site publishes its ports there, and its connections to the world leave from it."""
        if name in self.host_addresses:
            return self.host_addresses[name]
        used = set(self.host_addresses.values())
        address = next(self.v4(i) for i in SITE_HOSTS if self.v4(i) not in used)
        # /32: the bridge's own /24 route stays the only one.
        run("ip", "addr", "add", f"{address}/32", "dev", self.bridge)
        self.host_addresses[name] = address
        return address

    def add_host_address6(self, name: str) -> ipaddress.IPv6Address:
        """An IPv6 address of the host on the bridge for ``name``, at the same offset in the /64
        as its IPv4 address in the /24 (the same one when asked again)."""
        if name in self.host_addresses6:
            return self.host_addresses6[name]
        offset = int(self.add_host_address(name)) - int(self.subnet.network_address)
        address = self.v6(offset)
        # nodad: usable at once, without duplicate address detection's second or so.
        run("ip", "-6", "addr", "add", f"{address}/128", "dev", self.bridge, "nodad")
        self.host_addresses6[name] = address
        return address

    def remove(self) -> None:
        """The network, and with its bridge the host's addresses on it."""
        self.network.reload()
        for container in self.network.containers:
            container.remove(force=True)
        self.network.remove()


@dataclass
class NatGlue:
    """iptables rules in chains of the world's own, jumped to from Docker's hooks, every
    jump tagged with the world's name so that a sweep finds what an aborted run left."""

    world: str
    subnet: ipaddress.IPv4Network
    subnet6: ipaddress.IPv6Network | None = None
    sources: dict[str, ipaddress.IPv4Address] = field(default_factory=dict)

    @property
    def dnat_chain(self) -> str:
        return f"MSW-{self.world.removeprefix(PREFIX)}-IN"

    @property
    def snat_chain(self) -> str:
        return f"MSW-{self.world.removeprefix(PREFIX)}-OUT"

    def jumps(self) -> list[tuple[str, str, str, list[str]]]:
        """(command, table, hook, rule) for each jump into the world's rules."""
        tag = ["-m", "comment", "--comment", self.world]
        to_world = ["-m", "conntrack", "--ctorigdst", str(self.subnet)]
        to_world6 = ["-m", "conntrack", "--ctorigdst", str(self.subnet6)] if self.subnet6 else []
        return [
            # Docker's isolation would drop connections to the world between two bridges.
            ("iptables", "filter", "DOCKER-USER", [*to_world, *tag, "-j", "ACCEPT"]),
            # Docker 20.10's ip6tables has no DOCKER-USER chain: the top of FORWARD, then.
            *([("ip6tables", "filter", "FORWARD", [*to_world6, *tag, "-j", "ACCEPT"])] if to_world6 else []),
            (
                "iptables",
                "nat",
                "PREROUTING",
                [
                    "-d",
                    str(self.subnet),
                    "-m",
                    "addrtype",
                    "--dst-type",
                    "LOCAL",
                    *tag,
                    "-j",
                    self.dnat_chain,
                ],
            ),
            ("iptables", "nat", "POSTROUTING", [*to_world, *tag, "-j", self.snat_chain]),
        ]

    def install(self) -> None:
        for chain in (self.dnat_chain, self.snat_chain):
            run("iptables", "-t", "nat", "-N", chain)
        self.jump_first()

    def jump_first(self) -> None:
        """Docker inserts each new network's MASQUERADE rule at the top of POSTROUTING; the
        world's jumps must come before those of sites created after it."""
        for command, table, hook, rule in self.jumps():
            subprocess.run(
                [command, "-t", table, "-D", hook, *rule], capture_output=True, check=False, timeout=30
            )
            run(command, "-t", table, "-I", hook, "1", *rule)

    def sync(self, site_subnets: dict[str, Iterable[str]]) -> None:
        """Copy Docker's DNAT rules for world addresses (they skip traffic from bridges) and
        let each site's networks (by host-address name) leave from that site's address."""
        self.jump_first()
        dnat = [
            line.split()[2:]
            for line in run("iptables", "-t", "nat", "-S", "DOCKER").splitlines()
            if "-j DNAT" in line and self._to_world(line)
        ]
        run("iptables", "-t", "nat", "-F", self.dnat_chain)
        for rule in dnat:
            run("iptables", "-t", "nat", "-A", self.dnat_chain, *rule)
        run("iptables", "-t", "nat", "-F", self.snat_chain)
        for name, subnets in site_subnets.items():
            for subnet in subnets:
                run(
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    self.snat_chain,
                    "-s",
                    subnet,
                    "-j",
                    "SNAT",
                    "--to-source",
                    str(self.sources[name]),
                )

    def _to_world(self, rule: str) -> bool:
        words = rule.split()
        if "-d" not in words:
            return False
        destination = ipaddress.ip_network(words[words.index("-d") + 1], strict=False)
        return isinstance(destination, ipaddress.IPv4Network) and destination.subnet_of(self.subnet)

    def remove(self) -> None:
        remove_glue(self.world)


# Where the world's rules live: its IPv6 rule is in ip6tables' filter table.
TABLES = (("iptables", "filter"), ("iptables", "nat"), ("ip6tables", "filter"))


def remove_glue(world: str) -> None:
    """Every jump tagged ``world``, then the world's chains; what is already gone is skipped."""
    chains = {f"MSW-{world.removeprefix(PREFIX)}-{suffix}" for suffix in ("IN", "OUT")}
    for command, table in TABLES:
        for line in run(command, "-t", table, "-S").splitlines():
            if f"--comment {world}" in line and line.startswith("-A "):
                subprocess.run(
                    [command, "-t", table, "-D", *line.split()[1:]],
                    capture_output=True,
                    check=False,
                    timeout=30,
                )
    for chain in chains:
        subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True, check=False, timeout=30)
        subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True, check=False, timeout=30)


def tagged_worlds() -> set[str]:
    """Names of worlds that have iptables rules on this host."""
    names: set[str] = set()
    for command, table in TABLES:
        for line in run(command, "-t", table, "-S").splitlines():
            words = line.split()
            if "--comment" in words and words[words.index("--comment") + 1].startswith(PREFIX):
                names.add(words[words.index("--comment") + 1].strip('"'))
    return names
