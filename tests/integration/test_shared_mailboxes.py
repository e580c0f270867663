"""Shared mailboxes over IMAP, on a stack of their own (the test edits the site and runs `up`
again): office@ has no login; jonas may read it, anna may write, greta reads through a
group; rights follow the description on every `up`, and an `up` without a change changes
nothing."""

from __future__ import annotations

import imaplib
import re
import secrets
import smtplib
import sys
import time
from collections.abc import Iterator

import pytest

from mailstack import engine
from mailstack.passwords import hash_password
from mailstack.render.writer import Change
from mailstack.site.loader import load_site
from mailstack.site.models import STANDARD_PORTS
from tests.integration.ports import free_ports
from tests.integration.stack import Stack, close_imap, imap_auth, make_message, token

pytestmark = pytest.mark.integration

DOMAIN = "shared.itest.example"
OFFICE = f"office@{DOMAIN}"
ANNA = f"anna@{DOMAIN}"
JONAS = f"jonas@{DOMAIN}"
GRETA = f"greta@{DOMAIN}"
# UTF-8 on purpose: clients must send them as UTF-8.
PASSWORDS = {ANNA: "Ånna-schreibt-7", JONAS: "Jönas-liest-8", GRETA: "Grétä-gruppe-9"}
INBOX = f"shared/{OFFICE}/INBOX"
# LIST shows a shared mailbox's INBOX as the namespace's name for it (both names select it).
LISTED = f"shared/{OFFICE}"
UP_TIMEOUT = 240.0
JONAS_READS = f"      - mailbox: {JONAS}\n        right: read\n"


def site_text(site_id: str, ports: dict[str, int]) -> str:
    mailboxes = "".join(
        f"  - address: {address}\n    password_hash: {hash_password(password)!r}\n"
        for address, password in PASSWORDS.items()
    )
    published = "".join(f"    {name}: {port}\n" for name, port in ports.items())
    return (
        f"site: {site_id}\nhostname: mail.{DOMAIN}\nadmin_email: {ANNA}\noffline: true\n"
        f"network:\n  bind: 127.0.0.1\n  ports:\n{published}"
        f"limits:\n  message_size: 1M\n"
        f"domains:\n  - name: {DOMAIN}\n"
        f"mailboxes:\n{mailboxes}"
        f"groups:\n  - name: desk\n    members: [{GRETA}]\n"
        f"shared_mailboxes:\n  - address: {OFFICE}\n    name: Office\n    rights:\n"
        f"{JONAS_READS}"
        f"      - mailbox: {ANNA}\n        right: write\n"
        f"      - group: desk\n        right: read\n"
    )


class SharedStack(Stack):
    def password(self, user: str) -> str:
        return PASSWORDS[user]

    def up(self) -> engine.UpResult:
        self.reload_site()
        return engine.up(self.project, timeout=UP_TIMEOUT, say=say)


def say(text: str) -> None:
    print(f"[mailstack up, shared] {text}", file=sys.stderr)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedStack]:
    base = tmp_path_factory.mktemp("shared")
    site_path = base / "site.yaml"
    ports = dict(zip(STANDARD_PORTS, free_ports(len(STANDARD_PORTS)), strict=True))
    site_path.write_text(site_text(f"itest-shared-{secrets.token_hex(3)}", ports), encoding="utf-8")
    project = engine.Project(site=load_site(site_path), out_dir=base / "build", state_dir=base / "state")
    stack = SharedStack(site_path=site_path, project=project)
    try:
        stack.up_result = stack.up()
        yield stack
    finally:
        engine.down(stack.project, volumes=True)


@pytest.fixture(scope="module")
def delivered(shared: SharedStack) -> str:
    """A message delivered to office@ over port 25, as from outside; its subject."""
    subject = token("for the office")
    shared.deliver(make_message("someone@sender-itest.test", OFFICE, subject), rcpt_to=[OFFICE])
    with shared.imap(ANNA) as imap:
        wait_for_subject(imap, subject)
    return subject


