"""Backup and restore time, repository size and the backup job's memory, per 1 000 messages.

    .venv/bin/python bench/backup.py [--messages 1000] [--size 12]

Renders a copy of examples/demo.yaml under a site id and ports of its own, with `backup:` to
a directory of its own, and `mailstack up`s it. Puts ``--messages`` messages of about
``--size`` KiB (text, and a random attachment that neither compresses nor deduplicates)
into alice's INBOX with `doveadm save`, then measures: a first `mailstack backup` (all new),
a second one after 10 % more messages, the repository's size, `mailstack down --volumes` and
`mailstack restore` (which includes the `up` of the restored stack), and the backup
container's peak memory during the backups (its cgroup's max_usage_in_bytes, reset before).
Prints a table and writes bench/results/backup.json; tears the stack down.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_footprint import ROOT  # the bench scripts share the demo copy
from stack_footprint import site_copy as demo_copy

MAILSTACK = Path(sys.executable).with_name("mailstack")
USER = "alice@example.test"


def site_copy(directory: Path) -> Path:
    """stack_footprint's copy of the demo site, with a backup to a path in ``directory``."""
    target = demo_copy(directory)
    backup = f"\nbackup:\n  repository: {directory / 'repository'}\n  schedule: '*-1-1 00:00'\n"
    target.write_text(target.read_text() + backup)
    return target


def site_id(site: Path) -> str:
    match = re.search(r"^site: (\S+)$", site.read_text(), re.M)
    assert match is not None  # noqa: S101 - our own copy
    return match.group(1)


def mailstack(*args: str) -> float:
    """Seconds `mailstack ARGS` took; exit with its output when it fails."""
    started = time.monotonic()
    run = subprocess.run([str(MAILSTACK), *args], capture_output=True, text=True, check=False, timeout=7200)
    if run.returncode != 0:
        raise SystemExit(f"mailstack {' '.join(args)} failed: {run.stdout[-1500:]}{run.stderr[-1500:]}")
    return time.monotonic() - started


def compose(site: Path, *args: str) -> str:
    name = site_id(site)
    project = [
        "--project-name",
        f"mailstack-{name}",
        "--file",
        str(site.parent / "build" / name / "compose.yaml"),
    ]
    run = subprocess.run(["docker", "compose", *project, *args], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise SystemExit(f"compose {' '.join(args[:3])} failed: {run.stderr[-1500:]}")
    return run.stdout


# Inside the dovecot container: each message some text and a random attachment, saved as
# Dovecot saves delivered mail (doveadm save: the index and the UID list as LMTP keeps them).
FILL = r"""
set -eu
i=0
while [ "$i" -lt "$1" ]; do
  i=$((i + 1))
  {
    printf 'From: bench@example.test\nTo: %s\nSubject: bench %s %s\n' "$3" "$4" "$i"
    printf 'Message-ID: <%s.%s@bench>\n' "$4" "$i"
    printf 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n'
    yes 'The quick brown fox jumps over the lazy dog; the backup counts.' | head -n "$(( $2 * 5 ))"
    printf '\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n'
    head -c "$(( $2 * 512 ))" /dev/urandom | base64
    printf '\n--b--\n'
  } | doveadm save -u "$3"
done
"""


def fill(site: Path, count: int, size_kib: int, tag: str) -> float:
    started = time.monotonic()
    compose(site, "exec", "-T", "dovecot", "sh", "-c", FILL, "fill", str(count), str(size_kib), USER, tag)
    return time.monotonic() - started


def cgroup(site: Path) -> Path:
    cid = compose(site, "ps", "-q", "backup").strip()
    return Path(f"/sys/fs/cgroup/memory/docker/{cid}")


def peak_reset(site: Path) -> None:
    path = cgroup(site) / "memory.max_usage_in_bytes"
    if path.exists():
        path.write_text("0")


def peak_mib(site: Path) -> float | None:
    path = cgroup(site) / "memory.max_usage_in_bytes"
    return int(path.read_text()) / 2**20 if path.exists() else None


def du_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=12, help="KiB per message, about")
    options = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    site = site_copy(directory)
    where = ["-o", str(directory / "build" / site_id(site)), "--state", str(directory / "state")]
    out: dict[str, float | int | None] = {"messages": options.messages, "size_kib": options.size}
    try:
        out["up_s"] = mailstack("up", str(site), "--no-check", *where)
        out["fill_s"] = fill(site, options.messages, options.size, "a")
        mail = compose(site, "exec", "-T", "dovecot", "du", "-sk", "/var/vmail").split()[0]
        out["mail_volume_mib"] = int(mail) / 1024
        peak_reset(site)
        out["first_backup_s"] = mailstack("backup", str(site), *where)
        out["first_backup_peak_mib"] = peak_mib(site)
        out["repository_after_first_mib"] = du_mib(directory / "repository")
        fill(site, options.messages // 10, options.size, "b")
        peak_reset(site)
        out["second_backup_s"] = mailstack("backup", str(site), *where)
        out["second_backup_peak_mib"] = peak_mib(site)
        out["repository_mib"] = du_mib(directory / "repository")
        started = time.monotonic()
        subprocess.run(
            [str(MAILSTACK), "backup", "check", str(site), *where], capture_output=True, check=True
        )
        out["check_read_data_s"] = time.monotonic() - started
        mailstack("down", str(site), "--volumes", *where)
        out["restore_with_up_s"] = mailstack("restore", str(site), *where)
        count = compose(
            site, "exec", "-T", "dovecot", "doveadm", "mailbox", "status", "-u", USER, "messages", "INBOX"
        )
        out["messages_after_restore"] = int(count.split("=")[1])
    finally:
        subprocess.run(
            [str(MAILSTACK), "down", str(site), "--volumes", *where], capture_output=True, check=False
        )
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "backup.json").write_text(json.dumps(out, indent=2) + "\n")
    per = 1000 / options.messages
    for key, value in out.items():
        if not isinstance(value, float):
            print(f"{key:<28} {value}")
            continue
        scaled = "peak" not in key and key != "up_s"
        print(f"{key:<28} {value:8.1f}" + (f"   ({value * per:.1f} per 1 000 messages)" if scaled else ""))


if __name__ == "__main__":
    main()
