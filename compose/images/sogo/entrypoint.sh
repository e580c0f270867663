#!/bin/sh
# Give SOGo its database password and the web service its static files, then run sogod as sogo.
#
#   MAILSTACK_STATE  state mount (default /run/mailstack/state); secrets/postgres holds the
#                    sogo role's password (root-only, so it is read here, before dropping root)
#   SOGO_STATIC      the sogo-static volume (default /srv/sogo-static), served by web
#
# Written: $PGPASSFILE (sogo, 0600): "postgres:5432:sogo:sogo:<password>", which libpq reads
# because sogo.conf's URLs have no password; $SOGO_STATIC/current: a copy of this image's
# WebServerResources (symlinks into libjs-* resolved), replaced only when sogo-common's
# version changed. No config file is edited. Not root (the memcached service): just exec.
set -eu

state="${MAILSTACK_STATE:-/run/mailstack/state}"
static="${SOGO_STATIC:-/srv/sogo-static}"
resources="${SOGO_RESOURCES:-/usr/share/GNUstep/SOGo/WebServerResources}"

if [ "$(id -u)" -ne 0 ]; then
    exec "$@"
fi

password="$(head -n 1 "$state/secrets/postgres")"
if [ -z "$password" ]; then
    echo "sogo-entrypoint: $state/secrets/postgres is empty" >&2
    exit 1
fi
# A directory for sogo: mode first, owner last, and only while root owns it (without
# CAP_FOWNER root can chmod nothing it gave away; a volume keeps its owner across starts).
give() {
    mkdir -p "$2"
    if [ "$(stat -c %U "$2")" != sogo ]; then
        chmod "$1" "$2"
        chown sogo:sogo "$2"
    fi
}
umask 077
# The password file first, while root still owns /run/sogo (a fresh tmpfs at every start).
mkdir -p /run/sogo
printf 'postgres:5432:sogo:sogo:%s\n' "$password" >"$PGPASSFILE.tmp"
chmod 0600 "$PGPASSFILE.tmp"
chown sogo:sogo "$PGPASSFILE.tmp"
mv -f "$PGPASSFILE.tmp" "$PGPASSFILE"
give 0700 /run/sogo
give 0700 /var/lib/sogo
give 0750 /var/spool/sogo

# The static files for web: a fresh copy beside the old one, then a rename (web never sees
# a half-made tree). Read by www-data in the web container: world-readable.
umask 022
version="$(dpkg-query -W -f='${Version}' sogo-common)"
if [ "$(cat "$static/current/.mailstack-version" 2>/dev/null || true)" != "$version" ]; then
    rm -rf "$static/next" "$static/old"
    cp -rL "$resources" "$static/next"
    printf '%s\n' "$version" >"$static/next/.mailstack-version"
    if [ -d "$static/current" ]; then
        mv "$static/current" "$static/old"
    fi
    mv "$static/next" "$static/current"
    rm -rf "$static/old"
    echo "sogo-entrypoint: static files of sogo-common $version copied for web"
fi

# setpriv keeps root's environment: GNUstep finds its user defaults under $HOME.
export HOME=/var/lib/sogo USER=sogo LOGNAME=sogo
# tini stays PID 1 as sogo and passes TERM on to sogod's watchdog, which tells its workers;
# as the same user it needs no CAP_KILL (the rspamd image does the same).
exec setpriv --reuid=sogo --regid=sogo --init-groups -- tini -- "$@"
