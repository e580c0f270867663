"""groupware: SOGo with PostgreSQL and memcached, behind the web service, on a stack of its own
(examples/office.yaml under an id and ports of its own).

Real clients only: logins through SOGo's own login call (/SOGo/connect) for every password
scheme the site allows, one of them a UTF-8 password; a CalDAV PROPFIND of the user's
calendar home with the `caldav` library; TLS verified against the site's CA and hostname
throughout (the HTTP client dials 127.0.0.1 and checks the certificate for the site's hostname).
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import vobject  # type: ignore[import-untyped]
from caldav.davclient import DAVClient
from caldav.lib.error import DAVError
from pyactivesync import Client, FolderType, ProvisionError
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth

from mailstack import engine
from mailstack.check.web import AUTODISCOVER_REQUEST, MOBILESYNC_REQUEST
from mailstack.discovery import ACTIVESYNC_PATH
from mailstack.state.mailcrypt import new_recovery_identity
from tests.integration.eas import (
    PROTOCOLS,
    autodiscover,
    eas_client,
    folder,
    mobilesync_server,
    speak,
    sync_until,
    without_policy,
)
from tests.integration.office import UP_TIMEOUT, USERS
from tests.integration.stack import (
    EXTERNAL_SENDER,
    NOTES,
    Stack,
    cgroup_memory_mib,
    make_message,
    token,
    wait_until,
)
from tests.integration.test_check import failures, run_check

pytestmark = pytest.mark.integration

GROUPWARE = ("sogo", "postgres", "memcached")
IDLE_SECONDS = 20.0
# The `office` fixture (examples/office.yaml, up once for this module and test_webmail) is in
# conftest.py.


def logs(stack: Stack) -> str:
    return "\n".join(f"===== {s} =====\n{stack.logs(s, 30)}" for s in (*GROUPWARE, "web"))


class SiteAdapter(HTTPAdapter):
    """HTTPS to 127.0.0.1 with the certificate checked for the site's hostname (SNI too)."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self.hostname
        super().init_poolmanager(*args, **kwargs)


def session(stack: Stack) -> requests.Session:
    http = requests.Session()
    # Not the environment's: REQUESTS_CA_BUNDLE would replace the site's CA (and a proxy
    # would see the traffic).
    http.trust_env = False
    http.mount("https://", SiteAdapter(stack.site.hostname))
    http.verify = str(stack.ca_path)
    return http


def base_url(stack: Stack) -> str:
    return f"https://127.0.0.1:{stack.ports['https']}"


def login(stack: Stack, user: str, password: str) -> requests.Response:
    body = json.dumps({"userName": user, "password": password, "rememberLogin": 0}, ensure_ascii=False)
    with session(stack) as http:
        return http.post(
            f"{base_url(stack)}/SOGo/connect",
            data=body.encode("utf-8"),
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=30,
        )


def dav_client(office: Stack, user: str, password: str) -> DAVClient:
    """The caldav library's client for the user's DAV home, through session()."""
    client = DAVClient(
        url=f"{base_url(office)}/SOGo/dav/{user}/",
        username=user,
        password=password,
        ssl_verify_cert=str(office.ca_path),
    )
    client.session = session(office)
    return client


def test_the_groupware_stack_comes_up_healthy(office: Stack) -> None:
    assert office.up_error is None, f"{office.up_error}\n{logs(office)}"
    states = engine.service_states(office.project)
    for service in (*GROUPWARE, "web", "dovecot", "postfix"):
        assert states.get(service) == "healthy", f"{service}: {states.get(service)}\n{logs(office)}"


@pytest.mark.parametrize("scheme", list(USERS))
def test_a_login_per_password_scheme(office: Stack, scheme: str) -> None:
    user, password = USERS[scheme]
    started = time.monotonic()
    answer = login(office, user, password)
    seconds = time.monotonic() - started
    assert answer.status_code == 200, f"{scheme}: {answer.status_code} {answer.text}\n{logs(office)}"
    assert answer.json()["username"] == user
    assert "0xHIGHFLYxSOGo" in (answer.headers.get("set-cookie") or ""), answer.headers
    NOTES.append(f"groupware: SOGo login with {scheme} took {seconds:.2f}s")
    refused = login(office, user, password + "x")
    assert refused.status_code == 403, f"{scheme}: wrong password answered {refused.status_code}"


