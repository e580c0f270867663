"""Encryption at rest, seen from inside the dovecot container: every mailbox's mode, and whether
the probe message that `check` just delivered lies encrypted on the mail volume."""

from __future__ import annotations

from collections.abc import Callable

from mailstack.check.inside import Ran, project_services, run_in
from mailstack.check.results import Result, failed, passed, warned
from mailstack.remote import Shell
from mailstack.render.dovecot import MAIL_ROOT, mail_home
from mailstack.site.encryption import MODES, mode_of
from mailstack.site.models import Site

MODES_PROBE = "encryption modes"
DISK_PROBE = "probe message at rest"
# mail_crypt's file header (Dovecot's istream-decrypt: "CRYPTED\x03\x07").
MAGIC = "CRYPTED"


def modes_result(site: Site) -> Result:
    """Which mailboxes store mail under which mode (encryption, mailboxes[].encryption)."""
    by_mode: dict[str, list[str]] = {mode: [] for mode in MODES}
    for mailbox in site.mailboxes:
        by_mode[mode_of(site, mailbox.address)].append(mailbox.address)
    for shared in site.shared_mailboxes:
        by_mode[shared.encryption].append(shared.address)
    # The site key is the rule: counted; per_user and none are the exceptions: named.
    parts = [f"site key: {len(by_mode['site'])} mailbox(es)"] if by_mode["site"] else []
    parts += [f"{mode}: {', '.join(by_mode[mode])}" for mode in ("per_user", "none") if by_mode[mode]]
    reason = "; ".join(parts) or "no mailboxes"
    if by_mode["none"]:
        return warned(MODES_PROBE, reason, "set encryption: site (or per_user) on the mailboxes with none")
    return passed(MODES_PROBE, reason)


def disk_checker(shell: Shell, project: str, site: Site) -> Callable[[str], Result]:
    """A probe for the round trip: given the probe message's subject (while it is there), the
    result of looking at the probe mailbox's files from inside dovecot."""

    def check(subject: str) -> Result:
        running = project_services(shell, project)
        if isinstance(running, str):
            return failed(
                DISK_PROBE, f"could not list the containers: {running}", "run check where docker works"
            )
        maildir = f"{MAIL_ROOT}/{mail_home(site.probe_address)}/Maildir"
        heads = run_in(
            shell,
            running.get("dovecot"),
            "sh",
            "-c",
            f'for f in {maildir}/new/* {maildir}/cur/*; do [ -f "$f" ] && head -c 7 "$f" && echo; done; '
            f'grep -rlaF -e "$1" {maildir} || true',
            "sh",
            subject,
        )
        return disk_result(heads)

    return check


def disk_result(ran: Ran) -> Result:
    if not ran.running:
        return failed(DISK_PROBE, "the dovecot container is not running", "`mailstack up` the site")
    if ran.returncode != 0:
        return failed(DISK_PROBE, f"could not read the mail volume: {ran.error}", "see dovecot's logs")
    lines = ran.stdout.split()
    plain = [line for line in lines if line.startswith("/")]
    heads = [line for line in lines if not line.startswith("/")]
    if not heads:
        return failed(DISK_PROBE, "no probe message file on the mail volume", "see dovecot's logs")
    if plain or any(head != MAGIC for head in heads):
        where = ", ".join(plain) or "a message file without mail_crypt's header"
        return failed(
            DISK_PROBE,
            f"the probe message lies in plain on the mail volume ({where})",
            "check dovecot.conf's mail_crypt settings and the mailbox's encryption",
        )
    return passed(
        DISK_PROBE, f"{len(heads)} message file(s) encrypted (mail_crypt); the subject is in no file"
    )
