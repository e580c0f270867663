"""Clients find the groupware: RFC 6764 records, autoconfig's address book and calendar, the
Apple profile's CalDAV and CardDAV accounts, and with ActiveSync the autodiscover answer for
phones; none of it without groupware (or ActiveSync)."""

from __future__ import annotations

import plistlib
import re
import xml.etree.ElementTree as ET

import pytest

from mailstack.check.web import AUTODISCOVER_REQUEST, MOBILESYNC_REQUEST
from mailstack.discovery import MOBILESYNC_SCHEMA
from mailstack.dns import build_records
from tests.conftest import fake_state
from tests.unit.test_groupware import site
from tests.unit.test_resolver import rendered

ON = "groupware: {enabled: true}\n"


def records(extra: str) -> dict[tuple[str, str], str]:
    s = site(extra)
    return {(r.name, r.type): r.value for r in build_records(s, fake_state(s.domain_names))}


def test_dns_prints_rfc_6764_srv_and_txt_records_for_the_groupware() -> None:
    found = records(ON)
    assert found[("_caldavs._tcp.gw.test", "SRV")] == "0 1 443 mail.gw.test."
    assert found[("_carddavs._tcp.gw.test", "SRV")] == "0 1 443 mail.gw.test."
    assert found[("_caldavs._tcp.gw.test", "TXT")] == "path=/SOGo/dav/"
    assert found[("_carddavs._tcp.gw.test", "TXT")] == "path=/SOGo/dav/"
    assert found[("_caldav._tcp.gw.test", "SRV")] == "0 0 0 ."  # no plain HTTP
    assert not any("dav" in name for name, _ in records(""))


def test_autoconfig_names_the_personal_address_book_and_calendar() -> None:
    xml = rendered(site(ON))["config/web/htdocs/autoconfig/gw.test.xml"]
    root = ET.fromstring(xml)  # noqa: S314 - ours
    book, calendar = root.find("addressBook"), root.find("calendar")
    assert book is not None
    assert calendar is not None
    assert book.get("type") == "carddav"
    assert book.findtext("serverURL") == "https://mail.gw.test/SOGo/dav/%EMAILADDRESS%/Contacts/personal/"
    assert calendar.findtext("serverURL") == "https://mail.gw.test/SOGo/dav/%EMAILADDRESS%/Calendar/personal/"
    off = rendered(site())["config/web/htdocs/autoconfig/gw.test.xml"]
    assert "addressBook" not in off


def test_the_apple_profile_adds_caldav_and_carddav_accounts() -> None:
    files = rendered(site(ON))
    profile = plistlib.loads(files["config/web/htdocs/apple/anna@gw.test.mobileconfig"].encode())
    by_type = {p["PayloadType"]: p for p in profile["PayloadContent"]}
    caldav, carddav = by_type["com.apple.caldav.account"], by_type["com.apple.carddav.account"]
    assert caldav["CalDAVPrincipalURL"] == "/SOGo/dav/anna@gw.test/"
    assert caldav["CalDAVHostName"] == "mail.gw.test"
    assert caldav["CalDAVUseSSL"] is True
    assert carddav["CardDAVUsername"] == "anna@gw.test"
    assert carddav["CardDAVPort"] == 443
    uuids = [p["PayloadUUID"] for p in profile["PayloadContent"]] + [profile["PayloadUUID"]]
    assert len(set(uuids)) == len(uuids)
    off = plistlib.loads(rendered(site())["config/web/htdocs/apple/anna@gw.test.mobileconfig"].encode())
    assert len(off["PayloadContent"]) == 1


# --- ActiveSync autodiscover (groupware.activesync) -------------------------------------------

ACTIVESYNC = "groupware: {enabled: true, activesync: true}\n"
EAS_URL = "https://mail.gw.test/Microsoft-Server-ActiveSync"


def mobilesync(xml: str) -> tuple[str | None, str | None, tuple[str | None, ...]]:
    """(EMailAddress, DisplayName, (Type, Url, Name)) of a mobilesync autodiscover answer."""
    ns = f"{{{MOBILESYNC_SCHEMA}}}"
    response = ET.fromstring(xml).find(f"{ns}Response")  # noqa: S314 - ours
    assert response is not None
    server = response.find(f"{ns}Action/{ns}Settings/{ns}Server")
    assert server is not None
    return (
        response.findtext(f"{ns}User/{ns}EMailAddress"),
        response.findtext(f"{ns}User/{ns}DisplayName"),
        tuple(server.findtext(f"{ns}{tag}") for tag in ("Type", "Url", "Name")),
    )


