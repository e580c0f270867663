"""Dovecot's passwd-file of users, and the Sieve scripts that file and learn spam."""

from __future__ import annotations

from dataclasses import dataclass

from mailstack import services
from mailstack.render.mailcrypt import NO_ENCRYPTION
from mailstack.render.retention import retention_userdb_fields
from mailstack.site.models import Site
from mailstack.site.retention import JUNK_FOLDER as JUNK_FOLDER  # tests import it from here
from mailstack.site.retention import STANDARD_FOLDERS, TRASH_FOLDER
from mailstack.site.sharing import Right, effective_rights

# Dovecot delivers concurrently to one user at most this often (lmtp_user_concurrency_limit).
DOVECOT_LMTP_USER_CONCURRENCY = 10
PROBE_QUOTA = "10M"

# config/dovecot/sieve, mounted read-only with the rest of the configuration.
SIEVE_DIR = "/etc/dovecot/sieve"
# Where the sessions (as vmail) keep the compiled global scripts: the image's entrypoint
# makes it on the /run tmpfs, since the scripts' own directory is read-only.
SIEVE_BIN_DIR = "/run/dovecot-sieve"
# The image's directory of programs Sieve's pipe may run (compose/images/dovecot).
SIEVE_PIPE_DIR = "/usr/lib/dovecot/sieve-pipe"
LEARN_PROGRAM = "rspamd-learn"


@dataclass(frozen=True)
class JunkSettings:
    """Spam into Junk at delivery; moves into and out of Junk train Rspamd (IMAPSieve)."""

    folder: str
    trash: str
    sieve_dir: str
    bin_dir: str
    pipe_dir: str
    learn_program: str
    controller_url: str  # Rspamd's controller on the back network, without a trailing /


def junk_settings() -> JunkSettings:
    port = services.service("rspamd").internal_ports["controller"]
    return JunkSettings(
        folder=JUNK_FOLDER,
        trash=TRASH_FOLDER,
        sieve_dir=SIEVE_DIR,
        bin_dir=SIEVE_BIN_DIR,
        pipe_dir=SIEVE_PIPE_DIR,
        learn_program=LEARN_PROGRAM,
        controller_url=f"http://rspamd:{port}",
    )


def dovecot_user_lines(site: Site, probe_hash: str, crypt: dict[str, str]) -> list[str]:
    """passwd-file lines: user:password:uid:gid:gecos:home:shell:extra fields.

    uid, gid and home come from mail_uid, mail_gid and mail_home in dovecot.conf. The quota
    needs the userdb_ prefix or Dovecot 2.4 ignores it silently; a size without a unit is
    bytes. No quota means the global quota_storage_size (unlimited). ``crypt``: each
    mailbox's mail_crypt fields (mailstack.render.mailcrypt). Retention that differs from
    the site's follows (render/retention.py).
    """
    lines = []
    for m in site.mailboxes:
        extra = [f"userdb_quota_storage_size={m.quota}"] if m.quota is not None else []
        extra += [crypt[m.address]] if m.address in crypt else []
        extra += retention_userdb_fields(site, m.address, m.retention)
        lines.append(f"{m.address}:{m.password_hash}::::::{' '.join(extra)}")
    # The probe mailbox holds at most a few probe messages, each deleted by the check that sent it.
    lines.append(f"{site.probe_address}:{probe_hash}::::::userdb_quota_storage_size={PROBE_QUOTA}")
    return lines


