"""Issue #13, 3: spam goes to Junk at delivery, and users teach Rspamd by moving mail.

Rspamd marks mail whose score reaches add_header (6) with "X-Spam-Status: Yes"; a global Sieve
script files it into Junk before the user's own script. Moving a message into Junk (IMAPSieve)
trains Rspamd's Bayes as spam, moving it out as ham, and a learn that fails never fails the move.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mailstack.render.dovecot import JUNK_FOLDER
from tests.integration.managesieve import ManageSieve
from tests.integration.stack import (
    BOB,
    EXTERNAL_SENDER,
    Stack,
    fetch_by_subject,
    make_message,
    parse,
    token,
    wait_until,
)

pytestmark = pytest.mark.integration

# templates/compose/rspamd/local.d/actions.conf
ADD_HEADER = 6.0
REJECT = 15.0
STATUS = re.compile(r"^(Yes|No), score=(-?\d+\.\d+)$")
LEARN_TIMEOUT = 30.0
# rspamd-learn's curl gives up after 5 s, before Dovecot's own 10 s limit on a pipe program.
MOVE_TIMEOUT = 8.0
SKIPPED_MOVE = 2.0
LEARN_FAILED = "/tmp/rspamd-learn.failed"  # rspamd-learn's mark, inside the dovecot container

# Read as words; a list literal of them would take thirty lines.
WORDS = (  # noqa: SIM905
    "invoice meeting budget harbour lantern orchard copper meadow ledger journey "
    "quarterly figures shipment warehouse schedule committee proposal garden river "
    "mountain library station bakery bicycle umbrella festival concert theatre museum"
).split()


def prose(label: str, sentences: int = 8) -> str:
    """A realistic body of its own (Bayes refuses short texts and the same text twice)."""
    rng = secrets.SystemRandom()
    seed = secrets.token_hex(6)
    lines = [f"Hello, this is {label} number {seed} from the integration suite."]
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(12)]
        lines.append(" ".join(words).capitalize() + f" {secrets.token_hex(3)}.")
    return "\n".join(lines) + "\n"


def suspicious(subject: str, body: str) -> bytes:
    """A message between add_header and reject, by rules Rspamd applies to every message:
    a repeated Subject and To (MULTIPLE_UNIQUE_HEADERS) and a subject in capitals
    (SUBJ_ALL_CAPS). The GTUBE variant for add_header is off by default (gtube_patterns =
    reject), and turning it on would also let senders skip the scan with the no-action one."""
    raw = bytes(make_message(EXTERNAL_SENDER, BOB, subject, body))
    head, _, rest = raw.partition(b"\n\n")
    extra = f"Subject: {subject}\nTo: {BOB}\n".encode()
    return head + b"\n" + extra + b"\n" + rest


def spam_status(raw: bytes) -> tuple[str, float]:
    values = parse(raw).get_all("X-Spam-Status") or []
    assert len(values) == 1, f"expected one X-Spam-Status header, found {values}"
    match = STATUS.match(str(values[0]))
    assert match, f"unexpected X-Spam-Status {values[0]!r}"
    return match.group(1), float(match.group(2))


def learned(stack: Stack) -> dict[str, int]:
    """How many messages Rspamd's Bayes learned per class, read where it keeps them: the RS
    hash in Redis. (`rspamc stat` shows a copy that Rspamd refreshes only now and then.)"""
    script = (
        'REDISCLI_AUTH="$(head -n 1 /run/mailstack/state/secrets/redis)" '
        "redis-cli --no-auth-warning HMGET RS learns_spam learns_ham"
    )
    run = stack.exec("redis", "sh", "-c", script)
    assert run.returncode == 0, f"redis-cli: {run.stderr.strip() or run.stdout.strip()}"
    # One line per field; a class never learned has no field yet, and an empty line.
    spam, ham = [*run.stdout.splitlines(), "", ""][:2]
    assert (spam + ham).isdigit() or not (spam + ham), f"redis-cli answered {run.stdout!r}"
    return {"spam": int(spam or 0), "ham": int(ham or 0)}


def wait_for_learned(stack: Stack, kind: str, at_least: int) -> int:
    seen: list[int] = []

    def probe() -> bool:
        seen.append(learned(stack)[kind])
        return seen[-1] >= at_least

    wait_until(
        f"Rspamd's count of messages learned as {kind} to reach {at_least}",
        probe,
        timeout=LEARN_TIMEOUT,
        interval=1.0,
        detail=f"last seen {seen[-1:]}; dovecot log:\n{stack.logs('dovecot', 30)}",
    )
    return seen[-1]


def deliver_to_inbox(stack: Stack, label: str) -> str:
    subject = token(label)
    stack.deliver(make_message(EXTERNAL_SENDER, BOB, subject, prose(label)))
    stack.wait_for_message(BOB, subject)
    return subject


def move(stack: Stack, subject: str, source: str, target: str, *, user: str = BOB) -> float:
    """IMAP MOVE of ``user``'s message with ``subject``; returns how long the server took."""
    with stack.imap(user) as imap:
        typ, data = imap.select(f'"{source}"')
        assert typ == "OK", f"SELECT {source}: {data}"
        typ, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
        uids = data[0].split() if typ == "OK" and data and data[0] else []
        assert len(uids) == 1, f"expected one {subject!r} in {source}, found {uids}"
        started = time.monotonic()
        typ, data = imap.uid("MOVE", uids[0].decode(), f'"{target}"')
        took = time.monotonic() - started
        assert typ == "OK", f"MOVE {subject!r} from {source} to {target} answered {typ} {data}"
    return took


