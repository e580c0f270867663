"""abuse.spamhaus_dqs: Rspamd asks Spamhaus over DQS with a key kept in the state; the key is
in no rendered file, and postscreen's default list leaves Spamhaus out."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.errors import SiteValidationError, StateError
from mailstack.render import plan_files, render_site
from mailstack.site.loader import parse_site
from mailstack.site.models import Site
from mailstack.state import State, set_operator_secret
from tests.conftest import fake_state

KEY = "abcdefghij0123456789klmnop"  # the shape of a DQS key (26 letters and digits), not a real one
BASE = """
site: dqs
hostname: mail.a.test
admin_email: admin@a.test
network: {bind: 127.0.0.1}
domains:
  - name: a.test
"""


def site(extra: str = "") -> Site:
    return parse_site(BASE + extra)


def rendered(s: Site, *, with_key: bool = True) -> dict[str, str]:
    view = fake_state(s.domain_names)
    if with_key:
        view = dataclasses.replace(
            view, secret_files=view.secret_files | {"spamhaus_dqs": "secrets/spamhaus_dqs"}
        )
    base = Path("/srv/sites")
    files = plan_files(s, view, base / ".mailstack" / s.site, base / "build" / s.site)
    return {f.path: f.content.decode() for f in files}


def test_dqs_points_rspamd_at_the_key_from_its_environment_and_mounts_the_secret() -> None:
    files = rendered(site("abuse: {spamhaus_dqs: true}\n"))
    rbl = files["config/rspamd/local.d/rbl.conf"]
    assert 'rbl = "{= env.SPAMHAUS_DQS_KEY =}.zen.dq.spamhaus.net";' in rbl
    assert 'rbl = "{= env.SPAMHAUS_DQS_KEY =}.dbl.dq.spamhaus.net";' in rbl
    compose = YAML(typ="safe").load(files["compose.yaml"])
    assert compose["secrets"]["spamhaus_dqs"] == {"file": "../../.mailstack/dqs/secrets/spamhaus_dqs"}
    for name, service in compose["services"].items():
        sources = [s["source"] for s in service.get("secrets", [])]
        assert ("spamhaus_dqs" in sources) == (name == "rspamd"), name
    # postscreen keeps the key-free lists: main.cf cannot hold the key.
    main_cf = files["config/postfix/main.cf"]
    sites = main_cf.split("\npostscreen_dnsbl_sites =", 1)[1].split("\npostscreen_dnsbl_threshold", 1)[0]
    assert "spamhaus" not in sites
    assert "bl.spamcop.net" in sites


def test_without_dqs_nothing_of_it_is_rendered() -> None:
    files = rendered(site(), with_key=True)
    assert "dq.spamhaus.net" not in files["config/rspamd/local.d/rbl.conf"]
    assert "spamhaus_dqs" not in files["compose.yaml"]
    assert "zen.spamhaus.org" in files["config/postfix/main.cf"]


def test_a_dnsbl_list_the_site_gives_is_kept_as_written_with_dqs() -> None:
    files = rendered(site("abuse: {spamhaus_dqs: true, dnsbl: ['zen.spamhaus.org*3']}\n"))
    assert "zen.spamhaus.org*3" in files["config/postfix/main.cf"]


def test_dqs_without_a_key_in_the_state_says_how_to_give_it() -> None:
    with pytest.raises(StateError, match=r"mailstack secret set SITE spamhaus-dqs"):
        rendered(site("abuse: {spamhaus_dqs: true}\n"), with_key=False)


def test_dqs_is_refused_offline_with_its_field_path() -> None:
    with pytest.raises(SiteValidationError, match=r"abuse\.spamhaus_dqs"):
        site("offline: true\nabuse: {spamhaus_dqs: true}\n")


def test_the_key_is_kept_0600_replaced_on_a_second_set_and_checked(tmp_path: Path) -> None:
    state = State(tmp_path / "state")
    relpath = set_operator_secret(state, "dqs", "spamhaus-dqs", KEY)
    path = tmp_path / "state" / relpath
    assert path.read_text() == KEY + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    inode = path.stat().st_ino
    set_operator_secret(state, "dqs", "spamhaus-dqs", KEY[::-1])
    assert path.read_text() == KEY[::-1] + "\n"
    assert path.stat().st_ino == inode  # compose binds secrets by inode
    with pytest.raises(StateError, match="letters and digits") as caught:
        set_operator_secret(state, "dqs", "spamhaus-dqs", "not a key; rm -rf /")
    assert "rm -rf" not in str(caught.value)  # the value is never echoed
    with pytest.raises(StateError, match="unknown secret"):
        set_operator_secret(state, "dqs", "nope", KEY)


def test_secret_set_reads_stdin_and_the_render_holds_no_key(tmp_path: Path) -> None:
    site_file = tmp_path / "site.yaml"
    site_file.write_text(BASE + "abuse: {spamhaus_dqs: true}\n", encoding="utf-8")
    state, out = tmp_path / "state", tmp_path / "build"
    runner = CliRunner()
    done = runner.invoke(
        app, ["secret", "set", str(site_file), "spamhaus-dqs", "--state", str(state)], input=KEY + "\n"
    )
    assert done.exit_code == 0, done.output
    assert KEY not in done.output
    render_site(parse_site(site_file.read_text()), out, state)
    texts = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    assert texts
    assert not [t for t in texts if KEY.encode() in t]
    assert (state / "secrets" / "spamhaus_dqs").read_text() == KEY + "\n"
