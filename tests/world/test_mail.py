"""Two mailstack sites and a forger in the test world: mail between servers, through MX
lookups, DNSSEC, DANE, SPF, DKIM and DMARC, as on the internet."""

from __future__ import annotations

import re

import pytest

from tests.integration.stack import make_message, parse, token
from tests.world.sites import WorldStack
from tests.world.world import FORGER_DOMAIN, World

pytestmark = pytest.mark.world

MAIL_TIMEOUT = 90.0


def postfix_log_since(site: WorldStack, pattern: str, *, timeout: float = MAIL_TIMEOUT) -> str:
    return site.wait_for_log("postfix", pattern, timeout=timeout)


def test_a_user_writes_to_b_through_mx_dane_and_dmarc(sites: tuple[WorldStack, WorldStack]) -> None:
    a, b = sites
    subject = token("a-to-b")
    anna, berta = a.address("anna"), b.address("berta")
    a.submit(anna, make_message(anna, berta, subject, "Hello from site A, over DANE."))
    raw = b.wait_for_message(berta, subject, timeout=MAIL_TIMEOUT)
    message = parse(raw)
    results = " ".join(str(v) for v in message.get_all("Authentication-Results", []))
    assert re.search(r"\bspf=pass\b", results), results
    assert re.search(r"\bdmarc=pass\b", results), results
    # Both of A's signatures (RSA and Ed25519) verify.
    assert len(re.findall(r"\bdkim=pass\b", results)) == 2, results
    log = postfix_log_since(a, r"Verified TLS connection established to mail\.b\.test")
    assert "Verified TLS connection established to mail.b.test" in log


def forger_refused(world: World, host: str, mail_from: str, rcpt: str, message: bytes) -> str:
    """The refusal the forger got (its smtplib error), or a failure if the mail was accepted."""
    try:
        accepted = world.forger.send_mail(host, 25, mail_from, [rcpt], message)
    except AssertionError as refused:
        return str(refused)
    raise AssertionError(f"the forged message was accepted: {accepted}")


def test_forged_from_of_a_reject_domain_is_refused_naming_dmarc(
    world: World, sites: tuple[WorldStack, WorldStack]
) -> None:
    a, b = sites
    forged = make_message(a.address("anna"), b.address("berta"), token("forged"), "Please pay the invoice.")
    refusal = forger_refused(world, b.host, f"ceo@{FORGER_DOMAIN}", b.address("berta"), bytes(forged))
    assert re.search(r"\(5\d\d, b'[^']*DMARC", refusal), refusal


def test_forged_from_of_a_quarantine_domain_is_flagged_as_spam(
    world: World, sites: tuple[WorldStack, WorldStack]
) -> None:
    _a, b = sites
    world.dns.replace("_dmarc.quarantine.test.", "TXT", ['"v=DMARC1; p=quarantine"'])
    world.dns.replace("quarantine.test.", "TXT", ['"v=spf1 -all"'])
    subject = token("quarantined")
    forged = make_message("billing@quarantine.test", b.address("bernd"), subject, "Your invoice is attached.")
    world.forger.send_mail(b.host, 25, "billing@quarantine.test", [b.address("bernd")], bytes(forged))
    raw = b.wait_for_message(b.address("bernd"), subject, folder="Junk", timeout=MAIL_TIMEOUT)
    message = parse(raw)
    assert str(message["X-Spam-Status"]).startswith("Yes"), message["X-Spam-Status"]
    assert "dmarc=fail" in " ".join(str(v) for v in message.get_all("Authentication-Results", []))


def test_a_client_listed_in_a_dnsbl_is_turned_away_by_postscreen(
    world: World, sites: tuple[WorldStack, WorldStack]
) -> None:
    a, b = sites
    message = make_message(f"ceo@{FORGER_DOMAIN}", a.address("arne"), token("listed"), "Hello.")
    refusal = forger_refused(world, a.host, f"ceo@{FORGER_DOMAIN}", a.address("arne"), bytes(message))
    assert "dnsbl" in refusal.lower() or "550" in refusal, refusal
    # The same DNSBL does not list site B: its mail reaches A.
    subject = token("b-to-a")
    b.submit(b.address("bernd"), make_message(b.address("bernd"), a.address("arne"), subject, "Hi Arne."))
    a.wait_for_message(a.address("arne"), subject, timeout=MAIL_TIMEOUT)
