"""`mailstack check` pieces that need no stack: the DNS comparison, against a stub server on
127.0.0.1 that answers from a table, and the command's refusal without a state."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from typer.testing import CliRunner

from mailstack.check.published import dane_result, dns_results, resolver_for
from mailstack.check.roundtrip import selectable_folders
from mailstack.cli import app
from mailstack.dns import Record
from mailstack.passwords import verify_password
from mailstack.site.loader import load_site
from mailstack.state import State
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.unit

Zone = dict[tuple[str, str], list[str]]


@pytest.fixture
def stub_dns() -> Iterator[tuple[str, Zone]]:
    """A UDP DNS server on 127.0.0.1 answering from ``zone`` (filled in by the test)."""
    zone: Zone = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            key = (question.name.to_text().rstrip("."), dns.rdatatype.to_text(question.rdtype))
            if key in zone:
                response.answer.append(
                    dns.rrset.from_text_list(
                        question.name, 300, dns.rdataclass.IN, question.rdtype, zone[key]
                    )
                )
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}", zone
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def record(name: str, type_: str, value: str) -> Record:
    return Record("ex.test", name, type_, value, 300, "test")  # type: ignore[arg-type]


def test_published_records_pass_and_missing_ones_fail_with_the_fix(stub_dns: tuple[str, Zone]) -> None:
    address, zone = stub_dns
    long_txt = "v=DKIM1; k=rsa; p=" + "A" * 300  # longer than one TXT string: split on the wire
    zone[("ex.test", "MX")] = ["10 MAIL.ex.test."]
    zone[("s1._domainkey.ex.test", "TXT")] = ['"' + long_txt[:255] + '" "' + long_txt[255:] + '"']
    zone[("_25._tcp.mail.ex.test", "TLSA")] = ["3 1 1 " + "AB" * 32]
    records = (
        record("ex.test", "MX", "10 mail.ex.test."),
        record("s1._domainkey.ex.test", "TXT", long_txt),
        record("_25._tcp.mail.ex.test", "TLSA", "3 1 1 " + "ab" * 32),
        record("_25._tcp.mail.ex.test", "TLSA", "3 1 1 " + "cd" * 32),  # the next key: not yet published
        record("_dmarc.ex.test", "TXT", "v=DMARC1; p=quarantine"),
    )
    results = {r.probe: r for r in dns_results(records, address)}
    assert results["DNS MX ex.test"].status == "pass"
    assert results["DNS TXT s1._domainkey.ex.test"].status == "pass"
    # A next key not yet published warns: it matters at the renewal that switches to it.
    assert results["DNS TLSA _25._tcp.mail.ex.test"].status == "warn"
    assert "3 1 1 cdcd" in results["DNS TLSA _25._tcp.mail.ex.test"].reason
    assert results["DNS TXT _dmarc.ex.test"].status == "fail"
    assert "mailstack dns" in results["DNS TXT _dmarc.ex.test"].fix


def test_dane_warns_when_the_published_tlsa_no_longer_pins_the_served_key(stub_dns: tuple[str, Zone]) -> None:
    address, zone = stub_dns
    records = (
        record("_25._tcp.mail.ex.test", "TLSA", "3 1 1 " + "ab" * 32),
        record("_25._tcp.mail.ex.test", "TLSA", "3 1 1 " + "ef" * 32),
    )
    assert dane_result(records, {"ECDSA": "ab" * 32}, address).status == "pass"  # nothing published
    zone[("_25._tcp.mail.ex.test", "TLSA")] = ["3 1 1 " + "AB" * 32]
    assert dane_result(records, {"ECDSA": "ab" * 32}, address).status == "pass"
    renewed = dane_result(records, {"ECDSA": "ab" * 32, "RSA": "ef" * 32}, address)
    assert renewed.status == "warn"
    assert "RSA efefefef" in renewed.reason
    assert "ECDSA" not in renewed.reason
    assert "mailstack dns" in renewed.fix


def test_resolver_addresses_take_an_optional_port() -> None:
    assert (resolver_for("192.0.2.1").nameservers, resolver_for("192.0.2.1").port) == (["192.0.2.1"], 53)
    assert resolver_for("127.0.0.1:5353").port == 5353
    assert (resolver_for("[::1]:5353").nameservers, resolver_for("[::1]:5353").port) == (["::1"], 5353)


def test_check_without_a_state_fails_with_the_fix_and_no_traceback(tmp_path: Path) -> None:
    demo = next(p for p in EXAMPLES if p.name == "demo.yaml")
    result = CliRunner().invoke(app, ["check", str(demo), "--json", "--state", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert '"status": "fail"' in result.output
    assert "mailstack up" in result.output
    assert "Traceback" not in result.output


def test_the_probe_password_hash_is_light_and_verifies(tmp_path: Path) -> None:
    demo = next(p for p in EXAMPLES if p.name == "demo.yaml")
    state = State(tmp_path / "state")
    view = state.ensure(load_site(demo))
    password = state.probe_password()
    assert len(password) >= 24  # 18 random bytes, URL-safe base64
    assert view.probe_hash.startswith("{ARGON2ID}$argon2id$v=19$m=8192,t=1,p=1$")
    assert verify_password(password, view.probe_hash)
    assert not verify_password(password + "x", view.probe_hash)
    again = State(tmp_path / "state").ensure(load_site(demo))
    assert again.probe_hash == view.probe_hash  # made once, never rotated


def test_folder_names_are_read_from_imap_list_lines_quoted_or_not() -> None:
    listing: list[object] = [
        b'(\\HasNoChildren) "/" INBOX',
        b'(\\HasNoChildren \\Junk) "/" Junk',
        b'(\\Noselect \\HasChildren) "/" Archive',
        b'(\\HasNoChildren) "/" "Old \\"Mail\\""',
        b"(\\HasNoChildren) NIL Flat",
    ]
    assert selectable_folders(listing) == ["INBOX", "Junk", 'Old "Mail"', "Flat"]
