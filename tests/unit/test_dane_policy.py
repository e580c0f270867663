"""mailstack-dane-policy (compose/images/mta-sts/dane_policy.py): DANE before MTA-STS."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import image_program

TLSA_EE = "3 1 1 " + "ab" * 32
TLSA_PKIX = "1 1 1 " + "cd" * 32


@pytest.fixture(scope="module")
def d() -> ModuleType:
    return image_program("mta-sts", "dane_policy.py")


def zone(d: ModuleType, records: dict[tuple[str, str], object]) -> object:
    """A Lookup over a dict: (name, type) → Answer, or an exception to raise."""

    def lookup(name: str, rdtype: str) -> object:
        found = records.get((name, rdtype), d.Answer((), secure=True))
        if isinstance(found, Exception):
            raise found
        return found

    return lookup


def test_all_mx_hosts_with_validated_tlsa_get_dane_only(d: ModuleType) -> None:
    lookup = zone(
        d,
        {
            ("b.test", "MX"): d.Answer(("10 mail.b.test.", "20 mx2.b.test."), secure=True),
            ("_25._tcp.mail.b.test", "TLSA"): d.Answer((TLSA_EE,), secure=True),
            ("_25._tcp.mx2.b.test", "TLSA"): d.Answer(("2 0 1 " + "ef" * 32,), secure=True),
        },
    )
    assert d.policy("b.test", lookup) == "OK dane-only"
    assert d.policy("B.Test.", lookup) == "OK dane-only"  # Postfix may ask in any case


def test_some_mx_hosts_with_tlsa_get_dane(d: ModuleType) -> None:
    lookup = zone(
        d,
        {
            ("b.test", "MX"): d.Answer(("10 mail.b.test.", "20 backup.example."), secure=True),
            ("_25._tcp.mail.b.test", "TLSA"): d.Answer((TLSA_EE,), secure=True),
        },
    )
    assert d.policy("b.test", lookup) == "OK dane"


# What replaces the MX or the TLSA answer of a destination that would otherwise get dane-only.
CASES = {
    "MX not validated: RFC 7672 §2.2.1, DANE does not apply": ("MX", ("10 mail.b.test.",), False, True),
    "TLSA not validated": ("TLSA", (TLSA_EE,), False, True),
    "PKIX-EE only: unusable for SMTP (RFC 7672 §3.1)": ("TLSA", (TLSA_PKIX,), True, True),
    "no TLSA at all": ("TLSA", (), True, True),
    "a null MX (RFC 7505)": ("MX", ("0 .",), True, True),
    "no such domain": ("MX", (), True, False),
}


@pytest.mark.parametrize("why", list(CASES))
def test_without_usable_dane_the_mta_sts_map_is_asked(d: ModuleType, why: str) -> None:
    rdtype, records, secure, exists = CASES[why]
    table: dict[tuple[str, str], object] = {
        ("b.test", "MX"): d.Answer(("10 mail.b.test.",), secure=True),
        ("_25._tcp.mail.b.test", "TLSA"): d.Answer((TLSA_EE,), secure=True),
    }
    key = ("b.test", "MX") if rdtype == "MX" else ("_25._tcp.mail.b.test", "TLSA")
    table[key] = d.Answer(records, secure=secure, exists=exists)
    assert d.policy("b.test", zone(d, table)) == "NOTFOUND ", why


def test_no_mx_means_the_domain_is_its_own_host(d: ModuleType) -> None:
    lookup = zone(d, {("_25._tcp.b.test", "TLSA"): d.Answer((TLSA_EE,), secure=True)})
    assert d.policy("b.test", lookup) == "OK dane-only"


def test_a_failed_lookup_defers_instead_of_choosing_a_weaker_policy(d: ModuleType) -> None:
    lookup = zone(
        d,
        {
            ("b.test", "MX"): d.Answer(("10 mail.b.test.",), secure=True),
            ("_25._tcp.mail.b.test", "TLSA"): d.DnsLookupError("_25._tcp.mail.b.test TLSA: Timeout"),
        },
    )
    assert d.policy("b.test", lookup) == "TEMP _25._tcp.mail.b.test TLSA: Timeout"


@pytest.mark.parametrize(
    "key", [".b.test", "[192.0.2.1]:25", "192.0.2.1", "2001:db8::1", "healthcheck.invalid"]
)
def test_keys_that_are_not_destination_domains_are_not_looked_up(d: ModuleType, key: str) -> None:
    def lookup(name: str, rdtype: str) -> object:
        raise AssertionError(f"asked {name} {rdtype}")

    assert d.policy(key, lookup) == "NOTFOUND "


@pytest.fixture
def server(d: ModuleType) -> Iterator[tuple[str, int]]:
    lookup = zone(
        d,
        {
            ("b.test", "MX"): d.Answer(("10 mail.b.test.",), secure=True),
            ("_25._tcp.mail.b.test", "TLSA"): d.Answer((TLSA_EE,), secure=True),
        },
    )
    srv = d.Server(("127.0.0.1", 0), lookup)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[0], srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_the_socketmap_answers_several_questions_on_one_connection(
    d: ModuleType, server: tuple[str, int]
) -> None:
    with socket.create_connection(server, timeout=5) as conn:
        conn.sendall(d.netstring("dane b.test") + d.netstring("dane c.test"))
        replies = b""
        while replies.count(b",") < 2:
            chunk = conn.recv(512)
            assert chunk, f"connection closed after {replies!r}"
            replies += chunk
    assert replies == b"12:OK dane-only,9:NOTFOUND ,"
    assert d.healthcheck(*server) is None


def test_a_malformed_request_closes_the_connection(d: ModuleType, server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=5) as conn:
        conn.sendall(b"99999999:x,")
        assert conn.recv(512) == b""
