"""`mailstack audit` pieces that need no running stack: items from tool output, the report."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mailstack.audit.containers import AuditError, container_items, published_targets, state_secret_values
from mailstack.audit.host import port_scan_item
from mailstack.audit.portscan import open_ports
from mailstack.audit.report import Item, Report
from mailstack.audit.tls import ScanResult, TlsPort, scan_items
from mailstack.cli import app
from mailstack.remote import Shell
from mailstack.site.loader import load_site
from mailstack.site.models import Host, Site
from tests.conftest import EXAMPLES
from tests.unit.test_resolver import compose, rendered

pytestmark = pytest.mark.unit

DEMO = load_site(next(p for p in EXAMPLES if p.name == "demo.yaml"))
OFFICE = load_site(next(p for p in EXAMPLES if p.name == "office.yaml"))

GOOD_TESTSSL = {
    "SSLv2": "not offered",
    "SSLv3": "not offered",
    "TLS1": "not offered",
    "TLS1_1": "not offered",
    "TLS1_2": "offered",
    "TLS1_3": "offered with final",
    **{f"cipherlist_{c}": "not offered" for c in ("NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE")},
    "cipherorder_TLSv1_2": "ECDHE-ECDSA-AES256-GCM-SHA384 ECDHE-RSA-CHACHA20-POLY1305",
    "cipherorder_TLSv1_3": "TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256",
    "PFS": "offered",
    "PFS_ciphers": "TLS_AES_256_GCM_SHA384 ECDHE-ECDSA-AES256-GCM-SHA384",
    "PFS_ECDHE_curves": "prime256v1 secp384r1 X25519",
    "cipher_order": "server",
    "CRIME_TLS": "not vulnerable (OK)",
    "secure_renego": "supported",
    "secure_client_renego": "not vulnerable (OK)",
}


def scan(**changes: str) -> ScanResult:
    findings = {**GOOD_TESTSSL, **changes}
    entries = {key: [{"id": key, "finding": value, "severity": "OK"}] for key, value in findings.items()}
    return ScanResult(TlsPort("imaps", 993, None), entries, 1.0, "")


def statuses(items: list[Item]) -> dict[str, str]:
    return {item.id: item.status for item in items}


def test_a_clean_testssl_scan_passes_every_tls_item() -> None:
    assert set(statuses(scan_items(scan())).values()) == {"pass"}


@pytest.mark.parametrize(
    ("finding", "value", "item"),
    [
        ("TLS1_1", "offered (deprecated)", "tls.protocols.imaps"),
        ("TLS1_3", "not offered", "tls.protocols.imaps"),
        ("cipherlist_AVERAGE", "offered", "tls.ciphers.imaps"),
        ("cipherorder_TLSv1_2", "ECDHE-RSA-AES128-SHA256", "tls.ciphers.imaps"),
        ("PFS_ciphers", "AES256-GCM-SHA384", "tls.forward_secrecy.imaps"),
        ("DH_groups", "ffdhe2048", "tls.forward_secrecy.imaps"),
        ("cipher_order", "client", "tls.cipher_order.imaps"),
        ("CRIME_TLS", "VULNERABLE", "tls.compression.imaps"),
        ("secure_client_renego", "VULNERABLE, DoS threat", "tls.renegotiation.imaps"),
    ],
)
def test_each_weakness_fails_its_own_item_only(finding: str, value: str, item: str) -> None:
    result = statuses(scan_items(scan(**{finding: value})))
    assert result[item] == "fail"
    assert [k for k, v in result.items() if v == "fail"] == [item]


def test_a_missing_finding_fails_rather_than_passes() -> None:
    findings = {k: v for k, v in scan().findings.items() if k != "cipher_order"}
    result = statuses(scan_items(ScanResult(TlsPort("smtp", 25, "smtp"), findings, 1.0, "")))
    assert result["tls.cipher_order.smtp"] == "fail"


def container(service: str, **host: Any) -> dict[str, Any]:
    host_config = {
        "CapDrop": ["ALL"],
        "CapAdd": None,
        "SecurityOpt": ["no-new-privileges:true"],
        "Privileged": False,
        "ReadonlyRootfs": True,
        "Memory": 256 * 2**20,
        "PidsLimit": 64,
        "NetworkMode": "mailstack-x_back",
        **host,
    }
    return {
        "Id": service * 4,
        "HostConfig": host_config,
        "Config": {"Env": ["PATH=/usr/bin"], "Healthcheck": {"Test": ["CMD", "true"]}, "Labels": {}},
        "NetworkSettings": {"Networks": {"mailstack-x_back": {"IPAddress": "172.30.0.5"}}, "Ports": {}},
    }


# /proc/net/tcp: a listener on 172.30.0.5:8425 (little-endian hex), a connection, a wildcard one.
PROC_BACK_ONLY = (
    "  sl  local_address rem_address   st\n"
    "   0: 05001EAC:20E9 00000000:0000 0A 00000000:00000000\n"
    "   1: 05001EAC:20E9 0A00001E:C350 01 00000000:00000000\n"
)
PROC_WILDCARD = PROC_BACK_ONLY + "   2: 00000000:1F90 00000000:0000 0A 00000000:00000000\n"


class FakeShell(Shell):
    """Answers `docker network inspect` and `cat /proc/net/tcp*` from tables."""

    def __init__(self, internal: dict[str, bool], proc: str = PROC_BACK_ONLY) -> None:
        super().__init__()
        object.__setattr__(self, "internal", internal)
        object.__setattr__(self, "proc", proc)

    def output(self, *argv: str, timeout: float = 0) -> str:  # noqa: ARG002 - as Shell.output
        if argv[:2] == ("docker", "exec"):
            return str(self.proc)  # type: ignore[attr-defined]
        assert argv[:3] == ("docker", "network", "inspect")
        return json.dumps([{"Name": n, "Internal": self.internal[n]} for n in argv[3:]])  # type: ignore[attr-defined]


def audited(
    shell: Shell, containers: dict[str, dict[str, Any]], state_dir: Path, site: Site = DEMO
) -> list[Item]:
    """The items of these containers only (not the running items of the site's others)."""
    items = container_items(shell, containers, state_dir, site)
    return [item for item in items if item.id.split(".")[1] in containers]


def test_container_items_catch_each_missing_confinement(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "redis").write_text("s3cret-value-that-must-not-leak\n")
    bad = container("redis", CapDrop=None, ReadonlyRootfs=False, PidsLimit=0, SecurityOpt=None)
    bad["Config"]["Env"].append("REDIS_PASSWORD=s3cret-value-that-must-not-leak")
    bad["Config"]["Healthcheck"] = None
    items = audited(FakeShell({"mailstack-x_back": False}), {"redis": bad}, tmp_path)
    assert statuses(items) == {
        "container.redis.running": "pass",
        "container.redis.capabilities": "fail",
        "container.redis.no_new_privileges": "fail",
        "container.redis.not_privileged": "pass",
        "container.redis.read_only": "fail",
        "container.redis.limits": "fail",
        "container.redis.healthcheck": "fail",
        "container.redis.environment": "fail",
        "container.redis.internal_only": "fail",
    }
    good = audited(FakeShell({"mailstack-x_back": True}), {"redis": container("redis")}, tmp_path)
    assert set(statuses(good).values()) == {"pass"}


def test_a_back_end_on_the_front_network_must_not_listen_there(tmp_path: Path) -> None:
    guard = container("guard")
    guard["NetworkSettings"]["Networks"]["mailstack-x_front"] = {"IPAddress": "172.31.0.7"}
    networks = {"mailstack-x_back": True, "mailstack-x_front": False}
    quiet = audited(FakeShell(networks), {"guard": guard}, tmp_path)
    assert statuses(quiet)["container.guard.internal_only"] == "pass"
    assert "172.30.0.5" in next(i.detail for i in quiet if i.id == "container.guard.internal_only")
    loud = audited(FakeShell(networks, PROC_WILDCARD), {"guard": guard}, tmp_path)
    item = next(i for i in loud if i.id == "container.guard.internal_only")
    assert item.status == "fail"
    assert "0.0.0.0" in item.detail


def inspected(service: str, site: Site) -> dict[str, Any]:
    """What `docker inspect` says of the container compose makes from the site's rendered
    compose file (the fields the audit reads), on the project's networks."""
    entry = compose(rendered(site))["services"][service]
    limit = entry["mem_limit"]
    c = container(
        service,
        CapAdd=entry["cap_add"] or None,
        SecurityOpt=entry["security_opt"],
        ReadonlyRootfs=entry["read_only"],
        Memory=int(limit[:-1]) * {"m": 2**20, "g": 2**30}[limit[-1]],
        PidsLimit=entry["pids_limit"],
    )
    c["Config"]["User"] = entry.get("user", "")
    c["Config"]["Healthcheck"] = {"Test": entry["healthcheck"]["test"]}
    c["NetworkSettings"]["Networks"] = {
        f"mailstack-x_{name}": {"IPAddress": f"172.30.{n}.5"} for n, name in enumerate(entry["networks"])
    }
    return c


GROUPWARE = ("sogo", "postgres", "memcached")
#: The office's networks: both of the groupware's are internal.
OFFICE_NETWORKS = {"mailstack-x_back": True, "mailstack-x_groupware": True, "mailstack-x_front": False}


def test_the_groupware_containers_pass_as_the_catalogue_and_the_site_declare_them(tmp_path: Path) -> None:
    """sogo, postgres and memcached get every item the mail services get; SOGo's memory limit
    is the site's (it grows with groupware.workers, past the catalogue's base value), and
    memcached, declared to run as memcache, is checked for it."""
    running = {s: inspected(s, OFFICE) for s in GROUPWARE}
    items = audited(FakeShell(OFFICE_NETWORKS), running, tmp_path, OFFICE)
    found = statuses(items)
    checks = ["running", "capabilities", "no_new_privileges", "not_privileged", "read_only", "limits"]
    checks += ["healthcheck", "environment", "internal_only"]
    expected = {f"container.{s}.{check}": "pass" for s in GROUPWARE for check in checks}
    assert found == {**expected, "container.memcached.user": "pass"}
    sogo = next(i for i in items if i.id == "container.sogo.limits")
    assert f"{128 + 160 * OFFICE.groupware.workers} MiB" in sogo.detail


def test_a_groupware_container_as_root_over_its_limit_or_on_a_routed_network_fails(
    tmp_path: Path,
) -> None:
    memcached, sogo = inspected("memcached", OFFICE), inspected("sogo", OFFICE)
    memcached["Config"]["User"] = ""
    sogo["HostConfig"]["Memory"] = 2**30
    sogo["NetworkSettings"]["Networks"]["mailstack-x_front"] = {"IPAddress": "172.31.0.9"}
    found = statuses(
        audited(
            FakeShell(OFFICE_NETWORKS, PROC_WILDCARD),
            {"memcached": memcached, "sogo": sogo},
            tmp_path,
            OFFICE,
        )
    )
    assert found["container.memcached.user"] == "fail"
    assert found["container.sogo.limits"] == "fail"
    assert found["container.sogo.internal_only"] == "fail"


def test_a_service_of_the_site_that_is_not_running_fails_its_running_item(tmp_path: Path) -> None:
    running = {s: inspected(s, OFFICE) for s in ("postgres", "memcached")}
    items = container_items(FakeShell(OFFICE_NETWORKS), running, tmp_path, OFFICE)
    found = statuses(items)
    assert found["container.sogo.running"] == "fail"
    assert found["container.postgres.running"] == "pass"
    assert not any(i.startswith("container.sogo.") and i != "container.sogo.running" for i in found)
    # The demo has no groupware: nothing of it is expected.
    assert not any(".sogo." in i for i in statuses(container_items(FakeShell({}), {}, tmp_path, DEMO)))


def test_vaulted_state_files_are_not_taken_for_secrets(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "redis").write_text("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    assert state_secret_values(tmp_path) == []


def test_published_targets_lead_to_the_container_behind_each_site_port() -> None:
    postfix = container("postfix")
    postfix["NetworkSettings"]["Ports"] = {"25/tcp": [{"HostIp": "0.0.0.0", "HostPort": "2525"}]}
    assert published_targets({"postfix": postfix}, {"smtp": 2525}) == {"smtp": ("172.30.0.5", 25)}
    with pytest.raises(AuditError, match="no running container publishes imaps"):
        published_targets({"postfix": postfix}, {"smtp": 2525, "imaps": 993})


def test_a_port_scan_of_loopback_is_skipped_with_the_reason() -> None:
    item = port_scan_item(Host(name="mx", address="127.0.0.1"), {22})
    assert item.status == "skip"
    assert "loopback" in item.detail


def test_open_ports_finds_a_listener_and_not_a_closed_port() -> None:
    with socket.socket() as listener, socket.socket() as closed:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        ports = [listener.getsockname()[1], closed.getsockname()[1]]
        assert open_ports("127.0.0.1", ports) == [ports[0]]


def test_the_report_says_what_failed_in_markdown_and_json(tmp_path: Path) -> None:
    report = Report("acme", "local", "2026-11-30T12:00:00+00:00", 3.0, {"testssl.sh": "3.0.8"})
    report.items += [
        Item("a.one", "first | piped", "pass", "fine", "RFC 1"),
        Item("a.two", "second", "fail", "broken", "RFC 2"),
        Item("a.three", "third", "skip", "no tool", "RFC 3"),
    ]
    markdown, data = report.write(tmp_path / "r")
    parsed = json.loads(data.read_text())
    assert parsed["ok"] is False
    assert parsed["counts"] == {"pass": 1, "fail": 1, "skip": 1}
    assert [i["id"] for i in parsed["items"]] == ["a.one", "a.two", "a.three"]
    text = markdown.read_text()
    assert "| **FAIL** | `a.two` second | broken | RFC 2 |" in text
    assert "first \\| piped" in text


def test_audit_of_an_unknown_host_names_the_known_ones() -> None:
    acme = next(p for p in EXAMPLES if p.name == "acme.yaml")
    result = CliRunner().invoke(app, ["audit", str(acme), "--host", "nowhere"])
    assert result.exit_code == 1
    assert "no host named 'nowhere'" in result.output
    assert "Traceback" not in result.output


def test_audit_only_takes_known_sections() -> None:
    acme = next(p for p in EXAMPLES if p.name == "acme.yaml")
    result = CliRunner().invoke(app, ["audit", str(acme), "--only", "tls,kernel"])
    assert result.exit_code == 1
    assert "--only takes containers, tls, smtp, host, not kernel" in result.output
