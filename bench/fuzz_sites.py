"""Fuzzed site files at scale: the unit test's oracle (tests/fuzz_sites.py) on 100 000 files.

    .venv/bin/python bench/fuzz_sites.py [--examples 100000] [--seed N] [--plans N] [--full-renders N]

Draws new files on every run (``--seed`` repeats one); a failure ends the run with Hypothesis's
smallest failing file. Prints the time, files per second and how many were valid or refused,
and writes bench/results/fuzz_sites.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzz_sites import fuzz  # noqa: E402
from tests.unit.test_fuzz_sites import SCRATCH  # noqa: E402


def share(examples: int, plans: int, full_renders: int, seed: int) -> dict[str, int]:
    """One process's part: its own scratch directory and seed."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as workdir:
        return dict(fuzz(Path(workdir), examples, plans=plans, full_renders=full_renders, seed=seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--plans", type=int, default=None, help="valid sites also rendered in memory [default: all]"
    )
    parser.add_argument("--full-renders", type=int, default=10, help="valid sites through `mailstack render`")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes [default: one per core]"
    )
    args = parser.parse_args()
    chosen = secrets.randbelow(2**32) if args.seed is None else args.seed
    print(f"{args.examples} fuzzed site files, seed {chosen} (+ one per further process)", flush=True)
    started = time.perf_counter()
    plans = args.examples if args.plans is None else args.plans
    jobs = max(1, min(args.jobs, args.examples))
    # Each process draws its own files (seed, seed + 1, …): a failure names its seed.
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        parts = [
            pool.submit(share, args.examples // jobs + (i < args.examples % jobs), plans // jobs,
                        args.full_renders if i == 0 else 0, chosen + i)
            for i in range(jobs)
        ]  # fmt: skip
        outcomes: Counter[str] = Counter()
        for part in parts:
            outcomes.update(part.result())
    seconds = time.perf_counter() - started
    total = sum(outcomes.values())
    result = {
        "seed": chosen,
        "jobs": jobs,
        "examples": total,
        "valid": outcomes["valid"],
        "refused": outcomes["refused"],
        "seconds": round(seconds, 1),
        "examples_per_second": round(total / seconds, 1),
    }
    print(
        f"{total} files in {seconds:.0f} s ({total / seconds:.0f}/s): "
        f"{outcomes['valid']} valid, {outcomes['refused']} refused"
    )
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "fuzz_sites.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
