"""Issue #6 item 2: the web service (nginx) of the session stack.

MTA-STS policy, Thunderbird autoconfig, Outlook autodiscover and Apple profiles over HTTPS
(verified against the site's CA, with the SNI and Host names clients use), plain HTTP
redirects except ACME challenges, the TLS policy of every other port, and confinement.
The fixture site publishes every protocol on non-default ports, which the answers must name.
"""

from __future__ import annotations

import http.client
import json
import plistlib
import re
import socket
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailstack.audit.tls import TlsPort, handshake_items, s_client
from mailstack.check.web import AUTODISCOVER_REQUEST
from mailstack.dns import mta_sts_policy
from mailstack.images import image_tag
from mailstack.mtasts import parse_policy
from tests.integration.stack import ALICE, BOB, DAVE, Stack

pytestmark = pytest.mark.integration

POX = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
POX_REQUEST = AUTODISCOVER_REQUEST


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def request(
    stack: Stack, host: str, path: str, *, method: str = "GET", body: bytes | None = None, tls: bool = True
) -> Reply:
    """One request to the published http/https port, with ``host`` as SNI (verified against
    the site's CA) and as Host header."""
    port = stack.ports["https" if tls else "http"]
    raw = socket.create_connection((stack.host, port), timeout=10)
    if tls:
        context = ssl.create_default_context(cafile=str(stack.ca_path))  # check_hostname on
        sock: socket.socket = context.wrap_socket(raw, server_hostname=host)
    else:
        sock = raw
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.sock = sock
    try:
        headers = {"Content-Type": "text/xml"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def web(stack: Stack) -> Stack:
    assert stack.up_error is None, f"mailstack up failed: {stack.up_error}"
    assert {"http", "https"} <= set(stack.ports), "the fixture site must publish http and https"
    assert stack.service_states().get("web") == "healthy", stack.service_states()
    return stack


def xml(body: bytes) -> ET.Element:
    return ET.fromstring(body)  # noqa: S314 - our own server's answer


# --- MTA-STS ---------------------------------------------------------------------------------


def test_mta_sts_policy_is_served_for_every_domain_and_parses_strictly(web: Stack) -> None:
    site = web.site
    records = json.loads((web.out_dir / "dns" / "records.json").read_text())
    for domain in site.domain_names:
        reply = request(web, f"mta-sts.{domain}", "/.well-known/mta-sts.txt")
        assert reply.status == 200, reply
        assert reply.headers["content-type"].startswith("text/plain"), reply.headers
        assert "max-age=" in reply.headers.get("strict-transport-security", ""), reply.headers
        policy = parse_policy(reply.body)
        assert policy.covers(site.hostname), policy
        assert (policy.mode, policy.max_age) == (site.mta_sts.mode, site.mta_sts.max_age)
        # Exactly the text the published id was computed from.
        assert reply.body == mta_sts_policy(site).encode()
        txt = next(r["value"] for r in records if r["name"] == f"_mta-sts.{domain}")
        assert txt.startswith("v=STSv1; id=")
        assert request(web, f"mta-sts.{domain}", "/other").status == 404


# --- autoconfig and autodiscover -------------------------------------------------------------


def assert_autoconfig(web: Stack, body: bytes, domain: str) -> None:
    ports = web.site.network.ports
    provider = xml(body).find("emailProvider")
    assert provider is not None, body
    assert provider.findtext("domain") == domain
    servers = {
        (s.get("type"), s.findtext("port"), s.findtext("socketType"), s.findtext("hostname"))
        for s in provider
        if s.tag.endswith("Server")
    }
    host = web.site.hostname
    assert servers == {
        ("imap", str(ports.imaps), "SSL", host),
        ("imap", str(ports.imap), "STARTTLS", host),
        ("pop3", str(ports.pop3s), "SSL", host),
        ("pop3", str(ports.pop3), "STARTTLS", host),
        ("smtp", str(ports.submissions), "SSL", host),
        ("smtp", str(ports.submission), "STARTTLS", host),
    }


def test_autoconfig_by_host_and_by_email_address(web: Stack) -> None:
    for domain in web.site.domain_names:
        for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
            reply = request(web, f"autoconfig.{domain}", f"{path}?emailaddress=x%40{domain}")
            assert reply.status == 200, (domain, path, reply)
            assert_autoconfig(web, reply.body, domain)
    host = web.site.hostname
    dave_domain = DAVE.rpartition("@")[2]
    for query in (f"emailaddress={DAVE.replace('@', '%40')}", f"emailaddress={DAVE.upper()}"):
        reply = request(web, host, f"/mail/config-v1.1.xml?{query}")
        assert reply.status == 200, (query, reply)
        assert_autoconfig(web, reply.body, dave_domain)
    assert request(web, host, "/mail/config-v1.1.xml?emailaddress=x%40elsewhere.test").status == 404
    assert request(web, host, "/mail/config-v1.1.xml").status == 404


def test_autodiscover_answers_a_pox_post_with_the_sites_ports(web: Stack) -> None:
    ports = web.site.network.ports
    body = POX_REQUEST.format(address=ALICE).encode()
    for host, path in (
        ("autodiscover.itest.example", "/autodiscover/autodiscover.xml"),
        (web.site.hostname, "/Autodiscover/Autodiscover.xml"),
    ):
        reply = request(web, host, path, method="POST", body=body)
        assert reply.status == 200, (host, path, reply)
        assert "xml" in reply.headers["content-type"], reply.headers
        root = xml(reply.body)
        protocols = {
            p.findtext(f"{POX}Type"): (p.findtext(f"{POX}Port"), p.findtext(f"{POX}Encryption"))
            for p in root.iter(f"{POX}Protocol")
        }
        assert protocols == {
            "IMAP": (str(ports.imaps), "SSL"),
            "POP3": (str(ports.pop3s), "SSL"),
            "SMTP": (str(ports.submissions), "SSL"),
        }
        assert {p.findtext(f"{POX}Server") for p in root.iter(f"{POX}Protocol")} == {web.site.hostname}


# --- Apple profiles --------------------------------------------------------------------------


def test_a_mailbox_gets_its_profile_without_password_and_strangers_get_404(web: Stack) -> None:
    ports = web.site.network.ports
    host = web.site.hostname
    for address, path in (
        (ALICE, f"/apple/{ALICE}.mobileconfig"),
        (BOB, f"/apple/?email={BOB.replace('@', '%40')}"),
    ):
        reply = request(web, host, path)
        assert reply.status == 200, (path, reply)
        assert reply.headers["content-type"] == "application/x-apple-aspen-config", reply.headers
        profile = plistlib.loads(reply.body)
        (account,) = profile["PayloadContent"]
        assert account["EmailAddress"] == address
        assert account["IncomingMailServerHostName"] == account["OutgoingMailServerHostName"] == host
        assert account["IncomingMailServerPortNumber"] == ports.imaps
        assert account["OutgoingMailServerPortNumber"] == ports.submissions
        keys = [*profile, *account]
        assert not [
            k for k in keys if "password" in k.lower() and k != "OutgoingPasswordSameAsIncomingPassword"
        ]
    for path in ("/apple/nobody@itest.example.mobileconfig", "/apple/?email=nobody%40itest.example"):
        assert request(web, host, path).status == 404, path
    assert request(web, host, "/apple/team@itest.example.mobileconfig").status == 404  # an alias


# --- plain HTTP ------------------------------------------------------------------------------


def test_plain_http_redirects_to_https_except_acme_challenges(web: Stack) -> None:
    https = web.ports["https"]
    for host, path in (
        ("mta-sts.itest.example", "/.well-known/mta-sts.txt"),
        ("autoconfig.itest.example", "/mail/config-v1.1.xml?emailaddress=a%40itest.example"),
        (web.site.hostname, "/anything"),
    ):
        reply = request(web, host, path, tls=False)
        assert reply.status in (301, 308), (host, path, reply)
        assert reply.headers["location"] == f"https://{host}:{https}{path}", reply.headers
    token = f"itest-{int(time.time())}"
    missing = request(web, web.site.hostname, f"/.well-known/acme-challenge/{token}", tls=False)
    assert missing.status == 404, missing
    # A token in the volume (where issue #7's ACME client writes) is served as it is.
    volume = f"{web.project.name}_acme-challenge"
    write = subprocess.run(
        [
            *("docker", "run", "--rm", "--network", "none", "--volume", f"{volume}:/acme"),
            *("--entrypoint", "sh", image_tag("web"), "-c"),
            f"printf '%s' {token}.key > /acme/{token} && chmod 0644 /acme/{token}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert write.returncode == 0, write.stderr
    served = request(web, web.site.hostname, f"/.well-known/acme-challenge/{token}", tls=False)
    assert (served.status, served.body) == (200, f"{token}.key".encode()), served


# --- TLS -------------------------------------------------------------------------------------


def test_https_offers_tls12_13_with_ecdhe_aead_in_server_order_and_both_certificates(web: Stack) -> None:
    host, port = web.host, web.ports["https"]
    for refused in (("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"), ("-tls1", "-cipher", "DEFAULT@SECLEVEL=0")):
        done, out = s_client(host, port, *refused)
        assert not done, f"https accepted {refused}:\n{out[-1200:]}"
    for cipher in (
        "ECDHE-RSA-AES128-SHA256",
        "ECDHE-ECDSA-AES256-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
        "AES128-GCM-SHA256",
    ):
        done, out = s_client(host, port, "-tls1_2", "-cipher", cipher)
        assert not done, f"https accepted {cipher}:\n{out[-1200:]}"
    done, out = s_client(host, port, "-tls1_3")
    assert done, out[-1200:]
    # Server order: the client prefers CHACHA20-RSA, the server picks its own first choice.
    done, out = s_client(
        host, port, "-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
    )
    assert done, out[-1200:]
    assert re.search(r"Cipher is ECDHE-ECDSA-AES128-GCM-SHA256", out), out[-1200:]
    items = {item.id: item for item in handshake_items(host, TlsPort("https", port, None))}
    assert items["tls.certificates.https"].status == "pass", items["tls.certificates.https"].detail
    assert items["tls.sha1_signatures.https"].status == "pass", items["tls.sha1_signatures.https"].detail


# --- the container ---------------------------------------------------------------------------


def test_nginx_runs_without_root_and_reloads(web: Stack) -> None:
    rows = web.top("web", "pid,uid,comm")
    assert rows, "web lists no process"
    assert all(uid != "0" for _, uid, _ in rows), f"web runs a process as root: {rows}"
    status = web.exec("web", "cat", "/proc/1/status").stdout
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    reload = web.exec("web", "web-reload")
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert request(web, "mta-sts.itest.example", "/.well-known/mta-sts.txt").status == 200
    _note_memory(web)


def _note_memory(web: Stack) -> None:
    cid = subprocess.run(
        ["docker", "inspect", "--format", "{{.Id}}", web.container_ids()["web"]],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout.strip()
    for path in (
        Path(f"/sys/fs/cgroup/memory/docker/{cid}/memory.usage_in_bytes"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.current"),
    ):
        if path.exists():
            web.notes.append(f"web memory in use: {int(path.read_text()) / 2**20:.1f} MiB")
            return
