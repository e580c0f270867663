"""backup: the model, the state's restic password, the rendered service and settings, and the
library's pure parts (runs, the last run's note, what status and check say)."""

from __future__ import annotations

import datetime as dt
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mailstack import services
from mailstack.audit import _backup_item
from mailstack.backup import LastRun, Run, age_text, choose_run, group_runs, status_lines
from mailstack.check.backup import backup_result
from mailstack.cli import app
from mailstack.errors import SiteValidationError, StateError
from mailstack.render import render_site
from mailstack.render.backup import backup_settings, keep_options
from mailstack.site.loader import parse_site
from mailstack.site.models import Site
from mailstack.state import State, backup_credentials, set_operator_secret
from tests.unit.test_resolver import compose, rendered

BASE = """
site: bk
hostname: mail.bk.test
admin_email: anna@bk.test
offline: true
network:
  bind: 127.0.0.1
  ports: {submission: 587, imaps: 993, https: 443}
domains:
  - name: bk.test
mailboxes:
  - address: anna@bk.test
    password_hash: "{BLF-CRYPT}$2y$10$onB99Yh9PY8mF/iii7k8LOB97GjgG98mlotFJzH.XQvFhQK.lzE4C"
"""
PATH_BACKUP = "backup: {repository: /srv/backup/bk}\n"
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def site(extra: str = PATH_BACKUP) -> Site:
    return parse_site(BASE + extra)


# -- the model ----------------------------------------------------------------------------
def test_backup_is_off_unless_set() -> None:
    s = site("")
    assert s.backup is None
    files = rendered(s)
    assert "backup" not in compose(files)["services"]
    assert not [p for p in files if p.startswith("config/backup/")]


def test_defaults_keep_a_week_a_month_half_a_year_daily() -> None:
    backup = site().backup
    assert backup is not None
    assert (backup.repository, backup.schedule, backup.kind, backup.remote) == (
        "/srv/backup/bk",
        "daily",
        "path",
        False,
    )
    assert keep_options(site()) == ["--keep-daily=7", "--keep-weekly=4", "--keep-monthly=6"]


@pytest.mark.parametrize(
    ("repository", "kind"),
    [
        ("/srv/backup/bk/", "path"),
        ("sftp:backup@nas.example:/srv/restic/bk", "sftp"),
        ("rest:https://backup.example:8000/bk", "rest"),
        ("s3:s3.eu-central-1.amazonaws.com/bucket/bk", "s3"),
    ],
)
def test_repository_forms(repository: str, kind: str) -> None:
    backup = site(f"backup: {{repository: '{repository}'}}\n").backup
    assert backup is not None
    assert backup.kind == kind
    assert backup.remote is (kind != "path")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("backup: {repository: relative/dir}\n", "not a restic repository"),
        ("backup: {repository: '/srv/../etc'}\n", "without .."),
        ("backup: {repository: '/srv/my backups'}\n", "without .., spaces"),
        ("backup: {repository: 'rest:https://user:secret@host/x'}\n", "not a restic repository"),
        ("backup: {repository: 'b2:bucket'}\n", "not a restic repository"),
        ("backup: {repository: /srv/b, schedule: 'daily; rm -rf /'}\n", "not a systemd calendar event"),
        ("backup: {repository: /srv/b, schedule: 'daily UTC'}\n", "give no time zone"),
        ("backup: {repository: /srv/b, schedule: sometimes}\n", "a single word is one of"),
        ("backup: {repository: /srv/b, keep: {daily: 0, weekly: 0, monthly: 0}}\n", "keep at least one"),
        ("backup: {repository: /srv/b, keep: {hourly: 3}}\n", "hourly"),
        ("backup: {repository: /srv/b, password: x}\n", "password"),
    ],
)
def test_bad_backup_sections_name_the_field(extra: str, words: str) -> None:
    with pytest.raises(SiteValidationError) as caught:
        site(extra)
    assert "backup" in str(caught.value)
    assert words in str(caught.value)


