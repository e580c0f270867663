"""Dovecot's passwd-file of users, and the Sieve scripts that file and learn spam."""

from __future__ import annotations

from dataclasses import dataclass

from mailstack import services
from mailstack.site.models import Site

# Dovecot delivers concurrently to one user at most this often (lmtp_user_concurrency_limit).
DOVECOT_LMTP_USER_CONCURRENCY = 10
PROBE_QUOTA = "10M"

# Special-use folders of the inbox namespace (dovecot.conf) that the Sieve scripts name.
JUNK_FOLDER = "Junk"
TRASH_FOLDER = "Trash"
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
