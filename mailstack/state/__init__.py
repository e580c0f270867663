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
    secrets/<name>                    internal service passwords (secrets/postgres: the sogo
                                      role's, made only with groupware)
    secrets/probe_password            the probe mailbox's password (`mailstack check`)
    secrets/spamhaus_dqs              the Spamhaus DQS key, given by the operator (`mailstack
                                      secret set`; abuse.spamhaus_dqs); replaced only by that
    secrets/restic_password           the backup repository's password (made only with backup);
                                      never in a backup itself: keep the state (git, vaulted)
    secrets/backup_credentials        a rest: or s3: repository's login (`mailstack secret set`)
    probe/password_hash               its hash, rendered like the site's mailbox hashes
    mailcrypt/…                       mail_crypt keys: the site's pair, per_user mailboxes'
                                      wrapped and sealed keys (mailstack.state.mailcrypt)

Nothing here is ever replaced: files are created with O_EXCL semantics, and a re-render
only adds what is missing (a new domain's keys, a certificate for a new hostname). The one
exception is a server certificate whose names no longer cover the site (a new domain needs
mta-sts/autoconfig/autodiscover.<domain>): it is re-issued for the SAME key, so no key is
rotated and the TLSA records (which pin the key) stay valid. Under acme/ the acme service
owns the live certificates and the key generations after the first two; a render only
reads them (and adds the next key when the acme service has not yet).

:class:`State` makes what a site needs; the parts: ``layout`` (paths), ``version`` (the
recorded format), ``files`` (create-once storage, through the vault when encrypted),
``crypto`` (keys and certificates), ``acme`` (tls.mode acme) and ``view`` (what rendering sees).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import secrets
from pathlib import Path, PurePosixPath
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mailstack.errors import StateError
from mailstack.passwords import hash_token
from mailstack.site.encryption import per_user_addresses
from mailstack.site.models import Site
from mailstack.state import mailcrypt
from mailstack.state.acme import acme_files, acme_tlsa, adopt_acme
from mailstack.state.crypto import (
    SERVER_RSA_BITS,
    ca_certificate,
    cert_file_tlsa,
    dkim_public,
    dns_names,
    new_server_key,
    same_key,
    server_cert,
    server_names,
    spki_sha256,
)
from mailstack.state.files import StateFiles
from mailstack.state.layout import (
    BACKUP_SECRET,
    GROUPWARE_SECRET,
    OPERATOR_SECRETS,
    PROBE_HASH,
    PROBE_PASSWORD,
    SECRET_NAMES,
)
from mailstack.state.mailcrypt import SITE_KEY, SITE_PUB, ensure_site_key
from mailstack.state.version import check_format
from mailstack.state.view import DkimKey, StateView, TlsaKey


class State(StateFiles):
    """A state directory. With ``write=False`` missing items are made in memory only."""

    # -- public entry points ------------------------------------------------------------
    def ensure(self, site: Site) -> StateView:
        check_format(self, site.site)
        dkim = tuple(k for d in site.domain_names for k in self._dkim_keys(d))
        tls_files = {}
        if site.tls.mode == "selfsigned":
            tls_files = self._tls(site.hostname, server_names(site))
        elif site.tls.mode == "acme":
            tls_files = acme_files(self, site.hostname, server_names(site), self._local_ca(site.hostname))
        secret_files = {name: self._secret(name) for name in SECRET_NAMES}
        if site.groupware.enabled:
            secret_files[GROUPWARE_SECRET] = self._secret(GROUPWARE_SECRET)
        if site.backup is not None:
            secret_files[BACKUP_SECRET] = self._secret(BACKUP_SECRET)
        # What the operator gave (`mailstack secret set`), by its file's name; rendering asks
        # for the ones the site needs.
        secret_files |= {
            PurePosixPath(path).name: path for path in OPERATOR_SECRETS.values() if self.exists(path)
        }
        tlsa = self._tlsa(site)
        probe_hash = self._probe_hash()
        ensure_site_key(self)
        logins = {m.address: (f"mailboxes[{i}]", m.password_hash) for i, m in enumerate(site.mailboxes)}
        user_keys = mailcrypt.user_keys(self, site.domain_names, per_user_addresses(site), logins)
        if self.write:
            self.tighten_modes()
        return StateView(
            dkim=dkim,
            tls_files=tls_files,
            secret_files=secret_files,
            tlsa=tlsa,
            probe_hash=probe_hash,
            mailcrypt_files={"site_key": SITE_KEY, "site_pub": SITE_PUB},
            user_keys=user_keys,
        )

    def adopt_acme(self, pulled: Path) -> list[str]:
        """Take what a host's acme service wrote (see :func:`mailstack.state.acme.adopt_acme`)."""
        return adopt_acme(self, pulled)

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
            key = self.key(relpath, make)
            keys.append(
                DkimKey(
                    domain=domain,
                    selector=Path(relpath).stem,
                    algorithm=algorithm,  # type: ignore[arg-type]
                    public_b64=dkim_public(key),
                    relpath=relpath,
                )
            )
        return keys

    def _find(self, folder: str, suffix: str) -> str | None:
        """The newest existing key of one algorithm (selectors end in r or e)."""
        names = self.listed(folder, f"*{suffix}.pem")
        return f"{folder}/{max(names)}" if names else None

    # -- TLS --------------------------------------------------------------------------------
    def _tls(self, hostname: str, names: tuple[str, ...]) -> dict[str, str]:
        ca_key, ca_cert = self._local_ca(hostname)
        files = {"ca_cert": "tls/ca.crt"}
        for kind, make in (
            ("ecdsa", lambda: ec.generate_private_key(ec.SECP256R1())),
            ("rsa", lambda: rsa.generate_private_key(public_exponent=65537, key_size=SERVER_RSA_BITS)),
        ):
            key_path, cert_path = f"tls/{hostname}/{kind}.key", f"tls/{hostname}/{kind}.crt"
            key = self.key(key_path, make)
            cert = self.cert(cert_path, lambda key=key: server_cert(key, names, ca_key, ca_cert))  # type: ignore[misc]
            if not set(names) <= dns_names(cert) or not same_key(cert, key):
                self.reissue(cert_path, server_cert(key, names, ca_key, ca_cert))
            files[f"{kind}_key"], files[f"{kind}_cert"] = key_path, cert_path
        return files

    def _local_ca(self, hostname: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        ca_key = self.key("tls/ca.key", lambda: ec.generate_private_key(ec.SECP256R1()))
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)  # noqa: S101 - our own file
        return ca_key, self.cert("tls/ca.crt", lambda: ca_certificate(ca_key, hostname))

    def _tlsa(self, site: Site) -> tuple[TlsaKey, ...]:
        """DANE pins: the server keys in use, then the next ones (created once, never rotated
        by a render) so that a renewal switching to them is already published (RFC 7671 §8.1)."""
        if site.tls.mode == "files":
            return cert_file_tlsa(site.tls.cert_file)
        if site.tls.mode == "acme":
            return acme_tlsa(self)
        roles: tuple[tuple[Literal["current", "next"], str], ...] = (("current", ""), ("next", "next-"))
        pins = []
        for role, prefix in roles:
            for kind in ("ecdsa", "rsa"):
                relpath = f"tls/{site.hostname}/{prefix}{kind}.key"
                key = self.key(relpath, functools.partial(new_server_key, kind))
                pins.append(TlsaKey(kind, role, spki_sha256(key), relpath))
        return tuple(pins)

    # -- secrets ------------------------------------------------------------------------------
    def probe_password(self) -> str:
        """The probe mailbox's password (made with the state, like every other secret)."""
        return self.read(PROBE_PASSWORD).decode().strip()

    def _probe_hash(self) -> str:
        # The hash is kept beside the password so that rendering stays byte-identical (a new
        # hash would carry a new salt every time).
        self.create(PROBE_PASSWORD, lambda: secrets.token_urlsafe(18).encode() + b"\n")
        self.create(PROBE_HASH, lambda: hash_token(self.probe_password()).encode() + b"\n")
        return self.read(PROBE_HASH).decode().strip()

    def _secret(self, name: str) -> str:
        relpath = f"secrets/{name}"
        self.create(relpath, lambda: secrets.token_urlsafe(32).encode() + b"\n")
        return relpath


# restic reads these from its environment: a rest: server's login, an S3 bucket's keys.
BACKUP_CREDENTIALS = (
    "RESTIC_REST_USERNAME",
    "RESTIC_REST_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_SESSION_TOKEN",
)
_CREDENTIAL = re.compile(r"([A-Z_]+)=([!#-&(-~]+)")  # printable ASCII, no quotes or spaces


def backup_credentials(value: str) -> str:
    """``NAME=value NAME=value`` (names of BACKUP_CREDENTIALS) → one pair a line; ValueError
    names what is wrong without repeating a value."""
    pairs = value.split()
    for i, pair in enumerate(pairs, 1):
        match = _CREDENTIAL.fullmatch(pair)
        if match is None or match.group(1) not in BACKUP_CREDENTIALS:
            raise ValueError(
                f"backup credentials: item {i} is not NAME=value with NAME one of "
                f"{', '.join(BACKUP_CREDENTIALS)} (values without spaces or quotes)"
            )
    if not pairs:
        raise ValueError("backup credentials: nothing was given")
    return "\n".join(pairs)


# A Spamhaus DQS key is one DNS label (it prefixes the zones: <key>.zen.dq.spamhaus.net);
# Spamhaus hands out 26 lower-case letters and digits.
DQS_KEY = re.compile(r"[a-z0-9]{16,63}")


def set_operator_secret(state: State, site_id: str, name: str, value: str) -> str:
    """Keep a secret the operator gives (``name`` of OPERATOR_SECRETS) in the state of site
    ``site_id``, replacing an earlier one; the file's path inside the state."""
    relpath = OPERATOR_SECRETS.get(name)
    if relpath is None:
        raise StateError(f"unknown secret {name!r}; one of: {', '.join(OPERATOR_SECRETS)}")
    if name == "spamhaus-dqs" and not DQS_KEY.fullmatch(value):
        raise StateError(
            "a Spamhaus DQS key is 16 to 63 lower-case letters and digits (as in the Spamhaus "
            "account's DQS page); what was given is not"
        )
    if name == "backup-credentials":
        try:
            value = backup_credentials(value)
        except ValueError as exc:
            raise StateError(str(exc)) from None
    check_format(state, site_id)  # a state made by this command is a state like any other
    state.replace(relpath, value.encode() + b"\n")
    if state.write:
        state.tighten_modes()
    return relpath
