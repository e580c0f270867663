"""Rendering: deterministic, plan → diff → write, state created once and never rotated."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509
from ruamel.yaml import YAML
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.errors import OutputError, StateError
from mailstack.render import render_site
from mailstack.render.writer import MANIFEST, Change
from mailstack.site.loader import load_site
from tests.conftest import EXAMPLES, assert_generated_header

runner = CliRunner()
ACME = next(p for p in EXAMPLES if p.name == "acme.yaml")


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    shutil.copy(ACME, tmp_path / "site.yaml")
    return tmp_path


def cli_render(site_dir: Path, *extra: str) -> str:
    result = runner.invoke(app, ["render", str(site_dir / "site.yaml"), *extra])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_render_twice_is_byte_identical_and_keeps_state(site_dir: Path) -> None:
    first_out = cli_render(site_dir)
    out, state = site_dir / "build" / "acme", site_dir / ".mailstack" / "acme"
    rendered, kept = tree(out), tree(state)
    assert "create    compose.yaml" in first_out
    second_out = cli_render(site_dir)
    assert tree(out) == rendered
    assert tree(state) == kept
    assert "unchanged compose.yaml" in second_out
    assert "create" not in second_out
    assert "changed " not in second_out.replace("unchanged", "")


def test_state_holds_keys_certs_and_passwords_with_tight_modes(site_dir: Path) -> None:
    cli_render(site_dir)
    state = site_dir / ".mailstack" / "acme"
    files = tree(state)
    for domain in ("acme.example", "acme-shop.example"):
        keys = [name for name in files if name.startswith(f"dkim/{domain}/")]
        assert len(keys) == 2
        assert any(b"BEGIN PRIVATE KEY" in files[k] for k in keys)
    assert {
        "tls/ca.crt",
        "tls/ca.key",
        "tls/mail.acme.example/ecdsa.crt",
        "tls/mail.acme.example/rsa.crt",
        "secrets/redis",
        "secrets/rspamd_controller",
    } <= set(files)
    for path in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_loosened_modes_are_tightened_again(site_dir: Path) -> None:
    cli_render(site_dir)
    secret = site_dir / ".mailstack" / "acme" / "secrets" / "redis"
    secret.chmod(0o644)
    cli_render(site_dir)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_dry_run_writes_nothing(site_dir: Path) -> None:
    before = sorted(p.name for p in site_dir.iterdir())
    output = cli_render(site_dir, "--dry-run")
    assert sorted(p.name for p in site_dir.iterdir()) == before
    assert "would create dkim/acme.example/" in output
    assert "create    compose.yaml" in output
    assert "dry run: nothing written" in output


def test_dry_run_after_render_reports_unchanged(site_dir: Path) -> None:
    cli_render(site_dir)
    rendered = tree(site_dir / "build" / "acme")
    output = cli_render(site_dir, "--dry-run")
    assert "create" not in output
    assert tree(site_dir / "build" / "acme") == rendered


def test_deleted_file_is_restored_identically(site_dir: Path) -> None:
    cli_render(site_dir)
    out = site_dir / "build" / "acme"
    original = (out / "config/postfix/main.cf").read_bytes()
    (out / "config/postfix/main.cf").unlink()
    output = cli_render(site_dir)
    assert "create    config/postfix/main.cf" in output
    assert (out / "config/postfix/main.cf").read_bytes() == original


def test_hand_edit_is_reported_and_replaced(site_dir: Path) -> None:
    cli_render(site_dir)
    main_cf = site_dir / "build/acme/config/postfix/main.cf"
    original = main_cf.read_bytes()
    main_cf.write_bytes(original + b"smtpd_banner = edited by hand\n")
    assert "changed   config/postfix/main.cf" in cli_render(site_dir)
    assert main_cf.read_bytes() == original


def test_every_file_has_the_header_where_comments_exist(site_dir: Path) -> None:
    cli_render(site_dir)
    for name, content in tree(site_dir / "build" / "acme").items():
        assert_generated_header(name, content)


def test_output_tree_layout(site_dir: Path) -> None:
    cli_render(site_dir)
    names = set(tree(site_dir / "build" / "acme"))
    assert {
        "compose.yaml",
        "ansible/inventory.yml",
        "ansible/group_vars/all.yml",
        "dns/records.json",
        "config/postfix/main.cf",
        "config/dovecot/dovecot.conf",
        MANIFEST,
    } <= names


def test_rendered_output_holds_no_secrets(site_dir: Path) -> None:
    cli_render(site_dir)
    state = tree(site_dir / ".mailstack" / "acme")
    secrets = [v.strip() for k, v in state.items() if k.startswith("secrets/")]
    rendered = b"".join(tree(site_dir / "build" / "acme").values())
    assert b"PRIVATE KEY" not in rendered
    assert all(s not in rendered for s in secrets)


def test_new_domain_adds_keys_without_touching_existing_ones(site_dir: Path) -> None:
    cli_render(site_dir)
    state = site_dir / ".mailstack" / "acme"
    kept = tree(state)
    site_file = site_dir / "site.yaml"
    site_file.write_text(
        site_file.read_text().replace(
            "  - name: acme-shop.example", "  - name: acme-new.example\n  - name: acme-shop.example"
        )
    )
    cli_render(site_dir)
    now = tree(state)
    # Only the server certificates change: re-issued for the same keys with the new
    # domain's web names (mta-sts, autoconfig, autodiscover).
    certs = {name for name in kept if name.startswith("tls/mail.acme.example/") and name.endswith(".crt")}
    assert len(certs) == 2
    assert all(now[name] == content for name, content in kept.items() if name not in certs)
    for name in certs:
        old, new = (x509.load_pem_x509_certificate(t[name]) for t in (kept, now))
        assert old.public_key() == new.public_key()
        names = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "mta-sts.acme-new.example" in names.get_values_for_type(x509.DNSName)
    assert any(name.startswith("dkim/acme-new.example/") for name in now)


def test_removed_template_output_is_removed(site_dir: Path) -> None:
    cli_render(site_dir)
    out = site_dir / "build" / "acme"
    stale = out / "config" / "old.conf"
    stale.write_text("old\n")
    manifest = out / MANIFEST
    manifest.write_text(manifest.read_text().replace('"files": [', '"files": [\n    "config/old.conf",'))
    mine = out / "notes.txt"
    mine.write_text("not ours\n")
    output = cli_render(site_dir)
    assert "remove    config/old.conf" in output
    assert not stale.exists()
    assert mine.exists()


def test_refuses_a_foreign_output_directory(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me\n")
    site = load_site(ACME)
    with pytest.raises(OutputError, match="not written by mailstack"):
        render_site(site, tmp_path / "out", tmp_path / "state")


def test_refuses_newer_state_format(site_dir: Path) -> None:
    cli_render(site_dir)
    marker = site_dir / ".mailstack" / "acme" / "state.json"
    marker.write_text('{"format": 99, "site": "acme"}\n')
    result = runner.invoke(app, ["render", str(site_dir / "site.yaml")])
    assert result.exit_code == 1
    assert "newer than this mailstack understands" in result.stderr


def test_refuses_state_of_another_site(tmp_path: Path) -> None:
    site = load_site(ACME)
    render_site(site, tmp_path / "out", tmp_path / "state")
    other = site.model_copy(update={"site": "other"})
    with pytest.raises(StateError, match="belongs to site 'acme'"):
        render_site(other, tmp_path / "out2", tmp_path / "state")


def test_actions_report_changes(tmp_path: Path) -> None:
    site = load_site(ACME)
    first = render_site(site, tmp_path / "out", tmp_path / "state")
    assert {a.change for a in first.actions} == {Change.CREATE}
    again = render_site(site, tmp_path / "out", tmp_path / "state")
    assert {a.change for a in again.actions} == {Change.UNCHANGED}
    assert again.state.created == []


def test_explicit_output_and_state_dirs(tmp_path: Path) -> None:
    out, state = tmp_path / "o", tmp_path / "s"
    shutil.copy(ACME, tmp_path / "site.yaml")
    cli_render(tmp_path, "-o", str(out), "--state", str(state))
    assert (out / "compose.yaml").exists()
    assert (state / "state.json").exists()
    compose = (out / "compose.yaml").read_text()
    # The state reaches the containers as compose secrets, one file each, relative to the output.
    assert f'file: "{os.path.relpath(state, out)}/secrets/redis"' in compose


def test_inventory_uses_sudo_only_for_other_users_and_refreshes_apt_per_host(site_dir: Path) -> None:
    """A minimal server has no sudo (root logs in), and a host without a mirror says so."""
    text = (site_dir / "site.yaml").read_text()
    assert "hosts:\n  - name: mx1\n" in text
    (site_dir / "site.yaml").write_text(
        text.replace(
            "hosts:\n  - name: mx1\n",
            "hosts:\n  - name: mx2\n    address: 192.0.2.26\n    ssh_user: debian\n    packages: cache\n"
            "  - name: mx1\n",
        )
    )
    cli_render(site_dir)
    inventory = YAML(typ="safe").load((site_dir / "build" / "acme" / "ansible" / "inventory.yml").read_text())
    hosts = inventory["all"]["children"]["acme"]["hosts"]
    assert hosts["mx1"]["ansible_user"] == "root"
    assert hosts["mx1"]["ansible_become"] is False
    assert hosts["mx1"]["mailstack_host_apt_update"] is True
    assert hosts["mx2"]["ansible_become"] is True
    assert hosts["mx2"]["mailstack_host_apt_update"] is False
    assert hosts["mx2"]["mailstack_docker_apt_update"] is False
