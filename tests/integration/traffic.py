"""Clients that send on port 25 while a fault happens, and what they saw (test_faults,
test_disk_full, and the e2e engine restart)."""

from __future__ import annotations

import imaplib
import smtplib
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage

from tests.integration.stack import EXTERNAL_SENDER, Stack, make_message, wait_until

#: Three clients send at once, as the issue asks.
SENDERS = 3
BODY = "A small test message from the mailstack fault tests.\n"


@dataclass
class Traffic:
    """What the clients saw: subjects that got 250 after DATA, and the refusals by reply
    (the code, or "dropped" for a connection that closed or never opened without one)."""

    prefix: str
    accepted: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, subject: str, outcome: str) -> None:
        with self.lock:
            if outcome == "250":
                self.accepted.append(subject)
            else:
                self.refused[outcome] += 1

    def summary(self) -> str:
        refused = ", ".join(f"{n}× {what}" for what, n in sorted(self.refused.items())) or "none"
        return f"{len(self.accepted)} accepted, refused: {refused}"


def outcome(connect: Callable[[], smtplib.SMTP], message: EmailMessage, sender: str) -> str:
    """Send ``message`` on a connection from ``connect``: "250" (accepted after DATA), the
    code of the reply that refused it, or "dropped" (no connection, or one that closed
    without a reply)."""
    try:
        smtp = connect()
    except smtplib.SMTPConnectError as exc:
        return str(exc.smtp_code)
    except (smtplib.SMTPException, OSError):
        return "dropped"
    try:
        smtp.send_message(message, from_addr=sender)
    except smtplib.SMTPRecipientsRefused as exc:
        return str(next(iter(exc.recipients.values()))[0])
    except smtplib.SMTPResponseException as exc:
        return str(exc.smtp_code)
    except (smtplib.SMTPException, OSError):
        return "dropped"
    finally:
        smtp.close()
    return "250"


def send_one(stack: Stack, recipient: str, subject: str, body: str = BODY) -> str:
    """One message from outside on the stack's port 25 (see outcome)."""
    message = make_message(EXTERNAL_SENDER, recipient, subject, body)
    return outcome(lambda: stack.smtp("smtp"), message, EXTERNAL_SENDER)


def delivered(stack: Stack, recipient: str, prefix: str) -> Counter[str]:
    """Copies of each subject with ``prefix`` in the recipient's INBOX."""
    return Counter(s for s in stack.subjects(recipient) if s.startswith(prefix))


def wait_for_copies(
    subjects: Callable[[], Iterable[str]], prefix: str, accepted: Iterable[str], *, timeout: float, what: str
) -> Counter[str]:
    """Copies of each subject with ``prefix`` that ``subjects`` lists, once every accepted
    one is there (WaitTimeoutError after ``timeout``, naming ``what``)."""
    wanted = set(accepted)
    copies: Counter[str] = Counter()

    def all_there() -> bool:
        try:
            listed = subjects()
        except (OSError, imaplib.IMAP4.error):
            return False  # a server just back may be slow to answer (an index to rebuild)
        copies.clear()
        copies.update(s for s in listed if s.startswith(prefix))
        return set(copies) >= wanted

    wait_until(what, all_there, timeout=timeout, interval=2)
    return copies


def retry_within(postconf: str) -> float:
    """Seconds until Postfix retries a deferred message at the latest, from `postconf -h
    queue_run_delay minimal_backoff_time`: qmgr looks at the deferred queue every
    queue_run_delay and retries a message once minimal_backoff_time has passed."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return sum(
        float(value[:-1]) * units[value[-1]] if value[-1] in units else float(value)
        for value in postconf.split()
    )
