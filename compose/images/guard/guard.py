#!/usr/bin/env python3
"""mailstack-guard: ban client addresses after repeated failed logins (issue #5).

    mailstack-guard serve CONFIG          the policy server Dovecot's auth process asks
    mailstack-guard fence CONFIG          keep the host's nftables set in step with the bans
    mailstack-guard health CONFIG         healthcheck of `serve`

GUARD_DEBUG=1 in the environment logs every policy request.

`serve` answers Dovecot's auth policy requests (https://doc.dovecot.org/2.4.1/core/config/auth/policy.html):
before each login `?command=allow` (status -1 refuses it, 0 allows it), after it
`?command=report` with the outcome. It counts the failed logins of each address in a
sliding window (distinct password hashes, so a phone retrying one stale password counts
once) and bans the address; bans live in a JSON file on a volume (address → expiry, epoch
seconds), so they outlast a restart, and `fence` reads that file. Loopback, the exempt
networks of the configuration and the container's default gateway (Docker's proxy: every
loopback client of the host comes from there) are never banned.

`fence` runs in the host's network namespace with CAP_NET_ADMIN only. It loads the rendered
nftables table (a forward-hook chain that resets banned sources on the published ports) and
mirrors the bans file into the table's sets, with each element's remaining time as its
timeout, so the kernel lifts a ban on time even if the fence has stopped. It listens on
nothing, passes only addresses that parse as IP addresses to nft, and deletes its table
when it is stopped. Standard library only.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
ALWAYS_EXEMPT = ("127.0.0.0/8", "::1/128")
POLL_SECONDS = 0.5  # how often the fence looks at the bans file
SIOCGIFADDR = 0x8915
DEBUG = os.environ.get("GUARD_DEBUG") == "1"  # log every request (user names included)
ANY = "0.0.0.0"  # noqa: S104 - the listen address when the guard has one network only


@dataclass(frozen=True)
class Config:
    failures: int
    window: float
    ban: float
    exempt: tuple[IPNet, ...]
    port: int
    bans_file: Path
    table: str
    ruleset: Path

    @classmethod
    def load(cls, path: Path) -> Config:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return cls(
            failures=int(data["failures"]),
            window=float(data["window"]),
            ban=float(data["ban"]),
            exempt=tuple(ipaddress.ip_network(n) for n in (*ALWAYS_EXEMPT, *data["exempt"])),
            port=int(data["port"]),
            bans_file=Path(data["bans_file"]),
            table=str(data["table"]),
            ruleset=Path(data["ruleset"]),
        )


def parse_address(text: object) -> IPAddr | None:
    """An IP address from a request or the bans file; IPv4-mapped IPv6 becomes IPv4."""
    if not isinstance(text, str):
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass
class Guard:
    """Failed logins per address in a sliding window, and the bans they lead to."""

    failures: int
    window: float
    ban: float
    exempt: tuple[IPNet, ...]
    bans: dict[IPAddr, float] = field(default_factory=dict)  # address → expiry (epoch seconds)
    attempts: dict[IPAddr, deque[tuple[float, str]]] = field(default_factory=dict)

    def is_exempt(self, address: IPAddr) -> bool:
        return any(address in network for network in self.exempt)

    def banned_until(self, address: IPAddr, now: float) -> float | None:
        expiry = self.bans.get(address)
        if expiry is None:
            return None
        if expiry <= now:
            del self.bans[address]
            return None
        return expiry

    def record_failure(self, address: IPAddr, credential: str, now: float) -> bool:
        """Count one failed login; True when it starts a ban."""
        if self.is_exempt(address) or self.banned_until(address, now) is not None:
            return False
        recent = self.attempts.setdefault(address, deque(maxlen=4 * self.failures + 16))
        while recent and recent[0][0] <= now - self.window:
            recent.popleft()
        recent.append((now, credential))
        if len({c for _, c in recent}) < self.failures:
            return False
        del self.attempts[address]
        self.bans[address] = now + self.ban
        return True

    def forget_idle(self, now: float) -> None:
        """Drop addresses whose last failure left the window, and expired bans."""
        for address in [a for a, recent in self.attempts.items() if recent[-1][0] <= now - self.window]:
            del self.attempts[address]
        for address in [a for a, expiry in self.bans.items() if expiry <= now]:
            del self.bans[address]


def load_bans(path: Path, now: float) -> dict[IPAddr, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log(f"ignoring unreadable bans file {path}: {exc}")
        return {}
    bans: dict[IPAddr, float] = {}
    for text, expiry in (data.get("bans") or {}).items() if isinstance(data, dict) else []:
        address = parse_address(text)
        if address is not None and isinstance(expiry, int | float) and expiry > now:
            bans[address] = float(expiry)
    return bans


def save_bans(path: Path, bans: dict[IPAddr, float]) -> None:
    """Write the bans atomically (readable by the fence, which runs as another user)."""
    text = json.dumps({"bans": {str(a): round(e, 3) for a, e in sorted(bans.items(), key=str)}}, indent=1)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text + "\n", encoding="utf-8")
    temporary.chmod(0o644)
    temporary.replace(path)


def log(message: str) -> None:
    print(f"guard: {message}", file=sys.stderr, flush=True)


# --- serve --------------------------------------------------------------------------------------


def routes() -> list[tuple[str, int, int]]:
    """(interface, destination, gateway) of the IPv4 routes, from /proc/net/route."""
    rows = []
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        rows.append((fields[0], int(fields[1], 16), int(fields[2], 16)))
    return rows


def default_gateway() -> IPAddr | None:
    """The front network's gateway: the only network of the guard with a default route (the
    back network is internal). Docker's proxy connects every loopback client from it."""
    for _, destination, gateway in routes():
        if destination == 0 and gateway:
            return ipaddress.IPv4Address(struct.pack("<I", gateway))
    return None


