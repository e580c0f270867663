"""Two mailstack sites and a forger in the test world: mail between servers, through MX
lookups, DNSSEC, DANE, SPF, DKIM and DMARC, as on the internet."""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.stack import make_message, parse, token, wait_until
from tests.world.sites import WorldStack, authentication_results
from tests.world.world import FORGER_DOMAIN, World

pytestmark = pytest.mark.world

MAIL_TIMEOUT = 90.0
WRONG_TTL = 5


def postfix_log_since(site: WorldStack, pattern: str, *, timeout: float = MAIL_TIMEOUT) -> str:
    return site.wait_for_log("postfix", pattern, timeout=timeout)


def test_a_user_writes_to_b_through_mx_dane_and_dmarc(sites: tuple[WorldStack, WorldStack]) -> None:
    a, b = sites
    subject = token("a-to-b")
    anna, berta = a.address("anna"), b.address("berta")
    a.submit(anna, make_message(anna, berta, subject, "Hello from site A, over DANE."))
    raw = b.wait_for_message(berta, subject, timeout=MAIL_TIMEOUT)
    message = parse(raw)
    results = authentication_results(message)
    assert re.search(r"\bspf=pass\b", results), results
    assert re.search(r"\bdmarc=pass\b", results), results
    # Both of A's signatures (RSA and Ed25519) verify.
    assert len(re.findall(r"\bdkim=pass\b", results)) == 2, results
    log = postfix_log_since(a, r"Verified TLS connection established to mail\.b\.test")
    assert "Verified TLS connection established to mail.b.test" in log


def forger_refused(
    world: World, host: str, mail_from: str, rcpt: str, message: bytes, *, timeout: int = 30
) -> str:
    """The refusal the forger got (its smtplib error), or a failure if the mail was accepted."""
    started = time.monotonic()
    try:
        accepted = world.forger.send_mail(host, 25, mail_from, [rcpt], message, timeout=timeout)
    except AssertionError as refused:
        return f"{refused} (after {time.monotonic() - started:.1f} s)"
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
    assert "dmarc=fail" in authentication_results(message)


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


def flush_resolver(site: WorldStack, zone: str) -> None:
    """Forget what the site's resolver cached under ``zone`` (records here live 60 s)."""
    done = site.exec("resolver", "unbound-control", "-c", "/etc/unbound/unbound.conf", "flush_zone", zone)
    assert done.returncode == 0, done.stderr or done.stdout


def flush_queue(site: WorldStack) -> None:
    done = site.exec("postfix", "postqueue", "-f")
    assert done.returncode == 0, done.stderr or done.stdout


def queued_for(site: WorldStack, recipient: str) -> list[str]:
    """The delay reasons of the queued messages to ``recipient``."""
    return [
        str(r.get("delay_reason", ""))
        for m in site.queue()
        for r in m.get("recipients", [])  # type: ignore[attr-defined]
        if r.get("address") == recipient
    ]


def delivered_after_flush(sender: WorldStack, recipient: str, *, timeout: float = MAIL_TIMEOUT) -> None:
    """Queue runs every few seconds (as Postfix's own retries would, only sooner) until the
    sender's queue holds nothing for ``recipient``; else its queue and log lines."""

    def gone() -> bool:
        if not queued_for(sender, recipient):
            return True
        flush_queue(sender)
        return False

    try:
        wait_until(f"{recipient} to leave the sender's queue", gone, timeout=timeout, interval=5)
    except AssertionError as exc:
        domain = recipient.rpartition("@")[2]
        tail = [line for line in sender.logs("postfix", 400).splitlines() if domain in line]
        raise AssertionError(
            f"{exc}\nqueued: {queued_for(sender, recipient)}\nsender's log:\n" + "\n".join(tail[-25:])
        ) from None


def tlsa_values(site: WorldStack) -> list[str]:
    name = f"_25._tcp.{site.site.hostname}."
    return [
        line.split(" TLSA ", 1)[1] for line in site.dns_zone().splitlines() if line.startswith(f"{name} ")
    ]


