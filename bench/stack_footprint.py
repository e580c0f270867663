"""Startup time and idle memory of the stack, with and without the container confinement.

    .venv/bin/python bench/stack_footprint.py [--rounds 2] [--idle 60]

Renders a copy of examples/demo.yaml under a site id and ports of its own, then for each
variant and round: `docker compose up -d --wait` on fresh volumes (images already built),
timed until every service is healthy; after ``--idle`` seconds, the memory each container
uses (`docker stats`). The "unconfined" variant is the same compose file without cap_drop,
no-new-privileges, read_only, mem_limit and pids_limit: the stack as it was before #5.
Prints a table and writes bench/results/stack_footprint.json.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAILSTACK = Path(sys.executable).with_name("mailstack")
CONFINEMENT = re.compile(
    r"^\s*(cap_drop: \[ALL\]|security_opt: \[\"no-new-privileges:true\"\]|read_only: true|"
    r"mem_limit: \S+|pids_limit: \d+)\n",
    re.M,
)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def demo_text(site_id: str) -> str:
    """examples/demo.yaml as site ``site_id`` on free ports of this machine."""
    text = (ROOT / "examples" / "demo.yaml").read_text()
    text = re.sub(r"^site: \S+$", f"site: {site_id}", text, flags=re.M)
    ports = iter(free_ports(16))
    return re.sub(r"^(    [a-z0-9]+): \d+$", lambda m: f"{m.group(1)}: {next(ports)}", text, flags=re.M)


def site_copy(directory: Path) -> Path:
    target = directory / "site.yaml"
    target.write_text(demo_text(f"bench-{secrets.token_hex(3)}"))
    return target


def loaded_site(directory: Path, site_id: str, *, connections: int, mailboxes: str, extra: str = "") -> Path:
    """The demo (demo_text) for throughput runs: the client limits lifted, ``mailboxes`` (YAML
    list items) before the demo's own, ``extra`` (top-level YAML) at the end."""
    text = demo_text(site_id)
    limits = f"limits:\n  clients:\n    connections: {connections}\n    connection_rate: 100000\n"
    limits += "    message_rate: 100000\n    auth_rate: 100000\n"
    text = text.replace("limits:\n", limits, 1)
    text = text.replace("mailboxes:\n", "mailboxes:\n" + mailboxes, 1) + extra
    target = directory / "site.yaml"
    target.write_text(text)
    return target


def compose(project: str, compose_file: Path, *args: str, timeout: float = 600) -> None:
    command = ["docker", "compose", "--project-name", project, "--file", str(compose_file), *args]
    run = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {run.stderr[-2000:]}")


def memory(project: str) -> dict[str, float]:
    """MiB in use per service, from the container's cgroup (v1 or v2): `docker stats` of a
    newer client against Debian's 20.10 engine reports 0 B."""
    listing = subprocess.run(
        [
            "docker",
            "ps",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Names}}",
            "--filter",
            f"label=com.docker.compose.project={project}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    usage: dict[str, float] = {}
    for line in listing.splitlines():
        cid, name = line.split()
        service = name.removeprefix(project + "-").rsplit("-", 1)[0]
        for path in (
            Path(f"/sys/fs/cgroup/memory/docker/{cid}/memory.usage_in_bytes"),
            Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.current"),
        ):
            if path.exists():
                usage[service] = round(int(path.read_text()) / 2**20, 1)
                break
    return usage


def measure(project: str, compose_file: Path, idle: float) -> dict[str, object]:
    compose(project, compose_file, "down", "--volumes")
    started = time.monotonic()
    compose(project, compose_file, "up", "-d", "--wait", "--wait-timeout", "300")
    healthy = time.monotonic() - started
    time.sleep(idle)
    used = memory(project)
    compose(project, compose_file, "down", "--volumes")
    return {
        "healthy_after_s": round(healthy, 1),
        "idle_mib": used,
        "idle_total_mib": round(sum(used.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    results: dict[str, list[dict[str, object]]] = {"confined": [], "unconfined": []}
    with tempfile.TemporaryDirectory(prefix="mailstack-bench-") as scratch:
        site = site_copy(Path(scratch))
        out = Path(scratch) / "build"
        subprocess.run(
            [str(MAILSTACK), "render", str(site), "-o", str(out), "--state", str(Path(scratch) / "state")],
            check=True,
            capture_output=True,
        )
        confined = out / "compose.yaml"
        unconfined = out / "compose.unconfined.yaml"
        unconfined.write_text(CONFINEMENT.sub("", confined.read_text()))
        project = "mailstack-" + re.search(r"^site: (\S+)$", site.read_text(), re.M).group(1)  # type: ignore[union-attr]
        try:
            for round_ in range(args.rounds):
                for variant, compose_file in (("confined", confined), ("unconfined", unconfined)):
                    result = measure(project, compose_file, args.idle)
                    results[variant].append(result)
                    print(f"round {round_ + 1} {variant:<10} {json.dumps(result)}", flush=True)
        finally:
            compose(project, confined, "down", "--volumes")
    target = ROOT / "bench" / "results" / "stack_footprint.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n")
    for variant, rounds in results.items():
        startup = [r["healthy_after_s"] for r in rounds]
        total = [r["idle_total_mib"] for r in rounds]
        print(f"{variant:<10} healthy after {startup} s; idle memory {total} MiB")


if __name__ == "__main__":
    main()
