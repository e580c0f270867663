#!/bin/bash
# Healthy when the Postfix master runs and the SMTP port greets with 220.
#   HEALTHCHECK_SMTP_PORT  port to probe (default 25)
set -euo pipefail
port="${HEALTHCHECK_SMTP_PORT:-25}"

# "master -t" exits 0 when NO master is running (it is what postfix-script
# uses); unlike "postfix status" it does not log a line on every probe.
if /usr/lib/postfix/sbin/master -t 2>/dev/null; then
    echo "postfix master is not running"
    exit 1
fi

exec 3<>"/dev/tcp/127.0.0.1/$port"
IFS= read -r -t 5 banner <&3 || banner=""
printf 'QUIT\r\n' >&3
exec 3>&-
case "$banner" in
    220*) exit 0 ;;
    *) echo "unexpected SMTP greeting on port $port: ${banner:-<none>}"; exit 1 ;;
esac
