#!/bin/sh
# Healthy when Redis answers PING with PONG, authenticated with the state's password
# when it is readable (the probe runs as root), else a NOAUTH answer counts as alive.
#   HEALTHCHECK_REDIS_PORT  port to probe (default 6379)
#   MAILSTACK_STATE         state mount (default /run/mailstack/state)
set -eu
secret="${MAILSTACK_STATE:-/run/mailstack/state}/secrets/redis"
if [ -z "${REDISCLI_AUTH:-}" ] && [ -r "$secret" ]; then
    REDISCLI_AUTH="$(head -n 1 "$secret")"
    export REDISCLI_AUTH
fi
reply="$(redis-cli --no-auth-warning -h 127.0.0.1 -p "${HEALTHCHECK_REDIS_PORT:-6379}" ping 2>&1 || true)"
case "$reply" in
    PONG) exit 0 ;;
    NOAUTH*) [ -z "${REDISCLI_AUTH:-}" ] && exit 0 ;;
esac
echo "redis did not answer PING: $reply"
exit 1
