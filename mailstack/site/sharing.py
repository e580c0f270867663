"""groups and shared_mailboxes: named sets of mailboxes, and addresses without a login of
their own whose mail the site's mailboxes read and handle with declared rights.

The rights vocabulary (read < write < manage) is the site's, not one server's: Dovecot's
ACLs are one mapping of it (render/dovecot.py), others may follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from mailstack.site.base import Model
from mailstack.site.fields import Address, DisplayName, Domain, Size

if TYPE_CHECKING:
    from mailstack.site.models import Loc, Site

Right = Literal["read", "write", "manage"]
# Each right includes the ones before it: a mailbox granted several keeps the largest.
RIGHTS: tuple[Right, ...] = ("read", "write", "manage")


class Group(Model):
    name: str = Field(
        pattern=r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$",
        description="Group name: lower-case letters, digits, '.', '_' and '-'.",
    )
    members: tuple[Address, ...] = Field(min_length=1, description="Mailboxes (logins) of the site.")


class Grant(Model):
    """One right, given to exactly one of: a mailbox, a group, or everyone in a domain."""

    right: Right = Field(
        description=(
            "read: list, read, mark as read. write: read + flag, file, delete, append. "
            "manage: write + grant rights to others."
        )
    )
    mailbox: Address | None = Field(default=None, description="A mailbox (login) of the site.")
    group: str | None = Field(default=None, description="A group of the site (groups).")
    domain: Domain | None = Field(default=None, description="Every mailbox of this domain of the site.")

    @model_validator(mode="after")
    def _one_grantee(self) -> Grant:
        given = [name for name in ("mailbox", "group", "domain") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "a right goes to exactly one of mailbox, group or domain"
                + (f" (this one names {' and '.join(given)})" if given else "")
            )
        return self

    @property
    def grantee(self) -> str:
        """How the description names the grantee: an address, group:<name> or @<domain>."""
        if self.mailbox is not None:
            return self.mailbox
        if self.group is not None:
            return f"group:{self.group}"
        return f"@{self.domain}"


class SharedMailbox(Model):
    address: Address = Field(
        description="The shared address: mail to it is delivered to it; nobody logs in as it."
    )
    name: DisplayName | None = Field(default=None, description="Display name.")
    quota: Size | None = Field(default=None, description="Storage quota; none means unlimited.")
    rights: tuple[Grant, ...] = Field(
        default=(), description="Who may do what with its folders (none: only delivery)."
    )
    encryption: Literal["site", "none"] = Field(
        default="site",
        description=(
            "How its mail is stored: site (the site's key) or none. Never per_user: a shared "
            "mailbox has no password to unlock a key of its own, and its members read it with "
            "theirs."
        ),
    )


def strongest(rights: list[Right]) -> Right:
    return max(rights, key=RIGHTS.index)


def members_of(site: Site, grant: Grant) -> list[str]:
    """The login mailboxes a grant reaches, in the description's order."""
    if grant.mailbox is not None:
        return [grant.mailbox]
    if grant.group is not None:
        return [m for g in site.groups if g.name == grant.group for m in g.members]
    return [m.address for m in site.mailboxes if m.address.rpartition("@")[2] == grant.domain]


def effective_rights(site: Site, rights: tuple[Grant, ...]) -> dict[str, Right]:
    """Login mailbox → its right under ``rights``: the largest of those the grants give it
    (directly, through groups, through its domain), sorted by address."""
    given: dict[str, list[Right]] = {}
    for grant in rights:
        for address in members_of(site, grant):
            given.setdefault(address, []).append(grant.right)
    return {address: strongest(rights) for address, rights in sorted(given.items())}


