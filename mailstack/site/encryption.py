"""encryption: how Dovecot's mail_crypt stores each mailbox's mail (a site default, per-mailbox
overrides).

- ``site``: every message is written encrypted to one key pair of the site, kept in the state
  (never in the rendered tree or the backups). Protects disks, snapshots and backups.
- ``per_user``: the mailbox's own key pair. Its private key is kept wrapped with the mailbox's
  password (which Dovecot has only while the user logs in) and, for recovery, sealed to an age
  recipient whose identity the operator keeps offline. Root on the server without the password
  cannot read what was delivered since.
- ``none``: written as it comes (mail stored before still reads).

Shared mailboxes have no password, so they always use the site key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, StringConstraints

from mailstack.site.base import Model

if TYPE_CHECKING:
    from mailstack.site.models import Loc, Site

Mode = Literal["site", "per_user", "none"]
MODES: tuple[Mode, ...] = ("site", "per_user", "none")

# An age X25519 recipient (https://age-encryption.org/v1): "age1" and 58 Bech32 characters.
AgeRecipient = Annotated[str, StringConstraints(pattern=r"^age1[02-9ac-hj-np-z]{58}$")]


class Encryption(Model):
    """Encryption at rest (Dovecot mail_crypt)."""

    default: Mode = Field(
        default="site",
        description=(
            "How mailboxes without an `encryption` of their own store mail: site (one key pair "
            "in the state), per_user (each mailbox's own key, unlocked by its password) or none."
        ),
    )
    recovery: AgeRecipient | None = Field(
        default=None,
        description=(
            "age recipient (age1…) that every per-user private key is also sealed to, for "
            "`mailstack recover`; keep its identity offline. Required with per_user mailboxes."
        ),
    )


def mode_of(site: Site, address: str) -> Mode:
    """The encryption mode of a login mailbox."""
    for mailbox in site.mailboxes:
        if mailbox.address == address:
            return mailbox.encryption or site.encryption.default
    raise KeyError(address)


def per_user_addresses(site: Site) -> list[str]:
    return [m.address for m in site.mailboxes if mode_of(site, m.address) == "per_user"]


def encryption_rules(site: Site) -> Iterator[tuple[Loc, str]]:
    if per_user_addresses(site) and site.encryption.recovery is None:
        yield (
            ("encryption", "recovery"),
            "per_user mailboxes need a recovery recipient (an age public key, age1…; make one "
            "with `mailstack recovery-key FILE` and keep FILE offline): without it a forgotten "
            "password loses the mailbox's mail",
        )
