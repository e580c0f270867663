"""State encrypted at rest with ansible-vault, so teams can commit it.

Each state file is encrypted in place (mode stays 0600). `mailstack deploy` passes the
vault password file to Ansible, whose copy module decrypts the files on their way to the
hosts; rendering reads them through :class:`Vault`. A local `up` needs plain state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ansible.constants import DEFAULT_VAULT_ID_MATCH
from ansible.errors import AnsibleError
from ansible.parsing.vault import VaultLib, VaultSecret, is_encrypted

from mailstack.errors import StateError, UserError

# What every ansible-vault file starts with; state files are told apart by it.
VAULT_HEADER = b"$ANSIBLE_VAULT;"


@dataclass(frozen=True)
class VaultResult:
    changed: list[str]
    skipped: int


class Vault:
    def __init__(self, password_file: Path) -> None:
        self.password_file = password_file  # Ansible reads it too, for the state it copies
        try:
            password = password_file.read_bytes().strip()
        except OSError as exc:
            raise UserError(f"cannot read the vault password file {password_file}: {exc.strerror}") from None
        if not password:
            raise UserError(f"the vault password file {password_file} is empty")
        self._lib = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password))])

    def encrypt(self, data: bytes) -> bytes:
        return bytes(self._lib.encrypt(data))

    def decrypt(self, data: bytes, where: str = "state") -> bytes:
        try:
            return bytes(self._lib.decrypt(data))
        except AnsibleError:
            raise StateError(f"cannot decrypt {where}: wrong vault password?") from None


def open_vault(password_file: Path | None) -> Vault | None:
    """The vault of ``--vault-password-file``; None without one (the state is plain)."""
    return Vault(password_file) if password_file is not None else None


def state_files(state_dir: Path) -> list[Path]:
    if not (state_dir / "state.json").exists():
        raise StateError(f"{state_dir} is not a mailstack state directory (no state.json)")
    # state.json stays readable: it only says which format and site the directory holds.
    return sorted(p for p in state_dir.rglob("*") if p.is_file() and p.name != "state.json")


def encrypt_state(state_dir: Path, vault: Vault) -> VaultResult:
    changed, skipped = [], 0
    for path in state_files(state_dir):
        data = path.read_bytes()
        if is_encrypted(data):
            skipped += 1
            continue
        _rewrite(path, vault.encrypt(data))
        changed.append(str(path.relative_to(state_dir)))
    return VaultResult(changed, skipped)


def decrypt_state(state_dir: Path, vault: Vault) -> VaultResult:
    changed, skipped = [], 0
    for path in state_files(state_dir):
        data = path.read_bytes()
        if not is_encrypted(data):
            skipped += 1
            continue
        _rewrite(path, vault.decrypt(data, str(path)))
        changed.append(str(path.relative_to(state_dir)))
    return VaultResult(changed, skipped)


def is_encrypted_state(state_dir: Path) -> bool:
    return any(p.read_bytes().startswith(VAULT_HEADER) for p in state_files(state_dir))


def _rewrite(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.vault-tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    tmp.replace(path)