def test_a_user_from_no_mailbox_is_refused(office: Stack) -> None:
    assert login(office, "nobody@office.test", "anna-office-password").status_code == 403


def test_caldav_finds_the_calendar_home(office: Stack) -> None:
    user, password = USERS["ARGON2ID (UTF-8)"]
    # RFC 6764: the well-known URL leads to SOGo's DAV root.
    with session(office) as http:
        hop = http.get(f"{base_url(office)}/.well-known/caldav", allow_redirects=False, timeout=30)
    assert hop.status_code == 301
    assert hop.headers["location"].endswith("/SOGo/dav/")
    client = dav(office, "ARGON2ID (UTF-8)")
    try:
        principal = client.principal()  # type: ignore[no-untyped-call]
        home = unquote(str(principal.calendar_home_set.url))  # SOGo writes @ as %40
        calendars = principal.calendars()
    except DAVError as exc:
        raise AssertionError(f"{exc}\n{logs(office)}") from exc
    assert home.endswith(f"/SOGo/dav/{user}/Calendar/"), home
    assert [c for c in calendars if unquote(str(c.url)).endswith(f"/{user}/Calendar/personal/")], calendars
    # A plain PROPFIND with Basic auth too: the calendar home answers 207 Multi-Status.
    with session(office) as http:
        found = http.request(
            "PROPFIND",
            f"{base_url(office)}/SOGo/dav/{user}/Calendar/",
            headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
            data=b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><displayname/></prop></propfind>',
            auth=HTTPBasicAuth(user.encode(), password.encode("utf-8")),
            timeout=30,
        )
    assert found.status_code == 207, found.text
    assert "/Calendar/personal/" in found.text


OFFICE_CALENDAR = "/SOGo/dav/office@office.test/Calendar/personal/"
OFFICE_CONTACTS = "/SOGo/dav/office@office.test/Contacts/personal/"


def dav(stack: Stack, scheme: str) -> DAVClient:
    """The `caldav` library's client for the mailbox of ``scheme``, TLS checked as elsewhere."""
    return dav_client(stack, *USERS[scheme])


def as_user(
    stack: Stack, scheme: str, method: str, path: str, body: bytes = b"", **headers: str
) -> requests.Response:
    """One plain WebDAV request as the mailbox of ``scheme`` (Basic auth, UTF-8)."""
    user, password = USERS[scheme]
    with session(stack) as http:
        return http.request(
            method,
            path if path.startswith("https://") else f"{base_url(stack)}{path}",
            data=body,
            headers=headers,
            auth=HTTPBasicAuth(user.encode(), password.encode("utf-8")),
            timeout=30,
        )


def tomorrow(hour: int) -> str:
    day = datetime.now(UTC) + timedelta(days=1)
    return f"{day:%Y%m%d}T{hour:02d}0000Z"


def ical(component: str, uid: str, summary: str, **times: str) -> str:
    fields = "".join(f"{name.upper()}:{value}\r\n" for name, value in times.items())
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailstack tests//EN\r\n"
        f"BEGIN:{component}\r\nUID:{uid}\r\nDTSTAMP:20261206T000000Z\r\n{fields}SUMMARY:{summary}\r\n"
        f"END:{component}\r\nEND:VCALENDAR\r\n"
    )


