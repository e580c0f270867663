"""TCP connect scans and local port helpers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor


def free_local_ports(count: int) -> list[int]:
    """Ports nobody listens on now on 127.0.0.1 (held together, so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def is_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_listening(ports: list[int], *, timeout: float, alive: Callable[[], bool]) -> bool:
    """True once every port on 127.0.0.1 accepts connections; False on timeout or death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if all(is_open("127.0.0.1", port, 0.5) for port in ports):
            return True
        time.sleep(0.2)
    return False


def open_ports(address: str, ports: Iterable[int], *, timeout: float = 0.5, workers: int = 256) -> list[int]:
    """The ports of ``ports`` that accept a TCP connection at ``address``."""
    candidates = sorted(set(ports))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = pool.map(lambda port: (port, is_open(address, port, timeout)), candidates)
        return [port for port, ok in found if ok]
