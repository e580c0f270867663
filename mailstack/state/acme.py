"""tls.mode acme in the state: the account key, the server keys by generation, the live
certificates (the local CA's until the first issuance), and what a host's acme service wrote.

The acme service (compose/images/acme/) owns the live certificates and the key generations
after the first two; a render only reads them, and adds the next key when the service has not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailstack.errors import StateError
from mailstack.state.crypto import PrivateKey, new_server_key, server_cert, spki_sha256
from mailstack.state.files import StateFiles
from mailstack.state.layout import ACME_ACCOUNT_KEY, ACME_KEYS, ACME_LIVE, SERVER_KINDS, acme_key_path
from mailstack.state.view import TlsaKey

LocalCa = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def acme_files(files: StateFiles, hostname: str, names: tuple[str, ...], ca: LocalCa) -> dict[str, str]:
    """The account key, the first two key generations, and until the first issuance a
    certificate from the local CA, so that the web service can answer the challenge. Keys
    of a site that used tls.mode selfsigned are carried over (the ones in use and the next
    ones), so that the published TLSA records stay valid."""
    ca_key, ca_cert = ca
    files.key(ACME_ACCOUNT_KEY, lambda: ec.generate_private_key(ec.SECP256R1()))
    paths = {"ca_cert": "tls/ca.crt"}
    for kind in SERVER_KINDS:
        key = files.key(acme_key_path(kind, 1), _carried_over(files, f"tls/{hostname}/{kind}.key", kind))
        files.key(acme_key_path(kind, 2), _carried_over(files, f"tls/{hostname}/next-{kind}.key", kind))
        live = f"{ACME_LIVE}/{kind}"
        files.create(f"{live}.key", lambda: files.read(acme_key_path(kind, 1)))  # noqa: B023
        cert = files.cert(f"{live}.crt", lambda: server_cert(key, names, ca_key, ca_cert))  # noqa: B023
        files.create(
            f"{live}.pem",
            lambda: files.read(f"{live}.key") + cert.public_bytes(serialization.Encoding.PEM),  # noqa: B023
        )
        for role, suffix in (("key", "key"), ("cert", "crt"), ("pem", "pem")):
            paths[f"{kind}_{role}"] = f"{live}.{suffix}"
    files.create(f"{ACME_LIVE}/serial", lambda: b"selfsigned\n")
    return paths


def _carried_over(files: StateFiles, relpath: str, kind: str) -> Callable[[], PrivateKey]:
    def make() -> PrivateKey:
        if files.exists(relpath):
            key = serialization.load_pem_private_key(files.read(relpath), password=None)
            assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)  # noqa: S101
            return key
        return new_server_key(kind)

    return make


def acme_tlsa(files: StateFiles) -> tuple[TlsaKey, ...]:
    """The key each live certificate has, then the next generation after it (created here
    when the acme service has not made it yet)."""
    current, following = [], []
    for kind in SERVER_KINDS:
        cert_path = f"{ACME_LIVE}/{kind}.crt"
        served = spki_sha256(x509.load_pem_x509_certificate(files.read(cert_path)))
        generations = _generations(files, kind)
        in_use = next((g for g, digest in generations.items() if digest == served), None)
        after = (in_use or max(generations, default=0)) + 1
        relpath = acme_key_path(kind, after)
        key = files.key(relpath, functools.partial(new_server_key, kind))
        source = acme_key_path(kind, in_use) if in_use else cert_path
        current.append(TlsaKey(kind, "current", served, source))
        following.append(TlsaKey(kind, "next", spki_sha256(key), relpath))
    return (*current, *following)


def _generations(files: StateFiles, kind: str) -> dict[int, str]:
    """Generation number → SPKI digest of every key of one kind under acme/keys."""
    found = {}
    for name in files.listed(ACME_KEYS, f"{kind}-*.key"):
        number = name.removeprefix(f"{kind}-").removesuffix(".key")
        if number.isdigit():
            found[int(number)] = spki_sha256(files.key(f"{ACME_KEYS}/{name}", lambda: _no_key()))
    return dict(sorted(found.items()))


def _no_key() -> PrivateKey:
    raise StateError("a listed key file vanished while it was read")


def adopt_acme(files: StateFiles, pulled: Path) -> list[str]:
    """Take what a host's acme service wrote (its acme/, copied back by `mailstack deploy`):
    key generations it made are added (a key here is never replaced), the live
    certificates, its status and account are replaced (the host's are newer). So
    `mailstack dns` pins what the host serves and the key it will switch to next."""
    taken = []
    for path in sorted(p for p in pulled.rglob("*") if p.is_file() and not p.name.startswith(".")):
        relpath = f"acme/{path.relative_to(pulled).as_posix()}"
        content = path.read_bytes()
        if (files.root / relpath).exists():
            if relpath.startswith(f"{ACME_KEYS}/") or relpath == ACME_ACCOUNT_KEY:
                continue
            if files.read(relpath) == content:
                continue
            files.reissue(relpath, content)
        else:
            files.create(relpath, lambda content=content: content)  # type: ignore[misc]
        taken.append(relpath)
    if files.write:
        files.tighten_modes()
    return taken
