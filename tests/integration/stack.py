"""The running test stack and the clients the integration tests speak to it with.

Everything here talks to real daemons over 127.0.0.1 (or, for the relay test, from a
throwaway container on the stack's own front network). Every wait is bounded and says
what it waited for when it gives up.
"""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import json
import poplib
import re
import secrets
import smtplib
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from typer.testing import CliRunner

from mailstack import engine
from mailstack.cli import app
from mailstack.site.loader import load_site
from mailstack.site.models import Site

ROOT = Path(__file__).resolve().parents[2]
SITE_FIXTURE = ROOT / "tests" / "fixtures" / "integration" / "site.yaml"

# The plaintexts of the fixture's hashes (UTF-8 on purpose: clients must send them as UTF-8).
ALICE = "alice@itest.example"
BOB = "bob@itest.example"
CAROL = "carol@itest.example"
DAVE = "dave@shop.itest-two.example"
TEAM = "team@itest.example"
PASSWORDS: dict[str, str] = {
    ALICE: "Älice-pässwört-1",  # ARGON2ID
    BOB: "Bøb-Пароль-2",  # SHA512-CRYPT
    CAROL: "Cärol-quota-3",  # ARGON2ID, quota 1M
    DAVE: "Dävë-schlüssel-4",  # ARGON2ID, second domain
}
# The rate-limited mailbox of the fixture site (send_rate 2/1h): test_hardening, test_faults.
FRANK = "frank@itest.example"
FRANK_PASSWORD = "Fränk-limit-6"
# A mailbox that test_lifecycle adds to the site file while the stack runs.
ERIN = "erin@itest.example"
ERIN_PASSWORD = "Érin-neu-5"
ERIN_HASH = (
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$wgkdn99+pzhNxSWt50LaBA"
    "$VdsrqRGMSeBrO2eUIcMnsw4I+fVGAHfTn8ueIuljhAA"
)

# Senders and relays outside the site: reserved TLDs, so nothing ever resolves.
EXTERNAL_SENDER = "someone@sender-itest.test"
EXTERNAL_RCPT = "victim@elsewhere-itest.invalid"
CLIENT_HELO = "mx.sender-itest.test"

# The fixture site bans addresses after failed logins (abuse.auth_ban): guard and fence run too.
SERVICES = ("postfix", "dovecot", "rspamd", "redis", "guard", "fence", "web")
# Observations worth reading in the run summary (printed by conftest.pytest_terminal_summary).
NOTES: list[str] = []
SMTP_TIMEOUT = 30.0
WAIT_TIMEOUT = 30.0


class WaitTimeoutError(AssertionError):
    """A bounded wait gave up; the message names what was awaited."""


def token(label: str) -> str:
    """A subject that no other test (or earlier run) uses."""
    return f"{label} {secrets.token_hex(5)}"


