"""Issue #3, 11 and 12, and `up`'s refusals: these tests re-render, reload, stop and restart
the session's stack, so conftest runs this module last; the order inside it matters too."""

from __future__ import annotations

import imaplib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailstack import engine, render
from mailstack.cli import app
from mailstack.render.writer import PlannedFile
from mailstack.site.loader import load_site
from mailstack.site.models import STANDARD_PORTS, Site
from mailstack.state.view import StateView
from tests.integration.ports import free_ports
from tests.integration.stack import (
    ALICE,
    BOB,
    ERIN,
    ERIN_HASH,
    EXTERNAL_SENDER,
    SERVICES,
    SITE_FIXTURE,
    Stack,
    WaitTimeoutError,
    close_imap,
    imap_auth,
    make_message,
    smtp_auth,
    token,
    wait_until,
)

pytestmark = pytest.mark.integration

UP_TIMEOUT = 240.0


def say(text: str) -> None:
    print(f"[mailstack up] {text}", file=sys.stderr)


def started_at(container_ids: dict[str, str]) -> dict[str, str]:
    run = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.StartedAt}}", *container_ids.values()],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return dict(zip(container_ids, run.stdout.split(), strict=False))


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_all_healthy(stack: Stack) -> None:
    states = stack.service_states()
    assert {s: states.get(s, "missing") for s in SERVICES} == dict.fromkeys(SERVICES, "healthy")


# A line each daemon's own config check must refuse.
BROKEN = {
    "postfix": ("config/postfix/main.cf", b"this line is not a postfix parameter\n"),
    "dovecot": ("config/dovecot/dovecot.conf", b"itest_no_such_setting = yes\n"),
    "rspamd": ("config/rspamd/local.d/actions.conf", b"reject = {{{ itest: not UCL ;;;\n"),
    "web": ("config/web/nginx.conf", b"itest_no_such_directive on;\n"),
}


