"""backup: the settings the backup container's script reads (config/backup/settings.sh).

The script itself is the image's (compose/images/backup/mailstack-backup.sh); what differs
per site is here, as shell assignments quoted by shlex (no value reaches a shell unquoted).
No secret is rendered: the password files' paths only.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from mailstack.render.groupware import DATABASE, USERS_TABLE
from mailstack.services import BACKUP_DATA, BACKUP_HOME, BACKUP_REPOSITORY, BACKUP_STATUS, STATE_MOUNT
from mailstack.services.paths import POSTGRES_PORT
from mailstack.site.models import Site
from mailstack.state.layout import BACKUP_SECRET, GROUPWARE_SECRET, OPERATOR_SECRETS, SECRET_NAMES

REDIS_SECRET = SECRET_NAMES[1]
# What each run keeps of restic's output in the container's log: a progress line every this
# many seconds (restic prints none when its output is not a terminal, unless asked).
PROGRESS_SECONDS = 10
# How often a run backs up the mail volume again when messages were added, moved, renamed
# (flags) or deleted while restic read it (see the script's consistency note).
MAIL_ATTEMPTS = 3


@dataclass(frozen=True)
class BackupSettings:
    lines: list[str]  # NAME='value', for settings.sh

    @property
    def settings(self) -> str:
        return "\n".join(self.lines)


def repository_inside(site: Site) -> str:
    """RESTIC_REPOSITORY as the backup container sees it: a host path is mounted."""
    assert site.backup is not None  # noqa: S101 - called for sites with backups
    return BACKUP_REPOSITORY if site.backup.kind == "path" else site.backup.repository


def host_repository(site: Site) -> str:
    """The compose mount's source: the host path of a path repository, else empty."""
    return site.backup.repository if site.backup is not None and site.backup.kind == "path" else ""


def keep_options(site: Site) -> list[str]:
    """`restic forget`'s policy options, for the kept counts above 0."""
    assert site.backup is not None  # noqa: S101
    keep = site.backup.keep
    counts = (
        ("daily", keep.daily),
        ("weekly", keep.weekly),
        ("monthly", keep.monthly),
        ("yearly", keep.yearly),
    )
    return [f"--keep-{name}={count}" for name, count in counts if count]


def backup_settings(site: Site) -> BackupSettings | None:
    if site.backup is None:
        return None
    secrets = f"{STATE_MOUNT}/secrets"
    values = {
        "SITE": site.site,
        "RESTIC_REPOSITORY": repository_inside(site),
        "RESTIC_PASSWORD_FILE": f"{secrets}/{BACKUP_SECRET}",
        "RESTIC_CACHE_DIR": f"{BACKUP_HOME}/cache",
        "RESTIC_PROGRESS_FPS": f"{1 / PROGRESS_SECONDS:g}",
        "CREDENTIALS_FILE": f"{STATE_MOUNT}/{OPERATOR_SECRETS['backup-credentials']}",
        "SCHEDULE": site.backup.schedule,
        "KEEP": " ".join(keep_options(site)),
        "DATA": BACKUP_DATA,
        "STATUS_FILE": BACKUP_STATUS,
        "MAIL_ATTEMPTS": str(MAIL_ATTEMPTS),
        "REDIS_HOST": "redis",
        "REDIS_PASSWORD_FILE": f"{secrets}/{REDIS_SECRET}",
        "GROUPWARE": "yes" if site.groupware.enabled else "no",
        "POSTGRES_HOST": "postgres",
        "POSTGRES_PORT": str(POSTGRES_PORT),
        "POSTGRES_DB": DATABASE,
        "POSTGRES_USER": DATABASE,
        "POSTGRES_PASSWORD_FILE": f"{secrets}/{GROUPWARE_SECRET}",
        # Rendered from the site file at every start of postgres: not restored from a backup.
        "POSTGRES_SKIP_TABLE": USERS_TABLE,
    }
    return BackupSettings([f"{name}={shlex.quote(value)}" for name, value in values.items()])
