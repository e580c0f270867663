#!/bin/bash
# Healthy when the Dovecot master answers doveadm and IMAP greets with "* OK".
#   HEALTHCHECK_IMAP_PORT  port to probe (default 143; set to "" to skip)
set -euo pipefail
port="${HEALTHCHECK_IMAP_PORT-143}"

if ! doveadm service status >/dev/null 2>&1; then
    echo "dovecot master does not answer doveadm"
    exit 1
fi
[ -n "$port" ] || exit 0

exec 3<>"/dev/tcp/127.0.0.1/$port"
IFS= read -r -t 5 banner <&3 || banner=""
printf 'a LOGOUT\r\n' >&3
exec 3>&-
case "$banner" in
    "* OK"*) exit 0 ;;
    *) echo "unexpected IMAP greeting on port $port: ${banner:-<none>}"; exit 1 ;;
esac
