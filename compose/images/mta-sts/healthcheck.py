#!/usr/bin/python3
"""Healthy when the daemon answers a socketmap query (netstrings, as Postfix asks).

The name asked is under .invalid (RFC 6761): no policy can exist, so the answer is NOTFOUND
without waiting for the network.
"""

import socket
import sys

query = b"postfix healthcheck.invalid"
try:
    with socket.create_connection(("127.0.0.1", 8461), timeout=4) as conn:
        conn.sendall(b"%d:%s," % (len(query), query))
        reply = conn.recv(512)
except OSError as exc:
    sys.exit(f"mta-sts-daemon does not answer on 127.0.0.1:8461: {exc}")
if b"NOTFOUND" not in reply and b"OK" not in reply:
    sys.exit(f"mta-sts-daemon answered {reply!r}")
