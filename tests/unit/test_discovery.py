"""Clients find the groupware: RFC 6764 records, autoconfig's address book and calendar, and
the Apple profile's CalDAV and CardDAV accounts; none of it without groupware."""

from __future__ import annotations

import plistlib
import xml.etree.ElementTree as ET

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
