"""The state directory: what a first render makes (and with which modes), that a second one
keeps it all, the format version and the refusals, reading through the vault, and dry runs."""

from __future__ import annotations

import json
import re
import shutil
import stat
from pathlib import Path

import pytest

from mailstack.errors import StateError, UserError
from mailstack.site.loader import parse_site
from mailstack.site.models import Site
from mailstack.state import State
from mailstack.state.layout import STATE_FORMAT
from mailstack.vault import VAULT_HEADER, Vault, encrypt_state
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

DEMO = (ROOT / "examples" / "demo.yaml").read_text()
HOST = "mail.example.test"
# Beside the DKIM keys (their selectors carry the day they were made), a first render makes these.
FIXED_FILES = {
    "state.json",
    "tls/ca.key",
    "tls/ca.crt",
    *(f"tls/{HOST}/{name}" for name in ("ecdsa.key", "ecdsa.crt", "rsa.key", "rsa.crt")),
    f"tls/{HOST}/next-ecdsa.key",
    f"tls/{HOST}/next-rsa.key",
    "secrets/rspamd_controller",
    "secrets/redis",
    "secrets/probe_password",
    "probe/password_hash",
    "mailcrypt/site.key",
    "mailcrypt/site.pub",
}


def demo_site(*, more_domains: str = "") -> Site:
    return parse_site(DEMO.replace("  - name: example.test\n", "  - name: example.test\n" + more_domains))


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state made for the demo site; tests work on copies (key generation is slow)."""
    root = tmp_path_factory.mktemp("made") / "state"
    State(root).ensure(demo_site())
    return root


@pytest.fixture
def state_dir(made: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "state"
    shutil.copytree(made, copy)
    return copy


def test_a_first_render_makes_the_state_private_and_says_what_it_made(tmp_path: Path) -> None:
    root = tmp_path / "site" / "state"
    state = State(root)
    view = state.ensure(demo_site())
    made = set(snapshot(root))
    dkim = {name for name in made if name.startswith("dkim/")}
    assert made - dkim == FIXED_FILES
    assert {re.sub(r"s\d{8}", "sDATE", name) for name in dkim} == {
        "dkim/example.test/sDATEr.pem",
        "dkim/example.test/sDATEe.pem",
    }
    assert set(state.changes.created) == made
    assert {k.relpath for k in view.dkim} == dkim
    for path in [root.parent, root, *root.rglob("*")]:
        wanted = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == wanted, path
    # What rendering sees names files of the state and holds no secret value.
    assert set(view.secret_files.values()) <= made
    assert set(view.tls_files.values()) <= made
    secrets = [(root / p).read_text().strip() for p in view.secret_files.values()]
    assert not any(secret in repr(view) for secret in secrets)


def test_the_format_version_and_the_site_are_recorded(state_dir: Path) -> None:
    assert json.loads((state_dir / "state.json").read_text()) == {"format": STATE_FORMAT, "site": "demo"}


def test_ensuring_again_changes_nothing_and_rotates_no_key(state_dir: Path) -> None:
    before = snapshot(state_dir)
    first = State(state_dir, write=False).ensure(demo_site())
    again = State(state_dir)
    assert again.ensure(demo_site()) == first
    assert again.changes.created == []
    assert again.changes.reissued == []
    assert again.changes.fixed_modes == []
    assert snapshot(state_dir) == before


def test_a_new_domain_adds_its_keys_and_keeps_every_key_there_was(state_dir: Path) -> None:
    before = snapshot(state_dir)
    state = State(state_dir)
    view = state.ensure(demo_site(more_domains="  - name: example.net\n"))
    after = snapshot(state_dir)
    added = {k.relpath for k in view.dkim if k.domain == "example.net"}
    assert {p for p in after if p not in before} == added
    assert sorted(state.changes.reissued) == [f"tls/{HOST}/ecdsa.crt", f"tls/{HOST}/rsa.crt"]
    # Certificates grow by the new names (for the same key); nothing else is rewritten.
    assert {p for p in before if after[p] != before[p]} == set(state.changes.reissued)


@pytest.mark.parametrize(
    ("marker", "words"),
    [
        (None, "is not empty and has no state.json; is it a mailstack state directory?"),
        ({"format": STATE_FORMAT + 1, "site": "demo"}, "newer than this mailstack understands"),
        ({"format": STATE_FORMAT - 1, "site": "demo"}, "run `mailstack state migrate` first"),
        ({"format": STATE_FORMAT, "site": "other"}, "belongs to site 'other', not 'demo'"),
        ({"site": "demo"}, "is damaged"),
    ],
)
def test_a_state_it_does_not_understand_is_refused_untouched(
    tmp_path: Path, marker: dict[str, object] | None, words: str
) -> None:
    root = tmp_path / "state"
    root.mkdir()
    (root / "notes.txt").write_text("someone else's directory\n")
    if marker is not None:
        (root / "state.json").write_text(json.dumps(marker))
    before = snapshot(root)
    with pytest.raises(StateError) as caught:
        State(root).ensure(demo_site())
    assert isinstance(caught.value, UserError)  # the CLI prints it and exits 1, no traceback
    assert words in str(caught.value)
    assert str(root) in str(caught.value)
    assert snapshot(root) == before


def test_a_newer_format_says_to_upgrade_mailstack(state_dir: Path) -> None:
    newer = {"format": STATE_FORMAT + 1, "site": "demo"}
    (state_dir / "state.json").write_text(json.dumps(newer))
    with pytest.raises(StateError, match=rf"state format {STATE_FORMAT + 1}, .*upgrade mailstack"):
        State(state_dir).ensure(demo_site())


def test_an_encrypted_state_reads_through_the_vault(state_dir: Path, tmp_path: Path) -> None:
    plain = snapshot(state_dir)
    view = State(state_dir, write=False).ensure(demo_site())
    password = tmp_path / "vault-password"
    password.write_text("correct horse\n")
    vault = Vault(password)
    encrypt_state(state_dir, vault)
    encrypted = snapshot(state_dir)
    assert encrypted["state.json"] == plain["state.json"]  # says what the directory is, in plain
    for name in set(plain) - {"state.json"}:
        assert encrypted[name].startswith(VAULT_HEADER), name
        assert encrypted[name] != plain[name]
        assert vault.decrypt(encrypted[name]) == plain[name]

    state = State(state_dir, vault=vault)
    assert state.ensure(demo_site()) == view
    assert state.changes.created == []
    assert state.read("secrets/redis") == plain["secrets/redis"]
    assert state.probe_password() == plain["secrets/probe_password"].decode().strip()
    assert snapshot(state_dir) == encrypted

    with pytest.raises(StateError, match="encrypted with ansible-vault; pass --vault-password-file"):
        State(state_dir).ensure(demo_site())
    wrong = tmp_path / "wrong-password"
    wrong.write_text("battery staple\n")
    with pytest.raises(StateError, match="wrong vault password"):
        State(state_dir, vault=Vault(wrong)).read("secrets/redis")


def test_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "site" / "state"
    state = State(root, write=False)
    view = state.ensure(demo_site())
    assert not root.parent.exists()
    assert {p for p in state.changes.created if not p.startswith("dkim/")} == FIXED_FILES
    assert len(view.dkim) == 2
    assert len(view.probe_hash) > 0
    assert [p.role for p in view.tlsa] == ["current", "current", "next", "next"]


def test_a_dry_run_on_a_state_lists_what_it_would_add_and_writes_nothing(state_dir: Path) -> None:
    before = snapshot(state_dir)
    (state_dir / "secrets" / "redis").chmod(0o644)
    state = State(state_dir, write=False)
    view = state.ensure(demo_site(more_domains="  - name: example.net\n"))
    assert sorted(state.changes.created) == sorted(k.relpath for k in view.dkim if k.domain == "example.net")
    assert len(state.changes.created) == 2
    assert sorted(state.changes.reissued) == [f"tls/{HOST}/ecdsa.crt", f"tls/{HOST}/rsa.crt"]
    assert snapshot(state_dir) == before
    assert not (state_dir / "dkim" / "example.net").exists()
    assert stat.S_IMODE((state_dir / "secrets" / "redis").stat().st_mode) == 0o644  # modes too
