"""tls.mode acme against a real ACME server (issue #7): Debian's Pebble validates HTTP-01
against the stack's web service, through its DNS stub that answers 127.0.0.1.

A stack of its own (the fixture site as `itest-acme-<random>`, its own ports), brought up
with `mailstack up` as an operator would. The tests run in order: issuance, a forced
renewal under load, an unreachable CA, a stopped web service.
"""

from __future__ import annotations

import imaplib
import json
import re
import secrets
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from mailstack import engine
from mailstack.check.transport import spki_sha256
from mailstack.site.loader import load_site
from mailstack.site.models import STANDARD_PORTS
from tests.integration.pebble import Pebble
from tests.integration.ports import free_ports
from tests.integration.stack import ALICE, SITE_FIXTURE, Stack, imap_auth, make_message, token, wait_until

pytestmark = pytest.mark.integration

MAILSTACK = str(Path(sys.executable).with_name("mailstack"))
UP_TIMEOUT = 420
# Long enough that no renewal falls due (two thirds, or Pebble's ARI window) while testing.
VALIDITY = 90 * 86400
ISSUE_TIMEOUT = 120.0
RELOAD_TIMEOUT = 40.0  # the services look at live/serial every 5 s
IMPLICIT_TLS = ("submissions", "imaps", "pop3s", "https")


