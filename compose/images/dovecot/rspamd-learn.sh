#!/bin/sh
# Train Rspamd's Bayes classifier with the message on stdin:
#   rspamd-learn spam|ham CONTROLLER_URL
# Dovecot's Sieve runs it (vnd.dovecot.pipe, from the IMAPSieve scripts) in the user's IMAP
# session, as vmail, when a message is copied or moved into Junk (spam) or out of it (ham).
#
# A failed learn must never fail the user's COPY or MOVE, so this program always exits 0
# and always reads its input to the end (Dovecot counts unread input as a failed pipe).
# Failures go to stderr, which Dovecot logs as errors; a learn that worked (or a message
# Rspamd already knew) says nothing here, Rspamd's own log has it.
#
# The MOVE waits for it, message by message. A hung Rspamd would hold each message for the
# whole timeout (5 s; Dovecot's own limit, sieve_pipe_exec_timeout, is 10 s), so once
# Rspamd gave no answer, the learns of the next PAUSE seconds are skipped at once: moving a
# hundred messages into Junk while Rspamd hangs costs the user one timeout, not a hundred.
# Learning is best effort; a skipped message is only a lost example.
#
# The controller's password comes from a header file that the entrypoint wrote for vmail
# (dovecot-entrypoint): curl reads it, so it is never an argument or in the environment.
set -u

header="${DOVECOT_SECRETS_DIR:-/run/dovecot-secrets}/rspamd-controller.header"
# Touched on a failure; shared by every session (all run as vmail) through the /tmp tmpfs.
failed=/tmp/rspamd-learn.failed
PAUSE=30

# USER: the mailbox, one of the few variables Dovecot passes to pipe programs.
log() { echo "rspamd-learn: ${USER:-?}: $*" >&2; }

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

if [ -f "$failed" ]; then
    since=$(($(date +%s) - $(stat -c %Y "$failed" 2>/dev/null || echo 0)))
    if [ "$since" -ge 0 ] && [ "$since" -lt "$PAUSE" ]; then
        log "not learning $class: Rspamd failed ${since}s ago (next try after ${PAUSE}s)"
        drain
        exit 0
    fi
fi

# The body and, on the last line, the HTTP status; curl's own errors (-sS) on stderr.
reply="$(curl --silent --show-error --connect-timeout 2 --max-time 5 \
    --header "@$header" --data-binary @- \
    --write-out '\n%{http_code}' "$url/learn$class" 2>&1)"
drain
status="$(printf '%s\n' "$reply" | tail -n 1)"
body="$(printf '%s\n' "$reply" | head -n -1 | tr -d '\n')"
case "$status" in
    2??) ;;
    *)
        case "$body" in
            # Rspamd answers the same message twice with an error; the first learn stands.
            *'already learned'*) ;;
            *) log "learning $class failed: HTTP $status ${body:-(no reply)}" ;;
        esac
        # No answer (000: refused, timed out) or a server error: let the next learns skip.
        case "$status" in
            000 | 5??) touch "$failed" ;;
        esac
        ;;
esac
exit 0
