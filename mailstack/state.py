"""The site's state: what is created once and kept (DKIM keys, local CA, internal passwords).

Layout of ``<state_dir>`` (0700; every file 0600)::

    state.json                        {"format": 1, "site": …}
    dkim/<domain>/<selector>.pem      RSA-2048 and Ed25519 private keys (PKCS#8)
    tls/ca.key, tls/ca.crt            local CA (tls.mode selfsigned)
    tls/<hostname>/{ecdsa,rsa}.{key,crt}  ECDSA P-256 and RSA-3072 (RSA-2048 in older states)
    tls/<hostname>/next-{ecdsa,rsa}.key   the keys a renewal switches to, pinned in TLSA ahead
    acme/account.key                  the ACME account's key (tls.mode acme)
    acme/keys/{ecdsa,rsa}-NNNN.key    server keys by generation: the one in use, then the next
    acme/tls/live/{ecdsa,rsa}.{key,crt,pem}  what the services serve (key, chain, key + chain),
                                      self-signed by the local CA until the first issuance
    acme/tls/live/serial              changes with every switch: the services reload on it
    acme/status.json, account.json    written by the acme service (attempts, back-off, account)
    secrets/<name>                    internal service passwords
    secrets/probe_password            the probe mailbox's password (`mailstack check`)
    probe/password_hash               its hash, rendered like the site's mailbox hashes

Nothing here is ever replaced: files are created with O_EXCL semantics, and a re-render
only adds what is missing (a new domain's keys, a certificate for a new hostname). The one
exception is a server certificate whose names no longer cover the site (a new domain needs
mta-sts/autoconfig/autodiscover.<domain>): it is re-issued for the SAME key, so no key is
rotated and the TLSA records (which pin the key) stay valid. Under acme/ the acme service
owns the live certificates and the key generations after the first two; a render only
reads them (and adds the next key when the acme service has not yet).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailstack.errors import StateError
from mailstack.passwords import hash_token
from mailstack.site.models import Site
from mailstack.vault import VAULT_HEADER, Vault

STATE_FORMAT = 1
SECRET_NAMES = ("rspamd_controller", "redis")
# The probe mailbox's hash is rendered into Dovecot's users file like every mailbox's hash
# (those sit in the site file, in git); the password, 144 random bits, stays a secret.
PROBE_PASSWORD, PROBE_HASH = "secrets/probe_password", "probe/password_hash"
CA_DAYS = 3650
# RSA server keys made from now on (BSI TR-02102-2 and internet.nl want 3072 bits or more);
# keys already in a state directory stay as they are: nothing here is ever rotated.
SERVER_RSA_BITS = 3072
SERVER_DAYS = 825

SERVER_KINDS = ("ecdsa", "rsa")
# tls.mode acme (the acme service's side: compose/images/acme/acme.py)
ACME_ACCOUNT_KEY = "acme/account.key"
ACME_KEYS = "acme/keys"
ACME_LIVE = "acme/tls/live"
ACME_STATUS = "acme/status.json"

Algorithm = Literal["rsa", "ed25519"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


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


@dataclass
class StateChanges:
    created: list[str] = field(default_factory=list)
    fixed_modes: list[str] = field(default_factory=list)
    reissued: list[str] = field(default_factory=list)  # certificates re-issued for more names


class State:
    """A state directory. With ``write=False`` missing items are made in memory only."""

    def __init__(self, root: Path, *, write: bool = True, vault: Vault | None = None) -> None:
        self.root = root
        self.write = write
        self.vault = vault
        self.changes = StateChanges()
        self._pending: dict[str, bytes] = {}

    # -- public entry point -------------------------------------------------------------
    def ensure(self, site: Site) -> StateView:
        self._check_format(site)
        dkim = tuple(k for d in site.domain_names for k in self._dkim_keys(d))
        tls_files = {}
        if site.tls.mode == "selfsigned":
            tls_files = self._tls(site.hostname, server_names(site))
        elif site.tls.mode == "acme":
            tls_files = self._acme(site.hostname, server_names(site))
        secret_files = {name: self._secret(name) for name in SECRET_NAMES}
        tlsa = self._tlsa(site)
        probe_hash = self._probe_hash()
        if self.write:
            self._tighten_modes()
        return StateView(
            dkim=dkim, tls_files=tls_files, secret_files=secret_files, tlsa=tlsa, probe_hash=probe_hash
        )

    # -- format -------------------------------------------------------------------------
    def _check_format(self, site: Site) -> None:
        marker = self.root / "state.json"
        if not marker.exists():
            if self.root.exists() and any(self.root.iterdir()):
                raise StateError(
                    f"{self.root} is not empty and has no state.json; is it a mailstack state directory?"
                )
            self._create("state.json", lambda: _json({"format": STATE_FORMAT, "site": site.site}))
            return
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
            fmt, owner = int(info["format"]), str(info["site"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{marker} is damaged ({exc}); restore it from a backup") from None
        if fmt > STATE_FORMAT:
            raise StateError(
                f"{self.root} has state format {fmt}, newer than this mailstack understands "
                f"({STATE_FORMAT}); upgrade mailstack instead of touching it"
            )
        if fmt < STATE_FORMAT:
            raise StateError(f"{self.root} has state format {fmt}; run `mailstack state migrate` first")
        if owner != site.site:
            raise StateError(f"{self.root} belongs to site {owner!r}, not {site.site!r}")

    # -- DKIM -----------------------------------------------------------------------------
    def _dkim_keys(self, domain: str) -> list[DkimKey]:
        keys = []
        today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        for algorithm, suffix, make in (
            ("rsa", "r", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            ("ed25519", "e", ed25519.Ed25519PrivateKey.generate),
        ):
            existing = self._find(f"dkim/{domain}", suffix)
            relpath = existing or f"dkim/{domain}/s{today}{suffix}.pem"
            key = self._key(relpath, make)
            keys.append(
                DkimKey(
                    domain=domain,
                    selector=Path(relpath).stem,
                    algorithm=algorithm,  # type: ignore[arg-type]
                    public_b64=_dkim_public(key),
                    relpath=relpath,
                )
            )
        return keys

    def _find(self, folder: str, suffix: str) -> str | None:
        """The newest existing key of one algorithm (selectors end in r or e)."""
        candidates = (
            sorted((self.root / folder).glob(f"*{suffix}.pem")) if (self.root / folder).is_dir() else []
        )
        candidates += [
            Path(p) for p in self._pending if p.startswith(folder + "/") and p.endswith(f"{suffix}.pem")
        ]
        return f"{folder}/{max(candidates, key=lambda p: Path(p).name).name}" if candidates else None

    # -- TLS --------------------------------------------------------------------------------
    def _tls(self, hostname: str, names: tuple[str, ...]) -> dict[str, str]:
        ca_key, ca_cert = self._local_ca(hostname)
        files = {"ca_cert": "tls/ca.crt"}
        for kind, make in (
            ("ecdsa", lambda: ec.generate_private_key(ec.SECP256R1())),
            ("rsa", lambda: rsa.generate_private_key(public_exponent=65537, key_size=SERVER_RSA_BITS)),
        ):
            key_path, cert_path = f"tls/{hostname}/{kind}.key", f"tls/{hostname}/{kind}.crt"
            key = self._key(key_path, make)
            cert = self._cert(cert_path, lambda key=key: _server_cert(key, names, ca_key, ca_cert))  # type: ignore[misc]
            if not set(names) <= _dns_names(cert) or not _same_key(cert, key):
                self._reissue(cert_path, _server_cert(key, names, ca_key, ca_cert))
            files[f"{kind}_key"], files[f"{kind}_cert"] = key_path, cert_path
        return files

    def _local_ca(self, hostname: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        ca_key = self._key("tls/ca.key", lambda: ec.generate_private_key(ec.SECP256R1()))
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)  # noqa: S101 - our own file
        return ca_key, self._cert("tls/ca.crt", lambda: ca_certificate(ca_key, hostname))

    def _acme(self, hostname: str, names: tuple[str, ...]) -> dict[str, str]:
        """tls.mode acme: the account key, the first two key generations, and until the first
        issuance a certificate from the local CA, so that the web service can answer the
        challenge. Keys of a site that used tls.mode selfsigned are carried over (the ones
        in use and the next ones), so that the published TLSA records stay valid."""
        ca_key, ca_cert = self._local_ca(hostname)
        self._key(ACME_ACCOUNT_KEY, lambda: ec.generate_private_key(ec.SECP256R1()))
        files = {"ca_cert": "tls/ca.crt"}
        for kind in SERVER_KINDS:
            key = self._key(acme_key_path(kind, 1), self._carried_over(f"tls/{hostname}/{kind}.key", kind))
            self._key(acme_key_path(kind, 2), self._carried_over(f"tls/{hostname}/next-{kind}.key", kind))
            live = f"{ACME_LIVE}/{kind}"
            self._create(f"{live}.key", lambda: self.read(acme_key_path(kind, 1)))  # noqa: B023
            cert = self._cert(f"{live}.crt", lambda: _server_cert(key, names, ca_key, ca_cert))  # noqa: B023
            self._create(
                f"{live}.pem",
                lambda: self.read(f"{live}.key") + cert.public_bytes(serialization.Encoding.PEM),  # noqa: B023
            )
            for role, suffix in (("key", "key"), ("cert", "crt"), ("pem", "pem")):
                files[f"{kind}_{role}"] = f"{live}.{suffix}"
        self._create(f"{ACME_LIVE}/serial", lambda: b"selfsigned\n")
        return files

    def _carried_over(self, relpath: str, kind: str) -> Callable[[], PrivateKey]:
        def make() -> PrivateKey:
            if (self.root / relpath).exists() or relpath in self._pending:
                key = serialization.load_pem_private_key(self.read(relpath), password=None)
                assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)  # noqa: S101
                return key
            return _new_server_key(kind)

        return make

    def _acme_tlsa(self) -> tuple[TlsaKey, ...]:
        """The key each live certificate has, then the next generation after it (created here
        when the acme service has not made it yet)."""
        current, following = [], []
        for kind in SERVER_KINDS:
            cert_path = f"{ACME_LIVE}/{kind}.crt"
            served = _spki_sha256(x509.load_pem_x509_certificate(self.read(cert_path)))
            generations = self._generations(kind)
            in_use = next((g for g, digest in generations.items() if digest == served), None)
            after = (in_use or max(generations, default=0)) + 1
            relpath = acme_key_path(kind, after)
            key = self._key(relpath, functools.partial(_new_server_key, kind))
            source = acme_key_path(kind, in_use) if in_use else cert_path
            current.append(TlsaKey(kind, "current", served, source))
            following.append(TlsaKey(kind, "next", _spki_sha256(key), relpath))
        return (*current, *following)

    def _generations(self, kind: str) -> dict[int, str]:
        """Generation number → SPKI digest of every key of one kind under acme/keys."""
        folder = self.root / ACME_KEYS
        paths = {p.name for p in folder.glob(f"{kind}-*.key")} if folder.is_dir() else set()
        paths |= {Path(p).name for p in self._pending if p.startswith(f"{ACME_KEYS}/{kind}-")}
        found = {}
        for name in paths:
            number = name.removeprefix(f"{kind}-").removesuffix(".key")
            if number.isdigit():
                found[int(number)] = _spki_sha256(self._key(f"{ACME_KEYS}/{name}", lambda: _no_key()))
        return dict(sorted(found.items()))

    def _tlsa(self, site: Site) -> tuple[TlsaKey, ...]:
        """DANE pins: the server keys in use, then the next ones (created once, never rotated
        by a render) so that a renewal switching to them is already published (RFC 7671 §8.1)."""
        if site.tls.mode == "files":
            return _cert_file_tlsa(site.tls.cert_file)
        if site.tls.mode == "acme":
            return self._acme_tlsa()
        roles: tuple[tuple[Literal["current", "next"], str], ...] = (("current", ""), ("next", "next-"))
        pins = []
        for role, prefix in roles:
            for kind in ("ecdsa", "rsa"):
                relpath = f"tls/{site.hostname}/{prefix}{kind}.key"
                key = self._key(relpath, functools.partial(_new_server_key, kind))
                pins.append(TlsaKey(kind, role, _spki_sha256(key), relpath))
        return tuple(pins)

    # -- secrets ------------------------------------------------------------------------------
    def probe_password(self) -> str:
        """The probe mailbox's password (made with the state, like every other secret)."""
        return self.read(PROBE_PASSWORD).decode().strip()

    def _probe_hash(self) -> str:
        # The hash is kept beside the password so that rendering stays byte-identical (a new
        # hash would carry a new salt every time).
        self._create(PROBE_PASSWORD, lambda: secrets.token_urlsafe(18).encode() + b"\n")
        self._create(PROBE_HASH, lambda: hash_token(self.probe_password()).encode() + b"\n")
        return self.read(PROBE_HASH).decode().strip()

    def _secret(self, name: str) -> str:
        relpath = f"secrets/{name}"
        self._create(relpath, lambda: secrets.token_urlsafe(32).encode() + b"\n")
        return relpath

    # -- storage ------------------------------------------------------------------------------
    def read(self, relpath: str) -> bytes:
        if relpath in self._pending:
            return self._pending[relpath]
        data = (self.root / relpath).read_bytes()
        if data.startswith(VAULT_HEADER):
            if self.vault is None:
                raise StateError(
                    f"{self.root / relpath} is encrypted with ansible-vault; pass --vault-password-file"
                )
            return self.vault.decrypt(data, str(self.root / relpath))
        return data

    def _key(self, relpath: str, make: Callable[[], PrivateKey]) -> PrivateKey:
        self._create(
            relpath,
            lambda: make().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        try:
            key = serialization.load_pem_private_key(self.read(relpath), password=None)
        except ValueError as exc:
            raise StateError(f"{self.root / relpath} is not a readable private key: {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise StateError(f"{self.root / relpath} holds an unexpected key type")
        return key

    def _cert(self, relpath: str, make: Callable[[], x509.Certificate]) -> x509.Certificate:
        self._create(relpath, lambda: make().public_bytes(serialization.Encoding.PEM))
        try:
            return x509.load_pem_x509_certificate(self.read(relpath))
        except ValueError as exc:
            raise StateError(f"{self.root / relpath} is not a readable certificate: {exc}") from None

    def _create(self, relpath: str, make: Callable[[], bytes]) -> None:
        target = self.root / relpath
        if relpath in self._pending or target.exists():
            return
        content = make()
        self.changes.created.append(relpath)
        if not self.write:
            self._pending[relpath] = content
            return
        self.root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for parent in reversed(target.relative_to(self.root.parent).parents[:-1]):
            (self.root.parent / parent).mkdir(mode=0o700, exist_ok=True)
        if self.vault is not None and self._vaulted():
            # A state kept encrypted (for git) gets its new keys encrypted too, never in plain.
            content = self.vault.encrypt(content)
        _write_new(target, content)

    def _vaulted(self) -> bool:
        """The state is kept encrypted: its first secret is (state.json never is)."""
        marker = self.root / "secrets" / SECRET_NAMES[0]
        return marker.exists() and marker.read_bytes().startswith(VAULT_HEADER)

    def _reissue(self, relpath: str, cert: x509.Certificate | bytes) -> None:
        """Replace a certificate (public data) by one for the same key with more names (or a
        file the acme service of a host rewrote).

        Written in place, keeping the inode: compose binds each secret file into the
        containers by inode, so a rename would leave them reading the old certificate.
        """
        content = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.PEM)
        self.changes.reissued.append(relpath)
        target = self.root / relpath
        if not self.write:
            self._pending[relpath] = content
            return
        if target.read_bytes().startswith(VAULT_HEADER) and self.vault is not None:
            content = self.vault.encrypt(content)
        with target.open("r+b") as handle:
            handle.write(content)
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())

    def adopt_acme(self, pulled: Path) -> list[str]:
        """Take what a host's acme service wrote (its acme/, copied back by `mailstack deploy`):
        key generations it made are added (a key here is never replaced), the live
        certificates, its status and account are replaced (the host's are newer). So
        `mailstack dns` pins what the host serves and the key it will switch to next."""
        taken = []
        for path in sorted(p for p in pulled.rglob("*") if p.is_file() and not p.name.startswith(".")):
            relpath = f"acme/{path.relative_to(pulled).as_posix()}"
            content = path.read_bytes()
            if (self.root / relpath).exists():
                if relpath.startswith(f"{ACME_KEYS}/") or relpath == ACME_ACCOUNT_KEY:
                    continue
                if self.read(relpath) == content:
                    continue
                self._reissue(relpath, content)
            else:
                self._create(relpath, lambda content=content: content)  # type: ignore[misc]
            taken.append(relpath)
        if self.write:
            self._tighten_modes()
        return taken

    def _tighten_modes(self) -> None:
        for path in [self.root, *sorted(self.root.rglob("*"))]:
            wanted = 0o700 if path.is_dir() else 0o600
            if stat.S_IMODE(path.stat().st_mode) != wanted:
                path.chmod(wanted)
                self.changes.fixed_modes.append(str(path.relative_to(self.root)) or ".")


