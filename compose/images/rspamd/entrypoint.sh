#!/bin/sh
# Give rspamd what it needs from its secrets, then run it as _rspamd (main process included).
#
#   MAILSTACK_STATE     where compose mounts the secrets (default /run/mailstack/state):
#                       dkim/<domain>/<selector>.pem and secrets/{rspamd_controller,redis}
#                       (and secrets/spamhaus_dqs with abuse.spamhaus_dqs), each one file
#                       (a compose secret), root-only
#   RSPAMD_SECRETS_DIR  tmpfs for the copies (default /run/rspamd-secrets)
#
# Written there, owned by _rspamd, files 0400:
#   dkim/<domain>/<selector>.pem  the DKIM private keys: RSA as in the state (PKCS#8 PEM);
#                                 Ed25519 as the base64 of its 32-byte seed, because
#                                 rspamd 3.12 signs with an Ed25519 PEM key as if it were
#                                 RSA ("rsa sign error") and reads Ed25519 keys only raw
#   worker-controller.inc         password/enable_password, hashed with `rspamadm pw`
#   redis.conf                    password = "…" for Redis
# No configuration file is edited: local.d includes these files.
#
# Then it execs rspamd as _rspamd: no process of the container keeps root, so it needs no
# capability after start (CHOWN, SETUID and SETGID are used here, before the exec). Keys
# never change (the state never rotates them) and a new domain brings new compose secrets,
# which makes compose recreate the container; so a reload (rspamd-reload, SIGHUP) only
# rereads the configuration.
set -eu

state="${MAILSTACK_STATE:-/run/mailstack/state}"
out="${RSPAMD_SECRETS_DIR:-/run/rspamd-secrets}"
user=_rspamd

log() { echo "rspamd-entrypoint: $*" >&2; }

secret() {
    value="$(head -n 1 "$state/secrets/$1")"
    if [ -z "$value" ]; then
        log "$state/secrets/$1 is empty"
        return 1
    fi
    printf '%s' "$value"
}

# Write stdin to $1 atomically (mode and owner are set at the end of sync_secrets).
put() {
    cat >"$1.tmp"
    mv -f "$1.tmp" "$1"
}

sync_secrets() {
    umask 077
    mkdir -p "$out"
    if [ -d "$state/dkim" ]; then
        rm -rf "$out/dkim"
        cp -R "$state/dkim" "$out/dkim"
        for key in "$out"/dkim/*/*.pem; do
            [ -f "$key" ] || continue
            case "$(openssl pkey -in "$key" -noout -text 2>/dev/null | head -n 1)" in
                ED25519*)
                    # PKCS#8 DER of an Ed25519 key ends with the 32-byte seed (RFC 8410).
                    openssl pkey -in "$key" -outform DER | tail -c 32 | base64 -w 0 >"$key.seed"
                    mv -f "$key.seed" "$key"
                    ;;
            esac
        done
    fi
    controller="$(secret rspamd_controller)" || return 1
    redis="$(secret redis)" || return 1
    hash="$(rspamadm pw --quiet --encrypt --password "$controller")" || return 1
    printf 'password = "%s";\nenable_password = "%s";\n' "$hash" "$hash" | put "$out/worker-controller.inc"
    printf 'password = "%s";\n' "$redis" | put "$out/redis.conf"
    # Modes first, owner last: without CAP_FOWNER root cannot chmod what it gave away.
    find "$out" -type d -exec chmod 0500 {} +
    find "$out" -type f -exec chmod 0400 {} +
    chown -R "$user:$user" "$out"
}

if [ "$#" -eq 0 ]; then
    set -- rspamd -f
fi
if [ "$(id -u)" -ne 0 ]; then
    exec "$@"
fi
if [ -d "$state" ]; then
    sync_secrets
    # abuse.spamhaus_dqs: the key goes to rspamd's environment, never into a file of its
    # configuration; local.d/rbl.conf names it as {= env.SPAMHAUS_DQS_KEY =}.
    if [ -f "$state/secrets/spamhaus_dqs" ]; then
        RSPAMD_SPAMHAUS_DQS_KEY="$(secret spamhaus_dqs)"
        export RSPAMD_SPAMHAUS_DQS_KEY
    fi
else
    log "no secrets at $state: starting without them"
fi
# $RUNDIR (the pid file); with a read-only root filesystem /run is a tmpfs.
mkdir -p -m 0755 /run/rspamd
chown "$user:$user" /run/rspamd
# tini stays PID 1 as $user: a namespace's init only receives the signals it has handlers
# for, and rspamd as PID 1 would miss SIGTERM (docker stop). tini passes TERM and HUP on,
# and as the same user it needs no CAP_KILL to do so.
exec setpriv --reuid="$user" --regid="$user" --init-groups -- tini -- "$@"
