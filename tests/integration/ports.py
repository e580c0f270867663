"""Ports for the test stacks, away from the kernel's ephemeral range.

Docker hands out the e2e servers' published ports from the ephemeral range (32768–60999,
in order), and every client connection takes one from there too. A test site's ports are
chosen first and bound seconds later by compose; drawn from the ephemeral range they could
be taken in between when the integration and e2e layers run side by side.
"""

from __future__ import annotations

import random
import socket

RANGE = range(20000, 32000)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports below the ephemeral range that nobody listens on now."""
    chosen: list[int] = []
    for port in random.sample(RANGE, len(RANGE)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"no {count} free ports in {RANGE.start}-{RANGE.stop - 1} on 127.0.0.1")
