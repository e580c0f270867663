#!/bin/bash
# Healthy when the Rspamd controller answers GET /ping with "pong".
#   HEALTHCHECK_CONTROLLER_PORT  controller port (default 11334)
set -euo pipefail
port="${HEALTHCHECK_CONTROLLER_PORT:-11334}"

exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /ping HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
reply="$(timeout 5 cat <&3 || true)"
exec 3>&-
case "$reply" in
    "HTTP/1."?" 200"*pong*) exit 0 ;;
    *) echo "rspamd controller on port $port did not answer pong: ${reply:0:80}"; exit 1 ;;
esac
