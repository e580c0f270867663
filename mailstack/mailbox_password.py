"""`mailstack password` and `mailstack recover`: a mailbox's new password, written into the site
file as a hash (its comments kept), with a per_user mailbox's key re-wrapped in the state.

The state is written first, then the site file (atomically): if anything fails in between,
the key already opens with the new password and `up` names the mismatch and these commands.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString
from ruamel.yaml.util import load_yaml_guess_indent

from mailstack.errors import UserError
from mailstack.passwords import hash_password, verify_password
from mailstack.site.encryption import mode_of
from mailstack.site.models import Mailbox, Site
from mailstack.state import State, mailcrypt
from mailstack.state.version import check_format


def change_password(site: Site, site_path: Path, state: State, address: str, old: str, new: str) -> str:
    """Check ``old``, then give ``address`` the password ``new``. Returns what was done."""
    hashed = _login(site, address).password_hash
    check_format(state, site.site)  # a new site's first key may come before its first `up`
    mode = mode_of(site, address)
    if mode == "per_user" and mailcrypt.has_user_key(state, address):
        new_hash = hash_password(new)
        try:
            mailcrypt.rewrap(state, address, old, new, new_hash)  # checks old: the key opens with it
        except UserError:
            if mailcrypt.wrapped_for(state, address, hashed):
                raise
            # The key outlived the mailbox (removed from the site, added back with a new hash):
            # it still guards the old mail and opens only with the password it was wrapped for.
            raise UserError(
                f"{address} has a key from before, wrapped for another password than its "
                "password_hash: give that password as the old one, or use `mailstack recover`: "
                "nothing changed"
            ) from None
        done = "its key re-wrapped for the new password"
    else:
        if not _verifies(old, hashed):
            raise UserError(f"the old password is not {address}'s: nothing changed")
        new_hash = hash_password(new)
        done = "no key to re-wrap (encryption: " + mode + ")"
        if mode == "per_user":
            recipient = _recipient(site)
            mailcrypt.create_user_key(state, address, new, recipient, new_hash)
            done = "its key made, wrapped with the password and sealed to encryption.recovery"
    write_hash(site_path, address, new_hash)
    return done


def recover_password(site: Site, site_path: Path, state: State, address: str, identity: str, new: str) -> str:
    """Give a per_user mailbox the password ``new`` without the old one, with the recovery key."""
    _login(site, address)
    check_format(state, site.site)
    if mode_of(site, address) != "per_user" or not mailcrypt.has_user_key(state, address):
        raise UserError(
            f"{address} has no per-user key to recover; set its password with `mailstack "
            "hash-password` (or `mailstack password` if you know the old one)"
        )
    new_hash = hash_password(new)
    mailcrypt.recover(state, address, identity, new, new_hash)
    write_hash(site_path, address, new_hash)
    return "its key unsealed with the recovery key and wrapped for the new password"


def write_hash(site_path: Path, address: str, new_hash: str) -> None:
    """Set mailboxes[…].password_hash of ``address`` in the site file, keeping the rest as it is."""
    yaml = YAML()  # round-trip: comments, order and quoting stay
    yaml.preserve_quotes = True
    yaml.width = 4096
    text = site_path.read_text(encoding="utf-8")
    _, indent, sequence_offset = load_yaml_guess_indent(text)
    # load_yaml_guess_indent gives the sequence indent and the dash offset (ruamel's docs).
    yaml.indent(mapping=sequence_offset or 2, sequence=indent, offset=sequence_offset)
    data = yaml.load(text)
    for entry in data.get("mailboxes") or ():
        if str(entry.get("address", "")).lower() == address.lower():
            old = entry.get("password_hash")
            # Quoted as the old hash was ({ begins a flow mapping: never plain).
            style = (
                SingleQuotedScalarString
                if isinstance(old, SingleQuotedScalarString)
                else DoubleQuotedScalarString
            )
            entry["password_hash"] = style(new_hash)
            break
    else:
        raise UserError(f"{site_path}: no mailbox {address}")
    fd, tmp = tempfile.mkstemp(dir=site_path.parent, prefix=f".{site_path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yaml.dump(data, handle)
        Path(tmp).chmod(site_path.stat().st_mode & 0o7777)
        Path(tmp).replace(site_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _login(site: Site, address: str) -> Mailbox:
    for mailbox in site.mailboxes:
        if mailbox.address == address.lower():
            return mailbox
    raise UserError(f"{address} is not a mailbox of site {site.site} (shared mailboxes have no password)")


def _verifies(password: str, hashed: str) -> bool:
    try:
        return verify_password(password, hashed)
    except ValueError as exc:
        raise UserError(
            f"cannot check the old password: {exc}; give the mailbox a new hash instead"
        ) from None


def _recipient(site: Site) -> str:
    if site.encryption.recovery is None:  # validation requires it with per_user mailboxes
        raise UserError("encryption.recovery is not set")
    return site.encryption.recovery
