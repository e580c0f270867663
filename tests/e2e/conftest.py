"""Fixtures for the e2e tests: throwaway Debian 13 servers reached over real SSH.

`server` (session) is one server with its SSH port and the mail ports published on
127.0.0.1. `server_factory` starts more, with other ports. All are removed, with their
volume, when the session ends. The helpers are in harness.py; see tests/e2e/README.md.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from mailstack.images import resolve_base
from tests.e2e.harness import MAIL_PORTS, Server, ServerFactory, build_server_image, run

#: Factories of this session, for the failure report hook.
_FACTORIES: list[ServerFactory] = []


@pytest.fixture(scope="session")
def base_image() -> str:
    """The Debian 13 base image of the host's engine (debootstrapped if there is none)."""
    if run(["docker", "info"], check=False, timeout=60).returncode != 0:
        pytest.fail("the e2e tests need a Docker engine: run scripts/install-engine.sh", pytrace=False)
    return resolve_base(None, bootstrap=True, say=print)


@pytest.fixture(scope="session")
def server_images(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """kind -> tag of the e2e server image of that kind, built on first use (see
    tests/e2e/server/Dockerfile)."""
    tags: dict[str, str] = {}

    def image(kind: str) -> str:
        if kind not in tags:
            log = tmp_path_factory.mktemp(f"e2e-image-{kind}") / "build.log"
            tags[kind] = build_server_image(base_image, log, kind)
        return tags[kind]

    return image


@pytest.fixture(scope="session")
def ssh_key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ed25519 key pair for this session (the .pub sits beside it)."""
    key = tmp_path_factory.mktemp("e2e-ssh") / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mailstack-e2e", "-f", str(key)])
    return key


@pytest.fixture(scope="session")
def server_factory(server_images: Callable[[str], str], ssh_key_path: Path) -> Iterator[ServerFactory]:
    """Start servers with `server_factory.start(ports=..., kind=...)`; all are removed after the
    session."""
    factory = ServerFactory(server_images, ssh_key_path)
    _FACTORIES.append(factory)
    try:
        yield factory
    finally:
        factory.remove_all()
        _FACTORIES.remove(factory)


@pytest.fixture(scope="session")
def server(server_factory: ServerFactory) -> Server:
    """The session's server (the cloud kind): SSH and MAIL_PORTS published on 127.0.0.1."""
    return server_factory.start(ports=MAIL_PORTS)


Note = Callable[[str], None]


@pytest.fixture
def note(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]) -> Note:
    """Show a measurement on the terminal as it is made (and record it in the JUnit XML)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def write(text: str) -> None:
        record_property("measure", text)
        if capture is not None:
            with capture.global_and_fixture_disabled():
                print(f"\n[measure] {text}", flush=True)

    return write


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the journal of every live server to the report of a failed e2e test."""
    report = yield
    if report.failed and report.when in ("call", "teardown"):
        for factory in _FACTORIES:
            for live in factory.live:
                report.sections.append((f"journalctl -n 50 on {live.name}", live.journal(50)))
    return report
