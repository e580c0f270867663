"""Where things are inside a state directory, and the format version it records."""

from __future__ import annotations

STATE_FORMAT = 1
SECRET_NAMES = ("rspamd_controller", "redis")
# The sogo role's PostgreSQL password: made only for a site with groupware.
GROUPWARE_SECRET = "postgres"  # noqa: S105 - a file name
# The probe mailbox's hash is rendered into Dovecot's users file like every mailbox's hash
# (those sit in the site file, in git); the password, 144 random bits, stays a secret.
PROBE_PASSWORD, PROBE_HASH = "secrets/probe_password", "probe/password_hash"
# restic's repository password (backup): made once, with the first render of a site with
# backups. It is NOT in the backups: losing the state loses every backup.
BACKUP_SECRET = "restic_password"  # noqa: S105 - a file name
# Secrets the operator gives (`mailstack secret set`), never made by mailstack: name → file.
# backup-credentials: the rest: or s3: repository's login, NAME=value pairs.
OPERATOR_SECRETS = {
    "spamhaus-dqs": "secrets/spamhaus_dqs",
    "backup-credentials": "secrets/backup_credentials",
}

SERVER_KINDS = ("ecdsa", "rsa")
# tls.mode acme (the acme service's side: compose/images/acme/)
ACME_ACCOUNT_KEY = "acme/account.key"
ACME_KEYS = "acme/keys"
ACME_LIVE = "acme/tls/live"
ACME_STATUS = "acme/status.json"


def acme_key_path(kind: str, generation: int) -> str:
    return f"{ACME_KEYS}/{kind}-{generation:04d}.key"
