"""MTA-STS between two sites of the test world, and DANE before MTA-STS (RFC 8461 §2).

B serves its enforce policy from its own web service (mta-sts.b.test, a certificate of B's
local CA); A trusts that CA through tls.outbound_ca_bundle. The test breaks B's policy the
way a destination's admin would (its mx names a host that is not B) and publishes a new
policy id, as RFC 8461 §3.1 wants for every change.
"""

from __future__ import annotations

import re
import secrets

import pytest

from tests.integration.stack import make_message, token
from tests.world.sites import WorldStack
from tests.world.test_mail import (
    MAIL_TIMEOUT,
    delivered_after_flush,
    flush_resolver,
    postfix_log_since,
    queued_for,
    tlsa_values,
)
from tests.world.world import World

pytestmark = pytest.mark.world

POLICY = "config/web/htdocs/.well-known/mta-sts.txt"
MTA_STS_MAP = "socketmap:inet:mta-sts:8461:postfix"
DANE_MAP = "socketmap:inet:dane-policy:8462:dane"
# postfix-mta-sts-resolver asks DNS for a new policy id at most once per cache_grace (60 s).
CACHE_GRACE = 60.0


def ask(site: WorldStack, table: str, domain: str) -> str:
    """What Postfix's smtp_tls_policy_maps entry ``table`` answers for ``domain``."""
    done = site.exec("postfix", "postmap", "-q", domain, table)
    assert done.returncode in (0, 1), done.stderr or done.stdout  # 1: not found
    return done.stdout.strip()


def serve_policy(site: WorldStack, world: World, text: str) -> None:
    """Serve ``text`` as the site's policy (web reads htdocs through its config mount) and
    publish a new id, as the site's admin would."""
    path = site.out_dir / POLICY
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_text(text)
    fresh.chmod(0o644)
    fresh.replace(path)
    world.dns.replace(f"_mta-sts.{site.domain}.", "TXT", [f'"v=STSv1; id={secrets.token_hex(8)}"'])


def test_dane_wins_then_an_mx_mismatch_defers_until_the_policy_is_repaired(
    world: World, sites: tuple[WorldStack, WorldStack]
) -> None:
    a, b = sites
    anna, bernd = a.address("anna"), b.address("bernd")
    good = (b.out_dir / POLICY).read_text()
    assert "mode: enforce" in good
    assert f"mx: {b.site.hostname}" in good
    wrong = re.sub(r"(?m)^mx: .*$", "mx: mx.elsewhere.test", good)
    tlsa_name = f"_25._tcp.{b.site.hostname}."
    tlsa = tlsa_values(b)
    assert tlsa, "site B publishes no TLSA record for its port 25"

    serve_policy(b, world, wrong)
    try:
        flush_resolver(a, b.domain)
        # 1. TLSA and an MTA-STS policy that B's certificate does not match: DANE decides.
        answer = ask(a, MTA_STS_MAP, b.domain)
        assert answer.startswith("secure match=mx.elsewhere.test"), answer
        assert ask(a, DANE_MAP, b.domain) == "dane-only"
        subject = token("dane-first")
        a.submit(anna, make_message(anna, bernd, subject, "DANE wins over a wrong MTA-STS policy."))
        b.wait_for_message(bernd, subject, timeout=MAIL_TIMEOUT)
        assert "b.test: OK dane-only" in a.logs("dane-policy", 200)

        # 2. No TLSA: the MTA-STS policy applies, and B's MX does not match it: A defers.
        world.dns.replace(tlsa_name, "TLSA", [])
        flush_resolver(a, b.domain)
        assert ask(a, DANE_MAP, b.domain) == ""
        # A's smtp processes keep B's TLSA records up to their TTL: start them afresh.
        assert a.exec("postfix", "postfix", "reload").returncode == 0
        subject = token("sts-mismatch")
        a.submit(anna, make_message(anna, bernd, subject, "Sent while B's MTA-STS policy is wrong."))
        line = postfix_log_since(a, rf"to=<{re.escape(bernd)}>.*status=deferred.*")
        reasons = queued_for(a, bernd)
        assert reasons, f"nothing queued for {bernd} on A after the deferral: {line}"
        assert subject not in b.subjects(bernd), "delivered although B's MX does not match its policy"
        assert not [r for r in reasons if "bounce" in r.lower()], reasons

        # 3. The policy repaired (a new id): delivered, verified against B's CA, on a later run.
        serve_policy(b, world, good)
        flush_resolver(a, b.domain)
        delivered_after_flush(a, bernd, timeout=MAIL_TIMEOUT + CACHE_GRACE)
        b.wait_for_message(bernd, subject, timeout=MAIL_TIMEOUT)
        assert ask(a, MTA_STS_MAP, b.domain).startswith(f"secure match={b.site.hostname}")
        verified = postfix_log_since(
            a, rf"Verified TLS connection established to {re.escape(b.site.hostname)}"
        )
        print(f"deferred: {line}\nqueued reasons: {reasons}\nthen: {verified}")
    finally:
        serve_policy(b, world, good)
        world.dns.replace(tlsa_name, "TLSA", tlsa)
        flush_resolver(a, b.domain)
        a.exec("postfix", "postfix", "reload")
