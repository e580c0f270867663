"""tls: where the server certificates come from (a local CA, the operator's files, or an ACME CA)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Literal

from cryptography import x509
from pydantic import Field, model_validator

from mailstack.site.base import Model
from mailstack.site.fields import Address

# ACME directories known by name (tls.acme.directory_url takes a name or a URL).
ACME_DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


# Names per certificate that Let's Encrypt (and most ACME CAs) accept.
ACME_MAX_NAMES = 100


class Acme(Model):
    """Certificates from an ACME CA (RFC 8555), for the hostname and every domain's web names."""

    email: Address = Field(description="Account contact: the CA's expiry and incident notices.")
    directory_url: str = Field(
        default="letsencrypt",
        pattern=r"^(letsencrypt|letsencrypt-staging|https://[^\s/]+(/\S*)?)$",
        description=(
            "The CA's ACME directory: an https:// URL, or letsencrypt (production, the "
            "default) or letsencrypt-staging."
        ),
    )
    ca_bundle: str | None = Field(
        default=None,
        description="PEM file with an extra root to trust for the directory's HTTPS (a private CA).",
    )
    challenge: Literal["http-01"] = Field(
        default="http-01", description="http-01: answered by the web service on the http port."
    )

    @property
    def directory(self) -> str:
        return ACME_DIRECTORIES.get(self.directory_url, self.directory_url)


class TLS(Model):
    mode: Literal["selfsigned", "files", "acme"] = Field(
        default="selfsigned",
        description=(
            "selfsigned: a local CA in the state directory; files: cert_file and key_file; "
            "acme: certificates from an ACME CA (tls.acme), renewed and reloaded by the stack."
        ),
    )
    cert_file: str | None = Field(default=None, description="PEM certificate chain (mode files).")
    key_file: str | None = Field(default=None, description="PEM private key (mode files).")
    acme: Acme | None = Field(default=None, description="ACME settings (mode acme).")
    outbound_ca_bundle: str | None = Field(
        default=None,
        description=(
            "PEM file of CA certificates this site trusts, besides Debian's roots, when it "
            "verifies other servers: the HTTPS fetch of their MTA-STS policies and Postfix's "
            "certificate check of MTA-STS destinations (a company CA, an air-gapped deployment). "
            "Relative to the site file."
        ),
    )
    profile: Literal["intermediate", "modern"] = Field(
        default="intermediate",
        description=(
            "Mozilla server-side TLS profile of the client ports (465, 587, IMAP, POP3, "
            "ManageSieve): intermediate = TLS 1.2 and 1.3, modern = TLS 1.3 only. Port 25 "
            "keeps TLS 1.2 and 1.3 in both, so that no sending server falls back to plaintext."
        ),
    )

    @model_validator(mode="after")
    def _files_match_mode(self) -> TLS:
        given = self.cert_file is not None or self.key_file is not None
        if self.mode == "files" and (self.cert_file is None or self.key_file is None):
            raise ValueError("tls.mode 'files' needs both cert_file and key_file")
        if self.mode != "files" and given:
            raise ValueError(f"cert_file and key_file only apply to tls.mode 'files', not {self.mode!r}")
        if self.mode == "acme" and self.acme is None:
            raise ValueError("tls.mode 'acme' needs tls.acme (at least its email)")
        if self.mode != "acme" and self.acme is not None:
            raise ValueError(f"tls.acme only applies to tls.mode 'acme', not {self.mode!r}")
        return self


def ca_bundle_problem(path: str) -> str | None:
    """Why ``path`` is not a usable PEM bundle of CA certificates, or None when it is.

    Postfix and OpenSSL would skip what they cannot parse and then fail each verification
    with "untrusted issuer", far from the cause; the loader says it at once.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return f"file not found: {path}"
    except IsADirectoryError:
        return f"{path} is a directory; name the PEM file itself"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if not Path(path).stat().st_mode & stat.S_IROTH:
        return (
            f"{path} must be readable by others (chmod 0644): the mta-sts service reads it as "
            "its own user; CA certificates are public"
        )
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        return f"{path}: a certificate in it cannot be parsed ({exc})"
    for cert in certificates:
        if not _is_ca(cert):
            return (
                f"{path}: {cert.subject.rfc4514_string()} is not a CA certificate (basicConstraints CA:FALSE)"
            )
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return True  # an old v1 root without extensions: OpenSSL accepts it as a trust anchor
