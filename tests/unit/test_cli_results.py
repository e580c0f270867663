"""The commands print typed results and keep their exit codes: deploy (recap, failure, the
checks of the --limit hosts), status, tls renew. The library calls are replaced here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailstack import engine, tls
from mailstack.check import CheckReport
from mailstack.check.results import failed, passed
from mailstack.cli import app, host_commands, stack_commands
from mailstack.deploy import DeployOptions, DeployResult
from mailstack.engine import Project, ServiceStatus
from mailstack.site.loader import load_site
from mailstack.site.models import Host, Site
from mailstack.vault import Vault
from tests.conftest import EXAMPLES

runner = CliRunner()
ACME = next(p for p in EXAMPLES if p.name == "acme.yaml")
LETSENCRYPT = next(p for p in EXAMPLES if p.name == "letsencrypt.yaml")
RECAP = {"ok": 9, "changed": 1, "unreachable": 0, "failed": 0}


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Host names `mailstack check` ran against after the deploy; mx1 fails a probe."""
    names: list[str] = []

    def check_hosts(
        site: Site, state_dir: Path, hosts: list[Host], *, site_dir: Path, vault: Vault | None
    ) -> list[CheckReport]:
        assert site_dir == ACME.resolve().parent
        assert vault is None
        names.extend(h.name for h in hosts)
        result = failed("ports", "seen", "fix") if "mx1" in names else passed("ports", "seen")
        return [CheckReport(site.site, h.name, [result]) for h in hosts]

    monkeypatch.setattr(host_commands, "check_hosts", check_hosts)
    return names


def fake_deploy(monkeypatch: pytest.MonkeyPatch, result: DeployResult) -> list[DeployOptions]:
    seen: list[DeployOptions] = []

    def deploy(
        site: Site,
        out_dir: Path,
        state_dir: Path,
        options: DeployOptions,
        *,
        vault: Vault | None,
        say: object,
    ) -> DeployResult:
        seen.append(options)
        return result

    monkeypatch.setattr(host_commands, "run_deploy", deploy)
    return seen


def test_deploy_prints_the_recap_and_checks_the_hosts_of_the_limit(
    monkeypatch: pytest.MonkeyPatch, checked: list[str]
) -> None:
    mx2 = Host(name="mx2", address="203.0.113.11")
    options = fake_deploy(monkeypatch, DeployResult(0, {"mx2": RECAP}, hosts=[mx2]))
    result = runner.invoke(app, ["deploy", str(ACME), "--limit", "mx2", "--tags", "stack"])
    assert result.exit_code == 0, result.output
    assert "mx2: ok=9 changed=1 unreachable=0 failed=0" in result.stdout
    assert "mailstack check acme (mx2)" in result.stdout
    assert checked == ["mx2"]
    assert options == [DeployOptions(limit="mx2", tags="stack")]


def test_a_failed_host_check_after_the_deploy_exits_1(
    monkeypatch: pytest.MonkeyPatch, checked: list[str]
) -> None:
    fake_deploy(monkeypatch, DeployResult(0, {"mx1": RECAP}, hosts=[Host(name="mx1", address="192.0.2.1")]))
    result = runner.invoke(app, ["deploy", str(ACME)])
    assert result.exit_code == 1
    assert "0 pass, 0 warn, 1 fail" in result.stdout
    assert checked == ["mx1"]


def test_a_failed_play_exits_1_without_checks(monkeypatch: pytest.MonkeyPatch, checked: list[str]) -> None:
    failed = {**RECAP, "failed": 2}
    fake_deploy(monkeypatch, DeployResult(2, {"mx1": failed}, hosts=[Host(name="mx1", address="192.0.2.1")]))
    result = runner.invoke(app, ["deploy", str(ACME)])
    assert result.exit_code == 1
    assert "mx1: ok=9 changed=1 unreachable=0 failed=2" in result.stdout
    assert "deploy failed (ansible-playbook exit 2)" in result.stderr
    assert checked == []


def test_deploy_check_mode_and_no_live_check_skip_the_checks(
    monkeypatch: pytest.MonkeyPatch, checked: list[str]
) -> None:
    fake_deploy(monkeypatch, DeployResult(0, {"mx1": RECAP}, hosts=[Host(name="mx1", address="192.0.2.1")]))
    assert runner.invoke(app, ["deploy", str(ACME), "--check"]).exit_code == 0
    assert runner.invoke(app, ["deploy", str(ACME), "--no-live-check"]).exit_code == 0
    assert checked == []


def test_deploy_refuses_other_images_modes() -> None:
    result = runner.invoke(app, ["deploy", str(ACME), "--images", "push"])
    assert result.exit_code == 1
    assert "--images must be build or load, not 'push'" in result.stderr


