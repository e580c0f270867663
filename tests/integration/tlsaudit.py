"""TLS audit helpers for the hardening tests: testssl.sh runs in parallel, and openssl s_client.

testssl.sh 3.0 (Debian's package) speaks STARTTLS for SMTP, IMAP and POP3 but not for
ManageSieve; `SieveUnwrapper` does the ManageSieve STARTTLS exchange itself and passes
the TLS bytes through, so testssl sees a plain TLS port.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

# The testssl.sh checks the hardening tests assert on: protocols (-p), cipher categories
# (-s), forward secrecy (-f), server preferences (-P), renegotiation (-R), compression (-C).
TESTSSL_CHECKS = ("-p", "-s", "-f", "-P", "-R", "-C")
TESTSSL_TIMEOUT = 240.0


@dataclass(frozen=True)
class TlsPort:
    name: str  # the site's protocol name (smtp, imaps, …)
    port: int
    starttls: str | None  # smtp, imap, pop3, sieve; None: TLS from the first byte


@dataclass
class ScanResult:
    port: TlsPort
    findings: dict[str, list[dict[str, str]]]  # testssl id → its findings (ids repeat per cert)
    seconds: float
    output: str

    def finding(self, check: str) -> str:
        entries = self.findings.get(check, [])
        return entries[0]["finding"] if entries else "<missing>"

    def severities(self) -> dict[str, str]:
        return {check: entries[0]["severity"] for check, entries in self.findings.items()}


def testssl_command() -> str | None:
    """testssl.sh as Debian installs it (`testssl`), or as upstream names it."""
    return shutil.which("testssl") or shutil.which("testssl.sh")


def run_testssl(ports: list[TlsPort], host: str, workdir: Path, *, parallel: int = 4) -> list[ScanResult]:
    """testssl.sh against every port, ``parallel`` at a time; each port's JSON is parsed."""
    command = testssl_command()
    if command is None:
        raise FileNotFoundError("testssl.sh is not installed (Debian package testssl.sh)")
    results: list[ScanResult] = []
    lock = threading.Lock()
    queue = list(ports)

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                port = queue.pop(0)
            result = _testssl_one(command, port, host, workdir)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=worker) for _ in range(max(1, parallel))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    order = {p.name: i for i, p in enumerate(ports)}
    return sorted(results, key=lambda r: order[r.port.name])


def _testssl_one(command: str, port: TlsPort, host: str, workdir: Path) -> ScanResult:
    json_file = workdir / f"testssl-{port.name}.json"
    json_file.unlink(missing_ok=True)
    started = time.monotonic()
    with ExitStackPort(port, host) as (target_host, target_port, starttls):
        args = [command, "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none"]
        args += ["--jsonfile", str(json_file), *TESTSSL_CHECKS]
        if starttls:
            args += ["--starttls", starttls]
        run = subprocess.run(
            [*args, f"{target_host}:{target_port}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=TESTSSL_TIMEOUT,
        )
    findings: dict[str, list[dict[str, str]]] = {}
    if json_file.exists():
        for entry in json.loads(json_file.read_text() or "[]"):
            findings.setdefault(str(entry["id"]).split(" ")[0], []).append(
                {k: str(v) for k, v in entry.items()}
            )
    return ScanResult(port, findings, time.monotonic() - started, run.stdout + run.stderr)


class ExitStackPort:
    """Where testssl should connect: the port itself, or a SieveUnwrapper in front of it."""

    def __init__(self, port: TlsPort, host: str) -> None:
        self.port = port
        self.host = host
        self.unwrapper: SieveUnwrapper | None = None

    def __enter__(self) -> tuple[str, int, str | None]:
        if self.port.starttls == "sieve":
            self.unwrapper = SieveUnwrapper(self.host, self.port.port)
            return "127.0.0.1", self.unwrapper.start(), None
        return self.host, self.port.port, self.port.starttls

    def __exit__(self, *exc: object) -> None:
        if self.unwrapper is not None:
            self.unwrapper.stop()


class SieveUnwrapper:
    """A local port whose connections reach ``host:port`` (ManageSieve, RFC 5804) already past
    STARTTLS: for each client it reads the greeting, sends STARTTLS, waits for OK, then
    relays bytes both ways, so the client's first bytes are its TLS ClientHello."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.stopped = threading.Event()

    def start(self) -> int:
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.5)
        threading.Thread(target=self._accept, daemon=True).start()
        return int(self.listener.getsockname()[1])

    def stop(self) -> None:
        self.stopped.set()
        with suppress(OSError):
            self.listener.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=30)
        except OSError:
            client.close()
            return
        try:
            if not _sieve_starttls(upstream):
                return
            upstream.settimeout(None)
            client.settimeout(None)
            relay = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            relay.start()
            _pump(client, upstream)
            relay.join(timeout=30)
        finally:
            for sock in (client, upstream):
                with suppress(OSError):
                    sock.close()


def _sieve_starttls(sock: socket.socket) -> bool:
    """Read the capability greeting up to its OK line, send STARTTLS, expect OK."""
    reader = sock.makefile("rb")
    try:
        while True:
            line = reader.readline()
            if not line:
                return False
            if line.upper().startswith(b"OK"):
                break
        sock.sendall(b"STARTTLS\r\n")
        return reader.readline().upper().startswith(b"OK")
    finally:
        reader.detach()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextmanager
def sieve_unwrapped(host: str, port: int) -> Iterator[int]:
    unwrapper = SieveUnwrapper(host, port)
    try:
        yield unwrapper.start()
    finally:
        unwrapper.stop()


def s_client(
    host: str,
    port: int,
    *args: str,
    starttls: str | None = None,
    timeout: float = 20,
) -> tuple[bool, str]:
    """One `openssl s_client` handshake; (handshake completed, transcript)."""
    command = ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", "localhost", *args]
    if starttls:
        command += ["-starttls", starttls]
    run = subprocess.run(command, input="", capture_output=True, text=True, check=False, timeout=timeout)
    output = run.stdout + run.stderr
    cipher = next((line for line in output.splitlines() if "Cipher is" in line), "")
    return run.returncode == 0 and "(NONE)" not in cipher and bool(cipher), output