def test_spam_goes_to_junk_and_clean_mail_to_the_inbox(stack: Stack) -> None:
    # In capitals, token included: SUBJ_ALL_CAPS counts only subjects without lower case.
    spam_subject = token("quarterly figures urgent").upper()
    spam = parse(suspicious(spam_subject, prose("a suspicious message")))
    # Forged by the sender to pass as clean: Rspamd replaces it with its own verdict.
    spam["X-Spam-Status"] = "No, score=0.00"
    stack.deliver(spam)
    clean_subject = token("lunch on thursday")
    stack.deliver(make_message(EXTERNAL_SENDER, BOB, clean_subject, prose("a clean message")))

    raw = stack.wait_for_message(BOB, spam_subject, folder=JUNK_FOLDER)
    verdict, score = spam_status(raw)
    assert verdict == "Yes", raw[:600]
    assert ADD_HEADER <= score < REJECT, f"score {score} is not between add_header and reject"
    stack.notes.append(f"junk: the suspicious probe scored {score} and went to {JUNK_FOLDER}")

    raw = stack.wait_for_message(BOB, clean_subject)
    verdict, score = spam_status(raw)
    assert verdict == "No", f"the clean message scored {score}"
    with stack.imap(BOB) as imap:
        assert fetch_by_subject(imap, "INBOX", spam_subject) is None, "the spam was also kept in INBOX"
        assert fetch_by_subject(imap, JUNK_FOLDER, clean_subject) is None, "the clean message is in Junk"


USER_SCRIPT = """require ["fileinto", "mailbox"];
# mailstack integration suite: the user's own rule, after the global spam rule
if header :contains "subject" "[itest-project]" {
  fileinto :create "Projects";
  stop;
}
"""


@contextmanager
def user_script(stack: Stack, user: str, script: str) -> Iterator[None]:
    """``script`` active for ``user`` (uploaded over ManageSieve), deactivated afterwards."""
    client = ManageSieve(stack.host, stack.ports["managesieve"], timeout=30)
    try:
        client.starttls(stack.tls_context())
        response = client.authenticate_plain(user, stack.password(user))
        assert response.status == "OK", f"ManageSieve AUTHENTICATE: {response}"
        client.putscript("itest-junk", script)
        client.setactive("itest-junk")
        try:
            yield
        finally:
            client.setactive("")
    finally:
        client.logout()


