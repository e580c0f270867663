"""Issue #12, 3: a service of the stack that crashes mid-delivery costs no mail, and the mail
that waited for it flows again within two minutes of its return, without an admin."""

from __future__ import annotations

import smtplib
import subprocess
import threading
import time
from datetime import UTC, datetime

import pytest

from tests.integration.stack import CAROL, EXTERNAL_SENDER, Stack, make_message, token, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SENDERS = 3
#: Each sender goes on until Dovecot is healthy again (so that mail arrives while it is away,
#: whatever the machine's speed), up to this many messages.
MESSAGES_PER_SENDER = 150
#: The crash comes after this many messages were accepted, so that some are on their way
#: to Dovecot (in Postfix's active queue) when it dies.
CRASH_AFTER = 12
#: The issue's bound: queued local mail flows again this long after the service is back.
FLOW_AGAIN_WITHIN = 120.0


def _pid1(stack: Stack, service: str) -> int:
    container = stack.container_ids()[service]
    run = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", container],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return int(run.stdout.strip())


def test_a_dovecot_crash_mid_delivery_loses_nothing_and_mail_flows_again(stack: Stack) -> None:
    stack.clear_mailbox(CAROL)
    prefix = token("crash")
    accepted: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    crashed = threading.Event()
    back_again = threading.Event()

    def send(sender: int) -> None:
        for n in range(MESSAGES_PER_SENDER):
            if back_again.is_set():
                return
            subject = f"{prefix} {sender}-{n}"
            try:
                smtp = stack.smtp("smtp")
                try:
                    smtp.send_message(
                        make_message(EXTERNAL_SENDER, CAROL, subject), from_addr=EXTERNAL_SENDER
                    )
                finally:
                    smtp.close()
            except (smtplib.SMTPException, OSError):
                # A temporary refusal while Dovecot is away (its quota policy answers at
                # RCPT): a real sender keeps the message and tries again later.
                with lock:
                    refused.append(subject)
                continue
            with lock:
                accepted.append(subject)
            if crashed.is_set():
                time.sleep(0.05)

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(SENDERS)]
    for thread in threads:
        thread.start()
    wait_until(f"{CRASH_AFTER} accepted messages", lambda: len(accepted) >= CRASH_AFTER, timeout=60)
    before = stack.container_ids()["dovecot"]
    # SIGKILL of the container's PID 1 from the host, as a crash would: no `docker kill`,
    # which Docker counts as a stop by hand.
    killed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    subprocess.run(["kill", "-KILL", str(_pid1(stack, "dovecot"))], check=True, timeout=10)
    crashed.set()
    try:
        wait_until(
            "dovecot to be healthy again after its crash",
            lambda: stack.service_states().get("dovecot") == "healthy",
            timeout=90,
            interval=1,
        )
    finally:
        back_again.set()
    back = time.monotonic()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a sender hung"
    assert stack.container_ids()["dovecot"] == before, (
        "compose replaced the container instead of restarting it"
    )

    def arrived() -> set[str]:
        return {s for s in stack.subjects(CAROL) if s.startswith(prefix)}

    try:
        wait_until(
            f"all {len(accepted)} accepted messages in carol's INBOX",
            lambda: arrived() >= set(accepted),
            timeout=FLOW_AGAIN_WITHIN,
            interval=2,
        )
    finally:
        stack.notes.append(
            f"dovecot crash: {len(accepted)} accepted, {len(refused)} refused (4xx), "
            f"all there {time.monotonic() - back:.0f}s after it was healthy"
        )
    missing = set(accepted) - arrived()
    assert not missing, f"lost: {sorted(missing)}"
    # Without a delivery that the crash interrupted, the test proved nothing about the stall:
    # Postfix's log since the kill shows deferrals to dovecot, and the flush that ended them.
    since = stack.compose("logs", "--no-color", "--since", killed_at, "postfix").stdout.splitlines()
    deferrals = [line for line in since if "status=deferred" in line and "dovecot" in line]
    stack.notes.append(f"dovecot crash: {len(deferrals)} deliveries deferred by it (postfix log since)")
    assert deferrals, "no delivery to dovecot was deferred by the crash: the requeue was not exercised"
    assert any("requeue-local" in line and "answers again" in line for line in since), since[-20:]