def test_a_wrong_tlsa_record_defers_the_mail_until_it_is_repaired(
    world: World, sites: tuple[WorldStack, WorldStack]
) -> None:
    a, b = sites
    name = f"_25._tcp.{b.site.hostname}."
    good = tlsa_values(b)
    assert good, "site B publishes no TLSA record for its port 25"
    anna, bernd = a.address("anna"), b.address("bernd")
    subject = token("tlsa")
    # A short TTL for the wrong record: Postfix's smtp processes cache TLSA records for their
    # TTL, so the repaired record counts from the first queue run after that.
    world.dns.replace(name, "TLSA", ["3 1 1 " + "00" * 32], ttl=WRONG_TTL)
    try:
        flush_resolver(a, "b.test")
        # A's smtp processes may hold B's good TLSA record from earlier mail for up to its TTL
        # (60 s): as if this mail came later, they start afresh.
        assert a.exec("postfix", "postfix", "reload").returncode == 0
        a.submit(anna, make_message(anna, bernd, subject, "Sent while B's TLSA record is wrong."))
        line = postfix_log_since(a, rf"to=<{re.escape(bernd)}>.*status=deferred")
        assert "not verified" in line or "TLSA" in line, line
        reasons = queued_for(a, bernd)
        assert reasons, f"nothing queued for {bernd} on A after the deferral: {line}"
        assert subject not in b.subjects(bernd), "delivered although the certificate did not match TLSA"
    finally:
        world.dns.replace(name, "TLSA", good)
    flush_resolver(a, "b.test")
    delivered_after_flush(a, bernd)
    b.wait_for_message(bernd, subject, timeout=MAIL_TIMEOUT)


def test_an_unknown_user_at_b_bounces_to_the_sender_at_a(sites: tuple[WorldStack, WorldStack]) -> None:
    a, b = sites
    arne = a.address("arne")
    subject = token("unknown-user")
    a.submit(arne, make_message(arne, b.address("nobody"), subject, "To someone B does not know."))
    raw = a.wait_for_message(arne, "Undelivered Mail Returned to Sender", timeout=MAIL_TIMEOUT)
    assert subject.encode() in raw, raw[:2000]
    assert b"550" in raw, raw[:2000]
    assert b"nobody@b.test" in raw, raw[:2000]


def test_b_stopped_a_keeps_the_mail_and_delivers_it_when_b_is_back(
    world: World, sites: tuple[WorldStack, WorldStack]
) -> None:
    a, b = sites
    anna, berta = a.address("anna"), b.address("berta")
    subject = token("b-stopped")
    assert b.compose("stop", "postfix").returncode == 0
    try:
        a.submit(anna, make_message(anna, berta, subject, "Sent while B is down."))
        postfix_log_since(a, rf"to=<{re.escape(berta)}>.*status=deferred")
        assert queued_for(a, berta), f"nothing queued for {berta} on A while B is down"
    finally:
        assert b.compose("start", "postfix").returncode == 0
        world.sync()
    b.wait_for_log("postfix", r"postfix/master.*daemon started", timeout=60)
    delivered_after_flush(a, berta)
    b.wait_for_message(berta, subject, timeout=MAIL_TIMEOUT)


def test_without_its_resolver_b_answers_4xx_and_its_outbound_mail_waits(
    world: World, sites: tuple[WorldStack, WorldStack]
) -> None:
    a, b = sites
    bernd, arne = b.address("bernd"), a.address("arne")
    inbound = make_message(f"news@{FORGER_DOMAIN}", bernd, token("no-resolver-in"), "Our newsletter.")
    outbound = token("no-resolver-out")
    assert b.compose("stop", "resolver").returncode == 0
    try:
        # A real MTA waits up to 10 minutes for the reply to DATA (RFC 5321 §4.5.3.2.6).
        refusal = forger_refused(world, b.host, f"news@{FORGER_DOMAIN}", bernd, bytes(inbound), timeout=600)
        assert re.search(r"\(4\d\d, ", refusal), refusal
        b.submit(bernd, make_message(bernd, arne, outbound, "Sent while B cannot resolve names."))
        postfix_log_since(b, rf"to=<{re.escape(arne)}>.*status=deferred")
        assert queued_for(b, arne), f"nothing queued for {arne} on B without its resolver"
    finally:
        assert b.compose("start", "resolver").returncode == 0
    b.wait_for_log("resolver", r"start of service", timeout=30)
    delivered_after_flush(b, arne)
    a.wait_for_message(arne, outbound, timeout=MAIL_TIMEOUT)
