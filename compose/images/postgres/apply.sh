#!/bin/sh
# Reload: apply the rendered users again (added, changed and removed in one transaction) and
# let postgres read postgresql.conf and pg_hba.conf again. Run by `up` and the deploy in the
# running container (docker exec, as root), through the socket as postgres.
set -eu

config="${MAILSTACK_POSTGRES_CONFIG:-/etc/mailstack-postgres}"
run() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}
run psql --quiet --no-psqlrc --set=ON_ERROR_STOP=1 --dbname=sogo --file="$config/sogo-users.sql"
run psql --quiet --no-psqlrc --set=ON_ERROR_STOP=1 --dbname=postgres --command="SELECT pg_reload_conf()" >/dev/null
echo "postgres-apply: users applied, configuration reloaded"
