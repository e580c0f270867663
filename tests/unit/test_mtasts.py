"""The strict MTA-STS policy parser (RFC 8461 §3.2) and MX pattern matching (§4.1)."""

from __future__ import annotations

import pytest

from mailstack.mtasts import PolicyError, mx_matches, parse_policy

GOOD = (
    "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmx: *.backup.example.org\r\n"
    "max_age: 604800\r\n"
)


def test_a_policy_in_crlf_form_parses() -> None:
    policy = parse_policy(GOOD)
    assert (policy.version, policy.mode, policy.max_age) == ("STSv1", "enforce", 604800)
    assert policy.mx == ("mail.example.org", "*.backup.example.org")
    assert policy.covers("MAIL.example.org.")
    assert policy.covers("mx2.backup.example.org")
    assert not policy.covers("a.b.backup.example.org")
    assert not policy.covers("example.org")


@pytest.mark.parametrize(
    "text",
    [
        "version: STSv1\nmode: testing\nmx: mail.example.org\nmax_age: 86400",  # LF, no final delimiter
        "version:STSv1\nmode:none\nmax_age:0\n",  # no WSP after ':'; mode none needs no mx
        "version: STSv1\nmode: enforce\nmx: m.example.org\nmax_age: 31557600\nfoo_bar.x: any value: here\n",
        "version: STSv1 \t\nmode: enforce\t\nmx: m.example.org  \nmax_age: 1\n",  # trailing WSP
    ],
)
def test_valid_variants_parse(text: str) -> None:
    parse_policy(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("mode: enforce\nversion: STSv1\nmx: m.example.org\nmax_age: 1\n", "first field"),
        ("version: STSv2\nmode: enforce\nmx: m.example.org\nmax_age: 1\n", "STSv1"),
        ("version: STSv1\nmode: Enforce\nmx: m.example.org\nmax_age: 1\n", "mode"),
        ("version: STSv1\nmode: enforce\nmax_age: 1\n", "at least one mx"),
        ("version: STSv1\nmode: enforce\nmx: m.example.org\n", "missing"),
        ("version: STSv1\nmode: enforce\nmx: m.example.org\nmax_age: 31557601\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmx: m.example.org\nmax_age: -1\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmx: m.example.org\nmax_age: 01234567890\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmode: none\nmx: m.example.org\nmax_age: 1\n", "more than once"),
        ("version: STSv1\nmode: enforce\nmx: *.*.example.org\nmax_age: 1\n", "mx"),
        ("version: STSv1\nmode: enforce\nmx: m_x.example.org\nmax_age: 1\n", "mx"),
        ("version: STSv1\nmode: enforce\nmx: -m.example.org\nmax_age: 1\n", "mx"),
        ("version: STSv1\nmode: enforce\nmx: m.example.org\nmax_age: 1\n\n", "not a 'name: value'"),
        ("version: STSv1\rmode: enforce\nmx: m.example.org\nmax_age: 1\n", "CR"),
        ("version STSv1\nmode: enforce\nmx: m.example.org\nmax_age: 1\n", "not a 'name: value'"),
        ("version: STSv1\nmode: enforce\nmx: m.example.org\nmax_age: 1\n_x: y\n", "field name"),
        ("version: STSv1\nmode: enforce\nmx: m.example.org\nmax_age: 1\nx:\n", "value"),
        ("version: STSv1\nmode: enforce\nmx: m.example.org\nmax_age: 1\n" + "x: y\n" * 20000, "bytes"),
    ],
)
def test_invalid_policies_are_refused(text: str, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        parse_policy(text)


def test_non_utf8_is_refused() -> None:
    with pytest.raises(PolicyError, match="UTF-8"):
        parse_policy(b"version: STSv1\nmode: none\nmax_age: 1\nx: \xff\n")


@pytest.mark.parametrize(
    ("pattern", "host", "match"),
    [
        ("mail.example.org", "mail.example.org", True),
        ("mail.example.org", "Mail.Example.Org.", True),
        ("*.example.org", "mx.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.example.org", "a.mx.example.org", False),
        ("mail.example.org", "mail.example.org.evil", False),
    ],
)
def test_mx_patterns_match_one_leftmost_label_at_most(pattern: str, host: str, match: bool) -> None:
    assert mx_matches(pattern, host) is match
