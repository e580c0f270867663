"""The web service's rendered files: nginx.conf, the MTA-STS policy, autoconfig,
autodiscover and Apple profiles, for the integration site (non-default ports)."""

from __future__ import annotations

import hashlib
import plistlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography import x509

from mailstack.dns import build_records, mta_sts_id, mta_sts_policy
from mailstack.mtasts import parse_policy
from mailstack.render import plan_files
from mailstack.render.web import client_endpoints, https_redirect, nginx_regex, web_enabled
from mailstack.site.loader import load_site, parse_site
from mailstack.site.models import Site
from mailstack.state import State
from tests.conftest import FIXTURES, fake_state

SITE = FIXTURES / "integration" / "site.yaml"
POX = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def rendered(site: Site) -> dict[str, bytes]:
    base = Path("/srv/sites")
    files = plan_files(site, fake_state(site.domain_names), base / "state", base / "build")
    return {f.path: f.content for f in files}


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(SITE)


@pytest.fixture(scope="module")
def tree(site: Site) -> dict[str, bytes]:
    return rendered(site)


def test_the_policy_served_is_the_text_the_dns_id_is_computed_from(
    site: Site, tree: dict[str, bytes]
) -> None:
    served = tree["config/web/htdocs/.well-known/mta-sts.txt"]
    assert served == mta_sts_policy(site).encode()
    txt = [
        r.value for r in build_records(site, fake_state(site.domain_names)) if r.name.startswith("_mta-sts.")
    ]
    assert txt == [f"v=STSv1; id={mta_sts_id(site)}"] * len(site.domain_names)
    assert mta_sts_id(site) == hashlib.sha256(served).hexdigest()[:20]
    policy = parse_policy(served)
    assert (policy.mode, policy.max_age) == (site.mta_sts.mode, site.mta_sts.max_age) == ("enforce", 604800)
    assert policy.covers(site.hostname)


