"""`mailstack backup` and `mailstack restore`: the backup service's restic, here or on a host.

The work is the backup image's (compose/images/backup/mailstack-backup.sh): this module runs
it in the site's compose project, groups restic's snapshots into runs, reads the last run's
result for `status` and `check`, and orders a restore: files into fresh volumes, Redis's dump
through the redis image (so that its files belong to redis), SOGo's database into a fresh
postgres, then `up`.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailstack import render, services
from mailstack.engine import EngineError, Project, check_engine, json_lines, up
from mailstack.errors import UserError
from mailstack.images import ensure_images, image_tag
from mailstack.remote import HostPaths, Shell
from mailstack.site.models import Host, Site

Say = Callable[[str], None]
SCRIPT = "mailstack-backup"
# A run is a backup only once its files part is saved; the others are there when the site has them.
PARTS = ("redis", "groupware", "files")
# `mailstack check` warns when the last successful backup is older than this.
STALE_AFTER = dt.timedelta(hours=48)
# restic check --read-data reads the whole repository.
CHECK_TIMEOUT = 6 * 3600
RUN_TIMEOUT = 12 * 3600
# restic's exit code for a wrong password (0.17+); the script passes it on.
WRONG_PASSWORD = 12
# What writing the volumes back needs, beyond the service's DAC_READ_SEARCH.
RESTORE_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER")
RESTORED_VOLUMES = ("mail", "rspamd")


class BackupError(UserError):
    """A backup, a check or a restore failed; the message is the script's last word."""


@dataclass(frozen=True)
class Run:
    """One backup: the snapshots (part → short id) tagged with the same run-<id>."""

    run: str
    time: str
    parts: dict[str, str]
    added: int = 0  # bytes the files part added to the repository

    @property
    def id(self) -> str:
        """What `restore --snapshot` takes: the files snapshot's short id."""
        return self.parts.get("files", "")

    def complete(self, site: Site) -> bool:
        return (
            "files" in self.parts
            and "redis" in self.parts
            and (not site.groupware.enabled or "groupware" in self.parts)
        )


@dataclass(frozen=True)
class LastRun:
    """The backup service's note of its last run (status.json)."""

    finished: str
    ok: bool
    run: str
    snapshot: str
    seconds: int
    consistent: bool
    attempts: int
    added: str
    repository_bytes: int
    last_success: str
    error: str

    @classmethod
    def parse(cls, text: str) -> LastRun | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or "finished" not in data:
            return None
        return cls(
            finished=str(data["finished"]),
            ok=bool(data.get("ok")),
            run=str(data.get("run", "")),
            snapshot=str(data.get("snapshot", "")),
            seconds=int(data.get("seconds") or 0),
            consistent=bool(data.get("consistent")),
            attempts=int(data.get("attempts") or 0),
            added=str(data.get("added", "")),
            repository_bytes=int(data.get("repository_bytes") or 0),
            last_success=str(data.get("last_success", "")),
            error=str(data.get("error", "")),
        )

    def success_age(self, now: dt.datetime | None = None) -> dt.timedelta | None:
        if not self.last_success:
            return None
        then = dt.datetime.fromisoformat(self.last_success.replace("Z", "+00:00"))
        return (now or dt.datetime.now(dt.UTC)) - then


@dataclass
class RestoreResult:
    run: Run
    restored: list[str] = field(default_factory=list)
    seconds: float = 0.0


def age_text(age: dt.timedelta) -> str:
    """A short age: 40 s, 12 min, 5 h, 3 d."""
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size or (unit == "min" and seconds >= size):
            return f"{seconds // size} {unit}"
    return f"{max(seconds, 0)} s"


