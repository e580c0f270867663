"""groups and shared_mailboxes: the model, the rights each login ends up with, what Dovecot
and Postfix get, and how `up` and the Ansible role run the reconciler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from mailstack import engine
from mailstack.render import plan_files
from mailstack.render.dav_rights import DAV_RIGHTS_SCRIPT
from mailstack.render.dovecot import (
    ACL_RIGHTS,
    MODSEQ_TRACKING,
    acl_rights_lines,
    shared_user_lines,
    sharing_settings,
)
from mailstack.render.postfix import virtual_alias_lines
from mailstack.site.loader import load_site, parse_site
from mailstack.site.models import Site
from mailstack.site.sharing import effective_rights
from tests.conftest import FIXTURES, ROOT, fake_state

BASE = (FIXTURES / "valid" / "base.yaml").read_text(encoding="utf-8")
HASH = (
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$NruCNtu7jz3/ZyPM4x9T3A"
    "$yvjc8CAHgrwcLKL1ObYhcb7p8BMq7v2kQhqSBZoocL8"
)
SHARED = f"""
  - address: jonas@test.example
    password_hash: "{HASH}"
  - address: ola@other.example
    password_hash: "{HASH}"
aliases:"""
SITE = (
    BASE.replace("\naliases:", SHARED, 1)
    + """groups:
  - name: team
    members: [user@test.example, jonas@test.example]
shared_mailboxes:
  - address: office@test.example
    name: Office
    quota: 1G
    rights:
      - group: team
        right: read
      - mailbox: user@test.example
        right: write
      - domain: other.example
        right: manage
  - address: archive@test.example
