"""The resolver service, and what `offline` switches off: site fields and rendered files."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from mailstack import engine, hostnet
from mailstack.render import plan_files
from mailstack.site.loader import parse_site
from mailstack.site.models import Site
from mailstack.site.resolver import (
    default_internal_subnet,
    dynamic_range,
    free_internal_subnet,
    parse_trust_anchor,
    resolver_address,
    subnet_clash,
)
from tests.conftest import fake_state

BASE = """
site: world-a
hostname: mail.a.test
admin_email: admin@a.test
network:
  bind: 127.0.0.1
  ports: {smtp: 2525, submission: 2587}
domains:
  - name: a.test
"""
DIGEST = "38f75ba604aaadb46fa0ed40bf5743b0e9215c6774bf716a44a19927d76ed187"
ANCHOR = f"test. DS 16635 13 2 {DIGEST}"


def site(extra: str = "") -> Site:
    return parse_site(BASE + extra)


def rendered(s: Site) -> dict[str, str]:
    base = Path("/srv/sites")
    files = plan_files(s, fake_state(s.domain_names), base / ".mailstack" / s.site, base / "build" / s.site)
    return {f.path: f.content.decode() for f in files}


def compose(files: dict[str, str]) -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load(files["compose.yaml"])
    return loaded


def test_the_default_subnet_is_a_private_27_that_follows_the_site_id() -> None:
    subnet = ipaddress.IPv4Network(default_internal_subnet("world-a"))
    assert subnet.prefixlen == 27
    assert subnet.subnet_of(ipaddress.IPv4Network("10.251.0.0/16"))
    assert default_internal_subnet("world-a") == str(subnet)  # stable
    assert default_internal_subnet("world-b") != str(subnet)
    # The resolver sits above the range Docker hands out, so no container can take its address.
    address = ipaddress.IPv4Address(resolver_address(str(subnet)))
    assert address in subnet
    assert address not in ipaddress.IPv4Network(dynamic_range(str(subnet)))


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        (f"test. DS 16635 13 2 {DIGEST.upper()}", ANCHOR),
        (f"test.\t3600\tIN\tDS\t16635 13 2 {DIGEST}", ANCHOR),
        ("corp.example DNSKEY 257 3 13 AQID", "corp.example. DNSKEY 257 3 13 AQID"),
    ],
)
def test_trust_anchors_are_read_as_dig_prints_them(written: str, normalised: str) -> None:
    assert parse_trust_anchor(written) == normalised


def test_offline_runs_neither_resolver_nor_mta_sts_and_keeps_tls_opportunistic() -> None:
    offline = site("offline: true\n")
    files = rendered(offline)
    project = compose(files)
    services = project["services"]
    assert isinstance(services, dict)
    assert {"resolver", "mta-sts"}.isdisjoint(services)
    assert "resolver" not in engine.expected_services(offline)
    assert all("dns" not in entry for entry in services.values())
    assert "ipam" not in str(project["networks"])
    main_cf = files["config/postfix/main.cf"]
    assert "\nsmtp_tls_security_level = may\n" in main_cf
    assert "smtp_tls_policy_maps" not in main_cf
    assert "\npostscreen_dnsbl_sites =\n" in main_cf
    assert "enabled = false;" in files["config/rspamd/local.d/spf.conf"]
    assert "enabled = false;" in files["config/rspamd/local.d/dmarc.conf"]
    assert "nameserver" not in files["config/rspamd/local.d/options.inc"]
    assert "server:" not in files["config/resolver/unbound.conf"]


def test_online_everything_that_looks_names_up_asks_the_resolver() -> None:
    online = site()
    files = rendered(online)
    project = compose(files)
    services = project["services"]
    assert isinstance(services, dict)
    address = online.resolver_address
    assert address == resolver_address(default_internal_subnet("world-a"))
    assert services["resolver"]["networks"]["back"] == {"ipv4_address": address}
    assert services["resolver"]["cap_add"] == []
    for name in ("postfix", "rspamd", "mta-sts", "dane-policy"):
        assert services[name]["dns"] == [address], name
    assert "dns" not in services["dovecot"]
    back = project["networks"]["back"]
    assert back["internal"] is True
    assert back["ipam"]["config"] == [
        {"subnet": online.internal_subnet, "ip_range": dynamic_range(online.internal_subnet)}
    ]
    assert f'nameserver = ["{address}:53"];' in files["config/rspamd/local.d/options.inc"]
    main_cf = files["config/postfix/main.cf"]
    assert "\nsmtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane\n" in main_cf
    maps = "socketmap:inet:dane-policy:8462:dane, socketmap:inet:mta-sts:8461:postfix"
    assert f"\nsmtp_tls_policy_maps = {maps}\n" in main_cf  # DANE first (RFC 8461 §2)
    assert "\nsmtp_tls_CApath = /etc/ssl/certs\n" in main_cf
    assert "smtp_tls_CAfile" not in main_cf  # no tls.outbound_ca_bundle
    dmarc = files["config/rspamd/local.d/dmarc.conf"]
    assert 'quarantine = "add header";' in dmarc
    assert 'reject = "reject";' in dmarc
    assert "enabled = false" not in files["config/rspamd/local.d/spf.conf"]
    assert "RDNS_CHECK" not in files["config/rspamd/local.d/groups.conf"]
    unbound = files["config/resolver/unbound.conf"]
    assert f"\n    interface: {address}\n" in unbound
    assert f"\n    access-control: {online.internal_subnet} allow\n" in unbound
    assert "forward-zone" not in unbound  # recursive from the root
    assert "/etc/mta-sts" in str(services["mta-sts"]["volumes"])


def test_forwarders_and_private_anchors_reach_unbound() -> None:
    forwarded = parse_site(
        BASE.replace("  bind: 127.0.0.1\n", "  bind: 127.0.0.1\n  internal_subnet: 10.99.1.0/28\n")
        + "dns:\n  resolver:\n    mode: forward\n    forward: [10.77.0.53, '2001:db8::53']\n"
        + f"    trust_anchors: ['{ANCHOR}']\n"
    )
    unbound = rendered(forwarded)["config/resolver/unbound.conf"]
    assert (
        '\nforward-zone:\n    name: "."\n    forward-addr: 10.77.0.53\n    forward-addr: 2001:db8::53\n'
        in unbound
    )
    assert f'\n    trust-anchor: "{ANCHOR}"\n' in unbound
    # test. is one of the names Unbound answers itself (RFC 6761) unless told otherwise.
    assert '\n    local-zone: "test." nodefault\n' in unbound
    assert forwarded.resolver_address == "10.99.1.14"
    assert "\n    interface: 10.99.1.14\n" in unbound


def test_abuse_dnsbl_empty_asks_no_list_even_online() -> None:
    files = rendered(site("abuse:\n  dnsbl: []\n"))
    assert "\npostscreen_dnsbl_sites =\n" in files["config/postfix/main.cf"]


def test_a_clashing_internal_subnet_is_named_with_a_free_one_to_use() -> None:
    taken = {"office-vpn": ["10.251.0.0/17", "fd00::/64"], "bridge": ["172.17.0.0/16"]}
    assert subnet_clash("10.251.3.0/27", taken) == ("office-vpn", "10.251.0.0/17")
    assert subnet_clash("10.99.0.0/27", taken) is None
    free = free_internal_subnet("world-a", taken)
    assert subnet_clash(free, taken) is None
    assert ipaddress.IPv4Network(free).subnet_of(ipaddress.IPv4Network("10.251.128.0/17"))


def test_host_routes_count_as_taken_but_docker_bridges_and_the_default_do_not() -> None:
    table = (
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "tun0\t0000FB0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        "br-1a2b\t0000FC0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    )
    routes = hostnet.host_routes(table)
    assert routes == {"route via tun0": ["10.251.0.0/16"]}
    assert subnet_clash("10.251.3.0/27", routes) == ("route via tun0", "10.251.0.0/16")
