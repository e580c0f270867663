#!/bin/sh
# Healthy when Unbound answers a query: localhost is one of its built-in local zones, so the
# answer needs no upstream (a site whose forwarders serve only private zones, or a moment
# without the internet, must not mark the resolver unhealthy; `mailstack check` tests that
# it resolves and validates names of the world).
set -eu
answer=$(drill -Q @127.0.0.1 localhost. A 2>&1) || true
if [ "$answer" = "127.0.0.1" ]; then
    exit 0
fi
echo "unbound does not answer on 127.0.0.1: ${answer:-no reply}" >&2
exit 1
