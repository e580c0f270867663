"""What encryption at rest costs: delivery throughput and IMAP read time per mode, in one run.

    .venv/bin/python bench/encryption.py [--rounds 3] [--messages 300] [--senders 4] [--keep]

Brings up a copy of examples/demo.yaml (offline, its own site id and ports, client limits
lifted) with three mailboxes: one per encryption mode (site, per_user, none); the per_user
key is made by `mailstack password`. Each round delivers ``--messages`` messages of 4 KB on
port 25 from ``--senders`` clients to each mailbox in turn (the order rotates every round, so
that drift on this shared machine hits every mode alike), timed until Dovecot counts them
all; then fetches every body of each mailbox over IMAP. Prints medians and the ratios to
`none`, writes bench/results/encryption.json, and takes the stack down (unless --keep).
"""

from __future__ import annotations

import argparse
import imaplib
import json
import re
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_footprint import ROOT, loaded_site

MAILSTACK = Path(sys.executable).with_name("mailstack")
PASSWORD = "bench-Paßwort-1"  # noqa: S105 - the bench mailboxes' own
MODES = ("site", "per_user", "none")
BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 70)[:4000]


def site_file(directory: Path, recipient: str, password_hash: str) -> Path:
    boxes = "".join(
        f'  - address: {mode.replace("_", "")}@example.test\n    password_hash: "{password_hash}"\n'
        f"    encryption: {mode}\n"
        for mode in MODES
    )
    site_id = f"bench-crypt-{directory.name[-6:].lower().replace('_', '0')}"
    return loaded_site(
        directory,
        site_id,
        connections=200,
        mailboxes=boxes,
        extra=f"\nencryption:\n  recovery: {recipient}\n",
    )


def mailstack(*args: str, stdin: str = "") -> str:
    run = subprocess.run([str(MAILSTACK), *args], input=stdin, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise SystemExit(f"mailstack {' '.join(args)} failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return run.stdout


def ports_of(path: Path) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r"^    ([a-z0-9]+): (\d+)$", path.read_text(), flags=re.M)}


def count(project: str, address: str) -> int:
    run = subprocess.run(
        ["docker", "compose", "-p", project, "exec", "-T", "dovecot", "doveadm", "-f", "flow",
         "mailbox", "status", "-u", address, "messages", "INBOX"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    match = re.search(r"messages=(\d+)", run.stdout)
    return int(match[1]) if match else 0


def deliver(port: int, address: str, messages: int, senders: int) -> None:
    def send(share: int) -> None:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
        smtp.ehlo("bench.sender.test")
        for n in range(share):
            message = EmailMessage()
            message["From"], message["To"] = "bench@sender.test", address
            message["Subject"] = f"bench {n}"
            message.set_content(BODY)
            smtp.send_message(message)
        smtp.quit()

    shares = [messages // senders + (1 if i < messages % senders else 0) for i in range(senders)]
    threads = [threading.Thread(target=send, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def read_all(port: int, address: str) -> tuple[float, int]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context)
    # AUTHENTICATE PLAIN: imaplib's LOGIN sends ASCII only.
    imap.authenticate("PLAIN", lambda _: f"\0{address}\0{PASSWORD}".encode())
    imap.select("INBOX", readonly=True)
    started = time.monotonic()
    _, data = imap.fetch("1:*", "(BODY.PEEK[])")
    seconds = time.monotonic() - started
    imap.logout()
    return seconds, sum(1 for item in data if isinstance(item, tuple))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    from mailstack.passwords import hash_password
    from mailstack.state.mailcrypt import new_recovery_identity

    directory = Path(tempfile.mkdtemp(prefix="bench-crypt-"))
    _, recipient = new_recovery_identity()
    path = site_file(directory, recipient, hash_password(PASSWORD))
    project = "mailstack-" + re.search(r"^site: (\S+)$", path.read_text(), re.M)[1]  # type: ignore[index]
    ports = ports_of(path)
    state, out = directory / "state", directory / "build"
    mailstack("password", str(path), "peruser@example.test", "--state", str(state), "--output", str(out),
              stdin=f"{PASSWORD}\n{PASSWORD}\n")  # fmt: skip
    started = time.monotonic()
    mailstack("up", str(path), "--state", str(state), "--output", str(out), "--no-check", "--timeout", "600")
    print(f"up: {time.monotonic() - started:.1f} s", file=sys.stderr)
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for round_ in range(args.rounds):
            order = MODES[round_ % 3 :] + MODES[: round_ % 3]
            for mode in order:
                address = f"{mode.replace('_', '')}@example.test"
                before = count(project, address)
                started = time.monotonic()
                deliver(ports["smtp"], address, args.messages, args.senders)
                deadline = started + 600
                while count(project, address) < before + args.messages and time.monotonic() < deadline:
                    time.sleep(0.2)
                seconds = time.monotonic() - started
                rates[mode].append(args.messages / seconds)
                print(f"round {round_ + 1} {mode}: {args.messages / seconds:.1f} msg/s", file=sys.stderr)
        reads = {mode: read_all(ports["imaps"], f"{mode.replace('_', '')}@example.test") for mode in MODES}
    finally:
        if not args.keep:
            mailstack("down", str(path), "--state", str(state), "--output", str(out), "--volumes")
    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    result = {
        "rounds": args.rounds, "messages": args.messages, "senders": args.senders,
        "delivery_msg_per_s": rates, "median_msg_per_s": medians,
        "ratio_to_none": {mode: medians[mode] / medians["none"] for mode in MODES},
        "imap_fetch_all_bodies_s": {mode: reads[mode][0] for mode in MODES},
        "imap_messages": {mode: reads[mode][1] for mode in MODES},
    }  # fmt: skip
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "encryption.json").write_text(json.dumps(result, indent=2))
    print("| mode | delivery (median msg/s) | ratio to none | IMAP FETCH of every body |")
    print("|---|---|---|---|")
    for mode in MODES:
        print(
            f"| {mode} | {medians[mode]:.1f} | {medians[mode] / medians['none']:.2f} | "
            f"{reads[mode][0]:.2f} s for {reads[mode][1]} messages |"
        )


if __name__ == "__main__":
    main()
