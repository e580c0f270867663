"""Issue #15, 3: encrypted backups with restic, on a stack of this module's own.

Mail in several folders with flags and keywords and a Sieve script → `mailstack backup` to a
repository on the host → `mailstack down --volumes` → `mailstack restore` → every message
(count, UIDs, checksums of the bodies as read over IMAP), folder, flag and the Sieve script
are back. The repository holds no plaintext marker, a tampered pack file makes `backup check`
fail, a wrong password is one clear line, and a failed backup shows in status and check.

Not the session `stack`: this module takes its own down with its volumes. About 12 minutes
on 2 busy cores (two `up`s); with groupware (the office example) SOGo's calendars and address
books come back too.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from mailstack import engine
from mailstack.site.loader import load_site
from tests.integration.conftest import site_copy, start_stack
from tests.integration.managesieve import ManageSieve
from tests.integration.office import OFFICE, USERS, OfficeStack
from tests.integration.office import UP_TIMEOUT as OFFICE_UP_TIMEOUT
from tests.integration.stack import (
    ALICE,
    BOB,
    EXTERNAL_SENDER,
    SITE_FIXTURE,
    Stack,
    filler,
    make_message,
    token,
)
from tests.integration.test_groupware import as_user, ical, login, tomorrow

pytestmark = pytest.mark.integration

UP_TIMEOUT = 360.0
MARKER = f"PLAINTEXT-MARKER-{secrets.token_hex(8)}"
SCRIPT_NAME = "kept"
SIEVE = 'require ["fileinto"];\nif header :contains "subject" "[kept]" { fileinto "Projects"; }\n'
# folder → (flags per message, in order); the folders the test makes and fills for alice.
FOLDERS = ("Projects", "Archive")
Snapshot = dict[str, list[tuple[int, str, str]]]  # folder → (uid, flags, sha256 of the body)


def mailstack(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """The real command line, as an operator runs it, on the module's stack (its output and
    state directories are the suite's, not the defaults beside the site file)."""
    site = Path(next(a for a in args if a.endswith("site.yaml")))
    where = ["-o", str(site.parent / "build"), "--state", str(site.parent / "state")]
    run = subprocess.run(
        [sys.executable, "-c", "from mailstack.cli import app; app()", *args, *where],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if check:
        assert run.returncode == 0, f"mailstack {' '.join(args)}: {run.stdout}\n{run.stderr}"
    return run


@pytest.fixture(scope="module")
def backed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The integration site with `backup:` to a directory of its own, up."""
    base = tmp_path_factory.mktemp("backup")
    site_path = base / "site.yaml"
    site_copy(SITE_FIXTURE, site_path, bind=["127.0.0.1"])
    yaml = YAML(typ="rt")
    data = yaml.load(site_path.read_text(encoding="utf-8"))
    # alice's mail is stored encrypted (the site's key, in the state), bob's plain: the marker
    # lies readable on the mail volume, and only restic's encryption keeps it out of the
    # repository.
    for mailbox in data["mailboxes"]:
        if mailbox["address"] == BOB:
            mailbox["encryption"] = "none"
    data["backup"] = {"repository": str(base / "repository"), "schedule": "*-1-1 00:00", "keep": {"daily": 3}}
    with site_path.open("w", encoding="utf-8") as handle:
        yaml.dump(data, handle)
    stack = start_stack(site_path, timeout=UP_TIMEOUT)
    try:
        yield stack
    finally:
        if os.environ.get("MAILSTACK_ITEST_KEEP") != "1":
            project = engine.Project(load_site(site_path), stack.out_dir, stack.state_dir)
            engine.down(project, volumes=True)


def imap_snapshot(stack: Stack, user: str) -> Snapshot:
    """Every folder of ``user``: each message's UID, flags and the SHA-256 of its bytes."""
    out: Snapshot = {}
    with stack.imap(user) as imap:
        typ, listed = imap.list()
        assert typ == "OK", listed
        names = [
            re.sub(r'^\(.*?\) ".*?" ', "", line.decode()).strip('"')
            for line in listed
            if isinstance(line, bytes)
        ]
        for name in sorted(names):
            typ, data = imap.select(f'"{name}"', readonly=True)
            assert typ == "OK", (name, data)
            messages = []
            if int(data[0] or 0):
                typ, parts = imap.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
                for part in parts:
                    if isinstance(part, tuple):
                        head = part[0].decode()
                        uid = int(re.search(r"UID (\d+)", head).group(1))  # type: ignore[union-attr]
                        flags = " ".join(sorted(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()))  # type: ignore[union-attr]
                        messages.append((uid, flags, hashlib.sha256(bytes(part[1])).hexdigest()))
            out[name] = sorted(messages)
    return out


def fill(stack: Stack) -> None:
    """Mail in INBOX, Projects and Archive with flags and a keyword; a Sieve script for alice."""
    sieve = ManageSieve(stack.host, stack.ports["managesieve"], timeout=30)
    try:
        sieve.starttls(stack.tls_context())
        assert sieve.authenticate_plain(ALICE, stack.password(ALICE)).status == "OK"
        sieve.putscript(SCRIPT_NAME, SIEVE)
        sieve.setactive(SCRIPT_NAME)
    finally:
        sieve.logout()
    subjects = [token(f"backup {i}") for i in range(12)]
    for i, subject in enumerate(subjects):
        body = filler(2000 + 500 * i) + (f"\n{MARKER}\n" if i == 0 else "")
        stack.deliver(make_message(EXTERNAL_SENDER, [ALICE, BOB] if i % 4 == 0 else ALICE, subject, body))
    kept = token("[kept] filed by sieve")
    stack.deliver(make_message(EXTERNAL_SENDER, ALICE, kept))
    stack.wait_for_message(ALICE, subjects[-1])
    stack.wait_for_message(ALICE, kept, folder="Projects")
    stack.wait_for_message(BOB, subjects[8])
    with stack.imap(ALICE) as imap:
        for folder in FOLDERS:
            imap.create(folder)
        imap.select("INBOX")
        imap.store("1:4", "+FLAGS", r"(\Seen)")
        imap.store("2", "+FLAGS", r"(\Flagged \Answered)")
        imap.store("3", "+FLAGS", "($Important)")
        imap.copy("5:7", "Archive")
        imap.store("5:7", "+FLAGS", r"(\Deleted)")
        imap.expunge()
        imap.select("Archive")
        imap.store("1", "+FLAGS", r"(\Seen \Flagged)")


def test_backup_down_volumes_restore_brings_everything_back(backed: Stack) -> None:
    assert backed.up_error is None, backed.up_error
    site = str(backed.site_path)
    fill(backed)
    before = {user: imap_snapshot(backed, user) for user in (ALICE, BOB)}
    assert sum(len(m) for m in before[ALICE].values()) == 13
    assert {"INBOX", "Projects", "Archive"} <= set(before[ALICE])
    sieve_file = f"/var/vmail/itest.example/alice/sieve/{SCRIPT_NAME}.sieve"
    script = backed.exec("dovecot", "cat", sieve_file).stdout
    assert script == SIEVE

    done = mailstack("backup", site, check=True)
    assert re.search(r"backup [0-9a-f]{8} saved", done.stdout), done.stdout
    listed = mailstack("backup", "list", site, check=True).stdout
    assert re.search(r"^[0-9a-f]{8} .* files groupware|^[0-9a-f]{8} .* files redis", listed, re.M), listed
    status = mailstack("status", site).stdout
    assert "backup: last success" in status, status
    checked = mailstack("check", site, "--json").stdout
    assert '"probe": "backup"' in checked, checked
    assert '"status": "pass"' in checked.split('"probe": "backup"')[1][:80], checked

    on_volume = backed.exec("dovecot", "grep", "-rl", MARKER, "/var/vmail/itest.example/bob")
    assert on_volume.stdout.strip(), "the marker should lie plain in bob's Maildir (encryption: none)"
    alice_plain = backed.exec("dovecot", "grep", "-rl", MARKER, "/var/vmail/itest.example/alice")
    assert not alice_plain.stdout.strip(), "alice's copy should be stored encrypted"
    repository = Path(load_site(backed.site_path).backup.repository)  # type: ignore[union-attr]
    files = [p for p in repository.rglob("*") if p.is_file()]
    assert len(files) > 3
    assert not [p for p in files if MARKER.encode() in p.read_bytes()], (
        "a plaintext marker is in the repository"
    )

    mailstack("down", site, "--volumes", check=True)
    refused = mailstack("restore", site, "--snapshot", "nope")
    assert refused.returncode == 1, refused.stderr
    assert "no backup nope" in refused.stderr, refused.stderr
    mailstack("restore", site, "--timeout", str(UP_TIMEOUT), check=True)

    after = {user: imap_snapshot(backed, user) for user in (ALICE, BOB)}
    assert after == before
    # Rspamd's compiled Hyperscan databases (not in the backup) come from its image again.
    heap = backed.rspamd_heap_kib()
    assert heap < 120 * 1024, f"rspamd's main process holds {heap} KiB of heap after the restore"
    assert backed.exec("dovecot", "cat", sieve_file).stdout == SIEVE
    sieve = ManageSieve(backed.host, backed.ports["managesieve"], timeout=30)
    try:
        sieve.starttls(backed.tls_context())
        assert sieve.authenticate_plain(ALICE, backed.password(ALICE)).status == "OK"
        assert f'"{SCRIPT_NAME}" ACTIVE' in sieve.listscripts()
    finally:
        sieve.logout()
    # Sieve still files after the restore: the script is active, not only present.
    again = token("[kept] after restore")
    backed.deliver(make_message(EXTERNAL_SENDER, ALICE, again))
    backed.wait_for_message(ALICE, again, folder="Projects")


def test_a_tampered_pack_fails_check(backed: Stack) -> None:
    site = str(backed.site_path)
    mailstack("backup", site, check=True)
    repository = Path(load_site(backed.site_path).backup.repository)  # type: ignore[union-attr]
    pack = max((p for p in (repository / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    original = pack.read_bytes()
    middle = len(original) // 2
    try:
        pack.write_bytes(original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1 :])
        failed = mailstack("backup", "check", site)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert failed.stderr.strip().count("\n") == 0, failed.stderr
        assert failed.stderr.startswith("error: the repository's check found damage"), failed.stderr
    finally:
        pack.write_bytes(original)
    mailstack("backup", "check", site, check=True)


def test_a_wrong_password_is_one_line_and_a_failed_backup_shows(backed: Stack) -> None:
    site = str(backed.site_path)
    password = backed.state_dir / "secrets" / "restic_password"
    right = password.read_bytes()
    try:
        # In place: the compose secret is a bind mount of this very file.
        with password.open("r+b") as handle:
            handle.truncate(0)
            handle.write(b"not-the-password\n")
        for args in (("backup", "list", site), ("backup", site)):
            run = mailstack(*args)
            assert run.returncode == 1, run.stdout + run.stderr
            lines = run.stderr.strip().splitlines()
            assert len(lines) == 1, run.stderr
            assert lines[0].startswith("error: "), lines
            assert "wrong password" in lines[0], lines
            assert "Traceback" not in run.stderr
        status = mailstack("status", site).stdout
        assert "backup: the last run FAILED" in status, status
        checked = mailstack("check", site)
        assert checked.returncode == 1
        assert re.search(r"fail\s+│?\s*backup", checked.stdout) or "the last run failed" in checked.stdout, (
            checked.stdout
        )
    finally:
        with password.open("r+b") as handle:
            handle.truncate(0)
            handle.write(right)
    mailstack("backup", site, check=True)
    assert "FAILED" not in mailstack("status", site).stdout


@pytest.fixture(scope="module")
def office_backed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """examples/office.yaml (groupware on) with `backup:` to a directory of its own, up."""
    base = tmp_path_factory.mktemp("office-backup")
    site_path = base / "site.yaml"
    site_copy(OFFICE, site_path, bind=["127.0.0.1"])
    with site_path.open("a", encoding="utf-8") as handle:
        handle.write(f"\nbackup:\n  repository: {base / 'repository'}\n  schedule: '*-1-1 00:00'\n")
    stack = start_stack(site_path, timeout=OFFICE_UP_TIMEOUT, kind=OfficeStack)
    try:
        yield stack
    finally:
        if os.environ.get("MAILSTACK_ITEST_KEEP") != "1":
            project = engine.Project(load_site(site_path), stack.out_dir, stack.state_dir)
            engine.down(project, volumes=True)


def test_groupware_calendars_and_contacts_come_back(office_backed: Stack) -> None:
    """SOGo's database goes through pg_dump into the backup and back into a fresh postgres."""
    assert office_backed.up_error is None, office_backed.up_error
    site = str(office_backed.site_path)
    stamp = secrets.token_hex(4)
    anna = "anna@office.test"
    event = f"/SOGo/dav/{anna}/Calendar/personal/ev-{stamp}.ics"
    card = f"/SOGo/dav/{anna}/Contacts/personal/card-{stamp}.vcf"
    vcard = "\r\n".join(
        (
            "BEGIN:VCARD",
            "VERSION:3.0",
            f"UID:card-{stamp}",
            f"FN:Kept {stamp}",
            f"N:{stamp};Kept;;;",
            "END:VCARD",
            "",
        )
    )
    text = ical("VEVENT", f"ev-{stamp}", f"Kept meeting {stamp}", dtstart=tomorrow(9), dtend=tomorrow(10))
    for path, body, kind in ((event, text, "text/calendar"), (card, vcard, "text/vcard")):
        put = as_user(office_backed, "SHA512-CRYPT", "PUT", path, body.encode(), **{"Content-Type": kind})
        assert put.status_code in (201, 204), f"PUT {path}: {put.status_code} {put.text[:200]}"

    mailstack("backup", site, check=True)
    listed = mailstack("backup", "list", site, check=True).stdout
    assert "files groupware redis" in listed, listed
    mailstack("down", site, "--volumes", check=True)
    mailstack("restore", site, "--timeout", str(OFFICE_UP_TIMEOUT), check=True)

    got = as_user(office_backed, "SHA512-CRYPT", "GET", event)
    assert got.status_code == 200, f"GET {event} after the restore: {got.status_code}"
    assert f"Kept meeting {stamp}" in got.text
    got = as_user(office_backed, "SHA512-CRYPT", "GET", card)
    assert got.status_code == 200, f"GET {card} after the restore: {got.status_code}"
    assert f"Kept {stamp}" in got.text
    # The users table is the site file's, not the backup's: a login still works.
    assert login(office_backed, anna, dict(USERS.values())[anna]).status_code == 200
