"""Issue #15, 1: encryption at rest: the model's rules, the per-user keys in the state, the
password change and recovery, and what Dovecot gets."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
from argon2 import PasswordHasher, Type
from cryptography.hazmat.primitives import serialization
from passlib.hash import bcrypt, sha256_crypt, sha512_crypt

from mailstack.audit.at_rest import judge
from mailstack.check.at_rest import disk_result, modes_result
from mailstack.check.inside import Ran
from mailstack.errors import SiteValidationError, UserError
from mailstack.mailbox_password import change_password, recover_password, write_hash
from mailstack.passwords import hash_password, verify_password
from mailstack.render.dovecot import dovecot_user_lines, shared_user_lines
from mailstack.render.mailcrypt import mailcrypt_fields, mailcrypt_settings
from mailstack.site.loader import load_site, parse_site
from mailstack.site.models import Site
from mailstack.state import State
from mailstack.state.mailcrypt import new_recovery_identity

pytestmark = pytest.mark.unit

PASSWORD = "Grüße aus Köln 1"
IDENTITY, RECIPIENT = new_recovery_identity()
HASH = hash_password(PASSWORD)

SITE = f"""\
site: crypt
hostname: mail.crypt.example
admin_email: anna@crypt.example
domains:
  - name: crypt.example
encryption:
  recovery: {RECIPIENT}  # the identity is offline
mailboxes:
  # the boss: her own key
  - address: anna@crypt.example
    password_hash: "{HASH}"
    encryption: per_user
  - address: ben@crypt.example
    password_hash: "{HASH}"
  - address: log@crypt.example
    password_hash: "{HASH}"
    encryption: none
shared_mailboxes:
  - address: office@crypt.example
    encryption: none
