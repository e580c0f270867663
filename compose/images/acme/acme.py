#!/usr/bin/python3
"""mailstack-acme: the site's certificates from an ACME CA (tls.mode acme, issue #7).

    mailstack-acme serve CONFIG            issue, renew and retry for as long as it runs
    mailstack-acme renew CONFIG [--force]  one attempt now (--force: renew what is valid)
    mailstack-acme health CONFIG           the configuration loads and the state is writable

Why Debian's python3-acme (certbot's protocol library) rather than certbot or lego: the
certificates must be for keys made ahead and pinned in DNS (TLSA 3 1 1), for ECDSA and RSA
at once, with the stack's own schedule, back-off and status file. A client library does
exactly the protocol; a CLI client would own the keys and the schedule. The library (4.0)
has no ARI yet, so the renewalInfo lookup (RFC 9773) is done here with its HTTP session.

State (the site's state directory's acme/, bind-mounted at state_dir):
    account.key            the account's key (made by the renderer)
    keys/<kind>-NNNN.key   server keys by generation; the renderer makes 0001 and 0002
    tls/live/<kind>.{key,crt,pem}  served: key, chain, key + chain (Postfix reads the latter,
                           so that a new smtpd never sees a key without its certificate)
    tls/live/serial        rewritten last on every switch; the services reload when it changes
    status.json            certificates, last attempt, failures and the next retry
A renewal switches to the next key generation (published in DNS ahead by `mailstack dns`)
and makes the one after it; a first issuance or a change of names keeps the key in use.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import random
import secrets
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import josepy as jose
import requests
from acme import challenges, client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

log = logging.getLogger("mailstack-acme")

RENEW_AT = 2 / 3  # of the lifetime, without (or before) an ARI window
WAKE_SECONDS = 3600  # the longest sleep: ARI windows and the configuration are looked at again
ARI_DEFAULT_RETRY = 6 * 3600  # RFC 9773 §4.3: poll again after Retry-After, else about 6 h
ORDER_SECONDS = 120  # validation and finalization of one order, at most
SYSTEM_ROOTS = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class Config:
    directory_url: str
    email: str
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    state_dir: Path
    challenge_dir: Path
    ca_bundle: str
    retry_min: int
    retry_max: int

    @classmethod
    def load(cls, path: str) -> Config:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            directory_url=data["directory_url"],
            email=data["email"],
            names=tuple(data["names"]),
            kinds=tuple(data["kinds"]),
            state_dir=Path(data["state_dir"]),
            challenge_dir=Path(data["challenge_dir"]),
            ca_bundle=data.get("ca_bundle", ""),
            retry_min=int(data["retry_min_seconds"]),
            retry_max=int(data["retry_max_seconds"]),
        )


# --- time and files ----------------------------------------------------------------------
def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso(when: dt.datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when else None


def parse_iso(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def write_atomic(path: Path, content: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` by rename: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def write_new(path: Path, content: bytes) -> bool:
    """Create ``path`` (0600) unless it exists; never replaces a key."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    write_atomic(tmp, content)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_key(kind: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())


def spki_sha256(public_key: Any) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def dns_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {n.lower() for n in san.get_values_for_type(x509.DNSName)}