def test_the_office_calendar_takes_anna_s_event_and_task_and_jonas_reads_them_only(office: Stack) -> None:
    """calendars: office@'s calendar, write for anna, read for jonas, nothing for lena."""
    stamp = uuid.uuid4().hex[:8]
    anna = dav(office, "SHA512-CRYPT").calendar(url=f"{base_url(office)}{OFFICE_CALENDAR}")  # type: ignore[no-untyped-call]
    try:
        event = anna.save_event(
            ical("VEVENT", f"ev-{stamp}", f"Team meeting {stamp}", dtstart=tomorrow(10), dtend=tomorrow(11))
        )
        task = anna.save_todo(ical("VTODO", f"todo-{stamp}", f"Order toner {stamp}", due=tomorrow(17)))
    except DAVError as exc:
        raise AssertionError(
            f"anna (write) could not save to the office calendar: {exc}\n{logs(office)}"
        ) from exc

    # jonas finds it among his calendars (subscribed by the reconciler) and reads both.
    jonas = dav(office, "SHA256-CRYPT")
    listed = {unquote(str(c.url)): c.name for c in jonas.principal().calendars()}  # type: ignore[no-untyped-call]
    assert "Office" in listed.values(), listed
    theirs = jonas.calendar(url=f"{base_url(office)}{OFFICE_CALENDAR}")  # type: ignore[no-untyped-call]
    summaries = {str(e.icalendar_component.get("summary")) for e in theirs.events()}
    todos = {str(t.icalendar_component.get("summary")) for t in theirs.todos()}
    assert f"Team meeting {stamp}" in summaries, summaries
    assert f"Order toner {stamp}" in todos, todos
    # ... and may change nothing.
    changed = ical("VEVENT", f"ev-{stamp}", "Cancelled", dtstart=tomorrow(10), dtend=tomorrow(11)).encode()
    put = as_user(office, "SHA256-CRYPT", "PUT", str(event.url), changed, **{"Content-Type": "text/calendar"})
    assert put.status_code == 403, f"jonas (read) changed an event: {put.status_code}"
    gone = as_user(office, "SHA256-CRYPT", "DELETE", str(task.url))
    assert gone.status_code == 403, f"jonas (read) deleted a task: {gone.status_code}"

    # lena has no right: the calendar is not there for her, neither listed nor readable.
    lena = dav(office, "BLF-CRYPT")
    assert "Office" not in {c.name for c in lena.principal().calendars()}  # type: ignore[no-untyped-call]
    for method, path in (("PROPFIND", OFFICE_CALENDAR), ("GET", str(event.url))):
        seen = as_user(office, "BLF-CRYPT", method, path, Depth="1")
        assert seen.status_code in (403, 404), f"lena {method} {path}: {seen.status_code}"
        assert f"Team meeting {stamp}" not in seen.text


def test_free_busy_is_visible_to_the_other_mailboxes(office: Stack) -> None:
    """groupware.free_busy: lena, with no right on anna's calendar, sees when anna is busy,
    and nothing else of the entry."""
    stamp = uuid.uuid4().hex[:8]
    own = dav(office, "SHA512-CRYPT").calendar(  # type: ignore[no-untyped-call]
        url=f"{base_url(office)}/SOGo/dav/anna@office.test/Calendar/personal/"
    )
    own.save_event(
        ical("VEVENT", f"fb-{stamp}", f"Dentist {stamp}", dtstart=tomorrow(14), dtend=tomorrow(15))
    )
    answer = as_user(office, "BLF-CRYPT", "GET", "/SOGo/dav/anna@office.test/freebusy.ifb")
    assert answer.status_code == 200, answer.status_code
    busy = [line for line in answer.text.splitlines() if line.startswith("FREEBUSY")]
    assert any(f"{tomorrow(14)}/{tomorrow(15)}" in line for line in busy), answer.text
    assert f"Dentist {stamp}" not in answer.text
    details = as_user(
        office, "BLF-CRYPT", "PROPFIND", "/SOGo/dav/anna@office.test/Calendar/personal/", Depth="1"
    )
    assert f"Dentist {stamp}" not in details.text


def vcard(version: str, uid: str, name: str) -> bytes:
    given, _, family = name.partition(" ")
    return (
        f"BEGIN:VCARD\r\nVERSION:{version}\r\nUID:{uid}\r\nFN:{name}\r\nN:{family};{given};;;\r\n"
        f"EMAIL:{uid}@example.org\r\nEND:VCARD\r\n"
    ).encode()