@pytest.mark.parametrize("service", sorted(BROKEN))
def test_config_a_daemon_rejects_is_refused_before_anything_restarts(
    stack: Stack, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, garbage = BROKEN[service]
    original = render.plan_files

    def broken_plan(site: Site, view: StateView, state_dir: Path, out_dir: Path) -> list[PlannedFile]:
        files = original(site, view, state_dir, out_dir)
        assert any(f.path == path for f in files), f"the render has no {path} to break"
        return [PlannedFile(f.path, f.content + garbage, f.mode) if f.path == path else f for f in files]

    monkeypatch.setattr(render, "plan_files", broken_plan)
    ids = stack.container_ids()
    started = started_at(ids)
    tree = snapshot(stack.out_dir)
    refused: str | None = None
    try:
        engine.up(stack.project, timeout=60, say=say)
    except engine.ConfigRejectedError as exc:
        refused = str(exc)
    finally:
        monkeypatch.undo()
    if refused is None:
        # The broken file went live: show what the daemon made of it, then put the good one back.
        try:
            reaction = stack.wait_for_log(
                service, rf"(?i)failed to load|fatal|{re.escape(Path(path).name)}", timeout=8
            )
        except WaitTimeoutError:
            reaction = "nothing"
        engine.up(stack.project, timeout=UP_TIMEOUT, say=say)
        pytest.fail(
            f"the {service} check accepted {path} with {garbage!r} appended; the file was written and "
            f"{service} reloaded with it. {service} then logged: {reaction}"
        )
    assert f"{service} rejected the new configuration" in refused, refused
    assert snapshot(stack.out_dir) == tree, "the rendered tree changed although the config was refused"
    assert stack.container_ids() == ids
    assert started_at(ids) == started, "a container restarted although the config was refused"


@pytest.fixture
def second_site(tmp_path: Path) -> Iterator[engine.Project]:
    """A copy of the site with another id and other ports; whatever it starts is removed."""
    text = re.sub(r"^site: itest$", "site: itest-ports", SITE_FIXTURE.read_text(), flags=re.M)
    ports = iter(free_ports(len(STANDARD_PORTS)))
    protocols = "|".join(STANDARD_PORTS)
    text = re.sub(
        rf"^(    (?:{protocols})): \d+$", lambda m: f"{m.group(1)}: {next(ports)}", text, flags=re.M
    )
    path = tmp_path / "site.yaml"
    path.write_text(text)
    project = engine.Project(site=load_site(path), out_dir=tmp_path / "build", state_dir=tmp_path / "state")
    try:
        yield project
    finally:
        engine.down(project, volumes=True)


def test_up_with_a_published_port_taken_fails_naming_the_port_and_the_stack_stays_up(
    stack: Stack, second_site: engine.Project
) -> None:
    port = second_site.site.network.ports.smtp
    assert port is not None
    assert port not in stack.ports.values()
    ids = stack.container_ids()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        result = CliRunner().invoke(
            app,
            [
                "up",
                str(second_site.out_dir.parent / "site.yaml"),
                "--output",
                str(second_site.out_dir),
                "--state",
                str(second_site.state_dir),
                "--timeout",
                "60",
            ],
        )
    assert result.exit_code != 0, f"up succeeded although 127.0.0.1:{port} was taken:\n{result.output}"
    assert f"127.0.0.1:{port}" in result.output, result.output
    assert "network.ports.smtp" in result.output, result.output
    assert "Traceback" not in result.output, result.output
    assert engine.container_ids(second_site) == {}, "the second site started containers anyway"
    assert stack.container_ids() == ids
    assert_all_healthy(stack)


def add_erin(site_path: Path) -> None:
    text = site_path.read_text()
    entry = f'  - address: {ERIN}\n    name: Erin Added Later\n    password_hash: "{ERIN_HASH}"\n'
    assert "\naliases:" in text
    site_path.write_text(text.replace("\naliases:", entry + "\naliases:", 1))


def test_adding_a_mailbox_reloads_and_keeps_existing_mail(stack: Stack) -> None:
    kept = token("before erin")
    stack.deliver(make_message(EXTERNAL_SENDER, ALICE, kept))
    stack.wait_for_message(ALICE, kept)
    ids = stack.container_ids()

    add_erin(stack.site_path)
    stack.reload_site()
    result = engine.up(stack.project, timeout=UP_TIMEOUT, say=say)
    changed = sorted(a.path for a in result.actions if a.change.value != "unchanged")
    stack.notes.append(
        f"adding a mailbox: changed {changed}; reloaded {result.reloaded} in {result.seconds:.0f}s"
    )
    assert stack.container_ids() == ids, "up recreated containers for a new mailbox instead of reloading"
    assert {"postfix", "dovecot"} <= set(result.reloaded), f"reloaded {result.reloaded}, changed {changed}"

    hello = token("hello erin")
    stack.deliver(make_message(EXTERNAL_SENDER, ERIN, hello))
    stack.wait_for_message(ERIN, hello)
    with stack.submission(ERIN) as smtp:  # her password works for submission too
        assert smtp_auth(smtp, ERIN, stack.password(ERIN))[0] in (235, 503)  # 503: already authenticated
    stack.wait_for_message(ALICE, kept)


def imap_logout(stack: Stack) -> None:
    """A client that says LOGOUT and lets the server close first, as mail clients do. The
    server side of that connection (docker-proxy on 127.0.0.1:<imap>) then sits in TIME-WAIT."""
    with socket.create_connection((stack.host, stack.ports["imap"]), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"a LOGOUT\r\n")
        while reader.readline():
            pass
        reader.close()


def test_mail_survives_down_and_up(stack: Stack) -> None:
    marks = {user: token(f"survives restart {user.split('@')[0]}") for user in (ALICE, BOB, ERIN)}
    for user, subject in marks.items():
        stack.deliver(make_message(EXTERNAL_SENDER, user, subject))
        stack.wait_for_message(user, subject)
    imap_logout(stack)
    ids = stack.container_ids()

    engine.down(stack.project, volumes=False)
    assert engine.container_ids(stack.project) == {}, "containers are left after down"
    up_error: str | None = None
    try:
        result = engine.up(stack.project, timeout=UP_TIMEOUT, say=say)
        stack.notes.append(f"up after down (volumes kept) took {result.seconds:.0f}s")
    except engine.EngineError as exc:
        if "already in use" not in str(exc):
            raise
        # Check the volumes anyway: start the rendered project as up would, minus its port check.
        up_error = str(exc)
        engine.run_compose_up(stack.project)
        engine.wait_healthy(stack.project, UP_TIMEOUT, say)
    assert set(stack.container_ids().values()).isdisjoint(ids.values()), "down did not remove the containers"
    assert_all_healthy(stack)
    for user, subject in marks.items():
        stack.wait_for_message(user, subject, timeout=10)
    volumes = subprocess.run(
        [
            "docker",
            "volume",
            "ls",
            "--filter",
            f"label=com.docker.compose.project={stack.project.name}",
            "--format",
            "{{.Name}}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    stack.notes.append(f"volumes kept across down/up: {volumes.stdout.split()}")
    sockets = subprocess.run(["ss", "-tan"], capture_output=True, text=True, check=False, timeout=10).stdout
    waiting = [line.split()[3] for line in sockets.splitlines() if line.startswith("TIME-WAIT")]
    assert up_error is None, (
        f"up right after down refused to start (mail did survive; started by hand): {up_error}. "
        f"Our own ports then had closed connections in TIME-WAIT: "
        f"{sorted({w for w in waiting if w.rsplit(':', 1)[-1] in map(str, stack.ports.values())})}"
    )


def test_removing_a_mailbox_ends_its_open_sessions_and_keeps_its_mail(stack: Stack) -> None:
    """Sessions outlive reloads (Dovecot's shutdown_clients = no, so that a new certificate
    ends nobody's session); a removed mailbox's open sessions must still end at once."""

    def session(user: str) -> imaplib.IMAP4_SSL:
        imap = imaplib.IMAP4_SSL(
            stack.host, stack.ports["imaps"], ssl_context=stack.tls_context(), timeout=30
        )
        try:
            imap_auth(imap, user, stack.password(user))
            assert imap.select("INBOX")[0] == "OK"
        except BaseException:
            close_imap(imap)
            raise
        return imap

    erin, alice = session(ERIN), session(ALICE)
    text = stack.site_path.read_text()
    entry = f'  - address: {ERIN}\n    name: Erin Added Later\n    password_hash: "{ERIN_HASH}"\n'
    assert entry in text, "erin is not in the site file (test_adding_a_mailbox… adds her)"
    stack.site_path.write_text(text.replace(entry, "", 1))
    stack.reload_site()
    result = engine.up(stack.project, timeout=UP_TIMEOUT, say=say)
    assert "dovecot" in result.reloaded, result.reloaded

    def ended() -> bool:
        try:
            erin.noop()
        except (imaplib.IMAP4.abort, OSError):
            return True
        return False

    wait_until("erin's open IMAP session to end", ended, timeout=15, interval=0.5)
    close_imap(erin)
    assert alice.noop()[0] == "OK", "a session of a mailbox that stays was ended"
    close_imap(alice)
    with pytest.raises(imaplib.IMAP4.error):
        session(ERIN)
    home = stack.exec("dovecot", "ls", f"/var/vmail/{ERIN.split('@')[1]}/{ERIN.split('@')[0]}")
    assert "Maildir" in home.stdout.split(), f"erin's mail is gone: {home.stdout} {home.stderr}"