def ari_cert_id(cert: x509.Certificate) -> str | None:
    """RFC 9773 §4.1: base64url(authority key identifier) "." base64url(serial number)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None
    if not aki:
        return None
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big")

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"{b64(aki)}.{b64(serial)}"


# --- the state ------------------------------------------------------------------------------
class Store:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.state_dir

    def live(self, kind: str, suffix: str) -> Path:
        return self.root / "tls" / "live" / f"{kind}.{suffix}"

    def key_path(self, kind: str, generation: int) -> Path:
        return self.root / "keys" / f"{kind}-{generation:04d}.key"

    def live_cert(self, kind: str) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.live(kind, "crt").read_bytes())[0]

    def generations(self, kind: str) -> dict[int, Path]:
        found = {}
        for path in (self.root / "keys").glob(f"{kind}-*.key"):
            number = path.stem.removeprefix(f"{kind}-")
            if number.isdigit():
                found[int(number)] = path
        return dict(sorted(found.items()))

    def load_key(self, path: Path) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{path} is neither an ECDSA nor an RSA key")
        return key

    def generation_in_use(self, kind: str) -> int | None:
        served = spki_sha256(self.live_cert(kind).public_key())
        for generation, path in self.generations(kind).items():
            if spki_sha256(self.load_key(path).public_key()) == served:
                return generation
        return None

    def status(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "status.json").read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def save_status(self, status: dict[str, Any]) -> None:
        status["updated"] = iso(now())
        write_atomic(
            self.root / "status.json", (json.dumps(status, indent=2, sort_keys=True) + "\n").encode()
        )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One attempt at a time (the daemon, or `renew` run with docker compose exec)."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


# --- what is due ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Due:
    kind: str
    when: dt.datetime
    reason: str  # first | names | ca | renewal | forced
    basis: str = ""  # for renewal: ari | two-thirds


def due(config: Config, store: Store, status: dict[str, Any], ari: AriCache | None) -> list[Due]:
    out = []
    issued = status.get("certificates", {})
    for kind in config.kinds:
        cert = store.live_cert(kind)
        serial = format(cert.serial_number, "x")
        entry = issued.get(kind, {})
        if entry.get("serial") != serial:
            out.append(Due(kind, now(), "first"))
        elif entry.get("directory", config.directory_url) != config.directory_url:
            out.append(Due(kind, now(), "ca"))  # another CA now (staging → production): its own
        elif not set(config.names) <= dns_names(cert):
            out.append(Due(kind, now(), "names"))
        else:
            when = ari.renew_at(kind, cert) if ari else None
            if when is not None:
                out.append(Due(kind, when, "renewal", "ari"))
            else:
                start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
                out.append(Due(kind, start + (end - start) * RENEW_AT, "renewal", "two-thirds"))
    return out


class AriCache:
    """Renewal windows (RFC 9773) per certificate, kept in status.json between wake-ups."""

    def __init__(self, endpoint: str, session: requests.Session, verify: str | bool, status: dict[str, Any]):
        self.endpoint = endpoint.rstrip("/")
        self.session = session
        self.verify = verify
        self.entries: dict[str, Any] = status.setdefault("ari", {})

    def renew_at(self, kind: str, cert: x509.Certificate) -> dt.datetime | None:
        cert_id = ari_cert_id(cert)
        if cert_id is None:
            return None
        entry = self.entries.get(kind, {})
        if entry.get("cert_id") != cert_id or (parse_iso(entry.get("poll_after")) or now()) <= now():
            entry = self._fetch(cert_id, entry if entry.get("cert_id") == cert_id else {})
            self.entries[kind] = entry
        return parse_iso(entry.get("renew_at"))

    def _fetch(self, cert_id: str, old: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self.session.get(f"{self.endpoint}/{cert_id}", timeout=30, verify=self.verify)
            response.raise_for_status()
            window = response.json()["suggestedWindow"]
            start, end = parse_iso(window["start"]), parse_iso(window["end"])
            if start is None or end is None:
                raise ValueError("empty suggestedWindow")
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            log.warning("ARI: no renewal window for %s (%s); keeping %s", cert_id, exc, old or "two thirds")
            return {**old, "cert_id": cert_id, "poll_after": iso(now() + dt.timedelta(hours=1))}
        retry = _retry_after(response.headers.get("Retry-After"))
        if old.get("window") == [iso(start), iso(end)]:
            renew_at = old["renew_at"]  # the same window: keep the moment chosen in it
        else:
            span = max((end - start).total_seconds(), 0)
            renew_at = iso(start + dt.timedelta(seconds=int(random.uniform(0, span))))  # noqa: S311 - spread, not secret
            log.info("ARI: window %s .. %s, renewal at %s", iso(start), iso(end), renew_at)
        return {
            "cert_id": cert_id,
            "window": [iso(start), iso(end)],
            "renew_at": renew_at,
            "poll_after": iso(now() + dt.timedelta(seconds=retry)),
        }


def _retry_after(value: str | None) -> int:
    if value and value.isdigit():
        return min(max(int(value), 60), 24 * 3600)
    return ARI_DEFAULT_RETRY


# --- one attempt ----------------------------------------------------------------------------
class AcmeError(Exception):
    """An attempt failed; the message says why, in one line."""


class Client(client.ClientV2):
    def new_order_replacing(self, csr_pem: bytes, replaces: str | None) -> messages.OrderResource:
        """newOrder with RFC 9773's "replaces" (the library's new_order has no such field)."""
        if replaces is None or not has_ari(self.directory):
            return self.new_order(csr_pem)
        csr = x509.load_pem_x509_csr(csr_pem)
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        identifiers = [{"type": "dns", "value": n} for n in names.get_values_for_type(x509.DNSName)]
        order = ReplacingOrder(identifiers=identifiers, replaces=replaces)
        try:
            response = self._post(self.directory["newOrder"], order)
        except messages.Error as exc:
            # A certificate of another CA (the directory changed) or one replaced already:
            # an ordinary order then.
            log.warning("newOrder replacing %s refused (%s); ordering without replaces", replaces, short(exc))
            return self.new_order(csr_pem)
        body = messages.Order.from_json(response.json())
        authorizations = [
            self._authzr_from_response(self._post_as_get(url), uri=url) for url in body.authorizations
        ]
        return messages.OrderResource(
            body=body, uri=response.headers.get("Location"), authorizations=authorizations, csr_pem=csr_pem
        )


def has_ari(directory: messages.Directory) -> bool:
    try:
        return bool(directory["renewalInfo"])
    except KeyError:
        return False


class ReplacingOrder(jose.JSONObjectWithFields):
    identifiers: list[dict[str, str]] = jose.field("identifiers")
    replaces: str = jose.field("replaces")


def connect(config: Config, store: Store) -> tuple[Client, requests.Session, str | bool]:
    account_key = store.load_key(store.root / "account.key")
    jwk = (
        jose.JWKEC(key=account_key)
        if isinstance(account_key, ec.EllipticCurvePrivateKey)
        else jose.JWKRSA(key=account_key)
    )
    alg = jose.ES256 if isinstance(account_key, ec.EllipticCurvePrivateKey) else jose.RS256
    verify = trust_bundle(config)
    net = client.ClientNetwork(jwk, alg=alg, user_agent="mailstack-acme", verify_ssl=verify)  # type: ignore[arg-type]
    try:
        directory = client.ClientV2.get_directory(config.directory_url, net)
    except (requests.RequestException, errors.Error, ValueError) as exc:
        raise AcmeError(f"cannot reach the ACME directory {config.directory_url}: {short(exc)}") from None
    acme = Client(directory, net)
    registration = messages.NewRegistration.from_data(email=config.email, terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
    except errors.ConflictError as exc:  # the key has an account already: use it
        net.account = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
    write_atomic(
        store.root / "account.json",
        (
            json.dumps({"directory_url": config.directory_url, "account": net.account.uri}, indent=2) + "\n"
        ).encode(),
    )
    return acme, net.session, verify


def trust_bundle(config: Config) -> str | bool:
    """The system's roots plus the site's extra root (acme.ca_bundle) for the directory's HTTPS."""
    if not config.ca_bundle:
        return True
    bundle = Path("/tmp/mailstack-acme-roots.pem")  # noqa: S108 - the container's private tmpfs
    bundle.write_bytes(Path(SYSTEM_ROOTS).read_bytes() + b"\n" + Path(config.ca_bundle).read_bytes())
    return str(bundle)


