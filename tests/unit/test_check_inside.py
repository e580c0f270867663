"""`mailstack check`'s probes inside the stack, without Docker: drill's answers and postmap's
exits as the resolver and postfix containers give them, read by a shell that replays them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

import pytest
from typer.testing import CliRunner

from mailstack.check import CheckReport
from mailstack.check.inside import (
    POLICY_PROBE,
    RESOLVER_PROBE,
    Ran,
    anchor_zone,
    parse_drill,
    policy_result,
    resolver_result,
    stack_results,
)
from mailstack.check.results import passed, skipped
from mailstack.cli import app, host_commands
from mailstack.remote import Shell
from mailstack.site.loader import parse_site
from mailstack.site.models import Site
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.unit

DEMO = next(p for p in EXAMPLES if p.name == "demo.yaml")

BASE = """
site: check-a
hostname: mail.a.test
admin_email: admin@a.test
network:
  bind: 127.0.0.1
  ports: {smtp: 2525}
domains:
  - name: a.test
"""
ANCHOR = "test. DS 16635 13 2 38f75ba604aaadb46fa0ed40bf5743b0e9215c6774bf716a44a19927d76ed187"
FORWARD = f"dns: {{resolver: {{mode: forward, forward: [10.253.7.2], trust_anchors: ['{ANCHOR}']}}}}\n"


def drill(rcode: str, flags: str) -> str:
    """drill's output (ldnsutils 1.8, as in the resolver image), header to footer."""
    return (
        f";; ->>HEADER<<- opcode: QUERY, rcode: {rcode}, id: 5758\n"
        f";; flags: {flags} ; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 0 \n"
        ";; QUESTION SECTION:\n;; test.\tIN\tSOA\n\n;; ANSWER SECTION:\n\n"
        ";; Query time: 0 msec\n;; EDNS: version 0; flags: do ; udp: 1232\n;; SERVER: 127.0.0.1\n"
    )


VALIDATED = Ran(True, 0, drill("NOERROR", "qr rd ra ad"))
SERVFAIL = Ran(True, 0, drill("SERVFAIL", "qr rd ra"))
POSTMAP_REFUSED = (
    "postmap: warning: connect to mta-sts:8461: Connection refused\n"
    "postmap: fatal: table socketmap:inet:mta-sts:8461:postfix: query error: Connection refused\n"
)


def site(extra: str = "") -> Site:
    return parse_site(BASE + extra)


def test_drill_answers_are_read_from_the_header_not_the_edns_flags() -> None:
    answer = parse_drill(VALIDATED.stdout)
    assert answer is not None
    assert answer.validated
    assert answer.flags == frozenset({"qr", "rd", "ra", "ad"})
    failing = parse_drill(SERVFAIL.stdout)
    assert failing is not None
    assert (failing.rcode, failing.validated) == ("SERVFAIL", False)
    # NOERROR without ad: an answer nobody checked.
    unsigned = parse_drill(drill("NOERROR", "qr rd ra"))
    assert unsigned is not None
    assert not unsigned.validated
    assert parse_drill("Error: error sending query: Could not send or receive") is None


def test_the_probe_asks_for_the_first_private_anchors_zone_else_the_root() -> None:
    assert anchor_zone(site()) == "."
    assert anchor_zone(site(FORWARD)) == "test."


def test_a_validated_answer_passes() -> None:
    result = resolver_result(site(FORWARD), "test.", VALIDATED, None, local=True)
    assert result.status == "pass", result
    assert "test. SOA" in result.reason
    assert "ad" in result.reason


def test_a_stopped_resolver_fails_naming_it_and_how_to_start_it() -> None:
    result = resolver_result(site(), ".", Ran(running=False), None, local=True)
    assert result.status == "fail"
    assert "resolver" in result.reason
    assert "not running" in result.reason
    assert "mailstack up check-a" in result.fix
    assert "mailstack logs check-a resolver" in result.fix
    on_host = resolver_result(site(), ".", Ran(running=False), None, local=False)
    assert "mailstack deploy check-a" in on_host.fix


def test_no_answer_at_all_points_at_the_forwarders_or_outbound_dns() -> None:
    forwarded = resolver_result(site(FORWARD), "test.", SERVFAIL, SERVFAIL, local=True)
    assert forwarded.status == "fail"
    assert "no validated answer for test. SOA (SERVFAIL)" in forwarded.reason
    assert "dns.resolver.forward (10.253.7.2)" in forwarded.fix
    assert "mailstack logs check-a resolver" in forwarded.fix
    recursive = resolver_result(site(), ".", SERVFAIL, SERVFAIL, local=True)
    assert "port 53" in recursive.fix


def test_an_answer_that_only_comes_without_checking_is_a_signature_failure() -> None:
    unchecked = Ran(True, 0, drill("NOERROR", "qr rd cd ra"))
    result = resolver_result(site(FORWARD), "test.", SERVFAIL, unchecked, local=True)
    assert result.status == "fail"
    assert "signatures do not validate" in result.reason
    assert "trust_anchors" in result.fix