def listen_address() -> str:
    """The address on the internal (back) network: the interface without the default route.
    The policy API is then not reachable from the front network or the host's bridge."""
    interfaces = {name for name, _, _ in routes() if name != "lo"}
    default = {name for name, destination, _ in routes() if destination == 0}
    internal = sorted(interfaces - default)
    if not internal:
        return ANY  # one network only: nothing else to choose
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", internal[0].encode()[:15])
        return socket.inet_ntoa(fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)[20:24])


class PolicyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, config: Config, guard: Guard, address: str) -> None:
        super().__init__((address, config.port), PolicyHandler)
        self.config = config
        self.guard = guard
        self.lock = threading.Lock()

    def allow(self, body: dict[str, Any]) -> dict[str, object]:
        address = parse_address(body.get("remote"))
        if address is None:
            return {"status": 0}
        with self.lock:
            expiry = self.guard.banned_until(address, time.time())
        if expiry is None:
            return {"status": 0}
        return {"status": -1, "msg": "Too many failed logins from your address; try again later"}

    def report(self, body: dict[str, Any]) -> None:
        address = parse_address(body.get("remote"))
        if address is None or body.get("success") is not False or body.get("policy_reject") is True:
            return
        credential = f"{body.get('login', '')}\0{body.get('pwhash', '')}"
        now = time.time()
        with self.lock:
            banned = self.guard.record_failure(address, credential, now)
            if banned:
                self.guard.forget_idle(now)
                save_bans(self.config.bans_file, self.guard.bans)
        if banned:
            log(
                f"banned {address} for {self.config.ban:.0f}s after {self.guard.failures} failed logins "
                f"within {self.config.window:.0f}s (last: {str(body.get('protocol', '?'))[:20]})"
            )


class PolicyHandler(BaseHTTPRequestHandler):
    server: PolicyServer
    server_version = "guard"
    sys_version = ""

    def do_POST(self) -> None:
        command = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("command", [""])[0]
        length = min(int(self.headers.get("Content-Length") or 0), 65536)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = None
        if DEBUG:
            log(f"{command}: {body!r}")
        if not isinstance(body, dict):
            self.reply(400, {"error": "expected a JSON object"})
        elif command == "allow":
            self.reply(200, self.server.allow(body))
        elif command == "report":
            self.server.report(body)
            self.reply(200, {})
        else:
            self.reply(404, {"error": f"unknown command {command[:20]!r}"})

    def do_GET(self) -> None:
        if self.path == "/health":
            self.reply(200, {"status": "ok"})
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per login would drown the log; bans are logged by report()


