#!/bin/sh
# Local mail deferred because Dovecot's LMTP was gone (a crash, a restart) flows again as
# soon as LMTP answers, instead of after Postfix's backoff (minimal_backoff_time, up to
# maximal_backoff_time): master.cf wakes this up every few seconds as a spawn(8) service,
# as nobody in group postdrop (enough for postqueue's sockets).
#
# It flushes the queue (`postqueue -f`, which also revives the destination that qmgr
# marked dead) only when a deferred message names a lost or failed connection to the
# LMTP host, that host now greets, and the last flush is a minute old: mail deferred for
# other reasons (a full mailbox or disk, a remote destination) keeps its backoff.
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
STAMP=/tmp/requeue-local.last  # the container's tmpfs: a restart may flush at once
MIN_INTERVAL=60

transport=$(postconf -hx virtual_transport) || exit 0   # lmtp:inet:HOST:PORT
nexthop=${transport#lmtp:}
nexthop=${nexthop#inet:}
host=${nexthop%:*}
port=${nexthop##*:}
case "$host" in ''|*[!A-Za-z0-9.-]*) exit 0 ;; esac

# Connection-level reasons only: "connect to HOST[addr]:port", "lost connection with
# HOST[addr]", "conversation with HOST[addr] timed out", a failed name lookup of HOST (as
# while the Docker engine restarts: its DNS is away for a moment).
postqueue -j 2>/dev/null | grep -Eq "\"delay_reason\": *\"[^\"]*((connect to|lost connection with|conversation with) $host\\[|name=$host type=|unable to look up host $host:)" || exit 0

now=$(date +%s)
last=$(cat "$STAMP" 2>/dev/null || echo 0)
[ $((now - last)) -ge "$MIN_INTERVAL" ] || exit 0

# The LMTP server's greeting ("220 …"), read with a bound.
greeting=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" && head -c 3 <&3 && printf "QUIT\r\n" >&3' _ "$host" "$port" 2>/dev/null)
[ "$greeting" = "220" ] || exit 0

echo "$now" >"$STAMP"
postlog -t postfix/requeue-local -p info "LMTP at $host:$port answers again: flushing the mail deferred while it was gone"
postqueue -f
