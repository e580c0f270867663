"""A backup made here, restored onto a server (issue #15, 3).

The site (write_site's, with `backup:` to a path on the server) runs here first, under the same
site id and state but on free 127.0.0.1 ports with a repository of its own: mail in two folders
with flags, a Sieve script, `mailstack backup`, `down --volumes`. Then `mailstack deploy` to a
cloud server (`--images load`, packages from its cache) installs the backup timer; the local
repository is copied to the server's repository path; the stack there is taken down with its
volumes and `mailstack restore --host` brings the local mail back there: every message (UID,
flags, text), folder and the Sieve script, compared with doveadm on both sides. Then the
host's timer service makes a backup of its own, and `mailstack backup --host` one more.

Runs a local stack and a server one after the other: about 10 minutes.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import subprocess

import pytest

from tests.e2e.deployment import MAILSTACK, Deployment, assert_ok
from tests.e2e.harness import ServerFactory, ansible_env, run
from tests.integration.ports import free_ports

pytestmark = pytest.mark.e2e

IMAPS = 993
SIEVE = 'require ["fileinto"];\nif header :contains "subject" "[kept]" { fileinto "Archive"; }\n'
# Inside the dovecot container: two folders, messages with flags, a Sieve script.
FILL = r"""
set -eu
for user in "$@"; do
  doveadm mailbox create -u "$user" Archive
  for i in 1 2 3 4 5; do
    printf 'From: e2e@example.test\nTo: %s\nSubject: kept %s\nMessage-ID: <%s.%s@e2e>\n\nbody %s of %s\n' \
      "$user" "$i" "$i" "$user" "$i" "$user" | doveadm save -u "$user"
  done
  printf 'Subject: archived\n\nold\n' | doveadm save -u "$user" -m Archive
  doveadm flags add -u "$user" '\Seen \Flagged' mailbox INBOX uid 2
  doveadm flags add -u "$user" '$Important' mailbox INBOX uid 3
done
"""
HOME = "/var/vmail/bk.test/ann"
PUT_SIEVE = (
    f"mkdir -p {HOME}/sieve && cat >{HOME}/sieve/kept.sieve && ln -sf sieve/kept.sieve {HOME}/.dovecot.sieve"
)
FETCH = "doveadm fetch -u {user} 'mailbox uid flags text' all"


def fetch(user: str) -> list[str]:
    return ["sh", "-c", FETCH.format(user=shlex.quote(user))]


def doveadm_view(compose: list[str], users: list[str]) -> dict[str, str]:
    """Each user's messages as doveadm prints them: folder, UID, flags and the whole text."""
    return {user: run([*compose, "exec", "-T", "dovecot", *fetch(user)]).stdout for user in users}


