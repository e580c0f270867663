#!/bin/sh
# mailstack-backup: restic backups of one mailstack site (the backup service's command).
#
#   mailstack-backup loop                   the schedule: a run whenever SCHEDULE elapses
#   mailstack-backup run                    one backup now, then `forget --prune`; notes the result
#   mailstack-backup list                   the repository's snapshots of this site (JSON)
#   mailstack-backup check [--quick]        the repository's integrity; reads every pack unless --quick
#   mailstack-backup status                 the last run's result (JSON), for status and check
#   mailstack-backup restore-files ID       a files snapshot into the volumes mounted at /restore/…
#   mailstack-backup dump ID PART           a streamed part's snapshot (redis, groupware) to stdout
#   mailstack-backup restore-db ID          a groupware snapshot into the (fresh) postgres service
#   mailstack-backup host-timer             wait: the host's systemd timer runs the schedule
#   mailstack-backup health                 the healthcheck: the loop planned its next run
#
# Settings: /etc/mailstack-backup/settings.sh (rendered from the site file). Every run is a
# set of snapshots tagged mailstack and run-<RUN>: "redis" (redis-cli --rdb: Bayes and the
# rest of Rspamd's learned data), "groupware" (pg_dump, with groupware) and "files" (the mail
# volume, Sieve scripts included, and the rspamd volume), taken last. A run counts only once
# its files snapshot is saved; a failed run's snapshots are forgotten. mailstack groups the
# snapshots into runs (`list`) and names the snapshots a restore takes.
#
# Consistency: Maildir files never change, but a flag change renames a message, delivery and
# IMAP MOVE move it between directories, and restic reads one directory after another. So the
# list of files (names and sizes, Dovecot's index files left out) is taken before and after
# restic reads the mail volume; when they differ, something moved while it read and the mail
# volume is read again (the second read only reads new files), up to MAIL_ATTEMPTS times. A
# run whose list never held still is kept but noted "consistent": false in its result.
set -eu

settings=/etc/mailstack-backup/settings.sh
# shellcheck source=/dev/null
. "$settings"
export RESTIC_REPOSITORY RESTIC_PASSWORD_FILE RESTIC_CACHE_DIR RESTIC_PROGRESS_FPS
home="$(dirname "$STATUS_FILE")"
next_file="$home/next"
work=/tmp/mailstack-backup

log() { echo "mailstack-backup: $*" >&2; }
# The one line a failure ends with (mailstack prints it); exit code 12 is restic's "wrong password".
die() {
    code="$1"
    shift
    echo "mailstack-backup: error: $*" >&2
    exit "$code"
}

if [ -r "$CREDENTIALS_FILE" ]; then
    # NAME=value lines (checked by `mailstack secret set`): a rest: or s3: repository's login.
    while IFS= read -r pair; do
        [ -n "$pair" ] && export "${pair?}"
    done <"$CREDENTIALS_FILE"
fi

# restic with its exit codes turned into one clear line: 10 no repository, 11 locked,
# 12 wrong password (restic 0.17+).
restic_or_die() {
    rc=0
    restic "$@" || rc=$?
    case "$rc" in
        0) ;;
        10) die 10 "there is no repository at $(where) yet: run a backup first" ;;
        11) die 11 "the repository at $(where) is locked by another restic (a backup or prune running?)" ;;
        12) die 12 "wrong password: the state's secrets/restic_password does not open the repository at $(where)" ;;
        *) die "$rc" "restic $1 failed (exit $rc)" ;;
    esac
}

where() {
    if [ "$RESTIC_REPOSITORY" = /repository ]; then echo "backup.repository"; else echo "$RESTIC_REPOSITORY"; fi
}

