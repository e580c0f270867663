"""Issue #15, 1: mail at rest is encrypted. With the site key, no message file holds its subject
or body in plain; with a per_user key, root without the password cannot read it, the user
can, and a password change or a recovery keeps old mail readable."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailstack import engine
from mailstack.passwords import hash_password
from mailstack.state.mailcrypt import new_recovery_identity
from tests.integration.stack import (
    BOB,
    Stack,
    fetch_by_subject,
    imap_auth,
    make_message,
    parse,
    smtp_auth,
    token,
    wait_until,
)

pytestmark = pytest.mark.integration

PIA = "pia@itest.example"
NILS = "nils@itest.example"  # encryption: none
FIRST = "Pía’s erstes Paßwort 1"
SECOND = "zweites-Paßwort-2"
THIRD = "drittes 3 ✓"
BOB_MAILDIR = "/var/vmail/itest.example/bob/Maildir"


def _volume_hits(stack: Stack, *markers: str) -> list[str]:
    """Files on the mail volume holding any marker (grep -F over the bytes; none is no output)."""
    args = [arg for marker in markers for arg in ("-e", marker)]
    run = stack.exec("dovecot", "grep", "-rlaF", *args, "/var/vmail", timeout=60)
    assert run.returncode in (0, 1), f"grep failed: {run.stderr}"
    return run.stdout.split()


def _read_body(stack: Stack, user: str, password: str, subject: str) -> bytes | None:
    imap = imaplib.IMAP4_SSL(stack.host, stack.ports["imaps"], ssl_context=stack.tls_context(), timeout=30)
    try:
        imap_auth(imap, user, password)
        raw = fetch_by_subject(imap, "INBOX", subject)
    finally:
        imap.logout()
    return raw


def _login_fails(stack: Stack, user: str, password: str) -> bool:
    imap = imaplib.IMAP4_SSL(stack.host, stack.ports["imaps"], ssl_context=stack.tls_context(), timeout=30)
    try:
        imap_auth(imap, user, password)
    except (imaplib.IMAP4.error, AssertionError):
        return True
    finally:
        imap.shutdown()
    return False


def test_a_delivered_message_is_encrypted_on_disk_and_reads_over_imap_and_pop3(stack: Stack) -> None:
    subject = token("at-rest subject")
    body = f"at-rest body {token('marker')}"
    stack.deliver(make_message("someone@sender-itest.test", BOB, subject, body=body))
    raw = stack.wait_for_message(BOB, subject)
    assert body.encode() in raw
    assert _volume_hits(stack, subject, body) == []  # neither in the message file nor the index cache
    # Every message file of the mailbox starts with mail_crypt's magic.
    heads = stack.exec(
        "dovecot",
        "sh",
        "-c",
        f'for f in {BOB_MAILDIR}/cur/* {BOB_MAILDIR}/new/*; do [ -f "$f" ] && head -c 7 "$f" && echo; done',
    )
    assert heads.stdout.split(), heads.stderr
    assert set(heads.stdout.split()) == {"CRYPTED"}, heads.stdout
    with stack.pop3(BOB) as pop:
        count, _ = pop.stat()
        texts = [b"\n".join(pop.retr(i)[1]) for i in range(1, count + 1)]
    assert any(body.encode() in t for t in texts)


@dataclass
class PerUser:
    identity: Path
    subject: str
    body: str
    old_subject: str  # delivered while pia was still on the site key


def _count(stack: Stack, address: str) -> int:
    run = stack.exec("dovecot", "doveadm", "mailbox", "status", "-u", address, "messages", "INBOX")
    return int(run.stdout.strip().rpartition("=")[2] or 0) if "messages=" in run.stdout else 0


def _deliver(stack: Stack, address: str, subject: str, body: str, expected: int) -> None:
    stack.deliver(make_message("someone@sender-itest.test", address, subject, body=body))
    wait_until(
        f"{expected} message(s) in {address}'s INBOX (doveadm mailbox status, which needs no key)",
        lambda: _count(stack, address) >= expected,
        timeout=30,
    )


@pytest.fixture(scope="module")
def per_user(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PerUser]:
    """pia@ on the site key with one message, then switched to per_user (her key made by
    `mailstack password`) with one more; nils@ with encryption none."""
    identity, recipient = new_recovery_identity()
    key_file = tmp_path_factory.mktemp("recovery") / "recovery.key"
    key_file.write_text(f"# public key: {recipient}\n{identity}\n", encoding="utf-8")
    original = stack.site_path.read_text(encoding="utf-8")
    pia = f'  - address: {PIA}\n    password_hash: "{hash_password(FIRST)}"\n'
    nils = f'  - address: {NILS}\n    password_hash: "{hash_password(FIRST)}"\n    encryption: none\n'
    text = original.replace("\naliases:", pia + nils + "\naliases:", 1)
    stack.site_path.write_text(text + f"\nencryption:\n  recovery: {recipient}\n", encoding="utf-8")
    try:
        stack.reload_site()
        engine.up(stack.project, timeout=180, say=lambda _: None)
        old_subject = token("site-key subject")
        _deliver(stack, PIA, old_subject, "delivered under the site key", 1)
        stack.site_path.write_text(
            stack.site_path.read_text(encoding="utf-8").replace(pia, pia + "    encryption: per_user\n", 1),
            encoding="utf-8",
        )
        stack.cli("password", PIA, stdin=f"{FIRST}\n{FIRST}\n")
        stack.reload_site()
        subject, body = token("per-user subject"), f"per-user body {token('marker')}"
        _deliver(stack, PIA, subject, body, 2)
        yield PerUser(key_file, subject, body, old_subject)
    finally:
        stack.site_path.write_text(original, encoding="utf-8")
        stack.reload_site()
        engine.up(stack.project, timeout=180, say=lambda _: None)


def test_root_without_the_password_cannot_read_per_user_mail_and_the_user_can(
    stack: Stack, per_user: PerUser
) -> None:
    assert _volume_hits(stack, per_user.subject, per_user.body) == []
    fetch = stack.exec("dovecot", "doveadm", "fetch", "-u", PIA, "body", "all")
    assert per_user.body not in fetch.stdout
    assert fetch.returncode != 0
    assert "Private key not available" in fetch.stderr
    raw = _read_body(stack, PIA, FIRST, per_user.subject)
    assert raw is not None
    assert per_user.body in parse(raw).get_content()
    # What the site key wrote before the switch still reads in her sessions.
    old = _read_body(stack, PIA, FIRST, per_user.old_subject)
    assert old is not None
    assert "delivered under the site key" in parse(old).get_content()


def test_a_per_user_mailbox_authenticates_for_submission_through_the_same_passdbs(
    stack: Stack, per_user: PerUser
) -> None:
    """Postfix's SMTP AUTH asks Dovecot's auth service, which goes on to the key passdb."""
    for password, expected in ((FIRST, 235), (FIRST + "x", 535)):
        smtp = stack.smtp("submission")
        try:
            smtp.ehlo()
            smtp.starttls(context=stack.tls_context())
            smtp.ehlo()
            code, reply = smtp_auth(smtp, PIA, password)
            assert code == expected, reply
        finally:
            smtp.close()


def test_after_a_password_change_old_mail_reads_with_the_new_password_only(
    stack: Stack, per_user: PerUser
) -> None:
    stack.cli("password", PIA, stdin="not her password\nx\n", code=1)
    stack.cli("password", PIA, stdin=f"{FIRST}\n{SECOND}\n")
    stack.reload_site()
    raw = _read_body(stack, PIA, SECOND, per_user.subject)
    assert raw is not None
    assert per_user.body in parse(raw).get_content()
    assert _login_fails(stack, PIA, FIRST)


def test_recover_with_the_recovery_key_sets_a_password_that_reads_old_mail(
    stack: Stack, per_user: PerUser, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text(new_recovery_identity()[0] + "\n", encoding="utf-8")
    before = stack.site_path.read_bytes()
    output = stack.cli("recover", PIA, "--recovery-key", str(wrong), stdin=f"{THIRD}\n", code=1)
    assert "does not open" in output
    assert output.count("\n") == 1, output  # one clear line
    assert stack.site_path.read_bytes() == before
    stack.cli("recover", PIA, "--recovery-key", str(per_user.identity), stdin=f"{THIRD}\n")
    stack.reload_site()
    raw = _read_body(stack, PIA, THIRD, per_user.subject)
    assert raw is not None
    assert per_user.body in parse(raw).get_content()


def test_a_mailbox_with_encryption_none_stores_plain(stack: Stack, per_user: PerUser) -> None:
    subject = token("plain subject")
    stack.deliver(make_message("someone@sender-itest.test", NILS, subject))
    wait_until(
        f"a file of {NILS} holding its subject in plain",
        lambda: any("/nils/" in hit for hit in _volume_hits(stack, subject)),
        timeout=30,
    )
