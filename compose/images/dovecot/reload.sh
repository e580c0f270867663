#!/bin/sh
# Reload dovecot from inside the container (`docker compose exec dovecot dovecot-reload`):
# `doveadm reload`, then end the sessions of users the new passwd-file no longer has.
# Sessions otherwise outlive a reload (shutdown_clients = no, so that a new certificate or a
# changed setting ends nobody's session): a removed mailbox must lose its open IMAP IDLE and
# POP3 sessions at once, not when the phone disconnects.
set -eu

users="${DOVECOT_USERS_FILE:-/etc/dovecot/users}"

doveadm reload
# `doveadm who -1`: one line per connection, the user name first (after a header line).
doveadm who -1 2>/dev/null | awk 'NR > 1 { print $1 }' | sort -u | while IFS= read -r user; do
    if ! awk -F: -v user="$user" '$1 == user { found = 1 } END { exit !found }' "$users"; then
        echo "dovecot-reload: ending the sessions of $user (no longer a mailbox)"
        doveadm kick "$user" >/dev/null || true
    fi
done
