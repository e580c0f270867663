"""A round trip through a running stack: submit a message, then find it over IMAP.

Used by `make demo` and `mailstack probe`; it speaks to the stack as a mail client does,
with TLS verified against the site's CA.
"""

from __future__ import annotations

import imaplib
import secrets
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mailstack import services
from mailstack.check.certificate import state_reader
from mailstack.check.certificate import tls_context as certificate_context
from mailstack.errors import UserError
from mailstack.site.models import Site
from mailstack.state import State


class ProbeError(UserError):
    """The round trip failed; the message says at which step."""


@dataclass(frozen=True)
class ProbeResult:
    subject: str
    sent_via: str
    found_via: str
    seconds: float


def client_host(site: Site) -> str:
    return services.client_address(site.network.bind[0])


def tls_context(site: Site, state_dir: Path) -> ssl.SSLContext:
    """Verify the chain (against the site's CA when self-signed, or the issuers of the acme
    service's certificates). The name is checked by :func:`check_name`, since the stack is
    reached by address, not by its hostname."""
    read = state_reader(site, State(state_dir, write=False))
    return certificate_context(site, read)


def check_name(sock: ssl.SSLSocket, hostname: str) -> None:
    entries: Any = (sock.getpeercert() or {}).get("subjectAltName", ())
    names = [str(value) for kind, value in entries if kind == "DNS"]
    if hostname not in names:
        raise ProbeError(f"the server's certificate is for {', '.join(names) or 'no name'}, not {hostname}")


def round_trip(site: Site, state_dir: Path, user: str, password: str, *, timeout: float = 30) -> ProbeResult:
    ports = site.network.ports
    host, context = client_host(site), tls_context(site, state_dir)
    subject = f"mailstack probe {secrets.token_hex(6)}"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = user, user, subject
    message.set_content("This message was sent by `mailstack probe` to check the stack end to end.\n")
    started = time.monotonic()
    try:
        if ports.submission:
            sent_via = f"submission {host}:{ports.submission} (STARTTLS)"
            with smtplib.SMTP(
                host, ports.submission, local_hostname="probe.invalid", timeout=timeout
            ) as smtp:
                smtp.starttls(context=context)
                check_name(smtp.sock, site.hostname)  # type: ignore[arg-type]
                smtp.login(user, password)
                smtp.send_message(message)
        elif ports.submissions:
            sent_via = f"submissions {host}:{ports.submissions} (TLS)"
            with smtplib.SMTP_SSL(host, ports.submissions, context=context, timeout=timeout) as smtp:
                check_name(smtp.sock, site.hostname)  # type: ignore[arg-type]
                smtp.login(user, password)
                smtp.send_message(message)
        else:
            raise ProbeError("neither submission nor submissions is published; nothing to send through")
    except (OSError, smtplib.SMTPException) as exc:
        raise ProbeError(f"sending through {host} failed: {exc}") from None
    if not ports.imaps:
        raise ProbeError("imaps is not published; cannot read the message back")
    found_via = f"imaps {host}:{ports.imaps}"
    deadline = time.monotonic() + timeout
    try:
        with imaplib.IMAP4_SSL(host, ports.imaps, ssl_context=context, timeout=timeout) as imap:
            check_name(imap.sock, site.hostname)  # type: ignore[arg-type]
            imap.login(user, password)
            while True:
                imap.select("INBOX", readonly=True)
                _, data = imap.search(None, "SUBJECT", f'"{subject}"')
                if data and data[0]:
                    break
                if time.monotonic() > deadline:
                    raise ProbeError(f"the message {subject!r} did not arrive in INBOX within {timeout:.0f}s")
                time.sleep(0.5)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ProbeError(f"reading over IMAP from {host} failed: {exc}") from None
    return ProbeResult(subject, sent_via, found_via, time.monotonic() - started)
