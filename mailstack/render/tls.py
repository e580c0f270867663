"""The TLS policy (issue #5) and where postfix and dovecot find their keys and certificates.

The same policy on every port, port 25 included.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstack.services import STATE_MOUNT
from mailstack.site.models import Site
from mailstack.state.view import StateView

# Where tls.mode "files" mounts the operator's certificate and key in postfix and dovecot.
TLS_FILES_DIR = "/run/mailstack/tls"
# TLS 1.2 suites: ECDHE key exchange, AEAD ciphers only (Mozilla "intermediate" 5.7+, minus
# DHE as in its 6.0 guidelines; internet.nl "good"). ECDSA first: the ECDSA certificate is
# preferred, RSA serves older clients. https://ssl-config.mozilla.org/guidelines/5.7.json
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
# TLS 1.3 suites (all AEAD, all with (EC)DHE); OpenSSL's default set, named explicitly.
TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
# Key exchange groups (Mozilla): no finite-field DHE group, not even RFC 7919's in TLS 1.3.
TLS_GROUPS = ("X25519", "prime256v1", "secp384r1")
# Signature algorithms without SHA-1 and SHA-224 (internet.nl "key exchange hash"), for the
# OpenSSL configuration Postfix and Dovecot load: neither has a setting of its own for it.
TLS_SIGNATURE_ALGORITHMS = (
    "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:ed25519:ed448:"
    "rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pss_pss_sha512:"
    "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:"
    "RSA+SHA256:RSA+SHA384:RSA+SHA512"
)
# Lowest TLS version of the client ports (465, 587, IMAP, POP3, ManageSieve) per tls.profile.
# Port 25 always accepts TLS 1.2 and 1.3: a sender refused there falls back to plaintext.
TLS_PROFILE_MIN_VERSION = {"intermediate": "TLSv1.2", "modern": "TLSv1.3"}


@dataclass(frozen=True)
class TlsPair:
    key: str
    cert: str


@dataclass(frozen=True)
class TlsPolicy:
    profile: str
    client_min_version: str  # Dovecot ssl_min_protocol: TLSv1.2 or TLSv1.3
    postfix_mandatory_protocols: str  # 587 and 465: >=TLSv1.2 or >=TLSv1.3
    ciphers: str  # TLS 1.2
    suites: str  # TLS 1.3
    postfix_groups: str  # tls_eecdh_auto_curves: space-separated
    dovecot_groups: str  # ssl_curve_list: colon-separated
    signature_algorithms: str


def tls_paths(site: Site, state: StateView) -> dict[str, str]:
    if site.tls.mode == "files":
        return {"cert": f"{TLS_FILES_DIR}/cert.pem", "key": f"{TLS_FILES_DIR}/key.pem"}
    return {role: f"{STATE_MOUNT}/{path}" for role, path in sorted(state.tls_files.items())}


def tls_pairs(site: Site, state: StateView) -> list[TlsPair]:
    """Server key/cert pairs, preferred first: ECDSA, then RSA for older clients."""
    paths = tls_paths(site, state)
    if site.tls.mode == "files":
        return [TlsPair(key=paths["key"], cert=paths["cert"])]
    return [
        TlsPair(key=paths[f"{kind}_key"], cert=paths[f"{kind}_cert"])
        for kind in ("ecdsa", "rsa")
        if f"{kind}_key" in paths and f"{kind}_cert" in paths
    ]


def chain_files(pairs: list[TlsPair], state: StateView) -> str:
    """smtpd_tls_chain_files: each key followed by its certificate chain. With tls.mode acme,
    files with both (the acme service replaces each by one rename, so a new smtpd never
    reads a key without its certificate)."""
    combined = [state.tls_files.get(f"{kind}_pem") for kind in ("ecdsa", "rsa")]
    if all(combined):
        return ", ".join(f"{STATE_MOUNT}/{path}" for path in combined)
    return ", ".join(f"{p.key}, {p.cert}" for p in pairs)


def tls_policy(site: Site) -> TlsPolicy:
    minimum = TLS_PROFILE_MIN_VERSION[site.tls.profile]
    return TlsPolicy(
        profile=site.tls.profile,
        client_min_version=minimum,
        postfix_mandatory_protocols=f">={minimum}",
        ciphers=TLS12_CIPHERS,
        suites=TLS13_SUITES,
        postfix_groups=" ".join(TLS_GROUPS),
        dovecot_groups=":".join(TLS_GROUPS),
        signature_algorithms=TLS_SIGNATURE_ALGORITHMS,
    )


def web_tls_protocols(site: Site) -> str:
    """nginx ssl_protocols: TLS 1.2 and 1.3, or 1.3 only with tls.profile modern (as 465, 993, …)."""
    minimum = TLS_PROFILE_MIN_VERSION[site.tls.profile]
    return "TLSv1.3" if minimum == "TLSv1.3" else "TLSv1.2 TLSv1.3"