def test_the_spam_rule_runs_before_the_users_own_script(stack: Stack) -> None:
    with user_script(stack, BOB, USER_SCRIPT):
        clean = token("[itest-project] minutes")
        stack.deliver(make_message(EXTERNAL_SENDER, BOB, clean, prose("a project message")))
        spam = token("[itest-project] urgent figures").upper()
        stack.deliver(parse(suspicious(spam, prose("a suspicious project message"))))
        # The user's rule still files clean mail; spam is in Junk before it could match.
        stack.wait_for_message(BOB, clean, folder="Projects")
        stack.wait_for_message(BOB, spam, folder=JUNK_FOLDER)
    with stack.imap(BOB) as imap:
        assert fetch_by_subject(imap, "Projects", spam) is None, "the user's rule also got the spam"


def test_moving_into_junk_learns_spam_and_out_of_it_learns_ham(stack: Stack) -> None:
    subject = deliver_to_inbox(stack, "a newsletter nobody wanted")
    before = learned(stack)

    move(stack, subject, "INBOX", JUNK_FOLDER)
    assert wait_for_learned(stack, "spam", before["spam"] + 1) == before["spam"] + 1

    move(stack, subject, JUNK_FOLDER, "INBOX")
    assert wait_for_learned(stack, "ham", before["ham"] + 1) == before["ham"] + 1


def test_moving_junk_to_trash_learns_nothing(stack: Stack) -> None:
    subject = deliver_to_inbox(stack, "a message for the bin")
    before = learned(stack)
    move(stack, subject, "INBOX", JUNK_FOLDER)
    wait_for_learned(stack, "spam", before["spam"] + 1)
    move(stack, subject, JUNK_FOLDER, "Trash")
    # IMAPSieve runs the scripts inside the MOVE, before its OK: a learn would be counted now.
    assert learned(stack) == {"spam": before["spam"] + 1, "ham": before["ham"]}


@contextmanager
def paused(stack: Stack, service: str) -> Iterator[None]:
    run = stack.compose("pause", service)
    assert run.returncode == 0, f"compose pause {service}: {run.stderr.strip()}"
    try:
        yield
    finally:
        stack.compose("unpause", service)
        # rspamd-learn skips learns for a while after a failure; later tests must learn again.
        stack.exec("dovecot", "rm", "-f", LEARN_FAILED)


def test_a_failing_learn_never_fails_the_move(stack: Stack) -> None:
    first = deliver_to_inbox(stack, "moved while rspamd hangs")
    second = deliver_to_inbox(stack, "moved right after it")
    # Paused, Rspamd's controller accepts the connection and never answers: the slowest failure.
    with paused(stack, "rspamd"):
        took_first = move(stack, first, "INBOX", JUNK_FOLDER)
        took_second = move(stack, second, "INBOX", JUNK_FOLDER)
    assert took_first < MOVE_TIMEOUT, f"the first MOVE took {took_first:.1f}s"
    # The failure is remembered: the next learns are skipped at once, not timed out again.
    assert took_second < SKIPPED_MOVE, f"the second MOVE took {took_second:.1f}s"
    stack.notes.append(
        f"junk: MOVEs into Junk, Rspamd paused: OK after {took_first:.1f}s, then {took_second:.1f}s"
    )
    # Logged for the mailbox whose move it was (Dovecot passes USER to pipe programs).
    stack.wait_for_log("dovecot", rf"rspamd-learn: {re.escape(BOB)}: learning spam failed")
    stack.wait_for_log("dovecot", rf"rspamd-learn: {re.escape(BOB)}: not learning spam: Rspamd failed")
    with stack.imap(BOB) as imap:
        for subject in (first, second):
            assert fetch_by_subject(imap, JUNK_FOLDER, subject) is not None, f"{subject!r} is not in Junk"
            assert fetch_by_subject(imap, "INBOX", subject) is None, f"{subject!r} stayed in INBOX"
