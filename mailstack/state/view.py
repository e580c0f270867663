"""What rendering may know of the state: public keys and paths, never secret values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mailstack.state.mailcrypt_view import UserKey

Algorithm = Literal["rsa", "ed25519"]


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: Algorithm
    public_b64: str  # the p= value of the DNS TXT record (RFC 6376, RFC 8463)
    relpath: str  # of the private key, inside the state directory


@dataclass(frozen=True)
class TlsaKey:
    """A server public key for DANE (TLSA 3 1 1): one in use, or the next one, kept ready."""

    kind: str  # ecdsa | rsa
    role: Literal["current", "next"]
    spki_sha256: str  # hex SHA-256 of the DER SubjectPublicKeyInfo (RFC 6698 selector 1, type 1)
    source: str  # the key's path inside the state directory, or the operator's cert_file


@dataclass(frozen=True)
class StateView:
    """What rendering may know of the state: public parts and paths, never secret values."""

    dkim: tuple[DkimKey, ...]
    tls_files: dict[str, str]  # role (ca_cert, ecdsa_key, …) → path inside the state directory
    secret_files: dict[str, str]  # secret name → path inside the state directory
    tlsa: tuple[TlsaKey, ...] = ()  # server keys to pin in DNS, in use first, then the next ones
    probe_hash: str = ""  # the password hash of the probe mailbox (`mailstack check`)
    # mail_crypt: site_key, site_pub and passdb → path inside the state directory
    mailcrypt_files: dict[str, str] = field(default_factory=dict)
    user_keys: tuple[UserKey, ...] = ()  # the per_user mailboxes' public keys
