"""`mailstack audit`: the hardening of a running site, measured by the tools auditors use.

A local audit looks at the stack `mailstack up` started on this machine; a host audit
reaches a deployed site over SSH, and its mail ports through SSH forwards to the
containers, so that it also works where the firewall lets only SSH in from here.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mailstack import services
from mailstack.audit import at_rest, containers, host, smtp, tls
from mailstack.audit.containers import AuditError
from mailstack.audit.report import Item, Report
from mailstack.backup import SCRIPT, STALE_AFTER, LastRun, age_text
from mailstack.remote import Shell
from mailstack.render.context import fence_table
from mailstack.site.models import Host, Site

__all__ = ["SECTIONS", "AuditError", "Item", "Report", "run_audit"]

Say = Callable[[str], None]
BACKUP_SOURCE = "DESIGN.md §4 (at rest: restic backups)"


SECTIONS = ("containers", "tls", "smtp", "host")


def run_audit(
    site: Site,
    project: str,
    state_dir: Path,
    *,
    target: Host | None,
    site_dir: Path,
    say: Say,
    only: tuple[str, ...] = SECTIONS,
) -> Report:
    """Every section of ``only``: containers (docker inspect), tls (testssl.sh and openssl),
    smtp (banner, VRFY, relay, Postfix's settings), host (with a target: ssh-audit, nftables,
    lynis, a port scan; locally listed as skipped)."""
    started = time.monotonic()
    report = Report(
        site.site, target.name if target else "local", datetime.now(UTC).isoformat(timespec="seconds")
    )
    report.tools.update(_tool_versions())
    shell = Shell(target, site_dir)
    ports = dict(site.network.ports.published())
    running = containers.inspect_project(shell, project)
    say(f"containers: {', '.join(sorted(running))}")
    if "containers" in only:
        report.items += containers.container_items(shell, running, state_dir, site)
        if site.backup is not None:
            report.items.append(_backup_item(shell, running.get("backup")))
        report.items.append(at_rest.at_rest_item(shell, running, site))
    if "smtp" in only and (postfix := running.get("postfix")) is not None:
        report.items += smtp.postfix_items(shell, postfix["Id"], site)
    if "smtp" in only:
        report.items.append(smtp.ban_item(shell, running, site, fence_table(site)))
    if {"tls", "smtp"} & set(only):
        reach = (
            containers.published_targets(running, ports) if target else {p: ("", n) for p, n in ports.items()}
        )
        address = "127.0.0.1" if target else _local_address(site)
        with shell.forwards(reach) as local_ports:
            if "tls" in only:
                report.items += _tls_items(
                    report, address, [(name, local_ports[name]) for name in ports], say
                )
            if "smtp" in only:
                say("SMTP banner, VRFY and relay")
                report.items += smtp.probe_items(site, address, {name: local_ports[name] for name in ports})
    if "host" in only:
        report.items += _host_items(report, shell, site, target, set(ports.values()), say)
    report.seconds = time.monotonic() - started
    return report


def _backup_item(shell: Shell, container: dict[str, Any] | None) -> Item:
    """The last successful backup's age (backup: in the site file), from the backup service."""
    title = f"The last successful backup is less than {STALE_AFTER.days * 24} hours old"
    if container is None:
        return Item("backup.last_success", title, "fail", "the backup service is not running", BACKUP_SOURCE)
    ran = shell.run("docker", "exec", str(container["Id"]), SCRIPT, "status", timeout=60)
    last = LastRun.parse(ran.stdout) if ran.returncode == 0 else None
    age = last.success_age() if last is not None else None
    if last is None or age is None:
        return Item("backup.last_success", title, "fail", "no backup has succeeded yet", BACKUP_SOURCE)
    detail = f"{age_text(age)} ago ({last.last_success}); the last run {'succeeded' if last.ok else 'FAILED'}"
    return Item.check("backup.last_success", title, age <= STALE_AFTER and last.ok, detail, BACKUP_SOURCE)


def _tls_items(report: Report, address: str, ports: list[tuple[str, int]], say: Say) -> list[Item]:
    tls_ports = [tls.TlsPort(name, port, tls.STARTTLS[name]) for name, port in ports if name in tls.STARTTLS]
    items: list[Item] = []
    if tls.testssl_command() is None:
        items.append(
            Item("tls.testssl", "testssl.sh audit", "skip", "testssl.sh is not installed", tls.SRC_VERSIONS)
        )
    else:
        say(f"testssl.sh on {len(tls_ports)} ports")
        with tempfile.TemporaryDirectory(prefix="mailstack-audit-") as workdir:
            scans = tls.run_testssl(tls_ports, address, Path(workdir), parallel=4)
        for scan in scans:
            items += tls.scan_items(scan)
            report.evidence[f"testssl/{scan.port.name}"] = scan.findings
    say("handshakes with SHA-1 signatures, ECDSA and RSA certificates")
    for port in tls_ports:
        items += tls.handshake_items(address, port)
    return items


def _host_items(
    report: Report, shell: Shell, site: Site, target: Host | None, ports: set[int], say: Say
) -> list[Item]:
    if target is None:
        return _host_items_skipped(site)
    say(f"firewall, lynis, a port scan and ssh-audit of {target.name}")
    items = [
        host.firewall_item(shell),
        host.lynis_item(shell),
        host.port_scan_item(target, {target.ssh_port, *ports}),
    ]
    # Last: ssh-audit's many unauthenticated connections can earn this address a pause from
    # sshd (PerSourcePenalties, OpenSSH >= 9.8), during which no further SSH would get in.
    ssh_item, ssh_data = host.ssh_audit_item(target)
    report.evidence["ssh-audit"] = ssh_data
    return [ssh_item, *items]


def _host_items_skipped(site: Site) -> list[Item]:
    """A local audit lists the host's items too, as skipped, so the report is complete."""
    hosts = ", ".join(h.name for h in site.hosts)
    detail = "the Docker host of a deployment: `mailstack audit SITE --host NAME`" + (
        f" (hosts: {hosts})" if hosts else ""
    )
    return [
        Item("host.ssh_audit", "SSH algorithms (ssh-audit)", "skip", detail, host.SRC_SSH),
        Item("host.firewall", "nftables drops inbound traffic by default", "skip", detail, host.SRC_FIREWALL),
        Item("host.lynis", "lynis hardening index", "skip", detail, host.SRC_LYNIS),
        Item("host.ports", "only SSH and the mail ports are open", "skip", detail, host.SRC_PORTS),
    ]


def _local_address(site: Site) -> str:
    """Where this machine reaches the site's published ports."""
    return services.client_address(site.network.bind[0])


def _tool_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    testssl = tls.testssl_command()
    if testssl:
        banner = _first_output([testssl, "--version"])
        found = re.search(r"testssl\.sh\s+(\S+)", banner)
        versions["testssl.sh"] = found.group(1) if found else banner.splitlines()[0] if banner else "?"
    else:
        versions["testssl.sh"] = "not installed"
    versions["openssl"] = _first_output(["openssl", "version"]).strip() or "not installed"
    try:
        versions["ssh-audit"] = metadata.version("ssh-audit")
    except metadata.PackageNotFoundError:
        versions["ssh-audit"] = "not installed"
    return versions


def _first_output(command: list[str]) -> str:
    try:
        run = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return run.stdout or run.stderr
