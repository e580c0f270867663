#!/bin/sh
# Give the Sieve learning program what it needs from the secrets, make a place for compiled
# global Sieve scripts, then run dovecot.
#
#   MAILSTACK_STATE      where compose mounts the secrets (default /run/mailstack/state):
#                        secrets/rspamd_controller, one file (a compose secret), root-only
#   DOVECOT_SECRETS_DIR  where the copy goes (default /run/dovecot-secrets, on the /run tmpfs)
#
# Written there, owned by vmail, file 0400, directory 0500:
#   rspamd-controller.header  "Password: …" for Rspamd's controller, which rspamd-learn
#                             hands to curl as a header file: never in an argument, the
#                             environment or the rendered configuration
# And, owned by vmail, 0700:
#   /run/dovecot-sieve        compiled global Sieve scripts (sieve_script_bin_path in the
#                             rendered dovecot.conf): the scripts come with the read-only
#                             configuration, and the sessions that compile them run as vmail
# IMAP sessions run as vmail, and IMAPSieve runs the learning program inside them, so vmail
# must read it; the state's file is root's. The master itself stays root (it starts the
# logins, chroots them and switches users), so this script execs the command as it is.
# The state never rotates the password, and a new secret makes compose recreate the
# container: copying once, at start, is enough.
set -eu

state="${MAILSTACK_STATE:-/run/mailstack/state}"
out="${DOVECOT_SECRETS_DIR:-/run/dovecot-secrets}"
user=vmail

log() { echo "dovecot-entrypoint: $*" >&2; }

# A subshell: its umask must not reach dovecot.
sync_secrets() (
    password="$(head -n 1 "$state/secrets/rspamd_controller")"
    if [ -z "$password" ]; then
        log "$state/secrets/rspamd_controller is empty: moving mail into or out of Junk trains nothing"
        return 0
    fi
    umask 077
    mkdir -p "$out"
    printf 'Password: %s\n' "$password" >"$out/rspamd-controller.header.tmp"
    mv -f "$out/rspamd-controller.header.tmp" "$out/rspamd-controller.header"
    # Modes first, owner last: without CAP_FOWNER root cannot chmod what it gave away.
    chmod 0400 "$out/rspamd-controller.header"
    chmod 0500 "$out"
    chown -R "$user:$user" "$out"
)

if [ "$#" -eq 0 ]; then
    set -- dovecot -F
fi
if [ "$(id -u)" -ne 0 ]; then
    exec "$@"
fi
# The tmpfs is empty at every start; root could not chmod vmail's directory (no CAP_FOWNER).
[ -d /run/dovecot-sieve ] || install -d -o "$user" -g "$user" -m 0700 /run/dovecot-sieve
if [ -f "$state/secrets/rspamd_controller" ]; then
    sync_secrets
else
    log "no $state/secrets/rspamd_controller: moving mail into or out of Junk trains nothing"
fi
exec "$@"
