"""Where the services find things inside their containers: shared by the catalogue's entries
and the render modules that write the files they read."""

from __future__ import annotations

STATE_MOUNT = "/run/mailstack/state"
# tls.outbound_ca_bundle, as a compose secret, for postfix and mta-sts.
OUTBOUND_CA_BUNDLE = "/run/mailstack/outbound-ca.pem"
# tmpfs where the rspamd entrypoint puts what its unprivileged workers must read (0400, _rspamd).
RSPAMD_SECRETS = "/run/rspamd-secrets"
# tmpfs where the redis entrypoint puts its ACL file (0400, redis).
REDIS_SECRETS = "/run/redis-secrets"
GUARD_CONFIG_DIR = "/etc/mailstack-guard"
GUARD_DATA_DIR = "/var/lib/mailstack-guard"  # the guard volume: its bans
# The guard's name on the back network alone: the service name would resolve to its address
# on whichever network Docker's DNS answers first, front included, where it does not listen.
GUARD_POLICY_HOST = "guard-policy"
ACME_CONFIG_DIR = "/etc/mailstack-acme"
ACME_STATE_DIR = "/var/lib/mailstack-acme"  # the state's acme/, read-write
ACME_CHALLENGE_DIR = "/var/lib/mailstack-acme-challenge"  # the acme-challenge volume
# Inside the web container: nginx runs as www-data, on unprivileged ports; compose publishes them.
WEB_HTTP_PORT = 8080
WEB_HTTPS_PORT = 8443
WEB_CONFIG_DIR = "/etc/nginx"
# The named volume with ACME HTTP-01 tokens (the acme service writes them); empty: every token is 404.
ACME_ROOT = "/srv/acme"
# The dmarc-reports service's loop (config/rspamd/dmarc-reports), and where it notes its next run
# (/run/rspamd belongs to _rspamd: the rspamd entrypoint makes it).
DMARC_REPORTS_DIR = "/etc/mailstack-dmarc-reports"
DMARC_REPORTS_SCRIPT = f"{DMARC_REPORTS_DIR}/dmarc-reports.sh"
DMARC_REPORTS_NEXT = "/run/rspamd/dmarc-reports.next"
# Postfix's SMTP listener for the reporter, on postfix's fixed back-network address only. Not
# among postfix's internal_ports: its healthcheck probes those on loopback.
DMARC_REPORTS_SMTP_PORT = 10025
# groupware: SOGo's rendered configuration (sogo.conf, read at /etc/sogo as Debian's package
# expects), the web service's copy of its static files, and PostgreSQL's configuration and data.
SOGO_CONFIG_DIR = "/etc/sogo"
SOGO_PORT = 20000
SOGO_STATIC = "/srv/sogo-static"  # the sogo-static volume; current/ is the live copy
POSTGRES_CONFIG_DIR = "/etc/mailstack-postgres"
POSTGRES_DATA = "/var/lib/postgresql/data"
POSTGRES_PORT = 5432
MEMCACHED_PORT = 11211
# backup: the settings (config/backup), the volumes it reads (read-only) under /data, its own
# volume (the last run's result, restic's cache) and where a host-path repository is mounted.
BACKUP_CONFIG_DIR = "/etc/mailstack-backup"
BACKUP_DATA = "/data"
BACKUP_HOME = "/var/lib/mailstack-backup"
BACKUP_STATUS = f"{BACKUP_HOME}/status.json"
BACKUP_REPOSITORY = "/repository"
# The per_user mailboxes' passdb files (state: mailcrypt/passdb/<domain>), inside dovecot.
MAILCRYPT_PASSDB_DIR = "/run/mailstack/mailcrypt-passdb"
