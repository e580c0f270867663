"""Filtering between servers in the test world: SPF results on mail from the forger, and
users teaching B's spam filter by moving mail that came from A."""

from __future__ import annotations

import re
import time

import pytest

from mailstack.render.dovecot import JUNK_FOLDER
from tests.integration.stack import make_message, parse, token, wait_until
from tests.integration.test_junk import learned, move, prose
from tests.world.sites import WorldStack, authentication_results
from tests.world.world import World

pytestmark = pytest.mark.world

MAIL_TIMEOUT = 90.0


def found_in_inbox_or_junk(site: WorldStack, user: str, subject: str) -> bytes:
    """The message with ``subject`` from INBOX or Junk, whichever it was filed into."""
    deadline = time.monotonic() + MAIL_TIMEOUT
    while True:
        for folder in ("INBOX", JUNK_FOLDER):
            try:
                return site.wait_for_message(user, subject, folder=folder, timeout=1)
            except AssertionError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no {subject!r} in {user}'s INBOX or Junk after {MAIL_TIMEOUT:.0f}s")


@pytest.mark.parametrize(("policy", "result"), [("-all", "fail"), ("~all", "softfail")])
def test_spf_fail_and_softfail_are_judged_on_the_forgers_address(
    world: World, sites: tuple[WorldStack, WorldStack], policy: str, result: str
) -> None:
    """A domain whose SPF does not list the forger: Rspamd's verdict is the one SPF defines
    (fail for -all, softfail for ~all); no DMARC record, so no policy refuses it."""
    _a, b = sites
    domain = f"spf-{result}.test"
    world.dns.replace(f"{domain}.", "TXT", [f'"v=spf1 ip4:192.0.2.1 {policy}"'])
    subject = token(f"spf-{result}")
    sender = f"news@{domain}"
    message = make_message(sender, b.address("berta"), subject, prose(f"spf {result}"))
    world.forger.send_mail(b.host, 25, sender, [b.address("berta")], bytes(message))
    results = authentication_results(parse(found_in_inbox_or_junk(b, b.address("berta"), subject)))
    assert re.search(rf"\bspf={result}\b.*smtp\.mailfrom={re.escape(sender)}", results), results


def test_moving_mail_from_another_server_into_junk_and_out_teaches_b(
    sites: tuple[WorldStack, WorldStack],
) -> None:
    a, b = sites
    arne, bernd = a.address("arne"), b.address("bernd")
    subject = token("unwanted offer")
    a.submit(arne, make_message(arne, bernd, subject, prose("an offer nobody asked for")))
    b.wait_for_message(bernd, subject, timeout=MAIL_TIMEOUT)
    before = learned(b)

    move(b, subject, "INBOX", JUNK_FOLDER, user=bernd)
    wait_until(
        "B's Bayes to count one more spam", lambda: learned(b)["spam"] == before["spam"] + 1, timeout=30
    )
    move(b, subject, JUNK_FOLDER, "INBOX", user=bernd)
    wait_until("B's Bayes to count one more ham", lambda: learned(b)["ham"] == before["ham"] + 1, timeout=30)
