"""Issue #5: brute-force bans (abuse.auth_ban), on the real client address, under Docker.

The clients are network namespaces with addresses of their own (netns.py): namespace A dials
the stack on the host side of its veth pair, which the session stack also listens on, so
Postfix and Dovecot see A's address (10.252.X.2), not docker-proxy's. Namespace B dials the
same address from another source. The fixture site bans after 4 failed logins for 20 s.
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

import pytest

from mailstack.images import image_tag
from mailstack.render.context import fence_table
from tests.integration.netns import ClientNetns, ClientNets
from tests.integration.stack import (
    ALICE,
    CLIENT_HELO,
    EXTERNAL_RCPT,
    EXTERNAL_SENDER,
    Stack,
    WaitTimeoutError,
    make_message,
    token,
    wait_until,
)

pytestmark = pytest.mark.integration

BANNED_PORTS = ("smtp", "submission", "submissions", "imaps", "pop3s", "managesieve")
IMPLICIT_TLS = ("submissions", "imaps", "pop3s")


def dial(stack: Stack, netns: ClientNetns, protocol: str) -> dict[str, Any]:
    """A TCP connection from the namespace to the stack's port (and the greeting, where the
    server speaks first in plain text)."""
    return netns.client(
        "connect", host=netns_target(stack), port=stack.ports[protocol], read=protocol not in IMPLICIT_TLS
    )


def netns_target(stack: Stack) -> str:
    """The stack's address the namespaces dial (its second bind address)."""
    assert len(stack.site.network.bind) == 2, f"the session stack should bind two addresses: {stack.site}"
    return stack.site.network.bind[1]


def login(stack: Stack, netns: ClientNetns, password: str | None = None) -> dict[str, Any]:
    return netns.client(
        "login",
        host=netns_target(stack),
        port=stack.ports["submission"],
        cafile=str(stack.ca_path),
        user=ALICE,
        password=password if password is not None else stack.password(ALICE),
    )


def doveadm_auth(stack: Stack, address: str) -> str:
    """Alice's right password through Dovecot's auth service, as if from ``address`` (its
    policy check included): Dovecot's "passdb: … auth succeeded" or "… auth failed" line.
    As `dovecot`: the auth-client socket is its own (0600), and root has no DAC_OVERRIDE."""
    run = stack.compose(
        "exec", "-T", "--user", "dovecot", "dovecot",
        "doveadm", "auth", "test", "-x", f"rip={address}", ALICE, stack.password(ALICE),
    )  # fmt: skip
    lines = (run.stdout + run.stderr).strip().splitlines()
    return next((line for line in lines if line.startswith("passdb: ")), " | ".join(lines))


def nft_tables() -> str:
    """The host's nftables tables, listed by a throwaway container of the guard image."""
    run = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "host",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_ADMIN",
            "--user",
            "0:0",
            "--read-only",
            "--entrypoint",
            "nft",
            image_tag("guard"),
            "list",
            "tables",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def nets(stack: Stack, client_nets: ClientNets) -> ClientNets:
    assert stack.up_error is None, f"mailstack up failed: {stack.up_error}"
    return client_nets


def test_the_stack_sees_the_namespace_address_and_refuses_to_relay_for_it(
    stack: Stack, nets: ClientNets
) -> None:
    reply = nets.a.client(
        "relay",
        host=netns_target(stack),
        port=stack.ports["smtp"],
        helo=CLIENT_HELO,
        mail_from=EXTERNAL_SENDER,
        rcpt=EXTERNAL_RCPT,
    )
    assert reply["stage"] == "RCPT", reply
    assert 500 <= reply["code"] < 600, f"RCPT to a foreign domain without AUTH was not refused: {reply}"
    assert "Relay access denied" in reply["reply"], reply
    logged = stack.wait_for_log(
        "postfix", rf"reject: RCPT from \S+\[{re.escape(nets.a.client_ip)}\].*Relay access denied"
    )
    stack.notes.append(f"relay from {nets.a.client_ip}: {reply['code']} ({logged.split(': ', 1)[-1][:90]})")


