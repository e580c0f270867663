"""Password hashes in Dovecot's ``{SCHEME}`` form.

ARGON2ID comes from argon2-cffi (the reference implementation's binding), SHA512-CRYPT from
libpass (the maintained passlib). Dovecot verifies both with libsodium and libc crypt.
"""

from __future__ import annotations

import secrets
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from passlib.hash import bcrypt, sha256_crypt, sha512_crypt

Scheme = Literal["ARGON2ID", "SHA512-CRYPT"]
SCHEMES: tuple[Scheme, ...] = ("ARGON2ID", "SHA512-CRYPT")

# Enough rounds to slow offline guessing, few enough that a login costs well under 100 ms.
_SHA512_ROUNDS = 100_000


def hash_password(password: str, scheme: Scheme = "ARGON2ID") -> str:
    if scheme == "ARGON2ID":
        return "{ARGON2ID}" + PasswordHasher().hash(password)
    return "{SHA512-CRYPT}" + str(sha512_crypt.using(rounds=_SHA512_ROUNDS).hash(password))


def hash_token(token: str) -> str:
    """ARGON2ID with light parameters, for machine-made passwords only (such as the probe
    mailbox's 144 random bits): stretching protects guessable passwords, and a login with
    this hash costs Dovecot milliseconds instead of a second of a small server's CPU."""
    return "{ARGON2ID}" + PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(token)


def verify_password(password: str, hashed: str) -> bool:
    """Check ``password`` against a ``{SCHEME}`` hash of any scheme a site file accepts."""
    scheme, _, digest = hashed.removeprefix("{").partition("}")
    if scheme in ("ARGON2ID", "ARGON2I"):  # the hash names its variant and parameters
        try:
            return PasswordHasher().verify(digest, password)
        except (VerificationError, InvalidHashError):
            return False
    crypt = {"SHA512-CRYPT": sha512_crypt, "SHA256-CRYPT": sha256_crypt, "BLF-CRYPT": bcrypt}.get(scheme)
    if crypt is None:
        raise ValueError(f"cannot verify scheme {{{scheme}}}")
    try:
        return bool(crypt.verify(password, digest))
    except ValueError:  # a malformed hash verifies nothing
        return False


def generate_password() -> str:
    """A random password for a new mailbox: 24 URL-safe characters, about 144 bits."""
    return secrets.token_urlsafe(18)
