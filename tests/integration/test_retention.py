"""Issue #15, retention: folder limits as Dovecot autoexpunge, and POP3's DELE kept for IMAP.

The module gives carol a Trash limit of a few seconds and POP3 deletions kept for IMAP
(mailboxes[].retention), and shop.itest-two.example (dave) a Junk limit of as many seconds
(domains[].retention); the site's defaults stay (Trash and Junk 30d: bob). It puts the site
back afterwards.
"""

from __future__ import annotations

import imaplib
import poplib
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from mailstack import engine
from tests.integration.stack import (
    BOB,
    CAROL,
    DAVE,
    EXTERNAL_SENDER,
    Stack,
    folder_subjects,
    make_message,
    token,
    wait_until,
)

pytestmark = pytest.mark.integration

UP_TIMEOUT = 240.0
LIMIT = 5  # seconds: carol's Trash and the shop domain's Junk
CAROL_RETENTION = f"    retention:\n      folders: {{Trash: {LIMIT}s}}\n      pop3_delete: false\n"
SHOP_RETENTION = f"    retention:\n      folders: {{Junk: {LIMIT}s}}\n"
CAROL_MAILDIR = "/var/vmail/itest.example/carol/Maildir"
YEAR = 365 * 86400


def say(text: str) -> None:
    print(f"[mailstack up, retention] {text}", file=sys.stderr)


def with_retention(text: str) -> str:
    carol = "    quota: 1M\n"  # the end of carol's entry: she is the only mailbox with a quota
    shop = "  - name: shop.itest-two.example\n    catch_all: alice@itest.example\n"
    assert text.count(carol) == 1, "the fixture site changed carol's entry"
    assert text.count(shop) == 1, "the fixture site changed its shop domain's entry"
    return text.replace(carol, carol + CAROL_RETENTION).replace(shop, shop + SHOP_RETENTION)


@pytest.fixture(scope="module")
def retained(stack: Stack) -> Iterator[Stack]:
    original = stack.site_path.read_text(encoding="utf-8")
    stack.site_path.write_text(with_retention(original), encoding="utf-8")
    try:
        stack.reload_site()
        result = engine.up(stack.project, timeout=UP_TIMEOUT, say=say)
        changed = sorted(a.path for a in result.actions if a.change.value != "unchanged")
        stack.notes.append(f"retention: changed {changed}; reloaded {result.reloaded}")
        yield stack
    finally:
        stack.site_path.write_text(original, encoding="utf-8")
        stack.reload_site()
        engine.up(stack.project, timeout=UP_TIMEOUT, say=say)


def put(stack: Stack, user: str, folder: str, subject: str, *, received: float | None = None) -> None:
    """APPEND a message to the user's folder (an IMAP session of its own); ``received`` sets
    its INTERNALDATE, which autoexpunge must not go by."""
    message = make_message(EXTERNAL_SENDER, user, subject)
    date = imaplib.Time2Internaldate(received) if received is not None else None
    with stack.imap(user) as imap:
        typ, data = imap.append(folder, None, date, message.as_bytes())
        assert typ == "OK", f"APPEND to {user}'s {folder}: {data}"


def subjects_in(stack: Stack, user: str, folder: str) -> list[str]:
    with stack.imap(user) as imap:
        return folder_subjects(imap, folder)


def test_a_message_older_than_the_limit_goes_at_the_next_session_a_newer_one_stays(retained: Stack) -> None:
    old = {user: token(f"retention old {folder}") for user, folder in ((CAROL, "Trash"), (DAVE, "Junk"))}
    put(retained, CAROL, "Trash", old[CAROL])  # mailboxes[].retention: Trash 5s
    put(retained, DAVE, "Junk", old[DAVE])  # domains[].retention: Junk 5s
    kept_by_default = token("retention bob trash")
    put(retained, BOB, "Trash", kept_by_default)  # the site's default: 30d
    time.sleep(LIMIT + 2)

    # The next session: saved now, so within the limit, although received a year ago.
    newer = token("retention newer trash")
    put(retained, CAROL, "Trash", newer, received=time.time() - YEAR)
    # That session's end expunged what was older than the limit; the newer message stays.
    carol_trash = subjects_in(retained, CAROL, "Trash")
    assert old[CAROL] not in carol_trash, "carol's Trash kept a message past its limit"
    assert newer in carol_trash, "a message saved within the limit went (by its received date?)"

    # dave and bob: their sessions end here; the limit of dave's domain applies, bob's 30d.
    subjects_in(retained, DAVE, "Junk")
    assert old[DAVE] not in subjects_in(retained, DAVE, "Junk"), "dave's Junk ignored his domain's limit"
    subjects_in(retained, BOB, "Trash")
    assert kept_by_default in subjects_in(retained, BOB, "Trash"), "bob's Trash lost mail within 30 days"