def test_failed_logins_ban_the_address_on_every_port_until_the_ban_ends(
    stack: Stack, nets: ClientNets
) -> None:
    ban = stack.site.abuse.auth_ban
    a, b = nets.a, nets.b
    ports = {p: [stack.ports[p], p not in IMPLICIT_TLS] for p in ("submission", "imaps")}
    before = a.client("connect_each", host=netns_target(stack), ports=ports)
    assert {p: r["result"] for p, r in before.items()} == {"submission": "ok", "imaps": "ok"}, before

    # Wrong passwords on 587, one session, until the connection is cut (the fence resets it)
    # or a few more than `failures` were answered (the guard counts distinct guesses, of which
    # it sees 12 bits of a hash: two guesses may look alike).
    guesses = [f"wrong-{i}-{token('pw')}" for i in range(ban.failures + 3)]
    started = time.monotonic()
    attempt = a.client(
        "auth_fail",
        host=netns_target(stack),
        port=stack.ports["submission"],
        cafile=str(stack.ca_path),
        user=ALICE,
        passwords=guesses,
        timeout=120,
    )
    # The client's clock started when its process did: move its times onto ours.
    origin = time.monotonic() - attempt["end"] - started
    codes = [code for code, _, _ in attempt["replies"]]
    assert codes[: ban.failures - 1] == [535] * (ban.failures - 1), f"before the ban: {attempt}"
    logged = stack.wait_for_log(
        "guard", rf"banned {re.escape(a.client_ip)} for {ban.ban}s after {ban.failures} failed logins"
    )
    # The earliest moment of the ban: the reply to the failures-th guess (seconds after `started`).
    banned_at = origin + attempt["replies"][ban.failures - 1][2]

    # From A: every published port is closed, within a second or two of the ban.
    def a_refused() -> bool:
        return bool(dial(stack, a, "submission")["result"] in ("refused", "reset", "timeout"))

    wait_until(f"{a.client_ip}'s connections to submission to fail", a_refused, timeout=5, interval=0.2)
    latency = time.monotonic() - started - banned_at
    ports = {p: [stack.ports[p], p not in IMPLICIT_TLS] for p in BANNED_PORTS}
    during: dict[str, dict[str, Any]] = a.client("connect_each", host=netns_target(stack), ports=ports)
    for protocol, result in during.items():
        assert result["result"] in ("refused", "reset", "timeout"), f"{protocol} while banned: {result}"
        assert result["seconds"] < 4, result
    # Layer 1, without the fence: Dovecot's auth refuses A even with the right password.
    refused = doveadm_auth(stack, a.client_ip)
    assert refused == f"passdb: {ALICE} auth failed", f"the right password from {a.client_ip}: {refused}"

    # Others are unaffected: loopback clients, B's address, and B through Dovecot's policy.
    subject = token("ban others unaffected")
    stack.submit(ALICE, make_message(ALICE, ALICE, subject))
    with stack.imap(ALICE) as imap:
        assert imap.state == "AUTH"
    b_login = login(stack, b)
    assert b_login["code"] == 235, f"{b.client_ip} during {a.client_ip}'s ban: {b_login}"
    allowed = doveadm_auth(stack, b.client_ip)
    assert allowed == f"passdb: {ALICE} auth succeeded", f"the right password from {b.client_ip}: {allowed}"
    banned_for = time.monotonic() - started - banned_at
    assert banned_for < ban.ban, f"the checks during the ban took {banned_for:.0f}s, longer than the ban"

    # The ban ends on time: the port opens again and the right password works.
    def a_served() -> bool:
        return bool(dial(stack, a, "submission")["result"] == "ok")

    try:
        wait_until(f"{a.client_ip}'s ban of {ban.ban}s to end", a_served, timeout=ban.ban + 10, interval=0.5)
    except WaitTimeoutError as exc:
        raise WaitTimeoutError(f"{exc}; guard log: {stack.logs('guard', 5)}") from None
    lifted = time.monotonic() - started - banned_at
    # Dovecot reports a failure before its 2 s auth_failure_delay has passed and the 535 is
    # sent, so the ban starts up to 2 s before `banned_at`.
    assert lifted >= ban.ban - 3, f"the ban ended after {lifted:.1f}s, before its {ban.ban}s"
    again = login(stack, a)
    assert again["code"] == 235, f"{a.client_ip} after its ban: {again}"
    stack.notes.append(
        f"ban: {logged.split('guard: ', 1)[-1]}; connections refused {latency:.1f}s after the "
        f"{ban.failures}th 535 (session: {attempt['error'] or 'not cut'}), lifted after {lifted:.1f}s"
    )


def test_the_fence_removes_its_table_when_stopped_and_restores_it(stack: Stack, nets: ClientNets) -> None:
    table = f"table inet {fence_table(stack.site)}"
    assert table in nft_tables()
    stop = stack.compose("stop", "fence")
    assert stop.returncode == 0, stop.stderr
    try:
        assert table not in nft_tables(), "the fence left its table behind"
        assert f"{table} removed" in stack.logs("fence", 5)
    finally:
        start = stack.compose("start", "fence")
        assert start.returncode == 0, start.stderr
    wait_until(
        "the fence to be healthy again", lambda: stack.service_states().get("fence") == "healthy", timeout=30
    )
    assert table in nft_tables()
