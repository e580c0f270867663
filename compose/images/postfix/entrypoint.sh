#!/bin/sh
# Compile Postfix lookup tables from the read-only config into a writable
# directory, then exec the command (default: postfix start-fg).
#
#   POSTFIX_MAPS_SRC  directory with source tables (default /etc/postfix/maps)
#   POSTFIX_MAPS_DIR  where copies and compiled tables go (default /var/lib/postfix-maps)
#   POSTFIX_MAP_TYPE  table type to build (default lmdb)
#
# A source file named "*aliases" is built with postalias, every other regular
# file with postmap. main.cf should then refer to e.g.
# lmdb:/var/lib/postfix-maps/virtual_mailboxes.
set -eu

src_dir="${POSTFIX_MAPS_SRC:-/etc/postfix/maps}"
out_dir="${POSTFIX_MAPS_DIR:-/var/lib/postfix-maps}"
type="${POSTFIX_MAP_TYPE:-lmdb}"

if [ -d "$src_dir" ]; then
    mkdir -p "$out_dir"
    find "$out_dir" -mindepth 1 -maxdepth 1 -delete
    for src in "$src_dir"/*; do
        [ -f "$src" ] || continue
        name="${src##*/}"
        case "$name" in *.lmdb | *.db | *.cdb | *.lock | *~ | .*) continue ;; esac
        # Plain cp: the copy is owned by root, so postmap keeps root
        # privileges and can write next to it; the file mode is kept.
        cp "$src" "$out_dir/$name"
        case "$name" in
            *aliases) postalias "$type:$out_dir/$name" ;;
            *) postmap "$type:$out_dir/$name" ;;
        esac
        echo "postfix-entrypoint: compiled $type:$out_dir/$name"
    done
fi

[ "$#" -gt 0 ] || set -- postfix start-fg
exec "$@"
