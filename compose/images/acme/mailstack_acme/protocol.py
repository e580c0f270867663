"""One order with the CA (RFC 8555, python3-acme): the account, newOrder (with RFC 9773's
"replaces"), the http-01 challenges, and installing the certificate for the planned key."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import josepy as jose
import requests
from acme import challenges, client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .clock import iso, now
from .config import Config
from .due import Due
from .keys import dns_names, key_pem, new_key, spki_sha256
from .store import Store, write_atomic, write_new

log = logging.getLogger("mailstack-acme")

ORDER_SECONDS = 120  # validation and finalization of one order, at most
SYSTEM_ROOTS = "/etc/ssl/certs/ca-certificates.crt"


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
