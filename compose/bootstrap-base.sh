#!/usr/bin/env bash
# Build a minimal Debian 13 "trixie" base image with debootstrap + docker import,
# for hosts that cannot pull debian:trixie-slim from a registry.
#
# Usage: compose/bootstrap-base.sh [IMAGE_NAME]      (default: mailstack/base:trixie)
# Environment:
#   MIRROR   Debian mirror (default: the host's apt sources, else http://deb.debian.org/debian)
#   SUITE    Debian suite (default: trixie)
#   WORKDIR  parent directory for the temporary rootfs (default: /var/tmp)
set -euo pipefail

IMAGE="${1:-mailstack/base:trixie}"
SUITE="${SUITE:-trixie}"
WORKDIR="${WORKDIR:-/var/tmp}"

say() { printf 'bootstrap-base: %s\n' "$*"; }
die() { printf 'bootstrap-base: ERROR: %s\n' "$*" >&2; exit 1; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "image $IMAGE already exists, nothing to do"
    exit 0
fi
command -v debootstrap >/dev/null || die "debootstrap not installed (run scripts/install-engine.sh)"

# First Debian main-archive URI (ending in /debian) in the host's apt sources:
# deb822 "URIs:" lines or one-line "deb URI suite ..." entries.
host_mirror() {
    cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '/^[[:space:]]*URIs:/ {for (i = 2; i <= NF; i++) print $i}
             /^[[:space:]]*deb[[:space:]]/ {for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) {print $i; break}}' |
        grep -E '^https?://[^ ]+/debian/?$' | head -n 1
}
MIRROR="${MIRROR:-$(host_mirror || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
MIRROR="${MIRROR%/}"
# Security updates live in a separate archive next to the main one.
SECURITY_MIRROR="${MIRROR%/debian}/debian-security"

start=$SECONDS
rootfs="$(mktemp -d "$WORKDIR/mailstack-rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT

say "debootstrap --variant=minbase $SUITE from $MIRROR into $rootfs"
debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 ||
    { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "debootstrap failed"; }
rm -f "$rootfs.log"

# apt sources like the official image: main archive, -updates, -security.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# Keep apt from leaving package lists, .debs and translations behind, and
# dpkg from installing docs/man pages (same idea as debian:*-slim).
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APTCONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::Install-Recommends "false";
APTCONF
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'DPKGCFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKGCFG
find "$rootfs/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +

# Remove what debootstrap copied from the host or left behind; docker
# provides resolv.conf, hostname and hosts at run time.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/root/.cache
rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"

say "importing rootfs as $IMAGE"
tar --numeric-owner -C "$rootfs" -c . |
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase $SUITE $MIRROR" \
        - "$IMAGE" >/dev/null

size="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
say "built $IMAGE in $((SECONDS - start))s, size $((size / 1000000)) MB"