# -- where the commands run ----------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """The site's compose project here, or on one of its hosts over SSH."""

    project: Project
    host: Host | None = None
    site_dir: Path = Path()

    def compose_argv(self, *args: str) -> list[str]:
        if self.host is None:
            where = ["--file", str(self.project.compose_file)]
        else:
            # The directory, not the file: it also holds the role's compose.override.yaml.
            where = ["--project-directory", str(HostPaths(self.project.site.site).live)]
        return ["docker", "compose", "--project-name", self.project.name, *where, *args]

    def argv(self, *args: str) -> list[str]:
        """A compose command line: locally as it is, for a host through ssh (and sudo)."""
        return self.anywhere(self.compose_argv(*args))

    def anywhere(self, command: list[str]) -> list[str]:
        if self.host is None:
            return command
        shell = Shell(self.host, self.site_dir)
        sudo = [] if self.host.ssh_user == "root" else ["sudo", "-n"]
        return [*shell.ssh_base(), "--", shlex.join([*sudo, *command])]

    def run(
        self, *args: str, timeout: float = 300, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """A compose command, here or on the host."""
        return self.docker(self.compose_argv(*args), timeout=timeout, stdin=stdin)

    def docker(
        self, command: list[str], *, timeout: float = 300, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                self.anywhere(command), capture_output=True, check=False, timeout=timeout, input=stdin
            )
        except subprocess.TimeoutExpired:
            raise BackupError(f"`{' '.join(command[:5])}` gave no answer within {timeout:.0f} s") from None

    def states(self) -> dict[str, str]:
        """Service → running, exited, healthy, … of the project's containers."""
        ps = self.run("ps", "--all", "--format", "json", timeout=60)
        states = {}
        for entry in json_lines(ps.stdout.decode() if ps.returncode == 0 else ""):
            state, health = entry.get("State", ""), entry.get("Health", "")
            states[entry["Service"]] = health if state == "running" and health else state
        return states

    def where(self) -> str:
        return "here" if self.host is None else f"on {self.host.name}"

    def backup_running(self) -> bool:
        ps = self.run("ps", "--status", "running", "--services", timeout=60)
        return ps.returncode == 0 and "backup" in ps.stdout.decode().split()

    def script(self, *args: str) -> list[str]:
        """Compose arguments that run the script: in the running service, else in a new one."""
        if self.backup_running():
            return ["exec", "-T", "backup", SCRIPT, *args]
        return ["run", "--rm", "--no-deps", "-T", "backup", *args]


def _last_line(stderr: str) -> str:
    """The script's "error:" line, else the last line said."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error: " in line:
            return line.split("error: ", 1)[1]
    return lines[-1] if lines else "no output"


def _fail(what: str, returncode: int, stderr: str) -> BackupError:
    reason = _last_line(stderr)
    if returncode == WRONG_PASSWORD and "wrong password" not in reason:
        reason = "wrong password: the state's secrets/restic_password does not open the repository"
    return BackupError(f"{what} failed: {reason}")


def _needs_backup(site: Site, site_file: Path) -> None:
    if site.backup is None:
        raise UserError(f"{site_file}: the site has no backup section; add one (repository, schedule, keep)")


# -- backup, list, check ----------------------------------------------------------------
def run_backup(target: Target, site_file: Path, say: Say) -> LastRun:
    """One backup now, with restic's progress shown as it goes; the service's note of it."""
    _needs_backup(target.project.site, site_file)
    if not target.backup_running():
        raise EngineError(
            f"the backup service of {target.project.name} is not running {target.where()}: "
            "`mailstack up` (or deploy) the site first"
        )
    argv = target.argv("exec", "-T", "backup", SCRIPT, "run")
    stderr: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None  # noqa: S101 - PIPE
        for line in process.stdout:
            say(line.rstrip("\n"))
            stderr.append(line)
        process.wait(timeout=RUN_TIMEOUT)
    if process.returncode != 0:
        raise _fail("the backup", process.returncode, "".join(stderr))
    last = last_run(target)
    if last is None:
        raise BackupError("the backup ran, but the service noted no result")
    return last


def last_run(target: Target) -> LastRun | None:
    """The last run's note, or None when there was none (or the service is not running)."""
    if not target.backup_running():
        return None
    status = target.run("exec", "-T", "backup", SCRIPT, "status", timeout=60)
    return LastRun.parse(status.stdout.decode()) if status.returncode == 0 else None


def list_runs(target: Target, site_file: Path) -> list[Run]:
    """The repository's backups, oldest first."""
    _needs_backup(target.project.site, site_file)
    listed = target.run(*target.script("list"), timeout=600)
    if listed.returncode != 0:
        raise _fail("listing the backups", listed.returncode, listed.stderr.decode(errors="replace"))
    return group_runs(json.loads(listed.stdout.decode() or "[]"))


def group_runs(snapshots: list[dict[str, Any]]) -> list[Run]:
    """restic's snapshots (JSON) → runs, by their run-<id> tag, oldest first."""
    runs: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        tags = snap.get("tags") or []
        run = next((t.removeprefix("run-") for t in tags if t.startswith("run-")), None)
        part = next((t for t in tags if t in PARTS), None)
        if run is None or part is None:
            continue
        entry = runs.setdefault(run, {"time": snap.get("time", ""), "parts": {}, "added": 0})
        entry["parts"][part] = snap.get("short_id") or str(snap.get("id", ""))[:8]
        if part == "files":
            entry["time"] = snap.get("time", entry["time"])
            entry["added"] = int((snap.get("summary") or {}).get("data_added") or 0)
    return [
        Run(run, str(e["time"])[:19].replace("T", " "), dict(e["parts"]), e["added"])
        for run, e in sorted(runs.items())
    ]


def check_repository(target: Target, site_file: Path, *, quick: bool, say: Say) -> None:
    """restic check (with --read-data unless ``quick``); raise when it finds damage."""
    _needs_backup(target.project.site, site_file)
    argv = target.argv(*target.script("check", *(["--quick"] if quick else [])))
    run = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=CHECK_TIMEOUT)
    for line in run.stdout.splitlines():
        say(line)
    if run.returncode != 0:
        output = run.stdout + run.stderr
        damage = [line for line in output.splitlines() if "error" in line.lower() or "fatal" in line.lower()]
        if run.returncode == WRONG_PASSWORD or not damage:
            raise _fail("the repository's check", run.returncode, run.stderr)
        raise BackupError(f"the repository's check found damage: {damage[0].strip()}")