def test_the_office_address_book_is_read_by_the_staff_group(office: Stack) -> None:
    """address_books: anna (write) adds a vCard 3.0 and a vCard 4.0 contact over CardDAV;
    omar, who reads through the group staff, finds both; lena finds nothing."""
    stamp = uuid.uuid4().hex[:8]
    cards = {"3.0": f"Jürgen Müller {stamp}", "4.0": f"Ana Ibáñez {stamp}"}
    for version, name in cards.items():
        uid = f"card-{version[0]}-{stamp}"
        put = as_user(
            office,
            "SHA512-CRYPT",
            "PUT",
            f"{OFFICE_CONTACTS}{uid}.vcf",
            vcard(version, uid, name),
            **{"Content-Type": "text/vcard; charset=utf-8", "If-None-Match": "*"},
        )
        assert put.status_code in (201, 204), f"anna PUT vCard {version}: {put.status_code} {put.text[:200]}"
    # A CardDAV addressbook-query, as address book clients sync.
    query = (
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">'
        b"<D:prop><D:getetag/><C:address-data/></D:prop></C:addressbook-query>"
    )
    found = as_user(
        office,
        "ARGON2I",
        "REPORT",
        OFFICE_CONTACTS,
        query,
        Depth="1",
        **{"Content-Type": "application/xml; charset=utf-8"},
    )
    assert found.status_code == 207, f"{found.status_code} {found.text[:300]}"
    parsed = [
        vobject.readOne(card)
        for card in re.findall(r"BEGIN:VCARD.*?END:VCARD", html.unescape(found.text), re.S)
    ]
    names = {str(card.fn.value) for card in parsed}
    assert set(cards.values()) <= names, names
    refused = as_user(
        office,
        "ARGON2I",
        "PUT",
        f"{OFFICE_CONTACTS}omar-{stamp}.vcf",
        vcard("3.0", f"omar-{stamp}", "Omar Test"),
        **{"Content-Type": "text/vcard; charset=utf-8"},
    )
    assert refused.status_code == 403, f"omar (read) added a contact: {refused.status_code}"
    hidden = as_user(office, "BLF-CRYPT", "REPORT", OFFICE_CONTACTS, query, Depth="1")
    assert hidden.status_code in (403, 404), hidden.status_code
    assert stamp not in hidden.text


def test_a_shared_mailbox_cannot_log_in_to_sogo(office: Stack) -> None:
    """office@ is a SOGo user (it owns the calendar) whose row no password matches."""
    for password in ("!", "", "{SHA512-CRYPT}!", "office"):
        assert login(office, "office@office.test", password).status_code != 200, password
        with session(office) as http:
            answer = http.request(
                "PROPFIND",
                f"{base_url(office)}{OFFICE_CALENDAR}",
                auth=HTTPBasicAuth(b"office@office.test", password.encode()),
                timeout=30,
            )
        assert answer.status_code == 401, (password, answer.status_code)


@pytest.mark.parametrize("scheme", ["SHA512-CRYPT", "ARGON2ID (UTF-8)"])
def test_sogo_reads_mail_with_the_users_own_password(office: Stack, scheme: str) -> None:
    """The webmail's folder list comes from Dovecot, logged in to with the user's password
    (a UTF-8 one too)."""
    user, password = USERS[scheme]
    # SOGoMailAccount's "view" (UI/MailerUI/product.plist): the account's mailboxes.
    folders = webmail(office, user, password, "Mail/0/view")
    assert folders.status_code == 200, f"{folders.status_code} {folders.text[:300]}\n{logs(office)}"
    assert "INBOX" in folders.text


