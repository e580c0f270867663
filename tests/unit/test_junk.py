"""Spam into Junk and learning from moves (issue #13, 3): the rendered Dovecot configuration,
its Sieve scripts and the dovecot image name the same paths, programs and secrets."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from mailstack import services
from mailstack.render import plan_files
from mailstack.render.compose import Secret, compose_secrets
from mailstack.render.dovecot import junk_settings
from mailstack.site.loader import load_site
from tests.conftest import ROOT, fake_state

pytestmark = pytest.mark.unit

IMAGE = ROOT / "compose" / "images" / "dovecot"
DEMO = ROOT / "examples" / "demo.yaml"


def rendered() -> dict[str, str]:
    site = load_site(DEMO)
    files = plan_files(site, fake_state(site.domain_names), Path("/srv/state"), Path("/srv/build"))
    return {f.path: f.content.decode() for f in files}


def in_container(path: str) -> str:
    """Where a path of the dovecot container comes from in the rendered tree."""
    target = services.service("dovecot").config.target
    assert path.startswith(f"{target}/"), path
    return f"config/{services.service('dovecot').config.rendered}/{path.removeprefix(target + '/')}"


def test_the_learning_program_posts_to_rspamds_controller_on_its_catalogue_port() -> None:
    port = services.service("rspamd").internal_ports["controller"]
    assert junk_settings().controller_url == f"http://rspamd:{port}"
    # The controller and dovecot share the internal network the URL's name resolves on.
    back = {n.name for n in services.service("rspamd").networks if not n.online_only}
    assert back <= {n.name for n in services.service("dovecot").networks}


def test_every_sieve_script_dovecot_names_is_rendered() -> None:
    tree = rendered()
    conf = tree["config/dovecot/dovecot.conf"]
    paths = re.findall(r"^\s*path = (/etc/dovecot/\S+\.sieve)$", conf, re.MULTILINE)
    assert len(paths) == 4, paths
    for path in paths:
        assert in_container(path) in tree, path
    # Compiled where the sessions (vmail) may write: the directory the image's entrypoint makes.
    bin_paths = set(re.findall(r"^\s*bin_path = (\S+)$", conf, re.MULTILINE))
    assert bin_paths == {junk_settings().bin_dir}
    assert (
        f'install -d -o "$user" -g "$user" -m 0700 {junk_settings().bin_dir}'
        in (IMAGE / "entrypoint.sh").read_text()
    )


def test_the_sieve_scripts_pipe_to_the_program_the_image_installs() -> None:
    junk = junk_settings()
    conf = rendered()["config/dovecot/dovecot.conf"]
    assert f"\nsieve_pipe_bin_dir = {junk.pipe_dir}\n" in conf
    dockerfile = (IMAGE / "Dockerfile").read_text()
    assert f"COPY rspamd-learn.sh {junk.pipe_dir}/{junk.learn_program}\n" in dockerfile
    assert (IMAGE / "rspamd-learn.sh").stat().st_mode & 0o111, "rspamd-learn.sh is not executable"
    tree = rendered()
    for script, kind in (("learn-spam", "spam"), ("learn-ham", "ham")):
        text = tree[f"config/dovecot/sieve/{script}.sieve"]
        assert f'pipe :copy "{junk.learn_program}" ["{kind}", "{junk.controller_url}"];' in text


def test_spam_is_filed_by_the_header_rspamd_adds() -> None:
    tree = rendered()
    assert '"x-spam-status"' in tree["config/rspamd/local.d/milter_headers.conf"]
    script = tree["config/dovecot/sieve/spam-to-junk.sieve"]
    assert 'if header :matches "X-Spam-Status" "Yes,*" {' in script
    assert f'fileinto :create "{junk_settings().folder}";' in script
    # Before the user's own script, at delivery only (not on IMAP events).
    conf = tree["config/dovecot/dovecot.conf"]
    block = conf[conf.index("sieve_script spam_to_junk {") :]
    assert block.index("type = before") < block.index("}")
    assert block.index("cause = delivery") < block.index("}")


def test_junk_is_created_and_subscribed_as_the_special_use_folder() -> None:
    conf = rendered()["config/dovecot/dovecot.conf"]
    folder = junk_settings().folder
    assert f"  mailbox {folder} {{\n    special_use = \\Junk\n    auto = subscribe\n  }}\n" in conf


def test_moving_to_trash_or_within_junk_learns_no_ham() -> None:
    junk = junk_settings()
    script = rendered()["config/dovecot/sieve/learn-ham.sieve"]
    stop = f'if environment :is "imap.mailbox" ["{junk.trash}", "{junk.folder}"] {{\n  stop;\n}}\n'
    assert stop in script
    assert script.index(stop) < script.index("pipe ")


def test_dovecot_reads_the_controller_password_where_its_entrypoint_looks() -> None:
    site = load_site(DEMO)
    state = dataclasses.replace(
        fake_state(site.domain_names),
        secret_files={"redis": "secrets/redis", "rspamd_controller": "secrets/rspamd_controller"},
    )
    secrets = compose_secrets(site, state, "../state")
    controller = Secret(
        "rspamd_controller",
        "../state/secrets/rspamd_controller",
        f"{services.STATE_MOUNT}/secrets/rspamd_controller",
    )
    assert controller in secrets["dovecot"]
    assert controller in secrets["rspamd"]
    entrypoint = (IMAGE / "entrypoint.sh").read_text()
    assert f'state="${{MAILSTACK_STATE:-{services.STATE_MOUNT}}}"' in entrypoint
    assert '"$state/secrets/rspamd_controller"' in entrypoint
    # The copy for vmail is written on /run, a tmpfs of the read-only container.
    assert any(t.spec.startswith("/run:") for t in services.service("dovecot").tmpfs)
    assert {"CHOWN", "DAC_READ_SEARCH"} <= set(services.service("dovecot").caps)
