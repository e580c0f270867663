#!/bin/sh
# Healthy when Redis answers PING. A server that demands a password
# (NOAUTH) is answering too; set REDISCLI_AUTH to check with the password.
#   HEALTHCHECK_REDIS_PORT  port to probe (default 6379)
set -eu
reply="$(redis-cli -h 127.0.0.1 -p "${HEALTHCHECK_REDIS_PORT:-6379}" ping 2>&1 || true)"
case "$reply" in
    PONG | NOAUTH*) exit 0 ;;
    *) echo "redis did not answer PING: $reply"; exit 1 ;;
esac
