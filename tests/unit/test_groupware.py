"""groupware: SOGo, PostgreSQL and memcached from the description. Off, nothing of it is
rendered; on, SOGo gets a whole sogo.conf without a secret, and its users are the mailboxes'
own hashes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mailstack import services
from mailstack.check.groupware import leads_to_dav_root
from mailstack.errors import SiteValidationError
from mailstack.render import render_site
from mailstack.render.groupware import sogo_users, sql_literal
from mailstack.site.loader import parse_site
from mailstack.site.models import Site
from tests.unit.test_resolver import compose, rendered

GROUPWARE = ("sogo", "postgres", "memcached")
ANNA_HASH = (
    "{SHA512-CRYPT}$6$rounds=100000$peL/PZlg6qzna8cF$TCROjrSowU.7kVEPOGj0TolitQ518.u/"
    "nAnZTIMgNkbH0n1QEFwK8B/fp4JYqUa9CxH565VuJZFTVzZFFNqJj1"
)
BASE = f"""
site: gw
hostname: mail.gw.test
admin_email: anna@gw.test
offline: true
network:
  bind: 127.0.0.1
  ports: {{submission: 587, imaps: 993, https: 443}}
domains:
  - name: gw.test
mailboxes:
  - address: anna@gw.test
    name: Anna O'Neil
    password_hash: "{ANNA_HASH}"
  - address: bob@gw.test
    password_hash: "{{BLF-CRYPT}}$2y$10$onB99Yh9PY8mF/iii7k8LOB97GjgG98mlotFJzH.XQvFhQK.lzE4C"
