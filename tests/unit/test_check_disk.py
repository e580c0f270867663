"""`mailstack check`'s disk space probes, without Docker: `df -P -k` as the postfix and dovecot
containers print it, replayed."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

import pytest

from mailstack.check.disk import disk_results, mount_path, needed, parse_df, space_result
from mailstack.check.inside import Ran
from mailstack.remote import Shell
from mailstack.site.loader import parse_site
from mailstack.site.models import Site

pytestmark = pytest.mark.unit

SITE = """
site: disk-a
hostname: mail.a.test
admin_email: admin@a.test
network:
  bind: 127.0.0.1
  ports: {smtp: 2525}
limits:
  message_size: 10M
domains:
  - name: a.test
"""


def site() -> Site:
    return parse_site(SITE)


def df(path: str, size_kib: int, free_kib: int) -> str:
    """coreutils' `df -P -k PATH`."""
    used = size_kib - free_kib
    return (
        "Filesystem     1024-blocks    Used Available Capacity Mounted on\n"
        f"/dev/sda1         {size_kib} {used} {free_kib}      {used * 100 // size_kib}% {path}\n"
    )


def test_the_paths_come_from_the_service_catalogue() -> None:
    assert mount_path("postfix", "queue") == "/var/spool/postfix"
    assert mount_path("dovecot", "mail") == "/var/vmail"


def test_df_is_read_in_bytes_and_garbage_is_no_answer() -> None:
    space = parse_df(df("/var/vmail", 65536, 1024))
    assert space is not None
    assert (space.size, space.free) == (64 * 2**20, 2**20)
    assert parse_df("df: /var/vmail: No such file or directory\n") is None
    assert parse_df("") is None


def test_postfix_needs_one_and_a_half_messages_free() -> None:
    assert needed(site()) == 15 * 2**20


@pytest.mark.parametrize(
    ("free_mib", "status"),
    [(14, "fail"), (16, "warn"), (150, "warn"), (250, "pass")],
)
def test_below_what_postfix_needs_is_a_full_disk_and_earlier_a_warning(free_mib: int, status: str) -> None:
    """10M messages on a 4 GiB disk: fail below 15 MiB, warn below 204.8 MiB (5 % of the
    disk; 20 messages, 200 MiB, is less)."""
    ran = Ran(True, 0, df("/var/vmail", 4 * 2**20, free_mib * 1024))
    result = space_result("disk space: mail volume", "dovecot", "/var/vmail", ran, site())
    assert result.status == status, result
    assert f"{free_mib:.1f} MiB free of 4.0 GiB at /var/vmail in dovecot" in result.reason
    if status == "fail":
        assert result.reason.startswith("disk full: ")
        assert "452 4.3.1" in result.reason
        assert "queued mail is delivered by itself" in result.fix
    if status == "warn":
        assert result.reason.startswith("disk almost full: ")


def test_a_stopped_service_or_a_failing_df_fails_with_the_reason() -> None:
    stopped = space_result("p", "dovecot", "/var/vmail", Ran(running=False), site())
    assert (stopped.status, stopped.reason) == (
        "fail",
        "dovecot is not running: its free space was not looked at",
    )
    broken = space_result("p", "postfix", "/x", Ran(True, 1, "", "df: /x: No such file or directory"), site())
    assert broken.status == "fail"
    assert "No such file or directory" in broken.reason


@dataclass(frozen=True)
class Replay(Shell):
    """Answers `docker ps` and `docker exec <id> df …` from ``answers`` (by container id)."""

    answers: dict[str, str] = field(default_factory=dict)
    asked: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, *argv: str, timeout: float = 0) -> subprocess.CompletedProcess[str]:  # noqa: ARG002 - replayed at once
        self.asked.append(argv)
        key = "ps" if argv[1] == "ps" else argv[2]
        return subprocess.CompletedProcess(list(argv), 0, self.answers[key], "")


def test_both_places_are_probed_in_their_containers() -> None:
    shell = Replay(
        answers={
            "ps": "c1 postfix\nc2 dovecot\n",
            "c1": df("/var/spool/postfix", 4 * 2**20, 1024),
            "c2": df("/var/vmail", 4 * 2**20, 3 * 2**20),
        }
    )
    results = disk_results(shell, "mailstack-disk-a", site())
    assert [(r.probe, r.status) for r in results] == [
        ("disk space: Postfix queue", "fail"),
        ("disk space: mail volume", "pass"),
    ]
    assert shell.asked[1] == ("docker", "exec", "c1", "df", "-P", "-k", "/var/spool/postfix")
    assert shell.asked[2] == ("docker", "exec", "c2", "df", "-P", "-k", "/var/vmail")
