"""The keys and certificates a state holds: how they are made, and what is derived from them."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailstack.errors import StateError
from mailstack.site.models import Site
from mailstack.state.view import TlsaKey

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

CA_DAYS = 3650
# RSA server keys made from now on (BSI TR-02102-2 and internet.nl want 3072 bits or more);
# keys already in a state directory stay as they are: nothing here is ever rotated.
SERVER_RSA_BITS = 3072
SERVER_DAYS = 825


def new_server_key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=SERVER_RSA_BITS)
    return ec.generate_private_key(ec.SECP256R1())


def spki_sha256(key: PrivateKey | x509.Certificate) -> str:
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def cert_file_tlsa(cert_file: str | None) -> tuple[TlsaKey, ...]:
    """tls.mode files: pin the key of the operator's certificate (the first in the chain file).

    No next key is known here; an unreadable file gives no pin (`mailstack dns` says so).
    """
    try:
        leaf = x509.load_pem_x509_certificates(Path(cert_file or "").read_bytes())[0]
        kind = "rsa" if isinstance(leaf.public_key(), rsa.RSAPublicKey) else "ecdsa"  # or ECDSA
        return (TlsaKey(kind, "current", spki_sha256(leaf), str(cert_file)),)
    except (OSError, ValueError, IndexError):
        return ()


def dkim_public(key: PrivateKey) -> str:
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


def dns_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in san.get_values_for_type(x509.DNSName)}


def same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    return spki_sha256(cert) == spki_sha256(key)


def server_cert(
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