"""
)


def rendered(site: Site, tmp_path: Path) -> dict[str, str]:
    planned = plan_files(site, fake_state(site.domain_names), tmp_path / "state", tmp_path / "out")
    return {f.path: f.content.decode() for f in planned}


@pytest.fixture
def site() -> Site:
    return parse_site(SITE)


def test_each_login_keeps_the_largest_right_it_is_given(site: Site) -> None:
    office, archive = site.shared_mailboxes
    assert effective_rights(site, office.rights) == {
        "jonas@test.example": "read",  # through the group
        "ola@other.example": "manage",  # everyone in other.example
        "user@test.example": "write",  # read through the group, write of its own
    }
    assert effective_rights(site, archive.rights) == {}


def test_the_rights_map_onto_dovecot_acls_exactly() -> None:
    assert ACL_RIGHTS["read"] == ("lookup", "read", "write-seen")
    write = ("write", "write-deleted", "insert", "expunge", "create", "delete")
    assert ACL_RIGHTS["write"] == (*ACL_RIGHTS["read"], *write)
    assert ACL_RIGHTS["manage"] == (*ACL_RIGHTS["write"], "admin")


def test_the_reconciler_gets_every_shared_mailbox_even_one_without_rights(site: Site) -> None:
    assert acl_rights_lines(site) == [
        "mailbox office@test.example",
        "right office@test.example user=jonas@test.example lookup read write-seen",
        "right office@test.example user=ola@other.example " + " ".join(ACL_RIGHTS["manage"]),
        "right office@test.example user=user@test.example " + " ".join(ACL_RIGHTS["write"]),
        "mailbox archive@test.example",
    ]


def test_shared_mailboxes_are_users_without_a_password(site: Site) -> None:
    assert shared_user_lines(site) == [
        "office@test.example::vmail:vmail::::userdb_quota_storage_size=1073741824",
        "archive@test.example::vmail:vmail::::",
    ]


def test_mail_to_a_shared_mailbox_is_delivered_to_it(site: Site, tmp_path: Path) -> None:
    files = rendered(site, tmp_path)
    assert "office@test.example\tOK" in files["config/postfix/virtual_mailboxes"]
    assert "archive@test.example\tOK" in files["config/postfix/virtual_mailboxes"]
    # The passdb reads only the login users; the shared ones are in a userdb of their own.
    assert "office@" not in files["config/dovecot/users"]
    conf = files["config/dovecot/dovecot.conf"]
    passdb = conf[conf.index("passdb passwd-file {") :].split("}", 1)[0]
    assert "/etc/dovecot/users" in passdb
    assert "passwd_file_path = /etc/dovecot/shared-users" in conf
    assert "prefix = shared/$user/" in conf
    assert "imap_acl = yes" in conf
    group_vars = YAML(typ="safe").load(files["ansible/group_vars/all.yml"])
    assert group_vars["mailstack_stack_rights"] == ["sh", "/etc/dovecot/acl/reconcile.sh"]


def test_a_site_without_shared_mailboxes_loads_no_acl_plugin(tmp_path: Path) -> None:
    plain = parse_site(BASE)
    assert not sharing_settings(plain).enabled
    files = rendered(plain, tmp_path)
    assert "acl" not in files["config/dovecot/dovecot.conf"]
    assert YAML(typ="safe").load(files["ansible/group_vars/all.yml"])["mailstack_stack_rights"] == []


def test_a_shared_mailbox_may_be_an_alias_target_or_catch_all() -> None:
    text = SITE.replace("to: [admin@test.example, user@test.example]", "to: [office@test.example]")
    catch_all = "  - name: other.example\n    catch_all: office@test.example"
    text = text.replace("  - name: other.example", catch_all)
    site = parse_site(text)
    lines = virtual_alias_lines(site)
    assert "team@test.example\toffice@test.example" in lines
    assert "@other.example\toffice@test.example" in lines
    # The catch-all domain's real mailboxes still get their own mail.
    assert "ola@other.example\tola@other.example" in lines


def test_postmaster_may_be_a_shared_mailbox() -> None:
    site = parse_site(SITE.replace("address: archive@test.example", "address: postmaster@test.example"))
    assert not any(line.startswith("postmaster@test.example\t") for line in virtual_alias_lines(site))


def test_a_shared_mailbox_quota_counts_against_the_message_size() -> None:
    with pytest.raises(Exception, match=r"smallest quota .*office@test.example"):
        parse_site(SITE.replace("quota: 1G\n    rights", "quota: 5M\n    rights"))


# --- the reconciler as `up` runs it ---------------------------------------------------------


Answer = subprocess.CompletedProcess[str]


def fake_compose(monkeypatch: pytest.MonkeyPatch, stdout: str, returncode: int = 0) -> list[tuple[str, ...]]:
    """Record the project's compose calls and answer them (no Docker in unit tests)."""
    calls: list[tuple[str, ...]] = []

    def compose(_self: engine.Project, *args: str, **_kw: object) -> Answer:
        calls.append(args)
        return subprocess.CompletedProcess(list(args), returncode, stdout, "doveadm: boom")

    monkeypatch.setattr(engine.Project, "compose", compose)
    return calls


def project(site: Site) -> engine.Project:
    return engine.Project(site, Path("/nonexistent/out"), Path("/nonexistent/state"))


CHANGE = "set -u office@test.example INBOX user=jonas@test.example lookup"


