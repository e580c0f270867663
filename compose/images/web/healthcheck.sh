#!/bin/bash
# Healthy when nginx answers on its internal health port (127.0.0.1 only, no access log)
# and listens on its HTTP and HTTPS ports.
#   HEALTHCHECK_PORT   the internal health server (default 8081): GET /health → 204
#   HEALTHCHECK_PORTS  ports that must be listening (default "8080 8443"), from /proc/net/tcp*
set -euo pipefail

listening() {
    local hex
    hex="$(printf '%04X' "$1")"
    # state 0A = LISTEN; local address column ends in :PORT
    grep -qE "^ *[0-9]+: [0-9A-F]+:${hex} [0-9A-F]+:0000 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
for port in ${HEALTHCHECK_PORTS-8080 8443}; do
    if ! listening "$port"; then
        echo "nothing listens on port $port"
        exit 1
    fi
done

port="${HEALTHCHECK_PORT:-8081}"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
IFS= read -r -t 4 status <&3 || status=""
exec 3>&-
case "$status" in
    "HTTP/1.1 204"*) exit 0 ;;
    *) echo "unexpected answer from the health server on port $port: ${status:-<none>}"; exit 1 ;;
esac