def test_autodiscover_tells_phones_the_activesync_url_with_the_users_own_answer() -> None:
    files = rendered(site(ACTIVESYNC))
    server = ("MobileSync", EAS_URL, EAS_URL)
    assert mobilesync(files["config/web/htdocs/autodiscover/mobilesync/anna@gw.test.xml"]) == (
        "anna@gw.test",
        "Anna O'Neil",
        server,
    )
    assert mobilesync(files["config/web/htdocs/autodiscover/mobilesync/bob@gw.test.xml"]) == (
        "bob@gw.test",
        None,  # no name in the site: DisplayName is optional
        server,
    )
    assert mobilesync(files["config/web/htdocs/autodiscover/mobilesync.xml"]) == (None, None, server)
    # Outlook's schema has no ActiveSync protocol type: its answer stays IMAP and SMTP.
    assert "MobileSync" not in files["config/web/htdocs/autodiscover/autodiscover.xml"]


def nginx_answer(files: dict[str, str], body: str) -> str:
    """The htdocs file the web service answers a POST of ``body`` with: the two maps of
    $request_body in nginx.conf (their PCRE patterns mean the same in Python's re, named
    groups aside), then the try_files of the loopback autodiscover server."""
    conf = files["config/web/nginx.conf"]
    values = {}
    for variable, block in re.findall(r"map \$request_body \$(\w+) \{\n(.*?)\n    \}", conf, re.DOTALL):
        value = re.search(r'default "?([^";]*)"?;', block)
        assert value is not None
        values[variable] = value.group(1)
        for pattern, result in re.findall(r'^\s*"~(.*)" (\S+);$', block, re.MULTILINE):
            if found := re.search(pattern.replace("(?<", "(?P<"), body):
                values[variable] = re.sub(r"\$(\w+)", lambda m: found.group(m.group(1)), result)
                break
    (tries,) = re.findall(r"try_files (/autodiscover/\S+)\s+(/autodiscover/\S+) =404;", conf)
    for path in tries:
        path = path.replace("$http_x_mailstack_autodiscover", values["mailstack_autodiscover"])
        path = path.replace("$http_x_mailstack_address", values["mailstack_autodiscover_address"])
        if f"config/web/htdocs{path}" in files:
            return str(path)
    raise AssertionError(f"no file for {values}")


@pytest.mark.parametrize(
    ("address", "request_", "answer"),
    [
        ("anna@gw.test", MOBILESYNC_REQUEST, "/autodiscover/mobilesync/anna@gw.test.xml"),
        ("someone@else.test", MOBILESYNC_REQUEST, "/autodiscover/mobilesync.xml"),
        ("Anna@GW.test", MOBILESYNC_REQUEST, "/autodiscover/mobilesync.xml"),  # the files are lower case
        ("../../nginx.conf@x", MOBILESYNC_REQUEST, "/autodiscover/mobilesync.xml"),  # no '/' taken
        ("anna@gw.test", AUTODISCOVER_REQUEST, "/autodiscover/autodiscover.xml"),  # Outlook
        ("", "", "/autodiscover/autodiscover.xml"),  # a GET, or an empty POST
    ],
)
def test_nginx_picks_the_answer_by_the_requested_schema_and_address(
    address: str, request_: str, answer: str
) -> None:
    files = rendered(site(ACTIVESYNC))
    body = request_.format(address=address)
    assert nginx_answer(files, body) == answer
    # A namespace prefix and blanks around the text (as some clients write it) change nothing.
    spaced = body.replace("<AcceptableResponseSchema>", "<a:AcceptableResponseSchema>\n  ").replace(
        "</AcceptableResponseSchema>", "\n  </a:AcceptableResponseSchema>"
    )
    assert nginx_answer(files, spaced) == answer


def test_without_activesync_autodiscover_never_mentions_it() -> None:
    for extra in ("", ON):
        files = rendered(site(extra))
        assert not [p for p in files if "mobilesync" in p]
        web = {p: text for p, text in files.items() if p.startswith("config/web/")}
        assert not [p for p, text in web.items() if "mobilesync" in text.lower()]
        # The Outlook answer is a static file, POST or GET (no loopback server).
        assert "error_page 405 =200 /.mailstack/autodiscover.xml;" in web["config/web/nginx.conf"]
        assert "$request_body" not in web["config/web/nginx.conf"]
