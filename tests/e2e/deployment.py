"""A mailstack site deployed with `mailstack deploy` to an e2e server, and a mail client for it.

Used by test_deploy.py; reusable by the hardening (#5) and later e2e tests. The site's
mail ports inside the server are the standard ones, bound to 0.0.0.0 there; the tests
reach them through the server container's published 127.0.0.1 ports. TLS is verified
against the site's CA from the state directory (by chain, not by name: the client
connects to 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import poplib
import re
import secrets
import shlex
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from mailstack.passwords import hash_password
from mailstack.site.models import STANDARD_PORTS as MODEL_PORTS
from mailstack.vault import VAULT_HEADER, Vault
from tests.e2e.harness import Server, ansible_env, run

#: Site ports -> the same port inside the server (reached via server.port(N)): the model's
#: standard set, mail and web.
STANDARD_PORTS = dict(MODEL_PORTS)
#: The e2e site's ACME CA: nothing listens there (the server's own loopback). The host's acme
#: service keeps the temporary certificate of the site's CA (which the clients here trust)
#: and retries with back-off; the deploy paths of tls.mode acme are used all the same.
UNANSWERED_CA = "https://127.0.0.1:9/directory"
DEPLOY_TIMEOUT = 900.0
MAIL_TIMEOUT = 30.0
MAILSTACK = str(Path(sys.executable).with_name("mailstack"))
_RECAP = re.compile(
    r"^(?P<host>\S+): ok=(?P<ok>\d+) changed=(?P<changed>\d+) unreachable=(?P<unreachable>\d+)"
)


@dataclass(frozen=True)
class DeployRun:
    """One `mailstack deploy` run: its exit code, its output and its per-host recap.

    str() of it names the tasks that changed and ends with the last lines of the output:
    use `assert …, str(run)` (pytest cuts the repr of a non-string message short).
    """

    argv: list[str]
    returncode: int
    output: str
    seconds: float

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """host -> {ok, changed, unreachable, failed}, from the CLI's closing lines."""
        counts: dict[str, dict[str, int]] = {}
        for line in self.output.splitlines():
            if match := _RECAP.match(line):
                fields = dict(re.findall(r"(\w+)=(\d+)", line))
                counts[match["host"]] = {k: int(v) for k, v in fields.items()}
        return counts

    def changed(self, host: str) -> int:
        return self.recap[host]["changed"]

    def tasks(self) -> dict[str, list[str]]:
        """Task or handler title -> its result lines (`ok: [host]`, `changed: …`, …)."""
        results: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = results.setdefault(line, [])
            elif current is not None and re.match(r"^  (ok|changed|skipping|failed|fatal)\b", line):
                current.append(line.strip())
        return results

    def changed_tasks(self) -> list[str]:
        return [title for title, lines in self.tasks().items() if any(x.startswith("changed") for x in lines)]

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def __str__(self) -> str:
        changed = "\n  ".join(self.changed_tasks()) or "(none)"
        return (
            f"`{shlex.join(self.argv)}` exited {self.returncode} after {self.seconds:.0f} s\n"
            f"tasks that changed:\n  {changed}\n--- last lines ---\n{self.tail()}"
        )


