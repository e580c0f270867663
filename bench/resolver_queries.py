"""DNS queries per inbound message, cold and warm, and the resolver's memory, in the test world.

    .venv/bin/python bench/resolver_queries.py [--messages 20]

Starts the test world (tests/world: a signed zone, two online sites A and B), sends one
message from A to B with B's resolver cache empty (cold), then ``--messages`` more (warm),
and reads B's Unbound statistics (`unbound-control stats_noreset`) around each: queries the
stack asked (total.num.queries), answered from cache, and sent on to the world's DNS
(total.num.cachemiss). Also: the world's start time, both sites' `up` time, and each
resolver container's memory. Prints a table and writes bench/results/resolver_queries.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailstack import engine  # noqa: E402
from tests.integration.stack import make_message, token  # noqa: E402
from tests.world.net import taken_networks  # noqa: E402
from tests.world.sites import WorldStack, bring_up, write_site  # noqa: E402
from tests.world.world import World  # noqa: E402

STATS = ("total.num.queries", "total.num.cachehits", "total.num.cachemiss")


def stats(site: WorldStack) -> dict[str, int]:
    done = site.exec("resolver", "unbound-control", "-c", "/etc/unbound/unbound.conf", "stats_noreset")
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return {name: int(float(values.get(name, "0"))) for name in STATS}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in STATS}


def memory_mib(site: WorldStack) -> float:
    container = docker.from_env().containers.get(engine.container_ids(site.project)["resolver"])
    usage = container.stats(stream=False)["memory_stats"]
    cache = usage.get("stats", {}).get("inactive_file", 0)
    return round((int(usage["usage"]) - int(cache)) / 2**20, 1)


def deliver(a: WorldStack, b: WorldStack, labels: list[str]) -> None:
    """One submission session (the site's AUTH rate limit counts logins), then every message read."""
    sender, rcpt = a.address("anna"), b.address("berta")
    subjects = [token(label) for label in labels]
    with a.submission(sender) as smtp:
        for subject in subjects:
            smtp.send_message(make_message(sender, rcpt, subject, f"Benchmark message {subject}.\n" * 20))
    for subject in subjects:
        b.wait_for_message(rcpt, subject, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args()
    result: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "messages": args.messages}
    world = World.start()
    result["world_start_s"] = round(world.started_in, 1)
    sites: list[WorldStack] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base, used = Path(tmp), taken_networks(docker.from_env())
            a = write_site(world, base / "a", "a.test", ["anna"], taken=used)
            b = write_site(world, base / "b", "b.test", ["berta"], taken=used)
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=2) as pool:
                sites = list(pool.map(lambda s: bring_up(world, s), (a, b)))
            result["sites_up_s"] = round(time.monotonic() - started, 1)
            for s in sites:
                if s.up_error:
                    raise SystemExit(f"{s.site.site}: {s.up_error}")
            a, b = sites
            subprocess.run(["sleep", "5"], check=True)  # the healthchecks' own lookups settle
            cold_before = stats(b)
            deliver(a, b, ["cold"])
            cold = delta(cold_before, stats(b))
            warm_before = stats(b)
            deliver(a, b, [f"warm-{i}" for i in range(args.messages)])
            warm = delta(warm_before, stats(b))
            result["cold"] = cold
            result["warm_per_message"] = {k: round(v / args.messages, 2) for k, v in warm.items()}
            result["resolver_memory_mib"] = {"A": memory_mib(a), "B": memory_mib(b)}
    finally:
        for s in sites:
            world.detach_site(s.site.hostname)
            engine.down(s.project, volumes=True)
        world.stop()
    out = ROOT / "bench" / "results" / "resolver_queries.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