def test_up_runs_the_reconciler_in_dovecot_and_reports_each_change(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_compose(monkeypatch, CHANGE + "\n")
    said: list[str] = []
    assert engine.reconcile_rights(project(site), said.append) == [CHANGE]
    assert calls == [("exec", "-T", "dovecot", "sh", "/etc/dovecot/acl/reconcile.sh")]
    assert said == [f"rights: doveadm {CHANGE}"]


def test_up_reports_no_change_when_the_rights_already_match(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_compose(monkeypatch, "")
    assert engine.reconcile_rights(project(site), print) == []


def test_up_without_shared_mailboxes_runs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_compose(monkeypatch, "")
    assert engine.reconcile_rights(project(parse_site(BASE)), print) == []
    assert calls == []


def test_a_failing_reconciler_fails_up_with_doveadms_words(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_compose(monkeypatch, "", returncode=1)
    with pytest.raises(engine.EngineError, match="shared mailboxes failed: doveadm: boom"):
        engine.reconcile_rights(project(site), print)


def test_the_role_runs_the_reconciler_after_the_handlers_and_is_changed_only_by_a_change() -> None:
    tasks = YAML(typ="safe").load(
        (Path(__file__).parents[2] / "playbooks/roles/mailstack_stack/tasks/main.yml").read_text()
    )
    names = [t["name"] for t in tasks]
    flush = names.index("Ensure the services whose configuration changed have read it")
    task = tasks[names.index("Ensure the rights on the shared mailboxes are those of the site description")]
    assert flush < names.index("Ensure the rights on the shared mailboxes are those of the site description")
    assert task["community.docker.docker_compose_v2_exec"]["argv"] == "{{ mailstack_stack_rights }}"
    assert task["changed_when"] == "mailstack_stack_acl.stdout | length > 0"


def test_the_role_reconciles_the_calendars_and_address_books_in_sogo_right_after_the_mailboxes() -> None:
    """The groupware's shared calendars and address books: the command comes from group_vars
    (none by default), runs in the sogo container, and is changed only when it printed a change."""
    role = Path(__file__).parents[2] / "playbooks/roles/mailstack_stack"
    tasks = YAML(typ="safe").load((role / "tasks/main.yml").read_text())
    names = [t["name"] for t in tasks]
    mailboxes = names.index("Ensure the rights on the shared mailboxes are those of the site description")
    dav = "Ensure the rights on the shared calendars and address books are those of the site description"
    assert names.index(dav) == mailboxes + 1
    task = tasks[names.index(dav)]
    assert task["community.docker.docker_compose_v2_exec"]["service"] == "sogo"
    assert task["community.docker.docker_compose_v2_exec"]["argv"] == "{{ mailstack_stack_dav_rights }}"
    assert task["changed_when"] == "mailstack_stack_dav_acl.stdout | length > 0"
    assert task["when"] == ["mailstack_stack_dav_rights | length > 0", "not ansible_check_mode"]
    assert YAML(typ="safe").load((role / "defaults/main.yml").read_text())["mailstack_stack_dav_rights"] == []
    specs = YAML(typ="safe").load((role / "meta/argument_specs.yml").read_text())
    spec = specs["argument_specs"]["main"]["options"]["mailstack_stack_dav_rights"]
    assert (spec["type"], spec["elements"]) == ("list", "str")
    # The script goes on stdin, from the release, at the path the renderer writes it to.
    stdin = task["community.docker.docker_compose_v2_exec"]["stdin"]
    assert "mailstack_release_src ~ '/' ~ mailstack_stack_dav_rights_script" in stdin
    defaults = YAML(typ="safe").load((role / "defaults/main.yml").read_text())
    assert defaults["mailstack_stack_dav_rights_script"] == DAV_RIGHTS_SCRIPT


def test_with_activesync_the_role_has_dovecot_track_modification_sequences_as_up_does(tmp_path: Path) -> None:
    role = Path(__file__).parents[2] / "playbooks/roles/mailstack_stack"
    tasks = YAML(typ="safe").load((role / "tasks/main.yml").read_text())
    task = next(t for t in tasks if t["name"].startswith("Ensure Dovecot tracks the modification sequences"))
    assert task["community.docker.docker_compose_v2_exec"]["service"] == "dovecot"
    assert task["community.docker.docker_compose_v2_exec"]["argv"] == "{{ mailstack_stack_modseq_tracking }}"
    assert task["changed_when"] is False
    assert (
        YAML(typ="safe").load((role / "defaults/main.yml").read_text())["mailstack_stack_modseq_tracking"]
        == []
    )
    office = load_site(ROOT / "examples" / "office.yaml")
    group_vars = YAML(typ="safe").load(rendered(office, tmp_path)["ansible/group_vars/all.yml"])
    assert tuple(group_vars["mailstack_stack_modseq_tracking"]) == MODSEQ_TRACKING
    without = office.model_copy(
        update={"groupware": office.groupware.model_copy(update={"activesync": False})}
    )
    files = rendered(without, tmp_path)
    assert "mailstack_stack_modseq_tracking" not in YAML(typ="safe").load(files["ansible/group_vars/all.yml"])


# --- acl/reconcile.sh's logic, against a stand-in for doveadm's acl and mailbox commands -----

STAND_IN = """#!{python}
import json, os, sys
path = os.environ["ACL_STATE"]
state = json.load(open(path))
args = sys.argv[1:]
if args[:2] == ["-f", "tab"]:
    args = args[2:]
log = open(path + ".log", "a")
log.write(" ".join(args) + "\\n")
owner = args[args.index("-u") + 1]
if args[:2] == ["mailbox", "list"]:
    print("\\n".join(state["boxes"]))
elif args[:2] == ["acl", "get"]:
    print("ID\\tGlobal\\tRights")
    for ident, rights in state["acl"].get(owner, {{}}).get(args[4], {{}}).items():
        print(f"{{ident}}\\t\\t{{rights}}")
    print("owner\\t\\tlookup read")
    print("user=g@test.example\\tglobal\\tlookup")
elif args[:2] == ["acl", "set"]:
    state["acl"].setdefault(owner, {{}}).setdefault(args[4], {{}})[args[5]] = " ".join(args[6:])
elif args[:2] == ["acl", "delete"]:
    del state["acl"][owner][args[4]][args[5]]
json.dump(state, open(path, "w"))
"""


OFFICE = "office@test.example"


def reconcile(tmp_path: Path, site: Site, *args: str) -> list[str]:
    """Run the rendered reconcile.sh with the stand-in doveadm; the changes it printed."""
    files = rendered(site, tmp_path)
    (tmp_path / "rights").write_text(files["config/dovecot/acl/rights"])
    (tmp_path / "reconcile.sh").write_text(files["config/dovecot/acl/reconcile.sh"])
    stand_in = tmp_path / "bin" / "doveadm"
    stand_in.parent.mkdir(exist_ok=True)
    stand_in.write_text(STAND_IN.format(python=sys.executable))
    stand_in.chmod(0o755)
    env = {
        "PATH": f"{stand_in.parent}:/usr/bin:/bin",
        "ACL_STATE": str(tmp_path / "state.json"),
        "MAILSTACK_ACL_RIGHTS": str(tmp_path / "rights"),
    }
    run = subprocess.run(
        ["sh", str(tmp_path / "reconcile.sh"), *args], capture_output=True, text=True, env=env, check=False
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_the_reconciler_sets_deletes_and_then_has_nothing_to_do(site: Site, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    stale = {"user=gone@test.example": "lookup read", "user=jonas@test.example": "read lookup write-seen"}
    state.write_text(json.dumps({"boxes": ["INBOX", "Team notes"], "acl": {OFFICE: {"INBOX": stale}}}))
    assert reconcile(tmp_path, site, "--dry-run") == reconcile(tmp_path, site, "--dry-run")
    changes = reconcile(tmp_path, site)
    office = "-u office@test.example"
    manage, write = " ".join(ACL_RIGHTS["manage"]), " ".join(ACL_RIGHTS["write"])
    assert changes == [
        f"acl delete {office} INBOX user=gone@test.example",
        # jonas already has his rights, in another order: nothing to do for him in INBOX
        f"acl set {office} INBOX user=ola@other.example {manage}",
        f"acl set {office} INBOX user=user@test.example {write}",
        f"acl set {office} Team notes user=jonas@test.example lookup read write-seen",
        f"acl set {office} Team notes user=ola@other.example {manage}",
        f"acl set {office} Team notes user=user@test.example {write}",
    ]
    acl = json.loads(state.read_text())["acl"][OFFICE]
    assert (
        set(acl["INBOX"])
        == set(acl["Team notes"])
        == {
            "user=jonas@test.example",
            "user=ola@other.example",
            "user=user@test.example",
        }
    )
    assert reconcile(tmp_path, site) == []  # the second run changes nothing
    assert "acl recalc -u office@test.example" in (tmp_path / "state.json.log").read_text()


def test_the_reconciler_removes_every_right_the_description_no_longer_gives(tmp_path: Path) -> None:
    bare = parse_site(SITE.split("    rights:\n")[0] + "  - address: archive@test.example\n")
    (tmp_path / "state.json").write_text(
        json.dumps(
            {"boxes": ["INBOX"], "acl": {OFFICE: {"INBOX": {"user=jonas@test.example": "lookup read"}}}}
        )
    )
    assert reconcile(tmp_path, bare) == ["acl delete -u office@test.example INBOX user=jonas@test.example"]
