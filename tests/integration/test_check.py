"""Issue #6, item 3: `mailstack check` against the running stack, healthy and broken."""

from __future__ import annotations

import hashlib
import imaplib
import json
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailstack import engine
from mailstack.check.roundtrip import selectable_folders
from mailstack.state import State
from tests.integration.stack import ALICE, BOB, CAROL, Stack, close_imap, folder_subjects

pytestmark = pytest.mark.integration

MAILSTACK = str(Path(sys.executable).with_name("mailstack"))
RECOVERY_TIMEOUT = 180.0


def run_check(stack: Stack) -> tuple[int, dict[str, Any], str]:
    command = [MAILSTACK, "check", str(stack.site_path), "--json"]
    command += ["-o", str(stack.out_dir), "--state", str(stack.state_dir)]
    run = subprocess.run(command, capture_output=True, text=True, check=False, timeout=180)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"mailstack check --json printed no JSON (exit {run.returncode}):\n{run.stdout}{run.stderr}"
        )
    return run.returncode, report, run.stdout + run.stderr


def failures(report: dict[str, Any]) -> dict[str, str]:
    return {r["probe"]: r["reason"] for r in report["results"] if r["status"] == "fail"}


@pytest.fixture
def restore(stack: Stack) -> Iterator[list[str]]:
    """Services a test stops; started again and waited for (healthy) afterwards."""
    stopped: list[str] = []
    yield stopped
    if stopped:
        stack.compose("start", *stopped, timeout=120)
        engine.wait_healthy(stack.project, RECOVERY_TIMEOUT, say=lambda _: None)
        if "dovecot" in stopped:
            # Idle smtpd processes keep SASL connections to the Dovecot that was stopped; each
            # would answer its next AUTH with 454 once. A reload gives the next tests fresh ones.
            run = stack.exec("postfix", "postfix", "reload")
            assert run.returncode == 0, run.stderr


def probe_mailbox_messages(stack: Stack) -> dict[str, list[str]]:
    """Every folder of the probe mailbox → the subjects in it."""
    password = State(stack.state_dir, write=False).probe_password()
    imap = imaplib.IMAP4_SSL(stack.host, stack.ports["imaps"], ssl_context=stack.tls_context(), timeout=30)
    try:
        imap.login(stack.project.site.probe_address, password)
        _, listing = imap.list()
        return {folder: folder_subjects(imap, folder) for folder in selectable_folders(listing)}
    finally:
        close_imap(imap)


def test_a_healthy_stack_passes_every_probe_quickly_and_leaves_no_probe_mail(stack: Stack) -> None:
    started = time.monotonic()
    code, report, output = run_check(stack)
    seconds = time.monotonic() - started
    stack.notes.append(
        f"mailstack check: {len(report['results'])} probes in {report['seconds']}s ({seconds:.1f}s)"
    )
    assert failures(report) == {}, output
    assert code == 0, output
    assert report["ok"] is True
    probes = {r["probe"] for r in report["results"]}
    expected_probes = ["round trip", "DKIM RSA", "DKIM Ed25519", "POP3", "GTUBE", "open relay", "clean-up"]
    expected_probes += ["TLSA", "autoconfig", "autodiscover", f"http port {stack.ports['http']}"]
    expected_probes += [f"MTA-STS {domain}" for domain in stack.project.site.domain_names]
    for expected in expected_probes:
        assert expected in probes, f"no {expected!r} probe in {sorted(probes)}"
    assert "AUTH on port 25" in probes
    assert "AUTH on submission" in probes
    for protocol, port in stack.ports.items():
        assert f"{protocol} port {port}" in probes, f"no probe of {protocol} port {port}"
    left = {folder: subjects for folder, subjects in probe_mailbox_messages(stack).items() if subjects}
    assert left == {}, f"probe mail left behind: {left}"
    for user in (ALICE, BOB, CAROL):
        stray = [s for s in stack.subjects(user) if s.startswith("mailstack check")]
        assert stray == [], f"{user} received probe mail: {stray}"


def test_with_dovecot_stopped_check_fails_naming_imap_pop3_or_lmtp(stack: Stack, restore: list[str]) -> None:
    stack.compose("stop", "dovecot", timeout=120)
    restore.append("dovecot")
    code, report, output = run_check(stack)
    failed = failures(report)
    assert code == 1, output
    assert report["ok"] is False
    assert any(word in reason for reason in failed.values() for word in ("IMAP", "POP3", "LMTP")), failed
    assert "imaps port " + str(stack.ports["imaps"]) in failed, failed


def test_with_rspamd_stopped_the_dkim_or_gtube_probe_fails(stack: Stack, restore: list[str]) -> None:
    stack.compose("stop", "rspamd", timeout=120)
    restore.append("rspamd")
    code, report, output = run_check(stack)
    failed = failures(report)
    assert code == 1, output
    assert {"GTUBE", "DKIM RSA", "submission"} & set(failed), failed


def test_the_tlsa_record_is_the_sha256_of_the_served_public_key(stack: Stack) -> None:
    """Independently of `check`: a STARTTLS handshake on 25, the certificate's SPKI hashed here,
    against `mailstack dns --format json`."""
    command = [MAILSTACK, "dns", str(stack.site_path), "--format", "json", "--state", str(stack.state_dir)]
    records = json.loads(
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    )
    tlsa = [r["value"] for r in records if r["type"] == "TLSA" and r["name"].startswith("_25._tcp.")]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(stack.host, stack.ports["smtp"], timeout=30) as smtp:
        smtp.starttls(context=context)
        assert isinstance(smtp.sock, ssl.SSLSocket)
        der = smtp.sock.getpeercert(binary_form=True)
    assert der is not None
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert f"3 1 1 {hashlib.sha256(spki).hexdigest()}" in tlsa, tlsa
