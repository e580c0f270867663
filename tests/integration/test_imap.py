"""Issue #3, 6: IMAP over implicit TLS, STARTTLS required on 143, special-use folders."""

from __future__ import annotations

import imaplib
import re

import pytest

from tests.integration.stack import (
    ALICE,
    BOB,
    EXTERNAL_SENDER,
    Stack,
    close_imap,
    imap_auth,
    make_message,
    token,
)

pytestmark = pytest.mark.integration

SPECIAL_USE = ("\\Drafts", "\\Sent", "\\Junk", "\\Trash")


@pytest.mark.parametrize("user", [ALICE, BOB])
def test_imaps_login_shows_a_delivered_message(stack: Stack, user: str) -> None:
    subject = token("imaps")
    stack.deliver(make_message(EXTERNAL_SENDER, user, subject))
    stack.wait_for_message(user, subject)  # logs in on imaps and finds it
    with stack.imap(user) as imap:
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK", data
        assert int(data[0] or 0) >= 1, data


def test_imaps_refuses_a_wrong_password(stack: Stack) -> None:
    imap = imaplib.IMAP4_SSL(stack.host, stack.ports["imaps"], ssl_context=stack.tls_context(), timeout=30)
    try:
        with pytest.raises(imaplib.IMAP4.error, match=r"(?i)authentication failed|AUTHENTICATIONFAILED"):
            imap_auth(imap, ALICE, "wrong-" + stack.password(ALICE))
    finally:
        close_imap(imap)


def test_imap_143_refuses_login_before_starttls_and_accepts_it_after(stack: Stack) -> None:
    imap = stack.imap_plain()
    try:
        assert "STARTTLS" in imap.capabilities, imap.capabilities
        assert "LOGINDISABLED" in imap.capabilities, f"143 allows LOGIN in the clear: {imap.capabilities}"
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(ALICE, "a-password-sent-in-the-clear")
        with pytest.raises(imaplib.IMAP4.error):
            imap_auth(imap, ALICE, stack.password(ALICE))
        imap.starttls(ssl_context=stack.tls_context())
        assert "LOGINDISABLED" not in imap.capabilities, imap.capabilities
        imap_auth(imap, ALICE, stack.password(ALICE))
        typ, _ = imap.select("INBOX", readonly=True)
        assert typ == "OK"
    finally:
        close_imap(imap)


def test_special_use_folders_exist(stack: Stack) -> None:
    with stack.imap(BOB) as imap:
        typ, lines = imap.list()
    assert typ == "OK", lines
    listing = [line.decode() if isinstance(line, bytes) else str(line) for line in lines]
    found = {
        flag: [line for line in listing if re.search(r"\(([^)]*)\)", line) and flag in line.split(")")[0]]
        for flag in SPECIAL_USE
    }
    missing = [flag for flag, hits in found.items() if not hits]
    assert not missing, f"LIST shows no folder with {missing}; LIST answered: {listing}"
