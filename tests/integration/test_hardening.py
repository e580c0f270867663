"""Issue #5, items 1-3: TLS policy, anti-abuse and container confinement, each measured.

TLS is audited with testssl.sh (Debian package `testssl.sh`) on every TLS port of the
session stack, and with `openssl s_client` for what testssl 3.0 does not check (SHA-1
signature algorithms, which certificate is served). `tls.profile: modern` and the default
per-client limits are checked on a second stack (side_stack.py) that comes up in the
background while the session-stack tests run.
"""

from __future__ import annotations

import json
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailstack.audit.smtp import PRODUCT_NAMES
from mailstack.audit.tls import STARTTLS, TLS12_GOOD, TLS13_GOOD, ScanResult, TlsPort, s_client
from mailstack.images import image_tag
from mailstack.render.context import CONTAINER_CAPS, CONTAINER_MEMORY, CONTAINER_PIDS
from tests.integration.side_stack import SideStack
from tests.integration.stack import (
    ACTIVE,
    ALICE,
    CLIENT_HELO,
    EXTERNAL_SENDER,
    FRANK,
    SERVICES,
    Stack,
    frank_submits,
    make_message,
    smtp_auth,
    token,
)

pytestmark = pytest.mark.integration
#: testssl findings about the scanning client, not the server.
SCANNER_SIDE = frozenset({"engine_problem"})

CLIENT_PROTOCOLS = ("submission", "submissions", "imap", "imaps", "pop3", "pop3s", "managesieve", "https")


def tls_ports(stack: Stack) -> list[TlsPort]:
    return [TlsPort(name, port, STARTTLS[name]) for name, port in stack.ports.items() if name in STARTTLS]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SideStack]:
    """The modern/default-limits stack; testssl starts it when it is done (both at once
    overload two cores: rspamd's first Hyperscan compilation then outlasts its start period)."""
    side = SideStack(tmp_path_factory.mktemp("itest-modern"))
    try:
        yield side
    finally:
        if side.stack in ACTIVE:
            ACTIVE.remove(side.stack)
        side.stop()


@pytest.fixture(scope="module")
def modern(side: SideStack) -> Stack:
    stack = side.start().get()
    if stack not in ACTIVE:
        ACTIVE.append(stack)  # its logs go with failing tests too
    return stack


@dataclass(frozen=True)
class Audit:
    returncode: int
    output: str
    report: dict[str, Any]

    def items(self) -> dict[str, dict[str, str]]:
        return {item["id"]: item for item in self.report["items"]}


@pytest.fixture(scope="module")
def audit(stack: Stack, side: SideStack, tmp_path_factory: pytest.TempPathFactory) -> Audit:
    """`mailstack audit` of the session stack, as an admin runs it (testssl.sh on every TLS
    port, four at a time); then the side stack starts in the background, while the lighter
    tests of this module run."""
    assert stack.up_error is None, f"mailstack up failed: {stack.up_error}"
    report_dir = tmp_path_factory.mktemp("audit")
    started = time.monotonic()
    command = [str(Path(sys.executable).with_name("mailstack")), "audit", str(stack.site_path)]
    command += ["-o", str(stack.out_dir), "--state", str(stack.state_dir), "--report", str(report_dir)]
    try:
        run = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    finally:
        side.start()
    output = run.stdout + run.stderr
    assert (report_dir / "audit.json").exists(), f"mailstack audit wrote no report:\n{output[-3000:]}"
    assert (report_dir / "audit.md").read_text().startswith("# mailstack audit: ")
    result = Audit(run.returncode, output, json.loads((report_dir / "audit.json").read_text()))
    stack.notes.append(f"mailstack audit took {time.monotonic() - started:.0f}s: {result.report['counts']}")
    for protocol in STARTTLS:
        r = scan_result_of(result, protocol)
        stack.notes.append(
            f"testssl {protocol:<11} {r.port.port}: TLS1.2 {r.finding('TLS1_2')}, "
            f"TLS1.3 {r.finding('TLS1_3')}, order {r.finding('cipher_order')}, "
            f"PFS {r.finding('PFS')}, curves {r.finding('PFS_ECDHE_curves')}, "
            f"ciphers 1.2 [{r.finding('cipherorder_TLSv1_2')}]"
        )
    return result


