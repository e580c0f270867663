"""backup: encrypted backups with restic (off unless the section is there).

What goes in: the mail volume as stored (still encrypted where mail_crypt is on), the Sieve
scripts (they live in the mail homes), Rspamd's learned data (Bayes in Redis, the rspamd
volume) and, with groupware, SOGo's database. What never goes in: the state, which holds
the keys and the repository's password (it belongs in git, vault-encrypted).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from mailstack.site.base import Model

# restic's repository forms that mailstack renders: a path on the host (bind-mounted into
# the backup container), or a remote one. https://restic.readthedocs.io/en/stable/030_preparing_a_new_repo.html
_REMOTE = re.compile(r"^(sftp:[^\s'\"]+:[^\s'\"]*|rest:https?://[^\s'\"@]+|s3:[^\s'\"@]+)$")
_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")
# systemd.time(7) calendar events: the shorthands, or weekday/date/time fields. systemd itself
# (systemd-analyze in the backup image, the timer on servers) is the judge of the details;
# this only keeps out what could not be one (quotes, newlines, shell characters).
_CALENDAR = re.compile(r"^[A-Za-z0-9*:,./~ -]{1,80}$")
_SHORTHANDS = ("minutely", "hourly", "daily", "weekly", "monthly", "quarterly", "semiannually", "yearly")


def _repository(value: str) -> str:
    if value.startswith("/"):
        if not _PATH.fullmatch(value) or "/../" in f"{value}/" or value.rstrip("/") == "":
            raise ValueError(
                f"{value!r}: a repository path is absolute, without .., spaces or quotes "
                "(such as /srv/backup/acme)"
            )
        return value.rstrip("/")
    if _REMOTE.fullmatch(value):
        return value
    raise ValueError(
        f"{value!r} is not a restic repository mailstack knows: an absolute path on the host "
        "(/srv/backup/acme), sftp:user@host:/path, rest:https://host/path or s3:host/bucket/path"
    )


def _schedule(value: str) -> str:
    value = " ".join(value.split())
    if not _CALENDAR.fullmatch(value) or value.upper().endswith(" UTC"):
        raise ValueError(
            f"{value!r} is not a systemd calendar event such as daily, hourly or *-*-* 03:15 "
            "(UTC; give no time zone)"
        )
    words = value.split()
    if words[0].isalpha() and words[0].lower() not in _SHORTHANDS and len(words) == 1:
        raise ValueError(f"{value!r}: a single word is one of {', '.join(_SHORTHANDS)}")
    return value


Repository = Annotated[
    str,
    AfterValidator(_repository),
    WithJsonSchema({"type": "string", "description": "/path, sftp:user@host:/path, rest:https://…, s3:…"}),
]
Schedule = Annotated[
    str, AfterValidator(_schedule), WithJsonSchema({"type": "string", "pattern": _CALENDAR.pattern})
]
Count = Annotated[int, Field(ge=0, le=1000)]


class Keep(Model):
    """What `restic forget --prune` keeps after each backup: the last backup of each of so
    many days, weeks, months and years (restic's --keep-daily and siblings)."""

    daily: Count = 7
    weekly: Count = 4
    monthly: Count = 6
    yearly: Count = 0

    @model_validator(mode="after")
    def _keeps_something(self) -> Keep:
        if not any((self.daily, self.weekly, self.monthly, self.yearly)):
            raise ValueError("keep at least one backup (daily, weekly, monthly or yearly above 0)")
        return self


class Backup(Model):
    """Encrypted backups with restic; the password is made once in the state."""

    repository: Repository = Field(
        description=(
            "Where the backups go: an absolute path on the host (a disk mounted there), "
            "sftp:user@host:/path, rest:https://host/path or s3:host/bucket/path. Credentials "
            "for rest and s3 come from the state (`mailstack secret set SITE backup-credentials`), "
            "never from this file."
        ),
    )
    schedule: Schedule = Field(
        default="daily",
        description=(
            "When scheduled backups run, in systemd's OnCalendar syntax, UTC: daily, hourly, "
            "*-*-* 03:15, Mon..Fri *-*-* 22:00."
        ),
    )
    keep: Keep = Field(default_factory=Keep)

    @property
    def kind(self) -> Literal["path", "sftp", "rest", "s3"]:
        if self.repository.startswith("/"):
            return "path"
        scheme = self.repository.split(":", 1)[0]
        kinds: dict[str, Literal["sftp", "rest", "s3"]] = {"sftp": "sftp", "rest": "rest", "s3": "s3"}
        return kinds[scheme]

    @property
    def remote(self) -> bool:
        """Whether the backup container must reach the network beyond the stack."""
        return self.kind != "path"
