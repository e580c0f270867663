"""TLS audit: testssl.sh on every TLS port (in parallel), and openssl s_client for what
testssl 3.0 does not check (SHA-1 signature algorithms, both certificate types).

testssl.sh 3.0 (Debian's package) speaks STARTTLS for SMTP, IMAP and POP3 but not for
ManageSieve; `SieveUnwrapper` does the ManageSieve STARTTLS exchange itself and passes
the TLS bytes through, so testssl sees a plain TLS port.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from mailstack.audit.report import Item

# The testssl.sh checks the hardening tests assert on: protocols (-p), cipher categories
# (-s), forward secrecy (-f), server preferences (-P), renegotiation (-R), compression (-C).
TESTSSL_CHECKS = ("-p", "-s", "-f", "-P", "-R", "-C")
TESTSSL_TIMEOUT = 240.0

# How each published port starts TLS.
STARTTLS: dict[str, str | None] = {
    "smtp": "smtp",
    "submission": "smtp",
    "submissions": None,
    "imap": "imap",
    "imaps": None,
    "pop3": "pop3",
    "pop3s": None,
    "managesieve": "sieve",
    "https": None,  # the web service; plain http only redirects and is not audited for TLS
}
# TLS 1.2: ECDHE key exchange and AEAD ciphers only; TLS 1.3: its AEAD suites.
TLS12_GOOD = re.compile(r"^ECDHE-(ECDSA|RSA)-(AES128-GCM-SHA256|AES256-GCM-SHA384|CHACHA20-POLY1305)$")
TLS13_GOOD = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"})
WEAK_CIPHER_CLASSES = ("NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE")  # AVERAGE: CBC
SRC_VERSIONS = "RFC 8996; RFC 9325; Mozilla server-side TLS; BSI TR-02102-2"
SRC_CIPHERS = "Mozilla server-side TLS 6.0 intermediate; internet.nl tls_ciphers; BSI TR-02102-2"
SRC_PFS = "BSI TR-02102-2 (forward secrecy); internet.nl tls_keyexchange"
SRC_ORDER = "internet.nl tls_cipherorder (NCSC-NL TLS guidelines)"
SRC_COMPRESSION = "internet.nl tls_compress; RFC 9325 3.3 (CRIME)"
SRC_RENEGOTIATION = "internet.nl tls_secreneg and tls_clientreneg; RFC 5746"
SRC_SIGALGS = "internet.nl tls_keyexchangehash (no SHA-1/SHA-224); RFC 9155"
SRC_CERTS = "Mozilla server-side TLS (ECDSA and RSA); BSI TR-02102-2 (RSA >= 3000 bits)"


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


def scan_items(result: ScanResult) -> list[Item]:
    """The findings of one port's testssl.sh run, as audit items."""
    name, ok = result.port.name, result.finding
    tls12, tls13 = ok("cipherorder_TLSv1_2").split(), ok("cipherorder_TLSv1_3").split()
    old = {p: ok(p) for p in ("SSLv2", "SSLv3", "TLS1", "TLS1_1")}
    weak = {c: ok(f"cipherlist_{c}") for c in WEAK_CIPHER_CLASSES}
    bad12 = [c for c in tls12 if not TLS12_GOOD.match(c)]
    bad13 = [c for c in tls13 if c not in TLS13_GOOD]
    not_pfs = [c for c in ok("PFS_ciphers").split() if c not in TLS13_GOOD and not c.startswith("ECDHE-")]
    return [
        Item.check(
            f"tls.protocols.{name}",
            f"{name}: TLS 1.2 and 1.3 only",
            all(v.startswith("not offered") for v in old.values())
            and ok("TLS1_2") == "offered"
            and ok("TLS1_3").startswith("offered"),
            f"SSLv2/3, TLS 1.0/1.1: {', '.join(sorted(set(old.values())))}; "
            f"TLS 1.2: {ok('TLS1_2')}; TLS 1.3: {ok('TLS1_3')}",
            SRC_VERSIONS,
        ),
        Item.check(
            f"tls.ciphers.{name}",
            f"{name}: ECDHE with AEAD only (no NULL, export, RC4, 3DES or CBC)",
            all(v.startswith("not offered") for v in weak.values()) and bool(tls12) and not bad12 + bad13,
            f"TLS 1.2: {' '.join(tls12) or '<none>'}; TLS 1.3: {' '.join(tls13) or '<none>'}"
            + (f"; not allowed: {' '.join(bad12 + bad13)}" if bad12 + bad13 else ""),
            SRC_CIPHERS,
        ),
        Item.check(
            f"tls.forward_secrecy.{name}",
            f"{name}: forward secrecy for every cipher, no finite-field DHE",
            ok("PFS") == "offered" and not not_pfs and ok("DH_groups") == "<missing>",
            f"PFS {ok('PFS')}; curves {ok('PFS_ECDHE_curves')}; DH groups {ok('DH_groups')}",
            SRC_PFS,
        ),
        Item.check(
            f"tls.cipher_order.{name}",
            f"{name}: the server chooses the cipher",
            ok("cipher_order") == "server",
            f"cipher order: {ok('cipher_order')}",
            SRC_ORDER,
        ),
        Item.check(
            f"tls.compression.{name}",
            f"{name}: no TLS compression",
            ok("CRIME_TLS").startswith("not vulnerable"),
            f"CRIME: {ok('CRIME_TLS')}",
            SRC_COMPRESSION,
        ),
        Item.check(
            f"tls.renegotiation.{name}",
            f"{name}: secure renegotiation only, none started by clients",
            ok("secure_renego") == "supported" and ok("secure_client_renego").startswith("not vulnerable"),
            f"secure renegotiation: {ok('secure_renego')}; client-initiated: {ok('secure_client_renego')}",
            SRC_RENEGOTIATION,
        ),
    ]