def scan_result_of(audit: Audit, protocol: str) -> ScanResult:
    findings = audit.report["evidence"].get(f"testssl/{protocol}")
    assert findings, f"the audit report has no testssl findings for {protocol}:\n{audit.output[-3000:]}"
    return ScanResult(TlsPort(protocol, 0, STARTTLS[protocol]), findings, 0.0, audit.output[-2000:])


def test_mailstack_audit_passes_and_reports_every_item(audit: Audit, stack: Stack) -> None:
    items = audit.items()
    expected = [
        f"tls.{check}.{protocol}"
        for protocol in STARTTLS
        for check in (
            "protocols",
            "ciphers",
            "forward_secrecy",
            "cipher_order",
            "compression",
            "renegotiation",
            "sha1_signatures",
            "certificates",
        )
    ]
    expected += ["smtp.banner", "smtp.vrfy", "smtp.relay", "smtp.bare_newline", "smtp.pregreet"]
    expected += ["smtp.client_limits", "smtp.send_rate", "abuse.auth_ban"]
    expected += [
        f"container.{service}.{check}"
        for service in SERVICES
        for check in (
            "capabilities",
            "no_new_privileges",
            "read_only",
            "limits",
            "healthcheck",
            "environment",
        )
    ]
    expected += ["container.rspamd.internal_only", "container.redis.internal_only"]
    host_items = ["host.ssh_audit", "host.firewall", "host.lynis", "host.ports"]
    missing = [item for item in [*expected, *host_items] if item not in items]
    assert not missing, f"the audit report lacks {missing}"
    # The host's items need a deployment (`--host`); a local audit lists them as skipped.
    assert {items[i]["status"] for i in host_items} == {"skip"}
    failed = {k: v["detail"] for k, v in items.items() if v["status"] != "pass" and k not in host_items}
    assert not failed, f"audit items that did not pass: {json.dumps(failed, indent=1)}"
    assert audit.returncode == 0, audit.output[-3000:]
    assert audit.report["ok"] is True


# --- 1. TLS on every port ---------------------------------------------------------------------


@pytest.mark.parametrize("protocol", list(STARTTLS))
def test_testssl_finds_only_tls12_13_with_ecdhe_aead_in_server_order(audit: Audit, protocol: str) -> None:
    result = scan_result_of(audit, protocol)
    ok = result.finding
    detail = f"\n{protocol}: {json.dumps(result.severities(), indent=1)}\n{result.output[-2000:]}"
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert ok(old).startswith("not offered"), f"{old}: {ok(old)}{detail}"
    assert ok("TLS1_2") == "offered", detail
    assert ok("TLS1_3").startswith("offered"), detail
    for weak in ("NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE"):  # AVERAGE: CBC
        assert ok(f"cipherlist_{weak}").startswith("not offered"), f"cipherlist_{weak}{detail}"
    tls12 = ok("cipherorder_TLSv1_2").split()
    tls13 = ok("cipherorder_TLSv1_3").split()
    assert tls12, detail
    assert all(TLS12_GOOD.match(c) for c in tls12), f"TLS 1.2 ciphers: {tls12}"
    assert set(tls13) <= TLS13_GOOD, f"TLS 1.3 suites: {tls13}"
    assert ok("PFS") == "offered", detail
    assert all(c in TLS13_GOOD or c.startswith("ECDHE-") for c in ok("PFS_ciphers").split())
    # No finite-field DHE at all (RFC 7919 groups would be tolerable; none is better).
    assert "DHE-" not in " ".join(tls12).replace("ECDHE-", ""), tls12
    assert ok("DH_groups") == "<missing>", f"DH groups offered: {ok('DH_groups')}"
    assert ok("cipher_order") == "server", detail
    assert ok("CRIME_TLS").startswith("not vulnerable"), detail  # no TLS compression
    assert ok("secure_renego") == "supported", detail
    assert ok("secure_client_renego").startswith("not vulnerable"), detail
    # And nothing testssl grades as a problem, nor a check that could not run. engine_problem
    # is about the scanner's own OpenSSL (no GOST engine here), not about the server.
    flagged = {
        k: v
        for k, v in result.severities().items()
        if v in ("LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN") and k not in SCANNER_SIDE
    }
    assert not flagged, f"{flagged}{detail}"