@dataclass(frozen=True)
class Directory:
    """Who is who in a site (address or name → its index), for the rules on rights."""

    logins: dict[str, int]
    shared: dict[str, int]
    aliases: dict[str, int]
    listed: set[str]
    groups: dict[str, int]

    @classmethod
    def of(cls, site: Site) -> Directory:
        groups: dict[str, int] = {}
        for i, g in enumerate(site.groups):
            groups.setdefault(g.name, i)
        return cls(
            logins={m.address: i for i, m in enumerate(site.mailboxes)},
            shared={s.address: i for i, s in enumerate(site.shared_mailboxes)},
            aliases={a.address: i for i, a in enumerate(site.aliases)},
            listed=set(site.domain_names),
            groups=groups,
        )

    def not_a_login(self, address: str) -> str | None:
        """Why ``address`` cannot hold a right (it cannot log in), or None when it can."""
        if address in self.logins:
            return None
        if address.rpartition("@")[2] not in self.listed:
            return f"{address}, which is outside the site (its domain is not listed under domains)"
        if address in self.shared:
            return f"{address}, a shared mailbox: nobody logs in as it"
        if address in self.aliases:
            return f"{address}, an alias: name its mailboxes, or a group"
        return f"{address}, which is not a mailbox of this site"


def sharing_rules(site: Site) -> Iterator[tuple[Loc, str]]:
    """Field path and message for each rule groups and shared_mailboxes break."""
    directory = Directory.of(site)
    logins, aliases, listed = directory.logins, directory.aliases, directory.listed
    for i, g in enumerate(site.groups):
        if (earlier := directory.groups[g.name]) != i:
            yield ("groups", i, "name"), f"duplicate group {g.name} (also groups[{earlier}])"
        seen: dict[str, int] = {}
        for j, member in enumerate(g.members):
            if member in seen:
                yield ("groups", i, "members", j), f"{member} is listed twice (also members[{seen[member]}])"
            seen.setdefault(member, j)
            if (problem := directory.not_a_login(member)) is not None:
                yield ("groups", i, "members", j), f"group member {problem}"
    first: dict[str, int] = {}
    for i, s in enumerate(site.shared_mailboxes):
        loc: Loc = ("shared_mailboxes", i, "address")
        domain = s.address.rpartition("@")[2]
        if s.address in first:
            yield loc, f"duplicate shared mailbox {s.address} (also shared_mailboxes[{first[s.address]}])"
        first.setdefault(s.address, i)
        if domain not in listed:
            yield loc, f"{s.address} is in domain {domain}, which is not listed under domains"
        if s.address in logins:
            yield (
                loc,
                (
                    f"{s.address} is also a login mailbox (mailboxes[{logins[s.address]}]); a shared "
                    "mailbox has no login of its own: remove one of them"
                ),
            )
        if s.address in aliases:
            yield loc, f"{s.address} is also an alias (aliases[{aliases[s.address]}]): remove one of them"
        if s.address == site.probe_address:
            yield loc, f"{s.address} is reserved for the probe mailbox of `mailstack check`"
        yield from grant_rules(("shared_mailboxes", i, "rights"), s.rights, directory)


def grant_rules(at: Loc, rights: tuple[Grant, ...], directory: Directory) -> Iterator[tuple[Loc, str]]:
    """Field path and message for each grant of ``rights`` (found at ``at``) that names
    nobody who can log in, or names its grantee twice."""
    first: dict[str, int] = {}
    for j, grant in enumerate(rights):
        base: Loc = (*at, j)
        if grant.grantee in first:
            yield base, f"{grant.grantee} is given a right twice (also rights[{first[grant.grantee]}])"
        first.setdefault(grant.grantee, j)
        if grant.mailbox is not None:
            if (problem := directory.not_a_login(grant.mailbox)) is not None:
                yield (*base, "mailbox"), f"a right to {problem}"
        elif grant.group is not None and grant.group not in directory.groups:
            known = ", ".join(sorted(directory.groups)) or "none"
            yield (*base, "group"), f"unknown group {grant.group} (groups: {known})"
        elif grant.domain is not None and grant.domain not in directory.listed:
            yield (*base, "domain"), f"{grant.domain} is not a domain of this site (domains)"
