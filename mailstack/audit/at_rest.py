"""Encryption at rest on the mail volume: every stored message file, counted per mailbox as
encrypted (mail_crypt's header) or plain, against the mode the description gives it."""

from __future__ import annotations

import subprocess
from collections import Counter
from typing import Any

from mailstack.audit.report import Item
from mailstack.remote import RemoteError, Shell
from mailstack.render.dovecot import mail_home
from mailstack.site.encryption import mode_of
from mailstack.site.models import Site

SOURCE = "issue #15; https://doc.dovecot.org/2.4.1/core/plugins/mail_crypt.html"
# One line per message file: "enc <domain>/<user>" or "plain <domain>/<user>".
_SCAN = (
    "find /var/vmail -type f \\( -path '*/Maildir/cur/*' -o -path '*/Maildir/new/*' \\) "
    "-exec sh -c 'for f; do d=${f#/var/vmail/}; d=${d%%/Maildir/*}; "
    'if [ "$(head -c 7 "$f")" = CRYPTED ]; then echo "enc $d"; else echo "plain $d"; fi; done\' sh {} +'
)


def at_rest_item(shell: Shell, containers: dict[str, dict[str, Any]], site: Site) -> Item:
    title = "stored mail is encrypted as described"
    dovecot = containers.get("dovecot")
    if dovecot is None:
        return Item("mail.at_rest", title, "skip", "no dovecot container runs", SOURCE)
    try:
        run = shell.run("docker", "exec", dovecot["Id"], "sh", "-c", _SCAN, timeout=600)
    except (RemoteError, subprocess.TimeoutExpired) as exc:
        return Item("mail.at_rest", title, "fail", f"could not scan the mail volume: {exc}", SOURCE)
    if run.returncode != 0:
        return Item("mail.at_rest", title, "fail", f"scan failed: {run.stderr.strip()[-300:]}", SOURCE)
    pairs = (line.partition(" ") for line in run.stdout.splitlines())
    return judge(Counter((kind, box) for kind, _, box in pairs if box), site)


def judge(files: Counter[tuple[str, str]], site: Site) -> Item:
    """``files``: (enc|plain, domain/user) → message files; plain files of a mailbox whose mode
    encrypts fail (they were written before encryption was on, or it does not work)."""
    modes = {mail_home(m.address): mode_of(site, m.address) for m in site.mailboxes}
    modes |= {mail_home(s.address): s.encryption for s in site.shared_mailboxes}
    modes[mail_home(site.probe_address)] = "site"
    encrypted = sum(n for (kind, _), n in files.items() if kind == "enc")
    plain = {
        box: n for (kind, box), n in files.items() if kind == "plain" and modes.get(box, "none") != "none"
    }
    # Mail of addresses the description no longer has stays (removing a mailbox never deletes
    # its mail); its mode is unknown now, so it is named, not judged.
    gone = sorted({box for (_, box), _n in files.items() if box not in modes})
    detail = f"{encrypted} message files encrypted" + (
        f"; not judged, no longer in the description: {', '.join(gone)}" if gone else ""
    )
    if plain:
        listed = ", ".join(f"{box}: {n}" for box, n in sorted(plain.items()))
        return Item(
            "mail.at_rest",
            "stored mail is encrypted as described",
            "fail",
            f"{detail}; plain files of mailboxes that encrypt ({listed}): stored before encryption was on",
            SOURCE,
        )
    return Item("mail.at_rest", "stored mail is encrypted as described", "pass", detail, SOURCE)
