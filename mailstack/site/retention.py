"""retention: how long folders keep mail, and whether POP3 really deletes.

A limit counts from when a message was saved into the folder (delivered, moved or copied
there), not from its Date header: Dovecot's autoexpunge. The site sets the defaults (Trash
and Junk 30 days, every other folder forever); a domain's ``retention`` overrides the site's
and a mailbox's overrides its domain's, folder by folder: the most specific wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from mailstack.site.base import Model
from mailstack.site.fields import parse_duration

# The folders every mailbox has (special-use, RFC 6154), as dovecot.conf names them; Junk and
# Trash are also the folders the Sieve scripts file spam into and learn from.
INBOX = "INBOX"
DRAFTS_FOLDER = "Drafts"
SENT_FOLDER = "Sent"
JUNK_FOLDER = "Junk"
TRASH_FOLDER = "Trash"
ARCHIVE_FOLDER = "Archive"
STANDARD_FOLDERS = (INBOX, DRAFTS_FOLDER, SENT_FOLDER, JUNK_FOLDER, TRASH_FOLDER, ARCHIVE_FOLDER)

DEFAULT_DAYS = 30
DAY = 86400
DEFAULT_FOLDERS: dict[str, int] = {JUNK_FOLDER: DEFAULT_DAYS * DAY, TRASH_FOLDER: DEFAULT_DAYS * DAY}
FOREVER = 0  # what a limit of `forever` is stored as; Dovecot's autoexpunge = 0 is "never"
MAX_KEEP = 36500 * DAY  # a hundred years: beyond that a number is a typo

# A folder at the top level, without spaces: Dovecot's passwd-file splits its fields at spaces,
# and '/' is both the folder separator and that of the userdb's setting paths.
_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def parse_folder(value: Any) -> str:
    """A folder name; any spelling of INBOX is INBOX, a standard folder needs its own spelling."""
    if not isinstance(value, str) or not _FOLDER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a folder mailstack can limit: a top-level folder name of letters, "
            "digits, '.', '_' or '-' (no spaces, no subfolders)"
        )
    for standard in STANDARD_FOLDERS:
        if value.lower() == standard.lower() and value != standard:
            if standard == INBOX:
                return INBOX  # IMAP: INBOX is case-insensitive (RFC 3501 5.1)
            raise ValueError(f"the folder is called {standard}, not {value}")
    return value


def parse_keep(value: Any) -> int:
    """``30d`` → seconds; ``forever`` → :data:`FOREVER`."""
    if isinstance(value, str) and value.strip().lower() == "forever":
        return FOREVER
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(
            f"expected how long the folder keeps mail: a duration such as 30d, 12h or 90s, "
            f"or forever, got {value!r}"
        ) from None
    if seconds > MAX_KEEP:
        raise ValueError(f"{value!r} is more than 100 years; use forever")
    return seconds


def format_keep(seconds: int) -> str:
    """Seconds → the largest exact unit Dovecot reads (``30d``, ``12h``, ``90s``); 0 stays 0."""
    for unit, size in (("d", DAY), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s" if seconds else "0"


Folder = Annotated[
    str,
    BeforeValidator(parse_folder),
    WithJsonSchema({"type": "string", "pattern": _FOLDER.pattern, "description": "A top-level folder."}),
]
Keep = Annotated[
    int,
    BeforeValidator(parse_keep),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*\d+\s*[smhdSMHD]?\s*$"},
                {"type": "integer", "minimum": 1},
                {"const": "forever"},
            ],
            "description": "How long mail stays after it was saved in the folder: 30d, 12h, 90s or forever.",
        }
    ),
]
_FOLDERS_HELP = (
    "Folder → how long it keeps a message after it was saved there (delivered, moved or copied "
    "in): a duration (30d, 12h, 90s) or forever. INBOX, Drafts, Sent, Junk, Trash, Archive or "
    "any other top-level folder."
)
_POP3_HELP = (
    "Whether a message a POP3 client deletes (DELE) is really deleted (true), or only hidden "
    "from POP3 and kept for IMAP and webmail, flagged $POP3Deleted (false)."
)


def _one_inbox(folders: Any) -> Any:
    """INBOX given twice in two spellings would silently keep one of the limits: refuse."""
    if isinstance(folders, dict):
        inboxes = [name for name in folders if isinstance(name, str) and name.lower() == INBOX.lower()]
        if len(inboxes) > 1:
            raise ValueError(f"these folders are all INBOX: {', '.join(inboxes)}; keep one")
    return folders


def _with_defaults(folders: dict[str, int]) -> dict[str, int]:
    return {**DEFAULT_FOLDERS, **folders}


# additionalProperties: editors flag a folder name the pattern refuses ("Old Stuff").
Folders = Annotated[
    dict[Folder, Keep],
    BeforeValidator(_one_inbox),
    Field(json_schema_extra={"additionalProperties": False}),
]


class Retention(Model):
    """The site's retention: the defaults of every domain and mailbox."""

    folders: Annotated[Folders, AfterValidator(_with_defaults)] = Field(
        default_factory=lambda: dict(DEFAULT_FOLDERS),
        description=f"{_FOLDERS_HELP} Trash and Junk keep 30d unless set; other folders keep mail forever.",
    )
    pop3_delete: bool = Field(default=True, description=f"{_POP3_HELP} Default: really deleted.")


class RetentionOverride(Model):
    """A domain's or a mailbox's retention: what it leaves out, it inherits."""

    folders: Folders = Field(default_factory=dict, description=_FOLDERS_HELP)
    pop3_delete: bool | None = Field(default=None, description=_POP3_HELP)


@dataclass(frozen=True)
class Policy:
    """One mailbox's resolved retention: folder → seconds (:data:`FOREVER` for no limit)."""

    folders: Mapping[str, int]
    pop3_delete: bool


def resolve(site: Retention, *overrides: RetentionOverride | None) -> Policy:
    """The site's retention with ``overrides`` applied in order (domain, then mailbox)."""
    folders = dict(site.folders)
    pop3_delete = site.pop3_delete
    for override in overrides:
        if override is not None:
            folders.update(override.folders)
            pop3_delete = override.pop3_delete if override.pop3_delete is not None else pop3_delete
    return Policy(folders=folders, pop3_delete=pop3_delete)


def folder_order(names: set[str]) -> list[str]:
    """The standard folders in their usual order, then the others by name."""
    return [f for f in STANDARD_FOLDERS if f in names] + sorted(names - set(STANDARD_FOLDERS))
