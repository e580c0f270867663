"""Fuzzed site files (issue #16): never a traceback; exit 1 with field paths, or a valid site
that renders. 10 000 files here (MAILSTACK_FUZZ_EXAMPLES to change it), 100 000 in
bench/fuzz_sites.py. Derandomized: CI sees the same files on every run (the bench draws new
ones), and no example database is written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.fuzz_sites import fuzz

EXAMPLES = int(os.environ.get("MAILSTACK_FUZZ_EXAMPLES", "10000"))
# RAM-backed when there is one: the site file is written and read back for every example.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


def test_fuzzed_site_files_are_refused_cleanly_or_render() -> None:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as workdir:
        outcomes = fuzz(Path(workdir), EXAMPLES, plans=100, full_renders=2)
    assert sum(outcomes.values()) >= EXAMPLES
    # The strategy is no use if it only ever writes invalid files, or only valid ones.
    assert outcomes["valid"] >= EXAMPLES // 50
    assert outcomes["refused"] >= EXAMPLES // 2
