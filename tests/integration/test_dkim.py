"""Issue #3, 5: submitted mail carries an RSA and an Ed25519 DKIM signature that really verify."""

from __future__ import annotations

import re
from collections.abc import Callable

import dkim
import pytest

from tests.integration.stack import ALICE, BOB, DAVE, EXTERNAL_SENDER, Stack, make_message, token

pytestmark = pytest.mark.integration

DnsFunc = Callable[..., bytes | None]


def dnsfunc_for(stack: Stack, asked: list[str]) -> DnsFunc:
    """Answer DKIM key queries from the rendered dns/records.json, never from the network."""
    records = stack.dkim_records()

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        key = name.decode().rstrip(".").lower()
        asked.append(key)
        value = records.get(key)
        return value.encode() if value is not None else None

    return lookup


def header_values(raw: bytes, name: str) -> list[str]:
    """Unfolded values of every ``name`` header in the header block, in order."""
    head = (
        raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    )
    unfolded = re.sub(r"\n[ \t]+", " ", head)
    prefix = name.lower() + ":"
    return [line[len(prefix) :].strip() for line in unfolded.split("\n") if line.lower().startswith(prefix)]


def tags(value: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (t.partition("=") for t in value.split(";")) if k.strip()}


@pytest.mark.parametrize(("sender", "recipient"), [(ALICE, BOB), (DAVE, ALICE)])
def test_submitted_mail_is_signed_with_rsa_and_ed25519_and_both_verify(
    stack: Stack, sender: str, recipient: str
) -> None:
    subject = token("dkim")
    stack.submit(sender, make_message(sender, recipient, subject, domain=sender.split("@")[1]))
    raw = stack.wait_for_message(recipient, subject)
    signatures = [tags(v) for v in header_values(raw, "DKIM-Signature")]
    domain = sender.split("@")[1]
    assert {s.get("a") for s in signatures} == {"rsa-sha256", "ed25519-sha256"}, (
        f"DKIM-Signature algorithms {[s.get('a') for s in signatures]} (want rsa-sha256 and ed25519-sha256)"
    )
    assert {s.get("d") for s in signatures} == {domain}
    asked: list[str] = []
    lookup = dnsfunc_for(stack, asked)
    verifier = dkim.DKIM(raw)
    results = {signatures[i]["a"]: verifier.verify(idx=i, dnsfunc=lookup) for i in range(len(signatures))}
    assert results == {"rsa-sha256": True, "ed25519-sha256": True}, (
        f"dkimpy verification {results}; keys asked for {asked}; records {sorted(stack.dkim_records())}"
    )


def test_arc_seal_on_inbound_mail(stack: Stack) -> None:
    subject = token("arc inbound")
    stack.deliver(make_message(EXTERNAL_SENDER, BOB, subject, domain="sender-itest.test"))
    raw = stack.wait_for_message(BOB, subject)
    seals = header_values(raw, "ARC-Seal")
    stack.notes.append(
        f"inbound path (25): {len(seals)} ARC-Seal header(s): {[tags(s).get('d') for s in seals]}"
    )
    assert seals, "no ARC-Seal on mail received on 25 for a local mailbox"
    cv, results, reason = dkim.arc_verify(raw, dnsfunc=dnsfunc_for(stack, []))
    assert cv == dkim.CV_Pass, f"ARC chain does not verify: {cv!r} {reason} {results}"
