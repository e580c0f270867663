#!/bin/sh
# Local mail that Dovecot could not take flows again soon after it can, instead of after
# Postfix's backoff (minimal_backoff_time, growing to maximal_backoff_time): master.cf
# wakes this up every few seconds as a spawn(8) service, as nobody in group postdrop
# (enough for postqueue's sockets). Mail deferred for other reasons (a remote
# destination) keeps its backoff.
#
# - LMTP was gone (a crash, a restart): once its host greets again, and the last flush is a
#   minute old, the whole queue is flushed (`postqueue -f`, which also revives the
#   destination that qmgr marked dead).
# - LMTP answered with a 4xx of its own (its storage failed, as on a full disk; a user's
#   concurrent deliveries), or the reason is missing (a full disk): those messages alone are
#   retried, once a minute (`postqueue -i`), so a freed disk takes the mail in within a
#   minute or two.
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
# The container's tmpfs: a restart may act at once.
FLUSHED=/tmp/requeue-local.last
RETRIED=/tmp/requeue-local.retried
MIN_INTERVAL=60

transport=$(postconf -hx virtual_transport) || exit 0   # lmtp:inet:HOST:PORT
nexthop=${transport#lmtp:}
nexthop=${nexthop#inet:}
host=${nexthop%:*}
port=${nexthop##*:}
case "$host" in ''|*[!A-Za-z0-9.-]*) exit 0 ;; esac
queue=$(postqueue -j 2>/dev/null) || exit 0
now=$(date +%s)

# Whether the stamp file is at least a minute old; if so, it is renewed.
due() {
    last=$(cat "$1" 2>/dev/null || echo 0)
    [ $((now - last)) -ge "$MIN_INTERVAL" ] || return 1
    echo "$now" >"$1"
}

# Connection-level reasons only: "connect to HOST[addr]:port", "lost connection with
# HOST[addr]", "conversation with HOST[addr] timed out", a failed name lookup of HOST (as
# while the Docker engine restarts: its DNS is away for a moment).
# Succeeds only when it flushed the whole queue.
flush_if_back() {
    printf '%s\n' "$queue" | grep -Eq "\"delay_reason\": *\"[^\"]*((connect to|lost connection with|conversation with) $host\\[|name=$host type=|unable to look up host $host:)" || return 1
    # The LMTP server's greeting ("220 …"), read with a bound.
    greeting=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" && head -c 3 <&3 && printf "QUIT\r\n" >&3' _ "$host" "$port" 2>/dev/null)
    [ "$greeting" = "220" ] || return 1
    due "$FLUSHED" || return 1
    postlog -t postfix/requeue-local -p info "LMTP at $host:$port answers again: flushing the mail deferred while it was gone"
    postqueue -f
}

# Deferred messages with a recipient that LMTP refused with "host HOST[addr] said: 4…", or
# with no reason at all: on a full disk Postfix cannot write the reason to its defer log.
retry_refused() {
    ids=$(printf '%s\n' "$queue" | grep -E "\"queue_name\": *\"deferred\"" \
        | grep -E "\"delay_reason\": *\"host $host\\[[^]\"]*\\](:[0-9]+)? said: 4|\"address\": *\"[^\"]*\"\}" \
        | sed -n 's/^.*"queue_id": *"\([0-9A-Za-z]*\)".*$/\1/p')
    [ -n "$ids" ] || return 0
    due "$RETRIED" || return 0
    count=$(printf '%s\n' "$ids" | wc -l)
    postlog -t postfix/requeue-local -p info "$count messages deferred by LMTP at $host:$port (a 4xx, or no reason recorded: a full disk): retrying them"
    for id in $ids; do
        postqueue -i "$id"
    done
}

# A flush already retries every deferred message.
flush_if_back || retry_refused