@pytest.mark.parametrize("protocol", list(STARTTLS))
def test_sha1_and_sha224_signature_algorithms_are_refused(stack: Stack, protocol: str) -> None:
    port, starttls = stack.ports[protocol], STARTTLS[protocol]
    # The client must be willing to use SHA-1 at all, or the check passes against any server.
    weak = ("-tls1_2", "-cipher", "DEFAULT@SECLEVEL=0")
    for sigalgs in ("RSA+SHA1:ECDSA+SHA1", "RSA+SHA224:ECDSA+SHA224"):
        done, out = s_client(stack.host, port, *weak, "-sigalgs", sigalgs, starttls=starttls)
        assert not done, f"{protocol} completed a TLS 1.2 handshake with only {sigalgs}:\n{out[-1500:]}"
    done, out = s_client(stack.host, port, *weak, "-sigalgs", "RSA+SHA256:ECDSA+SHA256", starttls=starttls)
    assert done, (
        f"{protocol}: the same client with SHA-256 failed, so the test proves nothing:\n{out[-1500:]}"
    )


@pytest.mark.parametrize("protocol", list(STARTTLS))
def test_an_ecdsa_p256_and_an_rsa_3072_certificate_are_both_served(stack: Stack, protocol: str) -> None:
    port, starttls = stack.ports[protocol], STARTTLS[protocol]
    done, ecdsa = s_client(stack.host, port, "-tls1_2", "-sigalgs", "ECDSA+SHA256", starttls=starttls)
    assert done, ecdsa[-1500:]
    assert "Peer signature type: ECDSA" in ecdsa
    assert "Server public key is 256 bit" in ecdsa
    done, rsa = s_client(
        stack.host,
        port,
        "-tls1_2",
        "-sigalgs",
        "RSA-PSS+SHA256:RSA+SHA256",
        "-cipher",
        "ECDHE-RSA-AES128-GCM-SHA256",
        starttls=starttls,
    )
    assert done, rsa[-1500:]
    assert re.search(r"Peer signature type: RSA", rsa), rsa[-1500:]
    bits = re.search(r"Server public key is (\d+) bit", rsa)
    assert bits, rsa[-1500:]
    assert int(bits.group(1)) >= 3072, f"RSA key of {bits.group(1)} bits (a new state makes 3072)"


def test_modern_profile_is_tls13_only_on_client_ports_and_port_25_keeps_tls12(modern: Stack) -> None:
    for protocol in CLIENT_PROTOCOLS:
        port, starttls = modern.ports[protocol], STARTTLS[protocol]
        done, out = s_client(modern.host, port, "-tls1_2", starttls=starttls)
        assert not done, f"{protocol} (modern) accepted TLS 1.2:\n{out[-1200:]}"
        done, out = s_client(modern.host, port, "-tls1_3", starttls=starttls)
        assert done, f"{protocol} (modern) refused TLS 1.3:\n{out[-1200:]}"
    # Port 25 stays at TLS 1.2+1.3 (a sender refused there would fall back to plaintext),
    # with the same ECDHE+AEAD-only cipher list.
    done, out = s_client(modern.host, modern.ports["smtp"], "-tls1_2", starttls="smtp")
    assert done, out[-1200:]
    done, out = s_client(
        modern.host, modern.ports["smtp"], "-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256", starttls="smtp"
    )
    assert not done, f"port 25 accepted a CBC cipher:\n{out[-1200:]}"


# --- 2. Anti-abuse ---------------------------------------------------------------------------

# A raw SMTP session in bash (/dev/tcp), from a throwaway container on the stack's front
# network (a client address of its own, unknown to postscreen): it sends EHLO right after
# the first line of postscreen's multi-line greeting, before the final "220 " (postscreen
# drops what came early), then goes on as a client would.
PREGREET_SESSION = r"""
set -u
echo "CLIENT_IP $(hostname -i)"
exec 3<>/dev/tcp/postfix/25 || { echo "CONNECT failed"; exit 2; }
readline() {
  IFS= read -r -t 30 line <&3 || { echo "S: <nothing within 30s>"; return 1; }
  line=${line%$'\r'}; echo "S: $line"
}
reply() {
  while readline; do
    case "$line" in [0-9][0-9][0-9]" "* | [0-9][0-9][0-9]) return 0 ;; esac
  done
  return 1
}
send() { echo "C: $1"; printf '%s\r\n' "$1" >&3; }
readline
send "EHLO $HELO"
reply
send "EHLO $HELO"; reply
send "MAIL FROM:<$FROM>"; reply
send "RCPT TO:<$RCPT>"; reply
send "QUIT"; reply
"""

