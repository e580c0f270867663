"""Issue #3, 1: port 25 is not an open relay, and the log names the real client address."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from mailstack.images import image_tag
from tests.integration.stack import CLIENT_HELO, EXTERNAL_RCPT, EXTERNAL_SENDER, Stack

pytestmark = pytest.mark.integration

# A raw SMTP session in bash (/dev/tcp), run in a throwaway container on the stack's front
# network: it reads the whole greeting before speaking (postscreen's pregreet test) and prints
# its own address, so the test can look for it in the postfix log.
RELAY_SESSION = r"""
set -u
echo "CLIENT_IP $(hostname -i)"
exec 3<>/dev/tcp/postfix/25 || { echo "CONNECT failed"; exit 2; }
reply() {
  while IFS= read -r -t 30 line <&3; do
    line=${line%$'\r'}; echo "S: $line"
    case "$line" in [0-9][0-9][0-9]" "* | [0-9][0-9][0-9]) return 0 ;; esac
  done
  echo "S: <no reply within 30s>"; return 1
}
send() { echo "C: $1"; printf '%s\r\n' "$1" >&3; }
reply
send "EHLO $HELO"; reply
send "MAIL FROM:<$FROM>"; reply
send "RCPT TO:<$RCPT>"; reply
send "QUIT"; reply
"""


def test_relay_from_a_container_on_the_front_network_is_refused_and_logged_with_its_ip(
    stack: Stack,
) -> None:
    started = time.monotonic()
    run = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            stack.front_network(),
            "--env",
            f"HELO={CLIENT_HELO}",
            "--env",
            f"FROM={EXTERNAL_SENDER}",
            "--env",
            f"RCPT={EXTERNAL_RCPT}",
            "--entrypoint",
            "bash",
            image_tag("postfix"),
            "-c",
            RELAY_SESSION,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    transcript = run.stdout + run.stderr
    ip = re.search(r"^CLIENT_IP (\S+)", run.stdout, re.M)
    assert ip, f"the probe container did not report its address:\n{transcript}"
    lines = run.stdout.splitlines()
    rcpt = next((i for i, line in enumerate(lines) if line.startswith("C: RCPT")), None)
    assert rcpt is not None, f"the session never reached RCPT:\n{transcript}"
    assert rcpt + 1 < len(lines), f"no reply to RCPT:\n{transcript}"
    greeting = [line for line in lines if line.startswith("S: 220")]
    stack.notes.append(
        f"relay probe from {ip.group(1)}: greeting {greeting}, "
        f"whole session {time.monotonic() - started:.1f}s"
    )
    assert lines[rcpt + 1].startswith("S: 554 5.7.1"), (
        f"RCPT to {EXTERNAL_RCPT} was not refused:\n{transcript}"
    )
    assert "Relay access denied" in lines[rcpt + 1], transcript
    logged = stack.wait_for_log(
        "postfix", rf"reject: RCPT from \S*\[{re.escape(ip.group(1))}\].*Relay access denied"
    )
    assert EXTERNAL_RCPT in logged


def test_relay_through_the_published_port_is_refused(stack: Stack) -> None:
    started = time.monotonic()
    smtp = stack.smtp("smtp")
    greeted = time.monotonic() - started
    try:
        smtp.ehlo()
        code, reply = smtp.mail(EXTERNAL_SENDER)
        assert code == 250, f"MAIL FROM refused: {code} {reply!r}"
        code, reply = smtp.rcpt(EXTERNAL_RCPT)
    finally:
        smtp.close()
    stack.notes.append(f"port 25 greeting via 127.0.0.1 took {greeted:.1f}s")
    assert (code, reply.split(b" ", 1)[0]) == (554, b"5.7.1"), f"RCPT answered {code} {reply!r}"
    assert b"Relay access denied" in reply
    logged = stack.wait_for_log(
        "postfix", rf"reject: RCPT from .*{re.escape(EXTERNAL_RCPT)}.*Relay access denied"
    )
    client = re.search(r"RCPT from \S*\[([0-9a-f.:]+)\]", logged)
    stack.notes.append(
        f"a client on 127.0.0.1 appears in the postfix log as {client.group(1) if client else '?'}"
    )