def _write_new(target: Path, content: bytes) -> None:
    """Create ``target`` with mode 0600, failing rather than replacing an existing file."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, target)  # atomic and refuses to overwrite
    finally:
        tmp.unlink()


def acme_key_path(kind: str, generation: int) -> str:
    return f"{ACME_KEYS}/{kind}-{generation:04d}.key"


def _no_key() -> PrivateKey:
    raise StateError("a listed key file vanished while it was read")


def _json(data: object) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _new_server_key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=SERVER_RSA_BITS)
    return ec.generate_private_key(ec.SECP256R1())


def _spki_sha256(key: PrivateKey | x509.Certificate) -> str:
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def _cert_file_tlsa(cert_file: str | None) -> tuple[TlsaKey, ...]:
    """tls.mode files: pin the key of the operator's certificate (the first in the chain file).

    No next key is known here; an unreadable file gives no pin (`mailstack dns` says so).
    """
    try:
        leaf = x509.load_pem_x509_certificates(Path(cert_file or "").read_bytes())[0]
        kind = "rsa" if isinstance(leaf.public_key(), rsa.RSAPublicKey) else "ecdsa"  # or ECDSA
        return (TlsaKey(kind, "current", _spki_sha256(leaf), str(cert_file)),)
    except (OSError, ValueError, IndexError):
        return ()


def _dkim_public(key: PrivateKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return base64.b64encode(raw).decode("ascii")


def ca_certificate(key: ec.EllipticCurvePrivateKey, hostname: str) -> x509.Certificate:
    """A local CA for ``hostname``: signs server certificates only (path length 0)."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailstack"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"mailstack local CA for {hostname}"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def server_names(site: Site) -> tuple[str, ...]:
    """The names of the server certificates: hostname first (subject CN), then per domain the
    web service's names (mta-sts, autoconfig, autodiscover), in the site's order."""
    names = [site.hostname]
    names += [
        f"{prefix}.{d}" for d in site.domain_names for prefix in ("mta-sts", "autoconfig", "autodiscover")
    ]
    return tuple(dict.fromkeys(names))


def _dns_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in san.get_values_for_type(x509.DNSName)}


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    return _spki_sha256(cert) == _spki_sha256(key)


def _server_cert(
    key: PrivateKey, names: tuple[str, ...], ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> x509.Certificate:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raise StateError("server certificates use ECDSA or RSA keys")
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
