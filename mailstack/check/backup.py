"""The backup service's last run, as `mailstack check` reports it (backup: in the site file)."""

from __future__ import annotations

import datetime as dt

from mailstack.backup import SCRIPT, STALE_AFTER, LastRun, age_text
from mailstack.check.inside import project_services, run_in
from mailstack.check.results import Result, failed, passed, warned
from mailstack.remote import Shell
from mailstack.site.models import Site

PROBE = "backup"


def backup_results(shell: Shell, project: str, site: Site, *, now: dt.datetime | None = None) -> list[Result]:
    if site.backup is None:
        return []
    running = project_services(shell, project)
    if isinstance(running, str):
        return [
            failed(
                PROBE,
                f"could not list the containers of {project}: {running}",
                "run check where `docker ps` works",
            )
        ]
    ran = run_in(shell, running.get("backup"), SCRIPT, "status")
    if not ran.running:
        return [failed(PROBE, "the backup service is not running", "`mailstack up` (or deploy) the site")]
    return [backup_result(site, LastRun.parse(ran.stdout) if ran.returncode == 0 else None, now=now)]


def backup_result(site: Site, last: LastRun | None, *, now: dt.datetime | None = None) -> Result:
    """fail: the last run failed; warn: no success yet, or the last one is older than
    STALE_AFTER; pass: the last success's age."""
    schedule = site.backup.schedule if site.backup is not None else ""
    if last is None:
        return warned(
            PROBE,
            "no backup has run yet",
            f"`mailstack backup SITE`, or wait for the schedule ({schedule} UTC)",
        )
    age = last.success_age(now)
    since = f"the last success was {age_text(age)} ago" if age is not None else "no backup ever succeeded"
    if not last.ok:
        return failed(
            PROBE,
            f"the last run failed at {last.finished}: {last.error}; {since}",
            "fix it, then `mailstack backup SITE`",
        )
    if age is None or age > STALE_AFTER:
        return warned(
            PROBE, since, f"the schedule ({schedule} UTC) should have run; see `mailstack logs SITE backup`"
        )
    consistent = "" if last.consistent else f"; mail changed during all {last.attempts} reads"
    return passed(PROBE, f"{since} ({last.snapshot}, run {last.run}, {last.seconds} s){consistent}")
