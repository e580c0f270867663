"""Issue #3, 2: mail from the outside on port 25 reaches mailboxes, aliases and catch-alls."""

from __future__ import annotations

import smtplib

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
    token,
)

pytestmark = pytest.mark.integration


def test_mailbox_receives_mail(stack: Stack) -> None:
    subject = token("inbound to a mailbox")
    stack.deliver(make_message(EXTERNAL_SENDER, ALICE, subject))
    message = parse(stack.wait_for_message(ALICE, subject))
    assert message["Subject"] == subject


def test_alias_with_several_targets_reaches_every_target(stack: Stack) -> None:
    subject = token("inbound to an alias")
    stack.deliver(make_message(EXTERNAL_SENDER, TEAM, subject))
    for target in (ALICE, BOB, DAVE):
        stack.wait_for_message(target, subject)


def test_unknown_local_part_of_catch_all_domain_reaches_the_catch_all(stack: Stack) -> None:
    subject = token("inbound to the catch-all")
    stack.deliver(make_message(EXTERNAL_SENDER, "nobody-here@shop.itest-two.example", subject))
    stack.wait_for_message(ALICE, subject)


def test_subaddress_lands_in_the_users_inbox(stack: Stack) -> None:
    subject = token("inbound to a +tag")
    stack.deliver(make_message(EXTERNAL_SENDER, "bob+news@itest.example", subject))
    stack.wait_for_message(BOB, subject, folder="INBOX")


def test_mailbox_of_the_second_domain_receives_its_own_mail(stack: Stack) -> None:
    """dave's domain has a catch-all: his own address must still reach him, not the catch-all."""
    subject = token("inbound to the second domain")
    stack.deliver(make_message(EXTERNAL_SENDER, DAVE, subject))
    stack.wait_for_message(DAVE, subject)
    assert subject not in stack.subjects(ALICE), "dave's mail went to the catch-all (alice) as well"


def test_unknown_user_of_a_domain_without_catch_all_is_refused_at_rcpt(stack: Stack) -> None:
    smtp = stack.smtp("smtp")
    try:
        smtp.ehlo()
        code, reply = smtp.mail(EXTERNAL_SENDER)
        assert code == 250, f"MAIL FROM refused: {code} {reply!r}"
        code, reply = smtp.rcpt("nobody-here@itest.example")
    finally:
        smtp.close()
    assert code == 550, f"RCPT to an unknown user answered {code} {reply!r}"
    assert reply.startswith(b"5.1.1"), reply


def test_unknown_user_is_refused_without_losing_the_good_recipients(stack: Stack) -> None:
    subject = token("inbound with one bad recipient")
    with pytest.raises(smtplib.SMTPRecipientsRefused):  # every recipient refused → raises
        stack.deliver(make_message(EXTERNAL_SENDER, "nobody-here@itest.example", subject))
    smtp = stack.smtp("smtp")
    try:
        refused = smtp.send_message(
            make_message(EXTERNAL_SENDER, [ALICE, "nobody-here@itest.example"], subject),
            from_addr=EXTERNAL_SENDER,
        )
    finally:
        smtp.close()
    assert set(refused) == {"nobody-here@itest.example"}
    assert refused["nobody-here@itest.example"][0] == 550
    stack.wait_for_message(ALICE, subject)
