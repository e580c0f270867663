"""calendars and address_books: a mailbox's (or shared mailbox's) calendar, with its tasks,
and its address book, shared with the site's mailboxes in the rights vocabulary of
sharing.py.

What is shared is the owner's own (SOGo: "personal") calendar or address book; a shared
mailbox owns one of each the first time it is described here. SOGo lets only a folder's
owner change who may see it, so ``manage`` has no meaning here and is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydantic import Field

from mailstack.site.base import Model
from mailstack.site.fields import Address
from mailstack.site.sharing import Directory, Grant, grant_rules

if TYPE_CHECKING:
    from mailstack.site.models import Loc, Site


class SharedFolder(Model):
    owner: Address = Field(
        description="A mailbox or shared mailbox of the site whose calendar (or address book) is shared."
    )
    rights: tuple[Grant, ...] = Field(
        default=(),
        description=(
            "Who may do what with it. read: see entries (private ones as busy times only). "
            "write: read + create, change and delete entries. Rights not listed are removed."
        ),
    )


# The site's lists, as they are named in the description.
FOLDER_LISTS = ("calendars", "address_books")


def dav_sharing_rules(site: Site) -> Iterator[tuple[Loc, str]]:
    """Field path and message for each rule calendars and address_books break."""
    directory = Directory.of(site)
    for field in FOLDER_LISTS:
        folders: tuple[SharedFolder, ...] = getattr(site, field)
        if folders and not site.groupware.enabled:
            yield (
                (field,),
                "shared calendars and address books are served by SOGo: set groupware.enabled: true",
            )
        first: dict[str, int] = {}
        for i, folder in enumerate(folders):
            loc: Loc = (field, i, "owner")
            if folder.owner in first:
                yield loc, f"{folder.owner} is described twice (also {field}[{first[folder.owner]}])"
            first.setdefault(folder.owner, i)
            if folder.owner not in directory.logins and folder.owner not in directory.shared:
                problem = directory.not_a_login(folder.owner)
                yield loc, f"the owner must be a mailbox or shared mailbox of the site, not {problem}"
            yield from grant_rules((field, i, "rights"), folder.rights, directory)
            for j, grant in enumerate(folder.rights):
                if grant.right == "manage":
                    yield (
                        (field, i, "rights", j, "right"),
                        "SOGo lets only the owner change who may see a calendar or address book, "
                        "and the description decides that: use read or write",
                    )