def test_autoconfig_for_each_domain_names_the_sites_ports_and_tls(site: Site, tree: dict[str, bytes]) -> None:
    ports = site.network.ports
    for domain in site.domain_names:
        root = ET.fromstring(tree[f"config/web/htdocs/autoconfig/{domain}.xml"])  # noqa: S314 - ours
        assert root.tag == "clientConfig"
        assert root.get("version") == "1.1"
        provider = root.find("emailProvider")
        assert provider is not None
        assert provider.get("id") == domain
        assert [d.text for d in provider.findall("domain")] == [domain]
        servers = [
            (s.tag, s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"))
            for s in provider
            if s.tag in ("incomingServer", "outgoingServer")
        ]
        host = site.hostname
        assert servers == [
            ("incomingServer", "imap", host, str(ports.imaps), "SSL"),
            ("incomingServer", "imap", host, str(ports.imap), "STARTTLS"),
            ("incomingServer", "pop3", host, str(ports.pop3s), "SSL"),
            ("incomingServer", "pop3", host, str(ports.pop3), "STARTTLS"),
            ("outgoingServer", "smtp", host, str(ports.submissions), "SSL"),
            ("outgoingServer", "smtp", host, str(ports.submission), "STARTTLS"),
        ]
        assert {s.findtext("username") for s in provider if s.tag.endswith("Server")} == {"%EMAILADDRESS%"}


def test_autodiscover_names_the_preferred_port_of_each_protocol(site: Site, tree: dict[str, bytes]) -> None:
    root = ET.fromstring(tree["config/web/htdocs/autodiscover/autodiscover.xml"])  # noqa: S314 - ours
    protocols = [
        (
            p.findtext(f"{POX}Type"),
            p.findtext(f"{POX}Server"),
            p.findtext(f"{POX}Port"),
            p.findtext(f"{POX}Encryption"),
        )
        for p in root.iter(f"{POX}Protocol")
    ]
    ports = site.network.ports
    assert protocols == [
        ("IMAP", site.hostname, str(ports.imaps), "SSL"),
        ("POP3", site.hostname, str(ports.pop3s), "SSL"),
        ("SMTP", site.hostname, str(ports.submissions), "SSL"),
    ]
    assert root.findtext(f".//{POX}Action") == "settings"


def test_an_apple_profile_per_mailbox_without_a_password(site: Site, tree: dict[str, bytes]) -> None:
    profiles = {p for p in tree if p.startswith("config/web/htdocs/apple/")}
    assert profiles == {f"config/web/htdocs/apple/{m.address}.mobileconfig" for m in site.mailboxes}
    uuids = set()
    for mailbox in site.mailboxes:
        raw = tree[f"config/web/htdocs/apple/{mailbox.address}.mobileconfig"]
        profile = plistlib.loads(raw)
        assert profile["PayloadType"] == "Configuration"
        (account,) = profile["PayloadContent"]
        assert account["PayloadType"] == "com.apple.mail.managed"
        assert account["EmailAddress"] == account["IncomingMailServerUsername"] == mailbox.address
        assert account["EmailAccountType"] == "EmailTypeIMAP"
        assert account["IncomingMailServerHostName"] == account["OutgoingMailServerHostName"] == site.hostname
        assert account["IncomingMailServerPortNumber"] == site.network.ports.imaps
        assert account["OutgoingMailServerPortNumber"] == site.network.ports.submissions
        assert account["IncomingMailServerUseSSL"] is account["OutgoingMailServerUseSSL"] is True
        assert not [
            k for k in account if "password" in k.lower() and k != "OutgoingPasswordSameAsIncomingPassword"
        ]
        assert not [k for k in profile if "password" in k.lower()]
        assert mailbox.password_hash.encode() not in raw
        uuids |= {profile["PayloadUUID"], account["PayloadUUID"]}
    assert len(uuids) == 2 * len(site.mailboxes)  # stable per mailbox (rendering is deterministic)


def test_nginx_conf_serves_every_domains_names_and_redirects_to_the_https_port(
    site: Site, tree: dict[str, bytes]
) -> None:
    conf = tree["config/web/nginx.conf"].decode()
    for domain in site.domain_names:
        assert re.search(rf"server_name[^;]* mta-sts\.{re.escape(domain)}[ ;]", conf)
        assert re.search(rf"server_name[^;]* autoconfig\.{re.escape(domain)}[ ;]", conf)
        assert f'"~*(@|%40){nginx_regex(domain)}$" {domain};' in conf
    assert f"return 301 https://$host:{site.network.ports.https}$request_uri;" in conf
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    assert conf.count("ssl_certificate ") == 2
    compose = tree["compose.yaml"].decode()
    assert f'"127.0.0.1:{site.network.ports.https}:8443"' in compose
    assert f'"127.0.0.1:{site.network.ports.http}:8080"' in compose


def test_modern_profile_makes_https_tls13_only(site: Site) -> None:
    modern = site.model_copy(update={"tls": site.tls.model_copy(update={"profile": "modern"})})
    assert "ssl_protocols TLSv1.3;" in rendered(modern)["config/web/nginx.conf"].decode()


def test_standard_https_port_redirects_without_a_port() -> None:
    site = parse_site(SITE.read_text().replace("https: 12443", "https: 443"))
    assert https_redirect(site) == "https://$host$request_uri"


def test_without_http_and_https_there_is_no_web_service_and_no_web_dns_records() -> None:
    text = re.sub(r"^    https?: \d+\n", "", SITE.read_text(), flags=re.M)
    site = parse_site(text)
    assert not web_enabled(site)
    tree = rendered(site)
    assert "\n  web:\n" not in tree["compose.yaml"].decode()
    names = {r.name.split(".", 1)[0] for r in build_records(site, fake_state(site.domain_names))}
    assert not names & {"_mta-sts", "mta-sts", "autoconfig", "autodiscover", "_autodiscover"}


def test_only_implicit_tls_ports_published_leaves_the_starttls_entries_out() -> None:
    text = re.sub(r"^    (imap|pop3|pop3s|submission): \d+\n", "", SITE.read_text(), flags=re.M)
    incoming, outgoing = client_endpoints(parse_site(text))
    assert [(e.protocol, e.socket_type) for e in incoming] == [("imaps", "SSL")]
    assert [(e.protocol, e.socket_type) for e in outgoing] == [("submissions", "SSL")]


def test_certificates_name_the_web_hosts_and_are_reissued_with_the_same_key(tmp_path: Path) -> None:
    site = load_site(SITE)
    state = State(tmp_path / "state")
    view = state.ensure(site)
    cert_path = tmp_path / "state" / view.tls_files["ecdsa_cert"]
    key_before = (tmp_path / "state" / view.tls_files["ecdsa_key"]).read_bytes()

    def names() -> list[str]:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )

    expected = [site.hostname] + [
        f"{p}.{d}" for d in site.domain_names for p in ("mta-sts", "autoconfig", "autodiscover")
    ]
    assert names() == expected
    inode, first = cert_path.stat().st_ino, cert_path.read_bytes()
    again = State(tmp_path / "state")
    again.ensure(site)
    assert again.changes.reissued == []  # nothing to do
    assert cert_path.read_bytes() == first
    bigger = parse_site(
        SITE.read_text().replace(
            "  - name: itest.example\n", "  - name: itest.example\n  - name: new.example\n"
        )
    )
    grown = State(tmp_path / "state")
    grown.ensure(bigger)
    assert sorted(grown.changes.reissued) == sorted(
        [view.tls_files["ecdsa_cert"], view.tls_files["rsa_cert"]]
    )
    assert "mta-sts.new.example" in names()
    assert cert_path.stat().st_ino == inode  # rewritten in place: bind-mounted secrets see it
    assert (tmp_path / "state" / view.tls_files["ecdsa_key"]).read_bytes() == key_before