"""


def site(extra: str = "", base: str = BASE) -> Site:
    return parse_site(base + extra)


def test_groupware_is_off_unless_set() -> None:
    s = site()
    assert s.groupware.enabled is False
    files = rendered(s)
    services_ = compose(files)["services"]
    assert isinstance(services_, dict)
    assert not set(GROUPWARE) & set(services_)
    assert not [p for p in files if p.startswith(("config/sogo/", "config/postgres/"))]
    assert "groupware" not in compose(files)["networks"]
    assert "SOGo" not in files["config/web/nginx.conf"]
    assert "sogo-static" not in files["compose.yaml"]
    assert set(services.images(s)).isdisjoint({"sogo", "postgres"})


def test_defaults_suit_a_small_office() -> None:
    g = site("groupware: {enabled: true}\n").groupware
    assert (g.enabled, g.activesync, g.workers) == (True, False, 3)


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        ("groupware: {enabled: true, workers: 0}\n", r"groupware\.workers", "greater than or equal to 1"),
        ("groupware: {enabled: true, workers: 33}\n", r"groupware\.workers", "less than or equal to 32"),
        ("groupware: {activesync: true}\n", r"groupware\.activesync", "groupware.enabled: true"),
        ("groupware: {enabled: true, webmail: true}\n", r"groupware\.webmail", "unknown field"),
    ],
)
def test_bad_groupware_is_refused_with_its_field_path(extra: str, path: str, message: str) -> None:
    with pytest.raises(SiteValidationError) as caught:
        site(extra)
    assert caught.match(path)
    assert message.lower() in str(caught.value).lower()


def test_groupware_needs_https_published() -> None:
    base = BASE.replace("ports: {submission: 587, imaps: 993, https: 443}", "ports: {imaps: 993}")
    with pytest.raises(SiteValidationError, match=r"groupware\.enabled.*network\.ports\.https"):
        site("groupware: {enabled: true}\n", base)


def test_groupware_brings_its_services_confined_and_internal() -> None:
    files = rendered(site("groupware: {enabled: true, workers: 4}\n"))
    c = compose(files)
    svc = c["services"]
    assert isinstance(svc, dict)
    for name in GROUPWARE:
        entry = svc[name]
        assert "ports" not in entry, name  # nothing published
        assert set(entry["networks"]) <= {"back", "groupware"}, name
        assert entry["mem_limit"], name
    assert svc["sogo"]["mem_limit"] == f"{128 + 160 * 4}m"
    # SOGo creates its tables at its start: only once postgres listens (it is healthy).
    assert svc["sogo"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert svc["sogo"]["depends_on"]["dovecot"] == {"condition": "service_started"}
    assert svc["memcached"]["user"] == "memcache"
    assert svc["memcached"]["cap_add"] == []
    assert set(svc["web"]["networks"]) == {"front", "groupware"}
    assert "sogo-static:/srv/sogo-static:ro" in svc["web"]["volumes"]
    assert c["networks"]["groupware"] == {"internal": True}
    assert {"postgres", "sogo-static", "sogo-spool"} <= set(c["volumes"])
    # The database password reaches sogo and postgres alone, as a compose secret.
    for name, entry in svc.items():
        sources = [x["source"] for x in entry.get("secrets", [])]
        assert ("postgres" in sources) == (name in ("sogo", "postgres")), name


def test_sogo_conf_is_whole_and_says_what_the_issue_asks() -> None:
    conf = rendered(site("groupware: {enabled: true, workers: 5}\n"))["config/sogo/sogo.conf"]
    for line in (
        "WOWorkersCount = 5;",
        "SOGoPasswordChangeEnabled = NO;",
        "SOGoIMAPAclConformsToIMAPExt = YES;",
        "SOGoSMTPAuthenticationType = PLAIN;",
        'SOGoSMTPServer = "smtp://postfix:587/?tls=YES&tlsVerifyMode=none";',
        'SOGoIMAPServer = "imap://dovecot:143/?tls=YES&tlsVerifyMode=none";',
        "SOGoTrustProxyAuthentication = NO;",
        'viewURL = "postgresql://sogo@postgres:5432/sogo/sogo_users";',
    ):
        assert line in conf, line
    # No master user, no password in any URL: the user's own password, libpq's password file.
    assert "SOGoSMTPMasterUser" not in conf
    assert "postgresql://sogo:" not in conf
    assert "SOGoMaximumPingInterval" not in conf  # ActiveSync off


def test_discovery_redirects_are_relative_so_they_keep_the_published_port() -> None:
    """web listens on 8443 in its container; an absolute Location would name that port."""
    nginx = rendered(site("groupware: {enabled: true}\n"))["config/web/nginx.conf"]
    assert "    absolute_redirect off;\n" in nginx
    assert "return 301 /SOGo/dav/;" in nginx


@pytest.mark.parametrize(
    ("location", "https", "leads"),
    [
        ("/SOGo/dav/", 443, True),
        ("/SOGo/dav", 443, True),
        ("https://mail.gw.test/SOGo/dav/", 443, True),
        ("https://mail.gw.test:6443/SOGo/dav/", 6443, True),
        ("https://mail.gw.test:8443/SOGo/dav/", 443, False),  # web's port in its container
        ("https://mail.gw.test/SOGo/dav/", 6443, False),
        ("https://elsewhere.test/SOGo/dav/", 443, False),
        ("/SOGo/", 443, False),
        ("", 443, False),
    ],
)
def test_the_check_follows_discovery_only_to_the_dav_root_on_the_published_port(
    location: str, https: int, leads: bool
) -> None:
    published = site("groupware: {enabled: true}\n", BASE.replace("https: 443", f"https: {https}"))
    assert leads_to_dav_root(location, published) is leads


def test_activesync_adds_its_location_and_push_settings() -> None:
    off = rendered(site("groupware: {enabled: true}\n"))
    on = rendered(site("groupware: {enabled: true, activesync: true}\n"))
    assert "Microsoft-Server-ActiveSync" not in off["config/web/nginx.conf"]
    assert "location = /Microsoft-Server-ActiveSync {" in on["config/web/nginx.conf"]
    assert "SOGoMaximumPingInterval = 3540;" in on["config/sogo/sogo.conf"]
    nginx = on["config/web/nginx.conf"]
    for needle in (
        "location = /.well-known/caldav {",
        "location = /.well-known/carddav {",
        "location ^~ /SOGo {",
        'proxy_set_header x-webobjects-remote-user "";',
        "alias /srv/sogo-static/current/;",
    ):
        assert needle in nginx, needle


def test_users_are_the_mailboxes_with_their_own_hashes() -> None:
    s = site("groupware: {enabled: true}\n")
    sql = rendered(s)["config/postgres/sogo-users.sql"]
    assert sql.startswith("-- generated by mailstack")
    assert "'{SHA512-CRYPT}$6$rounds=100000$peL/PZlg6qzna8cF$TCROjrSowU." in sql
    assert "'Anna O''Neil'" in sql  # quoted, not injected
    assert "'bob'" in sql  # no name: the local part
    assert [u.uid for u in sogo_users(s)] == ["'anna@gw.test'", "'bob@gw.test'"]
    # Reconciled: removed mailboxes are deleted, SOGo's role only reads.
    assert "DELETE FROM sogo_users AS u WHERE NOT EXISTS" in sql
    assert "GRANT SELECT ON sogo_users TO sogo;" in sql


def test_a_site_without_mailboxes_empties_the_table() -> None:
    base = BASE.split("mailboxes:")[0]
    sql = rendered(site("groupware: {enabled: true}\n", base))["config/postgres/sogo-users.sql"]
    assert "INSERT INTO wanted" not in sql
    assert "DELETE FROM sogo_users" in sql


def test_sql_literals() -> None:
    assert sql_literal("it's") == "'it''s'"
    assert sql_literal("back\\slash") == "'back\\slash'"
    with pytest.raises(ValueError, match="NUL"):
        sql_literal("a\0b")


def test_the_database_password_is_made_once_and_never_rendered(tmp_path: Path) -> None:
    s = site("groupware: {enabled: true}\n")
    out, state = tmp_path / "build", tmp_path / "state"
    render_site(s, out, state)
    secret = state / "secrets" / "postgres"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    password = secret.read_text().strip()
    assert len(password) >= 32
    texts = [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()]
    assert not [t for t in texts if password in t]
    render_site(s, out, state)
    assert secret.read_text().strip() == password  # never rotated by a render


def test_no_database_password_without_groupware(tmp_path: Path) -> None:
    render_site(site(), tmp_path / "build", tmp_path / "state")
    assert not (tmp_path / "state" / "secrets" / "postgres").exists()


def test_groupware_images_only_for_groupware_sites() -> None:
    on = site("groupware: {enabled: true}\n")
    assert {"sogo", "postgres"} <= set(services.images(on))
    assert services.absent_configs(on) == {"backup"}
    assert services.absent_configs(site()) == {"sogo", "postgres", "backup"}
