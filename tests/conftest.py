"""Shared fixtures and the --update-golden switch."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Literal

import pytest

from mailstack.render.environment import HEADER
from mailstack.state.view import DkimKey, StateView, TlsaKey

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden from the current templates",
    )


LAYERS = ("unit", "integration", "world", "e2e")
#: Seconds spent per layer (setup, call and teardown of its tests), for the run's summary.
_LAYER_SECONDS: dict[str, float] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests without a layer marker are unit tests."""
    for item in items:
        if not any(item.get_closest_marker(m) for m in LAYERS[1:]):
            item.add_marker(pytest.mark.unit)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    layer = next((m for m in reversed(LAYERS) if m in report.keywords), "unit")
    _LAYER_SECONDS[layer] = _LAYER_SECONDS.get(layer, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Where the time went, by layer (.ci/run prints its own phases around it)."""
    if _LAYER_SECONDS:
        terminalreporter.section("where the time went, by layer")
        for layer in LAYERS:
            if layer in _LAYER_SECONDS:
                terminalreporter.line(f"{layer:<12} {_LAYER_SECONDS[layer]:7.0f} s")


def image_program(service: str, name: str) -> ModuleType:
    """A Python program of an image, loaded as a module: a file of compose/images/<service>/
    (``guard.py``), or a module of a package there (``mailstack_acme.schedule``)."""
    folder = ROOT / "compose" / "images" / service
    # No __pycache__ in an image's directory: the build context's digest decides rebuilds.
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        if name.endswith(".py"):
            return _load(f"mailstack_{service}_program", folder / name)
        package = name.partition(".")[0]
        if package not in sys.modules:
            _load(package, folder / package / "__init__.py", search=[str(folder / package)])
        return importlib.import_module(name)
    finally:
        sys.dont_write_bytecode = writes_bytecode


def _load(name: str, path: Path, search: list[str] | None = None) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=search)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def fake_state(domains: tuple[str, ...], tls_mode: str = "selfsigned") -> StateView:
    """A state view with fixed public keys, so rendered trees can be compared byte for byte."""
    dkim = tuple(
        DkimKey(
            domain=d,
            selector=f"s20260101{suffix}",
            algorithm=algorithm,  # type: ignore[arg-type]
            public_b64=f"{algorithm.upper()}PUBLICKEYFOR{d.upper()}",
            relpath=f"dkim/{d}/s20260101{suffix}.pem",
        )
        for d in domains
        for algorithm, suffix in (("rsa", "r"), ("ed25519", "e"))
    )
    tls = {
        "ca_cert": "tls/ca.crt",
        "ecdsa_cert": "tls/HOST/ecdsa.crt",
        "ecdsa_key": "tls/HOST/ecdsa.key",
        "rsa_cert": "tls/HOST/rsa.crt",
        "rsa_key": "tls/HOST/rsa.key",
    }
    if tls_mode == "acme":
        tls = {"ca_cert": "tls/ca.crt"} | {
            f"{kind}_{role}": f"acme/tls/live/{kind}.{suffix}"
            for kind in ("ecdsa", "rsa")
            for role, suffix in (("key", "key"), ("cert", "crt"), ("pem", "pem"))
        }
    roles: tuple[tuple[Literal["current", "next"], str], ...] = (("current", ""), ("next", "next-"))
    tlsa = tuple(
        TlsaKey(kind, role, f"{kind}{role}".encode().hex().ljust(64, "0"), f"tls/HOST/{prefix}{kind}.key")
        for role, prefix in roles
        for kind in ("ecdsa", "rsa")
    )
    secret_files = {
        "redis": "secrets/redis",
        "postgres": "secrets/postgres",
        "restic_password": "secrets/restic_password",
    }
    mailcrypt = {"site_key": "mailcrypt/site.key", "site_pub": "mailcrypt/site.pub"}
    return StateView(
        dkim=dkim, tls_files=tls, secret_files=secret_files, tlsa=tlsa, mailcrypt_files=mailcrypt
    )


def assert_generated_header(path: str, content: bytes) -> None:
    """Every rendered file whose format has comments starts with the "generated by" line, in
    that format's comment syntax (XML: after the declaration and DOCTYPE)."""
    lines = content.decode().splitlines()
    if path.endswith((".json", "/mta-sts.txt")):  # neither format has comments
        return
    if path.endswith((".xml", ".mobileconfig")):
        assert f"<!-- {HEADER} -->" in lines[1:3], path
    elif path.endswith((".lua", ".sql")):
        assert lines[0] == f"-- {HEADER}", path
    elif path.endswith("sogo/sogo.conf"):  # a GNUstep property list
        assert lines[0] == f"// {HEADER}", path
    else:
        assert lines[0] == f"# {HEADER}", path