def maildir_names(stack: Stack, folder_dir: str) -> set[str]:
    """The message files of a folder of carol's Maildir, by their unique names (without the
    flags after ":"), read on disk: an IMAP session of ours would itself expunge, and the
    files are encrypted (encryption), so their names are what a test can follow."""
    folder = f"{CAROL_MAILDIR}/{folder_dir}".rstrip("/")
    listed = stack.exec("dovecot", "find", f"{folder}/cur", f"{folder}/new", "-type", "f", "-printf", "%f\\n")
    assert listed.returncode == 0, listed.stderr
    return {name.partition(":")[0] for name in listed.stdout.split()}


def put_on_disk(stack: Stack, folder: str, folder_dir: str, subject: str) -> set[str]:
    """APPEND to carol's ``folder``; the name of the file it made."""
    before = maildir_names(stack, folder_dir)
    put(stack, CAROL, folder, subject)
    added = maildir_names(stack, folder_dir) - before
    assert len(added) == 1, f"APPEND made {sorted(added)} in {folder_dir or 'INBOX'}"
    return added


def test_a_delivery_expunges_what_is_past_the_limit_without_any_imap_session(retained: Stack) -> None:
    old = put_on_disk(retained, "Trash", ".Trash", token("retention old before delivery"))
    time.sleep(LIMIT + 2)

    inbox = maildir_names(retained, "")
    retained.deliver(make_message(EXTERNAL_SENDER, CAROL, token("retention delivery")))
    wait_until(
        "the delivery's file in carol's INBOX", lambda: bool(maildir_names(retained, "") - inbox), timeout=60
    )
    wait_until(
        "the old message to leave carol's Trash after the delivery",
        lambda: not old & maildir_names(retained, ".Trash"),
        timeout=15,
    )


def test_the_end_of_a_pop3_session_expunges_too(retained: Stack) -> None:
    old = put_on_disk(retained, "Trash", ".Trash", token("retention old before pop3"))
    time.sleep(LIMIT + 2)
    assert old <= maildir_names(retained, ".Trash"), "gone before the POP3 session: the test proves nothing"
    with retained.pop3(CAROL) as pop:
        pop.stat()
    wait_until(
        "the old message to leave carol's Trash after a POP3 session",
        lambda: not old & maildir_names(retained, ".Trash"),
        timeout=15,
    )


def pop3_delete(stack: Stack, user: str, subject: str) -> None:
    """DELE the message with ``subject`` over POP3 (QUIT commits) and check POP3 no longer lists it."""

    def numbered(pop: poplib.POP3) -> dict[str, int]:
        out = {}
        for entry in pop.list()[1]:
            number = int(entry.split()[0])
            header = b"\n".join(pop.top(number, 0)[1])
            out[header.decode("utf-8", "replace")] = number
        return out

    with stack.pop3(user) as pop:
        listed = numbered(pop)
        number = next((n for head, n in listed.items() if subject in head), None)
        assert number is not None, f"{user}: POP3 does not list {subject!r}"
        pop.dele(number)
    with stack.pop3(user) as pop:
        assert not any(subject in head for head in numbered(pop)), f"{user}: POP3 still lists {subject!r}"


def deliver_and_wait(stack: Stack, user: str, subject: str) -> EmailMessage:
    message = make_message(EXTERNAL_SENDER, user, subject)
    stack.deliver(message)
    stack.wait_for_message(user, subject)
    return message


def test_pop3_delete_false_keeps_the_message_for_imap_flagged(retained: Stack) -> None:
    subject = token("retention pop3 kept")
    deliver_and_wait(retained, CAROL, subject)
    pop3_delete(retained, CAROL, subject)
    with retained.imap(CAROL) as imap:
        imap.select("INBOX")
        typ, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
        uids = data[0].split() if typ == "OK" and data[0] else []
        assert uids, "carol's POP3 deletion removed the message from IMAP too"
        typ, flags = imap.uid("FETCH", uids[-1].decode(), "(FLAGS)")
        assert b"$POP3Deleted" in b" ".join(f for f in flags if isinstance(f, bytes)), flags
        imap.uid("STORE", uids[-1].decode(), "+FLAGS.SILENT", r"(\Deleted)")  # leave her INBOX as it was
        imap.expunge()


def test_pop3_delete_by_default_really_deletes(retained: Stack) -> None:
    subject = token("retention pop3 deleted")
    deliver_and_wait(retained, BOB, subject)
    pop3_delete(retained, BOB, subject)
    assert subject not in subjects_in(retained, BOB, "INBOX"), "bob's POP3 deletion left the message in IMAP"