# -- restore ------------------------------------------------------------------------------
def _fill_rspamd_volume(target: Target) -> None:
    """The backup leaves out Rspamd's compiled Hyperscan databases (caches); its image carries
    them, and Docker copies them into the rspamd volume when a container of that image first
    mounts it empty. Mounted first by the restore instead, the volume would stay without
    them, and Rspamd would compile them again at its start and keep about 200 MiB more for
    good (issue #16). So a container of the rspamd image mounts the new volume first."""
    filled = target.run(
        "run", "--rm", "--no-deps", "-T", "--entrypoint", "true", "rspamd", timeout=RUN_TIMEOUT
    )
    if filled.returncode != 0:
        raise _fail("filling the new rspamd volume from its image", filled.returncode, filled.stderr.decode())


def restore(
    target: Target, site_file: Path, snapshot: str | None, *, timeout: float, say: Say
) -> RestoreResult:
    """Restore a backup into the site's fresh stack (after `down --volumes`), here or on a
    deployed host, then start it."""
    started = time.monotonic()
    project, site = target.project, target.project.site
    _needs_backup(site, site_file)
    if target.host is None:
        check_engine()
        ensure_images(say=say, only=services.images(site))
    _refuse_live_volumes(target)
    if target.host is None:
        render.plan(site, project.out_dir, project.state_dir).write()
    run = choose_run(list_runs(target, site_file), site, snapshot)
    say(f"restoring backup {run.id} of {run.time} UTC (run {run.run}) {target.where()}")
    result = RestoreResult(run)
    _fill_rspamd_volume(target)
    caps = [f"--cap-add={cap}" for cap in RESTORE_CAPS]
    mounts = [f"--volume={v}:/restore/{v}" for v in RESTORED_VOLUMES]
    files = target.run(
        *("run", "--rm", "--no-deps", "-T", *caps, *mounts, "backup", "restore-files", run.parts["files"]),
        timeout=RUN_TIMEOUT,
    )
    if files.returncode != 0:
        stderr = files.stderr.decode(errors="replace")
        raise _fail("restoring the mail and rspamd volumes", files.returncode, stderr)
    result.restored += ["mail", "rspamd"]
    _restore_redis(target, run.parts["redis"])
    result.restored.append("redis")
    if site.groupware.enabled:
        _restore_groupware(target, run.parts["groupware"], say)
        result.restored.append("groupware")
    say("starting the restored stack")
    if target.host is None:
        up(project, timeout=timeout, say=say)
    else:
        wait = ("--wait", "--wait-timeout", str(int(timeout)))
        started_up = target.run(
            "up", "--detach", "--no-build", "--pull", "never", *wait, timeout=timeout + 60
        )
        if started_up.returncode != 0:
            raise _fail("starting the restored stack", started_up.returncode, started_up.stderr.decode())
    result.seconds = time.monotonic() - started
    return result


def choose_run(runs: list[Run], site: Site, snapshot: str | None) -> Run:
    complete = [r for r in runs if r.complete(site)]
    if snapshot is None:
        if not complete:
            raise BackupError("the repository holds no complete backup of this site")
        return complete[-1]
    for r in runs:
        if snapshot in (r.run, *r.parts.values()) or any(v.startswith(snapshot) for v in r.parts.values()):
            if not r.complete(site):
                raise BackupError(f"backup {snapshot} is incomplete (it has {', '.join(sorted(r.parts))})")
            return r
    raise BackupError(f"no backup {snapshot} in the repository; `mailstack backup list SITE` shows them")


