"""Issue #3, 3 and 4: where AUTH is offered, that it checks UTF-8 passwords, and who may send as whom."""

from __future__ import annotations

import re

import pytest

from tests.integration.stack import (
    ALICE,
    BOB,
    DAVE,
    EXTERNAL_SENDER,
    TEAM,
    Stack,
    make_message,
    parse,
    smtp_auth,
    token,
)

pytestmark = pytest.mark.integration

USERS = [ALICE, BOB]  # ARGON2ID and SHA512-CRYPT hashes, both with UTF-8 passwords


def test_port_25_offers_no_auth(stack: Stack) -> None:
    smtp = stack.smtp("smtp")
    try:
        smtp.ehlo()
        assert not smtp.has_extn("auth"), f"port 25 offers AUTH {smtp.esmtp_features.get('auth')}"
        assert smtp.has_extn("starttls"), "port 25 offers no STARTTLS"
        smtp.starttls(context=stack.tls_context())
        smtp.ehlo()
        assert not smtp.has_extn("auth"), "port 25 offers AUTH after STARTTLS"
        code, reply = smtp_auth(smtp, ALICE, stack.password(ALICE))
        assert code >= 500, f"AUTH on port 25 answered {code} {reply!r}"
    finally:
        smtp.close()


def test_submission_offers_no_auth_before_starttls(stack: Stack) -> None:
    smtp = stack.smtp("submission")
    try:
        smtp.ehlo()
        assert smtp.has_extn("starttls"), "587 offers no STARTTLS"
        assert not smtp.has_extn("auth"), f"587 offers AUTH {smtp.esmtp_features.get('auth')} before STARTTLS"
        code, reply = smtp_auth(smtp, ALICE, stack.password(ALICE))
        assert code >= 500, f"AUTH before STARTTLS answered {code} {reply!r}"
        assert code != 535, "587 checked a password sent in the clear"
        code, reply = smtp.mail(ALICE)
        if code == 250:
            code, reply = smtp.rcpt(BOB)
        assert code >= 500, f"587 took a message without TLS and AUTH: {code} {reply!r}"
    finally:
        smtp.close()


@pytest.mark.parametrize("protocol", ["submission", "submissions"])
@pytest.mark.parametrize("user", USERS)
def test_auth_accepts_the_right_utf8_password(stack: Stack, protocol: str, user: str) -> None:
    smtp = stack.smtp(protocol)
    try:
        smtp.ehlo()
        if protocol == "submission":
            smtp.starttls(context=stack.tls_context())
            smtp.ehlo()
        assert "PLAIN" in smtp.esmtp_features.get("auth", "").upper().split(), smtp.esmtp_features
        code, reply = smtp_auth(smtp, user, stack.password(user))
        assert code == 235, f"AUTH PLAIN for {user} on {protocol} answered {code} {reply!r}"
    finally:
        smtp.close()


@pytest.mark.parametrize("protocol", ["submission", "submissions"])
@pytest.mark.parametrize("user", USERS)
def test_auth_refuses_a_wrong_password(stack: Stack, protocol: str, user: str) -> None:
    smtp = stack.smtp(protocol)
    try:
        smtp.ehlo()
        if protocol == "submission":
            smtp.starttls(context=stack.tls_context())
            smtp.ehlo()
        wrong = stack.password(user).upper()  # the same password, in other case
        code, reply = smtp_auth(smtp, user, wrong)
        assert code == 535, f"AUTH PLAIN with a wrong password for {user} on {protocol}: {code} {reply!r}"
    finally:
        smtp.close()


def _refusal(stack: Stack, user: str, mail_from: str, header_from: str) -> tuple[int, bytes]:
    """Send as ``user``; return the first non-success reply (250 if all went through)."""
    with stack.submission(user) as smtp:
        code, reply = smtp.mail(mail_from)
        if code != 250:
            return code, reply
        code, reply = smtp.rcpt(BOB)
        if code not in (250, 251):
            return code, reply
        return smtp.data(make_message(header_from, BOB, token("send-as probe")).as_bytes())


@pytest.mark.parametrize("other", [BOB, DAVE])
def test_envelope_sender_of_someone_else_is_refused(stack: Stack, other: str) -> None:
    code, reply = _refusal(stack, ALICE, other, other)
    assert code == 553, f"alice sending as {other} answered {code} {reply!r}"
    assert b"not owned by user" in reply or b"5.7.1" in reply, reply


@pytest.mark.parametrize("header_from", [BOB, "bob+news@itest.example", "someone@elsewhere-itest.invalid"])
def test_header_from_of_someone_else_is_refused(stack: Stack, header_from: str) -> None:
    """Envelope alice, From: another — DESIGN §4 'may only use their own or send_as addresses'
    (issue #13, 5: other servers judge the site by the header From)."""
    code, reply = _refusal(stack, ALICE, ALICE, header_from)
    assert code == 554, f"alice sending with From: {header_from} answered {code} {reply!r}"
    named = re.sub(r"\+[^@]*@", "@", header_from)  # Rspamd names the address without its +tag
    assert f"header From <{named}> is not an address of the login {ALICE}".encode() in reply, reply


@pytest.mark.parametrize("header_from", [TEAM, "alice+work@itest.example"])
def test_header_from_of_a_send_as_address_or_a_subaddress_is_accepted(stack: Stack, header_from: str) -> None:
    code, reply = _refusal(stack, ALICE, ALICE, header_from)
    assert code == 250, f"alice sending with From: {header_from} answered {code} {reply!r}"


@pytest.mark.parametrize(("mail_from", "header_from"), [(EXTERNAL_SENDER, ALICE), (ALICE, EXTERNAL_SENDER)])
def test_an_own_address_from_a_client_that_did_not_log_in_is_refused(
    stack: Stack, mail_from: str, header_from: str
) -> None:
    """The forged 'mail from the boss' on port 25: no DNS needed to refuse it (issue #13, 2)."""
    smtp = stack.smtp("smtp")
    try:
        smtp.ehlo()
        code, reply = smtp.mail(mail_from)
        if code == 250:
            code, reply = smtp.rcpt(BOB)
        if code == 250:
            code, reply = smtp.data(make_message(header_from, BOB, token("forged boss")).as_bytes())
    finally:
        smtp.close()
    assert code == 554, f"port 25 took {mail_from} / From: {header_from}: {code} {reply!r}"
    assert f"<{ALICE}> is an address of this site: log in to send as it".encode() in reply, reply


def test_send_as_address_is_allowed(stack: Stack) -> None:
    subject = token("sent as team")
    stack.submit(ALICE, make_message(TEAM, BOB, subject), mail_from=TEAM)
    message = parse(stack.wait_for_message(BOB, subject))
    assert message["From"] == TEAM


def test_own_address_is_allowed_on_465(stack: Stack) -> None:
    subject = token("sent on 465")
    stack.submit(DAVE, make_message(DAVE, ALICE, subject), protocol="submissions")
    stack.wait_for_message(ALICE, subject)


def test_submission_requires_auth_for_relaying(stack: Stack) -> None:
    smtp = stack.smtp("submission")
    try:
        smtp.ehlo()
        smtp.starttls(context=stack.tls_context())
        smtp.ehlo()
        code, reply = smtp.mail(ALICE)
        if code == 250:
            code, reply = smtp.rcpt("victim@elsewhere-itest.invalid")
    finally:
        smtp.close()
    assert code >= 500, f"587 without AUTH accepted a relay attempt: {code} {reply!r}"
