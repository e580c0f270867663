"""Container confinement, read from `docker inspect` of the site's compose project."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from mailstack import services
from mailstack.audit.report import Item
from mailstack.errors import UserError
from mailstack.remote import Shell
from mailstack.service_types import Service
from mailstack.site.models import Site

SRC_CAPS = "CIS Docker Benchmark: restrict Linux kernel capabilities within containers"
SRC_NNP = "CIS Docker Benchmark: restrict containers from acquiring additional privileges"
SRC_RO = "CIS Docker Benchmark: mount the container's root filesystem as read only"
SRC_LIMITS = "CIS Docker Benchmark: limit memory usage and the PIDs cgroup"
SRC_HEALTH = "CIS Docker Benchmark: container health is checked at runtime"
SRC_SECRETS = "CIS Docker Benchmark: secrets not in images or environment; compose secrets"
SRC_PRIVILEGED = "CIS Docker Benchmark: do not use privileged containers"
SRC_INTERNAL = "CIS Docker Benchmark: restrict network traffic between containers; issue #5"
SRC_USER = "CIS Docker Benchmark: create a user for the container"
SRC_RUNNING = "Issue #14: every container of the site is audited, the optional groupware ones too"
# User names that are root all the same.
ROOT_USERS = ("", "0", "root", "0:0", "root:root")


class AuditError(UserError):
    """The site is not in a state that can be audited."""


def inspect_project(shell: Shell, project: str) -> dict[str, dict[str, Any]]:
    """service → its `docker inspect` object, for the running containers of ``project``."""
    ids = shell.output(
        "docker", "ps", "--quiet", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}"
    ).split()
    if not ids:
        raise AuditError(f"no running containers of {project}: bring the site up first")
    containers = json.loads(shell.output("docker", "inspect", *ids))
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in containers}


def internal_networks(shell: Shell, names: set[str]) -> dict[str, bool]:
    if not names:
        return {}
    networks = json.loads(shell.output("docker", "network", "inspect", *sorted(names)))
    return {n["Name"]: bool(n.get("Internal")) for n in networks}


def state_secret_values(state_dir: Path) -> list[str]:
    """Every secret the state holds, as strings that must never show in an environment:
    the internal passwords, and each private key's base64 lines."""
    values = [p.read_text().strip() for p in sorted((state_dir / "secrets").glob("*")) if p.is_file()]
    for key in [*sorted(state_dir.glob("dkim/*/*.pem")), *sorted(state_dir.glob("tls/**/*.key"))]:
        values += [line for line in key.read_text().splitlines() if len(line) >= 40 and "-----" not in line]
    return [value for value in values if value and not value.startswith("$ANSIBLE_VAULT")]


def container_items(
    shell: Shell, containers: dict[str, dict[str, Any]], state_dir: Path, site: Site
) -> list[Item]:
    secrets = state_secret_values(state_dir)
    network_names = {n for c in containers.values() for n in (c["NetworkSettings"]["Networks"] or {})}
    internal = internal_networks(shell, network_names)
    items = _running_items(containers, site)
    for service, c in sorted(containers.items()):
        items += _service_items(service, c, secrets, site)
        if _is_back_end(service, c):
            items.append(_back_end_item(shell, service, c, internal))
    return items


def _running_items(containers: dict[str, dict[str, Any]], site: Site) -> list[Item]:
    """Each service the site has runs: one that is not would drop out of the audit unseen
    (the optional ones, such as the groupware's, as much as the mail path's)."""
    return [
        Item.check(
            f"container.{s.name}.running",
            f"{s.name}: running, so that its confinement is audited",
            s.name in containers,
            "running" if s.name in containers else "no running container of the service",
            SRC_RUNNING,
        )
        for s in services.present(site)
    ]


def _documented(service: str) -> Service | None:
    """The catalogue's entry: what the service is meant to get (None for a stranger)."""
    return next((s for s in services.CATALOGUE if s.name == service), None)


def _is_back_end(service: str, c: dict[str, Any]) -> bool:
    """A service that publishes nothing and has its own network namespace."""
    documented = _documented(service)
    if documented is not None:
        return not documented.ports and not documented.host_network
    ports = c["NetworkSettings"].get("Ports") or {}
    return not any(ports.values()) and c["HostConfig"].get("NetworkMode") != "host"


def _bytes(size: str) -> int:
    """A compose mem_limit ("512m", "1g") in bytes."""
    return int(size[:-1]) * {"k": 2**10, "m": 2**20, "g": 2**30}[size[-1]]


def _back_end_item(shell: Shell, service: str, c: dict[str, Any], internal: dict[str, bool]) -> Item:
    """A service that publishes nothing must be reachable on internal networks only: it is on
    none other, or it listens on none of its addresses there (it may sit on the front network
    to learn something, as the guard does its gateway)."""
    attached = c["NetworkSettings"]["Networks"] or {}
    outside = {
        name: net.get("IPAddress", "") for name, net in attached.items() if not internal.get(name, False)
    }
    item_id, title = (
        f"container.{service}.internal_only",
        f"{service}: a back end, reachable on internal networks only",
    )
    if not outside:
        return Item.check(item_id, title, bool(attached), f"networks {sorted(attached)}", SRC_INTERNAL)
    listeners = listening_addresses(shell, c["Id"])
    exposed = sorted(a for a in listeners if a in WILDCARDS or a in outside.values())
    return Item.check(
        item_id,
        title,
        not exposed,
        f"also on {sorted(outside)}; listens on {sorted(listeners) or 'nothing'}"
        + (f"; reachable there: {exposed}" if exposed else ", none of them there"),
        SRC_INTERNAL,
    )


