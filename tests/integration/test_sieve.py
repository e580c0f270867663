"""Issue #3, 10: a Sieve script uploaded over ManageSieve files matching mail into a folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.managesieve import ManageSieve
from tests.integration.stack import DAVE, EXTERNAL_SENDER, Stack, make_message, token

pytestmark = pytest.mark.integration

SCRIPT = """require ["fileinto", "mailbox"];
# mailstack integration suite
if header :contains "subject" "[itest-receipt]" {
  fileinto :create "Receipts";
  stop;
}
"""


@pytest.fixture
def sieve(stack: Stack) -> Iterator[ManageSieve]:
    client = ManageSieve(stack.host, stack.ports["managesieve"], timeout=30)
    try:
        yield client
    finally:
        client.logout()


def test_managesieve_refuses_auth_before_starttls(stack: Stack, sieve: ManageSieve) -> None:
    assert "STARTTLS" in sieve.capabilities, sieve.capabilities
    response = sieve.authenticate_plain(DAVE, stack.password(DAVE))
    assert response.status == "NO", f"AUTHENTICATE in the clear answered {response}"


def test_uploaded_script_files_matching_mail_into_a_folder(stack: Stack, sieve: ManageSieve) -> None:
    sieve.starttls(stack.tls_context())
    assert "PLAIN" in sieve.capabilities.get("SASL", "").upper().split(), sieve.capabilities
    assert "fileinto" in sieve.capabilities.get("SIEVE", "").split(), sieve.capabilities
    response = sieve.authenticate_plain(DAVE, stack.password(DAVE))
    assert response.status == "OK", f"AUTHENTICATE PLAIN after STARTTLS: {response}"
    sieve.putscript("itest", SCRIPT)
    sieve.setactive("itest")
    assert '"itest" ACTIVE' in sieve.listscripts()

    receipt = token("[itest-receipt] your order")
    other = token("not a receipt")
    stack.deliver(make_message(EXTERNAL_SENDER, DAVE, receipt))
    stack.deliver(make_message(EXTERNAL_SENDER, DAVE, other))
    stack.wait_for_message(DAVE, receipt, folder="Receipts")
    stack.wait_for_message(DAVE, other, folder="INBOX")
    assert receipt not in stack.subjects(DAVE, "INBOX"), "the receipt was filed and also kept in INBOX"