json_escape() { printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g'; }

# The last run's result, for `mailstack status` and `mailstack check`.
note() {
    ok="$1" snapshot="$2" error="$3"
    last_success=""
    if [ -s "$STATUS_FILE" ]; then
        last_success="$(sed -n 's/.*"last_success": *"\([^"]*\)".*/\1/p' "$STATUS_FILE")"
    fi
    finished="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    [ "$ok" = true ] && last_success="$finished"
    umask 077
    printf '{"finished": "%s", "ok": %s, "run": "%s", "snapshot": "%s", "seconds": %s, "consistent": %s, "attempts": %s, "added": "%s", "repository_bytes": %s, "last_success": "%s", "error": "%s"}\n' \
        "$finished" "$ok" "${run:-}" "$snapshot" "$(($(date +%s) - started))" "${consistent:-false}" \
        "${attempts:-0}" "$(json_escape "${added:-}")" "${repository_bytes:-0}" "$last_success" \
        "$(json_escape "$error")" >"$STATUS_FILE.tmp"
    mv -f "$STATUS_FILE.tmp" "$STATUS_FILE"
}

mail_listing() {
    find "$DATA/mail" -name tmp -prune -o -type f ! -name 'dovecot.index*' ! -name 'dovecot.list.index*' \
        -printf '%P %s\n' | LC_ALL=C sort | cksum
}

# restic backup with its output shown and kept: sets $saved (the snapshot id) and $added.
backup_part() {
    out="$work/out"
    { restic backup --host "$SITE" --tag mailstack --tag "run-$run" "$@" 2>&1; echo $? >"$work/rc"; } | tee "$out"
    rc="$(cat "$work/rc")"
    saved="$(sed -n 's/^snapshot \([0-9a-f]*\) saved.*/\1/p' "$out" | tail -n 1)"
    run_ids="$run_ids $saved"
    added="$(sed -n 's/^Added to the repository: //p' "$out" | tail -n 1)"
    [ "$rc" -ne 12 ] || die 12 "wrong password: the state's secrets/restic_password does not open the repository at $(where)"
    # 3: some files could not be read (one vanished while restic read): a snapshot was saved.
    if [ "$rc" -ne 0 ] && { [ "$rc" -ne 3 ] || [ -z "$saved" ]; }; then
        fail_run "restic backup $* failed (exit $rc): $(grep -v '^\[' "$out" | tail -n 1)"
    fi
    [ "$rc" -eq 0 ] && return 0 || return 1
}

fail_run() {
    # Snapshots of a failed run are not a backup: forget them (the next prune drops their data).
    if [ -n "$(echo $run_ids)" ]; then
        # shellcheck disable=SC2086
        restic forget $run_ids >/dev/null 2>&1 || true
    fi
    note false "" "$1"
    die 1 "$1"
}

run_once() {
    started="$(date +%s)"
    mkdir -p "$work" "$RESTIC_CACHE_DIR"
    exec 9>"$home/run.lock"
    flock -n 9 || die 1 "a backup is already running"
    run="$(date -u +%Y%m%dT%H%M%SZ)"
    consistent=false attempts=0 run_ids=""
    rc=0
    restic cat config >/dev/null 2>"$work/err" || rc=$?
    case "$rc" in
        0) ;;
        10)
            log "making the repository at $(where)"
            restic init >/dev/null 2>"$work/err" || fail_run "restic init failed: $(tail -n 1 "$work/err")"
            ;;
        12) note false "" "wrong password"; die 12 "wrong password: the state's secrets/restic_password does not open the repository at $(where)" ;;
        *) fail_run "cannot open the repository at $(where): $(tail -n 1 "$work/err")" ;;
    esac
    log "run $run: Rspamd's learned data (Redis)"
    REDISCLI_AUTH="$(head -n 1 "$REDIS_PASSWORD_FILE")"
    export REDISCLI_AUTH
    backup_part --tag redis --stdin-from-command --stdin-filename redis-dump.rdb -- \
        redis-cli -h "$REDIS_HOST" --no-auth-warning --rdb - || true
    if [ "$GROUPWARE" = yes ]; then
        log "run $run: SOGo's database (pg_dump)"
        umask 077
        printf '%s:%s:%s:%s:%s\n' "$POSTGRES_HOST" "$POSTGRES_PORT" "$POSTGRES_DB" "$POSTGRES_USER" \
            "$(head -n 1 "$POSTGRES_PASSWORD_FILE")" >"$work/pgpass"
        PGPASSFILE="$work/pgpass" backup_part --tag groupware --stdin-from-command --stdin-filename sogo.sql -- \
            pg_dump --host="$POSTGRES_HOST" --port="$POSTGRES_PORT" --username="$POSTGRES_USER" \
            --dbname="$POSTGRES_DB" --no-password --clean --if-exists --no-owner --no-privileges \
            --exclude-table="$POSTGRES_SKIP_TABLE" || true
        rm -f "$work/pgpass"
    fi
    earlier=""
    snapshot=""
    while [ "$attempts" -lt "$MAIL_ATTEMPTS" ]; do
        attempts=$((attempts + 1))
        log "run $run: the mail and rspamd volumes (attempt $attempts of $MAIL_ATTEMPTS)"
        before="$(mail_listing)"
        clean=true
        # Rspamd's compiled Hyperscan databases (most of its volume) are caches: it compiles
        # them again when they are missing.
        backup_part --tag files --exclude="$DATA/rspamd/*.hs" --exclude="$DATA/rspamd/*.hsmp" \
            --exclude="$DATA/rspamd/*.hsmc" --exclude="$DATA/rspamd/*.unser" \
            --exclude="$DATA/rspamd/*.sock" "$DATA/mail" "$DATA/rspamd" || clean=false
        after="$(mail_listing)"
        [ -z "$snapshot" ] || earlier="$earlier $snapshot"
        snapshot="$saved"
        if [ "$clean" = true ] && [ "$before" = "$after" ]; then
            consistent=true
            break
        fi
        log "mail changed while restic read it; reading it again"
    done
    if [ -n "$earlier" ]; then
        # shellcheck disable=SC2086
        restic forget $earlier >/dev/null
    fi
    log "run $run: forget --prune ($KEEP)"
    # shellcheck disable=SC2086
    restic forget --host "$SITE" --tag mailstack --prune $KEEP >"$work/forget" 2>&1 ||
        fail_run "restic forget --prune failed: $(tail -n 1 "$work/forget")"
    repository_bytes="$(restic stats --json --mode raw-data 2>/dev/null | sed -n 's/.*"total_size":\([0-9]*\).*/\1/p')"
    note true "$snapshot" ""
    log "run $run done: snapshot $snapshot, added ${added:-nothing}, consistent: $consistent"
}

