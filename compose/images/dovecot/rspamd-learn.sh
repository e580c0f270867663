#!/bin/sh
# Train Rspamd's Bayes classifier with the message on stdin:
#   rspamd-learn spam|ham CONTROLLER_URL
# Dovecot's Sieve runs it (vnd.dovecot.pipe, from the IMAPSieve scripts) in the user's IMAP
# session, as vmail, when a message is copied or moved into Junk (spam) or out of it (ham).
#
# A failed learn must never fail the user's COPY or MOVE, so this program always exits 0
# and always reads its input to the end (Dovecot counts unread input as a failed pipe).
# What happened goes to stderr, which is Dovecot's log. Dovecot ends a pipe program after
# sieve_pipe_exec_timeout (10 s by default): curl gives up well before that.
#
# The controller's password comes from a header file that the entrypoint wrote for vmail
# (dovecot-entrypoint): curl reads it, so it is never an argument or in the environment.
set -u

header="${DOVECOT_SECRETS_DIR:-/run/dovecot-secrets}/rspamd-controller.header"

log() { echo "rspamd-learn: $*" >&2; }

# Whatever curl did not read (it failed before the end, or never ran).
drain() { cat >/dev/null; }

class="${1:-}"
url="${2:-}"
case "$class" in
    spam | ham) ;;
    *)
        log "usage: rspamd-learn spam|ham CONTROLLER_URL (got '${class}')"
        drain
        exit 0
        ;;
esac
if [ -z "$url" ]; then
    log "no controller URL: not learning $class"
    drain
    exit 0
fi
if [ ! -r "$header" ]; then
    log "cannot read $header: not learning $class"
    drain
    exit 0
fi

# The body and, on the last line, the HTTP status; curl's own errors (-sS) on stderr.
reply="$(curl --silent --show-error --connect-timeout 3 --max-time 8 \
    --header "@$header" --data-binary @- \
    --write-out '\n%{http_code}' "$url/learn$class" 2>&1)"
drain
status="$(printf '%s\n' "$reply" | tail -n 1)"
body="$(printf '%s\n' "$reply" | head -n -1 | tr -d '\n')"
case "$status" in
    2??)
        case "$body" in
            *'already learned'*) log "already learned as $class: $body" ;;
            *'"success":true'* | *'"success": true'*) log "learned as $class" ;;
            *) log "learning $class: HTTP $status $body" ;;
        esac
        ;;
    *)
        case "$body" in
            # Rspamd answers the same message twice with an error; the learn stands.
            *'already learned'*) log "already learned as $class: $body" ;;
            *) log "learning $class failed: HTTP $status ${body:-(no reply)}" ;;
        esac
        ;;
esac
exit 0
