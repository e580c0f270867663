"""What the local host and its Docker engine offer for IPv6, before `up` relies on it."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

IF_INET6 = Path("/proc/net/if_inet6")
ROUTES = Path("/proc/net/route")


def host_routes(table: str | None = None) -> dict[str, list[str]]:
    """The host's IPv4 routes other than the default, as "route via <interface>" → networks;
    Docker's own bridges are left out (their networks are Docker's to report). A VPN's route
    over the stack's internal subnet would swallow its traffic as surely as a clashing network.
    ``table``: /proc/net/route's text (tests)."""
    if table is None:
        try:
            table = ROUTES.read_text(encoding="ascii")
        except OSError:
            return {}
    found: dict[str, list[str]] = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[0] == "docker0" or fields[0].startswith(("br-", "veth")):
            continue
        destination, mask = (
            ipaddress.IPv4Address(int(f, 16).to_bytes(4, "little")) for f in (fields[1], fields[7])
        )
        network = ipaddress.IPv4Network(f"{destination}/{mask}", strict=False)
        if network.prefixlen:
            found.setdefault(f"route via {fields[0]}", []).append(str(network))
    return found


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
