"""Client operations run inside a network namespace (netns.ClientNetns.client).

`python -m tests.integration.nsclient '{"op": …}'` prints one JSON object. Standard library
only; every network operation has a timeout, and a failure to connect is a result, not an
exception, so the caller can assert on it.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import smtplib
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

TIMEOUT = 10.0


def context(cafile: str) -> ssl.SSLContext:
    tls = ssl.create_default_context(cafile=cafile)
    tls.check_hostname = False
    return tls


def outcome(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | smtplib.SMTPServerDisconnected):
        return "reset"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    return f"error: {type(exc).__name__}: {exc}"


def connect(host: str, port: int, read: bool = True, timeout: float = 3.0, **_: Any) -> dict[str, Any]:
    """Open a TCP connection and, with ``read``, read the first line the server sends."""
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            line = sock.makefile("rb").readline().decode(errors="replace").strip() if read else ""
        ok = line or not read
        return {"result": "ok" if ok else "closed", "line": line, "seconds": time.monotonic() - started}
    except OSError as exc:
        return {"result": outcome(exc), "seconds": time.monotonic() - started}


def connect_each(host: str, ports: dict[str, list[Any]], **_: Any) -> dict[str, Any]:
    """`connect` to each of ``ports`` (name → [port, read]) from one process: {name: result}."""
    return {name: connect(host, port, read=read) for name, (port, read) in ports.items()}


def relay(host: str, port: int, helo: str, mail_from: str, rcpt: str, **_: Any) -> dict[str, Any]:
    """RCPT to a foreign domain without AUTH on port 25 (postscreen holds a new client ~6 s)."""
    with smtplib.SMTP(host, port, local_hostname=helo, timeout=30) as smtp:
        smtp.ehlo()
        code, reply = smtp.mail(mail_from)
        if code != 250:
            return {"stage": "MAIL", "code": code, "reply": reply.decode()}
        code, reply = smtp.rcpt(rcpt)
        return {"stage": "RCPT", "code": code, "reply": reply.decode()}


def sasl_plain(user: str, password: str) -> str:
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


def submission(host: str, port: int, cafile: str) -> smtplib.SMTP:
    smtp = smtplib.SMTP(host, port, local_hostname="nsclient.test", timeout=TIMEOUT)
    smtp.ehlo()
    smtp.starttls(context=context(cafile))
    smtp.ehlo()
    return smtp


def auth_fail(host: str, port: int, cafile: str, user: str, passwords: list[str], **_: Any) -> dict[str, Any]:
    """AUTH PLAIN with each password in one submission session, until the server stops answering.
    Each reply: [code, text, seconds since the start]."""
    started = time.monotonic()
    replies: list[list[Any]] = []
    try:
        smtp = submission(host, port, cafile)
    except (OSError, smtplib.SMTPException) as exc:
        return {"replies": replies, "error": outcome(exc), "end": time.monotonic() - started}
    try:
        for password in passwords:
            code, text = smtp.docmd("AUTH", "PLAIN " + sasl_plain(user, password))
            replies.append([code, text.decode(errors="replace"), time.monotonic() - started])
            if code == 235:
                break
        return {"replies": replies, "error": None, "end": time.monotonic() - started}
    except (OSError, smtplib.SMTPException) as exc:
        return {"replies": replies, "error": outcome(exc), "end": time.monotonic() - started}
    finally:
        smtp.close()


def login(host: str, port: int, cafile: str, user: str, password: str, **_: Any) -> dict[str, Any]:
    """A whole submission login: [code, text] of AUTH, or how the connection failed."""
    try:
        smtp = submission(host, port, cafile)
        try:
            code, text = smtp.docmd("AUTH", "PLAIN " + sasl_plain(user, password))
        finally:
            smtp.close()
        return {"code": code, "reply": text.decode(errors="replace")}
    except (OSError, smtplib.SMTPException) as exc:
        return {"code": None, "reply": outcome(exc)}


def imap_login(host: str, port: int, cafile: str, user: str, password: str, **_: Any) -> dict[str, Any]:
    secret = b"\0" + user.encode() + b"\0" + password.encode()
    try:
        imap = imaplib.IMAP4_SSL(host, port, ssl_context=context(cafile), timeout=TIMEOUT)
    except OSError as exc:
        return {"result": outcome(exc)}
    try:
        typ, data = imap.authenticate("PLAIN", lambda _challenge: secret)
        return {"result": typ, "reply": repr(data)}
    except imaplib.IMAP4.error as exc:
        return {"result": "NO", "reply": str(exc)}
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            imap.logout()


OPS: dict[str, Callable[..., dict[str, Any]]] = {
    "connect": connect,
    "connect_each": connect_each,
    "relay": relay,
    "auth_fail": auth_fail,
    "login": login,
    "imap_login": imap_login,
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    print(json.dumps(OPS[spec.pop("op")](**spec)))


if __name__ == "__main__":
    main()
