#!/bin/sh
# Give Redis its password, then run it as the redis user.
#
#   MAILSTACK_STATE  state mount (default /run/mailstack/state); secrets/redis holds the
#                    password (root-only, so it is read here, before dropping privileges)
#   REDIS_SECRETS    tmpfs for the ACL file (default /run/redis-secrets)
#
# Written: $REDIS_SECRETS/users.acl (redis, 0400) with the default user and the SHA-256 of
# the password; the rendered redis.conf names it with "aclfile". No config file is edited.
set -eu

state="${MAILSTACK_STATE:-/run/mailstack/state}"
out="${REDIS_SECRETS:-/run/redis-secrets}"

if [ "$(id -u)" -ne 0 ]; then
    exec "$@"
fi
if [ -r "$state/secrets/redis" ]; then
    password="$(head -n 1 "$state/secrets/redis")"
    if [ -z "$password" ]; then
        echo "redis-entrypoint: $state/secrets/redis is empty" >&2
        exit 1
    fi
    hash="$(printf '%s' "$password" | sha256sum | cut -d ' ' -f 1)"
    umask 077
    mkdir -p "$out"
    printf 'user default on #%s ~* &* +@all\n' "$hash" >"$out/users.acl.tmp"
    # Modes first, owner last: without CAP_FOWNER root cannot chmod what it gave away.
    chmod 0400 "$out/users.acl.tmp"
    chown redis:redis "$out/users.acl.tmp"
    mv -f "$out/users.acl.tmp" "$out/users.acl"
    chmod 0700 "$out"
    chown redis:redis "$out"
fi
exec setpriv --reuid=redis --regid=redis --init-groups -- "$@"
