#!/bin/sh
# Healthy when postgres accepts connections on the network: the entrypoint only lets it
# listen there once the sogo role and the users are in place.
set -eu
exec pg_isready --quiet --host=127.0.0.1 --port=5432 --dbname=sogo --username=sogo --timeout=4
