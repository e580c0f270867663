"""The rights on shared calendars and address books as SOGo's roles, for rights/reconcile.sh
in the sogo container (`sogo-tool manage-acl`).

SOGo's roles (SoObjects/Appointments/product.plist, SoObjects/Contacts/product.plist):
a calendar grants viewing or modifying per classification of its entries (public,
confidential, private) plus creating and erasing; an address book viewing, editing,
creating and erasing. "read" shows private entries as busy times only: the owner marked
them private.
"""

from __future__ import annotations

from mailstack.site.dav_sharing import SharedFolder
from mailstack.site.models import Site
from mailstack.site.sharing import Right, effective_rights

CALENDAR_ROLES: dict[Right, tuple[str, ...]] = {
    "read": ("ConfidentialViewer", "PrivateDAndTViewer", "PublicViewer"),
    "write": (
        "ConfidentialModifier",
        "ObjectCreator",
        "ObjectEraser",
        "PrivateDAndTViewer",
        "PublicModifier",
    ),
}
CONTACT_ROLES: dict[Right, tuple[str, ...]] = {
    "read": ("ObjectViewer",),
    "write": ("ObjectCreator", "ObjectEditor", "ObjectEraser", "ObjectViewer"),
}
# The folder each list shares, as sogo-tool names it, and the roles of each right.
FOLDERS: dict[str, tuple[str, dict[Right, tuple[str, ...]]]] = {
    "calendars": ("Calendar/personal", CALENDAR_ROLES),
    "address_books": ("Contacts/personal", CONTACT_ROLES),
}
# Free/busy: SOGo computes busy times from the entries a user may see at least the date and
# time of (SOGoAppointmentFolder aclSQLListingFilter), so these roles, given to "<default>"
# (any user who logged in), are what makes a calendar's busy times visible.
FREE_BUSY_ROLES = ("ConfidentialDAndTViewer", "PrivateDAndTViewer", "PublicDAndTViewer")
ANY_USER = "<default>"
# The reconciler, with the rights in it: a file of the rendered tree outside config/sogo/
# (a change there restarts SOGo), fed to the command below on stdin.
DAV_RIGHTS_SCRIPT = "groupware/dav-rights.sh"
# As sogo, like sogod: sogo-tool reads libpq's password file, and the record below is in
# sogo's directory (root in this container has no CAP_DAC_OVERRIDE).
DAV_RECONCILE = ("setpriv", "--reuid=sogo", "--regid=sogo", "--init-groups", "--", "sh", "-s")
# What the last run granted (so that a folder dropped from the description loses its
# grants too): on the sogo-spool volume, which outlives the container; sogo's, 0600.
DAV_GRANTED_FILE = "/var/spool/sogo/.mailstack-dav-granted"


# SOGo's own names for a user's first calendar and address book (its Localizable.strings).
DEFAULT_NAMES = {"calendars": "Personal Calendar", "address_books": "Personal Address Book"}


def plist_string(value: str) -> str:
    """A quoted string of a GNUstep property list, ASCII only (\\U escapes for the rest)."""
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\U{ord(char):04x}")
    return '"' + "".join(out) + '"'


def folder_name(site: Site, field: str, owner: str) -> str:
    """What the folder is called when the reconciler creates it: a shared mailbox's name (its
    calendar is "Office"), SOGo's own name for anyone else's."""
    for shared in site.shared_mailboxes:
        if shared.address == owner:
            return shared.name or owner.partition("@")[0]
    return DEFAULT_NAMES[field]


def dav_rights_lines(site: Site) -> list[str]:
    """The reconciler's input: `folder <owner> <folder> <name>` for every described folder (so
    that one whose rights were all removed is cleaned up; the name, a property-list string, is
    used if the reconciler creates it), then `grant <owner> <folder> <login> <roles,
    comma-separated, sorted>`. The owner never gets a grant: it owns the folder.

    And `anyone <owner> Calendar/personal <roles|-> <name>` for every login mailbox's calendar: what
    any user may see of it (free/busy), or nothing; on a calendar not described, the
    reconciler touches only that entry, and leaves the shares its owner made alone."""
    free_busy = ",".join(sorted(FREE_BUSY_ROLES)) if site.groupware.free_busy else "-"
    described = {folder.owner for folder in site.calendars}
    logins = {m.address for m in site.mailboxes}
    calendar_name = plist_string(DEFAULT_NAMES["calendars"])
    lines = [
        f"anyone {m.address} Calendar/personal {free_busy} {calendar_name}"
        for m in sorted(site.mailboxes, key=lambda m: m.address)
        if m.address not in described
    ]
    for field, (path, roles) in FOLDERS.items():
        folders: tuple[SharedFolder, ...] = getattr(site, field)
        for folder in folders:
            name = plist_string(folder_name(site, field, folder.owner))
            lines.append(f"folder {folder.owner} {path} {name}")
            if field == "calendars" and folder.owner in logins and site.groupware.free_busy:
                lines.append(f"grant {folder.owner} {path} {ANY_USER} {free_busy}")
            for address, right in effective_rights(site, folder.rights).items():
                if address != folder.owner:
                    lines.append(f"grant {folder.owner} {path} {address} {','.join(sorted(roles[right]))}")
    return lines


def dav_reconcile(site: Site) -> tuple[str, ...]:
    """The reconciler's command in the sogo container; () for a site without groupware.

    It runs also when no folder is described any more: it then removes what it granted."""
    return DAV_RECONCILE if site.groupware.enabled else ()
