"""A throwaway Debian 13 server in a container, reached over real SSH, for the e2e tests.

The fixtures that use this live in conftest.py; tests/e2e/README.md explains the
`docker run` recipe and the image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
SERVER_DIR = Path(__file__).resolve().parent / "server"
ROLES_DIR = ROOT / "playbooks" / "roles"

IMAGE_REPO = "mailstack/e2e-server"
LABEL = "org.mailstack.e2e-server"
#: SMTP, submissions, submission, IMAP, IMAPS, POP3, POP3S, ManageSieve, and the web
#: service's HTTP (ACME http-01) and HTTPS.
MAIL_PORTS = (25, 465, 587, 143, 993, 110, 995, 4190, 80, 443)
READY_TIMEOUT = 90.0
#: Always in the image's apt cache, whatever the roles' defaults say (lynis: the hardening
#: tests install it on a deployed server).
PREFETCH_ALWAYS = ("docker.io", "docker-compose", "lynis")
#: Options for every SSH connection to a server. Each server makes new host keys on the
#: same 127.0.0.1 with ports that get reused, so host keys are neither checked nor kept.
SSH_OPTIONS = (
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
)
#: ssh_args for Ansible against the servers (set as ANSIBLE_SSH_ARGS, which beats
#: ansible.cfg). playbooks/ansible.cfg says StrictHostKeyChecking=accept-new: that
#: records each server's key in ~/.ssh/known_hosts, then refuses the next server that
#: gets the same 127.0.0.1 port with new keys.
ANSIBLE_SSH_ARGS = shlex.join(["-C", "-o", "ControlMaster=auto", "-o", "ControlPersist=60s", *SSH_OPTIONS])
EGRESS_TABLE = "mailstack_e2e_egress"
#: Who logs in by key on each kind of server (server/Dockerfile's targets).
SERVER_USERS: dict[str, tuple[str, ...]] = {"minimal": ("root",), "cloud": ("root", "debian")}


def ansible_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for ansible/ansible-playbook/mailstack deploy against the servers.

    The caller's ANSIBLE_* settings are dropped (except ANSIBLE_CONFIG) and host keys are
    neither checked nor recorded.
    """
    source = dict(os.environ if base is None else base)
    env = {k: v for k, v in source.items() if not k.startswith("ANSIBLE_") or k == "ANSIBLE_CONFIG"}
    env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
    env["ANSIBLE_SSH_ARGS"] = ANSIBLE_SSH_ARGS
    return env