def _refuse_live_volumes(target: Target) -> None:
    """Restore writes into fresh volumes only: never over mail that is there. (Empty ones are
    fresh: `compose run` of the backup service, as `backup list` does, makes them.)"""
    project = target.project
    down = (
        "`mailstack down SITE --volumes`"
        if target.host is None
        else (f"`docker compose --project-name {project.name} down --volumes` on {target.host.name}")
    )
    running = [s for s, state in target.states().items() if state not in ("exited", "dead", "created")]
    if running:
        raise BackupError(
            f"{project.name} is running {target.where()} ({', '.join(sorted(running))}); a restore "
            f"replaces its mail: {down} first (that deletes the mail there now)"
        )
    volumes = (*RESTORED_VOLUMES, "redis", *(("postgres",) if project.site.groupware.enabled else ()))
    for volume in volumes:
        name = f"{project.name}_{volume}"
        if _volume_holds_files(target, name):
            raise BackupError(
                f"volume {name} holds files {target.where()}; a restore writes into fresh volumes "
                f"only: {down} first (that deletes the mail there now)"
            )


def _volume_holds_files(target: Target, name: str) -> bool:
    if target.docker(["docker", "volume", "inspect", name], timeout=60).returncode:
        return False
    look = ["docker", "run", "--rm", "--network=none", f"--volume={name}:/volume:ro", "--entrypoint=find"]
    listed = target.docker(
        [*look, image_tag("backup"), "/volume", "-mindepth", "1", "-maxdepth", "1", "-print", "-quit"],
        timeout=120,
    )
    return listed.returncode != 0 or bool(listed.stdout.strip())


def _restore_redis(target: Target, snapshot: str) -> None:
    """The dump into the redis volume through the redis image: the volume and the file get
    its own redis user; redis loads it when it starts."""
    dump = target.run(
        "run", "--rm", "--no-deps", "-T", "backup", "dump", snapshot, "redis", timeout=RUN_TIMEOUT
    )
    if dump.returncode != 0:
        raise _fail(
            "reading Redis's dump from the backup", dump.returncode, dump.stderr.decode(errors="replace")
        )
    redis_dir = services.service("redis").volumes[0].target
    # As redis: the volume's root (copied from the image) is redis's, and root has no
    # DAC_OVERRIDE there.
    write = f"cat >{redis_dir}/dump.rdb.tmp && mv {redis_dir}/dump.rdb.tmp {redis_dir}/dump.rdb"
    put = target.run(
        "run",
        "--rm",
        "--no-deps",
        "-T",
        "--user=redis",
        "--entrypoint=sh",
        "redis",
        "-c",
        write,
        stdin=dump.stdout,
    )
    if put.returncode != 0:
        raise _fail("writing Redis's dump", put.returncode, put.stderr.decode(errors="replace"))


def _restore_groupware(target: Target, snapshot: str, say: Say) -> None:
    """SOGo's database into a fresh postgres (its entrypoint made the role and the users
    first), before SOGo starts and makes empty tables of its own."""
    say("restoring SOGo's database")
    started = target.run("up", "--detach", "--no-deps", "postgres", timeout=300)
    if started.returncode != 0:
        raise _fail("starting postgres", started.returncode, started.stderr.decode(errors="replace"))
    deadline = time.monotonic() + 180
    while target.states().get("postgres") != "healthy":
        if time.monotonic() > deadline:
            raise BackupError(
                "postgres did not become healthy within 180 s; see `mailstack logs SITE postgres`"
            )
        time.sleep(1)
    load = target.run("run", "--rm", "--no-deps", "-T", "backup", "restore-db", snapshot, timeout=RUN_TIMEOUT)
    if load.returncode != 0:
        raise _fail("restoring SOGo's database", load.returncode, load.stderr.decode(errors="replace"))


def status_lines(site: Site, last: LastRun | None, *, now: dt.datetime | None = None) -> list[str]:
    """What `mailstack status` prints about backups: the last success's age, a failed last run."""
    if site.backup is None:
        return []
    if last is None:
        return [f"backup: none yet (schedule {site.backup.schedule} UTC, or `mailstack backup SITE`)"]
    age = last.success_age(now)
    lines = []
    if age is None:
        lines.append("backup: no successful backup yet")
    else:
        size = f", repository {last.repository_bytes / 1024**2:.1f} MiB" if last.repository_bytes else ""
        lines.append(f"backup: last success {age_text(age)} ago ({last.last_success}){size}")
    if not last.ok:
        lines.append(f"backup: the last run FAILED at {last.finished}: {last.error}")
    elif not last.consistent:
        lines.append(
            f"backup: the last run ({last.snapshot}) saw mail change during all {last.attempts} reads; "
            "messages moved meanwhile may be only in the next backup"
        )
    return lines
