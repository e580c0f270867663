"""Clients with addresses of their own: network namespaces joined to the host by veth pairs.

Through 127.0.0.1 every client reaches the stack via docker-proxy, from the front network's
gateway. A namespace's client (10.252.X.2) instead connects to the host side of its veth
pair (10.252.X.1, one of the stack's bind addresses); Docker DNATs that connection and the
daemons see the real source address, as they would see a remote client's. Everything here
stays on this machine; the namespaces and links are removed at the end of the session.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def ip(*args: str) -> None:
    run = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if run.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {run.stderr.strip() or run.stdout.strip()}")


def used_subnets() -> set[int]:
    """Third octets of the 10.252.0.0/16 addresses this host already has."""
    run = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True, timeout=30)
    return {int(word.split(".")[2]) for word in run.stdout.split() if word.startswith("10.252.")}


@dataclass
class ClientNetns:
    """One namespace `name` with the client address `client_ip`; the host side has `host_ip`."""

    name: str
    host_link: str
    host_ip: str
    client_ip: str

    @classmethod
    def create(cls, octet: int) -> ClientNetns:
        tag = secrets.token_hex(3)
        netns = cls(f"msban-{tag}", f"msb{tag}h", f"10.252.{octet}.1", f"10.252.{octet}.2")
        ip("netns", "add", netns.name)
        try:
            ip("link", "add", netns.host_link, "type", "veth", "peer", "name", "eth0", "netns", netns.name)
            ip("addr", "add", f"{netns.host_ip}/30", "dev", netns.host_link)
            ip("link", "set", netns.host_link, "up")
            ip("-n", netns.name, "addr", "add", f"{netns.client_ip}/30", "dev", "eth0")
            ip("-n", netns.name, "link", "set", "lo", "up")
            ip("-n", netns.name, "link", "set", "eth0", "up")
            # Reach the host's other addresses (another namespace's host_ip) through this link.
            ip("-n", netns.name, "route", "add", "default", "via", netns.host_ip)
        except Exception:
            netns.remove()
            raise
        return netns

    def remove(self) -> None:
        """Delete the namespace (its end of the pair, and with it the host's end)."""
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False, timeout=30)
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, check=False, timeout=30)

    def client(self, op: str, timeout: float = 60, **args: Any) -> dict[str, Any]:
        """Run one operation of tests/integration/nsclient.py inside the namespace."""
        spec = json.dumps({"op": op, **args})
        command = ["ip", "netns", "exec", self.name, sys.executable, "-m", "tests.integration.nsclient", spec]
        run = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout, cwd=ROOT)
        if run.returncode != 0:
            raise AssertionError(f"nsclient {op} in {self.name} failed ({run.returncode}):\n{run.stderr}")
        result: dict[str, Any] = json.loads(run.stdout)
        return result


@dataclass
class ClientNets:
    """Two namespaces: `a` (the stack binds its host address) and `b`, which reaches it too."""

    a: ClientNetns
    b: ClientNetns

    @classmethod
    def create(cls) -> ClientNets:
        free = sorted(set(range(1, 255)) - used_subnets())
        first, second = secrets.SystemRandom().sample(free, 2)
        a = ClientNetns.create(first)
        try:
            b = ClientNetns.create(second)
        except Exception:
            a.remove()
            raise
        return cls(a, b)

    def remove(self) -> None:
        self.a.remove()
        self.b.remove()
