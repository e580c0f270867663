"""A site's hosts seen from here: the SSH shell that runs commands on one (or here), and
the directory layout `mailstack deploy` gives each host. Shared by deploy, check, audit and
tls, so that they reach a host and find its files the same way."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailstack.errors import UserError
from mailstack.site.models import Host

COMMAND_TIMEOUT = 300.0
# The layout on every host (playbooks: mailstack_stack_root); the rendered compose project
# refers to the state relative to it.
HOST_ROOT = Path("/opt/mailstack")


class RemoteError(UserError):
    """A command or an SSH connection to a host failed."""


@dataclass(frozen=True)
class HostPaths:
    """Where a site lives on each of its hosts."""

    site: str

    @property
    def root(self) -> Path:
        return HOST_ROOT / self.site

    @property
    def live(self) -> Path:
        """The rendered release the stack runs from."""
        return self.root / "live"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def compose_file(self) -> Path:
        return self.live / "compose.yaml"


# playbooks/ansible.cfg's ssh_args, for when ANSIBLE_SSH_ARGS does not replace them.
ANSIBLE_CFG_SSH_ARGS = "-o StrictHostKeyChecking=accept-new"


def ansible_ssh_options() -> list[str]:
    """The options `mailstack deploy` gives ssh (ANSIBLE_SSH_ARGS, else ansible.cfg's), so
    that the host key policy is the same; connection sharing and compression are left out."""
    words = shlex.split(os.environ.get("ANSIBLE_SSH_ARGS", ANSIBLE_CFG_SSH_ARGS))
    options: list[str] = []
    pairs = iter(words)
    for word in pairs:
        if word == "-o":
            value = next(pairs, "")
            if not value.lower().startswith("control"):
                options += ["-o", value]
        elif word != "-C":
            options.append(word)
    return options


@dataclass(frozen=True)
class Shell:
    """Runs argv lists locally, or on ``host`` through ssh (key auth, no prompts)."""

    host: Host | None = None
    site_dir: Path = Path()  # a relative ssh_key is relative to the site file

    def ssh_base(self) -> list[str]:
        host = self.host
        if host is None:
            raise RemoteError("a local shell has no host to reach over SSH")
        base = ["ssh", *ansible_ssh_options(), "-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
        base += ["-p", str(host.ssh_port)]
        if host.ssh_key:
            base += ["-i", str(self.site_dir / Path(host.ssh_key).expanduser())]
        return [*base, f"{host.ssh_user}@{host.address}"]

    def run(self, *argv: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        if self.host is None:
            command = list(argv)
        else:
            # sudo only when the login is not root; -n: fail rather than ask for a password.
            sudo = [] if self.host.ssh_user == "root" else ["sudo", "-n"]
            command = [*self.ssh_base(), "--", shlex.join([*sudo, *argv])]
        try:
            return subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
        except FileNotFoundError as exc:
            raise RemoteError(f"{argv[0] if self.host is None else 'ssh'} is not installed") from exc

    def output(self, *argv: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """stdout of a command that must succeed."""
        run = self.run(*argv, timeout=timeout)
        if run.returncode != 0:
            where = "" if self.host is None else f" on {self.host.name}"
            raise RemoteError(
                f"`{shlex.join(argv)}`{where} failed (exit {run.returncode}): "
                f"{(run.stderr or run.stdout).strip()[-500:]}"
            )
        return run.stdout

    @contextmanager
    def forwards(self, targets: dict[str, tuple[str, int]]) -> Iterator[dict[str, int]]:
        """SSH local forwards to ``targets`` (name → address:port as the host sees it); yields
        name → local port on 127.0.0.1. Locally, the targets are returned as they are."""
        if self.host is None:
            yield {name: port for name, (_, port) in targets.items()}
            return
        local = dict(zip(targets, free_local_ports(len(targets)), strict=True))
        options = ["-N", "-o", "ExitOnForwardFailure=yes"]
        for name, (address, port) in targets.items():
            options += ["-L", f"127.0.0.1:{local[name]}:{address}:{port}"]
        base = self.ssh_base()
        tunnel = subprocess.Popen(
            [*base[:-1], *options, base[-1]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if not wait_listening(list(local.values()), timeout=20, alive=lambda: tunnel.poll() is None):
                tunnel.kill()
                error = tunnel.stderr.read() if tunnel.stderr else ""
                raise RemoteError(f"the SSH port forwards to {self.host.name} did not open: {error.strip()}")
            yield local
        finally:
            tunnel.terminate()
            try:
                tunnel.wait(timeout=10)
            except subprocess.TimeoutExpired:
                tunnel.kill()


def free_local_ports(count: int) -> list[int]:
    """Ports nobody listens on now on 127.0.0.1 (held together, so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def is_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_listening(ports: list[int], *, timeout: float, alive: Callable[[], bool]) -> bool:
    """True once every port on 127.0.0.1 accepts connections; False on timeout or death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if all(is_open("127.0.0.1", port, 0.5) for port in ports):
            return True
        time.sleep(0.2)
    return False