WILDCARDS = ("0.0.0.0", "::")  # noqa: S104 - addresses to look for, not to bind


def listening_addresses(shell: Shell, container: str) -> set[str]:
    """The addresses a container's TCP sockets listen on (from /proc/net/tcp and tcp6)."""
    text = shell.output("docker", "exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6")
    addresses = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
            addresses.add(_proc_address(fields[1].split(":")[0]))
    return addresses


def _proc_address(hex_address: str) -> str:
    """/proc/net/tcp's address: IPv4 as one little-endian word, IPv6 as four."""
    raw = bytes.fromhex(hex_address)
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    return str(ipaddress.ip_address(b"".join(words)))


def _service_items(service: str, c: dict[str, Any], secrets: list[str], site: Site) -> list[Item]:
    host, config = c["HostConfig"], c["Config"]
    dropped = [cap.removeprefix("CAP_") for cap in host.get("CapDrop") or []]
    added = sorted(cap.removeprefix("CAP_") for cap in host.get("CapAdd") or [])
    options = host.get("SecurityOpt") or []
    health = (config.get("Healthcheck") or {}).get("Test") or []
    env = "\n".join(config.get("Env") or [])
    leaked = sum(1 for secret in secrets if secret in env)
    memory, pids = host.get("Memory") or 0, host.get("PidsLimit") or 0
    documented = _documented(service)
    # No capability and no limit beyond the catalogue's (any limit, for a stranger).
    caps = set(documented.caps) if documented else set(added)
    # The site's limit where it depends on the site (SOGo's grows with its workers).
    max_memory, max_pids = (
        (_bytes(documented.mem_limit(site)), documented.pids) if documented else (memory, pids)
    )
    prefix = f"container.{service}"
    items = [
        Item.check(
            f"{prefix}.capabilities",
            f"{service}: every capability dropped, only its documented minimum added back",
            "ALL" in dropped and set(added) <= caps,
            f"cap_drop {dropped or 'none'}; cap_add {added or 'none'}; documented {sorted(caps) or 'none'}",
            SRC_CAPS,
        ),
        Item.check(
            f"{prefix}.no_new_privileges",
            f"{service}: no-new-privileges",
            "no-new-privileges:true" in options or "no-new-privileges" in options,
            f"security options {options or 'none'}",
            SRC_NNP,
        ),
        Item.check(
            f"{prefix}.not_privileged",
            f"{service}: not privileged",
            host.get("Privileged") is False,
            f"privileged: {host.get('Privileged')}",
            SRC_PRIVILEGED,
        ),
        Item.check(
            f"{prefix}.read_only",
            f"{service}: read-only root filesystem",
            host.get("ReadonlyRootfs") is True,
            f"read-only rootfs: {host.get('ReadonlyRootfs')}",
            SRC_RO,
        ),
        Item.check(
            f"{prefix}.limits",
            f"{service}: memory and pids limits",
            0 < memory <= max_memory and 0 < pids <= max_pids,
            (f"memory {memory // 2**20} MiB, pids {pids}" if memory else f"memory unlimited, pids {pids}")
            + (f"; documented at most {max_memory // 2**20} MiB, {max_pids}" if documented else ""),
            SRC_LIMITS,
        ),
        Item.check(
            f"{prefix}.healthcheck",
            f"{service}: a healthcheck",
            bool(health) and health != ["NONE"],
            " ".join(health) if health else "none",
            SRC_HEALTH,
        ),
        Item.check(
            f"{prefix}.environment",
            f"{service}: no secret in the environment",
            leaked == 0,
            f"{leaked} of the state's {len(secrets)} secrets found in its environment",
            SRC_SECRETS,
        ),
    ]
    if documented is not None and documented.user not in ROOT_USERS:
        user = config.get("User") or ""
        items.append(
            Item.check(
                f"{prefix}.user",
                f"{service}: runs as {documented.user}, not root",
                user == documented.user,
                f"user {user or 'the image default (root)'}; documented {documented.user}",
                SRC_USER,
            )
        )
    return items


def published_targets(
    containers: dict[str, dict[str, Any]], ports: dict[str, int]
) -> dict[str, tuple[str, int]]:
    """protocol → (container address, container port) behind each published site port, as
    the Docker host reaches them: where SSH forwards for a remote audit lead."""
    targets: dict[str, tuple[str, int]] = {}
    for c in containers.values():
        settings = c["NetworkSettings"]
        address = next(
            (n["IPAddress"] for n in (settings["Networks"] or {}).values() if n.get("IPAddress")), ""
        )
        for container_port, bindings in (settings.get("Ports") or {}).items():
            for binding in bindings or []:
                for protocol, port in ports.items():
                    if binding.get("HostPort") == str(port) and address:
                        targets[protocol] = (address, int(container_port.split("/")[0]))
    missing = sorted(set(ports) - set(targets))
    if missing:
        raise AuditError(f"no running container publishes {', '.join(missing)}")
    return targets
