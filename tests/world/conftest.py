"""The session's test world (tests/world/world.py), stopped with everything it made even
when a test or the start fails; its start time is printed in the run's summary. Its two
sites (`sites`) are shared by every module, once per session.

MAILSTACK_WORLD_KEEP=1 leaves it running at the end (a later run's sweep removes it once
this pytest is gone).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from mailstack import engine
from tests.world.net import taken_networks
from tests.world.sites import WorldStack, bring_up, export_ca, write_site
from tests.world.world import World

# Site A's addresses under public suffixes: one whose mail B reports on, and its rua.
REPORTED = "ada@example.com"
RUA = "reports@example.net"
NOTES: list[str] = []
ACTIVE: list[World] = []


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    started = World.start()
    NOTES.append(
        f"world {started.name} started in {started.started_in:.1f} s: {started.subnet}, {started.subnet6}, "
        f"DNS {started.dns.address}, forger {started.forger.address}"
    )
    ACTIVE.append(started)
    try:
        yield started
    finally:
        ACTIVE.remove(started)
        if os.environ.get("MAILSTACK_WORLD_KEEP") != "1":
            started.stop()


@pytest.fixture(scope="session")
def sites(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorldStack, WorldStack]]:
    """Site A (a.test, DMARC p=reject, postscreen asks the world's DNSBL, trusts B's CA for
    outbound TLS; also example.com and example.net) and site B (b.test, DMARC p=quarantine,
    sends DMARC reports, serves an MTA-STS enforce policy over HTTPS with a certificate of its
    local CA), up side by side; one pair for the whole session (bringing a pair up is most of
    the world's time), so a test that stops a service starts it again."""
    base = tmp_path_factory.mktemp("world-sites")
    used = taken_networks(docker.from_env())
    # B first: A's site file names B's CA (B's render makes it). B sends DMARC reports
    # (test_dmarc_reports) and publishes MTA-STS (test_mta_sts); nothing else depends on that.
    # It bans after 4 failed logins (test_ipv6); the tests' own logins never fail. Both sites
    # listen on a world IPv6 address too.
    b = write_site(
        world,
        base / "b",
        "b.test",
        ["berta", "bernd"],
        dmarc="quarantine",
        dmarc_reports=True,
        ipv6=True,
        auth_ban={"failures": 4, "window": 120, "ban": 120, "exempt": world.gateways()},
        https=True,
        taken=used,
    )
    a = write_site(
        world,
        base / "a",
        "a.test",
        ["anna", "arne"],
        dmarc="reject",
        dnsbl=["dnsbl.test*3"],
        outbound_ca_bundle=export_ca(b, base / "b-ca.pem"),
        ipv6=True,
        # Under public suffixes, for DMARC reports (test_dmarc_reports): ada@example.com's mail
        # is reported to reports@example.net, an address outside example.com (RFC 7489 §7.1).
        more_domains=(
            {"name": REPORTED.partition("@")[2], "dmarc": {"rua": [RUA]}},
            {"name": RUA.partition("@")[2]},
        ),
        more_mailboxes=(REPORTED, RUA),
        taken=used,
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = list(pool.map(lambda s: bring_up(world, s), (a, b)))
    try:
        for s in started:
            assert s.up_error is None, f"{s.site.site}: {s.up_error}\n{s.all_logs()}"
        yield started[0], started[1]
    finally:
        for s in started:
            world.detach_site(s.site.hostname)
            engine.down(s.project, volumes=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    """A failing world test carries the world's last log lines."""
    report = yield
    if isinstance(report, pytest.TestReport) and report.failed and report.when in ("setup", "call"):
        for active in ACTIVE:
            report.sections.append((f"{active.name} logs", active.logs(40)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if NOTES:
        terminalreporter.section("mailstack world notes")
        for note in NOTES:
            terminalreporter.line(note)
