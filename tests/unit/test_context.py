"""The derived values the templates substitute: every string built in render/<service>.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack import services
from mailstack.render import plan_files
from mailstack.render.compose import Secret, bind_host, compose_secrets, published_ports
from mailstack.render.context import build_context
from mailstack.render.dovecot import DOVECOT_LMTP_USER_CONCURRENCY, dovecot_user_lines
from mailstack.render.postfix import (
    POSTFIX_LMTP_CONCURRENCY,
    local_alias_lines,
    mydestination,
    sender_login_lines,
    sender_owners,
    virtual_alias_lines,
)
from mailstack.render.rspamd import (
    RSPAMD_ONLINE_MODULES,
    dkim_domains,
    dkim_selectors,
    rspamd_disabled,
    send_limits,
)
from mailstack.render.tls import TlsPair, chain_files, tls_pairs, tls_policy
from mailstack.services import RSPAMD_SECRETS, STATE_MOUNT
from mailstack.site.loader import parse_site
from mailstack.site.models import Site
from tests.conftest import fake_state

HASH = (
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$NruCNtu7jz3/ZyPM4x9T3A$"
    "yvjc8CAHgrwcLKL1ObYhcb7p8BMq7v2kQhqSBZoocL8"
)

BASE = f"""
site: ctx
hostname: mail.ctx.example
admin_email: admin@ctx.example
network:
  bind: [127.0.0.1, "::1"]
  ports:
    smtp: 2525
    imaps: 2993
limits:
  message_size: 512K
domains:
  - name: ctx.example
  - name: shop.example
    catch_all: admin@ctx.example
mailboxes:
  - address: admin@ctx.example
    password_hash: "{HASH}"
    quota: 1G
    send_as: [team@ctx.example, sales@shop.example]
  - address: user@ctx.example
    password_hash: "{HASH}"
    send_as: [team@ctx.example]
  - address: carol@shop.example
    password_hash: "{HASH}"
    quota: 1M
aliases:
  - address: team@ctx.example
    to: [admin@ctx.example, user@ctx.example]
  - address: sales@shop.example
    to: [carol@shop.example]
  - address: abuse@ctx.example
    to: [user@ctx.example]
