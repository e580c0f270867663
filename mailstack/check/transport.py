"""Every published port: it answers, with TLS where expected, a certificate valid for the
hostname, and the AUTH policy of its kind (none on 25, TLS before AUTH on 587)."""

from __future__ import annotations

import hashlib
import imaplib
import poplib
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailstack import services
from mailstack.check.results import Result, failed, passed, warned

EXPIRY_WARNING_DAYS = 14
TIMEOUT = 10.0
# Which service answers each protocol, and what the protocol is called in a reason.
SERVICE = {protocol: (service.name, port.label) for protocol, (service, port) in services.ports().items()}


@dataclass
class Session:
    """What one connection showed."""

    tls: str = ""  # TLS version
    cert: dict[str, object] = field(default_factory=dict)
    auth_before_tls: bool = False
    auth_after_tls: bool = False


@dataclass(frozen=True)
class Endpoint:
    protocol: str
    site_port: int  # the port the site publishes
    host: str  # where this machine reaches it
    port: int  # at which port (a local forward's, for a remote host)

    @property
    def label(self) -> str:
        return f"{self.protocol} port {self.site_port}"


def port_results(endpoints: list[Endpoint], hostname: str, context: ssl.SSLContext) -> list[Result]:
    results: list[Result] = []
    sessions: dict[str, Session] = {}
    for endpoint in endpoints:
        if endpoint.protocol not in SPEAK:
            continue  # plain HTTP: the web probes check that it redirects
        service, name = SERVICE[endpoint.protocol]
        try:
            session = SPEAK[endpoint.protocol](endpoint, context)
            sock_names = _names(session.cert)
            if hostname not in sock_names:
                raise ssl.SSLCertVerificationError(f"certificate for {', '.join(sock_names) or 'no name'}")
        except (OSError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto) as exc:
            results.append(
                failed(
                    endpoint.label,
                    f"{name} on {endpoint.host}:{endpoint.port} failed: {_why(exc)}",
                    f"is {service} running and healthy? `mailstack status`, `mailstack logs SITE {service}`",
                )
            )
            continue
        sessions[endpoint.protocol] = session
        results.append(_certificate_result(endpoint, name, session, hostname))
    results += _auth_policy(sessions)
    return results


