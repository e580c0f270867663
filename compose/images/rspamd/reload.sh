#!/bin/sh
# Reload rspamd's configuration from inside the container (`docker compose exec rspamd
# rspamd-reload`): SIGHUP to rspamd's main process, PID 1. It runs as _rspamd, so the
# signal is sent as _rspamd too; root would need CAP_KILL, which the container does not have.
# Prefer this over `docker compose kill -s HUP rspamd`: Docker Engine 20.10 marks a
# container that got any signal through `docker kill` as stopped by hand, so the restart
# policy no longer restarts it if it dies later.
if [ "$(id -u)" -eq 0 ]; then
    exec setpriv --reuid=_rspamd --regid=_rspamd --clear-groups -- sh -c "kill -HUP 1"
fi
exec kill -HUP 1
