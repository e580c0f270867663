"""Retention in Dovecot: autoexpunge per folder, and what POP3's DELE does.

The site's limits are global ``mailbox <folder> { autoexpunge = … }`` blocks of the inbox
namespace (dovecot.conf). A domain's or mailbox's own limits are userdb fields of that user in
the passwd-file, such as ``userdb_namespace/inbox/mailbox/Trash/mailbox_autoexpunge=7d``: Dovecot
2.4 applies a userdb field named by its settings path over dovecot.conf. Such a field only
takes effect for a folder dovecot.conf declares (tried with 2.4.1: for an undeclared folder it
is ignored without a word), so every folder the description names anywhere gets a global block,
with ``autoexpunge = 0`` (never) where the site sets no limit.
https://doc.dovecot.org/2.4.1/core/summaries/settings.html#mailbox_autoexpunge
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstack.site.models import Site
from mailstack.site.retention import Policy, RetentionOverride, folder_order, format_keep, resolve

# dovecot.conf's namespace of the users' own folders.
INBOX_NAMESPACE = "inbox"
# The keyword a kept POP3 deletion sets (pop3_deleted_flag); IMAP clients show it as a tag.
POP3_DELETED_KEYWORD = "$POP3Deleted"


@dataclass(frozen=True)
class FolderLimit:
    name: str
    autoexpunge: str  # Dovecot's time: 30d, 90s; 0 is never


@dataclass(frozen=True)
class RetentionSettings:
    namespace: str
    folders: tuple[FolderLimit, ...]  # the site's limit of every folder named anywhere
    pop3_deleted_flag: str  # empty: DELE deletes


def retention_settings(site: Site) -> RetentionSettings:
    site_policy = resolve(site.retention)
    named = set(site.retention.folders)
    for override in _overrides(site):
        named |= set(override.folders)
    return RetentionSettings(
        namespace=INBOX_NAMESPACE,
        folders=tuple(
            FolderLimit(name, format_keep(site_policy.folders.get(name, 0))) for name in folder_order(named)
        ),
        pop3_deleted_flag=_deleted_flag(site_policy),
    )


def retention_userdb_fields(site: Site, address: str, own: RetentionOverride | None = None) -> list[str]:
    """The userdb fields by which ``address`` (with its own ``own`` retention) differs from
    the site: its domain's and its own limits, and POP3 deletion."""
    domain = address.rpartition("@")[2]
    domain_override = next((d.retention for d in site.domains if d.name == domain), None)
    site_policy = resolve(site.retention)
    policy = resolve(site.retention, domain_override, own)
    fields = [
        f"userdb_namespace/{INBOX_NAMESPACE}/mailbox/{name}/mailbox_autoexpunge={format_keep(seconds)}"
        for name in folder_order(set(policy.folders))
        if (seconds := policy.folders[name]) != site_policy.folders.get(name, 0)
    ]
    if policy.pop3_delete != site_policy.pop3_delete:
        fields.append(f"userdb_pop3_deleted_flag={_deleted_flag(policy)}")
    return fields


def _overrides(site: Site) -> list[RetentionOverride]:
    overrides = [d.retention for d in site.domains] + [m.retention for m in site.mailboxes]
    return [o for o in overrides if o is not None]


def _deleted_flag(policy: Policy) -> str:
    return "" if policy.pop3_delete else POP3_DELETED_KEYWORD