# --- Shared mailboxes (site.shared_mailboxes) ----------------------------------------------
# The site's rights as Dovecot ACL rights (doveadm-acl(1) names; RFC 4314 letters beside):
#   read   lookup read write-seen                                     l r s
#   write  read + write write-deleted insert expunge create delete    + w t i e k x
#   manage write + admin                                              + a
# \Seen is private to each reader (mail_index_private_path), so write-seen lets a reader
# mark what they have read without changing what the others see.
ACL_RIGHTS: dict[Right, tuple[str, ...]] = {
    "read": ("lookup", "read", "write-seen"),
    "write": (
        *("lookup", "read", "write-seen"),
        *("write", "write-deleted", "insert", "expunge", "create", "delete"),
    ),
    "manage": (
        *("lookup", "read", "write-seen"),
        *("write", "write-deleted", "insert", "expunge", "create", "delete"),
        "admin",
    ),
}
# The userdb-only passwd-file of the shared mailboxes: no passdb reads it, so nobody logs in
# as one of them, while LMTP, quota-status and the shared namespace find them.
SHARED_USERS_FILE = "/etc/dovecot/shared-users"
# What the reconciler (acl/reconcile.sh) reads: the rights the description gives.
ACL_RIGHTS_FILE = "/etc/dovecot/acl/rights"
ACL_RECONCILE = ("sh", "/etc/dovecot/acl/reconcile.sh")
# SOGo 5.12's ActiveSync syncs a mail folder only once Dovecot tracks its modification
# sequences (its SELECT answer then has HIGHESTMODSEQ), which Dovecot starts for a Maildir
# folder when a CONDSTORE client opens it, or when a search names MODSEQ. MODSEQ_TRACKING
# runs such a search, matching nothing (no output on big sites), for every user after every
# `up` and deploy of a site with ActiveSync: by name for INBOX and the special-use folders
# (which the search makes if they do not exist yet, so a phone-only user's first mail lands in
# a tracked folder), then for every folder that exists. Folders made later from a phone are
# tracked from the next `up`; SOGo's webmail enables QRESYNC itself.
_NO_MODSEQ = str(2**63 - 1)
MODSEQ_FOLDERS = STANDARD_FOLDERS
MODSEQ_TRACKING = (
    "sh",
    "-c",
    f'for box in {" ".join(MODSEQ_FOLDERS)} "*"; do '
    f'doveadm search -A mailbox "$box" modseq {_NO_MODSEQ} || exit 1; done',
)
# acl_sharing_map: who shares to whom, for LIST under shared/. On the mail volume (it must
# survive restarts and is written by the sessions, as vmail); a leading dot is no domain name,
# so it never meets a mail home (/var/vmail/<domain>/…).
ACL_SHARING_MAP = "/var/vmail/.acl-sharing-map"
SHARED_PREFIX = "shared/$user/"
# mail_uid and mail_gid in dovecot.conf: the image's virtual mail owner.
MAIL_USER = "vmail"
# The mail volume inside dovecot; dovecot.conf's mail_home is <domain>/<local part> under it.
MAIL_ROOT = "/var/vmail"


def mail_home(address: str) -> str:
    """An address's mail home, relative to MAIL_ROOT (dovecot.conf's mail_home)."""
    local, _, domain = address.partition("@")
    return f"{domain}/{local}"


@dataclass(frozen=True)
class SharingSettings:
    enabled: bool  # the site has shared mailboxes: the acl plugins and the shared namespace
    users_file: str
    sharing_map: str
    prefix: str
    reconcile: tuple[str, ...]  # run in the dovecot container after up and deploy; () without


def sharing_settings(site: Site) -> SharingSettings:
    enabled = bool(site.shared_mailboxes)
    return SharingSettings(
        enabled=enabled,
        users_file=SHARED_USERS_FILE,
        sharing_map=ACL_SHARING_MAP,
        prefix=SHARED_PREFIX,
        reconcile=ACL_RECONCILE if enabled else (),
    )


def shared_user_lines(site: Site) -> list[str]:
    """passwd-file lines of the shared mailboxes, for the userdb only: no password field.

    uid and gid are mail_uid and mail_gid (dovecot.conf) spelt out: the IMAP sessions that
    open shared/<address>/ run as vmail and look the owner up through auth-userdb, which
    answers a non-root client only about users with its own uid ("client doesn't have
    lookup permissions for this user: userdb reply doesn't contain uid").
    """
    lines = []
    for s in site.shared_mailboxes:
        extra = [f"userdb_quota_storage_size={s.quota}"] if s.quota is not None else []
        extra += [NO_ENCRYPTION] if s.encryption == "none" else []
        extra += retention_userdb_fields(site, s.address)  # its domain's retention
        lines.append(f"{s.address}::{MAIL_USER}:{MAIL_USER}::::{' '.join(extra)}")
    return lines


def acl_rights_lines(site: Site) -> list[str]:
    """The reconciler's input: `mailbox <owner>` for every shared mailbox (so that one whose
    rights were all removed is cleaned up too), then `right <owner> user=<login> <rights…>`."""
    lines = []
    for shared in site.shared_mailboxes:
        lines.append(f"mailbox {shared.address}")
        for address, right in effective_rights(site, shared.rights).items():
            lines.append(f"right {shared.address} user={address} {' '.join(ACL_RIGHTS[right])}")
    return lines