def test_schedule_is_normalised_and_weekday_forms_pass() -> None:
    backup = site("backup: {repository: /srv/b, schedule: 'Mon..Fri  *-*-*  22:00'}\n").backup
    assert backup is not None
    assert backup.schedule == "Mon..Fri *-*-* 22:00"


# -- the state ----------------------------------------------------------------------------
def test_password_is_made_once_0600_and_never_rendered(tmp_path: Path) -> None:
    render_site(site(), tmp_path / "build", tmp_path / "state")
    password_file = tmp_path / "state" / "secrets" / "restic_password"
    password = password_file.read_text()
    assert len(password.strip()) >= 40
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    render_site(site(), tmp_path / "build", tmp_path / "state")
    assert password_file.read_text() == password
    for path in (tmp_path / "build").rglob("*"):
        if path.is_file():
            assert password.strip() not in path.read_text(errors="replace"), path


def test_no_password_without_backup(tmp_path: Path) -> None:
    render_site(site(""), tmp_path / "build", tmp_path / "state")
    assert not (tmp_path / "state" / "secrets" / "restic_password").exists()


def test_credentials_are_name_value_pairs_of_known_names(tmp_path: Path) -> None:
    assert backup_credentials("AWS_ACCESS_KEY_ID=AK1 AWS_SECRET_ACCESS_KEY=s3cr/t+x") == (
        "AWS_ACCESS_KEY_ID=AK1\nAWS_SECRET_ACCESS_KEY=s3cr/t+x"
    )
    with pytest.raises(ValueError, match="item 1 is not NAME=value") as caught:
        backup_credentials("PATH=/evil")
    assert "/evil" not in str(caught.value)
    state = State(tmp_path / "state")
    render_site(site(), tmp_path / "build", tmp_path / "state")
    with pytest.raises(StateError, match="item 2"):
        set_operator_secret(state, "bk", "backup-credentials", "RESTIC_REST_USERNAME=u x='y'")
    relpath = set_operator_secret(state, "bk", "backup-credentials", "RESTIC_REST_PASSWORD=p")
    assert (tmp_path / "state" / relpath).read_text() == "RESTIC_REST_PASSWORD=p\n"


def test_rest_and_s3_need_credentials_in_the_state(tmp_path: Path) -> None:
    s3 = site("backup: {repository: 's3:s3.example/bucket/bk'}\n")
    with pytest.raises(StateError, match="secret set SITE backup-credentials"):
        render_site(s3, tmp_path / "build", tmp_path / "state")
    set_operator_secret(State(tmp_path / "state"), "bk", "backup-credentials", "AWS_ACCESS_KEY_ID=a")
    render_site(s3, tmp_path / "build", tmp_path / "state")
    backup = compose_file(tmp_path)["services"]["backup"]
    assert [x["source"] for x in backup["secrets"]] == ["redis", "restic_password", "backup_credentials"]
    assert backup["networks"] == ["back", "front"]


def compose_file(tmp_path: Path) -> dict[str, Any]:
    return compose({"compose.yaml": (tmp_path / "build" / "compose.yaml").read_text()})


# -- rendering ------------------------------------------------------------------------------
def test_service_reads_volumes_read_only_and_mounts_the_host_path() -> None:
    files = rendered(site())
    backup = compose(files)["services"]["backup"]
    assert isinstance(backup, dict)
    assert backup["image"].startswith("mailstack/backup:")
    assert backup["cap_add"] == ["DAC_READ_SEARCH"]
    assert backup["read_only"] is True
    assert "mail:/data/mail:ro" in backup["volumes"]
    assert "rspamd:/data/rspamd:ro" in backup["volumes"]
    assert "/srv/backup/bk:/repository" in backup["volumes"]
    assert backup["networks"] == ["back"]  # a host path needs no way out
    assert [x["source"] for x in backup["secrets"]] == ["redis", "restic_password"]
    assert "backup" in compose(files)["volumes"]
    assert "{backup_repository}" not in compose(files)["volumes"]