class AcmeStack(Stack):
    pebble: Pebble
    up_output: str = ""
    trusted: str = ""  # Pebble's root and intermediate, as they were at the first issuance

    def tls_context(self) -> ssl.SSLContext:
        """Trust Pebble's chain (its root and intermediate of this run), nothing else."""
        if not self.trusted:
            self.trusted = "".join(self.pebble.roots() + self.pebble.intermediates())
        context = ssl.create_default_context(cadata=self.trusted)
        context.check_hostname = False
        return context

    def mailstack(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MAILSTACK, *args, str(self.site_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def acme_site_text(pebble: Pebble, ports: list[int]) -> str:
    text = SITE_FIXTURE.read_text()
    text = re.sub(r"^site: itest$", f"site: itest-acme-{secrets.token_hex(3)}", text, flags=re.M)
    protocols = "|".join(STANDARD_PORTS)
    numbers = iter(ports)
    text = re.sub(
        rf"^(    (?:{protocols})): \d+$", lambda m: f"{m.group(1)}: {next(numbers)}", text, flags=re.M
    )
    acme = (
        "tls:\n  mode: acme\n  acme:\n    email: hostmaster@itest.example\n"
        f"    directory_url: {pebble.directory_url}\n    ca_bundle: {pebble.ca_bundle}\n"
    )
    text, count = re.subn(r"^tls:\n  mode: selfsigned\n", acme, text, flags=re.M)
    assert count == 1, "the fixture site no longer has tls.mode selfsigned where test_acme expects it"
    return text


@pytest.fixture(scope="module")
def acme_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcmeStack]:
    base = tmp_path_factory.mktemp("itest-acme")
    ports = free_ports(len(STANDARD_PORTS))
    http_port = ports[list(STANDARD_PORTS).index("http")]
    pebble = Pebble.start(http_port, validity=VALIDITY)
    site_path = base / "site.yaml"
    site_path.write_text(acme_site_text(pebble, ports))
    project = engine.Project(site=load_site(site_path), out_dir=base / "build", state_dir=base / "state")
    stack = AcmeStack(site_path=site_path, project=project)
    stack.pebble = pebble
    try:
        up = subprocess.run(
            [
                MAILSTACK,
                "up",
                str(site_path),
                "--output",
                str(base / "build"),
                "--state",
                str(base / "state"),
            ],
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT,
            check=False,
        )
        stack.up_output = up.stdout + up.stderr
        assert up.returncode == 0, f"mailstack up failed:\n{up.stdout[-3000:]}\n{up.stderr[-2000:]}"
        yield stack
    finally:
        subprocess.run(
            [MAILSTACK, "down", str(site_path), "--output", str(base / "build"), "--volumes"],
            capture_output=True,
            check=False,
            timeout=180,
        )
        pebble.stop()


def served(stack: AcmeStack, protocol: str, cipher: str | None = None) -> x509.Certificate:
    """The leaf a port serves (implicit TLS, or SMTP STARTTLS on smtp and submission)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # what is served is compared below, not trusted here
    if cipher:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(cipher)
    port = stack.ports[protocol]
    if protocol in ("smtp", "submission"):
        with smtplib.SMTP(stack.host, port, timeout=20) as smtp:
            smtp.starttls(context=context)
            assert isinstance(smtp.sock, ssl.SSLSocket)
            der = smtp.sock.getpeercert(binary_form=True)
    else:
        with (
            socket.create_connection((stack.host, port), timeout=20) as raw,
            context.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    assert der, f"no certificate on {protocol}"
    return x509.load_der_x509_certificate(der)


def pebble_issued(stack: AcmeStack, cert: x509.Certificate) -> bool:
    intermediates = [x509.load_pem_x509_certificate(p.encode()) for p in stack.pebble.intermediates()]
    return any(cert.issuer == i.subject for i in intermediates)


def serials(stack: AcmeStack) -> dict[str, int]:
    return {p: served(stack, p).serial_number for p in IMPLICIT_TLS}


def test_up_brings_the_stack_up_and_pebble_issues_both_certificates(acme_stack: AcmeStack) -> None:
    def all_issued() -> bool:
        return all(pebble_issued(acme_stack, served(acme_stack, p)) for p in IMPLICIT_TLS)

    wait_until("Pebble's certificate on 465, 993, 995 and 443", all_issued, timeout=ISSUE_TIMEOUT, interval=2)
    for protocol in (*IMPLICIT_TLS, "smtp", "submission"):
        cert = served(acme_stack, protocol)
        assert pebble_issued(acme_stack, cert), f"{protocol}: issued by {cert.issuer.rfc4514_string()}"
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert acme_stack.site.hostname in names.get_values_for_type(x509.DNSName)
    # Both key types, each from Pebble: ECDSA for modern clients, RSA for the others.
    for protocol in ("submissions", "imaps", "https"):
        ecdsa = served(acme_stack, protocol, "ECDHE-ECDSA-AES128-GCM-SHA256")
        rsa_cert = served(acme_stack, protocol, "ECDHE-RSA-AES128-GCM-SHA256")
        assert isinstance(ecdsa.public_key(), ec.EllipticCurvePublicKey)
        assert isinstance(rsa_cert.public_key(), rsa.RSAPublicKey)
        assert pebble_issued(acme_stack, ecdsa)
        assert pebble_issued(acme_stack, rsa_cert)
    # A client trusting only Pebble's chain verifies the whole chain the ports send.
    with acme_stack.imap(ALICE) as imap:
        assert imap.noop()[0] == "OK"
    # `up` reported the certificate state, and `tls status` says the same.
    assert "ACME:" in acme_stack.up_output, acme_stack.up_output[-2000:]
    status = acme_stack.mailstack("tls", "status", "--state", str(acme_stack.state_dir))
    assert status.returncode == 0, status.stderr
    assert "Pebble" in status.stdout, status.stdout
    assert "succeeded" in status.stdout, status.stdout


def next_tlsa(stack: AcmeStack) -> set[str]:
    dns = stack.mailstack("dns", "--format", "json", "--state", str(stack.state_dir))
    assert dns.returncode == 0, dns.stderr
    records = json.loads(dns.stdout)
    records = records["records"] if isinstance(records, dict) else records
    return {r["value"].split()[-1] for r in records if r["type"] == "TLSA" and "next" in r["purpose"]}


def test_forced_renewal_switches_every_port_to_the_prepublished_key_without_a_restart(
    acme_stack: AcmeStack,
) -> None:
    announced = next_tlsa(acme_stack)
    assert len(announced) == 2, f"`mailstack dns` should pin an ECDSA and an RSA next key: {announced}"
    before = serials(acme_stack)
    containers = acme_stack.container_ids()
    # An IMAP session opened before the renewal, and messages sent all through it.
    imap = imaplib.IMAP4_SSL(
        acme_stack.host, acme_stack.ports["imaps"], ssl_context=acme_stack.tls_context(), timeout=30
    )
    imap_auth(imap, ALICE, acme_stack.password(ALICE))
    assert imap.select("INBOX")[0] == "OK"
    sent: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def send_all_along() -> None:
        while not stop.is_set():
            subject = token("during renewal")
            try:
                acme_stack.submit(ALICE, make_message(ALICE, ALICE, subject))
                sent.append(subject)
            except (OSError, smtplib.SMTPException) as exc:
                errors.append(f"{subject}: {exc}")
            time.sleep(0.5)

    sender = threading.Thread(target=send_all_along, name="send-during-renewal", daemon=True)
    sender.start()
    try:
        renew = acme_stack.mailstack("tls", "renew", "--force", "--state", str(acme_stack.state_dir))
        assert renew.returncode == 0, f"renew failed: {renew.stdout}\n{renew.stderr}"

        def switched() -> bool:
            return all(before[p] != s for p, s in serials(acme_stack).items())

        wait_until("a new certificate on 465, 993, 995 and 443", switched, timeout=RELOAD_TIMEOUT, interval=1)
    finally:
        stop.set()
        sender.join(timeout=60)
    assert acme_stack.container_ids() == containers, "a container was restarted"
    # The session from before the reload still works.
    assert imap.noop()[0] == "OK"
    assert imap.search(None, "ALL")[0] == "OK"
    imap.logout()
    assert not errors, f"submission failed during the renewal: {errors[:3]}"
    assert len(sent) >= 3, f"too few messages sent during the renewal: {sent}"
    for subject in sent:
        acme_stack.wait_for_message(ALICE, subject)
    # DANE: both renewed keys are the ones `mailstack dns` announced as next before.
    renewed = {
        spki_sha256(served(acme_stack, "smtp", cipher).public_bytes(Encoding.DER))
        for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256")
    }
    assert renewed == announced, f"renewed keys {renewed} are not the announced next keys {announced}"
    # And `mailstack dns` now announces new next keys.
    assert next_tlsa(acme_stack).isdisjoint(announced)


def check_json(stack: AcmeStack) -> dict[str, dict[str, str]]:
    run = stack.mailstack("check", "--json", "--state", str(stack.state_dir), timeout=240)
    report = json.loads(run.stdout)
    return {r["probe"]: r for r in report["results"]}


def test_unreachable_ca_keeps_the_certificate_and_check_names_the_failure(acme_stack: AcmeStack) -> None:
    before = serials(acme_stack)
    acme_stack.pebble.halt()
    try:
        renew = acme_stack.mailstack("tls", "renew", "--force", "--state", str(acme_stack.state_dir))
        assert renew.returncode == 1, renew.stdout
        assert "cannot reach the ACME directory" in renew.stdout + renew.stderr
        time.sleep(6)  # a reload would have happened by now
        assert serials(acme_stack) == before
        assert set(acme_stack.service_states().values()) == {"healthy"}
        results = check_json(acme_stack)
        assert results["ACME"]["status"] == "warn", results["ACME"]
        assert "cannot reach the ACME directory" in results["ACME"]["reason"]
        assert "next try at" in results["ACME"]["reason"]
        assert results["ACME directory"]["status"] == "warn", results["ACME directory"]
        with acme_stack.imap(ALICE) as imap:
            assert imap.noop()[0] == "OK"
    finally:
        acme_stack.pebble.restart()


def test_issuance_fails_when_the_web_service_cannot_answer_the_challenge(acme_stack: AcmeStack) -> None:
    before = serials(acme_stack)
    stopped = acme_stack.compose("stop", "web", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    try:
        renew = acme_stack.mailstack("tls", "renew", "--force", "--state", str(acme_stack.state_dir))
        assert renew.returncode == 1, renew.stdout
        assert "validation failed" in renew.stdout + renew.stderr, renew.stdout + renew.stderr
    finally:
        started = acme_stack.compose("start", "web", timeout=60)
        assert started.returncode == 0, started.stderr
    wait_until(
        "the web service healthy again",
        lambda: acme_stack.service_states().get("web") == "healthy",
        timeout=60,
        interval=1,
    )
    assert serials(acme_stack) == before