# Opens LIMIT+1 connections to postfix:587 and keeps them all open, printing each greeting.
CONNECTIONS_SESSION = r"""
set -u
echo "CLIENT_IP $(hostname -i)"
for i in $(seq 1 $((LIMIT + 1))); do
  exec {fd}<>/dev/tcp/postfix/587 || { echo "$i CONNECT failed"; break; }
  IFS= read -r -t 20 line <&$fd || line="<nothing within 20s>"
  echo "$i ${line%$'\r'}"
done
"""


def front_container(stack: Stack, script: str, **env: str) -> tuple[str, str]:
    """Run a bash script in a container on the stack's front network; (its address, stdout)."""
    command = ["docker", "run", "--rm", "--network", stack.front_network()]
    for name, value in env.items():
        command += ["--env", f"{name}={value}"]
    command += ["--entrypoint", "bash", image_tag("postfix"), "-c", script]
    run = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    address = re.search(r"^CLIENT_IP (\S+)", run.stdout, re.M)
    assert address, f"the probe container did not report its address:\n{run.stdout}{run.stderr}"
    return address.group(1), run.stdout + run.stderr


def test_a_client_that_talks_before_the_greeting_is_rejected_by_postscreen(stack: Stack) -> None:
    address, transcript = front_container(
        stack, PREGREET_SESSION, HELO=CLIENT_HELO, FROM=EXTERNAL_SENDER, RCPT=ALICE
    )
    lines = transcript.splitlines()
    assert any(line.startswith("S: 220-") for line in lines), f"no multi-line greeting:\n{transcript}"
    rcpt = next((i for i, line in enumerate(lines) if line.startswith("C: RCPT")), None)
    assert rcpt is not None, f"the session never reached RCPT:\n{transcript}"
    assert rcpt + 1 < len(lines), f"no reply to RCPT:\n{transcript}"
    assert lines[rcpt + 1].startswith("S: 550 5.5.1"), f"RCPT after a pregreet was not refused:\n{transcript}"
    assert "Protocol error" in lines[rcpt + 1]
    logged = stack.wait_for_log("postfix", rf"PREGREET \d+ after \S+ from \[{re.escape(address)}\]")
    stack.notes.append(f"pregreet: {logged.split(': ', 1)[-1]}")


def test_an_offline_site_asks_no_dnsbl(stack: Stack) -> None:
    assert stack.site.offline is True
    run = stack.exec("postfix", "postconf", "-h", "postscreen_dnsbl_sites")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "", f"postscreen asks DNSBLs: {run.stdout.strip()}"


def test_simultaneous_connections_per_client_are_limited(stack: Stack) -> None:
    limit = stack.site.limits.clients.connections
    address, transcript = front_container(stack, CONNECTIONS_SESSION, LIMIT=str(limit))
    greetings = [line.split(" ", 1)[1] for line in transcript.splitlines() if re.match(r"^\d+ ", line)]
    assert len(greetings) == limit + 1, transcript
    assert all(g.startswith("220 ") for g in greetings[:limit]), transcript
    assert greetings[limit].startswith("421 4.7.0"), f"connection {limit + 1} was not refused:\n{transcript}"
    assert "too many connections" in greetings[limit]
    stack.wait_for_log(
        "postfix", rf"Connection concurrency limit exceeded: {limit + 1} from \S+\[{re.escape(address)}\]"
    )


def test_vrfy_is_disabled(stack: Stack) -> None:
    smtp = stack.smtp("smtp")
    try:
        smtp.ehlo()
        assert "vrfy" not in smtp.esmtp_features
        code, reply = smtp.verify("postmaster")
    finally:
        smtp.close()
    assert (code, reply) == (502, b"5.5.1 VRFY command is disabled")


def read_greeting(stack: Stack, port: int, *, tls: bool = False, until: bytes = b"") -> list[str]:
    """The first lines a server sends: up to a line starting with ``until``, else one line."""
    raw = socket.create_connection((stack.host, port), timeout=30)
    sock: socket.socket = stack.tls_context().wrap_socket(raw) if tls else raw
    lines: list[str] = []
    with sock, sock.makefile("rb") as reader:
        while line := reader.readline():
            lines.append(line.decode().rstrip("\r\n"))
            if not until or line.startswith(until):
                break
    return lines