def handshake_items(host: str, port: TlsPort) -> list[Item]:
    """SHA-1 signature algorithms refused; an ECDSA and an RSA certificate both served."""
    # openssl speaks no ManageSieve: an unwrapper does its STARTTLS and passes TLS through.
    unwrap = port.starttls == "sieve"
    mode = None if unwrap else port.starttls
    target = "127.0.0.1" if unwrap else host
    with sieve_unwrapped(host, port.port) if unwrap else _direct(port.port) as local_port:
        # The client must be willing to use SHA-1 at all, or the check passes against any server.
        weak = ("-tls1_2", "-cipher", "DEFAULT@SECLEVEL=0")
        sha1, _ = s_client(target, local_port, *weak, "-sigalgs", "RSA+SHA1:ECDSA+SHA1", starttls=mode)
        sha256, _ = s_client(target, local_port, *weak, "-sigalgs", "RSA+SHA256:ECDSA+SHA256", starttls=mode)
        ecdsa_ok, ecdsa = s_client(target, local_port, "-tls1_2", "-sigalgs", "ECDSA+SHA256", starttls=mode)
        rsa_ok, rsa = s_client(
            target,
            local_port,
            "-tls1_2",
            "-sigalgs",
            "RSA-PSS+SHA256:RSA+SHA256",
            "-cipher",
            "ECDHE-RSA-AES128-GCM-SHA256",
            starttls=mode,
        )
    ecdsa_bits = _key_bits(ecdsa) if ecdsa_ok and "Peer signature type: ECDSA" in ecdsa else 0
    rsa_bits = _key_bits(rsa) if rsa_ok and "Peer signature type: RSA" in rsa else 0
    return [
        Item.check(
            f"tls.sha1_signatures.{port.name}",
            f"{port.name}: a client offering only SHA-1 signatures is refused",
            not sha1 and sha256,
            ("SHA-1 only: " + ("handshake completed" if sha1 else "refused"))
            + ("; SHA-256: completed" if sha256 else "; SHA-256: refused too, so the check proves nothing"),
            SRC_SIGALGS,
        ),
        Item.check(
            f"tls.certificates.{port.name}",
            f"{port.name}: an ECDSA P-256 and an RSA (>= 3072 bits) certificate are served",
            ecdsa_bits == 256 and rsa_bits >= 3072,
            f"ECDSA: {f'{ecdsa_bits} bits' if ecdsa_bits else 'none'}; "
            f"RSA: {f'{rsa_bits} bits' if rsa_bits else 'none'}",
            SRC_CERTS,
        ),
    ]


def _key_bits(transcript: str) -> int:
    found = re.search(r"Server public key is (\d+) bit", transcript)
    return int(found.group(1)) if found else 0


@contextmanager
def _direct(port: int) -> Iterator[int]:
    yield port
