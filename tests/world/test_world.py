"""The test world itself: its zone is signed and validates against the anchor it exposes,
records change on demand, and every party reaches a site under its own address."""

from __future__ import annotations

import ipaddress
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.name
import dns.rrset
import docker
import pytest
from docker.models.containers import Container

from mailstack.dns import site_records
from mailstack.site.loader import load_site
from mailstack.zonefile import format_zone
from tests.world import knot
from tests.world.images import IMAGES
from tests.world.world import LISTED, World

pytestmark = pytest.mark.world

SITE_A = Path(__file__).resolve().parents[1] / "fixtures" / "world" / "site-fixture.yaml"
PORT = 2525
# A stand-in for a site's Postfix: it greets every client with the address it sees.
GREETER = (
    "import socket\n"
    "server = socket.create_server(('0.0.0.0', 2525))\n"
    "while True:\n"
    "    conn, peer = server.accept()\n"
    "    conn.sendall(f'{peer[0]}\\n'.encode())\n"
    "    conn.close()\n"
)
CONNECT = (
    "import socket, sys\n"
    "with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:\n"
    "    print(s.makefile('rb').readline().decode().rstrip())\n"
)


def validated(world: World, name: str, rtype: str) -> dns.rrset.RRset:
    """The RRset, after its RRSIG was checked with the zone key that the trust anchor names."""
    keys, key_sigs = world.dns.rrset("test.", "DNSKEY")
    assert keys is not None, "test. has no DNSKEY"
    assert key_sigs is not None, "test. DNSKEY is not signed"
    anchor = world.dns.trust_anchor_rrset()[0]
    anchored = [k for k in keys if dns.dnssec.make_ds(knot.ZONE, k, anchor.digest_type) == anchor]
    assert anchored, f"no DNSKEY of test. matches the trust anchor {anchor}"
    trusted = dns.rrset.from_rdata_list(knot.ZONE, keys.ttl, anchored)
    dns.dnssec.validate(keys, key_sigs, {knot.ZONE: trusted})
    found, sigs = world.dns.rrset(name, rtype)
    assert found is not None, f"{name} {rtype} is not served"
    assert sigs is not None, f"{name} {rtype} is not signed"
    dns.dnssec.validate(found, sigs, {knot.ZONE: keys})
    return found


def test_the_zone_validates_against_the_exposed_trust_anchor(world: World) -> None:
    assert world.dns.trust_anchor().startswith("test. DS ")
    spf = validated(world, "forger.test.", "TXT")
    assert [b"".join(r.strings).decode() for r in spf] == [
        f"v=spf1 ip4:{world.forger.address} ip6:{world.forger.address6} -all"
    ]
    reverse = ".".join(reversed(str(world.forger.address).split(".")))
    assert [r.to_text() for r in validated(world, f"{reverse}.dnsbl.test.", "A")] == [LISTED]
    assert [r.to_text() for r in validated(world, "2.0.0.127.dnsbl.test.", "A")] == [LISTED]
    # A record that the signer did not sign fails, so the checks above are not vacuous.
    keys, _ = world.dns.rrset("test.", "DNSKEY")
    found, sigs = world.dns.rrset("mail.forger.test.", "A")
    assert keys is not None
    assert found is not None
    assert sigs is not None
    forged = dns.rrset.from_text("mail.forger.test.", found.ttl, "IN", "A", "192.0.2.66")
    with pytest.raises(dns.exception.ValidationFailure):
        dns.dnssec.validate(forged, sigs, {knot.ZONE: keys})


def test_a_site_s_records_are_published_and_can_be_broken_and_repaired(world: World) -> None:
    site = load_site(SITE_A)
    address = world.address_for(site.hostname)
    assert [r.to_text() for r in validated(world, "mail.fixture.test.", "A")] == [address]
    with tempfile.TemporaryDirectory() as state:
        records = site_records(site, Path(state))
    serial = world.add_site_records(format_zone(site, records.records, records.notes))
    assert [r.to_text() for r in validated(world, "fixture.test.", "MX")] == ["10 mail.fixture.test."]
    tlsa_name = f"_25._tcp.{site.hostname}."
    published = sorted(r.value for r in records.records if r.type == "TLSA")
    assert sorted(r.to_text() for r in validated(world, tlsa_name, "TLSA")) == published

    wrong = "3 1 1 " + "00" * 32
    broken = world.dns.replace(tlsa_name, "TLSA", [wrong])
    assert [r.to_text() for r in validated(world, tlsa_name, "TLSA")] == [wrong]
    repaired = world.dns.replace(tlsa_name, "TLSA", published)
    assert sorted(r.to_text() for r in validated(world, tlsa_name, "TLSA")) == published
    assert serial < broken < repaired


@dataclass
class FakeSite:
    """A compose-project-like network with a greeter published on a world address."""

    project: str
    address: str
    greeter: Container | None

    def connect_from_inside(self, client: docker.DockerClient, host: str) -> str:
        """The greeting seen by a client container on this site's own network."""
        output = client.containers.run(
            IMAGES["forger"], ["python3", "-c", CONNECT, host, str(PORT)], network=self.project, remove=True
        )
        return bytes(output).decode().strip()


@contextmanager
def fake_site(world: World, label: str, hostname: str, *, greet: bool) -> Iterator[FakeSite]:
    project = f"{world.name}-{label}"
    address = world.address_for(hostname)
    labels = {**world.labels, "com.docker.compose.project": project}
    network = world.client.networks.create(project, driver="bridge", labels=labels)
    greeter = None
    try:
        if greet:
            greeter = world.client.containers.run(
                IMAGES["forger"],
                ["python3", "-c", GREETER],
                name=f"{project}-greeter",
                network=project,
                ports={f"{PORT}/tcp": (address, PORT)},
                labels=labels,
                detach=True,
            )
        world.attach_site(hostname, project)
        yield FakeSite(project, address, greeter)
    finally:
        world.detach_site(hostname)
        if greeter is not None:
            greeter.remove(force=True)
        network.remove()


def test_every_party_reaches_a_site_under_its_own_address(world: World) -> None:
    with (
        fake_site(world, "site-b", "mail.fake-b.test", greet=True) as b,
        fake_site(world, "site-a", "mail.fake-a.test", greet=False) as a,
    ):
        assert ipaddress.ip_address(b.address) in world.subnet
        resolved = world.forger.python("import socket; print(socket.gethostbyname('mail.fake-b.test'))")
        assert resolved.strip() == b.address, "the forger resolves world names through the world's DNS"
        assert eventually(lambda: world.forger.connect(b.address, PORT)) == str(world.forger.address)
        assert a.connect_from_inside(world.client, b.address) == a.address, "site A leaves from its address"
        greeting = eventually(lambda: host_connect(b.address, world.client_address))
        assert greeting == world.client_address


def host_connect(host: str, source: str) -> str:

    with socket.create_connection((host, PORT), timeout=5, source_address=(source, 0)) as conn:
        return conn.makefile("rb").readline().decode().rstrip()


def eventually(probe: Callable[[], str], timeout: float = 15) -> str:
    """The probe's first answer within ``timeout`` seconds (the greeter takes a moment to listen)."""
    deadline, last = time.monotonic() + timeout, ""
    while True:
        try:
            return probe()
        except (AssertionError, OSError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for the greeter to answer: {last}")
        time.sleep(0.3)