def test_an_unvalidated_noerror_fails_naming_the_anchor() -> None:
    result = resolver_result(
        site(FORWARD), "test.", Ran(True, 0, drill("NOERROR", "qr rd ra")), None, local=True
    )
    assert result.status == "fail"
    assert "no ad flag" in result.reason


def test_drill_without_an_answer_fails_with_its_error() -> None:
    broken = Ran(
        True, 1, "", "Error: error sending query: Could not send or receive, because of network error"
    )
    result = resolver_result(site(), ".", broken, None, local=True)
    assert result.status == "fail"
    assert "Could not send or receive" in result.reason


@pytest.mark.parametrize(
    ("ran", "status", "seen"),
    [
        (Ran(True, 0, "secure match=mail.b.test\n"), "pass", "secure match=mail.b.test"),
        (Ran(True, 1), "pass", "no MTA-STS policy"),
        # postmap's fatal (a table error) exits 1 too: stderr tells it from "not found".
        (Ran(True, 1, "", POSTMAP_REFUSED), "fail", "Connection refused"),
        (Ran(True, 2, "", "postmap: fatal: open database"), "fail", "open database"),
        (Ran(False), "fail", "postfix is not running"),
    ],
)
def test_the_policy_lookup_passes_when_mta_sts_answered(ran: Ran, status: str, seen: str) -> None:
    result = policy_result(site(), "a.test", ran, local=True)
    assert (result.status, result.probe) == (status, POLICY_PROBE)
    assert seen in result.reason


@dataclass(frozen=True)
class Replay(Shell):
    """A local shell that answers each command from ``answers`` (by its first words after
    `docker exec <id>`, or `docker ps`) and records what it was asked."""

    answers: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    asked: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, *argv: str, timeout: float = 0) -> subprocess.CompletedProcess[str]:  # noqa: ARG002 - replayed at once
        self.asked.append(argv)
        key = argv[1] if argv[1] == "ps" else argv[3]
        return self.answers[key]


def done(returncode: int, stdout: str = "", stderr: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], returncode, stdout, stderr)


def test_an_offline_site_skips_both_probes() -> None:
    results = stack_results(Replay(), "mailstack-x", site("offline: true\n"), local=True)
    assert [(r.probe, r.status) for r in results] == [(RESOLVER_PROBE, "skip"), (POLICY_PROBE, "skip")]
    assert all("offline" in r.reason for r in results)


def test_the_probes_run_in_the_projects_containers() -> None:
    shell = Replay(
        answers={
            "ps": done(0, "c1 resolver\nc2 postfix\nc3 mta-sts\n"),
            "drill": done(0, VALIDATED.stdout),
            "postmap": done(1),
        }
    )
    results = stack_results(shell, "mailstack-check-a", site(FORWARD), local=True)
    assert [r.status for r in results] == ["pass", "pass"], results
    assert "label=com.docker.compose.project=mailstack-check-a" in shell.asked[0]
    assert shell.asked[1] == ("docker", "exec", "c1", "drill", "-D", "@127.0.0.1", "test.", "SOA")
    assert shell.asked[2] == (
        "docker", "exec", "c2", "postmap", "-q", "a.test", "socketmap:inet:mta-sts:8461:postfix",
    )  # fmt: skip


def test_a_resolver_missing_from_docker_ps_fails_and_the_lookup_is_still_tried() -> None:
    shell = Replay(answers={"ps": done(0, "c2 postfix\n"), "postmap": done(1, "", POSTMAP_REFUSED)})
    resolver, policy = stack_results(shell, "mailstack-check-a", site(), local=True)
    assert resolver.status == "fail"
    assert "resolver (Unbound) is not running" in resolver.reason
    assert policy.status == "fail"
    assert "Connection refused" in policy.reason


def test_a_failed_validation_asks_again_with_checking_disabled() -> None:
    shell = Replay(answers={"ps": done(0, "c1 resolver\nc2 postfix\n"), "drill": done(0, SERVFAIL.stdout)})
    shell.answers["postmap"] = done(1)
    resolver, _ = stack_results(shell, "p", site(), local=True)
    assert ("docker", "exec", "c1", "drill", "-D", "-o", "CD", "@127.0.0.1", ".", "SOA") in shell.asked
    assert resolver.status == "fail"
    assert "(SERVFAIL)" in resolver.reason


def test_without_docker_both_probes_fail_saying_why() -> None:
    shell = Replay(
        answers={"ps": done(1, "", "permission denied while trying to connect to the Docker daemon")}
    )
    results = stack_results(shell, "p", site(), local=True)
    assert [r.status for r in results] == ["fail", "fail"]
    assert all("permission denied" in r.reason for r in results)


def test_the_table_counts_skips_and_a_skip_does_not_fail_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def run_check(site: Site, *_: object, **__: object) -> CheckReport:
        why = "the site is offline (offline: true): it runs no resolver and no mta-sts"
        return CheckReport(site.site, "local", [passed("ports", "seen"), skipped(RESOLVER_PROBE, why)])

    monkeypatch.setattr(host_commands, "run_check", run_check)
    result = CliRunner().invoke(app, ["check", str(DEMO)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "1 pass, 0 warn, 0 fail, 1 skipped" in result.output
    assert "skip" in result.output
