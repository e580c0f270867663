"""Smoke tests of the e2e harness: the server container behaves like a fresh Debian 13 server.

They share the session's `server` (the cloud kind), in file order. What a minimal server
lacks is checked where one is deployed to (test_deploy.py).
"""

from __future__ import annotations

import re
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import EGRESS_TABLE, MAIL_PORTS, SSH_OPTIONS, Server, ansible_env, run

pytestmark = pytest.mark.e2e


def test_ssh_takes_the_session_key_and_refuses_passwords(server: Server) -> None:
    print(f"{server.name} ready {server.ready_seconds} s after docker start")
    assert server.ssh("id -un").stdout.strip() == "root"
    assert server.ssh("sudo -n id -un", user="debian").stdout.strip() == "root"

    password_only = [
        *("ssh", "-p", str(server.ssh_port), *SSH_OPTIONS),
        *("-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive"),
        f"root@{server.host}",
        "true",
    ]
    refused = run(password_only, check=False, timeout=30)
    assert refused.returncode == 255
    # The server names the methods it would accept: the key, nothing else.
    assert "Permission denied (publickey)" in refused.stderr, refused.stderr

    effective = server.exec(["sshd", "-T"]).stdout
    assert "\npasswordauthentication no\n" in effective
    assert "\npermitrootlogin without-password\n" in effective


def test_systemd_is_pid_1_in_its_own_cgroup_tree(server: Server) -> None:
    assert server.exec(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    state = server.exec(["systemctl", "is-system-running"], check=False).stdout.strip()
    failed = server.exec(["systemctl", "--failed", "--plain", "--no-legend"]).stdout
    assert state in ("running", "degraded"), f"system is {state}; failed units:\n{failed}"
    # Own cgroup namespace: systemd sees itself at the root, as on a VM.
    assert re.search(
        r"^\d+:name=systemd:/init\.scope$|^0::/init\.scope$", server.exec("cat /proc/1/cgroup").stdout, re.M
    )
    machine_id = server.exec(["cat", "/etc/machine-id"]).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id), machine_id
    assert server.exec("ls /etc/ssh/ssh_host_ed25519_key").returncode == 0


def test_the_server_cannot_change_the_host_kernel(server: Server) -> None:
    """Global sysctls are read-only inside; the server's own network namespace is not."""
    knob = Path("/proc/sys/kernel/core_uses_pid")
    before = knob.read_text()
    flipped = "0" if before.strip() == "1" else "1"
    denied = server.exec(f"echo {flipped} > {knob}", check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr, denied.stderr
    assert knob.read_text() == before
    assert server.exec("sysctl -w net.ipv4.ip_forward=1").returncode == 0


def test_etc_hosts_hostname_and_resolv_conf_are_plain_files(server: Server) -> None:
    """Docker's bind mounts are gone, so a replace-by-rename works as on a real server."""
    mounts = server.exec("cat /proc/self/mountinfo").stdout
    for path in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf"):
        assert f" {path} " not in mounts
    server.ssh("cp -p /etc/hosts /etc/hosts.new && mv /etc/hosts.new /etc/hosts")
    server.ssh(f"hostnamectl set-hostname {server.name}")
    assert server.exec(["cat", "/etc/hostname"]).stdout.strip() == server.name


def test_published_ports_reach_the_server(server: Server) -> None:
    assert sorted(server.ports) == sorted(MAIL_PORTS)
    assert len({server.ssh_port, *server.ports.values()}) == len(MAIL_PORTS) + 1
    banner = "220 e2e-harness ESMTP"
    listener = (
        "import socket\n"
        "s = socket.create_server(('0.0.0.0', 25))\n"
        "c, _ = s.accept()\n"
        f"c.sendall(b'{banner}\\r\\n')\n"
        "c.close()\n"
    )
    server.exec(["systemd-run", "--unit", "e2e-banner", "--collect", "python3", "-c", listener])
    try:
        deadline = time.monotonic() + 15
        while server.exec("ss -Hltn sport = :25").stdout.strip() == "":
            assert time.monotonic() < deadline, "the test listener on port 25 did not start"
            time.sleep(0.2)
        with socket.create_connection((server.host, server.port(25)), timeout=10) as conn:
            assert conn.recv(100).decode().strip() == banner
    finally:
        server.exec("systemctl stop e2e-banner 2>/dev/null || true")


def test_ansible_reaches_the_server_over_ssh(server: Server, tmp_path: Path) -> None:
    def host_line(alias: str, user: str, **extra: str) -> str:
        variables = {**server.ansible_host_vars(user=user), **extra}
        return " ".join([alias, *(f"{k}={str(v)!r}" for k, v in variables.items())])

    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[servers]\n"
        + host_line("as-root", "root")
        + "\n"
        + host_line("as-debian", "debian", ansible_become="true")
        + "\n"
    )
    ansible = Path(sys.executable).with_name("ansible")
    env = ansible_env()
    started = time.monotonic()
    result = run(
        [str(ansible), "-i", str(inventory), "all", "-m", "ansible.builtin.command", "-a", "id -un"],
        cwd=tmp_path,
        env=env,
    )
    ping = run(
        [str(ansible), "-i", str(inventory), "all", "-m", "ansible.builtin.ping"], cwd=tmp_path, env=env
    )
    print(f"two ansible ad-hoc runs in {time.monotonic() - started:.1f} s")
    assert re.search(r"^as-root \| CHANGED \| rc=0 >>\nroot$", result.stdout, re.M), result.stdout
    assert re.search(r"^as-debian \| CHANGED \| rc=0 >>\nroot$", result.stdout, re.M), result.stdout
    assert ping.stdout.count('"ping": "pong"') == 2, ping.stdout


@pytest.mark.parametrize("how", ["firewall", "route"])
def test_block_egress_cuts_the_mirror_but_not_ssh(server: Server, how: str) -> None:
    with server.egress_blocked(how):
        update = server.ssh("apt-get -q -o APT::Update::Error-Mode=any update", check=False, timeout=180)
        assert update.returncode != 0, update.stdout
        assert re.search(
            r"Temporary failure resolving|Network is unreachable|Could not connect",
            update.stdout + update.stderr,
        )
        assert server.ssh("echo still-here").stdout.strip() == "still-here"
    assert EGRESS_TABLE not in server.exec(["nft", "list", "tables"]).stdout
    assert server.exec(["ip", "-4", "route", "show", "default"]).stdout.startswith("default via ")
    # The failed update left the package lists that the offline install needs.
    assert server.exec("apt-get install -s -q docker.io").returncode == 0
