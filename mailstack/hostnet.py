"""What the local host and its Docker engine offer for IPv6, before `up` relies on it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

IF_INET6 = Path("/proc/net/if_inet6")


def host_has_ipv6() -> bool:
    """The kernel's IPv6 is on (ipv6.disable=1 removes this file)."""
    return IF_INET6.exists()


def engine_nats_ipv6() -> bool | None:
    """Whether Docker keeps IPv6 NAT rules (ip6tables: its DOCKER chain in the nat table); None
    when this cannot be told (no ip6tables here, or no permission to read the rules)."""
    ip6tables = shutil.which("ip6tables")
    if ip6tables is None:
        return None
    try:
        done = subprocess.run(
            [ip6tables, "-t", "nat", "-S", "DOCKER"], capture_output=True, text=True, check=False, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode == 0:
        return True
    return False if "No chain" in done.stderr or "does not exist" in done.stderr else None
