"""Issue #3, 7: POP3 over implicit TLS (RETR, DELE), STLS required on 110."""

from __future__ import annotations

import poplib

import pytest

from tests.integration.stack import BOB, EXTERNAL_SENDER, Stack, make_message, parse, token

pytestmark = pytest.mark.integration


def find(pop: poplib.POP3, subject: str) -> int | None:
    """The message number whose Subject is ``subject`` (TOP n 0 over every message)."""
    _, listing, _ = pop.list()
    for entry in listing:
        number = int(entry.split()[0])
        _, head, _ = pop.top(number, 0)
        if any(line.decode("utf-8", "replace") == f"Subject: {subject}" for line in head):
            return number
    return None


def test_pop3s_retr_and_dele(stack: Stack) -> None:
    subject = token("pop3")
    body = "Fetch me over POP3, then delete me.\n"
    stack.deliver(make_message(EXTERNAL_SENDER, BOB, subject, body))
    stack.wait_for_message(BOB, subject)
    with stack.pop3(BOB) as pop:
        number = find(pop, subject)
        assert number is not None, f"POP3 LIST/TOP of bob does not show {subject!r}"
        _, lines, _ = pop.retr(number)
        message = parse(b"\r\n".join(lines) + b"\r\n")
        assert message["Subject"] == subject
        content = message.get_content() if not message.is_multipart() else ""
        assert "Fetch me over POP3" in str(content)
        reply = pop.dele(number)
        assert reply.startswith(b"+OK"), reply
    with stack.pop3(BOB) as pop:
        assert find(pop, subject) is None, "the message is still there after DELE and QUIT"
    assert subject not in stack.subjects(BOB), "IMAP still shows the message POP3 deleted"


def test_pop3_110_refuses_user_pass_before_stls(stack: Stack) -> None:
    pop = poplib.POP3(stack.host, stack.ports["pop3"], timeout=30)
    try:
        assert "STLS" in pop.capa(), pop.capa()
        with pytest.raises(poplib.error_proto) as refused:
            pop.user(BOB)  # Dovecot refuses USER already; PASS would not get the chance
        stack.notes.append(f"POP3 110 before STLS: {refused.value}")
        pop.stls(context=stack.tls_context())
        pop.user(BOB)
        reply = pop.pass_(stack.password(BOB))
        assert reply.startswith(b"+OK"), reply
        pop.quit()
    finally:
        pop.close()
