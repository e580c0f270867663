"""Password hashes in Dovecot's ``{SCHEME}`` form.

ARGON2ID comes from argon2-cffi (the reference implementation's binding), SHA512-CRYPT from
libpass (the maintained passlib). Dovecot verifies both with libsodium and libc crypt.
"""

from __future__ import annotations

import secrets
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from passlib.hash import sha512_crypt

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
    """Check ``password`` against a ``{SCHEME}`` hash made by :func:`hash_password`."""
    scheme, _, digest = hashed.removeprefix("{").partition("}")
    if scheme == "ARGON2ID":
        try:
            return PasswordHasher().verify(digest, password)
        except VerificationError:
            return False
    if scheme == "SHA512-CRYPT":
        return bool(sha512_crypt.verify(password, digest))
    raise ValueError(f"cannot verify scheme {{{scheme}}}")


def generate_password() -> str:
    """A random password for a new mailbox: 24 URL-safe characters, about 144 bits."""
    return secrets.token_urlsafe(18)