class CommandError(subprocess.CalledProcessError):
    """A failed command, with its output in the message."""

    def __str__(self) -> str:
        def tail(text: str | bytes | None) -> str:
            if isinstance(text, bytes):
                text = text.decode(errors="replace")
            return "\n".join((text or "").strip().splitlines()[-25:]) or "(empty)"

        argv = self.cmd if isinstance(self.cmd, str) else shlex.join(str(a) for a in self.cmd)
        return (
            f"command exited {self.returncode}: {argv}\n"
            f"--- stdout (tail) ---\n{tail(self.stdout)}\n--- stderr (tail) ---\n{tail(self.stderr)}"
        )


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv and capture its text output; raise CommandError (with the output) on failure."""
    result = subprocess.run(
        list(argv),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=None if env is None else dict(env),
    )
    if check and result.returncode != 0:
        raise CommandError(result.returncode, list(argv), result.stdout, result.stderr)
    return result


@dataclasses.dataclass(frozen=True, kw_only=True)
class Server:
    """A running server container. Its ports are published on `host` (127.0.0.1)."""

    name: str
    host: str = "127.0.0.1"
    ssh_port: int
    ssh_key_path: Path
    #: container port -> host port on `host`, for the ports asked for at start (not 22).
    ports: Mapping[int, int]
    volume: str
    #: "minimal" (root only, no sudo) or "cloud" (the sudo user `debian` too); see server/Dockerfile.
    kind: str = "cloud"
    #: Seconds from `docker run` until systemd was up and sshd took the key.
    ready_seconds: float = 0.0
    #: The server's own default route, saved by block_egress(how="route").
    _saved_routes: list[str] = dataclasses.field(default_factory=list, repr=False, compare=False)

    def port(self, container_port: int) -> int:
        """The host port on 127.0.0.1 that reaches `container_port` in the server."""
        if container_port == 22:
            return self.ssh_port
        try:
            return self.ports[container_port]
        except KeyError:
            raise KeyError(
                f"port {container_port} of {self.name} is not published; "
                f"published: {sorted(self.ports)} (pass ports=... to server_factory.start)"
            ) from None

    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the server with `docker exec` (a string goes through `sh -c`)."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        interactive = ["-i"] if input is not None else []
        return run(
            ["docker", "exec", *interactive, self.name, *argv], check=check, input=input, timeout=timeout
        )

    def ssh_argv(self, cmd: str | None = None, *, user: str = "root") -> list[str]:
        """The `ssh` command line that logs in with the session key (and runs cmd, if given)."""
        argv = ["ssh", "-i", str(self.ssh_key_path), "-p", str(self.ssh_port), *SSH_OPTIONS]
        argv.append(f"{user}@{self.host}")
        if cmd is not None:
            argv += ["--", cmd]
        return argv

    def ssh(
        self,
        cmd: str,
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 300,
        user: str = "root",
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the server over real SSH, with the session key."""
        return run(self.ssh_argv(cmd, user=user), check=check, input=input, timeout=timeout)

    def load_image(self, image: str, *, timeout: float = 600) -> None:
        """Copy an image of the host's engine into the server's engine: docker save | ssh docker load."""
        with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as save:
            load = subprocess.run(
                self.ssh_argv("docker load -q"),
                stdin=save.stdout,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            assert save.stdout is not None
            save.stdout.close()
            save_rc = save.wait(timeout=timeout)
        if save_rc != 0 or load.returncode != 0:
            argv = ["docker", "save", image, "|", *self.ssh_argv("docker load -q")]
            raise CommandError(load.returncode or save_rc, argv, load.stdout, load.stderr)

    def inventory_entry(self, *, user: str = "root") -> dict[str, str | int]:
        """This server as an entry of a mailstack site's `hosts:` list."""
        return {
            "name": self.name,
            "address": self.host,
            "ssh_user": user,
            "ssh_port": self.ssh_port,
            "ssh_key": str(self.ssh_key_path),
        }

    def ansible_host_vars(self, *, user: str = "root") -> dict[str, str | int]:
        """Ansible connection variables for this server (an ad-hoc inventory's host line)."""
        return {
            "ansible_host": self.host,
            "ansible_port": self.ssh_port,
            "ansible_user": user,
            "ansible_ssh_private_key_file": str(self.ssh_key_path),
            "ansible_ssh_common_args": shlex.join(SSH_OPTIONS),
            "ansible_python_interpreter": "/usr/bin/python3",
        }

    def journal(self, lines: int = 50) -> str:
        """The last lines of the server's systemd journal (for failure reports)."""
        result = self.exec(["journalctl", "--no-pager", "-n", str(lines)], check=False, timeout=30)
        return result.stdout + result.stderr

    def block_egress(self, how: str = "firewall") -> None:
        """Cut the server off from everything beyond its own subnet (Debian's mirror, DNS...).

        Done inside the server's network namespace, never on the host. SSH and the
        published ports keep working: they arrive from the Docker bridge, which is the
        server's own subnet. how="firewall" adds an nftables table that rejects new
        connections leaving the subnet, from the server and from its nested containers;
        the default route stays, so Ansible's facts look like a firewalled server's.
        (A role that runs `nft flush ruleset` removes it.) how="route" deletes the
        default route instead: nothing can flush that, but `ansible_default_ipv4` is empty.
        """
        if how == "firewall":
            subnet = self._subnet()
            ruleset = (
                f"table inet {EGRESS_TABLE} {{\n"
                "  chain output {\n"
                "    type filter hook output priority filter; policy accept;\n"
                "    ct state established,related accept\n"
                '    oifname "lo" accept\n'
                f"    ip daddr {subnet} accept\n"
                "    meta nfproto ipv4 reject with icmp type admin-prohibited\n"
                "    meta nfproto ipv6 reject with icmpv6 type admin-prohibited\n"
                "  }\n"
                "  chain forward {\n"
                "    type filter hook forward priority filter; policy accept;\n"
                "    ct state established,related accept\n"
                f"    ip daddr {subnet} accept\n"
                '    oifname "eth0" reject with icmpx type admin-prohibited\n'
                "  }\n"
                "}\n"
            )
            self.exec(["nft", "-f", "-"], input=ruleset)
        elif how == "route":
            routes = self.exec("ip -4 route show default; ip -6 route show default").stdout.split("\n")
            self._saved_routes[:] = [r for r in routes if r.strip()]
            self.exec("ip -4 route flush default; ip -6 route flush default")
        else:
            raise ValueError(f"how must be 'firewall' or 'route', not {how!r}")

    def restore_egress(self) -> None:
        """Undo block_egress (either kind); a no-op when nothing is blocked."""
        self.exec(f"nft delete table inet {EGRESS_TABLE} 2>/dev/null || true")
        for route in self._saved_routes:
            family = "-6" if ":" in route.split()[2] else "-4"
            self.exec(f"ip {family} route replace {route}")
        self._saved_routes.clear()

    @contextlib.contextmanager
    def egress_blocked(self, how: str = "firewall") -> Iterator[None]:
        """block_egress() for the duration of a with block."""
        self.block_egress(how)
        try:
            yield
        finally:
            self.restore_egress()

    def _subnet(self) -> str:
        words = self.exec(["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout.split()
        return str(ipaddress.ip_interface(words[words.index("inet") + 1]).network)


def docker_create_argv(name: str, image: str, volume: str, ports: Iterable[int]) -> list[str]:
    """`docker create` for a server: the recipe for systemd as PID 1 with nested Docker, without --privileged.

    --privileged fails on some engines (SYS_RESOURCE is not in every bounding set), so:
    all capabilities but SYS_RESOURCE and SYS_TIME (the host clock is shared), no seccomp
    or AppArmor profile, and systempaths=unconfined, without which nested Docker cannot
    set its per-network sysctls. The image's e2e-init makes /proc/sys read-only again
    except /proc/sys/net, then makes the cgroup mounts writable. --cgroupns=private gives
    systemd its own cgroup tree; /run and /run/lock are tmpfs as systemd expects, and
    /var/lib/docker is a volume because overlayfs cannot sit on the container's overlay.
    """
    argv = [
        "docker", "create", "--name", name, "--hostname", name,
        "--label", f"{LABEL}=1",
        "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--cap-drop", "SYS_TIME",
        "--security-opt", "seccomp=unconfined",
        "--security-opt", "apparmor=unconfined",
        "--security-opt", "systempaths=unconfined",
        "--cgroupns", "private",
        "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "--volume", f"{volume}:/var/lib/docker",
        "--publish", "127.0.0.1::22",
    ]  # fmt: skip
    for port in ports:
        argv += ["--publish", f"127.0.0.1::{port}"]
    return [*argv, image]


def _published(name: str) -> dict[int, int]:
    """container port -> host port, from `docker inspect`."""
    raw = run(["docker", "inspect", "-f", "{{json .NetworkSettings.Ports}}", name]).stdout
    mapping: dict[int, int] = {}
    for key, bindings in (json.loads(raw) or {}).items():
        port, _, proto = key.partition("/")
        if proto == "tcp" and bindings:
            mapping[int(port)] = int(bindings[0]["HostPort"])
    return mapping


class ServerNotReadyError(RuntimeError):
    pass


class ServerFactory:
    """Starts servers from the e2e images and removes them (and their volumes) at the end."""

    def __init__(self, image: Callable[[str], str], ssh_key_path: Path) -> None:
        self.image = image  # kind -> image tag (built on first use)
        self.ssh_key_path = ssh_key_path
        self.live: list[Server] = []

    def start(
        self,
        *,
        ports: Iterable[int] = MAIL_PORTS,
        name: str | None = None,
        ready_timeout: float = READY_TIMEOUT,
        kind: str = "cloud",
    ) -> Server:
        """Start a server of ``kind`` (see server/Dockerfile), publish port 22 and `ports` on
        free 127.0.0.1 ports, wait until ready."""
        if kind not in SERVER_USERS:
            raise ValueError(f"kind must be one of {sorted(SERVER_USERS)}, not {kind!r}")
        image = self.image(kind)
        name = name or f"mailstack-e2e-{kind}-{secrets.token_hex(4)}"
        volume = f"{name}-docker"
        for what, thing in (("container", name), ("volume", volume)):
            if run(["docker", what, "inspect", thing], check=False).returncode == 0:
                raise ValueError(f"a {what} named {thing} exists already; choose another server name")
        ports = sorted(set(ports) - {22})
        run(["docker", "volume", "create", "--label", f"{LABEL}=1", volume])
        started = time.monotonic()
        try:
            # Create, copy the public key in, then start: sshd never runs without it.
            run(docker_create_argv(name, image, volume, ports))
            pub = self.ssh_key_path.with_name(self.ssh_key_path.name + ".pub")
            for user in SERVER_USERS[kind]:
                run(["docker", "cp", str(pub), f"{name}:{_home(user)}/.ssh/authorized_keys"])
            run(["docker", "start", name])
            mapping = _published(name)
            server = Server(
                name=name,
                ssh_port=mapping.pop(22),
                ssh_key_path=self.ssh_key_path,
                ports=mapping,
                volume=volume,
                kind=kind,
            )
            self._fix_key_owner(server)
            self._wait_ready(server, ready_timeout)
        except BaseException:
            self._remove(name, volume)
            raise
        server = dataclasses.replace(server, ready_seconds=round(time.monotonic() - started, 1))
        self.live.append(server)
        return server

    def remove(self, server: Server) -> None:
        """Remove a server (and its /var/lib/docker volume) now."""
        self._remove(server.name, server.volume)
        self.live = [s for s in self.live if s.name != server.name]

    def remove_all(self) -> None:
        for server in list(self.live):
            self.remove(server)

    @staticmethod
    def _remove(name: str, volume: str) -> None:
        # A throwaway server needs no clean shutdown; SIGKILL is quick, and the host's
        # runc removes the container's cgroup tree with everything nested in it.
        run(["docker", "rm", "--force", "--volumes", name], check=False, timeout=120)
        run(["docker", "volume", "rm", "--force", volume], check=False, timeout=120)

    @staticmethod
    def _fix_key_owner(server: Server) -> None:
        # docker cp keeps the host file's owner; sshd's StrictModes wants the user's own.
        for user in SERVER_USERS[server.kind]:
            keys = f"{_home(user)}/.ssh/authorized_keys"
            server.exec(["sh", "-c", f"chown {user}:{user} {keys} && chmod 0600 {keys}"], timeout=30)

    @staticmethod
    def _wait_ready(server: Server, timeout: float) -> None:
        """Wait until systemd is up (running or degraded) and sshd takes the session key."""
        deadline = time.monotonic() + timeout
        waiting_for, last = "systemd to reach running/degraded (systemctl is-system-running)", ""
        while time.monotonic() < deadline:
            state = run(["docker", "inspect", "-f", "{{.State.Status}}", server.name], check=False)
            if state.stdout.strip() != "running":
                logs = run(["docker", "logs", "--tail", "30", server.name], check=False)
                raise ServerNotReadyError(
                    f"server {server.name} stopped while booting (state {state.stdout.strip()!r}):\n"
                    f"{logs.stdout}{logs.stderr}"
                )
            if waiting_for.startswith("systemd"):
                probe = server.exec(["systemctl", "is-system-running"], check=False, timeout=10)
                last = (probe.stdout + probe.stderr).strip()
                if last in ("running", "degraded"):
                    waiting_for, last = f"sshd on 127.0.0.1:{server.ssh_port} to accept the key", ""
                    continue
            else:
                probe = server.ssh("true", check=False, timeout=15)
                if probe.returncode == 0:
                    return
                last = probe.stderr.strip()
            time.sleep(0.25)
        raise ServerNotReadyError(
            f"server {server.name} not ready after {timeout:.0f} s: waited for {waiting_for}; "
            f"last answer: {last or '(none)'}\n--- journalctl -n 50 ---\n{server.journal(50)}"
        )


def _home(user: str) -> str:
    return "/root" if user == "root" else f"/home/{user}"


def prefetch_packages() -> list[str]:
    """Packages the roles install (their `*_packages` defaults), for the image's apt cache."""
    names = set(PREFETCH_ALWAYS)
    yaml = YAML(typ="safe")
    for defaults in sorted(ROLES_DIR.glob("*/defaults/main.yml")):
        data = yaml.load(defaults.read_text())
        if not isinstance(data, dict):
            continue
        for key, value in data.items():
            if str(key).endswith("_packages") and isinstance(value, list):
                names.update(
                    v for v in value if isinstance(v, str) and re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", v)
                )
    return sorted(names)


def image_tag(base_id: str, packages: Sequence[str], kind: str = "cloud") -> str:
    """mailstack/e2e-server:<kind>-<digest of the server/ directory, the base image and the
    package list>."""
    digest = hashlib.sha256(f"{base_id}\0{' '.join(packages)}\0".encode())
    for path in sorted(p for p in SERVER_DIR.rglob("*") if p.is_file()):
        digest.update(
            f"{path.relative_to(SERVER_DIR).as_posix()}\0{path.stat().st_mode & 0o111:o}\0".encode()
        )
        digest.update(path.read_bytes() + b"\0")
    return f"{IMAGE_REPO}:{kind}-{digest.hexdigest()[:16]}"


def build_server_image(base: str, log: Path, kind: str = "cloud") -> str:
    """Build the server image of ``kind`` (a target of server/Dockerfile) unless an image with
    the same digest tag exists; return its tag."""
    base_id = run(["docker", "image", "inspect", "-f", "{{.Id}}", base]).stdout.strip()
    packages = prefetch_packages()
    tag = image_tag(base_id, packages, kind)
    if run(["docker", "image", "inspect", tag], check=False).returncode == 0:
        return tag
    argv = [
        "docker", "build", "--tag", tag, "--label", f"{LABEL}=1", "--target", kind,
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", f"PREFETCH_PACKAGES={' '.join(packages)}",
        str(SERVER_DIR),
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("w") as handle:
        result = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, check=False, timeout=1800)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        pytest.fail(f"building the e2e server image failed (log: {log}):\n{tail}", pytrace=False)
    print(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag
