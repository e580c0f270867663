"""Every invalid fixture fails with its field path, its line, exit code 1 and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from tests.conftest import FIXTURES

INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))
runner = CliRunner()


def expectation(path: Path) -> list[str]:
    first = path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
    if first.startswith("# expect: "):
        return list(json.loads(first.removeprefix("# expect: ")))
    return ["(line 1): the site file must be a mapping", "empty file"]


def test_there_are_at_least_fifteen_distinct_invalid_sites() -> None:
    assert len(INVALID) >= 15
    assert len({p.read_bytes() for p in INVALID}) == len(INVALID)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_site_is_reported_cleanly(path: Path) -> None:
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for fragment in expectation(path):
        assert fragment in result.stderr, f"{fragment!r} not in:\n{result.stderr}"


def test_all_problems_are_listed_not_just_the_first() -> None:
    result = runner.invoke(app, ["validate", str(FIXTURES / "invalid" / "several-errors.yaml")])
    assert "2 problems" in result.stderr


def test_missing_file() -> None:
    result = runner.invoke(app, ["validate", "/nonexistent/site.yaml"])
    assert result.exit_code == 1
    assert "site file not found: /nonexistent/site.yaml" in result.stderr


def test_directory_instead_of_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["render", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path} is a directory" in result.stderr


def test_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_bytes(b"site: caf\xe9\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "not UTF-8" in result.stderr
