"""Issue #3, 8: rspamd sits in the path on port 25 and rejects GTUBE."""

from __future__ import annotations

import smtplib

import pytest

from tests.integration.stack import ALICE, EXTERNAL_SENDER, Stack, make_message, token

pytestmark = pytest.mark.integration

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def test_gtube_on_port_25_is_rejected(stack: Stack) -> None:
    subject = token("gtube")
    message = make_message(EXTERNAL_SENDER, ALICE, subject, f"This is spam.\n\n{GTUBE}\n")
    with pytest.raises(smtplib.SMTPDataError) as rejected:
        stack.deliver(message)
    assert 500 <= rejected.value.smtp_code < 600, rejected.value
    stack.notes.append(f"GTUBE on 25: {rejected.value.smtp_code} {rejected.value.smtp_error!r}")
    assert subject not in stack.subjects(ALICE)
