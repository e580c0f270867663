#!/bin/bash
# Healthy when the Dovecot master answers doveadm and its ports listen.
#   HEALTHCHECK_PORTS      ports that must be listening (default "143"); checked in
#                          /proc/net/tcp*, so a probe leaves no line in the log
#   HEALTHCHECK_IMAP_PORT  if set, also expect "* OK" on this port (logs a
#                          "Login aborted" line on every probe)
set -euo pipefail

if ! doveadm service status >/dev/null 2>&1; then
    echo "dovecot master does not answer doveadm"
    exit 1
fi

listening() {
    local hex
    hex="$(printf '%04X' "$1")"
    grep -qE "^ *[0-9]+: [0-9A-F]+:${hex} [0-9A-F]+:0000 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
for port in ${HEALTHCHECK_PORTS-143}; do
    if ! listening "$port"; then
        echo "nothing listens on port $port"
        exit 1
    fi
done

port="${HEALTHCHECK_IMAP_PORT:-}"
[ -n "$port" ] || exit 0
exec 3<>"/dev/tcp/127.0.0.1/$port"
IFS= read -r -t 5 banner <&3 || banner=""
printf 'a LOGOUT\r\n' >&3
exec 3>&-
case "$banner" in
    "* OK"*) exit 0 ;;
    *) echo "unexpected IMAP greeting on port $port: ${banner:-<none>}"; exit 1 ;;
esac
