#!/bin/sh
# Reload rspamd from inside the container: signal PID 1 (tini, with compose's init: true),
# which passes SIGHUP to the entrypoint; it copies the secrets again, then HUPs rspamd.
# Prefer `docker compose exec rspamd rspamd-reload` over `docker compose kill -s HUP rspamd`:
# Docker Engine 20.10 marks a container that got any signal through `docker kill` as
# stopped by hand, so the restart policy no longer restarts it if it dies later.
kill -HUP 1
