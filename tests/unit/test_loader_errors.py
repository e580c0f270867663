"""Every invalid fixture fails with its field path, its line, exit code 1 and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

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


# Found by the fuzzer (tests/fuzz_sites.py): each of these was a traceback, a Python warning
# or a problem spread over several lines.
BASE = (FIXTURES / "valid" / "base.yaml").read_text(encoding="utf-8")


def validate_text(tmp_path: Path, text: str) -> Result:
    site = tmp_path / "site.yaml"
    site.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = runner.invoke(app, ["validate", str(site)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def test_deep_nesting_is_refused_at_its_line(tmp_path: Path) -> None:
    result = validate_text(tmp_path, BASE + "extra: " + "[" * 5000 + "]" * 5000 + "\n")
    assert result.exit_code == 1
    assert "YAML syntax error (line 25, column 57): values nested more than 50 levels deep" in result.stderr


def test_a_number_python_will_not_read_is_refused(tmp_path: Path) -> None:
    result = validate_text(tmp_path, BASE.replace("smtp: 2525", "smtp: " + "9" * 5000))
    assert result.exit_code == 1
    assert "YAML syntax error: a value cannot be read: Exceeds the limit (4300 digits)" in result.stderr
    assert "set_int_max_str_digits" not in result.stderr


def test_an_impossible_date_is_refused(tmp_path: Path) -> None:
    result = validate_text(tmp_path, BASE.replace("site: test", "site: 2001-13-45"))
    assert result.exit_code == 1
    assert "a value cannot be read: month must be in 1..12" in result.stderr


def test_merge_keys_are_read(tmp_path: Path) -> None:
    text = BASE.replace("    quota: 1G\n", "    quota: 1G\n    <<: &defaults {name: Admin}\n", 1)
    text = text.replace(
        "  - address: user@test.example\n", "  - address: user@test.example\n    <<: *defaults\n"
    )
    result = validate_text(tmp_path, text)
    assert result.exit_code == 0, result.stderr
    # A mapping of merged keys alone (it has no positions of its own).
    result = validate_text(tmp_path, BASE + "x: &a {b: 1}\ny:\n  <<: *a\n")
    assert result.exit_code == 1
    assert "  y (line 26): unknown field 'y'" in result.stderr


def test_a_reused_anchor_prints_no_python_warning(tmp_path: Path) -> None:
    text = BASE.replace("quota: 1G", "quota: &q 1G").replace(
        "    password_hash", "    quota: &q 2G\n    password_hash", 2
    )
    result = validate_text(tmp_path, text)
    assert "Warning" not in result.output


def test_an_escaped_surrogate_is_refused_with_its_path(tmp_path: Path) -> None:
    text = BASE.replace("    quota: 1G", '    quota: 1G\n    name: "Ad\\ud800min"')
    result = validate_text(tmp_path, text)
    assert result.exit_code == 1
    assert "mailboxes[0].name (line 20): has an escaped UTF-16 surrogate" in result.stderr


def test_an_odd_key_stays_on_its_problem_line(tmp_path: Path) -> None:
    result = validate_text(tmp_path, BASE + '"a\\nb": 1\n"\\ud800": 2\n')
    assert result.exit_code == 1
    assert "  ['\\ud800'] (line 26): has an escaped UTF-16 surrogate" in result.stderr
    result = validate_text(tmp_path, BASE + '"a\\nb": 1\n')
    assert "  ['a\\nb'] (line 25): unknown field 'a\\nb'" in result.stderr
    assert len(result.stderr.splitlines()) == 2


def test_a_control_character_is_refused_at_its_line_and_column(tmp_path: Path) -> None:
    result = validate_text(tmp_path, BASE.replace("site: test", "site: te\x7fst"))
    assert result.exit_code == 1
    assert (
        "  YAML syntax error (line 2, column 9): character U+007F is not allowed in YAML; "
        'inside double quotes write it as "\\u007f"\n'
    ) in result.stderr
    assert len(result.stderr.splitlines()) == 2


def test_a_duplicate_key_with_a_newline_in_its_value_stays_on_one_line(tmp_path: Path) -> None:
    result = validate_text(tmp_path, BASE.replace("site: test", 'site: "\\ntest"') + 'site: "\\ntest"\n')
    assert result.exit_code == 1
    assert 'found duplicate key "site" with value " test" (original value: " test")' in result.stderr
    assert len(result.stderr.splitlines()) == 2
