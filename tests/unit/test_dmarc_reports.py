"""reports.dmarc: the model and its rules (with field paths), and what it renders: Rspamd's
reporting block, Postfix's listener for the reporter, the dmarc-reports service."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from mailstack import engine
from mailstack.errors import SiteValidationError
from mailstack.render import plan_files
from mailstack.services import DMARC_REPORTS_NEXT
from mailstack.site.loader import parse_site
from mailstack.site.models import Site
from mailstack.site.reports import dmarc_org_name, dmarc_sender
from mailstack.site.resolver import FIXED_ADDRESSES, dynamic_range, fixed_address
from tests.conftest import fake_state

HASH = (
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$NruCNtu7jz3/ZyPM4x9T3A$"
    "yvjc8CAHgrwcLKL1ObYhcb7p8BMq7v2kQhqSBZoocL8"
)


def site_text(reports: str = "", *, offline: bool = False) -> str:
    return f"""
site: reports-test
hostname: mail.reports.example
admin_email: admin@reports.example
offline: {"true" if offline else "false"}
network:
  bind: 127.0.0.1
  internal_subnet: 10.251.7.0/27
  ports:
    smtp: 2525
    submission: 2587
domains:
  - name: reports.example
  - name: second.example
mailboxes:
  - address: admin@reports.example
    password_hash: "{HASH}"
{reports}"""


ENABLED = "reports:\n  dmarc:\n    enabled: true\n"


def test_reports_are_off_by_default() -> None:
    site = parse_site(site_text())
    assert site.reports.dmarc.enabled is False


def test_the_defaults_come_from_the_first_domain() -> None:
    site = parse_site(site_text(ENABLED))
    assert dmarc_sender(site) == "noreply-dmarc@reports.example"
    assert dmarc_org_name(site) == "reports.example"
    assert site.reports.dmarc.send_at == "01:00"


def test_a_sender_in_another_site_domain_names_the_organisation_by_default() -> None:
    site = parse_site(site_text(ENABLED + "    sender: DMARC@Second.example\n"))
    assert dmarc_sender(site) == "dmarc@second.example"
    assert dmarc_org_name(site) == "second.example"
    named = parse_site(site_text(ENABLED + "    org_name: Reports Example Ltd.\n"))
    assert dmarc_org_name(named) == "Reports Example Ltd."


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (
            "    sender: reports@elsewhere.example\n",
            ["reports.dmarc.sender (line 21)", "elsewhere.example, which is not listed under domains"],
        ),
        ("    sender: not-an-address\n", ["reports.dmarc.sender (line 21)"]),
        ('    org_name: "Say \\"hi\\""\n', ["reports.dmarc.org_name (line 21)", "without quotes"]),
        ("    org_name: Bücher GmbH\n", ["reports.dmarc.org_name (line 21)", "printable ASCII"]),
        ("    send_at: '24:00'\n", ["reports.dmarc.send_at (line 21)", "HH:MM, UTC"]),
        ("    send_at: 1am\n", ["reports.dmarc.send_at (line 21)"]),
        ("    every: day\n", ["reports.dmarc.every (line 21)"]),
    ],
)
def test_invalid_settings_name_the_field_and_line(extra: str, fragments: list[str]) -> None:
    with pytest.raises(SiteValidationError) as caught:
        parse_site(site_text(ENABLED + extra))
    text = "\n".join(caught.value.problems)
    for fragment in fragments:
        assert fragment in text, text


def test_an_offline_site_is_refused_reports_with_the_field_path() -> None:
    with pytest.raises(SiteValidationError) as caught:
        parse_site(site_text(ENABLED, offline=True))
    text = "\n".join(caught.value.problems)
    assert "reports.dmarc.enabled (line 20)" in text, text
    assert "offline" in text, text


def test_an_offline_site_may_keep_them_disabled() -> None:
    site = parse_site(site_text("reports:\n  dmarc:\n    enabled: false\n", offline=True))
    assert not site.reports.dmarc.enabled


# --- rendering ----------------------------------------------------------------------------------

# 10.251.7.0/27: the resolver at .30, postfix at .29, the reporter at .28.
POSTFIX_ADDRESS = "10.251.7.29"
REPORTER_ADDRESS = "10.251.7.28"


def rendered(site: Site, tmp_path: Path) -> dict[str, str]:
    files = plan_files(site, fake_state(site.domain_names), tmp_path / "state", tmp_path / "out")
    return {f.path: f.content.decode() for f in files}


def compose_services(files: dict[str, str]) -> dict[str, Any]:
    services: dict[str, Any] = YAML(typ="safe").load(files["compose.yaml"])["services"]
    return services


def test_a_site_without_reports_renders_nothing_of_them(tmp_path: Path) -> None:
    site = parse_site(site_text())
    files = rendered(site, tmp_path)
    services = compose_services(files)
    assert "dmarc-reports" not in services
    assert "dmarc-reports" not in engine.expected_services(site)
    assert services["postfix"]["networks"] == ["front", "back"]
    assert "reporting" not in files["config/rspamd/local.d/dmarc.conf"]
    assert "10025" not in files["config/postfix/master.cf"]
    assert "sign_networks" not in files["config/rspamd/local.d/dkim_signing.conf"]
    assert 'local_addrs = ["127.0.0.0/8", "::1"];' in files["config/rspamd/local.d/local_addrs.inc"]
    assert "local reporter = nil" in files["config/rspamd/local.d/rspamd.lua"]


def test_the_reporter_is_a_confined_service_on_the_back_network(tmp_path: Path) -> None:
    site = parse_site(site_text(ENABLED))
    services = compose_services(rendered(site, tmp_path))
    reporter = services["dmarc-reports"]
    assert reporter["image"] == services["rspamd"]["image"]
    assert reporter["networks"] == {"back": {"ipv4_address": REPORTER_ADDRESS}}
    assert (reporter["mem_limit"], reporter["pids_limit"]) == ("512m", 16)
    assert "rspamd:/var/lib/rspamd:ro" in reporter["volumes"]
    assert reporter["healthcheck"]["test"][-1] == "health"
    assert "ports" not in reporter
    assert "./config/rspamd/local.d:/etc/rspamd/local.d:ro" in reporter["volumes"]
    assert services["postfix"]["networks"]["back"] == {"ipv4_address": POSTFIX_ADDRESS}
    assert "dmarc-reports" in engine.expected_services(site)


def test_rspamd_sends_through_postfix_listener_that_admits_the_reporter_alone(tmp_path: Path) -> None:
    files = rendered(parse_site(site_text(ENABLED + "    org_name: Reports Ltd.\n")), tmp_path)
    dmarc = files["config/rspamd/local.d/dmarc.conf"]
    for line in (
        'email = "noreply-dmarc@reports.example";',
        'domain = "reports.example";',
        'org_name = "Reports Ltd.";',
        'from_name = "DMARC reports of Reports Ltd.";',
        'helo = "mail.reports.example";',
        f'smtp = "{POSTFIX_ADDRESS}";',
        "smtp_port = 10025;",
    ):
        assert f"  {line}" in dmarc, dmarc
    master = files["config/postfix/master.cf"]
    listener = re.search(rf"^{re.escape(POSTFIX_ADDRESS)}:10025 inet .*smtpd\n((?:  -o .*\n)+)", master, re.M)
    assert listener, master
    options = listener.group(1)
    assert f"-o mynetworks={REPORTER_ADDRESS}/32\n" in options
    assert "-o smtpd_client_restrictions=permit_mynetworks,reject\n" in options
    assert "-o smtpd_relay_restrictions=permit_mynetworks,reject\n" in options
    # The site-wide mynetworks stays loopback: the Docker network is never trusted.
    assert "\nmynetworks = 127.0.0.0/8 [::1]/128\n" in files["config/postfix/main.cf"]


def test_rspamd_signs_the_reports_and_allows_the_reporter_its_one_address(tmp_path: Path) -> None:
    files = rendered(parse_site(site_text(ENABLED)), tmp_path)
    assert f'sign_networks = ["{REPORTER_ADDRESS}/32"];' in files["config/rspamd/local.d/dkim_signing.conf"]
    assert f'"::1", "{REPORTER_ADDRESS}/32"];' in files["config/rspamd/local.d/local_addrs.inc"]
    lua = files["config/rspamd/local.d/rspamd.lua"]
    assert (
        f'local reporter = {{ ip = "{REPORTER_ADDRESS}", address = "noreply-dmarc@reports.example" }}' in lua
    )


def test_the_loop_runs_at_send_at_and_is_valid_shell(tmp_path: Path) -> None:
    files = rendered(parse_site(site_text(ENABLED + "    send_at: '23:45'\n")), tmp_path)
    script = files["config/rspamd/dmarc-reports/dmarc-reports.sh"]
    assert 'send_at="23:45"' in script
    (tmp_path / "loop.sh").write_text(script)
    checked = subprocess.run(
        ["sh", "-n", str(tmp_path / "loop.sh")], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_a_failed_run_is_tried_again_hourly_then_the_next_day_is_planned(tmp_path: Path) -> None:
    """The loop with stand-ins: rspamadm fails twice, then sends; sleep records its argument
    and ends the loop at the next day's wait."""
    later = (datetime.now(UTC) + timedelta(hours=12)).strftime("%H:%M")  # the wait is about 12 h
    files = rendered(parse_site(site_text(ENABLED + f"    send_at: '{later}'\n")), tmp_path)
    script = files["config/rspamd/dmarc-reports/dmarc-reports.sh"]
    script = script.replace(DMARC_REPORTS_NEXT, str(tmp_path / "next"))
    (tmp_path / "loop.sh").write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "rspamadm").write_text(
        f'#!/bin/sh\necho rspamadm >>{calls}\n[ "$(grep -c rspamadm {calls})" -ge 3 ]\n'
    )
    (bin_dir / "sleep").write_text(
        f'#!/bin/sh\necho "sleep $1" >>{calls}\n[ "$(grep -c sleep {calls})" -lt 4 ] || exit 99\n'
    )
    for stand_in in bin_dir.iterdir():
        stand_in.chmod(0o755)
    run = subprocess.run(
        ["sh", str(tmp_path / "loop.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )
    assert run.returncode == 99, run.stderr
    lines = calls.read_text().splitlines()
    assert [line.split()[0] for line in lines] == [
        "sleep",
        "rspamadm",
        "sleep",
        "rspamadm",
        "sleep",
        "rspamadm",
        "sleep",
    ]
    assert lines[2] == lines[4] == "sleep 3600", lines
    assert "trying again in an hour (1 of 6)" in run.stderr
    assert int(lines[6].split()[1]) > 11 * 3600  # the next run at send_at, not another retry


@pytest.mark.parametrize("subnet", ["10.251.7.0/27", "192.168.50.0/28", "172.20.0.0/16"])
def test_fixed_addresses_are_distinct_and_outside_dockers_range(subnet: str) -> None:
    addresses = [ipaddress.IPv4Address(fixed_address(subnet, name)) for name in FIXED_ADDRESSES]
    assert len(set(addresses)) == len(FIXED_ADDRESSES)
    network, dynamic = ipaddress.IPv4Network(subnet), ipaddress.IPv4Network(dynamic_range(subnet))
    for address in addresses:
        assert address in network
        assert address not in dynamic
        assert address != network.broadcast_address