def short(exc: BaseException) -> str:
    if isinstance(exc, messages.Error):
        return f"{exc.typ.rsplit(':', 1)[-1]}: {exc.detail}" if exc.typ else str(exc.detail)
    if isinstance(exc, errors.ValidationError):
        found = []
        for authzr in exc.failed_authzrs:
            for challenge in authzr.body.challenges:
                if challenge.error is not None:
                    found.append(f"{authzr.body.identifier.value}: {short(challenge.error)}")
        return "validation failed: " + "; ".join(found)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def issue(config: Config, store: Store, acme: Client, item: Due, ari_id: str | None) -> dict[str, Any]:
    """Order, validate and install one certificate; returns its status entry."""
    kind = item.kind
    in_use = store.generation_in_use(kind)
    generation = in_use or max(store.generations(kind), default=1)
    if item.reason in ("renewal", "forced") and in_use is not None:
        if store.key_path(kind, in_use + 1).exists():
            generation = in_use + 1
        else:  # never switch to a key DNS could not know: keep the one in use
            log.warning(
                "%s: no next key %s; renewing for the key in use", kind, store.key_path(kind, in_use + 1)
            )
    key_path = store.key_path(kind, generation)
    key = store.load_key(key_path)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, config.names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in config.names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    csr_pem = csr.public_bytes(serialization.Encoding.PEM)
    tokens = []
    try:
        order = acme.new_order_replacing(csr_pem, ari_id if item.reason in ("renewal", "forced") else None)
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            challb = next((c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if challb is None:
                raise AcmeError(f"{authzr.body.identifier.value}: the CA offers no http-01 challenge")
            response, validation = challb.response_and_validation(acme.net.key)
            token = config.challenge_dir / challb.chall.encode("token")
            write_atomic(token, validation.encode(), mode=0o644)
            tokens.append(token)
            acme.answer_challenge(challb, response)
        deadline = dt.datetime.now() + dt.timedelta(seconds=ORDER_SECONDS)
        order = acme.poll_and_finalize(order, deadline)
    except AcmeError:
        raise
    except (errors.Error, messages.Error, requests.RequestException, ValueError) as exc:
        raise AcmeError(f"{kind} order for {len(config.names)} names: {short(exc)}") from None
    finally:
        for token in tokens:
            token.unlink(missing_ok=True)
    chain = order.fullchain_pem.encode()
    leaf = x509.load_pem_x509_certificates(chain)[0]
    if spki_sha256(leaf.public_key()) != spki_sha256(key.public_key()):
        raise AcmeError(f"{kind}: the CA returned a certificate for another key")
    pem = key_pem(key)
    write_atomic(store.live(kind, "key"), pem)
    write_atomic(store.live(kind, "crt"), chain)
    write_atomic(store.live(kind, "pem"), pem + chain)
    if write_new(store.key_path(kind, generation + 1), key_pem(new_key(kind))):
        log.info(
            "%s: made the next key %s; publish its TLSA (mailstack dns)",
            kind,
            store.key_path(kind, generation + 1).name,
        )
    log.info(
        "%s: installed serial %x from %s, valid until %s (%s, key %s)",
        kind,
        leaf.serial_number,
        leaf.issuer.rfc4514_string(),
        iso(leaf.not_valid_after_utc),
        item.reason,
        key_path.name,
    )
    return {
        "serial": format(leaf.serial_number, "x"),
        "issuer": leaf.issuer.rfc4514_string(),
        "not_before": iso(leaf.not_valid_before_utc),
        "not_after": iso(leaf.not_valid_after_utc),
        "names": sorted(dns_names(leaf)),
        "key": f"keys/{key_path.name}",
        "spki_sha256": spki_sha256(leaf.public_key()),
        "issued": iso(now()),
        "reason": item.reason,
        "directory": config.directory_url,
    }


def attempt(config: Config, store: Store, items: list[Due], status: dict[str, Any]) -> bool:
    """Issue what ``items`` asks for; record the outcome, the back-off and the next retry."""
    started = now()
    reasons = ", ".join(f"{i.kind} ({i.reason})" for i in items)
    log.info("attempt: %s from %s", reasons, config.directory_url)
    certificates = status.setdefault("certificates", {})
    installed = []
    try:
        acme, _, _ = connect(config, store)
        for item in items:
            cert = store.live_cert(item.kind)
            ari_id = ari_cert_id(cert) if certificates.get(item.kind, {}).get("serial") else None
            certificates[item.kind] = issue(config, store, acme, item, ari_id)
            installed.append(item.kind)
            status.get("ari", {}).pop(item.kind, None)
        error = None
    except AcmeError as exc:
        error = str(exc)
    except Exception as exc:  # never a crash loop: any failure is an attempt that failed
        log.exception("attempt failed unexpectedly")
        error = f"{type(exc).__name__}: {short(exc)}"
    if installed:
        marker = hashlib.sha256(b"".join(store.live(k, "crt").read_bytes() for k in config.kinds)).hexdigest()
        write_atomic(store.root / "tls" / "live" / "serial", f"{iso(now())} {marker}\n".encode())
    status["last_attempt"] = {"at": iso(started), "reasons": reasons, "ok": error is None, "error": error}
    if error is None:
        status["failures"] = 0
        status["next_retry"] = None
        log.info("attempt succeeded: %s", ", ".join(installed))
    else:
        failures = int(status.get("failures") or 0) + 1
        delay = min(config.retry_min * 2 ** (failures - 1), config.retry_max)
        delay = int(delay * random.uniform(0.9, 1.1))  # noqa: S311 - spread, not secret
        status["failures"] = failures
        status["next_retry"] = iso(started + dt.timedelta(seconds=delay))
        log.error("attempt %d failed: %s; next try at %s", failures, error, status["next_retry"])
    store.save_status(status)
    return error is None


def ari_cache(config: Config, status: dict[str, Any]) -> AriCache | None:
    """ARI needs the directory; without it (CA unreachable) renewal falls back to two thirds."""
    try:
        verify = trust_bundle(config)
        session = requests.Session()
        directory = session.get(config.directory_url, timeout=30, verify=verify).json()
        endpoint = directory.get("renewalInfo")
    except (requests.RequestException, ValueError, OSError):
        return None
    return AriCache(endpoint, session, verify, status) if endpoint else None


def schedule(plan: list[Due]) -> dict[str, Any]:
    return {
        d.kind: {"at": iso(d.when.replace(microsecond=0)), "reason": d.reason, "basis": d.basis} for d in plan
    }


def tick(config: Config, store: Store, *, force: bool = False, manual: bool = False) -> tuple[bool, float]:
    """One wake-up: attempt what is due (or everything, forced); returns (ok, seconds to sleep)."""
    status = store.status()
    issued = any(status.get("certificates", {}).get(k) for k in config.kinds)
    ari = ari_cache(config, status) if issued else None
    plan = due(config, store, status, ari)
    status["schedule"] = schedule(plan)
    current = now()
    # Forced: renew now what is valid (a first issuance or new names keep their reason).
    items = [
        Due(d.kind, current, "forced" if d.reason == "renewal" else d.reason) if force else d
        for d in plan
        if force or d.when <= current
    ]
    retry = parse_iso(status.get("next_retry"))
    if items and retry and retry > current and not manual:
        store.save_status(status)
        return False, (retry - current).total_seconds()
    ok = True
    if items:
        ok = attempt(config, store, items, status)
        if not ok:
            return False, max(
                (parse_iso(status.get("next_retry")) or current) - now(), dt.timedelta(0)
            ).total_seconds()
        plan = due(config, store, status, ari)
        status["schedule"] = schedule(plan)
    store.save_status(status)
    upcoming = min((d.when for d in plan), default=current + dt.timedelta(seconds=WAKE_SECONDS))
    return ok, max((upcoming - now()).total_seconds(), 1.0)


# --- commands -------------------------------------------------------------------------------
def serve(config: Config) -> int:
    store = Store(config)
    log.info("serving %s for %s", config.directory_url, ", ".join(config.names))
    while True:
        try:
            with store.locked():
                _, wait = tick(config, store)
        except Exception:  # a bad state file must not end the service: log, wait, look again
            log.exception("wake-up failed")
            wait = config.retry_min
        time.sleep(min(max(wait, 1.0), WAKE_SECONDS))


def renew(config: Config, force: bool) -> int:
    store = Store(config)
    with store.locked():
        ok, _ = tick(config, store, force=force, manual=True)
        status = store.status()
    last = status.get("last_attempt") or {}
    print(
        json.dumps({"ok": ok, "last_attempt": last, "certificates": status.get("certificates", {})}, indent=2)
    )
    return 0 if ok else 1


def health(config: Config) -> int:
    store = Store(config)
    for kind in config.kinds:
        store.live_cert(kind)
    return 0 if os.access(store.root, os.W_OK) and os.access(config.challenge_dir, os.W_OK) else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mailstack-acme")
    parser.add_argument("command", choices=("serve", "renew", "health"))
    parser.add_argument("config")
    parser.add_argument("--force", action="store_true", help="renew even certificates that are not due")
    args = parser.parse_args(argv)
    # serve logs to stdout (the container's log); renew prints its result there, logs to stderr.
    stream = sys.stdout if args.command == "serve" else sys.stderr
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s mailstack-acme %(levelname)s %(message)s", stream=stream
    )
    logging.getLogger("acme").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    config = Config.load(args.config)
    if args.command == "serve":
        return serve(config)
    if args.command == "renew":
        return renew(config, args.force)
    return health(config)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
