"""IPv6: the front network's subnet, what the compose project and the daemons get, and the
AAAA records `mailstack dns` prints."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from mailstack.dns import build_records, notes
from mailstack.errors import SiteValidationError
from mailstack.site.front import default_front_subnet6, front_gateway6
from mailstack.site.loader import parse_site
from tests.conftest import fake_state
from tests.unit.test_resolver import compose, rendered

BASE = """
site: v6-site
hostname: mail.v6.example
admin_email: admin@v6.example
offline: true
domains:
  - name: v6.example
"""


def test_the_default_front_subnet_is_a_ula_64_that_follows_the_site_id() -> None:
    subnet = ipaddress.IPv6Network(default_front_subnet6("v6-site"))
    assert subnet.prefixlen == 64
    assert subnet.subnet_of(ipaddress.IPv6Network("fd00::/8"))
    assert default_front_subnet6("v6-site") == str(subnet)
    assert default_front_subnet6("v6-other") != str(subnet)
    assert front_gateway6(str(subnet)) == str(subnet[1])


def test_listening_on_ipv6_gives_the_front_network_an_ipv6_subnet_and_every_daemon_its_address() -> None:
    site = parse_site(BASE)  # the default bind: 0.0.0.0 and ::
    subnet6 = default_front_subnet6("v6-site")
    files = rendered(site)
    project: dict[str, Any] = compose(files)
    front = project["networks"]["front"]
    assert front == {"enable_ipv6": True, "ipam": {"config": [{"subnet": subnet6}]}}
    services = project["services"]
    assert "[::]:25:25" in services["postfix"]["ports"]
    assert "[::]:993:993" in services["dovecot"]["ports"]
    assert "listen [::]:8443 ssl default_server;" in files["config/web/nginx.conf"]
    # Local clients relayed by docker-proxy over IPv6 come from the IPv6 gateway: never banned.
    assert f'"{front_gateway6(subnet6)}/128"' in files["config/guard/guard.toml"]
    assert "ip6 saddr @banned6" in files["config/guard/fence.nft"]


def test_an_ipv4_only_site_has_no_ipv6_anywhere() -> None:
    site = parse_site(BASE + "network:\n  bind: 0.0.0.0\n")
    assert site.front_subnet6 is None
    files = rendered(site)
    assert compose(files)["networks"]["front"] == {}
    assert "[::]" not in files["config/web/nginx.conf"] + files["compose.yaml"]


def test_a_chosen_ipv6_subnet_is_used_and_a_global_one_is_refused() -> None:
    site = parse_site(BASE + "network:\n  ipv6_subnet: fd12:3456:789a:1::/64\n")
    assert site.front_subnet6 == "fd12:3456:789a:1::/64"
    with pytest.raises(SiteValidationError, match=r"network\.ipv6_subnet"):
        parse_site(BASE + "network:\n  ipv6_subnet: 2001:db8::/64\n")


def test_dns_prints_the_aaaa_of_public_addresses_and_reminds_when_ipv6_has_none() -> None:
    with_v6 = parse_site(
        BASE
        + "hosts:\n  - name: mx1\n    address: mx1.provider.example\n"
        + "    public_addresses: ['192.0.2.25', '2001:db8:25::25']\n"
    )
    view = fake_state(with_v6.domain_names)
    records = {(r.name, r.type): r.value for r in build_records(with_v6, view)}
    assert records[("mail.v6.example", "A")] == "192.0.2.25"
    assert records[("mail.v6.example", "AAAA")] == "2001:db8:25::25"
    bound = parse_site(BASE + "network:\n  bind: ['10.0.0.7', '2a01:4f8:c0c:1::7']\n")
    records = {(r.name, r.type): r.value for r in build_records(bound, fake_state(bound.domain_names))}
    assert records[("mail.v6.example", "AAAA")] == "2a01:4f8:c0c:1::7"
    v4_only = parse_site(BASE + "hosts:\n  - name: mx1\n    address: 192.0.2.25\n")
    said = list(notes(v4_only, fake_state(v4_only.domain_names)))
    assert any("listens on IPv6 but no public IPv6 address is known" in n for n in said), said
