"""Files of a state directory: made once (never replaced), read and written through the vault
when the state is kept encrypted, and kept at 0700/0600."""

from __future__ import annotations

import fnmatch
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mailstack.errors import StateError
from mailstack.state.crypto import PrivateKey
from mailstack.state.layout import SECRET_NAMES
from mailstack.vault import VAULT_HEADER, Vault


@dataclass
class StateChanges:
    created: list[str] = field(default_factory=list)
    fixed_modes: list[str] = field(default_factory=list)
    reissued: list[str] = field(default_factory=list)  # certificates re-issued for more names


class StateFiles:
    """The files of a state directory. With ``write=False`` missing ones are made in memory only."""

    def __init__(self, root: Path, *, write: bool = True, vault: Vault | None = None) -> None:
        self.root = root
        self.write = write
        self.vault = vault
        self.changes = StateChanges()
        self._pending: dict[str, bytes] = {}

    def exists(self, relpath: str) -> bool:
        """On disk, or made in memory by a dry run."""
        return relpath in self._pending or (self.root / relpath).exists()

    def listed(self, folder: str, pattern: str) -> set[str]:
        """Names of the files in ``folder`` that match the glob ``pattern``, on disk or pending."""
        on_disk = (self.root / folder).glob(pattern) if (self.root / folder).is_dir() else ()
        pending = (PurePosixPath(p) for p in self._pending)
        return {p.name for p in on_disk} | {
            p.name for p in pending if p.parent == PurePosixPath(folder) and fnmatch.fnmatch(p.name, pattern)
        }

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

    def key(self, relpath: str, make: Callable[[], PrivateKey]) -> PrivateKey:
        """The private key at ``relpath``, made by ``make`` if there is none yet."""
        self.create(
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

    def cert(self, relpath: str, make: Callable[[], x509.Certificate]) -> x509.Certificate:
        """The certificate at ``relpath``, made by ``make`` if there is none yet."""
        self.create(relpath, lambda: make().public_bytes(serialization.Encoding.PEM))
        try:
            return x509.load_pem_x509_certificate(self.read(relpath))
        except ValueError as exc:
            raise StateError(f"{self.root / relpath} is not a readable certificate: {exc}") from None

    def create(self, relpath: str, make: Callable[[], bytes]) -> None:
        """Write what ``make`` returns to ``relpath`` unless the file exists already."""
        target = self.root / relpath
        if self.exists(relpath):
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

    def replace(self, relpath: str, content: bytes) -> None:
        """Write ``content`` to ``relpath`` whether or not it exists (a secret the operator
        gives, such as a vendor key): 0600, encrypted when the state is. An existing file is
        rewritten in place, keeping its inode, as compose binds secret files by inode."""
        target = self.root / relpath
        if not self.write:
            self._pending[relpath] = content
            return
        if not target.exists():
            self.create(relpath, lambda: content)  # encrypts like every new file
            return
        if self.vault is not None and self._vaulted():
            content = self.vault.encrypt(content)
        _rewrite(target, content)

    def _vaulted(self) -> bool:
        """The state is kept encrypted: its first secret is (state.json never is)."""
        marker = self.root / "secrets" / SECRET_NAMES[0]
        return marker.exists() and marker.read_bytes().startswith(VAULT_HEADER)

    def reissue(self, relpath: str, cert: x509.Certificate | bytes) -> None:
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
        _rewrite(target, content)

    def tighten_modes(self) -> None:
        for path in [self.root, *sorted(self.root.rglob("*"))]:
            wanted = 0o700 if path.is_dir() else 0o600
            if stat.S_IMODE(path.stat().st_mode) != wanted:
                path.chmod(wanted)
                self.changes.fixed_modes.append(str(path.relative_to(self.root)) or ".")


def _rewrite(target: Path, content: bytes) -> None:
    """Replace ``target``'s content in place, keeping its inode (and mode)."""
    with target.open("r+b") as handle:
        handle.write(content)
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())


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