def wait_for_subject(imap: imaplib.IMAP4, subject: str, timeout: float = 30) -> bytes:
    """Poll office@'s INBOX in the shared namespace until ``subject`` is there; its UID."""
    deadline = time.monotonic() + timeout
    while True:
        typ, _ = imap.select(f'"{INBOX}"', readonly=True)
        if typ == "OK":
            typ, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
            if typ == "OK" and data[0]:
                return bytes(data[0].split()[-1])
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for {subject!r} in {INBOX}")
        time.sleep(0.5)


def myrights(imap: imaplib.IMAP4, mailbox: str) -> str:
    typ, data = imap.myrights(f'"{mailbox}"')
    assert typ == "OK", f"MYRIGHTS {mailbox}: {typ} {data}"
    return text(data[-1]).split()[-1]


def text(item: bytes | tuple[bytes, bytes] | None) -> str:
    """One item of an imaplib answer as text (a literal's tuple: its first part and its data)."""
    if item is None:
        return ""
    if isinstance(item, tuple):
        return b" ".join(item).decode()
    return item.decode()


def shared_folders(imap: imaplib.IMAP4) -> list[str]:
    typ, data = imap.list('""', '"shared/*"')
    assert typ == "OK", data
    return [re.sub(r'^\(.*?\) "/" ', "", text(d)).strip('"') for d in data if d]


def test_up_set_the_rights_of_the_description(shared: SharedStack) -> None:
    assert shared.up_result is not None
    assert shared.up_result.rights, "the first up set no rights on office@"
    assert all(OFFICE in line for line in shared.up_result.rights)


def test_nobody_logs_in_as_the_shared_mailbox(shared: SharedStack) -> None:
    imap = imaplib.IMAP4_SSL(shared.host, shared.ports["imaps"], ssl_context=shared.tls_context(), timeout=30)
    try:
        for password in ("", "office", PASSWORDS[ANNA]):
            with pytest.raises(imaplib.IMAP4.error):
                imap_auth(imap, OFFICE, password)
    finally:
        close_imap(imap)


def test_jonas_lists_and_reads_the_office_inbox(shared: SharedStack, delivered: str) -> None:
    with shared.imap(JONAS) as imap:
        assert LISTED in shared_folders(imap)
        assert myrights(imap, INBOX) == "lrs"
        uid = wait_for_subject(imap, delivered)
        typ, parts = imap.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
        assert typ == "OK"
        assert delivered.encode() in next(bytes(p[1]) for p in parts if isinstance(p, tuple))


def test_jonas_cannot_delete_or_append(shared: SharedStack, delivered: str) -> None:
    with shared.imap(JONAS) as imap:
        uid = wait_for_subject(imap, delivered).decode()
        typ, selected = imap.select(f'"{INBOX}"')
        assert typ == "OK", selected
        # SELECT announces which flags jonas may change for good: \Deleted is not one of them.
        permanent = text(imap.response("PERMANENTFLAGS")[1][-1])
        assert permanent, "no PERMANENTFLAGS in SELECT's answer"
        assert "\\Deleted" not in permanent, permanent
        # Dovecot drops the flag and the expunge silently, as PERMANENTFLAGS announced
        # (so that clients that expunge on their own show no errors); the message stays.
        typ, stored = imap.uid("STORE", uid, "+FLAGS", r"(\Deleted)")
        assert typ == "OK", stored
        assert "\\Deleted" not in text(stored[-1]), stored
        imap.expunge()
        typ, appended = imap.append(f'"{INBOX}"', None, None, make_message(JONAS, OFFICE, "no").as_bytes())
        assert typ == "NO", f"jonas (read) could append to {INBOX}: {appended}"
    # \Deleted is a shared flag: anna sees the message still there and not marked deleted.
    with shared.imap(ANNA) as imap:
        uid = wait_for_subject(imap, delivered).decode()
        typ, data = imap.uid("FETCH", uid, "(FLAGS)")
        assert typ == "OK", data
        assert "\\Deleted" not in text(data[0]), data