def test_banners_name_the_host_and_no_product(stack: Stack) -> None:
    expected = f"220 {stack.site.hostname} ESMTP"
    for protocol in ("smtp", "submission", "submissions"):
        lines = read_greeting(stack, stack.ports[protocol], tls=protocol == "submissions", until=b"220 ")
        assert lines[-1] == expected, f"{protocol}: {lines}"
    imap = read_greeting(stack, stack.ports["imap"])
    imaps = read_greeting(stack, stack.ports["imaps"], tls=True)
    pop3 = read_greeting(stack, stack.ports["pop3"])
    sieve = read_greeting(stack, stack.ports["managesieve"], until=b"OK")
    assert imap[0].endswith("] ready"), imap
    assert imaps[0].endswith("] ready"), imaps
    assert pop3 == ["+OK ready"], pop3
    for lines in (imap, imaps, pop3, sieve):
        assert not PRODUCT_NAMES.search(" ".join(lines)), lines
    smtp = stack.smtp("submission")
    try:
        code, ehlo = smtp.ehlo()
        _, unknown = smtp.docmd("XYZZY")
    finally:
        smtp.close()
    assert code == 250
    assert not PRODUCT_NAMES.search(ehlo.decode() + unknown.decode()), (ehlo, unknown)
    stack.notes.append(f"greetings: {expected!r}, {imap[0][:20]}…{imap[0][-8:]!r}, {pop3[0]!r}, {sieve[0]!r}")


def test_imap_id_names_no_product(stack: Stack) -> None:
    raw = socket.create_connection((stack.host, stack.ports["imaps"]), timeout=30)
    with stack.tls_context().wrap_socket(raw) as tls, tls.makefile("rb") as reader:
        reader.readline()
        tls.sendall(b'a ID ("name" "itest")\r\n')
        reply = [reader.readline().decode().strip() for _ in range(2)]
        tls.sendall(b"b LOGOUT\r\n")
    assert reply[-1].startswith("a OK"), reply
    assert not PRODUCT_NAMES.search(reply[0]), reply


def test_a_bare_lf_message_on_25_yields_exactly_one_message(stack: Stack) -> None:
    """SMTP smuggling (CVE-2023-51764): <LF>.<LF> must not end the message, so the commands
    after it stay message text instead of starting a second, forged message."""
    outer, smuggled = token("bare LF outer"), token("bare LF smuggled")
    body = (
        f"From: <{EXTERNAL_SENDER}>\r\nTo: <{ALICE}>\r\nSubject: {outer}\r\n"
        f"Message-ID: <{outer.replace(' ', '.')}@sender-itest.test>\r\n\r\nfirst part\r\n"
    ).encode()
    body += (
        f"\n.\nMAIL FROM:<{EXTERNAL_SENDER}>\nRCPT TO:<{ALICE}>\nDATA\n"
        f"From: <{EXTERNAL_SENDER}>\nSubject: {smuggled}\n\nforged\n.\n"
    ).encode()
    with socket.create_connection((stack.host, stack.ports["smtp"]), timeout=30) as sock:
        reader = sock.makefile("rb")

        def reply() -> str:
            lines = []
            while line := reader.readline().decode():
                lines.append(line.rstrip("\r\n"))
                if re.match(r"^\d{3} ", line):
                    break
            return "\n".join(lines)

        def command(text: str) -> str:
            sock.sendall(text.encode() + b"\r\n")
            return reply()

        assert reply().splitlines()[-1].startswith("220 ")
        assert command(f"EHLO {CLIENT_HELO}").splitlines()[-1].startswith("250 ")
        assert command(f"MAIL FROM:<{EXTERNAL_SENDER}>").startswith("250")
        assert command(f"RCPT TO:<{ALICE}>").startswith("250")
        assert command("DATA").startswith("354")
        sock.sendall(body + b"\r\n.\r\n")
        queued = reply()
        sock.sendall(b"QUIT\r\n")
        rest = reader.read().decode()
        reader.close()
    assert queued.startswith("250 "), queued
    assert rest.startswith("221 "), f"more replies than one per command: {rest!r}"
    delivered = stack.wait_for_message(ALICE, outer)
    assert b"MAIL FROM:" in delivered, "the smuggled commands are not in the one message"
    time.sleep(2)
    assert smuggled not in stack.subjects(ALICE), "a second, smuggled message was delivered"