case "${1:-loop}" in
    health)
        [ -s "$next_file" ] || { echo "no run planned yet"; exit 1; }
        ;;
    status)
        [ -s "$STATUS_FILE" ] && cat "$STATUS_FILE" || echo '{}'
        ;;
    run)
        run_once
        ;;
    list)
        restic_or_die snapshots --json --host "$SITE" --tag mailstack
        ;;
    check)
        if [ "${2:-}" = --quick ]; then restic_or_die check; else restic_or_die check --read-data; fi
        ;;
    restore-files)
        id="$2"
        for part in mail rspamd; do
            [ -d "/restore/$part" ] || die 1 "/restore/$part is not mounted"
            log "restoring the $part volume from snapshot $id"
            restic_or_die restore "$id:$DATA/$part" --target "/restore/$part"
            # restic gives the target directory itself no metadata: the volume's root gets the
            # owner and mode it had (vmail, _rspamd), from the snapshot.
            node="$(restic ls --json "$id" "$DATA/$part" | grep "\"path\":\"$DATA/$part\"" | head -n 1)"
            uid="$(echo "$node" | sed -n 's/.*"uid":\([0-9]*\).*/\1/p')"
            gid="$(echo "$node" | sed -n 's/.*"gid":\([0-9]*\).*/\1/p')"
            mode="$(echo "$node" | sed -n 's/.*"mode":\([0-9]*\).*/\1/p')"
            chmod "$(printf '%o' $((mode & 4095)))" "/restore/$part"
            chown "$uid:$gid" "/restore/$part"
        done
        ;;
    dump)
        case "$3" in
            redis) restic_or_die dump "$2" /redis-dump.rdb ;;
            groupware) restic_or_die dump "$2" /sogo.sql ;;
            *) die 2 "no such part: $3" ;;
        esac
        ;;
    restore-db)
        mkdir -p "$work"
        id="$2"
        umask 077
        printf '%s:%s:%s:%s:%s\n' "$POSTGRES_HOST" "$POSTGRES_PORT" "$POSTGRES_DB" "$POSTGRES_USER" \
            "$(head -n 1 "$POSTGRES_PASSWORD_FILE")" >"$work/pgpass"
        log "restoring SOGo's database from snapshot $id"
        # Streamed: the plaintext dump is never written down here either.
        { rc=0; restic dump "$id" /sogo.sql || rc=$?; echo "$rc" >"$work/rc"; } |
            PGPASSFILE="$work/pgpass" psql --quiet --no-psqlrc --set=ON_ERROR_STOP=1 --host="$POSTGRES_HOST" \
                --port="$POSTGRES_PORT" --username="$POSTGRES_USER" --dbname="$POSTGRES_DB" --no-password \
                --file=- >/dev/null
        rm -f "$work/pgpass"
        rc="$(cat "$work/rc")"
        [ "$rc" -ne 12 ] || die 12 "wrong password: the state's secrets/restic_password does not open the repository at $(where)"
        [ "$rc" -eq 0 ] || die 1 "restic dump of $id failed (exit $rc)"
        ;;
    host-timer)
        # On servers (role mailstack_stack): the host's timer execs `run` in this container.
        echo "host timer" >"$next_file"
        log "the host's systemd timer runs the schedule ($SCHEDULE UTC)"
        exec sleep infinity
        ;;
    loop)
        while :; do
            # systemd's own reading of the calendar event, as the servers' timer reads it.
            next="$(systemd-analyze calendar --iterations=1 "$SCHEDULE UTC" | sed -n 's/.*Next elapse: [A-Za-z]* //p')"
            [ -n "$next" ] || die 2 "the schedule $SCHEDULE is no systemd calendar event"
            next_s="$(date -u -d "$next" +%s)"
            echo "$next_s" >"$next_file"
            log "next backup at $(date -u -d "@$next_s" '+%F %H:%M UTC')"
            now="$(date -u +%s)"
            [ "$next_s" -le "$now" ] || sleep $((next_s - now))
            # A failed run is noted (status, check) and tried again at the next elapse.
            (run_once) || log "the backup failed; see above"
            sleep 1
        done
        ;;
    *)
        log "usage: $0 loop|run|list|check [--quick]|status|restore-files RUN|dump RUN PART|restore-db RUN|health"
        exit 2
        ;;
esac
