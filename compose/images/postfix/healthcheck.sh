#!/bin/bash
# Healthy when the Postfix master runs and its SMTP ports listen.
#   HEALTHCHECK_PORTS       ports that must be listening (default "25"); checked in
#                           /proc/net/tcp*, so a probe leaves no line in the mail log
#   HEALTHCHECK_SMTP_PORT   if set, also expect a 220 greeting on this port (logs a
#                           connect/disconnect pair on every probe)
set -euo pipefail

# "master -t" exits 0 when NO master is running (it is what postfix-script
# uses); unlike "postfix status" it does not log a line on every probe.
if /usr/lib/postfix/sbin/master -t 2>/dev/null; then
    echo "postfix master is not running"
    exit 1
fi

listening() {
    local hex
    hex="$(printf '%04X' "$1")"
    # state 0A = LISTEN; local address column ends in :PORT
    grep -qE "^ *[0-9]+: [0-9A-F]+:${hex} [0-9A-F]+:0000 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
for port in ${HEALTHCHECK_PORTS-25}; do
    if ! listening "$port"; then
        echo "nothing listens on port $port"
        exit 1
    fi
done

port="${HEALTHCHECK_SMTP_PORT:-}"
[ -n "$port" ] || exit 0
exec 3<>"/dev/tcp/127.0.0.1/$port"
IFS= read -r -t 5 banner <&3 || banner=""
printf 'QUIT\r\n' >&3
exec 3>&-
case "$banner" in
    220*) exit 0 ;;
    *) echo "unexpected SMTP greeting on port $port: ${banner:-<none>}"; exit 1 ;;
esac