"""


def site(text: str = BASE, **replace: str) -> Site:
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_site(text)


def test_published_ports_bracket_ipv6_and_follow_every_bind_address() -> None:
    assert bind_host("::1") == "[::1]"
    assert bind_host("127.0.0.1") == "127.0.0.1"
    assert published_ports(site()) == {
        "postfix": ["127.0.0.1:2525:25", "[::1]:2525:25"],
        "dovecot": ["127.0.0.1:2993:993", "[::1]:2993:993"],
    }


def test_virtual_aliases_add_role_accounts_and_protect_mailboxes_from_catch_alls() -> None:
    assert virtual_alias_lines(site()) == [
        "team@ctx.example\tadmin@ctx.example,user@ctx.example",
        "sales@shop.example\tcarol@shop.example",
        "abuse@ctx.example\tuser@ctx.example",
        # postmaster@ and abuse@ of every domain reach admin_email unless the site says otherwise
        "postmaster@ctx.example\tadmin@ctx.example",
        "postmaster@shop.example\tadmin@ctx.example",
        "abuse@shop.example\tadmin@ctx.example",
        # a mailbox in a catch-all domain maps to itself before @domain catches it
        "carol@shop.example\tcarol@shop.example",
        "@shop.example\tadmin@ctx.example",
    ]


def test_role_account_that_is_admin_email_itself_is_left_alone() -> None:
    s = site(**{"admin_email: admin@ctx.example": "admin_email: postmaster@ctx.example"})
    lines = virtual_alias_lines(s)
    assert not any(line.startswith("postmaster@ctx.example\t") for line in lines)
    assert "postmaster@shop.example\tpostmaster@ctx.example" in lines


def test_role_account_that_is_a_mailbox_is_not_aliased() -> None:
    mailbox = f'  - address: postmaster@ctx.example\n    password_hash: "{HASH}"\naliases:'
    s = site(**{"aliases:": mailbox})
    assert not any(line.startswith("postmaster@ctx.example\t") for line in virtual_alias_lines(s))


def test_local_aliases_send_the_hosts_own_names_to_admin_email() -> None:
    assert local_alias_lines(site()) == [
        "postmaster\tadmin@ctx.example",
        "abuse\tadmin@ctx.example",
        "root\tadmin@ctx.example",
        "mailer-daemon\tadmin@ctx.example",
    ]


def test_mydestination_never_overlaps_the_virtual_domains() -> None:
    assert mydestination(site()) == "$myhostname, localhost"
    same = site(**{"hostname: mail.ctx.example": "hostname: shop.example"})
    assert mydestination(same) == "localhost"


def test_sender_logins_list_every_owner_of_an_address() -> None:
    assert sender_login_lines(site()) == [
        "admin@ctx.example\tadmin@ctx.example",
        "carol@shop.example\tcarol@shop.example",
        "mailstack-probe@ctx.example\tmailstack-probe@ctx.example",
        "sales@shop.example\tadmin@ctx.example",
        "team@ctx.example\tadmin@ctx.example,user@ctx.example",
        "user@ctx.example\tuser@ctx.example",
    ]


def test_rspamds_from_rule_gets_the_same_owners_as_postfix(tmp_path: Path) -> None:
    """One source for who may use which From: the envelope (Postfix) and the header (Rspamd)."""
    s = site()
    owners = sender_owners(s)
    assert [f"{a}\t{','.join(logins)}" for a, logins in owners.items()] == sender_login_lines(s)
    assert owners["team@ctx.example"] == ["admin@ctx.example", "user@ctx.example"]
    files = {
        f.path: f.content.decode() for f in plan_files(s, fake_state(s.domain_names), tmp_path, tmp_path)
    }
    lua = files["config/rspamd/local.d/rspamd.lua"]
    assert '["team@ctx.example"] = { ["admin@ctx.example"] = true, ["user@ctx.example"] = true, },' in lua
    assert '["shop.example"] = true,' in lua


def test_dovecot_users_carry_the_quota_in_bytes_with_the_userdb_prefix() -> None:
    assert dovecot_user_lines(site(), "{ARGON2ID}probe", {}) == [
        f"admin@ctx.example:{HASH}::::::userdb_quota_storage_size=1073741824",
        f"user@ctx.example:{HASH}::::::",
        f"carol@shop.example:{HASH}::::::userdb_quota_storage_size=1048576",
        "mailstack-probe@ctx.example:{ARGON2ID}probe::::::userdb_quota_storage_size=10M",
    ]


def test_dkim_keys_are_read_from_rspamds_secret_copy_and_grouped_per_domain() -> None:
    selectors = dkim_selectors(fake_state(("ctx.example", "shop.example")))
    assert selectors[0].key_path == f"{RSPAMD_SECRETS}/dkim/ctx.example/s20260101r.pem"
    assert selectors[0].dns_name == "s20260101r._domainkey.ctx.example"
    assert selectors[1].dns_value == "v=DKIM1; k=ed25519; p=ED25519PUBLICKEYFORCTX.EXAMPLE"
    domains = dkim_domains(list(reversed(selectors)))
    assert [d.domain for d in domains] == ["shop.example", "ctx.example"]
    for d in domains:
        assert [s.algorithm for s in d.selectors] == ["rsa", "ed25519"]
        assert d.arc is not None
        assert d.arc.algorithm == "rsa"


def test_tls_pairs_offer_ecdsa_first_then_rsa() -> None:
    pairs = tls_pairs(site(), fake_state(("ctx.example",)))
    assert pairs == [
        TlsPair(key=f"{STATE_MOUNT}/tls/HOST/ecdsa.key", cert=f"{STATE_MOUNT}/tls/HOST/ecdsa.crt"),
        TlsPair(key=f"{STATE_MOUNT}/tls/HOST/rsa.key", cert=f"{STATE_MOUNT}/tls/HOST/rsa.crt"),
    ]
    assert chain_files(pairs, fake_state(("ctx.example",))) == (
        f"{STATE_MOUNT}/tls/HOST/ecdsa.key, {STATE_MOUNT}/tls/HOST/ecdsa.crt, "
        f"{STATE_MOUNT}/tls/HOST/rsa.key, {STATE_MOUNT}/tls/HOST/rsa.crt"
    )


def test_tls_files_mode_mounts_the_operators_files_where_the_configs_look() -> None:
    files = site(
        **{
            "limits:": (
                "tls:\n  mode: files\n  cert_file: /etc/ssl/mail/fullchain.pem\n"
                "  key_file: /etc/ssl/mail/privkey.pem\nlimits:"
            )
        }
    )
    pairs = tls_pairs(files, fake_state(("ctx.example",)))
    assert pairs == [TlsPair(key="/run/mailstack/tls/key.pem", cert="/run/mailstack/tls/cert.pem")]
    chain = chain_files(pairs, fake_state(("ctx.example",)))
    assert chain == "/run/mailstack/tls/key.pem, /run/mailstack/tls/cert.pem"
    tls = [
        Secret("tls_cert", "/etc/ssl/mail/fullchain.pem", "/run/mailstack/tls/cert.pem"),
        Secret("tls_key", "/etc/ssl/mail/privkey.pem", "/run/mailstack/tls/key.pem"),
    ]
    secrets = compose_secrets(files, fake_state(("ctx.example",)), "../state")
    assert secrets["postfix"] == tls
    assert [s for s in secrets["dovecot"] if not s.name.startswith("mailcrypt_")] == tls


@pytest.mark.parametrize("offline", [True, False])
def test_one_switch_turns_the_internet_modules_off(offline: bool) -> None:
    assert rspamd_disabled(offline=offline) == dict.fromkeys(RSPAMD_ONLINE_MODULES, offline)
    assert {"rbl", "fuzzy_check", "phishing", "url_redirector", "asn", "neural"} <= set(RSPAMD_ONLINE_MODULES)


def test_context_ties_it_together(tmp_path: Path) -> None:
    s = site()
    context = build_context(s, fake_state(s.domain_names), tmp_path / "state", tmp_path / "build")
    assert {x.name for x in context.secret_files} >= {"tls_ecdsa_key", "redis"}
    redis = next(x for x in context.services if x.name == "redis")
    assert (redis.cap_add, redis.mem_limit, redis.pids_limit) == (services.service("redis").caps, "256m", 64)
    assert context.offline is False  # a site is online unless it says offline
    assert context.ports == {
        "lmtp": 24,
        "sasl": 12345,
        "quota_status": 12340,
        "milter": 11332,
        "normal": 11333,
        "controller": 11334,
        "redis": 6379,
        "guard": 8425,
        "mta_sts": 8461,
        "dane_policy": 8462,
        "postgres": 5432,
        "memcached": 11211,
        "sogo": 20000,
    }
    assert context.message_size == 512 * 1024
    assert context.virtual_domains == ["ctx.example\tOK", "shop.example\tOK"]
    assert context.virtual_mailboxes == [
        "admin@ctx.example\tOK",
        "user@ctx.example\tOK",
        "carol@shop.example\tOK",
        "mailstack-probe@ctx.example\tOK",  # the probe mailbox of `mailstack check`
    ]
    # Postfix delivers to one mailbox less often at once than Dovecot allows (no 451s).
    assert context.lmtp_concurrency < context.lmtp_user_concurrency
    assert POSTFIX_LMTP_CONCURRENCY < DOVECOT_LMTP_USER_CONCURRENCY
    assert set(context.as_template_vars()) == set(context.__dataclass_fields__)


def test_each_service_gets_only_its_own_files_of_the_state_where_its_config_looks() -> None:
    secrets = compose_secrets(site(), fake_state(("ctx.example",)), "../state")
    tls = [
        Secret(f"tls_{role}", f"../state/tls/HOST/{name}", f"{STATE_MOUNT}/tls/HOST/{name}")
        for role, name in (
            ("ecdsa_cert", "ecdsa.crt"),
            ("ecdsa_key", "ecdsa.key"),
            ("rsa_cert", "rsa.crt"),
            ("rsa_key", "rsa.key"),
        )
    ]
    # Never the CA's key or certificate; dovecot also the mail_crypt site key pair.
    assert secrets["postfix"] == secrets["web"] == tls
    assert [s.name for s in secrets["dovecot"]] == [s.name for s in tls] + [
        "mailcrypt_site_key",
        "mailcrypt_site_pub",
    ]
    redis = Secret("redis", "../state/secrets/redis", f"{STATE_MOUNT}/secrets/redis")
    assert secrets["redis"] == [redis]
    assert secrets["rspamd"] == [
        Secret(
            "dkim_ctx.example_s20260101r",
            "../state/dkim/ctx.example/s20260101r.pem",
            f"{STATE_MOUNT}/dkim/ctx.example/s20260101r.pem",
        ),
        Secret(
            "dkim_ctx.example_s20260101e",
            "../state/dkim/ctx.example/s20260101e.pem",
            f"{STATE_MOUNT}/dkim/ctx.example/s20260101e.pem",
        ),
        redis,
    ]


def test_tls_profile_sets_the_client_ports_minimum_and_keeps_the_cipher_policy() -> None:
    intermediate = tls_policy(site())
    assert intermediate.profile == "intermediate"
    assert (intermediate.client_min_version, intermediate.postfix_mandatory_protocols) == (
        "TLSv1.2",
        ">=TLSv1.2",
    )
    modern = tls_policy(site(**{"limits:": "tls:\n  profile: modern\nlimits:"}))
    assert (modern.client_min_version, modern.postfix_mandatory_protocols) == ("TLSv1.3", ">=TLSv1.3")
    for policy in (intermediate, modern):
        ciphers = policy.ciphers.split(":")
        assert all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers)
        assert "SHA1" not in policy.signature_algorithms
        assert "SHA224" not in policy.signature_algorithms
        assert policy.postfix_groups == "X25519 prime256v1 secp384r1"
        assert policy.dovecot_groups == "X25519:prime256v1:secp384r1"


def test_send_limits_default_to_the_site_rate_and_give_mailboxes_their_own_buckets() -> None:
    assert [(r.name, r.selector, r.burst, r.rate) for r in send_limits(site())] == [
        ("mailstack_send", '"user.lower"', 100, "100 / 1h")
    ]
    own = site(
        **{
            "    quota: 1M\n": "    quota: 1M\n    send_rate: 5/10m\n",
            "    send_as: [team@ctx.example]\n": "    send_as: [team@ctx.example]\n    send_rate: 5/10m\n",
            "limits:\n": "limits:\n  send_rate: 1000/1d\n",
        }
    )
    rules = send_limits(own)
    assert [(r.name, r.burst, r.rate) for r in rules] == [
        ("mailstack_send", 1000, "1000 / 1d"),
        ("mailstack_send_1", 5, "5 / 10m"),
    ]
    # The site's rule skips exactly the mailboxes with a rate of their own, so no login is
    # counted in two buckets.
    assert rules[0].selector == '"user.lower.not_in(\\"user@ctx.example\\", \\"carol@shop.example\\")"'
    assert rules[1].selector == '"user.lower.in(\\"user@ctx.example\\", \\"carol@shop.example\\")"'
    unlimited = site(**{"limits:\n": "limits:\n  send_rate: null\n"})
    assert send_limits(unlimited) == []


def test_dnsbl_sites_and_the_modern_profile_reach_the_rendered_configs(tmp_path: Path) -> None:
    plain = site()
    tuned = site(
        **{
            "limits:": (
                "tls:\n  profile: modern\nabuse:\n  dnsbl: [zen.spamhaus.org*3, bl.example.net=127.0.0.2*1]\n"
                "  dnsbl_threshold: 2\nlimits:"
            )
        }
    )

    def files(s: Site) -> dict[str, str]:
        planned = plan_files(s, fake_state(s.domain_names), tmp_path / "state", tmp_path / "build")
        return {f.path: f.content.decode() for f in planned}

    before, after = files(plain), files(tuned)
    assert (
        "\npostscreen_dnsbl_sites = zen.spamhaus.org=127.0.0.[2..11]*3, " in before["config/postfix/main.cf"]
    )
    main_cf = after["config/postfix/main.cf"]
    assert "\npostscreen_dnsbl_sites = zen.spamhaus.org*3, bl.example.net=127.0.0.2*1\n" in main_cf
    assert "\npostscreen_dnsbl_threshold = 2\n" in main_cf
    assert "\nsmtpd_tls_mandatory_protocols = >=TLSv1.3\n" in main_cf
    assert "\nsmtpd_tls_protocols = >=TLSv1.2\n" in main_cf  # port 25 keeps TLS 1.2
    assert "\nssl_min_protocol = TLSv1.3\n" in after["config/dovecot/dovecot.conf"]
    assert "\nssl_min_protocol = TLSv1.2\n" in before["config/dovecot/dovecot.conf"]