def test_status_prints_typed_rows_then_the_certificates(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        ServiceStatus("postfix", "running", "healthy", ["127.0.0.1:25", "127.0.0.1:587"]),
        ServiceStatus("redis", "running", "-", []),
    ]
    monkeypatch.setattr(engine, "status", lambda _p: rows)
    monkeypatch.setattr(tls, "status", lambda _p: ["rsa: issued by the site's CA"])
    monkeypatch.setattr(stack_commands, "last_run", lambda _t: None)
    result = runner.invoke(app, ["status", str(ACME)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "postfix    running    healthy    127.0.0.1:25 127.0.0.1:587",
        "redis      running    -          ",
        "rsa: issued by the site's CA",
        "backup: none yet (schedule *-*-* 03:15 UTC, or `mailstack backup SITE`)",
    ]
    monkeypatch.setattr(engine, "status", lambda _p: [])
    stopped = runner.invoke(app, ["status", str(ACME)])
    assert stopped.exit_code == 3
    assert stopped.stdout == "mailstack-acme is not running\n"


def test_engine_status_reads_compose_ps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ps = (
        '{"Service": "postfix", "State": "running", "Health": "healthy", "Publishers": '
        '[{"URL": "127.0.0.1", "PublishedPort": 587}, {"URL": "127.0.0.1", "PublishedPort": 0}]}\n'
        '{"Service": "redis", "State": "exited", "Health": ""}\n'
    )
    monkeypatch.setattr(engine, "check_engine", lambda: None)
    monkeypatch.setattr(
        Project, "compose", lambda _self, *args, **_kw: subprocess.CompletedProcess(args, 0, ps, "")
    )
    project = Project(site=load_site(ACME), out_dir=tmp_path, state_dir=tmp_path)
    assert engine.status(project) == [
        ServiceStatus("postfix", "running", "healthy", ["127.0.0.1:587"]),
        ServiceStatus("redis", "exited", "-", []),
    ]


REPORT = {
    "ok": True,
    "last_attempt": {"at": "2026-12-06T09:00:00Z", "reasons": "ecdsa (due)", "ok": True, "error": None},
    "certificates": {
        "rsa": {"serial": "0b", "issuer": "CN=R11", "not_after": "2027-03-06", "key": "current"},
        "ecdsa": {"serial": "0a", "issuer": "CN=E6", "not_after": "2027-03-06", "key": "next"},
    },
}


def test_a_renewal_is_read_from_the_acme_services_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    answers = [subprocess.CompletedProcess([], 0, json.dumps(REPORT), "")]
    monkeypatch.setattr(Project, "compose", lambda *_a, **_kw: answers[0])
    project = Project(site=load_site(LETSENCRYPT), out_dir=tmp_path, state_dir=tmp_path)
    renewal = tls.renew(project, LETSENCRYPT, force=True)
    assert renewal == tls.Renewal(
        ok=True,
        certificates=[
            tls.Issued("ecdsa", "0a", "CN=E6", "2027-03-06", "next"),
            tls.Issued("rsa", "0b", "CN=R11", "2027-03-06", "current"),
        ],
        error=None,
        reasons="ecdsa (due)",
    )
    failed = {"ok": False, "last_attempt": {"ok": False, "error": "rate limited"}}
    answers[0] = subprocess.CompletedProcess([], 1, json.dumps(failed), "")
    assert tls.renew(project, LETSENCRYPT, force=False) == tls.Renewal(False, [], "rate limited", None)
    answers[0] = subprocess.CompletedProcess([], 1, "", "no such service: acme\n")
    with pytest.raises(engine.EngineError, match=r"did not answer .*no such service: acme"):
        tls.renew(project, LETSENCRYPT, force=False)


def test_tls_renew_prints_the_certificates_and_fails_with_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    issued = [tls.Issued("rsa", "0b", "CN=R11", "2027-03-06", "current")]
    monkeypatch.setattr(tls, "renew", lambda *_a, **_kw: tls.Renewal(True, issued, None, None))
    result = runner.invoke(app, ["tls", "renew", str(LETSENCRYPT)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "rsa: serial 0b from CN=R11, valid until 2027-03-06 (key current)",
        "renewed: nothing was due",
    ]
    monkeypatch.setattr(tls, "renew", lambda *_a, **_kw: tls.Renewal(False, [], None, None))
    failed = runner.invoke(app, ["tls", "renew", str(LETSENCRYPT)])
    assert failed.exit_code == 1
    assert "ACME attempt failed: see `mailstack logs SITE acme`" in failed.stderr


def test_tls_renew_needs_tls_mode_acme() -> None:
    result = runner.invoke(app, ["tls", "renew", str(ACME)])
    assert result.exit_code == 1
    assert "tls.mode is selfsigned; only tls.mode acme renews" in result.stderr
