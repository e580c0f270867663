from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mailstack.errors import SiteValidationError
from mailstack.site.fields import format_size, parse_address, parse_domain, parse_size
from mailstack.site.loader import load_site, parse_site
from mailstack.site.models import STANDARD_PORTS
from tests.conftest import EXAMPLES, FIXTURES, ROOT

DEMO = ROOT / "examples" / "demo.yaml"


def test_design_section_3_validates_as_written() -> None:
    site = load_site(FIXTURES / "valid" / "design-section3.yaml")
    assert site.site == "acme"
    assert site.domain_names == ("acme.example", "acme-shop.example")
    assert site.domains[1].catch_all == "alice@acme.example"
    assert site.mailboxes[0].quota == 2 * 1024**3
    assert site.mailboxes[0].send_as == ("sales@acme.example",)
    assert site.limits.message_size == 25 * 1024**2
    assert site.hosts[0].ssh_port == 22


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(example: Path) -> None:
    assert load_site(example).mailboxes


def test_there_is_a_demo_and_a_richer_example() -> None:
    names = {p.name for p in EXAMPLES}
    assert "demo.yaml" in names
    rich = [load_site(p) for p in EXAMPLES if len(load_site(p).domains) >= 2]
    assert any(s.aliases and any(d.catch_all for d in s.domains) for s in rich)
    assert any(m.send_as for s in rich for m in s.mailboxes)


def test_models_are_frozen() -> None:
    site = load_site(FIXTURES / "valid" / "base.yaml")
    with pytest.raises(ValueError, match="frozen"):
        site.site = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("25M", 25 * 1024**2),
        ("2G", 2 * 1024**3),
        ("512k", 512 * 1024),
        ("1.5G", 1536 * 1024**2),
        ("10 MiB", 10 * 1024**2),
        ("4096", 4096),
        (1000, 1000),
        ("1T", 1024**4),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "M", "-1M", "10X", "1,5G", True, None, 0, "0K"])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


@pytest.mark.parametrize("huge", [10**400, "9" * 400, "9" * 400 + "M", 2**63])
def test_huge_sizes_are_refused_not_overflowed(huge: object) -> None:
    # Found by the fuzzer: float() of these raised OverflowError, a traceback.
    with pytest.raises(ValueError, match="beyond what Postfix and Dovecot count"):
        parse_size(huge)


def test_format_size_round_trips() -> None:
    assert format_size(25 * 1024**2) == "25M"
    assert format_size(1536 * 1024**2) == "1536M"
    assert format_size(1000) == "1000"


def test_addresses_and_domains_are_normalised() -> None:
    assert parse_address("Alice.Smith@Example.ORG") == "alice.smith@example.org"
    assert parse_domain("Bücher.Example.") == "xn--bcher-kva.example"
    assert parse_address("o'neil@bücher.example") == "o'neil@xn--bcher-kva.example"


@pytest.mark.parametrize("bad", ["xn--a.example", "mail.xn--zz-zzzz.example", "XN--LS8H.example"])
def test_a_labels_must_be_valid_punycode(bad: str) -> None:
    # Found by the fuzzer: an ASCII name skipped the IDNA check, so any xn-- label passed.
    with pytest.raises(ValueError, match="no valid A-label"):
        parse_domain(bad)


@pytest.mark.parametrize(
    ("parse", "bad"),
    [
        (parse_domain, "0\n.example"),
        (parse_address, "alice\n@example.org"),
    ],
)
def test_a_newline_before_a_dot_or_at_the_end_is_refused(parse: Callable[[object], object], bad: str) -> None:
    # Found by the fuzzer: Python's `$` matches before a final newline, so a label "0\n"
    # passed, and the name went into configuration files with its line break.
    with pytest.raises(ValueError, match=r"not a valid domain name|invalid local part"):
        parse(bad)


@pytest.mark.parametrize("name", ["Alice\nSmith", "Tab\there", "Nul\x00", "Bell\x07"])
def test_a_display_name_with_a_control_character_is_refused(name: str) -> None:
    # Left open by the fuzzing: an escaped line break went into the SQL and XML it is written to.
    data = DEMO.read_text().replace("name: Alice Demo", f"name: {json.dumps(name)}")
    with pytest.raises(
        SiteValidationError, match=r"mailboxes\[0\]\.name \(line 38\): .*control characters \(U\+00"
    ):
        parse_site(data)


def test_a_display_name_may_be_any_one_line_of_text() -> None:
    name = "Zoë Ångström-Núñez 山田 \u200d👩‍💻"
    site = parse_site(
        DEMO.read_text().replace("name: Alice Demo", f"name: {json.dumps(name, ensure_ascii=False)}")
    )
    assert site.mailboxes[0].name == name


def test_valid_a_labels_pass_in_any_case() -> None:
    assert parse_domain("XN--MNCHEN-3YA.Example") == "xn--mnchen-3ya.example"


@pytest.mark.parametrize(
    "bad", ["a@b", "a..b@example.org", ".a@example.org", "a@-x.example", "a b@example.org"]
)
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(ValueError, match=r"domain|local part|email"):
        parse_address(bad)


def test_defaults_publish_the_standard_ports_on_all_addresses() -> None:
    text = (FIXTURES / "valid" / "base.yaml").read_text().split("network:")[0] + (
        "domains:\n  - name: test.example\n"
    )
    site = parse_site(text)
    assert site.network.ports.published() == STANDARD_PORTS
    assert site.network.bind == ("0.0.0.0", "::")
    assert site.front_subnet6 is not None  # listening on IPv6: the front network has a subnet
    assert site.tls.mode == "selfsigned"


def test_partial_ports_publish_only_those() -> None:
    site = load_site(FIXTURES / "valid" / "base.yaml")
    assert site.network.ports.published() == {"smtp": 2525, "submission": 2587, "imaps": 2993}


def test_bind_accepts_a_list_with_ipv6() -> None:
    text = (
        (FIXTURES / "valid" / "base.yaml").read_text().replace("bind: 127.0.0.1", "bind: [127.0.0.1, '::1']")
    )
    assert parse_site(text).network.bind == ("127.0.0.1", "::1")


@pytest.mark.parametrize(
    "hashed",
    [
        "{BLF-CRYPT}$2b$10$Zl6dECORo0MPSAEbbgwVfOvm4K5jbvFOtwcBKlN.ifSppC1iTCHNy",
        "{SHA512-CRYPT}$6$saltsalt$" + "a" * 86,
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
    ],
)
def test_accepted_hash_schemes(hashed: str) -> None:
    text = (FIXTURES / "valid" / "base.yaml").read_text()
    first = text.index('"{ARGON2ID}')
    end = text.index('"', first + 1)
    site = parse_site(text[:first] + f'"{hashed}"' + text[end + 1 :])
    assert site.mailboxes[0].password_hash == hashed


def test_tls_files_are_relative_to_the_site_file(tmp_path: Path) -> None:
    text = (
        (FIXTURES / "valid" / "base.yaml")
        .read_text()
        .replace(
            "limits:",
            "tls:\n  mode: files\n  cert_file: certs/fullchain.pem\n"
            "  key_file: /etc/ssl/private/k.pem\nlimits:",
        )
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "site.yaml").write_text(text)
    site = load_site(tmp_path / "sub" / "site.yaml")
    assert site.tls.cert_file == str(tmp_path / "sub" / "certs" / "fullchain.pem")
    assert site.tls.key_file == "/etc/ssl/private/k.pem"