def wait_until(
    what: str, probe: Callable[[], bool], *, timeout: float, interval: float = 0.3, detail: str = ""
) -> None:
    """Poll ``probe`` until it is true; after ``timeout`` seconds raise WaitTimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"gave up after {timeout:.0f}s waiting for {what}" + (f"; {detail}" if detail else "")
            )
        time.sleep(interval)


def cgroup_memory_mib(container_id: str) -> float | None:
    """MiB a container uses, from its cgroup (v1 or v2): `docker stats` of a newer client
    against Debian's 20.10 engine reports 0 B. None when neither file is there."""
    for path in (
        Path(f"/sys/fs/cgroup/memory/docker/{container_id}/memory.usage_in_bytes"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.current"),
    ):
        if path.exists():
            return int(path.read_text()) / 2**20
    return None


def make_message(
    sender: str,
    to: str | list[str],
    subject: str,
    body: str = "A small test message from the mailstack integration suite.\n",
    *,
    domain: str = "itest.example",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to if isinstance(to, str) else ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(body)
    return message


def filler(size: int) -> str:
    """Plain text of about ``size`` bytes that looks like prose to a spam filter."""
    line = "The quick brown fox jumps over the lazy dog while the integration suite counts bytes.\n"
    return line * (size // len(line) + 1)


def sasl_plain(user: str, password: str) -> str:
    """The base64 AUTH PLAIN response, with the password in UTF-8 (RFC 4616)."""
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode("utf-8")).decode("ascii")


def smtp_auth(smtp: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    """AUTH PLAIN with a UTF-8 password (smtplib.login only sends ASCII). Returns the reply."""
    smtp.ehlo_or_helo_if_needed()
    return smtp.docmd("AUTH", "PLAIN " + sasl_plain(user, password))


def imap_auth(imap: imaplib.IMAP4, user: str, password: str) -> None:
    """AUTHENTICATE PLAIN with a UTF-8 password (imaplib.login only sends ASCII)."""
    secret = b"\0" + user.encode() + b"\0" + password.encode("utf-8")
    imap.authenticate("PLAIN", lambda _challenge: secret)


@dataclass
class Stack:
    """One running compose project of the test site, and ways to talk to it."""

    site_path: Path
    project: engine.Project
    up_error: str | None = None
    up_result: engine.UpResult | None = None
    notes: list[str] = field(default_factory=lambda: NOTES)

    # -- where it is ---------------------------------------------------------------------
    @property
    def site(self) -> Site:
        return self.project.site

    @property
    def state_dir(self) -> Path:
        return self.project.state_dir

    @property
    def out_dir(self) -> Path:
        return self.project.out_dir

    @property
    def host(self) -> str:
        return self.site.network.bind[0]

    @property
    def ports(self) -> dict[str, int]:
        return self.site.network.ports.published()

    @property
    def ca_path(self) -> Path:
        return self.state_dir / "tls" / "ca.crt"

    def tls_context(self) -> ssl.SSLContext:
        """Trust only the site's CA; the certificate names site.hostname, we dial 127.0.0.1."""
        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.check_hostname = False
        return context

    def reload_site(self) -> None:
        """Read the site file again (after a test edited it)."""
        self.project = engine.Project(
            site=load_site(self.site_path), out_dir=self.out_dir, state_dir=self.state_dir
        )

    # -- compose and logs ----------------------------------------------------------------
    def compose(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.project.compose(*args, timeout=timeout)

    def cli(self, command: str, *args: str, stdin: str = "", code: int = 0) -> str:
        """`mailstack COMMAND SITE ARGS…` on this stack's site, output and state; its output."""
        where = ["--output", str(self.out_dir), "--state", str(self.state_dir)]
        result = CliRunner().invoke(app, [command, str(self.site_path), *args, *where], input=stdin)
        assert result.exit_code == code, result.output
        return result.output

    def exec(self, service: str, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", service, *command, timeout=timeout)

    def logs(self, service: str, lines: int = 200) -> str:
        return engine.tail_logs(self.project, service, lines)

    def all_logs(self, lines: int = 40) -> str:
        parts = []
        for service in SERVICES:
            try:
                text = self.logs(service, lines)
            except (OSError, subprocess.SubprocessError) as exc:
                text = f"(could not read logs: {exc})"
            parts.append(f"===== {service} (last {lines} lines) =====\n{text}")
        return "\n".join(parts)

    def wait_for_log(self, service: str, pattern: str, *, timeout: float = 15) -> str:
        """The first recent log line of ``service`` matching the regex ``pattern``."""
        regex = re.compile(pattern)
        found: list[str] = []

        def probe() -> bool:
            found[:] = [line for line in self.logs(service, 400).splitlines() if regex.search(line)]
            return bool(found)

        wait_until(f"a {service} log line matching {pattern!r}", probe, timeout=timeout, interval=0.5)
        return found[-1]

    def service_states(self) -> dict[str, str]:
        return engine.service_states(self.project)

    def container_ids(self) -> dict[str, str]:
        return engine.container_ids(self.project)

    def top(self, service: str, fields: str) -> list[list[str]]:
        """The processes of ``service``'s container as `docker top … -eo FIELDS` lists them:
        one row per process, split into the fields (the last one keeps its spaces)."""
        run = subprocess.run(
            ["docker", "top", self.container_ids()[service], "-eo", fields],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        columns = fields.count(",") + 1
        return [line.split(None, columns - 1) for line in run.stdout.splitlines()[1:] if line.strip()]

    def rspamd_heap_kib(self) -> int:
        """The heap (RssAnon, KiB) of rspamd's main process, which every worker shares: about
        38 MiB when it loaded the compiled Hyperscan databases, 250 MiB when it compiled them."""
        rows = self.top("rspamd", "pid,args")
        pid = next(pid for pid, args in rows if args.startswith("rspamd: main process"))
        status = Path(f"/proc/{pid}/status").read_text()
        heap = re.search(r"^RssAnon:\s+(\d+) kB", status, re.M)
        assert heap, status
        return int(heap.group(1))

    def queue(self) -> list[dict[str, object]]:
        """The postfix queue as postqueue -j reports it (one JSON object per message)."""
        run = self.exec("postfix", "postqueue", "-j")
        assert run.returncode == 0, f"postqueue -j failed: {run.stderr.strip() or run.stdout.strip()}"
        return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]

    def front_network(self) -> str:
        run = subprocess.run(
            [
                "docker",
                "network",
                "ls",
                "--filter",
                f"label=com.docker.compose.project={self.project.name}",
                "--filter",
                "label=com.docker.compose.network=front",
                "--format",
                "{{.Name}}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        names = run.stdout.split()
        assert len(names) == 1, f"expected one front network of {self.project.name}, found {names}"
        return names[0]

    def dkim_records(self) -> dict[str, str]:
        """TXT records by name, from the rendered dns/records.json (a list, as `mailstack dns`)."""
        data = json.loads((self.out_dir / "dns" / "records.json").read_text())
        return {r["name"].rstrip("."): r["value"] for r in data if r["type"] == "TXT"}

    # -- SMTP ----------------------------------------------------------------------------
    def smtp(self, protocol: str = "smtp", *, timeout: float = SMTP_TIMEOUT) -> smtplib.SMTP:
        """A connected client that has read the greeting (postscreen may take a while)."""
        port = self.ports[protocol]
        if protocol == "submissions":
            return smtplib.SMTP_SSL(
                self.host, port, local_hostname=CLIENT_HELO, context=self.tls_context(), timeout=timeout
            )
        return smtplib.SMTP(self.host, port, local_hostname=CLIENT_HELO, timeout=timeout)

    @contextmanager
    def submission(self, user: str, *, protocol: str = "submission") -> Iterator[smtplib.SMTP]:
        """An authenticated submission session (STARTTLS on 587, implicit TLS on 465)."""
        smtp = self.smtp(protocol)
        try:
            smtp.ehlo()
            if protocol == "submission":
                smtp.starttls(context=self.tls_context())
                smtp.ehlo()
            code, reply = smtp_auth(smtp, user, self.password(user))
            if code != 235:
                raise smtplib.SMTPAuthenticationError(code, reply)
            yield smtp
        finally:
            _quit(smtp)

    def submit(
        self,
        user: str,
        message: EmailMessage,
        *,
        mail_from: str | None = None,
        rcpt_to: list[str] | None = None,
        protocol: str = "submission",
    ) -> None:
        with self.submission(user, protocol=protocol) as smtp:
            smtp.send_message(message, from_addr=mail_from or user, to_addrs=rcpt_to)

    def deliver(
        self, message: EmailMessage, *, rcpt_to: list[str] | None = None, mail_from: str = EXTERNAL_SENDER
    ) -> None:
        """Hand a message to port 25 as a remote MTA would, retrying postscreen's temporary 4xx."""
        attempts = 3
        for attempt in range(1, attempts + 1):
            smtp = self.smtp("smtp")
            try:
                smtp.send_message(message, from_addr=mail_from, to_addrs=rcpt_to)
                return
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                if attempt < attempts and _is_postscreen_tempfail(exc):
                    self.notes.append(f"port 25 answered a temporary error, retrying: {exc}")
                    time.sleep(1)
                    continue
                raise
            finally:
                _quit(smtp)

    # -- IMAP / POP3 ---------------------------------------------------------------------
    def password(self, user: str) -> str:
        return ERIN_PASSWORD if user == ERIN else PASSWORDS[user]

    def imap_plain(self) -> imaplib.IMAP4:
        """A connection to the imap port (143), before STARTTLS."""
        return imaplib.IMAP4(self.host, self.ports["imap"], timeout=SMTP_TIMEOUT)

    @contextmanager
    def imap(self, user: str) -> Iterator[imaplib.IMAP4_SSL]:
        """A logged-in IMAP session on the imaps port."""
        imap = imaplib.IMAP4_SSL(
            self.host, self.ports["imaps"], ssl_context=self.tls_context(), timeout=SMTP_TIMEOUT
        )
        try:
            imap_auth(imap, user, self.password(user))
            yield imap
        finally:
            close_imap(imap)

    @contextmanager
    def pop3(self, user: str) -> Iterator[poplib.POP3_SSL]:
        pop = poplib.POP3_SSL(
            self.host, self.ports["pop3s"], context=self.tls_context(), timeout=SMTP_TIMEOUT
        )
        try:
            pop.user(user)
            pop.pass_(self.password(user))
            yield pop
        finally:
            with suppress(poplib.error_proto, OSError):
                pop.quit()

    def subjects(self, user: str, folder: str = "INBOX") -> list[str]:
        with self.imap(user) as imap:
            return folder_subjects(imap, folder)

    def wait_for_message(
        self, user: str, subject: str, *, folder: str = "INBOX", timeout: float = WAIT_TIMEOUT
    ) -> bytes:
        """Poll the user's folder over IMAP until a message with ``subject`` is there; return its bytes."""
        found: list[bytes] = []
        with self.imap(user) as imap:

            def probe() -> bool:
                raw = fetch_by_subject(imap, folder, subject)
                if raw is not None:
                    found.append(raw)
                return bool(found)

            try:
                wait_until(
                    f"a message with subject {subject!r} in {user}'s {folder}",
                    probe,
                    timeout=timeout,
                    interval=0.4,
                )
            except WaitTimeoutError as exc:
                present = folder_subjects(imap, folder)
                raise WaitTimeoutError(
                    f"{exc}; {folder} holds {len(present)} messages: {present[-8:]}"
                ) from None
        return found[0]

    def clear_mailbox(self, user: str, folder: str = "INBOX") -> None:
        with self.imap(user) as imap:
            typ, data = imap.select(_quote(folder))
            assert typ == "OK", f"cannot select {folder} of {user}: {data}"
            if int(data[0] or 0):
                imap.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                imap.expunge()


def frank_submits(stack: Stack, rcpt: list[str], subject: str) -> tuple[int, str]:
    """One message from frank (send_rate 2/1h) on 587; the final reply code and text."""
    smtp = stack.smtp("submission")
    try:
        smtp.ehlo()
        smtp.starttls(context=stack.tls_context())
        smtp.ehlo()
        code, reply = smtp_auth(smtp, FRANK, FRANK_PASSWORD)
        assert code == 235, f"AUTH as {FRANK}: {code} {reply!r}"
        try:
            smtp.send_message(make_message(FRANK, rcpt, subject), from_addr=FRANK, to_addrs=rcpt)
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
            error = exc.smtp_error
            return exc.smtp_code, error.decode() if isinstance(error, bytes) else str(error)
        return 250, "accepted"
    finally:
        smtp.close()


def fetch_by_subject(imap: imaplib.IMAP4, folder: str, subject: str) -> bytes | None:
    typ, _ = imap.select(_quote(folder), readonly=True)
    if typ != "OK":
        return None  # the folder does not exist (yet)
    typ, data = imap.uid("SEARCH", "SUBJECT", _quote(subject))
    uids = data[0].split() if typ == "OK" and data and data[0] else []
    if not uids:
        return None
    typ, parts = imap.uid("FETCH", uids[-1].decode(), "(BODY.PEEK[])")
    for part in parts:
        if isinstance(part, tuple):
            return bytes(part[1])
    return None


def close_imap(imap: imaplib.IMAP4) -> None:
    """LOGOUT if the connection is still open; never raise."""
    with suppress(imaplib.IMAP4.error, OSError):
        if imap.state != "LOGOUT":
            imap.logout()
    with suppress(OSError):
        imap.shutdown()


def folder_subjects(imap: imaplib.IMAP4, folder: str) -> list[str]:
    typ, data = imap.select(_quote(folder), readonly=True)
    if typ != "OK":
        return [f"(cannot select {folder})"]
    if not int(data[0] or 0):
        return []
    typ, parts = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = []
    for part in parts if typ == "OK" else []:
        if isinstance(part, tuple):
            header = email.message_from_bytes(bytes(part[1]), policy=email.policy.default)
            subjects.append(str(header.get("Subject", "")))
    return subjects


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _is_postscreen_tempfail(exc: smtplib.SMTPException) -> bool:
    """postscreen's after-220 tests answer 450/421 'Service currently unavailable' once."""
    replies: list[tuple[int, bytes | str]] = []
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies += exc.recipients.values()
    elif isinstance(exc, smtplib.SMTPSenderRefused | smtplib.SMTPDataError):
        replies.append((exc.smtp_code, exc.smtp_error))
    return any(
        400 <= code < 500
        and "Service currently unavailable" in (text if isinstance(text, str) else text.decode())
        for code, text in replies
    )


# Active stacks, so a failing test can print their logs (see conftest.pytest_runtest_makereport).
ACTIVE: list[Stack] = []