@dataclass
class Deployment:
    """A site in `workdir` whose only host is `server`, with mailboxes <local>@<domain>."""

    server: Server
    workdir: Path
    site_id: str = "e2e"
    domain: str = "e2e.test"
    #: local part -> password; hashes are made once, so re-writing the site changes nothing.
    passwords: dict[str, str] = field(default_factory=dict)
    _hashes: dict[str, str] = field(default_factory=dict, repr=False)
    runs: list[DeployRun] = field(default_factory=list, repr=False)
    #: Set when the state is encrypted with ansible-vault (the CA is read through it).
    vault_password_file: Path | None = None
    #: Steps of a test sequence that succeeded, and the subject of a message sent early on.
    done: set[str] = field(default_factory=set)
    first_subject: str = ""
    #: Who `mailstack deploy` logs in as (root, or a sudo user), and hosts[].packages.
    ssh_user: str = "root"
    packages: str = "mirror"

    @property
    def hostname(self) -> str:
        return f"mail.{self.domain}"

    @property
    def site_path(self) -> Path:
        return self.workdir / "site.yaml"

    @property
    def state_dir(self) -> Path:
        return self.workdir / ".mailstack" / self.site_id

    @property
    def project(self) -> str:
        return f"mailstack-{self.site_id}"

    @property
    def host_root(self) -> str:
        return f"/opt/mailstack/{self.site_id}"

    def address(self, local: str) -> str:
        return f"{local}@{self.domain}"

    # --- the site file and `mailstack deploy` ---------------------------------------------

    def write_site(self, mailboxes: Iterable[str], shared: dict[str, dict[str, str]] | None = None) -> None:
        """(Re)write the site with these mailboxes (local parts); passwords are made once.
        ``shared``: shared mailbox (local part) -> mailbox (local part) -> right."""
        entries = []
        for local in mailboxes:
            if local not in self.passwords:
                self.passwords[local] = f"{local}-{secrets.token_urlsafe(12)}"
            if local not in self._hashes:
                self._hashes[local] = hash_password(self.passwords[local], "SHA512-CRYPT")
            entries.append(
                {"address": self.address(local), "password_hash": self._hashes[local], "quota": "1G"}
            )
        site = {
            "site": self.site_id,
            "hostname": self.hostname,
            "admin_email": entries[0]["address"],
            "offline": True,  # the server reaches nothing beyond this machine
            # The default bind (0.0.0.0 and ::) inside the server: its front network gets IPv6.
            "network": {"ports": STANDARD_PORTS},
            "tls": {"mode": "acme", "acme": {"email": entries[0]["address"], "directory_url": UNANSWERED_CA}},
            "limits": {"message_size": "10M"},
            "domains": [{"name": self.domain}],
            "mailboxes": entries,
            "shared_mailboxes": [
                {
                    "address": self.address(local),
                    "rights": [{"mailbox": self.address(m), "right": r} for m, r in rights.items()],
                }
                for local, rights in (shared or {}).items()
            ],
            "hosts": [{**self.server.inventory_entry(user=self.ssh_user), "packages": self.packages}],
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        # JSON is YAML: the loader takes it as it is.
        self.site_path.write_text(json.dumps(site, indent=2) + "\n")

    def write_example(
        self, example: Path, passwords: Mapping[str, str], without: Collection[str] = ()
    ) -> None:
        """(Re)write the site as an example describes it, adapted to this server as
        write_site's: this site id, the standard port of each protocol the example publishes
        (on the default bind), the server as its one host. ``passwords``: local part -> the
        plaintext of the example's hash; ``without``: local parts of mailboxes left out."""
        data = YAML(typ="safe").load(example.read_text(encoding="utf-8"))
        data["site"] = self.site_id
        data["network"] = {"ports": {name: STANDARD_PORTS[name] for name in data["network"]["ports"]}}
        data["mailboxes"] = [m for m in data["mailboxes"] if m["address"].split("@")[0] not in without]
        data["hosts"] = [{**self.server.inventory_entry(user=self.ssh_user), "packages": self.packages}]
        self.passwords.update(passwords)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.site_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def mailstack(self, *args: str, timeout: float = 300) -> str:
        """Run another `mailstack` command on the site (render, vault …); its output."""
        return run([MAILSTACK, *args], timeout=timeout, cwd=self.workdir).stdout

    def audit(
        self, only: str, *, timeout: float = 900
    ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        """`mailstack audit SITE --host SERVER --only ONLY` as an admin runs it: the run and
        its JSON report, item IDs -> items under "by_id" (AssertionError when it wrote none)."""
        report_dir = self.workdir / "audit"
        argv = [MAILSTACK, "audit", str(self.site_path), "--host", self.server.name]
        argv += ["--only", only, "--report", str(report_dir)]
        result = run(argv, check=False, timeout=timeout, cwd=self.workdir, env=ansible_env())
        assert (report_dir / "audit.json").exists(), result.stdout[-3000:] + result.stderr[-3000:]
        report: dict[str, Any] = json.loads((report_dir / "audit.json").read_text())
        report["by_id"] = {item["id"]: item for item in report["items"]}
        return result, report

    def deploy(self, *options: str, timeout: float = DEPLOY_TIMEOUT) -> DeployRun:
        """Run `mailstack deploy SITE OPTIONS…` as an operator would, over real SSH."""
        # Deploy ends with `mailstack check` on the host, through SSH forwards to the host's
        # own published ports (the e2e server publishes them elsewhere on 127.0.0.1).
        argv = [MAILSTACK, "deploy", str(self.site_path), *options]
        started = time.monotonic()
        env = ansible_env()
        # The server is on this machine: ssh's compression (-C) would only burn CPU, and
        # makes shipping the image archive eight times slower here.
        env["ANSIBLE_SSH_ARGS"] = shlex.join(a for a in shlex.split(env["ANSIBLE_SSH_ARGS"]) if a != "-C")
        result = run(argv, check=False, timeout=timeout, cwd=self.workdir, env=env)
        deploy_run = DeployRun(
            argv=argv,
            returncode=result.returncode,
            output=result.stdout + result.stderr,
            seconds=time.monotonic() - started,
        )
        self.runs.append(deploy_run)
        return deploy_run

    def discard_image_archives(self) -> None:
        """Delete the `docker save` archives of the images (hundreds of MB, not worth keeping)."""
        for archive in (self.workdir / "build").glob("*.images.tar"):
            archive.unlink()

    # --- the stack on the server ----------------------------------------------------------

    def on_server(self, cmd: str, *, check: bool = True, timeout: float = 120) -> str:
        """Run a shell command in the server (docker exec; the tests' own probes)."""
        return self.server.exec(cmd, check=check, timeout=timeout).stdout

    def compose(self, args: str, *, check: bool = True) -> str:
        return self.on_server(f"docker compose --project-name {self.project} {args}", check=check)

    def containers(self) -> dict[str, tuple[str, str]]:
        """service -> (container ID, start time): unchanged unless compose recreated or restarted it."""
        out = self.on_server(
            f"docker ps --all --filter label=com.docker.compose.project={self.project} "
            "--format '{{.ID}}' | xargs --no-run-if-empty docker inspect --format "
            "'{{index .Config.Labels \"com.docker.compose.service\"}} {{.Id}} {{.State.StartedAt}}'"
        )
        return {s: (i, t) for s, i, t in (line.split() for line in out.splitlines() if line.strip())}

    def health(self) -> dict[str, str]:
        """service -> health ("healthy", "starting", …) of the project's containers."""
        out = self.on_server(
            f"docker ps --all --filter label=com.docker.compose.project={self.project} "
            "--format '{{.ID}}' | xargs --no-run-if-empty docker inspect --format "
            '\'{{index .Config.Labels "com.docker.compose.service"}} '
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}'"
        )
        return dict(line.split() for line in out.splitlines() if line.strip())

    def wait_healthy(self, services: Sequence[str], timeout: float = 120) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if all(health.get(s) == "healthy" for s in services) or time.monotonic() > deadline:
                return health
            time.sleep(2)

    # --- a mail client through the published ports ----------------------------------------

    def state_text(self, relpath: str) -> str:
        """A file of the controller's state, decrypted when it is vault-encrypted."""
        data = (self.state_dir / relpath).read_bytes()
        if data.startswith(VAULT_HEADER):
            if self.vault_password_file is None:
                raise AssertionError("the state is vault-encrypted: set vault_password_file")
            data = Vault(self.vault_password_file).decrypt(data)
        return data.decode()

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.state_text("tls/ca.crt"))
        context.check_hostname = False  # reached as 127.0.0.1; the chain is still verified
        return context

    def submit(self, sender: str, recipients: Sequence[str], subject: str) -> None:
        """Send through submission (587): STARTTLS, then AUTH as the sender's mailbox."""
        message = EmailMessage()
        message["From"] = self.address(sender)
        message["To"] = ", ".join(self.address(r) for r in recipients)
        message["Subject"] = subject
        message["Message-ID"] = f"<{secrets.token_hex(8)}@{self.domain}>"
        message.set_content(f"{subject}\n")
        with smtplib.SMTP(
            self.server.host, self.server.port(587), local_hostname="client.invalid", timeout=MAIL_TIMEOUT
        ) as smtp:
            smtp.starttls(context=self.tls_context())
            smtp.login(self.address(sender), self.passwords[sender])
            smtp.send_message(message)

    @contextlib.contextmanager
    def imap(self, user: str) -> Iterator[imaplib.IMAP4_SSL]:
        """A logged-in IMAPS (993) session of `user`'s mailbox."""
        imap = imaplib.IMAP4_SSL(
            self.server.host, self.server.port(993), ssl_context=self.tls_context(), timeout=MAIL_TIMEOUT
        )
        try:
            imap.login(self.address(user), self.passwords[user])
            yield imap
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                imap.logout()

    def imap_subjects(self, user: str) -> list[str]:
        with self.imap(user) as imap:
            imap.select("INBOX", readonly=True)
            _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        parser = BytesHeaderParser()
        return [
            str(parser.parsebytes(part[1]).get("Subject", ""))
            for part in data
            if isinstance(part, tuple) and isinstance(part[1], bytes)
        ]

    def wait_for_imap(
        self, user: str, subject: str, timeout: float = MAIL_TIMEOUT, folder: str = "INBOX"
    ) -> float:
        """Seconds until `subject` is in `user`'s `folder` over IMAPS; AssertionError after timeout."""
        started = time.monotonic()
        while True:
            with self.imap(user) as imap:
                imap.select(f'"{folder}"', readonly=True)
                _, data = imap.search(None, "SUBJECT", f'"{subject}"')
            if data and data[0]:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"{subject!r} did not reach {self.address(user)}'s {folder} in {timeout:.0f} s"
                )
            time.sleep(0.5)

    def pop3_subjects(self, user: str) -> list[str]:
        """Subjects in `user`'s INBOX over POP3S (995); nothing is deleted."""
        pop = poplib.POP3_SSL(
            self.server.host, self.server.port(995), context=self.tls_context(), timeout=MAIL_TIMEOUT
        )
        try:
            pop.user(self.address(user))
            pop.pass_(self.passwords[user])
            count, _ = pop.stat()
            parser = BytesHeaderParser()
            subjects = []
            for number in range(1, count + 1):
                _, lines, _ = pop.top(number, 0)
                subjects.append(str(parser.parsebytes(b"\r\n".join(lines)).get("Subject", "")))
            return subjects
        finally:
            with contextlib.suppress(OSError, poplib.error_proto):
                pop.quit()


def assert_ok(result: DeployRun, host: str) -> None:
    assert result.returncode == 0, str(result)
    counts = result.recap.get(host)
    assert counts is not None, f"no recap line for {host}\n{result}"
    assert counts["failed"] == 0, str(result)
    assert counts["unreachable"] == 0, str(result)


def assert_no_change(site: Deployment, result: DeployRun, before: dict[str, tuple[str, str]]) -> None:
    """The deploy passed, changed nothing (changed=0) and left every container as it was."""
    assert_ok(result, site.server.name)
    assert result.changed(site.server.name) == 0, str(result)
    assert site.containers() == before


def needs(site: Deployment, *steps: str) -> None:
    """Skip a step of a test sequence whose earlier steps failed (their failure is reported)."""
    missing = [step for step in steps if step not in site.done]
    if missing:
        pytest.skip(f"needs the earlier step(s) {', '.join(missing)}, which failed")
