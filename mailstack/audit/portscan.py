"""TCP connect scans."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from mailstack.remote import is_open


def open_ports(address: str, ports: Iterable[int], *, timeout: float = 0.5, workers: int = 256) -> list[int]:
    """The ports of ``ports`` that accept a TCP connection at ``address``."""
    candidates = sorted(set(ports))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = pool.map(lambda port: (port, is_open(address, port, timeout)), candidates)
        return [port for port, ok in found if ok]
