#!/bin/sh
# Give nginx (www-data) its TLS keys, then run the command as www-data.
#
#   MAILSTACK_SECRETS  where compose mounts this service's secrets (default /run/mailstack:
#                      state/tls/<hostname>/*.{key,crt}, or tls/*.pem for tls.mode files);
#                      root-only, so they are read here, before dropping privileges
#   WEB_SECRETS        tmpfs for the copies (default /run/web-secrets): directories
#                      root:www-data 0750, files root:www-data 0440
#
# Every file under a tls/ directory is copied (never the local CA's key), each by rename,
# so a running nginx never reads half a file. Root keeps ownership: `web-reload` (this
# script with `nginx -s reload`) refreshes the copies without CAP_DAC_OVERRIDE or CAP_FOWNER.
# The nginx runtime directory /run/nginx (pid, temp files) belongs to www-data.
set -eu

src="${MAILSTACK_SECRETS:-/run/mailstack}"
out="${WEB_SECRETS:-/run/web-secrets}"
user=www-data

if [ "$(id -u)" -ne 0 ]; then
    exec "$@"
fi

umask 027
mkdir -p "$out" /run/nginx
chown "$user:$user" /run/nginx
chgrp "$user" "$out"
if [ -d "$src" ]; then
    find "$src" -path '*/tls/*' -type f ! -name ca.key | while IFS= read -r file; do
        rel="${file#"$src"/}"
        dir="$out/$(dirname "$rel")"
        if [ ! -d "$dir" ]; then
            mkdir -p "$dir"
            # Every new directory between $out and $dir, for the group.
            sub="$(dirname "$rel")"
            while [ "$sub" != "." ]; do
                chgrp "$user" "$out/$sub"
                sub="$(dirname "$sub")"
            done
        fi
        cp "$file" "$out/$rel.tmp"
        chmod 0440 "$out/$rel.tmp"
        chgrp "$user" "$out/$rel.tmp"
        mv -f "$out/$rel.tmp" "$out/$rel"
    done
fi
exec setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