def test_a_group_member_gets_the_groups_right(shared: SharedStack, delivered: str) -> None:
    with shared.imap(GRETA) as imap:
        assert LISTED in shared_folders(imap)
        assert myrights(imap, INBOX) == "lrs"
        wait_for_subject(imap, delivered)


def test_anna_appends_flags_and_deletes(shared: SharedStack, delivered: str) -> None:
    subject = token("filed by anna")
    with shared.imap(ANNA) as imap:
        # Dovecot adds RFC 4314's obsolete c and d (for k, and x/e) to what it reports.
        assert set(myrights(imap, INBOX)) - set("cd") == set("lrswtiekx")
        typ, data = imap.append(f'"{INBOX}"', None, None, make_message(ANNA, OFFICE, subject).as_bytes())
        assert typ == "OK", data
        uid = wait_for_subject(imap, subject).decode()
        typ, _ = imap.select(f'"{INBOX}"')
        assert typ == "OK"
        assert imap.uid("STORE", uid, "+FLAGS", r"(\Flagged \Deleted)")[0] == "OK"
        assert imap.expunge()[0] == "OK"
        typ, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
        assert typ == "OK", data
        assert not data[0], f"{subject!r} is still there after anna's EXPUNGE"
        wait_for_subject(imap, delivered)  # the other message is untouched


def test_a_second_up_without_a_change_changes_nothing(shared: SharedStack) -> None:
    result = shared.up()
    changed = [a.path for a in result.actions if a.change is not Change.UNCHANGED]
    assert (changed, result.reloaded, result.rights) == ([], [], [])


def test_removing_jonas_right_removes_his_access_on_the_next_up(shared: SharedStack, delivered: str) -> None:
    text = shared.site_path.read_text(encoding="utf-8")
    assert JONAS_READS in text
    shared.site_path.write_text(text.replace(JONAS_READS, ""), encoding="utf-8")
    result = shared.up()
    assert any(line.startswith("acl delete") and f"user={JONAS}" in line for line in result.rights), (
        result.rights
    )
    with shared.imap(JONAS) as imap:
        assert shared_folders(imap) == []
        typ, data = imap.select(f'"{INBOX}"', readonly=True)
        assert typ != "OK", f"jonas still opens {INBOX}: {data}"
    with shared.imap(GRETA) as imap:  # the others keep theirs
        wait_for_subject(imap, delivered)
    again = shared.up()
    assert again.rights == []


def test_the_role_would_run_the_same_reconciler(shared: SharedStack) -> None:
    """The rendered group_vars name the command `up` ran (the role runs it the same way)."""
    group_vars = (shared.out_dir / "ansible" / "group_vars" / "all.yml").read_text(encoding="utf-8")
    assert 'mailstack_stack_rights: ["sh", "/etc/dovecot/acl/reconcile.sh"]' in group_vars
    run = shared.exec("dovecot", "sh", "/etc/dovecot/acl/reconcile.sh", "--dry-run")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "", f"the dry run would still change: {run.stdout}"


def test_a_shared_mailbox_removed_from_the_site_is_gone_for_everyone(
    shared: SharedStack, delivered: str
) -> None:
    text = shared.site_path.read_text(encoding="utf-8")
    shared.site_path.write_text(text.split("shared_mailboxes:\n")[0], encoding="utf-8")
    result = shared.up()
    assert "dovecot" in result.reloaded
    with shared.imap(ANNA) as imap:
        assert shared_folders(imap) == []
        typ, data = imap.select(f'"{INBOX}"', readonly=True)
        assert typ != "OK", f"anna still opens {INBOX} of a removed shared mailbox: {data}"
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        shared.deliver(make_message("someone@sender-itest.test", OFFICE, token("too late")), rcpt_to=[OFFICE])
