"""`mailstack deploy` without a host: the release it renders, the play's variables and
command line, and how Ansible's output is read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from mailstack import deploy
from mailstack.deploy import DeployError, DeployOptions, DeployResult
from mailstack.engine import Project
from mailstack.errors import UserError
from mailstack.purge import purge_hosts
from mailstack.resources import resource_dir
from mailstack.site.loader import load_site
from mailstack.site.models import Host, Site
from mailstack.vault import Vault
from tests.conftest import FIXTURES

SITE = FIXTURES / "valid" / "design-section3.yaml"


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(SITE)


def two_hosts(site: Site) -> Site:
    mx2 = Host(name="mx2", address="203.0.113.11", ssh_user="deploy", ssh_port=2222)
    return site.model_copy(update={"hosts": [*site.hosts, mx2]})


def test_the_release_is_rendered_once_for_the_hosts_layout_beside_the_output(
    site: Site, tmp_path: Path
) -> None:
    out, state = tmp_path / "build" / "acme", tmp_path / "state"
    release = deploy.render_release(site, state, out)
    assert release.out_dir == tmp_path / "build" / "acme.release" == deploy.release_dir(out)
    assert not out.exists()  # the local compose project is not touched
    compose = (release.out_dir / "compose.yaml").read_text()
    assert 'file: "../state/' in compose  # /opt/mailstack/<site>/live → ../state
    assert str(tmp_path) not in compose
    assert (state / "state.json").exists()  # the state it needed was made here
    assert deploy.render_release(site, state, out).changed == set()


def test_the_inventory_is_the_releases_with_its_group_vars(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "build" / "acme"
    deploy.render_release(two_hosts(site), tmp_path / "state", out)
    inventory = deploy.inventory_file(out)
    assert inventory == tmp_path / "build" / "acme.release" / "ansible" / "inventory.yml"
    hosts = YAML(typ="safe").load(inventory.read_text())["all"]["children"][site.site]["hosts"]
    apt = {"mailstack_host_apt_update": True, "mailstack_docker_apt_update": True}
    assert hosts["mx1"] == {
        "ansible_host": "203.0.113.10",
        "ansible_user": "root",
        "ansible_port": 22,
        "ansible_become": False,  # root needs no sudo (a minimal server has none)
        **apt,
        "ansible_ssh_private_key_file": "~/.ssh/id_ed25519",
    }
    assert hosts["mx2"] == {
        "ansible_host": "203.0.113.11",
        "ansible_user": "deploy",
        "ansible_port": 2222,
        "ansible_become": True,
        **apt,
    }
    group_vars = YAML(typ="safe").load((inventory.parent / "group_vars" / "all.yml").read_text())
    assert group_vars["mailstack_site"] == site.site


def test_extra_vars_for_images_built_on_the_hosts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "dkim").mkdir(parents=True)
    (state / "state.json").write_text("{}")
    options = DeployOptions(base_image="debian:trixie-slim")
    extra = deploy.extra_vars(tmp_path / "release", state, options, vaulted=False)
    assert extra["mailstack_release_src"] == str((tmp_path / "release").resolve())
    assert extra["mailstack_state_src"] == str(state.resolve())
    assert extra["mailstack_stack_images_mode"] == "build"
    assert extra["mailstack_images_src"] == str(resource_dir("compose"))
    assert extra["mailstack_stack_base_image"] == "debian:trixie-slim"
    assert extra["mailstack_stack_state_entries"] == ["dkim", "state.json"]
    assert extra["mailstack_stack_state_vaulted"] is False
    assert extra["mailstack_stack_acme"] is False
    assert "mailstack_stack_base_bootstrap" not in extra
    assert "mailstack_host_apt_update" not in extra
    # A bootstrapped base has a name of its own unless one is given.
    bootstrapped = deploy.extra_vars(tmp_path, state, DeployOptions(bootstrap_base=True), vaulted=True)
    assert bootstrapped["mailstack_stack_base_bootstrap"] is True
    assert bootstrapped["mailstack_stack_base_image"] == "mailstack/base:trixie"
    assert bootstrapped["mailstack_stack_state_vaulted"] is True


def test_extra_vars_for_loaded_images_leave_apt_to_each_host(tmp_path: Path) -> None:
    """--images load once switched apt updates off for every host, and a fresh server with
    empty lists failed to install python3-apt (issue #12): hosts[].packages decides, in the
    inventory, which extra vars would override."""
    (tmp_path / "acme").mkdir()
    extra = deploy.extra_vars(tmp_path, tmp_path, DeployOptions(images="load"), vaulted=False)
    assert extra["mailstack_stack_images_mode"] == "load"
    assert not [name for name in extra if name.endswith("_apt_update")]
    assert extra["mailstack_stack_acme"] is True
    assert "mailstack_images_src" not in extra


def test_only_build_or_load_images() -> None:
    with pytest.raises(DeployError, match=r"--images must be build or load, not 'push'"):
        DeployOptions(images="push")


def test_options_make_the_ansible_playbook_command_line(tmp_path: Path) -> None:
    inventory, extra = tmp_path / "inventory.yml", tmp_path / "vars.json"
    plain = deploy.playbook_command(inventory, extra, DeployOptions())
    assert Path(plain[0]).name == "ansible-playbook"
    assert plain[1:] == [
        "--inventory",
        str(inventory),
        "--extra-vars",
        f"@{extra}",
        str(resource_dir("playbooks") / "site.yml"),
    ]
    password = tmp_path / "vault-password"
    password.write_text("secret\n")
    options = DeployOptions(check=True, diff=True, limit="mx1,mx2", tags="stack")
    full = deploy.playbook_command(inventory, extra, options, Vault(password))
    assert full[len(plain) :] == [
        "--check",
        "--diff",
        "--limit",
        "mx1,mx2",
        "--tags",
        "stack",
        "--vault-password-file",
        str(password),
    ]


def test_the_limit_selects_the_hosts_checked_after_the_deploy(site: Site) -> None:
    both = two_hosts(site)
    assert [h.name for h in deploy.selected_hosts(both, None)] == ["mx1", "mx2"]
    assert [h.name for h in deploy.selected_hosts(both, "mx2")] == ["mx2"]
    assert [h.name for h in deploy.selected_hosts(both, "mx2,mx1")] == ["mx1", "mx2"]
    assert deploy.selected_hosts(both, "mx3") == []


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("TASK [mailstack_host : Ensure apt] ********", "TASK [mailstack_host : Ensure apt]"),
        ("RUNNING HANDLER [Reload postfix] ***", "RUNNING HANDLER [Reload postfix]"),
        ("PLAY [Install the mail stack] ******", "PLAY [Install the mail stack]"),
        ("PLAY RECAP *********************************************", "PLAY RECAP"),
        ("ok: [mx1]", "  ok: [mx1]"),
        ("changed: [mx1] => (item=postfix)", "  changed: [mx1] => (item=postfix)"),
        ("*****************", None),
        ("", None),
    ],
)  # fmt: skip
def test_progress_lines_drop_the_rulers(line: str, shown: str | None) -> None:
    assert deploy.progress_line(line) == shown


def test_recap_lines_are_parsed_per_host() -> None:
    line = "mx1                  : ok=57   changed=3    unreachable=0    failed=1    skipped=9    rescued=0"
    assert deploy.recap_line(line + "\n") == ("mx1", {"ok": 57, "changed": 3, "unreachable": 0, "failed": 1})
    assert deploy.recap_line("ok: [mx1]") is None
    assert deploy.recap_line("PLAY RECAP ****") is None


@pytest.mark.parametrize(
    ("returncode", "recap", "ok"),
    [
        (0, {"mx1": {"ok": 5, "changed": 1, "unreachable": 0, "failed": 0}}, True),
        (0, {}, True),
        (2, {"mx1": {"ok": 5, "changed": 1, "unreachable": 0, "failed": 0}}, False),
        (0, {"mx1": {"ok": 5, "changed": 0, "unreachable": 0, "failed": 1}}, False),
        (0, {"mx1": {"ok": 0, "changed": 0, "unreachable": 1, "failed": 0}}, False),
    ],
)
def test_a_deploy_is_ok_when_the_play_and_every_host_are(
    returncode: int, recap: dict[str, dict[str, int]], ok: bool
) -> None:
    assert DeployResult(returncode, recap).ok is ok


def test_run_playbook_shows_progress_and_reads_the_recap() -> None:
    output = "\n".join(
        [
            "PLAY [Install] ****",
            "TASK [Gathering Facts] ****",
            "ok: [mx1]",
            "PLAY RECAP ****",
            "mx1 : ok=2    changed=0    unreachable=0    failed=0    skipped=0",
            "mx2 : ok=1    changed=0    unreachable=1    failed=0    skipped=0",
        ]
    )
    shown: list[str] = []
    fake = [sys.executable, "-c", f"import sys; print({output!r}); sys.exit(4)"]
    result = deploy.run_playbook(fake, shown.append)
    assert result.returncode == 4
    assert result.recap == {
        "mx1": {"ok": 2, "changed": 0, "unreachable": 0, "failed": 0},
        "mx2": {"ok": 1, "changed": 0, "unreachable": 1, "failed": 0},
    }
    assert shown[:4] == [
        "PLAY [Install]",
        "TASK [Gathering Facts]",
        "  ok: [mx1]",
        "PLAY RECAP",
    ]
    assert not result.ok


def test_a_missing_ansible_playbook_is_a_deploy_error(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="cannot run ansible-playbook"):
        deploy.run_playbook([str(tmp_path / "no-such-ansible-playbook")], print)


def test_a_site_without_hosts_is_not_deployed(site: Site, tmp_path: Path) -> None:
    alone = site.model_copy(update={"hosts": []})
    with pytest.raises(DeployError, match="lists no hosts"):
        deploy.deploy(alone, tmp_path / "out", tmp_path / "state", DeployOptions())
    assert not (tmp_path / "out.release").exists()


def test_purge_on_the_hosts_needs_a_deployed_release(site: Site, tmp_path: Path) -> None:
    project = Project(site=site, out_dir=tmp_path / "build" / "acme", state_dir=tmp_path / "state")
    with pytest.raises(UserError, match=r"no deployed release at .*acme\.release: run `mailstack deploy`"):
        purge_hosts(project, "gone@acme.example", yes=True)


def test_the_role_waits_for_restarted_services_to_be_healthy_again() -> None:
    """compose's restart returns at once: a third handler on the same notification waits,
    bounded, until what the second restarted is healthy (the reconcilers and the check come
    after)."""
    handlers = YAML(typ="safe").load(
        (resource_dir("playbooks") / "roles/mailstack_stack/handlers/main.yml").read_text()
    )
    names = [h["name"] for h in handlers]
    restart = names.index("Restart the services whose configuration changed and that read it at start only")
    wait = handlers[names.index("Wait until the restarted services are healthy again")]
    assert names.index(wait["name"]) == restart + 1
    assert wait["listen"] == handlers[restart]["listen"] == "mailstack configuration switched"
    compose = wait["community.docker.docker_compose_v2"]
    assert compose["services"] == handlers[restart]["community.docker.docker_compose_v2"]["services"]
    assert (compose["state"], compose["wait"]) == ("present", True)
    assert compose["wait_timeout"] == "{{ mailstack_stack_wait_timeout }}"
    assert (compose["pull"], compose["build"]) == ("never", "never")
