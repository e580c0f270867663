"""Pebble, Let's Encrypt's ACME test server, in one throwaway container for the integration tests.

The image is Debian 13's ``pebble`` package on the local base image, built only when its tag (a
digest of the Dockerfile below and the base image's id) is missing. The container runs with
``--network host`` and every listener on 127.0.0.1: pebble-challtestsrv as a DNS stub that answers
every A query with 127.0.0.1 (and no AAAA), and pebble resolving names through it, so an HTTP-01
challenge for any name is fetched from ``http://127.0.0.1:<http_port>/.well-known/acme-challenge/``.
No test traffic ever leaves 127.0.0.1.

Pebble makes a fresh issuing CA (root and intermediate) every time it starts: ``roots()`` and
``intermediates()`` change across ``restart()``; its HTTPS listener certificate (``ca_bundle``) does not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailstack.images import image_id, log_dir, resolve_base
from mailstack.state.crypto import ca_certificate
from tests.integration.ports import free_ports
from tests.integration.stack import WaitTimeoutError

IMAGE_REPO = "mailstack-test/pebble"
LABEL = "org.mailstack.test-pebble"
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
 && apt-get install -y --no-install-recommends pebble ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
"""
# The container command: both daemons, and the container ends when either of them does.
RUN_SH = """\
#!/bin/bash
set -u
pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" \\
    -dns01 "127.0.0.1:$DNS_PORT" -management "127.0.0.1:$CHALL_MGMT_PORT" \\
    -http01 "" -https01 "" -tlsalpn01 "" -doh "" &
stub=$!
pebble -config /pebble/config.json -dnsserver "127.0.0.1:$DNS_PORT" &
acme=$!
trap 'kill "$stub" "$acme" 2>/dev/null' TERM INT
wait -n "$stub" "$acme"
status=$?
echo "run.sh: a daemon exited with status $status; stopping the other" >&2
kill "$stub" "$acme" 2>/dev/null
wait
exit "$status"
"""
BUILD_TIMEOUT = 900.0
DOCKER_TIMEOUT = 60.0
READY_TIMEOUT = 30.0
# Certificates Pebble issues are valid this long (its default is 5 years).
VALIDITY = 24 * 3600
# Pebble's environment: no random validation sleeps, no rejected nonces, no authorization reuse
# (so every order is validated again).
ENVIRONMENT = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}


def _docker(
    *args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:2])} failed: {(result.stderr or result.stdout).strip()}")
    return result


def ensure_image(say: Callable[[str], None] = print) -> str:
    """The tag of the Pebble image; built from the local Debian 13 base image if it is missing."""
    base = resolve_base(None, bootstrap=False, say=say)
    base_id = image_id(base) or ""
    digest = hashlib.sha256(f"{DOCKERFILE}\0{base_id}\0".encode()).hexdigest()[:16]
    tag = f"{IMAGE_REPO}:{digest}"
    if image_id(tag):
        return tag
    log = log_dir() / "build-test-pebble.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"building {tag} from {base} (log: {log})")
    argv = [
        "docker",
        "build",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--label",
        f"{LABEL}=1",
        "--tag",
        tag,
        "-",
    ]
    started = time.monotonic()
    with log.open("w") as handle:
        try:
            result = subprocess.run(
                argv,
                input=DOCKERFILE.encode(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"building {tag} took over {BUILD_TIMEOUT:.0f}s (log: {log})") from None
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"building {tag} failed (log: {log}):\n{tail}")
    say(f"built {tag} in {time.monotonic() - started:.0f}s")
    return tag


