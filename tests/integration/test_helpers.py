"""Issue #3, 13: the suite's own waits are bounded, and a failure shows the services' logs."""

from __future__ import annotations

import time

import pytest

from tests.integration.stack import ALICE, SERVICES, Stack, WaitTimeoutError, token, wait_until

pytestmark = pytest.mark.integration


def test_wait_until_gives_up_in_time_and_names_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError, match="waiting for the moon to turn blue"):
        wait_until("the moon to turn blue", lambda: False, timeout=1, interval=0.1)
    assert time.monotonic() - started < 3


def test_wait_for_message_is_bounded_and_says_what_it_awaited(stack: Stack) -> None:
    subject = token("never sent")
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as gave_up:
        stack.wait_for_message(ALICE, subject, timeout=2)
    assert time.monotonic() - started < 15
    text = str(gave_up.value)
    for part in (subject, ALICE, "INBOX", "2s"):
        assert part in text, text


def test_failure_report_carries_every_services_logs(stack: Stack) -> None:
    """conftest attaches stack.all_logs() to a failing test's report; it has every service."""
    logs = stack.all_logs(5)
    sections = logs.split("===== ")[1:]
    assert [s.split(" ", 1)[0] for s in sections] == list(SERVICES)
    empty = [s.split(" ", 1)[0] for s in sections if len(s.strip().splitlines()) < 2]
    assert not empty, f"no log lines from {empty}:\n{logs}"