def _certificate_result(endpoint: Endpoint, name: str, session: Session, hostname: str) -> Result:
    expires = datetime.strptime(str(session.cert["notAfter"]), "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
    days = (expires - datetime.now(UTC)).days
    reason = f"{name} with {session.tls}, certificate valid for {hostname} until {expires:%Y-%m-%d}"
    if days < EXPIRY_WARNING_DAYS:
        return warned(endpoint.label, f"{reason} ({days} days left)", "renew the certificate")
    return passed(endpoint.label, reason)


def _auth_policy(sessions: dict[str, Session]) -> list[Result]:
    results = []
    if (smtp := sessions.get("smtp")) is not None:
        if smtp.auth_before_tls or smtp.auth_after_tls:
            results.append(
                failed(
                    "AUTH on port 25",
                    "port 25 offers AUTH; it is for other servers' mail, not for logins",
                    "re-render: the site's master.cf keeps AUTH off on port 25",
                )
            )
        else:
            results.append(passed("AUTH on port 25", "not offered, before or after STARTTLS"))
    if (submission := sessions.get("submission")) is not None:
        if submission.auth_before_tls:
            results.append(
                failed(
                    "AUTH on submission",
                    "AUTH is offered before STARTTLS: passwords could cross the network in clear",
                    "re-render: submission needs smtpd_tls_auth_only",
                )
            )
        elif not submission.auth_after_tls:
            results.append(
                failed("AUTH on submission", "no AUTH after STARTTLS", "check Dovecot SASL (auth service)")
            )
        else:
            results.append(passed("AUTH on submission", "offered only after STARTTLS"))
    return results


def _speak_smtp(endpoint: Endpoint, context: ssl.SSLContext) -> Session:
    session = Session()
    implicit = endpoint.protocol == "submissions"
    client: smtplib.SMTP
    if implicit:
        client = smtplib.SMTP_SSL(endpoint.host, endpoint.port, timeout=TIMEOUT, context=context)
    else:
        client = smtplib.SMTP(endpoint.host, endpoint.port, timeout=TIMEOUT)
    with client:
        client.ehlo("check.invalid")
        if not implicit:
            session.auth_before_tls = client.has_extn("auth")
            client.starttls(context=context)
            client.ehlo("check.invalid")
        session.auth_after_tls = client.has_extn("auth")
        _tls(session, client.sock)
    return session


def smtp_client(endpoint: Endpoint, context: ssl.SSLContext) -> smtplib.SMTP:
    """A submission client past TLS: implicit on submissions, STARTTLS otherwise."""
    if endpoint.protocol == "submissions":
        return smtplib.SMTP_SSL(endpoint.host, endpoint.port, timeout=TIMEOUT, context=context)
    client = smtplib.SMTP(endpoint.host, endpoint.port, timeout=TIMEOUT)
    client.starttls(context=context)
    return client


def imap_client(endpoint: Endpoint, context: ssl.SSLContext) -> imaplib.IMAP4:
    """An IMAP client past TLS: implicit on imaps, STARTTLS on imap."""
    if endpoint.protocol == "imaps":
        return imaplib.IMAP4_SSL(endpoint.host, endpoint.port, ssl_context=context, timeout=TIMEOUT)
    client = imaplib.IMAP4(endpoint.host, endpoint.port, timeout=TIMEOUT)
    client.starttls(ssl_context=context)
    return client


def pop3_client(endpoint: Endpoint, context: ssl.SSLContext) -> poplib.POP3:
    """A POP3 client past TLS: implicit on pop3s, STLS on pop3."""
    if endpoint.protocol == "pop3s":
        return poplib.POP3_SSL(endpoint.host, endpoint.port, timeout=TIMEOUT, context=context)
    client = poplib.POP3(endpoint.host, endpoint.port, timeout=TIMEOUT)
    client.stls(context=context)
    return client


def _speak_imap(endpoint: Endpoint, context: ssl.SSLContext) -> Session:
    session = Session()
    with imap_client(endpoint, context) as client:
        _tls(session, client.sock)
    return session


def _speak_pop3(endpoint: Endpoint, context: ssl.SSLContext) -> Session:
    session = Session()
    client = pop3_client(endpoint, context)
    try:
        _tls(session, client.sock)
    finally:
        client.quit()
    return session


def _speak_sieve(endpoint: Endpoint, context: ssl.SSLContext) -> Session:
    """ManageSieve (RFC 5804): the capability greeting up to OK, then STARTTLS."""
    session = Session()
    with socket.create_connection((endpoint.host, endpoint.port), timeout=TIMEOUT) as raw:
        reader = raw.makefile("rb")
        while not (line := reader.readline()).upper().startswith(b"OK"):
            if not line:
                raise ConnectionError("ManageSieve closed the connection before its greeting ended")
        raw.sendall(b"STARTTLS\r\n")
        answer = reader.readline()
        reader.close()
        if not answer.upper().startswith(b"OK"):
            raise ConnectionError(f"STARTTLS refused: {answer.decode(errors='replace').strip()}")
        with context.wrap_socket(raw, server_hostname=None) as tls:
            _tls(session, tls)
    return session


def _speak_tls(endpoint: Endpoint, context: ssl.SSLContext) -> Session:
    session = Session()
    with (
        socket.create_connection((endpoint.host, endpoint.port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=None) as tls,
    ):
        _tls(session, tls)
    return session


SPEAK: dict[str, Callable[[Endpoint, ssl.SSLContext], Session]] = {
    "smtp": _speak_smtp,
    "submission": _speak_smtp,
    "submissions": _speak_smtp,
    "imap": _speak_imap,
    "imaps": _speak_imap,
    "pop3": _speak_pop3,
    "pop3s": _speak_pop3,
    "managesieve": _speak_sieve,
    "https": _speak_tls,
}


def _tls(session: Session, sock: socket.socket | None) -> None:
    if not isinstance(sock, ssl.SSLSocket):
        raise ssl.SSLError("the connection is not encrypted")
    session.tls = sock.version() or "TLS"
    session.cert = dict(sock.getpeercert() or {})


def _names(cert: dict[str, object]) -> list[str]:
    entries = cert.get("subjectAltName", ())
    return [str(value) for kind, value in entries if kind == "DNS"]  # type: ignore[attr-defined]


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the certificate does not verify: {exc.verify_message or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {TIMEOUT:.0f} s"
    return str(exc) or type(exc).__name__


RELAY_PROBE = "check-relay-probe@relay-test.invalid"


def relay_result(endpoint: Endpoint) -> Result:
    """An unauthenticated client asks port 25 to relay to an outside domain: it must be refused."""
    try:
        with smtplib.SMTP(
            endpoint.host, endpoint.port, timeout=TIMEOUT, local_hostname="check.invalid"
        ) as smtp:
            smtp.ehlo()
            smtp.mail("check@relay-sender.invalid")
            code, text = smtp.rcpt(RELAY_PROBE)
            smtp.rset()
    except (OSError, smtplib.SMTPException) as exc:
        return failed("open relay", f"could not test on {endpoint.label}: {_why(exc)}", "is postfix running?")
    answer = f"{code} {text.decode(errors='replace')[:80]}"
    if code >= 500:
        return passed("open relay", f"relaying to an outside domain is refused: {answer}")
    if code >= 400:
        return warned("open relay", f"relaying was deferred, not refused: {answer}", "see postfix's log")
    return failed(
        "open relay",
        f"port 25 accepted a recipient at an outside domain without AUTH: {answer}",
        "the server is an open relay: check mynetworks and smtpd_relay_restrictions",
    )


def served_keys(endpoint: Endpoint) -> dict[str, str] | Result:
    """The TLSA 3 1 1 value of each key port 25 serves (ECDSA, and RSA for clients without
    ECDSA), or the failed result when a handshake fails."""
    served: dict[str, str] = {}
    for kind, ciphers in (("ECDSA", "ECDHE-ECDSA-AES128-GCM-SHA256"), ("RSA", "ECDHE-RSA-AES128-GCM-SHA256")):
        tls12 = _tls12_context(ciphers)
        try:
            with smtplib.SMTP(
                endpoint.host, endpoint.port, timeout=TIMEOUT, local_hostname="check.invalid"
            ) as smtp:
                smtp.starttls(context=tls12)
                der = (
                    smtp.sock.getpeercert(binary_form=True) if isinstance(smtp.sock, ssl.SSLSocket) else None
                )
        except (OSError, smtplib.SMTPException) as exc:
            return failed(
                "TLSA", f"no {kind} handshake on {endpoint.label}: {_why(exc)}", "see postfix's log"
            )
        if der:
            served[kind] = spki_sha256(der)
    return served


def tlsa_result(tlsa: set[str], served: dict[str, str] | Result) -> Result:
    """DANE: the keys port 25 serves are among the TLSA 3 1 1 records `mailstack dns` prints."""
    if not tlsa:
        return passed("TLSA", "the site publishes no TLSA records (its certificate is the operator's)")
    if isinstance(served, Result):
        return served
    missing = {kind: digest for kind, digest in served.items() if digest not in tlsa}
    if not served or missing:
        return failed(
            "TLSA",
            f"port 25 serves keys with no TLSA 3 1 1 record: {missing or 'none served'}",
            "publish the TLSA records `mailstack dns SITE` prints, before the keys go live",
        )
    return passed("TLSA", f"the {' and '.join(served)} keys on port 25 match TLSA 3 1 1 of `mailstack dns`")


def _tls12_context(ciphers: str) -> ssl.SSLContext:
    """TLS 1.2 with one cipher, so the server must present the matching certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the key is compared with DNS, not with a CA
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


def spki_sha256(der_certificate: bytes) -> str:
    """The TLSA 3 1 1 value of a certificate: SHA-256 of its SubjectPublicKeyInfo."""
    public_key = x509.load_der_x509_certificate(der_certificate).public_key()
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()
