"""Probes of a hardened server (issue #5, part 4): ssh-audit, an nftables ruleset, a TCP port
sweep and Lynis. Used by test_deploy.py; each returns data and leaves judging to the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import Server, run

SSH_AUDIT = str(Path(sys.executable).with_name("ssh-audit"))
#: ssh-audit's sections that the issue asks to be free of failures.
SSH_AUDIT_SECTIONS = {"kex": "key exchange", "key": "host key", "enc": "cipher", "mac": "MAC"}
SSH_AUDIT_POLICY = "Hardened Debian 13 (version 1)"


@dataclass(frozen=True)
class SshAudit:
    """ssh-audit's verdict on one sshd: failures and warnings per algorithm."""

    report: dict[str, Any]
    failures: list[str]
    warnings: list[str]

    @property
    def software(self) -> str:
        return str(self.report.get("banner", {}).get("software", "?"))


def ssh_audit(host: str, port: int) -> SshAudit:
    """Run ssh-audit (PyPI, JSON output) against host:port; its exit code only grades, so parse."""
    result = run([SSH_AUDIT, "-j", "-t", "20", "-p", str(port), host], check=False, timeout=120)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"ssh-audit gave no JSON (exit {result.returncode}): {exc}\n{result.stdout}\n{result.stderr}"
        ) from None
    failures, warnings = [], []
    for section, label in SSH_AUDIT_SECTIONS.items():
        for entry in report.get(section, []):
            notes = entry.get("notes", {})
            failures += [f"{label} {entry['algorithm']}: {note}" for note in notes.get("fail", [])]
            warnings += [f"{label} {entry['algorithm']}: {note}" for note in notes.get("warn", [])]
    return SshAudit(report=report, failures=failures, warnings=warnings)


def ssh_audit_policy(host: str, port: int, policy: str = SSH_AUDIT_POLICY) -> tuple[bool, list[str]]:
    """(passed, the policy's complaints) of an ssh-audit policy scan (JSON output)."""
    result = run([SSH_AUDIT, "-j", "-P", policy, "-p", str(port), host], check=False, timeout=120)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        return False, [f"no JSON (exit {result.returncode}): {result.stdout[-500:]} {result.stderr[-500:]}"]
    errors = [json.dumps(error, sort_keys=True) for error in report.get("errors", [])]
    return bool(report.get("passed")), errors


def wait_for_ssh_login(server: Server, timeout: float) -> float:
    """Seconds until the session key logs in as root again; AssertionError after `timeout`."""
    started = time.monotonic()
    while True:
        probe = server.ssh("true", check=False, timeout=20)
        if probe.returncode == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"root's key login to {server.host}:{server.ssh_port} still refused after {timeout:.0f} s: "
                f"{probe.stderr.strip()}"
            )
        time.sleep(2)


def input_policies(ruleset: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(family, table, chain, policy) of every base chain on the input hook in `nft -j list ruleset`."""
    found = []
    for item in ruleset.get("nftables", []):
        chain = item.get("chain")
        if chain and chain.get("hook") == "input":
            found.append((chain["family"], chain["table"], chain["name"], chain.get("policy", "accept")))
    return found


def tables(ruleset: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["table"]["family"], t["table"]["name"]) for t in ruleset.get("nftables", []) if "table" in t}


def bridge_address(server: Server) -> str:
    """The server container's address on the engine's network (where the port sweep goes)."""
    out = run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", server.name]
    ).stdout.split()
    if not out:
        raise AssertionError(f"{server.name} has no address on a Docker network")
    return out[0]


@dataclass
class Sweep:
    address: str
    ports: range
    open: list[int] = field(default_factory=list)
    seconds: float = 0.0


async def _probe(address: str, port: int, timeout: float, gate: asyncio.Semaphore) -> bool:
    async with gate:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)
        return True


async def _sweep(address: str, ports: list[int], timeout: float, concurrency: int) -> list[int]:
    gate = asyncio.Semaphore(concurrency)
    answers = await asyncio.gather(*(_probe(address, p, timeout, gate) for p in ports))
    return [port for port, answered in zip(ports, answers, strict=True) if answered]


def tcp_sweep(
    address: str,
    ports: range = range(1, 65536),
    *,
    timeout: float = 0.5,
    concurrency: int = 1500,
    confirm: tuple[int, ...] = (),
) -> Sweep:
    """Connect to every port; those that complete the handshake are open.

    A dropped SYN just times out, so a short timeout finds every open port on a local
    bridge; `confirm` ports (the expected ones) that a busy host made miss the first pass
    are tried again with a longer timeout, so they cannot be reported closed by mistake.
    """
    loop = asyncio.new_event_loop()
    try:
        started = loop.time()
        found = set(loop.run_until_complete(_sweep(address, list(ports), timeout, concurrency)))
        missed = [p for p in confirm if p not in found]
        if missed:
            found |= set(loop.run_until_complete(_sweep(address, missed, 5.0, 16)))
        return Sweep(address=address, ports=ports, open=sorted(found), seconds=loop.time() - started)
    finally:
        loop.close()


@dataclass(frozen=True)
class Lynis:
    hardening_index: int
    tests_performed: int
    warnings: list[str]
    suggestions: list[str]
    seconds: float

    def summary(self, limit: int = 60) -> str:
        lines = [f"hardening index {self.hardening_index} ({self.tests_performed} tests)"]
        lines += [f"warning {w}" for w in self.warnings]
        lines += [f"suggestion {s}" for s in self.suggestions[:limit]]
        return "\n".join(lines)


def lynis_audit(server: Server, timeout: float = 420) -> Lynis:
    """Install Lynis (from the image's apt cache) on the server and run `lynis audit system`."""
    server.exec(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends lynis >/dev/null",
        timeout=180,
    )
    report = "/root/lynis-report.dat"
    started = server.exec("date +%s.%N").stdout.strip()
    server.exec(
        f"lynis audit system --quick --no-colors --report-file {report} --log-file /root/lynis.log",
        timeout=timeout,
    )
    seconds = float(server.exec("date +%s.%N").stdout.strip()) - float(started)
    data = server.exec(["cat", report]).stdout
    values: dict[str, list[str]] = {}
    for line in data.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values.setdefault(key, []).append(value)
    index = values.get("hardening_index", [""])[0]
    if not re.fullmatch(r"\d+", index):
        raise AssertionError(f"no hardening_index in Lynis' report:\n{data[-3000:]}")
    return Lynis(
        hardening_index=int(index),
        tests_performed=int(values.get("lynis_tests_done", ["0"])[0] or 0),
        warnings=values.get("warning[]", []),
        suggestions=values.get("suggestion[]", []),
        seconds=seconds,
    )
