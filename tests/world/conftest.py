"""The session's test world (tests/world/world.py), stopped with everything it made even
when a test or the start fails; its start time is printed in the run's summary.

MAILSTACK_WORLD_KEEP=1 leaves it running at the end (a later run's sweep removes it once
this pytest is gone).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

from tests.world.world import World

NOTES: list[str] = []
ACTIVE: list[World] = []


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    started = World.start()
    NOTES.append(
        f"world {started.name} started in {started.started_in:.1f} s: {started.subnet}, {started.subnet6}, "
        f"DNS {started.dns.address}, forger {started.forger.address}"
    )
    ACTIVE.append(started)
    try:
        yield started
    finally:
        ACTIVE.remove(started)
        if os.environ.get("MAILSTACK_WORLD_KEEP") != "1":
            started.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    """A failing world test carries the world's last log lines."""
    report = yield
    if isinstance(report, pytest.TestReport) and report.failed and report.when in ("setup", "call"):
        for active in ACTIVE:
            report.sections.append((f"{active.name} logs", active.logs(40)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if NOTES:
        terminalreporter.section("mailstack world notes")
        for note in NOTES:
            terminalreporter.line(note)
