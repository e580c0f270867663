"""The backup service (backup: in the site file): restic, on a schedule, and on demand.

Optional: a site without backups renders exactly as if it did not exist. It reads the mail
and rspamd volumes read-only; Redis's Bayes data and SOGo's database are streamed from
their services over the back network (redis-cli --rdb, pg_dump), never written to disk.
"""

from __future__ import annotations

from mailstack.service_types import Config, Healthcheck, Mount, Network, Reload, Service, Tmpfs
from mailstack.services.paths import (
    BACKUP_CONFIG_DIR,
    BACKUP_DATA,
    BACKUP_HOME,
    BACKUP_REPOSITORY,
)
from mailstack.site.models import Site


def backup(site: Site) -> bool:
    return site.backup is not None


def _host_path(site: Site) -> bool:
    return site.backup is not None and site.backup.kind == "path"


def _remote(site: Site) -> bool:
    return site.backup is not None and site.backup.remote


BACKUP = Service(
    name="backup",
    image="backup",
    present=backup,
    optional=True,
    why=(
        "restic backups (backup): on the schedule (systemd's calendar syntax, UTC) and with",
        "`mailstack backup`. The mail volume as stored, the Sieve scripts in it, Rspamd's volume",
        "and Bayes data, and SOGo's database; never the state, which holds the keys.",
    ),
    # Reads every volume's files whatever their owner (vmail, _rspamd), nothing more; a
    # restore (`mailstack restore`, on a stopped stack) adds what writing them back needs.
    caps=("DAC_READ_SEARCH",),
    # restic keeps the repository's index in memory (bench/backup.py measured the peak).
    memory="1g",
    pids=64,
    config=Config("backup", BACKUP_CONFIG_DIR),
    volumes=(
        Mount("mail", f"{BACKUP_DATA}/mail", read_only=True, why=("Maildirs and Sieve scripts.",)),
        Mount("rspamd", f"{BACKUP_DATA}/rspamd", read_only=True),
        Mount(
            "backup",
            BACKUP_HOME,
            why=("The last run's result (for status and check) and restic's cache.",),
        ),
        Mount(
            "{backup_repository}",
            BACKUP_REPOSITORY,
            when=_host_path,
            why=("The repository, a directory of the host (backup.repository).",),
        ),
    ),
    tmpfs=(Tmpfs("/tmp:size=64m"),),  # noqa: S108 - the container's own /tmp
    reads=("redis", "postgres", "restic", "backup_credentials"),
    networks=(Network("back"), Network("front", when=_remote)),
    networks_why=("back: redis and postgres; front only for a repository elsewhere (sftp, rest, s3).",),
    depends_on=("redis", "postgres"),
    healthcheck=Healthcheck(
        ("mailstack-backup", "health"),
        # Not the last run's outcome: a failed backup must not hold up `up`; status and check
        # show it.
        why=("The loop has planned its next run.",),
    ),
    reload=Reload(),  # a restart: the loop plans its next run afresh
)
