#!/bin/sh
# Make SOGo's cluster once, give the sogo role its password, apply the users, then run postgres.
#
#   MAILSTACK_STATE            state mount (default /run/mailstack/state); secrets/postgres
#                              holds the sogo role's password (root-only: read here)
#   MAILSTACK_POSTGRES_CONFIG  the rendered postgresql.conf, pg_hba.conf, sogo-users.sql
#   PGDATA                     the cluster (the postgres volume)
#
# Until the users are applied, the server listens on its socket only: SOGo never meets a
# database without its role or its users. Nothing is written outside PGDATA and /run.
set -eu

state="${MAILSTACK_STATE:-/run/mailstack/state}"
config="${MAILSTACK_POSTGRES_CONFIG:-/etc/mailstack-postgres}"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "postgres-entrypoint: must start as root (it reads the state's password)" >&2
    exit 1
fi
password="$(head -n 1 "$state/secrets/postgres")"
case "$password" in
    "" | *"'"* | *"\\"*) echo "postgres-entrypoint: $state/secrets/postgres is empty or not a token" >&2; exit 1 ;;
esac

# Mode first, owner last (without CAP_FOWNER root cannot chmod what it gave away).
if [ "$(stat -c %U /run/postgresql)" != postgres ]; then
    chmod 0775 /run/postgresql
    chown postgres:postgres /run/postgresql
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "postgres-entrypoint: making the cluster in $PGDATA"
    as_postgres initdb --pgdata="$PGDATA" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >/dev/null
fi

# The socket-only server: the role, its database, its password and the users.
as_postgres pg_ctl --pgdata="$PGDATA" --silent --wait --timeout=60 \
    --options="-c config_file=$config/postgresql.conf -c listen_addresses=''" start
# Read from standard input: the password is in no process's arguments.
as_postgres psql --quiet --no-psqlrc --set=ON_ERROR_STOP=1 --dbname=postgres <<SQL
SELECT 'CREATE ROLE sogo LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sogo')\gexec
SELECT 'CREATE DATABASE sogo OWNER sogo ENCODING ''UTF8''' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'sogo')\gexec
SET password_encryption = 'scram-sha-256';
ALTER ROLE sogo WITH LOGIN PASSWORD '$password';
SQL
as_postgres psql --quiet --no-psqlrc --set=ON_ERROR_STOP=1 --dbname=sogo --file="$config/sogo-users.sql"
as_postgres pg_ctl --pgdata="$PGDATA" --silent --wait --timeout=60 --mode=fast stop

exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
    "$@" -D "$PGDATA" -c "config_file=$config/postgresql.conf"
