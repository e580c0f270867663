#!/bin/sh
# Reload nginx from inside the container (`docker compose exec web web-reload`): refresh
# the copies of the TLS keys (a re-issued certificate), then `nginx -s reload` as www-data,
# which checks the new configuration and sends SIGHUP to the master (PID 1, www-data).
# Root would need CAP_KILL to signal it, which the container does not have.
exec /usr/local/bin/web-entrypoint nginx -e stderr -s reload
