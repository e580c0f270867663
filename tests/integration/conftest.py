"""One stack per session: render the fixture site, bring it up, tear it down with its volumes.

Environment switches, for working on the suite itself:
  MAILSTACK_ITEST_DIR=/some/dir  keep the site copy, state and output there instead of a tmp dir
  MAILSTACK_ITEST_KEEP=1         leave the stack running at the end (tear down by hand with
                                 `mailstack down DIR/site.yaml --volumes`)
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from mailstack import engine
from mailstack.errors import UserError
from mailstack.site.loader import load_site
from mailstack.site.models import Site
from tests.integration.netns import ClientNets
from tests.integration.office import OFFICE, OfficeStack
from tests.integration.office import UP_TIMEOUT as OFFICE_UP_TIMEOUT
from tests.integration.ports import free_ports
from tests.integration.stack import ACTIVE, NOTES, SITE_FIXTURE, Stack, wait_until

UP_TIMEOUT = 240.0
# Modules that must run first (the health check) and last (they stop, restart and re-render).
FIRST = ("test_up.py",)
LAST = ("test_faults.py", "test_lifecycle.py")
# The modules on the office stack (session-scoped `office`) run after all others, together:
# a session fixture lasts until the session ends, so the office stack is up only for them.
OFFICE_MODULES = ("test_groupware.py", "test_webmail.py")
# Each phase's report of a test (setup, call, teardown), for fixtures that act on a failure.
PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if name in FIRST:
            return 0
        if name in LAST:
            return 2 + LAST.index(name)
        if name in OFFICE_MODULES:
            return 2 + len(LAST) + OFFICE_MODULES.index(name)
        return 1

    items.sort(key=rank)  # stable: the order inside each module is kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    """On a failing integration test, attach every service's last log lines to the report."""
    report = yield
    if isinstance(report, pytest.TestReport):
        item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    if (
        isinstance(report, pytest.TestReport)
        and report.failed
        and report.when in ("setup", "call")
        and item.get_closest_marker("integration")
    ):
        for stack in ACTIVE:
            report.sections.append((f"{stack.project.name} service logs", stack.all_logs(40)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if NOTES:
        terminalreporter.section("mailstack integration notes")
        for note in NOTES:
            terminalreporter.line(note)


def say(text: str) -> None:
    print(f"[mailstack up] {text}", file=sys.stderr)


def start_stack(site_path: Path, *, timeout: float = UP_TIMEOUT, kind: type[Stack] = Stack) -> Stack:
    """Render and bring up the site; an up that fails is recorded, not raised, so every test
    still runs against whatever came up and reports its own precise failure."""
    site = load_site(site_path)
    base = site_path.parent
    project = engine.Project(site=site, out_dir=base / "build", state_dir=base / "state")
    stack = kind(site_path=site_path, project=project)
    started = time.monotonic()
    try:
        try:
            stack.up_result = engine.up(project, timeout=timeout, say=say)
        except engine.EngineError as exc:
            lingering = [p for p in site.network.ports.published().values() if only_time_wait(site, p)]
            if "already in use" not in str(exc) or not lingering:
                raise
            # engine.check_ports binds without SO_REUSEADDR, so closed connections of an
            # earlier run (TIME-WAIT, up to 60 s) count as "in use": wait them out, once.
            NOTES.append(f"session up refused by TIME-WAIT sockets on ports {lingering} ({exc}); waited")
            wait_until(
                f"TIME-WAIT connections on ports {lingering} to expire",
                lambda: not any(only_time_wait(site, p) for p in lingering),
                timeout=75,
                interval=2,
            )
            stack.up_result = engine.up(project, timeout=timeout, say=say)
    except UserError as exc:
        stack.up_error = f"{type(exc).__name__}: {exc}"
        say(f"up failed after {time.monotonic() - started:.0f}s: {stack.up_error}")
    return stack


def only_time_wait(site: Site, port: int) -> bool:
    """Nobody listens on the port, but a plain bind() still fails (closed connections linger)."""
    address = site.network.bind[0]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:
        try:
            plain.bind((address, port))
            return False
        except OSError:
            pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reuse:
        reuse.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            reuse.bind((address, port))
            return True
        except OSError:
            return False


def site_copy(source: Path, target: Path, *, bind: list[str], unique: bool = True) -> None:
    """The fixture site, listening on ``bind``; with ``unique``, under an id and ports of its own."""
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)  # the fixture's own layout; tests edit it as text
    data = yaml.load(source.read_text(encoding="utf-8"))
    data["network"]["bind"] = bind
    if unique:
        data["site"] = f"{data['site']}-{secrets.token_hex(3)}"
        ports = data["network"]["ports"]
        for name, port in zip(list(ports), free_ports(len(ports)), strict=True):
            ports[name] = port
    with target.open("w", encoding="utf-8") as handle:
        yaml.dump(data, handle)


@pytest.fixture(scope="session")
def client_nets() -> Iterator[ClientNets]:
    """Two network namespaces with addresses of their own (see netns.py), for the tests that
    need a client that is not 127.0.0.1 (test_bans). The session stack also listens on the
    host side of the first one."""
    nets = ClientNets.create()
    try:
        yield nets
    finally:
        if os.environ.get("MAILSTACK_ITEST_KEEP") != "1":
            nets.remove()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, client_nets: ClientNets) -> Iterator[Stack]:
    fixed = os.environ.get("MAILSTACK_ITEST_DIR")
    keep = os.environ.get("MAILSTACK_ITEST_KEEP") == "1"
    base = Path(fixed) if fixed else tmp_path_factory.mktemp("itest")
    base.mkdir(parents=True, exist_ok=True)
    site_path = base / "site.yaml"
    # 127.0.0.1 first (every test's default), then the address the namespace clients dial.
    bind = ["127.0.0.1", client_nets.a.host_ip]
    # Without MAILSTACK_ITEST_DIR: a site id and ports of its own, so that two runs on one
    # engine never meet.
    site_copy(SITE_FIXTURE, site_path, bind=bind, unique=not fixed)
    if not fixed:
        # A project of this name left over from an aborted run holds old mail: remove it.
        leftover = engine.Project(site=load_site(site_path), out_dir=base / "build", state_dir=base / "state")
        engine.down(leftover, volumes=True)
    stack = start_stack(site_path)
    ACTIVE.append(stack)
    try:
        yield stack
    finally:
        ACTIVE.remove(stack)
        if not keep:
            engine.down(stack.project, volumes=True)


@pytest.fixture(scope="session")
def office(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """examples/office.yaml (groupware on) under an id and ports of its own, for the groupware
    and webmail modules (run last, see OFFICE_MODULES)."""
    base = tmp_path_factory.mktemp("groupware")
    site_path = base / "site.yaml"
    site_copy(OFFICE, site_path, bind=["127.0.0.1"])
    started = time.monotonic()
    stack = start_stack(site_path, timeout=OFFICE_UP_TIMEOUT, kind=OfficeStack)
    NOTES.append(f"groupware: `up` of {stack.project.name} took {time.monotonic() - started:.0f}s")
    try:
        yield stack
    finally:
        if os.environ.get("MAILSTACK_ITEST_KEEP") != "1":
            engine.down(stack.project, volumes=True)
