"""tls.mode acme against Pebble: how long issuance, a forced renewal and the reload take,
and what the acme service costs in memory.

    .venv/bin/python bench/acme_renewal.py [--rounds 3]

Starts Pebble (tests/integration/pebble.py: Debian's package, validation without its random
sleep), brings a copy of examples/demo.yaml with tls.mode acme up with `mailstack up`, and
measures: `up` until every implicit-TLS port serves Pebble's certificate (first issuance,
both key types); per round, `mailstack tls renew --force` (order, http-01 validation of four
names twice, finalization) and then until 465, 993, 995 and 443 all serve the new
certificate (the services' 5 s look at live/serial, then their reloads); the acme
container's memory (cgroup v1, or v2) at the end. Prints a table and writes
bench/results/acme_renewal.json.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailstack.remote import free_local_ports  # noqa: E402
from mailstack.site.models import STANDARD_PORTS  # noqa: E402
from tests.integration.pebble import Pebble  # noqa: E402

MAILSTACK = str(Path(sys.executable).with_name("mailstack"))
PORTS = ("submissions", "imaps", "pop3s", "https")


def serial(port: int) -> int:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der or b"").serial_number


def wait_for(what: str, probe: Callable[[], bool], timeout: float = 180) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if probe():
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gave up waiting for {what} after {timeout:.0f} s")


def memory_mib(container: str) -> float:
    cid = subprocess.run(
        ["docker", "inspect", "--format", "{{.Id}}", container], capture_output=True, text=True, check=True
    ).stdout.strip()
    for path in (
        f"/sys/fs/cgroup/memory/docker/{cid}/memory.usage_in_bytes",
        f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.current",
    ):
        if Path(path).exists():
            return int(Path(path).read_text()) / 2**20
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-acme-"))
    ports = free_local_ports(len(STANDARD_PORTS))
    published = dict(zip(STANDARD_PORTS, ports, strict=True))
    pebble = Pebble.start(published["http"], validity=90 * 86400)
    text = (ROOT / "examples" / "demo.yaml").read_text().replace("site: demo", "site: bench-acme")
    numbers = iter(ports)
    text = re.sub(r"^(    [a-z0-9]+): \d+$", lambda m: f"{m.group(1)}: {next(numbers)}", text, flags=re.M)
    text = text.replace(
        "tls:\n  mode: selfsigned\n",
        f"tls:\n  mode: acme\n  acme:\n    email: bench@example.test\n"
        f"    directory_url: {pebble.directory_url}\n    ca_bundle: {pebble.ca_bundle}\n",
    )
    site = base / "site.yaml"
    site.write_text(text)
    results: dict[str, object] = {}
    try:
        started = time.monotonic()
        up = subprocess.run(
            [MAILSTACK, "up", str(site), "--no-check"], capture_output=True, text=True, check=False
        )
        if up.returncode != 0:
            raise SystemExit(f"up failed: {up.stdout[-2000:]}{up.stderr[-2000:]}")
        results["up_s"] = round(time.monotonic() - started, 1)
        renew_s, switch_s = [], []
        for _ in range(args.rounds):
            before = {p: serial(published[p]) for p in PORTS}
            started = time.monotonic()
            run = subprocess.run(
                [MAILSTACK, "tls", "renew", str(site), "--force"], capture_output=True, text=True, check=False
            )
            if run.returncode != 0:
                raise SystemExit(f"renew failed: {run.stdout}{run.stderr}")
            renew_s.append(time.monotonic() - started)

            def switched(before: dict[str, int] = before) -> bool:
                return all(serial(published[p]) != before[p] for p in PORTS)

            switch_s.append(wait_for("every port on the new certificate", switched))
        results["renew_s"] = [round(x, 2) for x in renew_s]
        results["switch_after_renew_s"] = [round(x, 2) for x in switch_s]
        results["acme_memory_mib"] = round(memory_mib("mailstack-bench-acme-acme-1"), 1)
    finally:
        subprocess.run([MAILSTACK, "down", str(site), "--volumes"], capture_output=True, check=False)
        pebble.stop()
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "acme_renewal.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"up (first issuance included)      {results['up_s']} s")
    print(
        f"forced renewal (ECDSA + RSA)      median {statistics.median(renew_s):.1f} s  {results['renew_s']}"
    )
    print(
        f"then every port switched         median {statistics.median(switch_s):.1f} s  "
        f"{results['switch_after_renew_s']}"
    )
    print(f"acme container memory             {results['acme_memory_mib']} MiB")


if __name__ == "__main__":
    main()
