"""The groupware's cost: `up` time, time until the first webmail login works, idle memory.

    .venv/bin/python bench/groupware_footprint.py [--rounds 2] [--idle 60]

For each round: a copy of examples/office.yaml (groupware with ActiveSync) under a site id and
ports of its own on 127.0.0.1, `mailstack up` on fresh volumes (images already built), timed;
then SOGo's login (POST /SOGo/connect) is tried until it answers 200, timed from the start of
`up`; after ``--idle`` seconds, each container's memory from its cgroup (page cache
included). Prints the medians and writes bench/results/groupware_footprint.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailstack import engine  # noqa: E402
from tests.integration.conftest import site_copy, start_stack  # noqa: E402
from tests.integration.office import OFFICE, USERS  # noqa: E402
from tests.integration.test_groupware import login, memory  # noqa: E402

LOGIN_TIMEOUT = 300.0


@dataclass
class Round:
    up_s: float
    first_login_s: float
    memory_mib: dict[str, float]


def one_round(idle: float) -> Round:
    with tempfile.TemporaryDirectory(prefix="mailstack-bench-gw-") as tmp:
        site_path = Path(tmp) / "site.yaml"
        site_copy(OFFICE, site_path, bind=["127.0.0.1"])
        started = time.monotonic()
        stack = start_stack(site_path, timeout=600)
        try:
            if stack.up_error is not None:
                raise SystemExit(f"up failed: {stack.up_error}")
            up_seconds = time.monotonic() - started
            user, password = USERS["SHA512-CRYPT"]
            while login(stack, user, password).status_code != 200:
                if time.monotonic() - started > LOGIN_TIMEOUT:
                    raise SystemExit(f"no working SOGo login within {LOGIN_TIMEOUT:.0f}s")
                time.sleep(1)
            login_seconds = time.monotonic() - started
            time.sleep(idle)
            mib = memory(stack.project.name)
        finally:
            engine.down(stack.project, volumes=True)
    return Round(round(up_seconds, 1), round(login_seconds, 1), mib)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    rounds = [one_round(args.idle) for _ in range(args.rounds)]
    services = sorted({s for r in rounds for s in r.memory_mib})
    mib = {s: median([r.memory_mib.get(s, 0.0) for r in rounds]) for s in services}
    mib["whole stack"] = round(sum(mib.values()), 1)
    summary = Round(median([r.up_s for r in rounds]), median([r.first_login_s for r in rounds]), mib)
    out = ROOT / "bench" / "results" / "groupware_footprint.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"rounds": [asdict(r) for r in rounds], "median": asdict(summary), "idle_s": args.idle}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"up {summary.up_s} s, first webmail login {summary.first_login_s} s after `up` began")
    for name, value in mib.items():
        print(f"  {name:12} {value:7.1f} MiB")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
