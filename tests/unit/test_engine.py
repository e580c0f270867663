"""Engine behaviour that needs no running stack: errors, port checks, reload choice."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mailstack import engine
from mailstack.site.loader import load_site
from tests.conftest import FIXTURES


@pytest.fixture
def project(tmp_path: Path) -> engine.Project:
    site = load_site(FIXTURES / "valid" / "base.yaml")
    return engine.Project(site=site, out_dir=tmp_path / "out", state_dir=tmp_path / "state")


def test_no_engine_gives_an_actionable_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(engine.EngineError, match=r"no Docker engine answers .*make install"):
        engine.check_engine()


def test_taken_port_is_named(project: engine.Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "published_by_project", lambda _p: set())
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = project.site.network.ports.model_copy(
            update={"smtp": None, "submission": port, "imaps": None}
        )
        site = project.site.model_copy(
            update={"network": project.site.network.model_copy(update={"ports": ports})}
        )
        taken = engine.Project(site=site, out_dir=project.out_dir, state_dir=project.state_dir)
        with pytest.raises(engine.EngineError, match=rf"port 127.0.0.1:{port} \(network.ports.submission\)"):
            engine.check_ports(taken)


def test_ports_held_by_our_own_stack_are_fine(
    project: engine.Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 2525))
        holder.listen()
        monkeypatch.setattr(engine, "published_by_project", lambda _p: {("127.0.0.1", 2525)})
        engine.check_ports(project)


def test_only_kept_containers_with_changed_files_are_reloaded(
    project: engine.Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(engine, "container_ids", lambda _p: {"postfix": "a", "dovecot": "new", "rspamd": "c"})

    class Done:
        returncode, stdout, stderr = 0, "", ""

    def compose(_self: engine.Project, *args: str, **_kw: object) -> Done:
        calls.append(args)
        return Done()

    monkeypatch.setattr(engine.Project, "compose", compose)
    changed = {"config/postfix/virtual_mailboxes", "config/dovecot/users", "compose.yaml"}
    before = {"postfix": "a", "dovecot": "old", "rspamd": "c"}
    assert engine.reload_changed(project, changed, before, say=lambda _m: None) == ["postfix"]
    assert calls == [tuple(engine.RELOAD["postfix"])]
    # A re-issued certificate reloads the TLS services that kept their container.
    calls.clear()
    kept = {"postfix": "a", "rspamd": "c", "web": "w"}
    monkeypatch.setattr(engine, "container_ids", lambda _p: kept)
    reloaded = engine.reload_changed(project, set(), kept, say=lambda _m: None, also=set(engine.TLS_SERVICES))
    assert reloaded == ["postfix", "web"]
    assert calls == [tuple(engine.RELOAD["postfix"]), tuple(engine.RELOAD["web"])]


def test_endpoints_name_every_published_port(project: engine.Project) -> None:
    assert engine.endpoints(project.site) == [
        ("smtp", "127.0.0.1:2525", "STARTTLS, no AUTH"),
        ("submission", "127.0.0.1:2587", "STARTTLS, then AUTH"),
        ("imaps", "127.0.0.1:2993", "implicit TLS"),
    ]


def test_compose_ps_json_in_both_shapes() -> None:
    assert engine.json_lines('{"Service": "a"}\n{"Service": "b"}\n') == [{"Service": "a"}, {"Service": "b"}]
    assert engine.json_lines('[{"Service": "a"}]') == [{"Service": "a"}]
    assert engine.json_lines("") == []


def test_purge_refuses_a_current_mailbox_and_needs_yes(project: engine.Project) -> None:
    from mailstack.errors import UserError
    from mailstack.purge import mail_home, purge_local

    with pytest.raises(UserError, match="still a mailbox of the site"):
        purge_local(project, "Admin@Test.Example", yes=True)
    with pytest.raises(UserError, match="pass --yes"):
        purge_local(project, "gone@test.example", yes=False)
    assert mail_home("Gone@Test.Example") == "/var/vmail/test.example/gone"
    with pytest.raises(UserError, match="ADDRESS"):
        mail_home("../../etc@x.example")