def webmail(office: Stack, user: str, password: str, path: str, body: Any = None) -> requests.Response:
    """Log in to the webmail as ``user``, then one request of its own (with the XSRF token) to
    /SOGo/so/<user>/``path``: a POST of JSON ``body``, or a GET."""
    with session(office) as http:
        answer = http.post(
            f"{base_url(office)}/SOGo/connect",
            data=json.dumps({"userName": user, "password": password}, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=30,
        )
        assert answer.status_code == 200, f"{answer.status_code} {answer.text[:300]}\n{logs(office)}"
        return http.request(
            "GET" if body is None else "POST",
            f"{base_url(office)}/SOGo/so/{user}/{path}",
            json=body,
            headers={"X-XSRF-TOKEN": http.cookies.get("XSRF-TOKEN", "")},
            timeout=30,
        )


def test_the_static_files_come_from_web(office: Stack) -> None:
    with session(office) as http:
        page = http.get(f"{base_url(office)}/SOGo/", timeout=30)
        assert page.status_code == 200
        css = http.get(f"{base_url(office)}/SOGo.woa/WebServerResources/css/styles.css", timeout=30)
    assert css.status_code == 200, css.status_code
    assert "Strict-Transport-Security" in page.headers


def test_activesync_answers_through_web(office: Stack) -> None:
    """groupware.activesync: the EAS endpoint (OPTIONS is a client's first request) names the
    protocol versions and commands, for a user with a UTF-8 password."""
    user, password = USERS["ARGON2ID (UTF-8)"]
    with session(office) as http:
        answer = http.options(
            f"{base_url(office)}/Microsoft-Server-ActiveSync",
            auth=HTTPBasicAuth(user.encode(), password.encode("utf-8")),
            timeout=30,
        )
        refused = http.options(
            f"{base_url(office)}/Microsoft-Server-ActiveSync",
            auth=HTTPBasicAuth(user.encode(), b"wrong"),
            timeout=30,
        )
    assert answer.status_code == 200, f"{answer.status_code} {answer.text[:200]}\n{logs(office)}"
    assert "14.1" in answer.headers.get("MS-ASProtocolVersions", ""), answer.headers
    assert "FolderSync" in answer.headers.get("MS-ASProtocolCommands", ""), answer.headers
    assert refused.status_code == 401


def test_idle_memory_of_the_groupware(office: Stack) -> None:
    """Printed for the bench notes; asserted only against the compose limits."""
    time.sleep(IDLE_SECONDS)
    used = memory(office.project.name)
    line = ", ".join(f"{s} {used.get(s, 0):.1f} MiB" for s in sorted(used))
    total = sum(used.values())
    NOTES.append(f"groupware: idle memory after {IDLE_SECONDS:.0f}s: {line}; whole stack {total:.1f} MiB")
    print(f"\nidle memory: {line}; total {total:.1f} MiB", file=sys.stderr)
    for service in GROUPWARE:
        assert used.get(service, 0) > 0, f"no cgroup reading for {service}"


def memory(project: str) -> dict[str, float]:
    """MiB in use per service of the compose project."""
    listing = subprocess.run(
        [
            "docker",
            "ps",
            "--no-trunc",
            "--format",
            '{{.ID}} {{.Label "com.docker.compose.service"}}',
            "--filter",
            f"label=com.docker.compose.project={project}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    pairs = (line.split() for line in listing.splitlines())
    return {service: round(mib, 1) for cid, service in pairs if (mib := cgroup_memory_mib(cid)) is not None}


# --- ActiveSync as a phone uses it: autodiscover, then a real EAS client (eas.py) -------------

EAS_USER = USERS["ARGON2ID (UTF-8)"]
FRESH_FOLDER_TIMEOUT = 20.0  # the delivery takes about a second; SOGo's answer never changes


@pytest.fixture(params=PROTOCOLS, ids=lambda version: f"EAS {version}")
def protocol(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ActiveSync version the client speaks (eas.PROTOCOLS)."""
    version: str = request.param
    speak(monkeypatch, version)
    return version


def test_autodiscover_tells_phones_the_activesync_url_and_outlook_imap(office: Stack) -> None:
    """A phone's request (the mobilesync schema) gets MobileSync and the URL on the published
    https port, with the user's own answer; Outlook's gets IMAP and SMTP, no ActiveSync."""
    user, _ = EAS_USER
    expected = f"https://{office.site.hostname}:{office.ports['https']}{ACTIVESYNC_PATH}"
    with session(office) as http:
        phone = autodiscover(http, base_url(office), MOBILESYNC_REQUEST, user)
        stranger = autodiscover(http, base_url(office), MOBILESYNC_REQUEST, "nobody@office.test")
        outlook = autodiscover(http, base_url(office), AUTODISCOVER_REQUEST, user)
    assert phone.status_code == 200, f"{phone.status_code} {phone.text[:300]}\n{logs(office)}"
    assert mobilesync_server(phone.text) == (user, "MobileSync", expected)
    assert mobilesync_server(stranger.text) == (None, "MobileSync", expected)
    assert outlook.status_code == 200
    assert "<Type>IMAP</Type>" in outlook.text
    assert "MobileSync" not in outlook.text


def eas(office: Stack, user: str, password: str) -> Client:
    """A phone's EAS client for ``user``: the URL from autodiscover, dialled on 127.0.0.1."""
    with session(office) as http:
        answer = autodiscover(http, base_url(office), MOBILESYNC_REQUEST, user)
    _, _, url = mobilesync_server(answer.text)
    assert url is not None, answer.text
    return eas_client(
        session(office), url.replace(f"//{office.site.hostname}:", "//127.0.0.1:"), user, password
    )


def test_eas_provision_and_folder_sync_with_a_utf8_password(office: Stack, protocol: str) -> None:
    """Provision, as a phone starts: SOGo has no device policy for it (no PolicyKey, which
    pyactivesync takes for an error); FolderSync then lists the Inbox, Calendar and Contacts."""
    user, password = EAS_USER
    started = time.monotonic()
    with eas(office, user, password) as client:
        with pytest.raises(ProvisionError, match="no PolicyKey"):
            client.provision()
        folders = without_policy(client).list_folders()
    NOTES.append(f"groupware: EAS {protocol} Provision and FolderSync took {time.monotonic() - started:.2f}s")
    kinds = {f.type: f.name for f in folders}
    for kind in (FolderType.INBOX, FolderType.CALENDAR, FolderType.CONTACTS):
        assert kind in kinds, f"no {kind.name} folder in {kinds}\n{logs(office)}"


def test_eas_syncs_mail_of_a_folder_no_condstore_client_opened(office: Stack) -> None:
    """A phone-only user, whose Inbox no CONDSTORE client ever opened: SOGo 5.12 syncs a
    folder only once Dovecot tracks its modification sequences, which `up` starts in every
    folder of a site with ActiveSync (render/dovecot.py MODSEQ_TRACKING)."""
    user, password = USERS["ARGON2I"]
    subject = token("eas fresh")
    office.deliver(make_message(EXTERNAL_SENDER, user, subject, domain="office.test"))
    with eas(office, user, password) as client:
        inbox = folder(without_policy(client).list_folders(), FolderType.INBOX)
        sync_until(
            client,
            inbox.id,
            f"{subject!r} in {user}'s Inbox",
            lambda f: f.get("Email.Subject") == subject,
            timeout=FRESH_FOLDER_TIMEOUT,
        )


def test_eas_syncs_mail_delivered_over_smtp(office: Stack, protocol: str) -> None:
    """Once Dovecot tracks the Inbox's modification sequences, which any CONDSTORE client
    starts (see the xfail test above): here the user opened the Inbox in the webmail once,
    the advice the README gives to users who only have a phone."""
    user, password = EAS_USER
    # SOGoMailFolder's "view" (getUIDs): the folder's message list, as the webmail asks for it.
    opened = webmail(office, user, password, "Mail/0/folderINBOX/view", {"sortingAttributes": {}})
    assert opened.status_code == 200, f"{opened.status_code} {opened.text[:300]}\n{logs(office)}"
    subject = token("eas mail")
    started = time.monotonic()
    office.deliver(make_message(EXTERNAL_SENDER, user, subject, domain="office.test"))
    with eas(office, user, password) as client:
        inbox = folder(without_policy(client).list_folders(), FolderType.INBOX)
        item = sync_until(
            client, inbox.id, f"{subject!r} in {user}'s Inbox", lambda f: f.get("Email.Subject") == subject
        )
    NOTES.append(
        f"groupware: EAS {protocol} Sync returned a message {time.monotonic() - started:.1f}s after SMTP"
    )
    assert EXTERNAL_SENDER in item.get("Email.From", ""), item


def test_eas_syncs_an_event_made_over_caldav(office: Stack, protocol: str) -> None:
    user, password = EAS_USER
    summary = token("eas event")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    event = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//mailstack//integration tests//EN",
            "BEGIN:VEVENT",
            f"UID:{uuid.uuid4()}",
            f"DTSTAMP:{start:%Y%m%dT%H%M%SZ}",
            f"DTSTART:{start:%Y%m%dT%H%M%SZ}",
            f"DTEND:{start + timedelta(hours=1):%Y%m%dT%H%M%SZ}",
            f"SUMMARY:{summary}",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    try:
        calendar = next(
            c
            for c in dav_client(office, user, password).principal().calendars()  # type: ignore[no-untyped-call]
            if unquote(str(c.url)).endswith("/Calendar/personal/")
        )
        calendar.save_event(event)
    except DAVError as exc:
        raise AssertionError(f"{exc}\n{logs(office)}") from exc
    with eas(office, user, password) as client:
        found = folder(without_policy(client).list_folders(), FolderType.CALENDAR)
        # pyactivesync 0.17 has no Calendar code page: its fields are named page4.0x…, so
        # the event is found by its subject among the values.
        sync_until(client, found.id, f"the event {summary!r}", lambda f: summary in f.values())


def test_eas_syncs_a_contact_made_over_carddav(office: Stack, protocol: str) -> None:
    user, password = EAS_USER
    last = token("Lovelace").replace(" ", "-")
    uid = uuid.uuid4()
    card = f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:Ada {last}\r\nN:{last};Ada;;;\r\nEND:VCARD\r\n"
    with session(office) as http:
        put = http.put(
            f"{base_url(office)}/SOGo/dav/{user}/Contacts/personal/{uid}.vcf",
            data=card.encode(),
            headers={"Content-Type": "text/vcard; charset=utf-8", "If-None-Match": "*"},
            auth=HTTPBasicAuth(user.encode(), password.encode("utf-8")),
            timeout=30,
        )
    assert put.status_code in (201, 204), f"{put.status_code} {put.text[:300]}\n{logs(office)}"
    with eas(office, user, password) as client:
        found = folder(without_policy(client).list_folders(), FolderType.CONTACTS)
        item = sync_until(
            client, found.id, f"the contact {last!r}", lambda f: f.get("Contacts.LastName") == last
        )
    assert item.get("Contacts.FirstName") == "Ada", item


def test_eas_refuses_a_wrong_password_with_401(office: Stack) -> None:
    """Last of the EAS tests: SOGo counts failed logins (blocks after 10 in 10 minutes)."""
    user, password = EAS_USER
    with eas(office, user, password + "x") as client, pytest.raises(requests.HTTPError) as refused:
        without_policy(client).list_folders()
    assert refused.value.response.status_code == 401
    assert refused.value.response.headers.get("www-authenticate", "").lower().startswith("basic")


def test_a_per_user_encrypted_mailbox_reads_in_the_webmail_and_over_activesync(office: Stack) -> None:
    """SOGo logs in to Dovecot with the user's own password, which unlocks a per_user key: the
    webmail lists the message (its headers come from the decrypted file: the cache keeps
    none) and ActiveSync syncs it."""
    user, password = USERS["ARGON2I"]
    _, recipient = new_recovery_identity()
    text = office.site_path.read_text(encoding="utf-8")
    entry = f"  - address: {user}\n"
    office.site_path.write_text(
        text.replace(entry, entry + "    encryption: per_user\n", 1)
        + f"\nencryption:\n  recovery: {recipient}\n",
        encoding="utf-8",
    )
    office.cli("password", user, stdin=f"{password}\n{password}\n")  # makes the key, then `up`
    office.reload_site()
    subject = token("per-user webmail")
    office.deliver(make_message(EXTERNAL_SENDER, user, subject, domain="office.test"))

    def in_webmail() -> bool:
        answer = webmail(office, user, password, "Mail/0/folderINBOX/view", {"sortingAttributes": {}})
        return subject in answer.text

    wait_until(f"{subject!r} in {user}'s webmail Inbox", in_webmail, timeout=60, interval=2)
    fetch = office.exec("dovecot", "doveadm", "fetch", "-u", user, "hdr", "all")
    assert subject not in fetch.stdout, "root read a per_user message without the password"
    assert "Private key not available" in fetch.stderr
    with eas(office, user, password) as client:
        inbox = folder(without_policy(client).list_folders(), FolderType.INBOX)
        sync_until(
            client, inbox.id, f"{subject!r} over ActiveSync", lambda f: f.get("Email.Subject") == subject
        )


def test_a_changed_mailbox_reaches_sogo_on_the_next_up(office: Stack) -> None:
    """Users are reconciled on every `up`: a removed mailbox can no longer log in to SOGo."""
    user, password = USERS["BLF-CRYPT"]
    text = office.site_path.read_text(encoding="utf-8")
    start = text.index(f"  - address: {user}\n")
    end = text.index("  - address:", start + 1)
    office.site_path.write_text(text[:start] + text[end:], encoding="utf-8")
    office.reload_site()
    result = engine.up(office.project, timeout=UP_TIMEOUT, say=lambda _m: None)
    assert "postgres" in result.reloaded, result.reloaded
    # Its free/busy entry is the reconciler's input, not SOGo's configuration: no restart.
    assert "sogo" not in result.reloaded, result.reloaded
    wait_until(
        f"{user} to be refused by SOGo after its removal",
        lambda: login(office, user, password).status_code == 403,
        timeout=30,
        interval=2,
    )
    other, other_password = USERS["SHA512-CRYPT"]
    assert login(office, other, other_password).status_code == 200


def test_check_finds_the_groupware_as_its_clients_do(office: Stack) -> None:
    """`mailstack check` probes CalDAV and CardDAV discovery, the webmail's login page,
    ActiveSync's OPTIONS and the phones' autodiscover on the running stack; every item passes."""
    code, report, output = run_check(office)
    probes = {r["probe"]: r for r in report["results"]}
    for probe in (
        "CalDAV discovery",
        "CardDAV discovery",
        "webmail",
        "ActiveSync",
        "ActiveSync autodiscover",
    ):
        assert probe in probes, f"{probe} not probed:\n{output}"
        assert probes[probe]["status"] == "pass", f"{probe}: {probes[probe]['reason']}\n{logs(office)}"
    assert code == 0, failures(report)


def test_a_calendar_right_removed_from_the_description_is_removed_on_the_next_up(office: Stack) -> None:
    """jonas loses his read right on the office calendar: after `up` he neither lists nor
    reads it; another `up` then changes nothing."""
    text = office.site_path.read_text(encoding="utf-8")
    grant = "      - {right: read, mailbox: jonas@office.test}\n      - {right: read, mailbox: zoe"
    assert grant in text
    office.site_path.write_text(
        text.replace(grant, "      - {right: read, mailbox: zoe", 1), encoding="utf-8"
    )
    office.reload_site()
    result = engine.up(office.project, timeout=UP_TIMEOUT, say=lambda _m: None)
    assert "removed office@office.test Calendar/personal from jonas@office.test" in result.rights, (
        result.rights
    )
    seen = as_user(office, "SHA256-CRYPT", "PROPFIND", OFFICE_CALENDAR, Depth="1")
    assert seen.status_code in (403, 404), f"jonas still reads the office calendar: {seen.status_code}"
    jonas = dav(office, "SHA256-CRYPT")
    assert "Office" not in {c.name for c in jonas.principal().calendars()}  # type: ignore[no-untyped-call]
    started = time.monotonic()
    changes = engine.reconcile_rights(office.project, lambda _m: None)
    NOTES.append(
        f"groupware: reconciling the rights with nothing to change took {time.monotonic() - started:.1f}s "
        f"({len(office.site.mailboxes)} mailboxes, {len(office.site.calendars)} calendar, "
        f"{len(office.site.address_books)} address book)"
    )
    again = engine.up(office.project, timeout=UP_TIMEOUT, say=lambda _m: None)
    assert changes == [], changes
    assert again.rights == [], again.rights