def test_groupware_sites_dump_sogo_and_the_service_reads_its_password() -> None:
    s = site(PATH_BACKUP + "groupware: {enabled: true}\n")
    files = rendered(s)
    backup = compose(files)["services"]["backup"]
    assert isinstance(backup, dict)
    assert [x["source"] for x in backup["secrets"]] == ["redis", "postgres", "restic_password"]
    assert "GROUPWARE=yes" in files["config/backup/settings.sh"]


def test_settings_are_shell_quoted_and_hold_no_secret() -> None:
    s = site("backup: {repository: /srv/b, schedule: '*-*-* 03:15', keep: {daily: 3, yearly: 2}}\n")
    text = rendered(s)["config/backup/settings.sh"]
    assert "SCHEDULE='*-*-* 03:15'" in text
    assert "KEEP='--keep-daily=3 --keep-weekly=4 --keep-monthly=6 --keep-yearly=2'" in text
    assert "RESTIC_REPOSITORY=/repository" in text
    assert "GROUPWARE=no" in text
    assert "RESTIC_PASSWORD_FILE=/run/mailstack/state/secrets/restic_password" in text
    settings = backup_settings(s)
    assert settings is not None
    assert all("=" in line and "\n" not in line for line in settings.lines)


def test_remote_repositories_are_given_as_they_are() -> None:
    s = site("backup: {repository: 'sftp:backup@nas.example:/srv/restic/bk'}\n")
    text = rendered(s)["config/backup/settings.sh"]
    assert "RESTIC_REPOSITORY=sftp:backup@nas.example:/srv/restic/bk" in text
    backup = compose(rendered(s))["services"]["backup"]
    assert isinstance(backup, dict)
    assert not any(v.endswith(":/repository") for v in backup["volumes"])


def test_backup_image_is_built_only_for_sites_with_backups() -> None:
    assert "backup" in services.images(site())
    assert "backup" not in services.images(site(""))


# -- runs, the last run, status and check ---------------------------------------------------
def snapshot(short_id: str, run: str, part: str, added: int = 0) -> dict[str, object]:
    return {
        "time": f"2026-12-0{run[-1]}T03:15:00.1+00:00",
        "short_id": short_id,
        "tags": ["mailstack", f"run-{run}", part],
        "summary": {"data_added": added},
    }


def test_snapshots_group_into_runs_and_the_latest_complete_one_is_chosen() -> None:
    runs = group_runs(
        [
            snapshot("aaaa0001", "20261201", "redis"),
            snapshot("aaaa0002", "20261201", "files", 2048),
            snapshot("bbbb0001", "20261202", "redis"),  # a run whose files never came
            {"short_id": "cccc", "tags": ["other"]},
        ]
    )
    assert [r.run for r in runs] == ["20261201", "20261202"]
    assert runs[0].id == "aaaa0002"
    assert runs[0].added == 2048
    assert choose_run(runs, site(), None) == runs[0]
    assert choose_run(runs, site(), "aaaa00") == runs[0]
    with pytest.raises(Exception, match="incomplete"):
        choose_run(runs, site(), "bbbb0001")
    with pytest.raises(Exception, match="no backup nope"):
        choose_run(runs, site(), "nope")
    groupware = site(PATH_BACKUP + "groupware: {enabled: true}\n")
    with pytest.raises(Exception, match="no complete backup"):
        choose_run(runs, groupware, None)


def note(**changes: object) -> LastRun:
    data: dict[str, object] = {
        "finished": "2026-12-06T03:16:00Z",
        "ok": True,
        "run": "20261206T031500Z",
        "snapshot": "abcd1234",
        "seconds": 42,
        "consistent": True,
        "attempts": 1,
        "added": "1.2 MiB",
        "repository_bytes": 5 * 1024**2,
        "last_success": "2026-12-06T03:16:00Z",
        "error": "",
    } | changes
    last = LastRun.parse(json.dumps(data))
    assert last is not None
    return last


