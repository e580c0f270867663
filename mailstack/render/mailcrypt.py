"""Dovecot mail_crypt: where its keys are inside the dovecot container, and each login's
userdb fields (see mailstack.site.encryption and mailstack.state.mailcrypt)."""

from __future__ import annotations

from dataclasses import dataclass

from mailstack.services import STATE_MOUNT
from mailstack.services.paths import MAILCRYPT_PASSDB_DIR
from mailstack.site.encryption import mode_of, per_user_addresses
from mailstack.site.models import Site
from mailstack.state.mailcrypt import SITE_KEY, SITE_PUB, USER_SLOT
from mailstack.state.view import StateView


@dataclass(frozen=True)
class MailCryptSettings:
    site_pub: str
    site_key: str
    user_slot: str  # the private key slot a per_user login fills from the passdb
    passdb: str  # one file per domain; "" when no mailbox is per_user: no second passdb


def mailcrypt_settings(site: Site) -> MailCryptSettings:
    return MailCryptSettings(
        site_pub=f"{STATE_MOUNT}/{SITE_PUB}",
        site_key=f"{STATE_MOUNT}/{SITE_KEY}",
        user_slot=USER_SLOT,
        # A path with a variable: only the auth worker (root) opens it, at lookup; the auth
        # process (dovecot) would open a fixed path at start and fail on the root-only file.
        passdb=f"{MAILCRYPT_PASSDB_DIR}/%{{user | domain}}" if per_user_addresses(site) else "",
    )


def mailcrypt_fields(site: Site, state: StateView) -> dict[str, str]:
    """Login mailbox → its mail_crypt userdb fields (none for the site key, the default).

    per_user: its own public key, so that delivery encrypts to it without a password (the
    private key comes from the passdb, at login only). none: no write algorithm, Dovecot's
    read-only mode (what was encrypted before still reads).
    """
    public = {k.address: k.public_b64 for k in state.user_keys}
    fields = {}
    for m in site.mailboxes:
        mode = mode_of(site, m.address)
        if mode == "per_user":
            fields[m.address] = f"userdb_crypt_global_public_key_file=inline:{public[m.address]}"
        elif mode == "none":
            fields[m.address] = NO_ENCRYPTION
    return fields


NO_ENCRYPTION = "userdb_crypt_write_algorithm="
