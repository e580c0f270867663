from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.passwords import verify_password
from mailstack.site.loader import load_site
from tests.conftest import EXAMPLES, FIXTURES

runner = CliRunner()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("init", "validate", "render", "hash-password", "schema"):
        assert command in result.stdout


def test_validate_prints_a_one_line_summary() -> None:
    result = runner.invoke(app, ["validate", str(next(p for p in EXAMPLES if p.name == "acme.yaml"))])
    assert result.exit_code == 0
    summary = "site acme is valid: 2 domains, 4 mailboxes, 7 aliases, 1 shared mailbox"
    assert result.stdout.strip().endswith(summary)
    assert len(result.stdout.strip().splitlines()) == 1


def test_init_writes_a_valid_commented_site_and_shows_the_password_once(tmp_path: Path) -> None:
    target = tmp_path / "site.yaml"
    result = runner.invoke(app, ["init", "Bücher.example", "-o", str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert text.startswith("# yaml-language-server: $schema=.mailstack/site.schema.json\n")
    assert (tmp_path / ".mailstack" / "site.schema.json").exists()
    assert text.count("\n#") >= 5  # it explains itself
    site = load_site(target)
    assert site.site == "xn--bcher-kva-example"
    assert site.mailboxes[0].address == "admin@xn--bcher-kva.example"
    password = re.search(r"Password (\S+)", result.stdout)
    assert password is not None
    assert password.group(1) not in text
    assert verify_password(password.group(1), site.mailboxes[0].password_hash)


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "site.yaml"
    target.write_text("precious\n")
    result = runner.invoke(app, ["init", "example.org", "-o", str(target)])
    assert result.exit_code == 1
    assert "already exists; pass --force" in result.stderr
    assert target.read_text() == "precious\n"
    assert runner.invoke(app, ["init", "example.org", "-o", str(target), "--force"]).exit_code == 0
    assert load_site(target).domain_names == ("example.org",)


def test_init_rejects_a_bad_domain(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", "not a domain", "-o", str(tmp_path / "s.yaml")])
    assert result.exit_code == 1
    assert "DOMAIN:" in result.stderr
    assert not (tmp_path / "s.yaml").exists()


@pytest.mark.parametrize("scheme", ["ARGON2ID", "SHA512-CRYPT"])
@pytest.mark.parametrize("password", ["correct horse", "pässwörd ✓ 密码", " spaces kept "])
def test_hash_password_from_stdin_verifies(scheme: str, password: str) -> None:
    result = runner.invoke(app, ["hash-password", "--scheme", scheme], input=password + "\n")
    assert result.exit_code == 0, result.output
    hashed = result.stdout.strip()
    assert hashed.startswith("{" + scheme + "}")
    assert verify_password(password, hashed)
    assert not verify_password(password + "x", hashed)


def test_hash_password_output_is_accepted_by_the_site_model(tmp_path: Path) -> None:
    hashed = runner.invoke(app, ["hash-password"], input="s3cret\n").stdout.strip()
    base = (FIXTURES / "valid" / "base.yaml").read_text()
    start = base.index('"{ARGON2ID}')
    site_file = tmp_path / "site.yaml"
    site_file.write_text(base[:start] + json.dumps(hashed) + base[base.index('"', start + 1) + 1 :])
    assert load_site(site_file).mailboxes[0].password_hash == hashed


def test_hash_password_rejects_empty_and_unknown_scheme() -> None:
    assert runner.invoke(app, ["hash-password"], input="\n").exit_code == 1
    result = runner.invoke(app, ["hash-password", "--scheme", "MD5"], input="x\n")
    assert result.exit_code == 1
    assert "--scheme must be one of" in result.stderr


def test_schema_validates_every_example_and_rejects_a_bad_one() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    for example in [*EXAMPLES, FIXTURES / "valid" / "design-section3.yaml"]:
        jsonschema.validate(yaml.load(example.read_text()), schema)
    bad = yaml.load((FIXTURES / "invalid" / "unknown-top-key.yaml").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("mailstack ")