def test_an_authenticated_user_over_his_send_rate_gets_a_4xx(stack: Stack) -> None:
    mailbox = next(m for m in stack.site.mailboxes if m.address == FRANK)
    assert mailbox.send_rate == "2/1h"
    results = [frank_submits(stack, [FRANK], token(f"rate {i}")) for i in range(2)]
    assert results == [(250, "accepted")] * 2, results
    code, reply = frank_submits(stack, [FRANK], token("rate 3"))
    assert 400 <= code < 500, f"the third recipient within the hour answered {code} {reply}"
    assert "Ratelimit" in reply, reply
    # A postmaster recipient does not open a way around it (rspamd's default whitelist).
    code, reply = frank_submits(stack, [f"postmaster@{stack.site.domains[0].name}", FRANK], token("rate 4"))
    assert 400 <= code < 500, f"adding postmaster@ escaped the limit: {code} {reply}"
    stack.notes.append(f"send_rate 2/1h: third message answered {code} {reply}")
    # Other users have buckets of their own.
    subject = token("alice unaffected by frank")
    stack.submit(ALICE, make_message(ALICE, ALICE, subject))
    stack.wait_for_message(ALICE, subject)


def test_default_per_client_limits_refuse_an_auth_storm_and_a_connection_flood(modern: Stack) -> None:
    """On the side stack's default limits. All of this test's connections come from one
    address (docker-proxy's); anvil counts per service and client over 60 s windows, so a
    window may end in the middle: up to twice the limit is tolerated before the refusal."""
    limits = modern.site.limits.clients
    context = ssl.create_default_context(cafile=str(modern.ca_path))
    context.check_hostname = False
    # AUTH commands on 465, one successful AUTH per connection, until anvil says no.
    refused_auth: tuple[int, bytes] | None = None
    for _ in range(2 * limits.auth_rate + 2):
        with smtplib.SMTP_SSL(modern.host, modern.ports["submissions"], context=context, timeout=30) as smtp:
            smtp.ehlo(CLIENT_HELO)
            code, reply = smtp_auth(smtp, ALICE, modern.password(ALICE))
        if code != 235:
            refused_auth = (code, reply)
            break
    assert refused_auth is not None, f"{2 * limits.auth_rate + 2} AUTH commands in a row were all accepted"
    assert refused_auth == (450, f"4.7.1 Error: too many AUTH commands from {_gateway(modern)}".encode()) or (
        refused_auth[0] == 450 and b"too many AUTH commands" in refused_auth[1]
    ), refused_auth
    modern.wait_for_log(
        "postfix",
        rf"AUTH command rate limit exceeded: {limits.auth_rate + 1} from .* for service submissions",
    )
    # New connections on 587, until anvil says no.
    refused: str | None = None
    served = 0
    while refused is None and served <= 2 * limits.connection_rate:
        greeting = read_greeting(modern, modern.ports["submission"])
        if greeting and greeting[0].startswith("220 "):
            served += 1
        else:
            refused = greeting[0] if greeting else "<closed>"
    assert refused is not None, (
        f"{2 * limits.connection_rate + 1} connections within two minutes were all served"
    )
    assert refused.startswith("421 4.7.0"), refused
    assert "too many connections" in refused, refused
    modern.wait_for_log(
        "postfix",
        rf"Connection rate limit exceeded: {limits.connection_rate + 1} from .* for service submission",
    )
    modern.notes.append(
        f"default per-client limits enforced: AUTH {limits.auth_rate}/min ({refused_auth[0]}), "
        f"connections {limits.connection_rate}/min ({served} served, then: {refused})"
    )


