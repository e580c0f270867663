"""Dovecot's passwd-file of users."""

from __future__ import annotations

from mailstack.site.models import Site

# Dovecot delivers concurrently to one user at most this often (lmtp_user_concurrency_limit).
DOVECOT_LMTP_USER_CONCURRENCY = 10
PROBE_QUOTA = "10M"


def dovecot_user_lines(site: Site, probe_hash: str) -> list[str]:
    """passwd-file lines: user:password:uid:gid:gecos:home:shell:extra fields.

    uid, gid and home come from mail_uid, mail_gid and mail_home in dovecot.conf. The quota
    needs the userdb_ prefix or Dovecot 2.4 ignores it silently; a size without a unit is
    bytes. No quota means the global quota_storage_size (unlimited).
    """
    lines = []
    for m in site.mailboxes:
        extra = f"userdb_quota_storage_size={m.quota}" if m.quota is not None else ""
        lines.append(f"{m.address}:{m.password_hash}::::::{extra}")
    # The probe mailbox holds at most a few probe messages, each deleted by the check that sent it.
    lines.append(f"{site.probe_address}:{probe_hash}::::::userdb_quota_storage_size={PROBE_QUOTA}")
    return lines