def test_a_backup_made_here_restores_onto_the_server(
    server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = server_factory.start(ports=(IMAPS,), kind="cloud")
    site_id = f"bk{secrets.token_hex(3)}"
    site = Deployment(
        server=server,
        workdir=tmp_path_factory.mktemp("backup-e2e"),
        site_id=site_id,
        domain="bk.test",
        packages="cache",
    )
    site.write_site(["ann", "ben"])
    users = [site.address("ann"), site.address("ben")]
    data = json.loads(site.site_path.read_text())
    data["backup"] = {"repository": f"/srv/backup/{site_id}", "schedule": "*-1-1 00:00"}
    site.site_path.write_text(json.dumps(data, indent=2) + "\n")

    # Here: the same site id and state, on ports of its own, to a repository of its own.
    local_dir = site.workdir / "local"
    local_dir.mkdir()
    here = dict(data)
    ports = data["network"]["ports"]
    here["network"] = {"bind": "127.0.0.1", "ports": dict(zip(ports, free_ports(len(ports)), strict=True))}
    here["tls"] = {"mode": "selfsigned"}
    here["backup"] = {"repository": str(local_dir / "repository"), "schedule": "*-1-1 00:00"}
    here.pop("hosts")
    local_site = local_dir / "site.yaml"
    local_site.write_text(json.dumps(here, indent=2) + "\n")
    where = ["-o", str(local_dir / "build"), "--state", str(site.state_dir)]
    compose = [
        "docker",
        "compose",
        "--project-name",
        f"mailstack-{site_id}",
        "--file",
        str(local_dir / "build" / "compose.yaml"),
    ]
    try:
        run([MAILSTACK, "up", str(local_site), "--no-check", *where], timeout=900)
        run([*compose, "exec", "-T", "dovecot", "sh", "-c", FILL, "fill", *users], timeout=120)
        # As vmail: root in the dovecot container has no DAC_OVERRIDE over the mail homes.
        run([*compose, "exec", "-T", "--user=vmail", "dovecot", "sh", "-c", PUT_SIEVE], input=SIEVE)
        before = doveadm_view(compose, users)
        assert all("kept 5" in text for text in before.values()), before
        run([MAILSTACK, "backup", str(local_site), *where], timeout=900)
    finally:
        run([MAILSTACK, "down", str(local_site), "--volumes", *where], check=False, timeout=300)

    # There: deploy (the timer), the repository copied over, a fresh stack, the restore.
    assert_ok(site.deploy("--images", "load", "--no-live-check"), server.name)
    site.discard_image_archives()
    assert site.on_server(f"systemctl is-enabled mailstack-backup-{site_id}.timer").strip() == "enabled"
    site.on_server(f"mkdir -p /srv/backup/{site_id}")
    # The repository as it is, copied (a path repository's backups move with its directory).
    with subprocess.Popen(
        ["tar", "-C", str(local_dir / "repository"), "-cf", "-", "."], stdout=subprocess.PIPE
    ) as pack:
        subprocess.run(
            ["docker", "exec", "-i", server.name, "tar", "-C", f"/srv/backup/{site_id}", "-xf", "-"],
            stdin=pack.stdout,
            check=True,
        )
    assert pack.returncode == 0
    refused = run(
        [MAILSTACK, "restore", str(site.site_path), "--host", server.name],
        check=False,
        env=ansible_env(),
        cwd=site.workdir,
    )
    assert refused.returncode == 1, refused.stdout
    assert "down --volumes` on " in refused.stderr, refused.stderr
    live = f"{site.host_root}/live"
    site.on_server(
        f"docker compose --project-name {site.project} --project-directory {live} down --volumes", timeout=300
    )
    run(
        [MAILSTACK, "restore", str(site.site_path), "--host", server.name],
        env=ansible_env(),
        cwd=site.workdir,
        timeout=1200,
    )

    there = [
        "docker",
        "compose",
        "--project-name",
        site.project,
        "--project-directory",
        f"{site.host_root}/live",
    ]
    after = {
        user: site.on_server(shlex.join([*there, "exec", "-T", "dovecot", *fetch(user)])) for user in users
    }
    assert after == before
    assert (
        site.on_server(shlex.join([*there, "exec", "-T", "dovecot", "cat", f"{HOME}/sieve/kept.sieve"]))
        == SIEVE
    )

    # The host's timer service runs a backup of its own (the container only waits for it).
    site.on_server(f"systemctl start mailstack-backup-{site_id}.service", timeout=900)
    # And the operator's, over SSH, with restic's output shown as it goes.
    now = run(
        [MAILSTACK, "backup", str(site.site_path), "--host", server.name],
        env=ansible_env(),
        cwd=site.workdir,
        timeout=900,
    ).stdout
    assert "Added to the repository" in now, now
    saved = re.search(r"^backup ([0-9a-f]{8}) saved in \d+ s", now, re.M)
    assert saved, now
    listed = run(
        [MAILSTACK, "backup", "list", str(site.site_path), "--host", server.name],
        env=ansible_env(),
        cwd=site.workdir,
    ).stdout
    # forget --prune keeps the oldest and the last of the day: the local backup and this one
    # (the timer's, between them, is forgotten).
    runs = [line.split()[0] for line in listed.splitlines() if "files" in line]
    assert len(runs) == 2, listed
    assert runs[-1] == saved.group(1), listed
    status = run(
        [MAILSTACK, "check", str(site.site_path), "--host", server.name, "--json"],
        check=False,
        env=ansible_env(),
        cwd=site.workdir,
    ).stdout
    backup = next(r for r in json.loads(status)["results"] if r["probe"] == "backup")
    assert backup["status"] == "pass", backup
