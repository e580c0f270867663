#!/usr/bin/env bash
# Run the slow test layers side by side, each in a pytest of its own, and report them in a
# fixed order: the integration tests (their stacks in this machine's Docker; the full-disk test
# in a run of its own), the test world
# (tests/world: a signed DNS, sites that reach each other, a forger), the e2e lifecycle on a
# minimal server, and the other e2e tests (the harness, the cloud server).
#
# Most of their time is spent waiting (health checks, SSH round trips, apt, testssl), so on
# two cores side by side takes little more than the longest of them. They never meet: every
# stack and server has a project name and ports of its own; the world has its own network.
#
# Usage: scripts/test-parallel.sh PYTEST [ARGS...]   (e.g. .venv/bin/pytest --durations=15)
# Exit: 0 when every run passed; otherwise the first failing run's exit code.
set -uo pipefail

[ "$#" -ge 1 ] || { echo "usage: $0 PYTEST [ARGS...]" >&2; exit 2; }

logs=$(mktemp -d "${TMPDIR:-/tmp}/mailstack-tests.XXXXXX")
names=(integration disk-full world e2e-lifecycle e2e-other)
selection() {  # the pytest arguments that pick a run's tests
    case $1 in
        # The full disk waits, mostly idle, for the once-a-minute retry of what Dovecot
        # deferred: beside the others rather than after them.
        integration) args=(-m integration --ignore=tests/integration/test_disk_full.py) ;;
        disk-full) args=(-m integration tests/integration/test_disk_full.py) ;;
        world) args=(-m world) ;;
        e2e-lifecycle) args=(-m e2e -k TestDeployLifecycle) ;;
        e2e-other) args=(-m e2e -k "not TestDeployLifecycle") ;;
    esac
}
declare -A pid=() status=() seconds=()
started=$SECONDS

stop_all() {
    for name in "${names[@]}"; do
        [ -n "${pid[$name]:-}" ] && kill -TERM -- "-${pid[$name]}" 2>/dev/null
    done
}
trap 'stop_all; exit 130' INT TERM

for name in "${names[@]}"; do
    selection "$name"
    # A process group of its own, so that an interrupt stops the run with its children.
    setsid "$@" "${args[@]}" >"$logs/$name.log" 2>&1 &
    pid[$name]=$!
    echo "::: ${name}: started (pid ${pid[$name]}, log $logs/$name.log)"
done

remaining=${#names[@]}
while [ "$remaining" -gt 0 ]; do
    wait -n -p done_pid
    rc=$?
    for name in "${names[@]}"; do
        if [ "${pid[$name]}" = "${done_pid:-}" ]; then
            status[$name]=$rc
            seconds[$name]=$((SECONDS - started))
            echo "::: ${name}: exit ${rc} after ${seconds[$name]}s"
        fi
    done
    remaining=$((remaining - 1))
done

first_failure=0
for name in "${names[@]}"; do
    echo
    echo "================================ ${name} ================================"
    cat "$logs/$name.log"
    if [ "${status[$name]}" -ne 0 ] && [ "$first_failure" -eq 0 ]; then
        first_failure=${status[$name]}
    fi
done

echo
echo "::: test layers side by side, where the time went (wall clock from the start)"
for name in "${names[@]}"; do
    printf '  %-14s %5ss  %s\n' "$name" "${seconds[$name]}" \
        "$([ "${status[$name]}" -eq 0 ] && echo ok || echo "FAILED (exit ${status[$name]})")"
done
printf '  %-14s %5ss\n' "all" "$((SECONDS - started))"
rm -rf "$logs"
exit "$first_failure"
