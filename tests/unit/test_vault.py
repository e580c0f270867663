"""State encrypted with ansible-vault: still renders identically, and decrypts back."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from typer.testing import CliRunner

from mailstack.cli import app
from tests.conftest import EXAMPLES

runner = CliRunner()
ACME = next(p for p in EXAMPLES if p.name == "acme.yaml")


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_encrypted_state_renders_the_same_tree_and_decrypts_back(tmp_path: Path) -> None:
    shutil.copy(ACME, tmp_path / "site.yaml")
    password = tmp_path / "vault-pass"
    password.write_text("corrêct horse\n")
    site = str(tmp_path / "site.yaml")
    assert runner.invoke(app, ["render", site]).exit_code == 0
    state, out = tmp_path / ".mailstack" / "acme", tmp_path / "build" / "acme"
    plain, rendered = files(state), files(out)

    result = runner.invoke(app, ["vault", "encrypt", site, "--vault-password-file", str(password)])
    assert result.exit_code == 0, result.output
    encrypted = files(state)
    assert encrypted["state.json"] == plain["state.json"]
    for name, content in encrypted.items():
        if name != "state.json":
            assert content.startswith(b"$ANSIBLE_VAULT;1.1;AES256"), name
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600

    refused = runner.invoke(app, ["render", site])
    assert refused.exit_code == 1
    assert "encrypted with ansible-vault; pass --vault-password-file" in refused.stderr

    again = runner.invoke(app, ["render", site, "--vault-password-file", str(password)])
    assert again.exit_code == 0, again.output
    assert files(out) == rendered
    assert files(state) == encrypted  # nothing was rotated or re-encrypted

    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    bad = runner.invoke(app, ["vault", "decrypt", site, "--vault-password-file", str(wrong)])
    assert bad.exit_code == 1
    assert "wrong vault password" in bad.stderr

    assert (
        runner.invoke(app, ["vault", "decrypt", site, "--vault-password-file", str(password)]).exit_code == 0
    )
    assert files(state) == plain
