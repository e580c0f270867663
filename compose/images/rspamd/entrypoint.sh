#!/bin/sh
# Give rspamd's unprivileged workers (_rspamd) what they need from the root-only state
# mount, then run rspamd; on SIGHUP copy again (new domains bring new DKIM keys) and pass
# the HUP on to rspamd, which then reloads its configuration.
#
#   MAILSTACK_STATE     state mount (default /run/mailstack/state): dkim/, secrets/
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

# Write stdin to $1 atomically, owned by $user, mode 0400.
put() {
    cat >"$1.tmp"
    chown "$user:$user" "$1.tmp"
    chmod 0400 "$1.tmp"
    mv -f "$1.tmp" "$1"
}

sync_secrets() {
    umask 077
    mkdir -p "$out"
    chown "$user:$user" "$out"
    chmod 0500 "$out"
    if [ -d "$state/dkim" ]; then
        rm -rf "$out/dkim.new"
        cp -R "$state/dkim" "$out/dkim.new"
        for key in "$out"/dkim.new/*/*.pem; do
            [ -f "$key" ] || continue
            case "$(openssl pkey -in "$key" -noout -text 2>/dev/null | head -n 1)" in
                ED25519*)
                    # PKCS#8 DER of an Ed25519 key ends with the 32-byte seed (RFC 8410).
                    openssl pkey -in "$key" -outform DER | tail -c 32 | base64 -w 0 >"$key.seed"
                    mv -f "$key.seed" "$key"
                    ;;
            esac
        done
        chown -R "$user:$user" "$out/dkim.new"
        find "$out/dkim.new" -type d -exec chmod 0500 {} +
        find "$out/dkim.new" -type f -exec chmod 0400 {} +
        rm -rf "$out/dkim.old"
        if [ -d "$out/dkim" ]; then mv "$out/dkim" "$out/dkim.old"; fi
        mv "$out/dkim.new" "$out/dkim"
        rm -rf "$out/dkim.old"
    fi
    controller="$(secret rspamd_controller)" || return 1
    redis="$(secret redis)" || return 1
    hash="$(rspamadm pw --quiet --encrypt --password "$controller")" || return 1
    printf 'password = "%s";\nenable_password = "%s";\n' "$hash" "$hash" | put "$out/worker-controller.inc"
    printf 'password = "%s";\n' "$redis" | put "$out/redis.conf"
}

reload() {
    if sync_secrets; then
        log "secrets copied again; reloading rspamd"
    else
        log "copying secrets failed; reloading rspamd with the previous copies"
    fi
    kill -HUP "$child" 2>/dev/null || true
}

if [ "$#" -eq 0 ]; then
    set -- rspamd -f -u "$user" -g "$user"
fi
if [ "$(id -u)" -ne 0 ] || [ ! -d "$state" ]; then
    log "not root or no state at $state: starting without secrets"
    exec "$@"
fi

sync_secrets
"$@" &
child=$!
trap reload HUP
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
trap 'kill -USR1 "$child" 2>/dev/null' USR1
# wait returns early for every trapped signal; keep waiting until rspamd itself is gone.
status=0
while kill -0 "$child" 2>/dev/null; do
    wait "$child" && status=0 || status=$?
done
exit "$status"