def _gateway(stack: Stack) -> str:
    """The address every loopback client has inside the stack (docker-proxy's)."""
    run = subprocess.run(
        [
            "docker",
            "network",
            "inspect",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
            stack.front_network(),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return run.stdout.strip()


# --- 3. Containers ---------------------------------------------------------------------------


def inspect(stack: Stack) -> dict[str, dict[str, object]]:
    ids = stack.container_ids()
    run = subprocess.run(
        ["docker", "inspect", *ids.values()], capture_output=True, text=True, check=True, timeout=30
    )
    by_id = {c["Id"]: c for c in json.loads(run.stdout)}
    return {service: by_id[next(i for i in by_id if i.startswith(cid))] for service, cid in ids.items()}


def state_secret_values(state_dir: Path) -> list[str]:
    """Every secret the state holds, as strings that must never appear in an environment:
    the internal passwords, and each private key's base64 lines."""
    values = [p.read_text().strip() for p in (state_dir / "secrets").iterdir() if p.is_file()]
    for key in [*state_dir.glob("dkim/*/*.pem"), *state_dir.glob("tls/**/*.key")]:
        values += [line for line in key.read_text().splitlines() if len(line) >= 40 and "-----" not in line]
    return [v for v in values if v]


def test_every_container_is_confined(stack: Stack) -> None:
    containers = inspect(stack)
    assert set(containers) == set(SERVICES)
    secrets = state_secret_values(stack.state_dir)
    assert secrets, "the state holds no secrets to look for"
    state_dir = str(stack.state_dir.resolve())
    for service, c in containers.items():
        host, config = c["HostConfig"], c["Config"]
        assert isinstance(host, dict)
        assert isinstance(config, dict)
        assert "ALL" in [x.removeprefix("CAP_") for x in host["CapDrop"] or []], service
        assert sorted(x.removeprefix("CAP_") for x in host["CapAdd"] or []) == sorted(CONTAINER_CAPS[service])
        assert "no-new-privileges:true" in (host["SecurityOpt"] or []), service
        assert host["ReadonlyRootfs"] is True, service
        assert host["Privileged"] is False, service
        assert host["Memory"] == _bytes(CONTAINER_MEMORY[service]), service
        assert host["PidsLimit"] == CONTAINER_PIDS[service], service
        assert (config.get("Healthcheck") or {}).get("Test"), f"{service} has no healthcheck"
        env = "\n".join(config.get("Env") or [])
        leaked = [s[:8] + "…" for s in secrets if s in env]
        assert not leaked, f"{service} has secrets in its environment: {leaked}"
        mounts = c["Mounts"]
        assert isinstance(mounts, list)
        for mount in mounts:
            source = str(mount.get("Source", ""))
            assert source != state_dir, f"{service} mounts the whole state directory"
            assert not source.endswith("/tls/ca.key"), f"{service} sees the CA's private key"
        status = stack.exec(service, "cat", "/proc/1/status").stdout
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), f"{service}: {status}"


def test_rspamd_and_redis_run_no_process_as_root(stack: Stack) -> None:
    """Postfix's and Dovecot's masters must start as root (upstream design) and drop
    privileges per process; rspamd and redis drop root entirely after their entrypoints."""
    containers = inspect(stack)
    for service in ("rspamd", "redis"):
        rows = stack.top(service, "pid,ppid,uid,comm")
        # The service is PID 1's tree; Docker's healthcheck runs beside it, exec'd as the
        # image's user (root) for a moment, and is not the daemon.
        state = containers[service]["State"]
        assert isinstance(state, dict)
        tree = {str(state["Pid"])}
        while grown := {pid for pid, ppid, _, _ in rows if ppid in tree} - tree:
            tree |= grown
        daemon = [row for row in rows if row[0] in tree]
        assert daemon, rows
        assert all(uid != "0" for _, _, uid, _ in daemon), f"{service} runs as root: {rows}"
        status = stack.exec(service, "cat", "/proc/1/status").stdout
        assert re.search(r"^CapEff:\s+0+$", status, re.M), f"{service} PID 1 keeps capabilities:\n{status}"


def test_backend_services_are_only_on_the_internal_network(stack: Stack) -> None:
    containers = inspect(stack)
    for service in ("rspamd", "redis"):
        settings = containers[service]["NetworkSettings"]
        assert isinstance(settings, dict)
        networks = list(settings["Networks"])
        assert [n.rsplit("_", 1)[-1] for n in networks] == ["back"], f"{service}: {networks}"
        assert not settings.get("Ports"), f"{service} publishes {settings.get('Ports')}"
        internal = subprocess.run(
            ["docker", "network", "inspect", "--format", "{{.Internal}}", networks[0]],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        assert internal.stdout.strip() == "true", networks[0]
    _note_footprint(stack, containers)


def _bytes(size: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(size[:-1]) * units[size[-1].lower()]


def _note_footprint(stack: Stack, containers: dict[str, dict[str, object]]) -> None:
    """Memory in use per service (cgroup v1 or v2), for the run summary; no assertion."""
    parts = []
    for service, c in containers.items():
        cid = str(c["Id"])
        for path in (
            Path(f"/sys/fs/cgroup/memory/docker/{cid}/memory.usage_in_bytes"),
            Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.current"),
        ):
            if path.exists():
                parts.append(f"{service} {int(path.read_text()) / 2**20:.0f} MiB")
                break
    if parts:
        stack.notes.append("memory in use: " + ", ".join(parts))
