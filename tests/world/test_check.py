"""`mailstack check` of the world's online sites, as an operator runs it: every probe, the
published DNS through the world's server, the resolver's DNSSEC validation and Postfix's
MTA-STS policy lookup from inside each stack; and a stopped resolver is named."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from mailstack import engine
from tests.world.sites import MAILSTACK, WorldStack
from tests.world.world import World

pytestmark = pytest.mark.world

RESTART_TIMEOUT = 60.0


def check(site: WorldStack, world: World) -> tuple[int, dict[str, Any]]:
    """`mailstack check SITE --dns --resolver <the world's DNS> --json`: its exit and report."""
    done = subprocess.run(
        [
            str(MAILSTACK), "check", str(site.site_path),
            "--output", str(site.out_dir), "--state", str(site.state_dir),
            "--dns", "--resolver", str(world.dns.address), "--json",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.stdout.startswith("{"), f"exit {done.returncode}: {done.stdout}{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def not_passed(report: dict[str, Any]) -> list[str]:
    return [
        f"{r['status']} {r['probe']}: {r['reason']} / {r['fix']}"
        for r in report["results"]
        if r["status"] != "pass"
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["a", "b"])
def test_check_with_dns_passes_every_item(
    world: World, sites: tuple[WorldStack, WorldStack], which: int
) -> None:
    site = sites[which]
    code, report = check(site, world)
    assert not_passed(report) == [], "\n".join(not_passed(report))
    assert code == 0
    probes = {r["probe"]: r["reason"] for r in report["results"]}
    # The resolver validated the world's signed zone with the site's private anchor.
    assert "test. SOA NOERROR, validated" in probes["resolver DNSSEC"]
    assert f"lookup for {site.domain}" in probes["MTA-STS policy lookup"]
    # --dns compared the published records, DANE included.
    assert any(p.startswith("DNS MX ") for p in probes), sorted(probes)
    assert "DANE" in probes


def test_a_stopped_resolver_fails_check_naming_it(world: World, sites: tuple[WorldStack, WorldStack]) -> None:
    site = sites[1]
    stopped = site.project.compose("stop", "resolver")
    assert stopped.returncode == 0, stopped.stderr
    try:
        code, report = check(site, world)
    finally:
        # The other tests share the site: its resolver runs and is healthy again before they do.
        started = site.project.compose("start", "resolver")
        assert started.returncode == 0, started.stderr
        engine.wait_healthy(site.project, RESTART_TIMEOUT, say=lambda _: None)
    assert code == 1
    failing = {r["probe"]: r for r in report["results"] if r["status"] == "fail"}
    # The cause comes first: Postfix's ports, which then wait for DNS, fail after it.
    assert next(iter(failing)) == "resolver DNSSEC", not_passed(report)
    assert "resolver DNSSEC" in failing, not_passed(report)
    assert "resolver (Unbound) is not running" in failing["resolver DNSSEC"]["reason"]
    assert f"mailstack logs {site.site.site} resolver" in failing["resolver DNSSEC"]["fix"]
