"""Free space where mail is written, seen from inside the stack: Postfix's queue (the postfix
container's queue volume) and the mailboxes (dovecot's mail volume). On a server both are
directories of the host's disk, so one full disk shows in both.

Postfix refuses new mail with "452 4.3.1 Insufficient system storage" once its queue has less
than 1.5 × message_size_limit free (smtpd's fsspace check; queue_minfree is not set), and
Dovecot cannot store what is queued: the mail waits in the queue, nothing is refused for good.
https://www.postfix.org/postconf.5.html#queue_minfree
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstack import services
from mailstack.check.inside import Ran, project_services, run_in
from mailstack.check.results import Result, failed, passed, warned
from mailstack.remote import Shell
from mailstack.site.models import Site

#: (probe, service, named volume) of each place mail is written.
PLACES = (
    ("disk space: Postfix queue", "postfix", "queue"),
    ("disk space: mail volume", "dovecot", "mail"),
)
#: Warn when less than this share of the filesystem is free, or less than WARN_MESSAGES
#: messages of the largest size would fit: a full disk is a matter of hours then.
WARN_SHARE = 0.05
WARN_MESSAGES = 20
KIB = 1024


@dataclass(frozen=True)
class Space:
    size: int  # bytes of the filesystem
    free: int  # bytes an unprivileged process may still write (df's Available)


def mount_path(service: str, volume: str) -> str:
    """Where ``service`` mounts the named ``volume`` (from the service catalogue)."""
    return next(m.target for m in services.service(service).volumes if m.volume == volume)


def parse_df(text: str) -> Space | None:
    """The second line of `df -P -k PATH`: filesystem, 1024-blocks, used, available, …"""
    lines = text.strip().splitlines()
    fields = lines[-1].split() if len(lines) >= 2 else []
    if len(fields) < 4 or not (fields[1].isdigit() and fields[3].isdigit()):
        return None
    return Space(size=int(fields[1]) * KIB, free=int(fields[3]) * KIB)


def needed(site: Site) -> int:
    """Bytes Postfix wants free on its queue before it accepts a message (1.5 × the limit)."""
    return site.limits.message_size * 3 // 2


def mib(size: float) -> str:
    """A size for people: MiB below a GiB, else GiB."""
    return f"{size / 2**20:.1f} MiB" if size < 2**30 else f"{size / 2**30:.1f} GiB"


def space_result(probe: str, service: str, path: str, ran: Ran, site: Site) -> Result:
    if not ran.running:
        return failed(
            probe, f"{service} is not running: its free space was not looked at", "`mailstack up` the site"
        )
    space = parse_df(ran.stdout) if ran.returncode == 0 else None
    if space is None:
        return failed(probe, f"`df {path}` in {service} gave no answer: {ran.error}", f"see {service}'s logs")
    need = needed(site)
    seen = f"{mib(space.free)} free of {mib(space.size)} at {path} in {service}"
    fix = (
        "free space on the host's disk (old images: `docker system prune`, logs, backups); "
        "queued mail is delivered by itself once there is room"
    )
    if space.free < need:
        return failed(
            probe,
            f"disk full: {seen}; Postfix refuses new mail (452 4.3.1) below {mib(need)} and "
            "Dovecot cannot store the queued mail",
            fix,
        )
    if space.free < max(space.size * WARN_SHARE, site.limits.message_size * WARN_MESSAGES):
        return warned(probe, f"disk almost full: {seen}; Postfix refuses mail below {mib(need)}", fix)
    return passed(probe, seen)


def disk_results(shell: Shell, project: str, site: Site) -> list[Result]:
    """One result per place mail is written: pass, warn (almost full) or fail (disk full)."""
    running = project_services(shell, project)
    results = []
    for probe, service, volume in PLACES:
        path = mount_path(service, volume)
        if isinstance(running, str):
            results.append(
                failed(
                    probe,
                    f"could not list the containers of {project}: {running}",
                    "run check where docker works",
                )
            )
            continue
        ran = run_in(shell, running.get(service), "df", "-P", "-k", path)
        results.append(space_result(probe, service, path, ran, site))
    return results
