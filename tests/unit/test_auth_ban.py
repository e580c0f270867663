"""abuse.auth_ban: the model, what it renders (guard, fence, dovecot), and the guard's counting."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from types import ModuleType

import pytest
from ruamel.yaml import YAML

from mailstack import engine, services
from mailstack.errors import SiteValidationError
from mailstack.render import plan_files
from mailstack.render.guard import auth_ban_settings, fence_rules, fence_table
from mailstack.site.fields import parse_duration, parse_network
from mailstack.site.loader import parse_site
from mailstack.site.models import Site
from tests.conftest import fake_state, image_program

HASH = (
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$NruCNtu7jz3/ZyPM4x9T3A$"
    "yvjc8CAHgrwcLKL1ObYhcb7p8BMq7v2kQhqSBZoocL8"
)


def site_text(abuse: str = "", bind: str = "127.0.0.1") -> str:
    return f"""
site: ban-test
hostname: mail.ban.example
admin_email: admin@ban.example
network:
  bind: {bind}
  ports:
    smtp: 2525
    submission: 2587
    imaps: 2993
domains:
  - name: ban.example
mailboxes:
  - address: admin@ban.example
    password_hash: "{HASH}"
{abuse}"""


def site(abuse: str = "", bind: str = "127.0.0.1") -> Site:
    return parse_site(site_text(abuse, bind))


def rendered(s: Site) -> dict[str, str]:
    base = Path("/srv/sites")
    files = plan_files(s, fake_state(s.domain_names), base / ".mailstack" / s.site, base / "build" / s.site)
    return {f.path: f.content.decode() for f in files}


# --- model --------------------------------------------------------------------------------------


def test_bans_are_on_by_default_with_sensible_values() -> None:
    ban = site().abuse.auth_ban
    assert (ban.enabled, ban.firewall) == (True, True)
    assert (ban.failures, ban.window, ban.ban, ban.exempt) == (10, 600, 3600, ())


def test_durations_and_networks_are_normalised() -> None:
    parsed = site(
        "abuse:\n  auth_ban:\n    window: 10m\n    ban: 2d\n    exempt: [192.0.2.7, 2001:db8::/32]\n"
    )
    ban = parsed.abuse.auth_ban
    assert (ban.window, ban.ban) == (600, 2 * 86400)
    assert ban.exempt == ("192.0.2.7/32", "2001:db8::/32")
    assert parse_duration(90) == 90
    assert parse_duration(" 15 S ") == 15


@pytest.mark.parametrize("bad", ["10x", "-5s", "0", "1.5h", True, "", "m"])
def test_bad_durations_say_what_is_expected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(bad)


def test_a_network_with_host_bits_suggests_the_network() -> None:
    with pytest.raises(ValueError, match=r"host bits set; did you mean 10\.0\.0\.0/8\?"):
        parse_network("10.0.0.1/8")
    with pytest.raises(ValueError, match=r"not an IPv4 or IPv6 address or network"):
        parse_network("office")


@pytest.mark.parametrize(
    ("abuse", "fragments"),
    [
        ("    failures: 0\n", ["abuse.auth_ban.failures (line 18)", "greater than or equal to 1"]),
        ("    window: 2d\n", ["abuse.auth_ban.window (line 18)", "less than or equal to 86400"]),
        ("    ban: soon\n", ["abuse.auth_ban.ban (line 18)", "expected a duration such as 90s"]),
        ("    exempt: [10.1.2.3/16]\n", ["abuse.auth_ban.exempt[0] (line 18)", "did you mean 10.1.0.0/16?"]),
        ("    bantime: 1h\n", ["abuse.auth_ban.bantime (line 18)"]),
        (
            "    exempt: [192.0.2.0/24, 0.0.0.0/0]\n",
            ["abuse.auth_ban.exempt[1] (line 18)", "covers every address", "enabled: false"],
        ),
    ],
)
def test_invalid_settings_name_the_field_and_line(abuse: str, fragments: list[str]) -> None:
    with pytest.raises(SiteValidationError) as caught:
        parse_site(site_text("abuse:\n  auth_ban:\n" + abuse))
    text = "\n".join(caught.value.problems)
    for fragment in fragments:
        assert fragment in text, text


def test_the_schema_describes_the_setting() -> None:
    schema = json.dumps(Site.model_json_schema(mode="validation"))
    for name in ("AuthBan", "failures", "window", "exempt", "firewall"):
        assert name in schema


# --- rendering ----------------------------------------------------------------------------------


def test_fence_rules_match_the_published_ports_and_bind_addresses() -> None:
    assert fence_rules(site(bind="[127.0.0.1, 192.0.2.1, '2001:db8::1']")) == [
        "ip saddr @banned4 ct original ip daddr { 127.0.0.1, 192.0.2.1 } meta l4proto tcp "
        "ct original proto-dst { 2525, 2587, 2993 } reject with tcp reset",
        "ip6 saddr @banned6 ct original ip6 daddr { 2001:db8::1 } meta l4proto tcp "
        "ct original proto-dst { 2525, 2587, 2993 } reject with tcp reset",
    ]
    # All addresses of a family: no address to match, and no rule for a family not bound.
    assert fence_rules(site(bind="0.0.0.0")) == [
        "ip saddr @banned4 meta l4proto tcp ct original proto-dst { 2525, 2587, 2993 } reject with tcp reset"
    ]
    assert fence_table(site()) == "mailstack_ban_test"
    # Only mail ports: a banned address still reaches the web service (MTA-STS, autoconfig).
    web = parse_site(site_text().replace("    imaps: 2993\n", "    imaps: 2993\n    https: 2443\n"))
    assert web.network.ports.published()["https"] == 2443
    assert "2443" not in " ".join(fence_rules(web))


def test_enabled_bans_render_guard_fence_and_the_dovecot_policy() -> None:
    files = rendered(site("abuse:\n  auth_ban:\n    failures: 4\n    window: 5m\n    ban: 20s\n"))
    compose = YAML(typ="safe").load(files["compose.yaml"])
    guard, fence = compose["services"]["guard"], compose["services"]["fence"]
    assert guard["networks"] == {"back": {"aliases": ["guard-policy"]}, "front": {}}
    assert "ports" not in guard
    assert guard["cap_drop"] == ["ALL"]
    assert guard["cap_add"] == list(services.service("guard").caps) == []
    assert (guard["read_only"], fence["read_only"]) == (True, True)
    assert fence["network_mode"] == "host"
    assert fence["cap_add"] == ["NET_ADMIN"]
    assert fence["user"] == "0:0"
    assert "guard:/var/lib/mailstack-guard:ro" in fence["volumes"]
    assert "no-new-privileges:true" in fence["security_opt"]
    assert compose["services"]["dovecot"]["depends_on"] == ["guard"]
    assert "guard" in compose["volumes"]
    dovecot = files["config/dovecot/dovecot.conf"]
    assert "auth_policy_server_url = http://guard-policy:8425/\n" in dovecot
    assert "auth_policy_check_before_auth = yes\n" in dovecot
    assert "auth_policy_report_after_auth = yes\n" in dovecot
    toml = files["config/guard/guard.toml"]
    settings = [line for line in toml.splitlines() if line and not line.startswith("#")]
    assert settings[:3] == ["failures = 4", "window = 300", "ban = 20"]
    assert "table inet mailstack_ban_test {" in files["config/guard/fence.nft"]
    assert "hook forward priority filter - 1" in files["config/guard/fence.nft"]


def test_firewall_false_keeps_the_guard_and_drops_the_fence() -> None:
    files = rendered(site("abuse:\n  auth_ban:\n    firewall: false\n"))
    services = YAML(typ="safe").load(files["compose.yaml"])["services"]
    assert "guard" in services
    assert "fence" not in services
    assert engine.expected_services(site("abuse:\n  auth_ban:\n    firewall: false\n")) == {
        "postfix",
        "dovecot",
        "rspamd",
        "redis",
        "guard",
        "resolver",
        "dane-policy",
        "mta-sts",
    }


def test_disabled_bans_render_neither_service_nor_the_policy() -> None:
    disabled = site("abuse:\n  auth_ban:\n    enabled: false\n")
    files = rendered(disabled)
    compose = YAML(typ="safe").load(files["compose.yaml"])
    assert {"guard", "fence"}.isdisjoint(compose["services"])
    assert "depends_on" not in compose["services"]["dovecot"]
    assert "auth_policy" not in files["config/dovecot/dovecot.conf"]
    assert engine.expected_services(disabled) == {
        "postfix",
        "dovecot",
        "rspamd",
        "redis",
        "resolver",
        "dane-policy",
        "mta-sts",
    }
    assert auth_ban_settings(disabled).firewall is False


# --- the guard program (compose/images/guard/guard.py) ------------------------------------------


@pytest.fixture(scope="module")
def g() -> ModuleType:
    return image_program("guard", "guard.py")


def make_guard(g: ModuleType, failures: int = 3, window: float = 60, ban: float = 30) -> object:
    exempt = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "172.18.0.1/32"))
    return g.Guard(failures, window, ban, exempt)


def test_distinct_failures_within_the_window_ban(g: ModuleType) -> None:
    guard = make_guard(g)
    a = ipaddress.ip_address("192.0.2.10")
    assert not guard.record_failure(a, "alice\0aaa", 100.0)  # type: ignore[attr-defined]
    assert not guard.record_failure(a, "alice\0aaa", 101.0)  # type: ignore[attr-defined]  # same guess
    assert not guard.record_failure(a, "alice\0bbb", 102.0)  # type: ignore[attr-defined]
    assert guard.record_failure(a, "bob\0aaa", 103.0)  # type: ignore[attr-defined]
    assert guard.banned_until(a, 110.0) == 133.0  # type: ignore[attr-defined]
    assert guard.banned_until(a, 133.5) is None  # type: ignore[attr-defined]


def test_failures_older_than_the_window_do_not_count(g: ModuleType) -> None:
    guard = make_guard(g)
    a = ipaddress.ip_address("2001:db8::5")
    for i, t in enumerate((0.0, 30.0, 61.0, 90.0)):
        assert not guard.record_failure(a, f"x\0{i}", t)  # type: ignore[attr-defined]
    assert guard.record_failure(a, "x\0late", 100.0)  # type: ignore[attr-defined]  # 61, 90, 100


def test_exempt_addresses_and_other_addresses_are_never_banned(g: ModuleType) -> None:
    guard = make_guard(g, failures=1)
    for exempt in ("127.0.0.1", "::1", "172.18.0.1"):
        assert not guard.record_failure(ipaddress.ip_address(exempt), "u\0p", 1.0)  # type: ignore[attr-defined]
    assert guard.record_failure(ipaddress.ip_address("192.0.2.1"), "u\0p", 1.0)  # type: ignore[attr-defined]
    assert guard.banned_until(ipaddress.ip_address("192.0.2.2"), 2.0) is None  # type: ignore[attr-defined]


def test_request_addresses_are_parsed_strictly(g: ModuleType) -> None:
    assert str(g.parse_address("::ffff:192.0.2.9")) == "192.0.2.9"
    for bad in (None, "", "192.0.2.1; flush ruleset", "example.test", 7):
        assert g.parse_address(bad) is None


def test_bans_survive_a_restart_and_expired_ones_are_dropped(g: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "bans.json"
    a, b = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("2001:db8::1")
    g.save_bans(path, {a: 1000.0, b: 50.0})
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert g.load_bans(path, 100.0) == {a: 1000.0}
    path.write_text('{"bans": {"192.0.2.1; drop": 1e12, "192.0.2.3": "x"}}')
    assert g.load_bans(path, 100.0) == {}
    path.write_text("not json")
    assert g.load_bans(path, 100.0) == {}


def test_the_fence_replaces_both_sets_in_one_transaction(g: ModuleType) -> None:
    bans = {
        ipaddress.ip_address("192.0.2.1"): 110.0,
        ipaddress.ip_address("2001:db8::1"): 100.5,
        ipaddress.ip_address("192.0.2.2"): 90.0,  # expired: left out
    }
    assert g.sync_script("mailstack_x", bans, 100.0) == (
        "flush set inet mailstack_x banned4\n"
        "add element inet mailstack_x banned4 { 192.0.2.1 timeout 10000ms }\n"
        "flush set inet mailstack_x banned6\n"
        "add element inet mailstack_x banned6 { 2001:db8::1 timeout 500ms }\n"
    )
    assert g.sync_script("t", {}, 0.0) == "flush set inet t banned4\nflush set inet t banned6\n"


def test_the_rendered_guard_config_loads(g: ModuleType, tmp_path: Path) -> None:
    files = rendered(site("abuse:\n  auth_ban:\n    exempt: [198.51.100.0/24]\n"))
    path = tmp_path / "guard.toml"
    path.write_text(files["config/guard/guard.toml"])
    config = g.Config.load(path)
    assert (config.failures, config.window, config.ban, config.port) == (10, 600.0, 3600.0, 8425)
    assert [str(n) for n in config.exempt] == ["127.0.0.0/8", "::1/128", "198.51.100.0/24"]
    assert config.table == "mailstack_ban_test"
    assert str(config.ruleset) == "/etc/mailstack-guard/fence.nft"
