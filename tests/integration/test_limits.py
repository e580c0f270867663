"""Issue #3, 9: limits.message_size and quotas are enforced during the SMTP dialogue, never by a bounce."""

from __future__ import annotations

import time

import pytest

from tests.integration.stack import (
    ALICE,
    BOB,
    CAROL,
    EXTERNAL_SENDER,
    Stack,
    filler,
    make_message,
    smtp_auth,
    token,
)

pytestmark = pytest.mark.integration

KIB = 1024


def test_message_over_the_size_limit_is_refused_at_mail_from_with_size(stack: Stack) -> None:
    limit = stack.site.limits.message_size
    message = make_message(EXTERNAL_SENDER, ALICE, token("too big, SIZE"), filler(limit + 64 * KIB))
    smtp = stack.smtp("smtp")
    try:
        smtp.ehlo()
        advertised = int(smtp.esmtp_features.get("size", "0") or 0)
        assert advertised == limit, f"EHLO advertises SIZE {advertised}, limits.message_size is {limit}"
        code, reply = smtp.mail(EXTERNAL_SENDER, [f"SIZE={len(message.as_bytes())}"])
    finally:
        smtp.close()
    assert code == 552, f"MAIL FROM with SIZE over the limit answered {code} {reply!r}"


def test_message_over_the_size_limit_is_refused_after_data_without_size(stack: Stack) -> None:
    limit = stack.site.limits.message_size
    subject = token("too big, no SIZE")
    message = make_message(EXTERNAL_SENDER, ALICE, subject, filler(limit + 64 * KIB))
    smtp = stack.smtp("smtp")
    try:
        smtp.ehlo()
        code, reply = smtp.mail(EXTERNAL_SENDER)  # no SIZE parameter: postfix must count
        assert code == 250, f"MAIL FROM answered {code} {reply!r}"
        code, reply = smtp.rcpt(ALICE)
        assert code == 250, f"RCPT answered {code} {reply!r}"
        code, reply = smtp.data(message.as_bytes())
    finally:
        smtp.close()
    assert code == 552, f"DATA over the size limit answered {code} {reply!r}"
    assert subject not in stack.subjects(ALICE)


def test_message_just_under_the_size_limit_is_delivered(stack: Stack) -> None:
    limit = stack.site.limits.message_size
    subject = token("just under the limit")
    stack.deliver(make_message(EXTERNAL_SENDER, ALICE, subject, filler(limit - 48 * KIB)))
    stack.wait_for_message(ALICE, subject)


def _queue_ids(stack: Stack) -> list[str]:
    return [str(entry.get("queue_id")) for entry in stack.queue()]


def _send_to_carol(stack: Stack, subject: str, *, via: str) -> tuple[int, bytes, str]:
    """One ~450K message to carol; returns (code, reply, stage) of the first refusal, or 250."""
    size = stack.site.limits.message_size - 60 * KIB
    sender = EXTERNAL_SENDER if via == "smtp" else BOB
    message = make_message(sender, CAROL, subject, filler(size))
    if via == "smtp":
        smtp = stack.smtp("smtp")
        smtp.ehlo()
    else:
        smtp = stack.smtp("submission")
        smtp.ehlo()
        smtp.starttls(context=stack.tls_context())
        smtp.ehlo()
        code, reply = smtp_auth(smtp, BOB, stack.password(BOB))
        assert code == 235, f"AUTH for bob: {code} {reply!r}"
    try:
        body = message.as_bytes()
        code, reply = smtp.mail(sender, [f"SIZE={len(body)}"])
        if code != 250:
            return code, reply, "MAIL FROM"
        code, reply = smtp.rcpt(CAROL)
        if code not in (250, 251):
            return code, reply, "RCPT TO"
        code, reply = smtp.data(body)
        return code, reply, "DATA"
    finally:
        smtp.close()


@pytest.mark.parametrize("via", ["smtp", "submission"])
def test_over_quota_mailbox_refuses_during_smtp_without_a_bounce(stack: Stack, via: str) -> None:
    stack.clear_mailbox(CAROL)
    if via == "submission":
        stack.clear_mailbox(BOB)
    accepted: list[str] = []
    refusal: tuple[int, bytes, str] | None = None
    for attempt in range(8):  # 1M quota, ~450K messages: full after 2-3, whatever the grace
        subject = token(f"quota fill {attempt}")
        code, reply, stage = _send_to_carol(stack, subject, via=via)
        if code != 250:
            refusal = (code, reply, stage)
            break
        accepted.append(subject)
        stack.wait_for_message(CAROL, subject)  # delivered (quota used) before the next try
    assert refusal is not None, f"carol (quota 1M) accepted {len(accepted)} messages of ~450K each"
    code, reply, stage = refusal
    stack.notes.append(f"quota via {via}: {len(accepted)} accepted, then {code} {reply!r} at {stage}")
    assert accepted, f"carol refused the very first message: {code} {reply!r} at {stage}"
    assert code in (452, 552), f"over quota answered {code} {reply!r} at {stage}"
    assert stage in ("RCPT TO", "DATA"), stage
    # No bounce: nothing waits in the queue (a bounce to the outside would sit there) and,
    # for the local sender, nothing arrives in bob's INBOX.
    time.sleep(3)
    assert _queue_ids(stack) == [], f"postfix queue is not empty after the refusal: {stack.queue()}"
    if via == "submission":
        bounces = [s for s in stack.subjects(BOB) if "undeliver" in s.lower() or "returned" in s.lower()]
        assert not bounces, f"bob got a bounce: {bounces}"
    assert len(stack.subjects(CAROL)) == len(accepted)
    stack.clear_mailbox(CAROL)  # leave her empty for the next parameter


def test_quota_refusal_in_the_log_is_not_a_delivery_failure(stack: Stack) -> None:
    """The over-quota refusal above happened in smtpd (NOQUEUE), not in lmtp after queueing."""
    lines = [line for line in stack.logs("postfix", 2000).splitlines() if "carol@itest.example" in line]
    lmtp_failures = [line for line in lines if "status=bounced" in line or "status=deferred" in line]
    assert not lmtp_failures, "\n".join(lmtp_failures[-5:])