def test_status_says_the_age_and_a_failed_run() -> None:
    assert status_lines(site(""), None) == []
    assert status_lines(site(), None) == ["backup: none yet (schedule daily UTC, or `mailstack backup SITE`)"]
    assert status_lines(site(), note(), now=NOW) == [
        "backup: last success 8 h ago (2026-12-06T03:16:00Z), repository 5.0 MiB"
    ]
    failed = status_lines(site(), note(ok=False, error="wrong password"), now=NOW)
    assert failed[1] == "backup: the last run FAILED at 2026-12-06T03:16:00Z: wrong password"


def test_check_fails_a_failed_run_and_warns_a_stale_one() -> None:
    assert backup_result(site(), note(), now=NOW).status == "pass"
    assert "8 h ago" in backup_result(site(), note(), now=NOW).reason
    assert backup_result(site(), note(ok=False, error="x"), now=NOW).status == "fail"
    stale = note(last_success="2026-12-01T03:16:00Z")
    assert backup_result(site(), stale, now=NOW).status == "warn"
    assert backup_result(site(), None, now=NOW).status == "warn"
    assert backup_result(site(), note(last_success=""), now=NOW).status == "warn"


def test_last_run_parse_refuses_what_is_no_note() -> None:
    assert LastRun.parse("{}") is None
    assert LastRun.parse("not json") is None


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5 s"), (90, "1 min"), (3600 * 5, "5 h"), (86400 * 3, "3 d"), (7200, "2 h")]
)
def test_ages_are_short(seconds: int, text: str) -> None:
    assert age_text(dt.timedelta(seconds=seconds)) == text


# -- the command line ---------------------------------------------------------------------
def test_backup_of_a_site_without_backups_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(BASE)
    result = CliRunner().invoke(app, ["backup", "list", str(path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {path}: the site has no backup section; add one (repository, schedule, keep)"
    ]


def test_backup_usage_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(BASE + PATH_BACKUP)
    result = CliRunner().invoke(app, ["backup", str(path), str(path)])
    assert result.exit_code == 1
    assert (
        result.output.strip() == "error: usage: mailstack backup SITE | backup list SITE | backup check SITE"
    )


def test_run_ids_are_the_files_snapshot() -> None:
    assert Run("r", "t", {"redis": "a"}).id == ""
    assert not Run("r", "t", {"redis": "a"}).complete(site())


class FakeShell:
    """Answers `docker exec … mailstack-backup status` with a fixed note."""

    def __init__(self, answer: str, returncode: int = 0) -> None:
        self.answer, self.returncode = answer, returncode

    def run(self, *argv: str, timeout: float = 0) -> subprocess.CompletedProcess[str]:  # noqa: ARG002 - Shell.run's
        assert argv[-2:] == ("mailstack-backup", "status"), argv
        return subprocess.CompletedProcess(list(argv), self.returncode, self.answer, "")


def test_audit_reports_the_last_successful_backup_s_age() -> None:
    recent = note(last_success=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    as_json = json.dumps(recent.__dict__)
    item = _backup_item(FakeShell(as_json), {"Id": "abc"})  # type: ignore[arg-type]
    assert (item.id, item.status) == ("backup.last_success", "pass")
    assert "ago" in item.detail
    old = json.dumps(note(last_success="2020-01-01T03:16:00Z").__dict__)
    stale = _backup_item(FakeShell(old), {"Id": "abc"})  # type: ignore[arg-type]
    assert stale.status == "fail"
    assert _backup_item(FakeShell("{}"), {"Id": "abc"}).status == "fail"  # type: ignore[arg-type]
    assert _backup_item(FakeShell(""), None).status == "fail"  # type: ignore[arg-type]