def serve(config: Config) -> int:
    gateway = default_gateway()
    exempt = config.exempt + ((ipaddress.ip_network(gateway),) if gateway else ())
    now = time.time()
    guard = Guard(config.failures, config.window, config.ban, exempt, bans=load_bans(config.bans_file, now))
    address = listen_address()
    server = PolicyServer(config, guard, address)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    log(
        f"listening on {address}:{config.port}: ban after {config.failures} failed "
        f"logins within {config.window:.0f}s for {config.ban:.0f}s; {len(guard.bans)} bans kept; "
        f"never banned: {', '.join(str(n) for n in exempt)}"
    )
    server.serve_forever()
    server.server_close()
    return 0


def health(config: Config) -> int:
    """GET /health on the policy port; healthy on `200`."""
    address = listen_address()
    target = ("127.0.0.1" if address == ANY else address, config.port)
    try:
        with socket.create_connection(target, timeout=3) as sock:
            sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            status = sock.makefile("rb").readline().decode(errors="replace").strip()
    except OSError as exc:
        status = str(exc)
    if status.split()[1:2] == ["200"]:
        return 0
    print(f"{target[0]}:{target[1]}/health: {status or 'no answer'}")
    return 1


# --- fence --------------------------------------------------------------------------------------


def nft(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)


def set_elements(bans: dict[IPAddr, float], now: float, version: int) -> str:
    """nft set elements with their remaining time: `192.0.2.1 timeout 3599500ms, …`."""
    return ", ".join(
        f"{address} timeout {math.ceil((expiry - now) * 1000)}ms"
        for address, expiry in sorted(bans.items(), key=str)
        if address.version == version and expiry - now > 0.001
    )


def sync_script(table: str, bans: dict[IPAddr, float], now: float) -> str:
    """One nft transaction that replaces both sets' contents."""
    lines = []
    for name, version in (("banned4", 4), ("banned6", 6)):
        lines.append(f"flush set inet {table} {name}")
        if elements := set_elements(bans, now, version):
            lines.append(f"add element inet {table} {name} {{ {elements} }}")
    return "\n".join(lines) + "\n"


def fence(config: Config) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    load = nft(config.ruleset.read_text(encoding="utf-8"))
    if load.returncode != 0:
        log(f"cannot load {config.ruleset} into nftables: {load.stderr.strip()}")
        return 1
    log(f"table inet {config.table} loaded; mirroring {config.bans_file}")
    seen: tuple[int, int, int] | None = None
    while not stop.is_set():
        try:
            status = config.bans_file.stat()
            current: tuple[int, int, int] | None = (status.st_ino, status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            current = None
        if current != seen:
            now = time.time()
            bans = load_bans(config.bans_file, now)
            run = nft(sync_script(config.table, bans, now))
            if run.returncode != 0:  # the table was removed under us (a flushed ruleset): reload
                log(f"updating the sets failed ({run.stderr.strip()}); loading the table again")
                nft(config.ruleset.read_text(encoding="utf-8"))
                run = nft(sync_script(config.table, bans, now))
            if run.returncode == 0:
                seen = current
                log(f"{len(bans)} banned: {', '.join(str(a) for a in sorted(bans, key=str)) or '-'}")
        stop.wait(POLL_SECONDS)
    removed = nft(f"delete table inet {config.table}\n")
    outcome = "removed" if removed.returncode == 0 else f"not removed: {removed.stderr.strip()}"
    log(f"table inet {config.table} {outcome}")
    return 0


COMMANDS = {"serve": serve, "health": health, "fence": fence}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in COMMANDS:
        print(f"usage: {Path(argv[0]).name} {{{'|'.join(COMMANDS)}}} CONFIG", file=sys.stderr)
        return 2
    return COMMANDS[argv[1]](Config.load(Path(argv[2])))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
