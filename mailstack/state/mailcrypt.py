"""Keys for Dovecot's mail_crypt, kept in the state (see mailstack.site.encryption).

Layout inside the state directory (every file 0600)::

    mailcrypt/site.key, site.pub        the site's EC P-256 key pair (PKCS#8 / SPKI PEM)
    mailcrypt/users/<address>/pub.pem   a per_user mailbox's public key: new mail is
                                        encrypted to it (delivery needs no password)
    mailcrypt/users/<address>/key.pem   its private key, PKCS#8 encrypted (PBES2, AES-256)
                                        with the hex SHA-256 of the mailbox's password, the
                                        form Dovecot derives at login (%{password | sha256})
    mailcrypt/users/<address>/recovery.age  the private key sealed to encryption.recovery
    mailcrypt/users/<address>/hash      the password_hash the key is wrapped for: a site file
                                        whose hash differs was edited by hand
    mailcrypt/passdb/<domain>           Dovecot passwd-file lines that hand each per_user
                                        login its wrapped key (derived from the above; one
                                        file per domain, empty without per_user mailboxes)

The site key pair is made once and never replaced. A per-user key is made by `mailstack
password` (which knows the password) and re-wrapped by it or by `mailstack recover`; the
key pair itself never changes, so mail delivered before a password change still reads.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import quote

import pyrage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailstack.errors import StateError, UserError
from mailstack.service_types import MAILCRYPT_PASSDB
from mailstack.state.files import StateFiles
from mailstack.state.mailcrypt_view import UserKey

SITE_KEY = "mailcrypt/site.key"
SITE_PUB = "mailcrypt/site.pub"
USERS = "mailcrypt/users"
PASSDB = MAILCRYPT_PASSDB  # a folder: one file per domain, mounted into dovecot
# The private key slot that per_user logins fill (dovecot.conf: crypt_global_private_key user).
USER_SLOT = "user"


def ensure_site_key(files: StateFiles) -> None:
    def make_key() -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    files.create(SITE_KEY, make_key)
    files.create(SITE_PUB, lambda: _public_pem(_load(files.read(SITE_KEY), None)))


def user_keys(
    files: StateFiles, domains: tuple[str, ...], addresses: list[str], hashes: dict[str, tuple[str, str]]
) -> tuple[UserKey, ...]:
    """The per_user mailboxes' public keys, after checking that each has its key and that the
    site file's hash is the one the key is wrapped for; and the passdb that hands them out.
    ``hashes``: address → (its field path in the site file, its password_hash)."""
    if not addresses:
        return ()  # no passdb mounted: nothing to write
    keys = []
    lines: dict[str, list[str]] = {domain: [] for domain in domains}
    for address in addresses:
        folder = _folder(address)
        loc, hashed = hashes[address]
        if not files.exists(f"{folder}/key.pem"):
            raise UserError(
                f"{loc}.encryption: mailbox {address} is per_user encrypted but has no key "
                f"yet: its key is made with its password, by `mailstack password SITE {address}`"
            )
        if files.read(f"{folder}/hash").decode().strip() != hashed:
            raise UserError(
                f"{loc}.password_hash: mailbox {address}'s hash differs from the one its encryption key is "
                "wrapped for (edited by hand?); change a per_user mailbox's password with "
                f"`mailstack password SITE {address}`, or without the old one with `mailstack "
                f"recover SITE {address} --recovery-key FILE`"
            )
        keys.append(UserKey(address, _b64(files.read(f"{folder}/pub.pem"))))
        wrapped = _b64(files.read(f"{folder}/key.pem"))
        slot = f"userdb_crypt_global_private_key/{USER_SLOT}"
        lines[address.rpartition("@")[2]].append(
            f"{address}:::::::noauthenticate {slot}/crypt_private_key_file=inline:{wrapped} "
            f"{slot}/crypt_private_key_password=%{{password|sha256}}\n"
        )
    for domain, domain_lines in lines.items():
        passdb = "".join(domain_lines).encode()
        relpath = f"{PASSDB}/{domain}"
        if not files.exists(relpath) or files.read(relpath) != passdb:
            # In place: compose binds the file by inode, and Dovecot rereads a changed passwd-file.
            files.replace(relpath, passdb)
    return tuple(keys)


def create_user_key(files: StateFiles, address: str, password: str, recipient: str, hashed: str) -> None:
    """A new key pair for a per_user mailbox, wrapped with ``password`` and sealed to ``recipient``."""
    key = ec.generate_private_key(ec.SECP256R1())
    folder = _folder(address)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    sealed: bytes = pyrage.encrypt(pem, [pyrage.x25519.Recipient.from_str(recipient)])
    files.create(f"{folder}/pub.pem", lambda: _public_pem(key))
    files.create(f"{folder}/recovery.age", lambda: sealed)
    _wrap(files, folder, key, password, hashed)


def rewrap(files: StateFiles, address: str, old: str, new: str, hashed: str) -> None:
    folder = _folder(address)
    try:
        key = _load(files.read(f"{folder}/key.pem"), _secret(old))
    except ValueError:
        raise UserError(f"the old password does not unlock {address}'s key: nothing changed") from None
    _wrap(files, folder, key, new, hashed)


def recover(files: StateFiles, address: str, identity: str, new: str, hashed: str) -> None:
    folder = _folder(address)
    # An age identity file: comment lines (# created: …, # public key: …) and the key.
    lines = [line.strip() for line in identity.splitlines() if line.strip() and not line.startswith("#")]
    try:
        ident = pyrage.x25519.Identity.from_str(lines[0] if lines else "")
    except pyrage.IdentityError:
        raise UserError("the recovery key file holds no age identity (AGE-SECRET-KEY-1…)") from None
    try:
        pem: bytes = pyrage.decrypt(files.read(f"{folder}/recovery.age"), [ident])
    except pyrage.DecryptError:
        raise UserError(
            f"this recovery key does not open {address}'s sealed key (not the identity of "
            "encryption.recovery when the key was made): nothing changed"
        ) from None
    _wrap(files, folder, _load(pem, None), new, hashed)


def wrapped_for(files: StateFiles, address: str, hashed: str) -> bool:
    """Whether the mailbox's key is wrapped for the password behind ``hashed``."""
    return files.read(f"{_folder(address)}/hash").decode().strip() == hashed


def has_user_key(files: StateFiles, address: str) -> bool:
    return files.exists(f"{_folder(address)}/key.pem")


def new_recovery_identity() -> tuple[str, str]:
    """An age identity (AGE-SECRET-KEY-1…) and its recipient (age1…)."""
    ident = pyrage.x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def _wrap(
    files: StateFiles, folder: str, key: ec.EllipticCurvePrivateKey, password: str, hashed: str
) -> None:
    wrapped = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(_secret(password)),
    )
    files.replace(f"{folder}/key.pem", wrapped)
    files.replace(f"{folder}/hash", hashed.encode() + b"\n")


def _folder(address: str) -> str:
    # A local part may hold "/" (RFC 5321 allows it): never a path separator here.
    return f"{USERS}/{quote(address, safe='@.+-_')}"


def _secret(password: str) -> bytes:
    """What Dovecot passes as the key's password: %{password | sha256}, lowercase hex."""
    return hashlib.sha256(password.encode()).hexdigest().encode()


def _load(pem: bytes, password: bytes | None) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise StateError("a mail_crypt key in the state is not an EC key")
    return key


def _public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
