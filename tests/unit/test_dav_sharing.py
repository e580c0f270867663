"""calendars and address_books: the model's rules (each with its field path), SOGo's roles for
each right, free/busy, and what the reconciler in the sogo container is given."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mailstack import engine
from mailstack.render import plan_files
from mailstack.render.dav_rights import DAV_RECONCILE, DAV_RIGHTS_SCRIPT, dav_rights_lines, plist_string
from mailstack.render.dovecot import MODSEQ_TRACKING
from mailstack.render.groupware import NO_LOGIN, sogo_users
from mailstack.site.loader import parse_site
from tests.conftest import fake_state
from tests.unit.test_sharing import Answer

OFFICE = (Path(__file__).parents[2] / "examples" / "office.yaml").read_text(encoding="utf-8")
FREE_BUSY = "ConfidentialDAndTViewer,PrivateDAndTViewer,PublicDAndTViewer"


def test_office_shares_its_calendar_and_address_book_with_the_roles_of_each_right() -> None:
    lines = dav_rights_lines(parse_site(OFFICE))
    assert 'folder office@office.test Calendar/personal "Office"' in lines
    assert (
        "grant office@office.test Calendar/personal anna@office.test "
        "ConfidentialModifier,ObjectCreator,ObjectEraser,PrivateDAndTViewer,PublicModifier"
    ) in lines
    assert (
        "grant office@office.test Calendar/personal jonas@office.test "
        "ConfidentialViewer,PrivateDAndTViewer,PublicViewer"
    ) in lines
    # The group staff reads the address book; anna, also in staff, keeps write.
    assert "grant office@office.test Contacts/personal omar@office.test ObjectViewer" in lines
    assert (
        "grant office@office.test Contacts/personal anna@office.test "
        "ObjectCreator,ObjectEditor,ObjectEraser,ObjectViewer"
    ) in lines
    # lena has no right anywhere.
    assert not [line for line in lines if line.startswith("grant") and "lena@" in line]


def test_every_mailbox_calendar_shows_its_busy_times_to_any_user_by_default() -> None:
    lines = dav_rights_lines(parse_site(OFFICE))
    assert f'anyone lena@office.test Calendar/personal {FREE_BUSY} "Personal Calendar"' in lines
    # The shared mailbox's calendar shows only to those the description names.
    assert not [line for line in lines if line.startswith("anyone office@")]


def test_free_busy_off_takes_the_grant_back() -> None:
    site = parse_site(OFFICE.replace("  workers: 3\n", "  workers: 3\n  free_busy: false\n"))
    assert 'anyone lena@office.test Calendar/personal - "Personal Calendar"' in dav_rights_lines(site)


def test_a_mailbox_calendar_described_keeps_free_busy_for_everyone_else() -> None:
    text = OFFICE.replace(
        "calendars:\n",
        "calendars:\n  - owner: anna@office.test\n    rights: [{right: read, mailbox: jonas@office.test}]\n",
    )
    lines = dav_rights_lines(parse_site(text))
    assert f"grant anna@office.test Calendar/personal <default> {FREE_BUSY}" in lines
    assert not [line for line in lines if line.startswith("anyone anna@")]


def test_shared_mailboxes_are_sogo_users_no_password_matches() -> None:
    users = {u.uid: u.password for u in sogo_users(parse_site(OFFICE))}
    assert users["'office@office.test'"] == f"'{NO_LOGIN}'"
    assert users["'anna@office.test'"].startswith("'{SHA512-CRYPT}$6$")


def test_names_are_property_list_strings() -> None:
    assert plist_string('Zoë "Z" \\') == '"Zo\\U00eb \\"Z\\" \\\\"'


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (
            (
                "      - {right: read, mailbox: jonas@office.test}\n      - {right: read, mailbox: zoe",
                "      - {right: manage, mailbox: jonas@office.test}\n      - {right: read, mailbox: zoe",
            ),
            "calendars[0].rights[1].right",
            "only the owner",
        ),
        (
            (
                "calendars:\n  - owner: office@office.test\n",
                "calendars:\n  - owner: nobody@office.test\n",
            ),
            "calendars[0].owner",
            "not a mailbox of this site",
        ),
        (
            (
                "      - {right: read, group: staff}\n\naliases",
                "      - {right: read, group: sales}\n\naliases",
            ),
            "address_books[0].rights[1].group",
            "unknown group sales",
        ),
        (
            (
                "      - {right: read, mailbox: zoe@office.test}",
                "      - {right: read, mailbox: zoe@elsewhere.test}",
            ),
            "calendars[0].rights[2].mailbox",
            "outside the site",
        ),
        (
            ("  enabled: true\n  activesync: true", "  enabled: false\n  activesync: false"),
            "calendars",
            "set groupware.enabled",
        ),
    ],
)
def test_bad_shares_are_refused_with_their_field_path(
    change: tuple[str, str], where: str, message: str
) -> None:
    old, new = change
    assert old in OFFICE, old
    with pytest.raises(Exception, match=message) as refused:
        parse_site(OFFICE.replace(old, new, 1))
    assert where in str(refused.value), str(refused.value)


def test_up_feeds_the_rendered_reconciler_to_sogo_as_sogo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    site = parse_site(OFFICE)
    for planned in plan_files(site, fake_state(site.domain_names), tmp_path / "state", tmp_path / "out"):
        (tmp_path / "out" / planned.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / planned.path).write_bytes(planned.content)
    script = (tmp_path / "out" / DAV_RIGHTS_SCRIPT).read_text(encoding="utf-8")
    assert 'folder office@office.test Calendar/personal "Office"' in script
    change = "granted office@office.test Calendar/personal to jonas@office.test: PublicViewer"
    fed: list[str | None] = []

    def compose(_self: engine.Project, *args: str, stdin: str | None = None, **_kw: object) -> Answer:
        fed.append(stdin)
        out = change + "\n" if args[2] == "sogo" else ""
        return subprocess.CompletedProcess(list(args), 0, out, "")

    monkeypatch.setattr(engine.Project, "compose", compose)
    said: list[str] = []
    changes = engine.reconcile_rights(engine.Project(site, tmp_path / "out", tmp_path / "state"), said.append)
    assert script in fed
    assert DAV_RECONCILE[:2] == ("setpriv", "--reuid=sogo")
    assert f"rights: {change}" in said
    assert change in changes


def test_up_names_the_webmail_and_activesync_urls() -> None:
    rows = {protocol: (where, what) for protocol, where, what in engine.endpoints(parse_site(OFFICE))}
    assert rows["webmail"][0] == "https://mail.office.test:6443/SOGo/"
    assert rows["activesync"][0] == "https://mail.office.test:6443/Microsoft-Server-ActiveSync"


def test_up_has_dovecot_track_modseqs_on_activesync_sites_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SOGo's ActiveSync syncs a mail folder only once Dovecot tracks its modseqs."""
    calls: list[tuple[str, ...]] = []

    def compose(_self: engine.Project, *args: str, **_kw: object) -> Answer:
        calls.append(args)
        return subprocess.CompletedProcess(list(args), 0, "", "")

    monkeypatch.setattr(engine.Project, "compose", compose)
    (tmp_path / DAV_RIGHTS_SCRIPT).parent.mkdir(parents=True)
    (tmp_path / DAV_RIGHTS_SCRIPT).write_text("", encoding="utf-8")
    for activesync in (True, False):
        site = parse_site(OFFICE.replace("activesync: true", f"activesync: {str(activesync).lower()}"))
        calls.clear()
        engine.reconcile_rights(engine.Project(site, tmp_path, tmp_path / "state"), print)
        tracked = [c for c in calls if c[:3] == ("exec", "-T", "dovecot") and "modseq" in " ".join(c)]
        assert bool(tracked) is activesync, calls
    assert 'mailbox "$box" modseq' in MODSEQ_TRACKING[2]
    assert "Sent" in MODSEQ_TRACKING[2]


@pytest.mark.parametrize("local", ["o'brien", "a/b"])
def test_groupware_refuses_addresses_sogo_cannot_serve(local: str) -> None:
    text = OFFICE.replace("  - address: lena@office.test\n", f"  - address: {local}@office.test\n")
    with pytest.raises(Exception, match=r"SOGo .* cannot serve an address") as refused:
        parse_site(text)
    assert "mailboxes[2].address" in str(refused.value)
    # Without groupware the same address is a mailbox like any other.
    plain = text.replace("  enabled: true\n  activesync: true", "  enabled: false\n  activesync: false")
    plain = plain.split("# office@'s calendar")[0] + "aliases:" + plain.split("\naliases:")[1]
    assert parse_site(plain).mailboxes[2].address == f"{local}@office.test"
