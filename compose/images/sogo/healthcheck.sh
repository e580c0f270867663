#!/bin/bash
# Healthy when the daemon answers on loopback:
#   sogo-healthcheck            sogod serves its login page on 20000 (200, or a redirect)
#   sogo-healthcheck memcached  memcached answers "version" on 11211 (the memcached service)
set -euo pipefail

if [ "${1:-sogo}" = memcached ]; then
    port=11211 request='version\r\n' pattern='VERSION*'
else
    port=20000 request='GET /SOGo/ HTTP/1.0\r\nHost: localhost\r\n\r\n' pattern='HTTP/1.[01] [23]0[0-2]*'
fi
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf "$request" >&3
IFS= read -r -t 4 answer <&3 || answer=""
exec 3>&-
answer="${answer%$'\r'}"
# shellcheck disable=SC2053 # a glob on purpose
if [[ "$answer" == $pattern ]]; then
    exit 0
fi
echo "unexpected answer on port $port: ${answer:-<none>}"
exit 1
