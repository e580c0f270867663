"""A full round trip with the site's probe mailbox: submission, IMAP and POP3 retrieval, both
DKIM signatures verified against the records `mailstack dns` prints, GTUBE refused on port 25,
and every probe message deleted afterwards."""

from __future__ import annotations

import imaplib
import poplib
import re
import secrets
import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import dkim

from mailstack.check.results import Result, failed, passed
from mailstack.check.transport import TIMEOUT, Endpoint, imap_client, pop3_client, smtp_client
from mailstack.dns import Record
from mailstack.site.models import Site

DELIVERY_TIMEOUT = 20.0
SUBJECT_PREFIX = "mailstack check"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_SENDER = "check@gtube-sender.invalid"
ALGORITHMS = {"rsa-sha256": "RSA", "ed25519-sha256": "Ed25519"}


class StepFailedError(Exception):
    """A step of the round trip failed; carries the result to report."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.reason)
        self.result = result


def round_trip(
    site: Site,
    endpoints: dict[str, Endpoint],
    context: ssl.SSLContext,
    password: str,
    records: tuple[Record, ...],
    at_rest: Callable[[str], Result] | None = None,
) -> list[Result]:
    """``at_rest``: looks at the probe message on the mail volume while it is there."""
    user = site.probe_address
    results: list[Result] = []
    subject = f"{SUBJECT_PREFIX} {secrets.token_hex(6)}"
    try:
        imaps = _need(endpoints, "imaps", "imap")
        results.append(_send(site, endpoints, context, user, password, subject))
        raw, seconds = _fetch_imap(imaps, context, user, password, subject)
        results.append(passed("round trip", f"submitted, then found over IMAP after {seconds:.1f} s"))
        results += _dkim(raw, site, records)
        if at_rest is not None:
            results.append(at_rest(subject))
        if pop3 := endpoints.get("pop3s") or endpoints.get("pop3"):
            results.append(_pop3_sees(pop3, context, user, password, subject))
    except StepFailedError as step:
        results.append(step.result)
    if "smtp" in endpoints:
        results.append(_gtube(endpoints["smtp"], user))
    results.append(_clean_up(endpoints, context, user, password))
    return results


def _need(endpoints: dict[str, Endpoint], *protocols: str) -> Endpoint:
    for protocol in protocols:
        if protocol in endpoints:
            return endpoints[protocol]
    raise StepFailedError(
        failed("round trip", f"none of {', '.join(protocols)} is published", "publish imaps")
    )


def _message(sender: str, recipient: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, recipient, subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.split("@")[1])
    message.set_content(body)
    return message


def _send(
    site: Site,
    endpoints: dict[str, Endpoint],
    context: ssl.SSLContext,
    user: str,
    password: str,
    subject: str,
) -> Result:
    endpoint = _need(endpoints, "submission", "submissions")
    message = _message(user, user, subject, "Sent by `mailstack check`; it deletes this message itself.\n")
    try:
        with smtp_client(endpoint, context) as client:
            client.login(user, password)
            client.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise StepFailedError(
            failed(
                "submission",
                f"the probe mailbox could not log in on {endpoint.label}: {exc.smtp_code} {exc.smtp_error!r}",
                "re-render and `mailstack up` (the probe mailbox comes with the state); check Dovecot's auth",
            )
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise StepFailedError(
            failed(
                "submission",
                f"sending on {endpoint.label} failed: {exc}",
                "a 4xx here often means rspamd (the milter) is down: `mailstack status`",
            )
        ) from None
    return passed("submission", f"the probe mailbox {site.probe_address} sent on {endpoint.label}")


def _fetch_imap(
    endpoint: Endpoint, context: ssl.SSLContext, user: str, password: str, subject: str
) -> tuple[bytes, float]:
    started = time.monotonic()
    try:
        with imap_client(endpoint, context) as imap:
            imap.login(user, password)
            while True:
                imap.select("INBOX", readonly=True)
                _, found = imap.search(None, "SUBJECT", f'"{subject}"')
                if found and found[0]:
                    _, data = imap.fetch(found[0].split()[-1], "(BODY.PEEK[])")
                    raw = next(part[1] for part in data if isinstance(part, tuple))
                    return bytes(raw), time.monotonic() - started
                if time.monotonic() - started > DELIVERY_TIMEOUT:
                    raise StepFailedError(
                        failed(
                            "round trip",
                            f"the probe message did not reach INBOX within {DELIVERY_TIMEOUT:.0f} s "
                            "(Postfix → rspamd → LMTP → Dovecot)",
                            "look at `mailstack logs SITE postfix` for the message's status",
                        )
                    )
                time.sleep(0.3)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise StepFailedError(
            failed("round trip", f"IMAP on {endpoint.label} failed: {exc}", "is dovecot healthy?")
        ) from None


def _dkim(raw: bytes, site: Site, records: tuple[Record, ...]) -> list[Result]:
    """Each DKIM signature of the probe message, verified with the key in the emitted records."""
    txt = {r.name.rstrip(".").lower(): r.value for r in records if r.type == "TXT"}

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:  # noqa: ARG001 - dkimpy's signature
        value = txt.get(name.decode().rstrip(".").lower())
        return value.encode() if value is not None else None

    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    algorithms = re.findall(r"^DKIM-Signature:.*?\ba=([\w-]+)", re.sub(r"\r\n[ \t]+", " ", head), re.M | re.I)
    results = []
    verifier = dkim.DKIM(raw)
    for algorithm, name in ALGORITHMS.items():
        if algorithm not in algorithms:
            results.append(
                failed(
                    f"DKIM {name}",
                    f"the probe message carries no {algorithm} signature (found: {algorithms or 'none'})",
                    "is rspamd up and signing for authenticated users? `mailstack logs SITE rspamd`",
                )
            )
            continue
        ok = bool(verifier.verify(idx=algorithms.index(algorithm), dnsfunc=lookup))
        domain = site.probe_address.split("@")[1]
        if ok:
            results.append(
                passed(f"DKIM {name}", f"{algorithm} signature of {domain} verifies with `mailstack dns`")
            )
        else:
            results.append(
                failed(
                    f"DKIM {name}",
                    f"the {algorithm} signature does not verify against the record `mailstack dns` prints",
                    "the state's DKIM key and rspamd's differ: re-render and `mailstack up`",
                )
            )
    return results


def _pop3_sees(endpoint: Endpoint, context: ssl.SSLContext, user: str, password: str, subject: str) -> Result:
    try:
        client = pop3_client(endpoint, context)
        try:
            client.user(user)
            client.pass_(password)
            count = len(client.list()[1])
            for number in range(count, 0, -1):
                header = b"\n".join(client.top(number, 0)[1])
                if subject.encode() in header:
                    return passed("POP3", f"the probe message is listed on {endpoint.label}")
        finally:
            client.quit()
    except (OSError, poplib.error_proto) as exc:
        return failed("POP3", f"POP3 on {endpoint.label} failed: {exc}", "is dovecot healthy?")
    return failed("POP3", f"POP3 on {endpoint.label} does not list the probe message", "see dovecot's log")


def _gtube(endpoint: Endpoint, user: str) -> Result:
    message = _message(GTUBE_SENDER, user, f"{SUBJECT_PREFIX} GTUBE", f"Spam test.\n\n{GTUBE}\n")
    try:
        with smtplib.SMTP(
            endpoint.host, endpoint.port, timeout=TIMEOUT, local_hostname="check.invalid"
        ) as smtp:
            smtp.send_message(message)
    except smtplib.SMTPDataError as exc:
        text = (
            exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        )
        reason = f"{exc.smtp_code} {text[:80]}"
        if exc.smtp_code >= 500:
            return passed("GTUBE", f"refused on {endpoint.label}: {reason}")
        return failed("GTUBE", f"deferred, not refused, on {endpoint.label}: {reason}", "is rspamd running?")
    except (OSError, smtplib.SMTPException) as exc:
        return failed("GTUBE", f"could not test on {endpoint.label}: {exc}", "is postfix running?")
    return failed(
        "GTUBE",
        f"the GTUBE test message was accepted on {endpoint.label}",
        "rspamd is not in the path: is the milter configured and rspamd healthy?",
    )


def _clean_up(endpoints: dict[str, Endpoint], context: ssl.SSLContext, user: str, password: str) -> Result:
    """Delete everything in the probe mailbox (it holds nothing but probe messages)."""
    try:
        endpoint = _need(endpoints, "imaps", "imap")
    except StepFailedError:
        return failed("clean-up", "no IMAP port to delete probe messages with", "publish imaps")
    try:
        with imap_client(endpoint, context) as imap:
            imap.login(user, password)
            left = _delete_all(imap)
    except (OSError, imaplib.IMAP4.error) as exc:
        return failed("clean-up", f"could not delete probe messages over IMAP: {exc}", "run check again")
    if left:
        return failed("clean-up", f"{left} probe message(s) left after EXPUNGE", "see dovecot's log")
    return passed("clean-up", "no probe message left in the probe mailbox")


LIST_LINE = re.compile(r'^\((?P<flags>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>"(?:[^"\\]|\\.)*"|\S+)$')


def selectable_folders(listing: list[Any]) -> list[str]:
    """Folder names from an IMAP LIST answer (RFC 3501 7.2.2), without \\Noselect ones."""
    names = []
    for line in listing:
        text = line.decode() if isinstance(line, bytes) else str(line)
        match = LIST_LINE.match(text)
        if match and "\\noselect" not in match["flags"].lower():
            name = match["name"]
            names.append(name[1:-1].replace('\\"', '"') if name.startswith('"') else name)
    return names


def _delete_all(imap: imaplib.IMAP4) -> int:
    left = 0
    _, listing = imap.list()
    for name in selectable_folders(listing):
        imap.select(f'"{name}"')
        _, found = imap.search(None, "ALL")
        if found and found[0]:
            imap.store(b",".join(found[0].split()).decode(), "+FLAGS.SILENT", "(\\Deleted)")
            imap.expunge()
            _, found = imap.search(None, "ALL")
            left += len(found[0].split()) if found and found[0] else 0
    return left