"""


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE, encoding="utf-8")
    return path


def test_the_default_is_the_site_key_and_per_user_needs_a_recovery_recipient() -> None:
    assert parse_site(SITE.replace("    encryption: per_user\n", "")).encryption.default == "site"
    without = SITE.replace(f"encryption:\n  recovery: {RECIPIENT}  # the identity is offline\n", "")
    with pytest.raises(SiteValidationError, match=r"encryption\.recovery.*per_user mailboxes need"):
        parse_site(without)
    with pytest.raises(SiteValidationError, match=r"shared_mailboxes.0.\.encryption"):
        parse_site(SITE.replace("    encryption: none\n", "    encryption: per_user\n", 2))
    with pytest.raises(SiteValidationError, match=r"encryption\.recovery"):
        parse_site(SITE.replace(RECIPIENT, "age1notarecipient"))


def test_up_refuses_a_per_user_mailbox_without_its_key(site_file: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"mailboxes\[0\]\.encryption: .*mailstack password SITE anna"):
        State(tmp_path / "state").ensure(load_site(site_file))


def _made(site_file: Path, state: State) -> Site:
    change_password(load_site(site_file), site_file, state, "anna@crypt.example", PASSWORD, PASSWORD)
    return load_site(site_file)


def test_password_makes_the_key_then_rewraps_it_and_writes_only_the_hash(
    site_file: Path, tmp_path: Path
) -> None:
    state = State(tmp_path / "state")
    site = _made(site_file, state)
    view = state.ensure(site)
    folder = tmp_path / "state/mailcrypt/users/anna@crypt.example"
    public = (folder / "pub.pem").read_bytes()
    key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), _dovecot_secret(PASSWORD))
    assert (
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == public
    )
    assert [k.address for k in view.user_keys] == ["anna@crypt.example"]
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o600}

    before = site_file.read_text(encoding="utf-8")
    change_password(site, site_file, state, "anna@crypt.example", PASSWORD, "neu")
    after = site_file.read_text(encoding="utf-8")
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(changed) == 1, changed  # comments, order and quoting kept
    assert "password_hash" in changed[0][1]
    assert (folder / "pub.pem").read_bytes() == public  # the key pair never changes
    with pytest.raises(ValueError, match="Incorrect password"):
        serialization.load_pem_private_key((folder / "key.pem").read_bytes(), _dovecot_secret(PASSWORD))
    serialization.load_pem_private_key((folder / "key.pem").read_bytes(), _dovecot_secret("neu"))
    state.ensure(load_site(site_file))  # the hash matches the key again


def test_a_wrong_old_password_or_recovery_key_changes_nothing(site_file: Path, tmp_path: Path) -> None:
    state = State(tmp_path / "state")
    site = _made(site_file, state)
    snapshot = site_file.read_text(encoding="utf-8"), _tree(tmp_path / "state")
    with pytest.raises(UserError, match="does not unlock"):
        change_password(site, site_file, state, "anna@crypt.example", "wrong", "x")
    other, _ = new_recovery_identity()
    with pytest.raises(UserError, match="does not open"):
        recover_password(site, site_file, state, "anna@crypt.example", other, "x")
    with pytest.raises(UserError, match="no age identity"):
        recover_password(site, site_file, state, "anna@crypt.example", "garbage", "x")
    with pytest.raises(UserError, match="old password is not"):
        change_password(site, site_file, state, "ben@crypt.example", "wrong", "x")
    assert (site_file.read_text(encoding="utf-8"), _tree(tmp_path / "state")) == snapshot


def test_recover_sets_a_new_password_for_the_same_key(site_file: Path, tmp_path: Path) -> None:
    state = State(tmp_path / "state")
    site = _made(site_file, state)
    folder = tmp_path / "state/mailcrypt/users/anna@crypt.example"
    public = (folder / "pub.pem").read_bytes()
    recover_password(site, site_file, state, "anna@crypt.example", f"# comment\n{IDENTITY}\n", "danach")
    serialization.load_pem_private_key((folder / "key.pem").read_bytes(), _dovecot_secret("danach"))
    assert (folder / "pub.pem").read_bytes() == public
    state.ensure(load_site(site_file))


def test_a_hand_edited_hash_of_a_per_user_mailbox_is_refused(site_file: Path, tmp_path: Path) -> None:
    state = State(tmp_path / "state")
    _made(site_file, state)
    write_hash(site_file, "anna@crypt.example", hash_password("by hand"))
    with pytest.raises(UserError, match=r"mailboxes\[0\]\.password_hash: .*mailstack password.*recover"):
        state.ensure(load_site(site_file))


def test_dovecot_gets_public_keys_in_the_userdb_and_wrapped_keys_only_from_the_state(
    site_file: Path, tmp_path: Path
) -> None:
    state = State(tmp_path / "state")
    site = _made(site_file, state)
    view = state.ensure(site)
    lines = dovecot_user_lines(site, "{ARGON2ID}probe", mailcrypt_fields(site, view))
    anna, ben, log = lines[:3]
    assert "userdb_crypt_global_public_key_file=inline:" in anna
    assert "PRIVATE" not in " ".join(lines)
    assert "crypt_private_key" not in " ".join(lines)
    assert ben.endswith("::::::")
    assert log.endswith("userdb_crypt_write_algorithm=")
    assert shared_user_lines(site) == ["office@crypt.example::vmail:vmail::::userdb_crypt_write_algorithm="]
    passdb = (tmp_path / "state/mailcrypt/passdb/crypt.example").read_text()
    assert passdb.startswith("anna@crypt.example:::::::noauthenticate ")
    assert "crypt_private_key_password=%{password|sha256}" in passdb  # no space: passwd-file splits on it
    assert mailcrypt_settings().passdb == "/run/mailstack/mailcrypt-passdb/%{user | domain}"


def _dovecot_secret(password: str) -> bytes:
    return hashlib.sha256(password.encode()).hexdigest().encode()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_check_names_the_modes_and_judges_the_probe_file(site_file: Path) -> None:
    site = load_site(site_file)
    modes = modes_result(site)
    assert modes.status == "warn"
    assert "per_user: anna@crypt.example" in modes.reason
    assert "none: log@crypt.example, office@crypt.example" in modes.reason
    assert "site key: 1 mailbox(es)" in modes.reason
    assert disk_result(Ran(True, 0, "CRYPTED\nCRYPTED\n")).status == "pass"
    plain = disk_result(Ran(True, 0, "CRYPTED\nReturn-\n/var/vmail/x/probe/Maildir/new/1\n"))
    assert plain.status == "fail"
    assert "/var/vmail/x/probe/Maildir/new/1" in plain.reason
    assert disk_result(Ran(True, 0, "")).status == "fail"
    assert disk_result(Ran(False)).status == "fail"


def test_audit_fails_plain_files_only_of_mailboxes_that_encrypt(site_file: Path) -> None:
    site = load_site(site_file)
    files = Counter(
        {
            ("enc", "crypt.example/anna"): 3,
            ("plain", "crypt.example/log"): 2,  # encryption: none
            ("plain", "crypt.example/office"): 1,  # a shared mailbox with none
        }
    )
    files[("plain", "crypt.example/removed")] = 2  # a mailbox no longer described: named only
    passed = judge(files, site)
    assert passed.status == "pass"
    assert "no longer in the description: crypt.example/removed" in passed.detail
    files[("plain", "crypt.example/ben")] = 4
    item = judge(files, site)
    assert item.status == "fail"
    assert "crypt.example/ben: 4" in item.detail
    assert "log" not in item.detail


def test_a_mailbox_added_back_with_a_new_hash_keeps_its_old_key_and_says_so(
    site_file: Path, tmp_path: Path
) -> None:
    state = State(tmp_path / "state")
    _made(site_file, state)
    write_hash(site_file, "anna@crypt.example", hash_password("neues"))  # as if removed and added back
    with pytest.raises(UserError, match="key from before, wrapped for another password"):
        change_password(load_site(site_file), site_file, state, "anna@crypt.example", "neues", "x")
    change_password(load_site(site_file), site_file, state, "anna@crypt.example", PASSWORD, "x")
    state.ensure(load_site(site_file))


@pytest.mark.parametrize(
    "hashed",
    [
        "{SHA256-CRYPT}" + sha256_crypt.using(rounds=5000).hash(PASSWORD),
        "{BLF-CRYPT}" + bcrypt.hash(PASSWORD).replace("$2b$", "$2y$"),  # Dovecot writes $2y$
        "{ARGON2I}" + PasswordHasher(type=Type.I).hash(PASSWORD),
        "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash(PASSWORD),
        HASH,
    ],
)
def test_password_checks_the_old_password_against_every_accepted_scheme(hashed: str) -> None:
    assert verify_password(PASSWORD, hashed)
    assert not verify_password("wrong", hashed)


def test_a_mailbox_switched_back_to_the_site_key_still_gets_its_key_for_older_mail(
    site_file: Path, tmp_path: Path
) -> None:
    state = State(tmp_path / "state")
    _made(site_file, state)
    site_file.write_text(site_file.read_text().replace("    encryption: per_user\n", ""), encoding="utf-8")
    site = load_site(site_file)
    view = state.ensure(site)
    assert view.user_keys == ()  # new mail goes to the site key
    assert (
        "userdb_crypt_global_public_key_file"
        not in dovecot_user_lines(site, "{X}p", mailcrypt_fields(site, view))[0]
    )
    passdb = (tmp_path / "state/mailcrypt/passdb/crypt.example").read_text()
    assert passdb.startswith("anna@crypt.example:::::::noauthenticate ")  # what it wrote before still reads
    write_hash(site_file, "anna@crypt.example", hash_password("by hand"))
    with pytest.raises(UserError, match=r"mailboxes\[0\]\.password_hash"):
        state.ensure(load_site(site_file))


def test_password_takes_the_address_as_a_person_types_it(site_file: Path, tmp_path: Path) -> None:
    state = State(tmp_path / "state")
    change_password(load_site(site_file), site_file, state, "Ben@CRYPT.example", PASSWORD, "neu")
    assert verify_password("neu", load_site(site_file).mailboxes[1].password_hash)
    with pytest.raises(UserError, match="is not a mailbox"):
        change_password(load_site(site_file), site_file, state, "office@crypt.example", PASSWORD, "x")
