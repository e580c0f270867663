"""Clients over IPv6 are judged on their own address: SPF, postscreen's DNSBL and bans.

Both sites also listen on a world IPv6 address of the host (network.bind); the engine DNATs
it (ip6tables) into their front networks, which have an IPv6 subnet of their own."""

from __future__ import annotations

import re
import smtplib
import time

import pytest

from tests.integration.stack import make_message, parse, sasl_plain, token, wait_until
from tests.world.sites import WorldStack, authentication_results
from tests.world.test_filtering import found_in_inbox_or_junk
from tests.world.test_mail import forger_refused
from tests.world.world import FORGER_DOMAIN, World

pytestmark = pytest.mark.world

BAN_TIMEOUT = 30.0


@pytest.mark.parametrize(("mechanism", "result"), [("ip6", "pass"), ("ip4", "fail")])
def test_spf_judges_the_forgers_own_ipv6_address(
    world: World, sites: tuple[WorldStack, WorldStack], mechanism: str, result: str
) -> None:
    """A domain whose SPF names only the forger's IPv6 address passes over IPv6; one that names
    only its IPv4 address fails. Seen as any relay or gateway, both would fail."""
    _a, b = sites
    forger = world.forger
    allowed = forger.address6 if mechanism == "ip6" else forger.address
    domain = f"spf-{mechanism}-only.test"
    world.dns.replace(f"{domain}.", "TXT", [f'"v=spf1 {mechanism}:{allowed} -all"'])
    subject = token(f"v6-spf-{result}")
    sender = f"news@{domain}"
    message = make_message(sender, b.address("berta"), subject, "Sent over IPv6.")
    forger.send_mail(b.address6, 25, sender, [b.address("berta")], bytes(message))
    received = parse(found_in_inbox_or_junk(b, b.address("berta"), subject))
    results = authentication_results(received)
    assert re.search(rf"spf={result} \(.*\) smtp\.mailfrom={re.escape(sender)}", results), results
    # B's Postfix saw the forger's IPv6 address, not a gateway's.
    received_by_b = " ".join(str(v) for v in received.get_all("Received", []))
    assert f"[IPv6:{forger.address6}]" in received_by_b, received_by_b


def test_postscreen_turns_away_the_forger_listed_by_its_ipv6_address(
    world: World, sites: tuple[WorldStack, WorldStack]
) -> None:
    a, _b = sites
    sender = f"ceo@{FORGER_DOMAIN}"
    message = make_message(sender, a.address("arne"), token("listed-v6"), "Hello over IPv6.")
    refusal = forger_refused(world, a.address6, sender, a.address("arne"), bytes(message))
    assert "dnsbl" in refusal.lower() or "550" in refusal, refusal
    logged = a.logs("postfix")
    assert f"[{world.forger.address6}]" in logged, logged[-2000:]
    assert "dnsbl.test" in logged, logged[-2000:]


FAILED_LOGINS = """
import base64, smtplib, ssl, sys
host, port, user, *passwords = sys.argv[1:]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
for password in passwords:
    with smtplib.SMTP_SSL(host, int(port), context=context, timeout=15) as smtp:
        smtp.ehlo("mail.forger.test")
        plain = base64.b64encode(b"\\0" + user.encode() + b"\\0" + password.encode()).decode()
        print(smtp.docmd("AUTH", "PLAIN " + plain)[0])
"""


def test_failed_logins_over_ipv6_ban_that_address_and_no_other(
    world: World, sites: tuple[WorldStack, WorldStack]
) -> None:
    """B bans after 4 failed logins: the forger fails 4 times from its IPv6 address and its
    connections are then reset on every mail port, while another IPv6 client (the host, from
    an address of its own on the world) still logs in, and the forger's IPv4 address is served."""
    _a, b = sites
    forger = world.forger
    berta = b.address("berta")
    wrong = [f"wrong-{i}-{token('pw')}" for i in range(4)]
    codes = forger.python(FAILED_LOGINS, b.address6, str(b.ports["submissions"]), berta, *wrong).split()
    assert codes == ["535"] * 4, codes

    def forger6_refused() -> bool:
        try:
            forger.connect(b.address6, b.ports["smtp"], timeout=5)
        except AssertionError:
            return True
        return False

    started = time.monotonic()
    wait_until("the forger's IPv6 address to be refused at B's port 25", forger6_refused, timeout=BAN_TIMEOUT)
    banned_after = time.monotonic() - started
    assert forger.connect(b.host, b.ports["smtp"]).startswith("220"), (
        "the forger's IPv4 address was banned too"
    )

    other6 = str(world.net.add_host_address6("client6.test"))
    with smtplib.SMTP_SSL(
        b.address6, b.ports["submissions"], context=b.tls_context(), timeout=15, source_address=(other6, 0)
    ) as smtp:
        smtp.ehlo("client6.test")
        code, reply = smtp.docmd("AUTH", "PLAIN " + sasl_plain(berta, b.password(berta)))
    assert code == 235, f"{other6} could not log in at B while the forger was banned: {code} {reply!r}"
    # The guard banned the forger's IPv6 address itself (not a gateway's, not its /64).
    guard_log = b.logs("guard")
    assert f"banned {forger.address6} " in guard_log, guard_log[-2000:]
    print(f"forger {forger.address6} refused {banned_after:.1f} s after its 4th failed login")