def _write_listener_cert(directory: Path) -> None:
    """A small CA (ca.pem) and a leaf for 127.0.0.1 and localhost (cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = ca_certificate(ca_key, "the Pebble test listener")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


class Pebble:
    """One running Pebble container (start with ``Pebble.start(http_port)``)."""

    def __init__(self, image: str, http_port: int, *, validity: int = VALIDITY) -> None:
        self.image = image
        self.http_port = http_port
        self.validity = validity
        self.name = f"mailstack-test-pebble-{secrets.token_hex(4)}"
        ports = [p for p in free_ports(6) if p != http_port][:5]
        self.acme_port, self.mgmt_port, self.tls_port, self.dns_port, self.chall_mgmt_port = ports
        self.directory = Path(tempfile.mkdtemp(prefix="mailstack-pebble-"))
        _write_listener_cert(self.directory)
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.acme_port}",
                "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
                "certificate": "/pebble/cert.pem",
                "privateKey": "/pebble/key.pem",
                "httpPort": http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "certificateValidityPeriod": validity,
            }
        }
        (self.directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        run_sh = self.directory / "run.sh"
        run_sh.write_text(RUN_SH)
        run_sh.chmod(0o755)
        self._context = ssl.create_default_context(cafile=str(self.ca_bundle))

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        http_port: int,
        *,
        validity: int = VALIDITY,
        timeout: float = READY_TIMEOUT,
        say: Callable[[str], None] = print,
    ) -> Pebble:
        """Build the image if needed, run the container, and wait until the directory answers."""
        pebble = cls(ensure_image(say), http_port, validity=validity)
        env = [arg for key, value in ENVIRONMENT.items() for arg in ("--env", f"{key}={value}")]
        try:
            _docker(
                "run", "--detach", "--name", pebble.name, "--network", "host", "--init",
                "--label", f"{LABEL}=1",
                "--volume", f"{pebble.directory}:/pebble:ro",
                "--env", f"DNS_PORT={pebble.dns_port}",
                "--env", f"CHALL_MGMT_PORT={pebble.chall_mgmt_port}",
                *env,
                pebble.image, "/pebble/run.sh",
            )  # fmt: skip
            pebble.wait_ready(timeout)
        except BaseException:
            pebble.stop()
            raise
        return pebble

    def stop(self) -> None:
        """Remove the container and the certificate directory (safe to call twice)."""
        _docker("rm", "--force", "--volumes", self.name, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def halt(self) -> None:
        """Stop the container, keeping it (and its ports and certificates) for ``restart``."""
        _docker("stop", "--time", "5", self.name)

    def restart(self, timeout: float = READY_TIMEOUT) -> None:
        """Restart the same container (same ports and listener certificate, new issuing CA)."""
        _docker("restart", "--time", "5", self.name)
        self.wait_ready(timeout)

    def logs(self, lines: int | None = None) -> str:
        args = ["logs", *(["--tail", str(lines)] if lines else []), self.name]
        result = _docker(*args, check=False)
        return result.stdout + result.stderr

    def state(self) -> str:
        result = _docker("inspect", "--format", "{{.State.Status}}", self.name, check=False)
        return result.stdout.strip() or f"(no container: {result.stderr.strip()})"

    # -- where it is ---------------------------------------------------------------------------
    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://127.0.0.1:{self.mgmt_port}"

    @property
    def ca_bundle(self) -> Path:
        """PEM of the CA that signed Pebble's own HTTPS listener certificate (ACME and management)."""
        return self.directory / "ca.pem"

    def tls_context(self) -> ssl.SSLContext:
        return self._context

    # -- talking to it ---------------------------------------------------------------------------
    def get(self, url: str, *, timeout: float = 10.0) -> tuple[int, bytes]:
        """GET ``url`` on one of Pebble's 127.0.0.1 listeners; (status, body), also for HTTP errors."""
        if not url.startswith("https://127.0.0.1:"):
            raise ValueError(f"Pebble is only reached on 127.0.0.1, not {url}")
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=self._context) as response:  # noqa: S310
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def directory_json(self) -> dict[str, object]:
        status, body = self.get(self.directory_url)
        if status != 200:
            raise RuntimeError(f"GET {self.directory_url} answered {status}: {body[:200]!r}")
        data = json.loads(body)
        if not isinstance(data, dict):
            raise RuntimeError(f"GET {self.directory_url} is not a JSON object: {body[:200]!r}")
        return data

    def _chain_pems(self, kind: str) -> list[str]:
        """Every ``/<kind>/<n>`` PEM (n = 0, 1, … until the first 404); alternate chains come after 0."""
        pems: list[str] = []
        for index in range(16):
            url = f"{self.management_url}/{kind}/{index}"
            status, body = self.get(url)
            if status == 404:
                break
            if status != 200:
                raise RuntimeError(f"GET {url} answered {status}: {body[:200]!r}")
            pems.append(body.decode("ascii"))
        if not pems:
            raise RuntimeError(f"Pebble has no {kind} at {self.management_url}/{kind}/0")
        return pems

    def roots(self) -> list[str]:
        """PEMs of the root CA(s) that issue the ACME certificates (changes on restart)."""
        return self._chain_pems("roots")

    def intermediates(self) -> list[str]:
        """PEMs of the intermediate CA(s) that sign the ACME certificates (changes on restart)."""
        return self._chain_pems("intermediates")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll the directory URL until it answers 200; give up after ``timeout`` or if the container dies."""
        deadline = time.monotonic() + timeout
        last = "(no attempt yet)"
        while True:
            try:
                status, body = self.get(self.directory_url, timeout=2.0)
            except (OSError, ssl.SSLError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            state = self.state()
            if state != "running" or time.monotonic() > deadline:
                what = "gave up" if state == "running" else f"container is {state!r}"
                raise WaitTimeoutError(
                    f"{what} after waiting up to {timeout:.0f}s for Pebble's directory {self.directory_url} "
                    f"(container {self.name}); last answer: {last}\n--- logs ---\n{self.logs(40)}"
                )
            time.sleep(0.2)
