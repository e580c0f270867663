"""The Docker host of a deployed site: SSH algorithms, lynis, the firewall, a port scan."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
from typing import Any

from mailstack.audit.portscan import open_ports
from mailstack.audit.report import Item
from mailstack.remote import Shell
from mailstack.site.models import Host

LYNIS_MINIMUM = 80
LYNIS_REPORT = "/var/log/lynis-report.dat"  # where lynis writes when run as root
SRC_SSH = "ssh-audit policy; Mozilla OpenSSH guidelines; BSI TR-02102-4"
SRC_LYNIS = "lynis hardening index (CIS Debian Linux benchmark and others)"
SRC_FIREWALL = "CIS Debian Linux benchmark: nftables default deny inbound"
SRC_PORTS = "CIS Debian Linux benchmark: only the services needed listen"


def ssh_audit_item(host: Host) -> tuple[Item, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "ssh_audit", "-j", "-p", str(host.ssh_port), host.address],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    try:
        data = json.loads(run.stdout)
    except json.JSONDecodeError:
        detail = f"ssh-audit gave no report: {(run.stderr or run.stdout).strip()[-300:]}"
        return Item("host.ssh_audit", "SSH algorithms", "fail", detail, SRC_SSH), None
    failures = [
        f"{section} {entry['algorithm']}"
        for section in ("kex", "key", "enc", "mac")
        for entry in data.get(section, [])
        if entry.get("notes", {}).get("fail")
    ]
    checked = sum(len(data.get(section, [])) for section in ("kex", "key", "enc", "mac"))
    item = Item.check(
        "host.ssh_audit",
        "SSH offers no key exchange, host key, cipher or MAC that ssh-audit fails",
        not failures and checked > 0,
        f"{checked} algorithms checked; failures: {', '.join(failures) or 'none'}",
        SRC_SSH,
    )
    return item, data


def lynis_item(shell: Shell) -> Item:
    if shell.run("sh", "-c", "command -v lynis").returncode != 0:
        return Item(
            "host.lynis", "lynis hardening index", "skip", "lynis is not installed on the host", SRC_LYNIS
        )
    run = shell.run("lynis", "audit", "system", "--quick", "--no-colors", timeout=900)
    text = shell.run("cat", LYNIS_REPORT).stdout
    found = re.search(r"^hardening_index=(\d+)$", text, re.M)
    if not found:
        detail = f"lynis wrote no hardening index (exit {run.returncode}): {run.stderr.strip()[-300:]}"
        return Item("host.lynis", "lynis hardening index", "fail", detail, SRC_LYNIS)
    index = int(found.group(1))
    warnings = re.findall(r"^warning\[\]=([^|]+)", text, re.M)
    return Item.check(
        "host.lynis",
        f"lynis hardening index of at least {LYNIS_MINIMUM}",
        index >= LYNIS_MINIMUM,
        f"index {index}; warnings: {', '.join(warnings) or 'none'}",
        SRC_LYNIS,
    )


def firewall_item(shell: Shell) -> Item:
    run = shell.run("nft", "--json", "list", "ruleset")
    if run.returncode != 0:
        detail = f"`nft list ruleset` failed: {(run.stderr or run.stdout).strip()[-300:]}"
        return Item("host.firewall", "inbound firewall", "fail", detail, SRC_FIREWALL)
    chains = [
        entry["chain"]
        for entry in json.loads(run.stdout).get("nftables", [])
        if "chain" in entry and entry["chain"].get("hook") == "input"
    ]
    dropping = [f"{c['family']} {c['table']} {c['name']}" for c in chains if c.get("policy") == "drop"]
    return Item.check(
        "host.firewall",
        "nftables drops inbound traffic by default",
        bool(dropping),
        f"input chains with policy drop: {', '.join(dropping) or 'none'} (of {len(chains)} input chains)",
        SRC_FIREWALL,
    )


def port_scan_item(host: Host, expected: set[int]) -> Item:
    if _is_loopback(host.address):
        detail = f"{host.address} is this machine's loopback: a scan would see this machine, not the host"
        return Item("host.ports", "open ports", "skip", detail, SRC_PORTS)
    found = set(open_ports(host.address, range(1, 65536)))
    unexpected, closed = sorted(found - expected), sorted(expected - found)
    return Item.check(
        "host.ports",
        "a TCP scan of all 65535 ports finds only SSH and the published mail ports",
        not unexpected,
        f"open: {sorted(found)}; unexpected: {unexpected or 'none'}; expected but closed: {closed or 'none'}",
        SRC_PORTS,
    )


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"
