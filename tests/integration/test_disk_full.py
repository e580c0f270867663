"""Issue #16, 3: the disk that holds the mail fills up. Senders get 4xx (never 5xx), nothing
bounces, nothing accepted is lost, delivery resumes by itself once there is room again, and
`mailstack check` names the full disk while it is full.

On a server the mail volume and Postfix's queue are directories of the host's one disk. The
stack here gets the same, small: before `up`, the project's `mail` and `queue` volumes are
created (Docker's local driver, bind mounts) on directories of one size-limited tmpfs of the
test's own. The product is unchanged: compose finds its volumes already there (it warns that
it did not create them) and Docker copies the images' directories into them, as always.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mailstack import engine
from mailstack.check.disk import mount_path
from mailstack.site.loader import load_site
from tests.integration.conftest import UP_TIMEOUT, site_copy, start_stack
from tests.integration.stack import (
    ACTIVE,
    BOB,
    EXTERNAL_SENDER,
    SITE_FIXTURE,
    Stack,
    filler,
    make_message,
    token,
    wait_until,
)
from tests.integration.traffic import SENDERS, Traffic, delivered, send_one, wait_for_copies

pytestmark = [pytest.mark.integration, pytest.mark.faults]

#: The disk: room for the stack's queue and mailboxes, the test's mail, and little else.
DISK = "48m"
VOLUMES = ("mail", "queue")
#: The messages are this big: a few dozen fill what Postfix keeps free (1.5 × 512K).
MESSAGE_SIZE = 24 * 1024
#: While the disk is full, each client goes on this long (seconds), to see the refusals.
FULL_FOR = 8.0
#: After the filler is gone, the postfix container's requeue-local (woken every 10 s) retries
#: what Dovecot deferred with a 4xx (451 4.2.0, its storage failed) once a minute, rather than
#: on Postfix's backoff (up to about 10 minutes). This much more for the deliveries themselves.
RESUME_WITHIN = 60.0 + 10.0 + 60.0


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The integration site, up, with its mail and queue volumes on one 48 MiB filesystem."""
    base = tmp_path_factory.mktemp("disk-full")
    site_path = base / "site.yaml"
    site_copy(SITE_FIXTURE, site_path, bind=["127.0.0.1"])
    project = engine.project_name(load_site(site_path))
    disk = base / "disk"
    disk.mkdir()
    _run("mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0755", "tmpfs", str(disk))
    volumes = [f"{project}_{name}" for name in VOLUMES]
    try:
        for name, volume in zip(VOLUMES, volumes, strict=True):
            (disk / name).mkdir()
            _run(
                "docker", "volume", "create", "--driver", "local",
                "--opt", "type=none", "--opt", "o=bind", "--opt", f"device={disk / name}", volume,
            )  # fmt: skip
        stack = start_stack(site_path, timeout=UP_TIMEOUT)
        ACTIVE.append(stack)
        try:
            yield stack
        finally:
            ACTIVE.remove(stack)
            if os.environ.get("MAILSTACK_ITEST_KEEP") != "1":
                engine.down(stack.project, volumes=True)
    finally:
        if os.environ.get("MAILSTACK_ITEST_KEEP") != "1":
            subprocess.run(["docker", "volume", "rm", "--force", *volumes], check=False, timeout=60)
            subprocess.run(["umount", str(disk)], check=False, timeout=60)


def free_bytes(stack: Stack) -> int:
    run = stack.exec("dovecot", "df", "-P", "-k", mount_path("dovecot", "mail"))
    return int(run.stdout.splitlines()[-1].split()[3]) * 1024


FILLER = f"{mount_path('dovecot', 'mail')}/filler"


def fill(stack: Stack) -> None:
    """Write zeros until the filesystem is full (dd ends with "No space left on device")."""
    # As vmail, whom the mail volume belongs to (root in the container lacks DAC_OVERRIDE).
    as_vmail = ("exec", "-T", "--user", "vmail", "dovecot")
    run = stack.compose(*as_vmail, "dd", "if=/dev/zero", f"of={FILLER}", "bs=64k", timeout=120)
    assert "No space left" in run.stderr, run.stderr


def test_a_full_disk_refuses_with_4xx_bounces_nothing_and_delivery_resumes_by_itself(
    small_disk: Stack,
) -> None:
    stack = small_disk
    # The test proves something only if the stack writes to the small disk, both volumes.
    sizes = {
        service: stack.exec(service, "df", "-P", "-k", mount_path(service, volume)).stdout.splitlines()[-1]
        for service, volume in (("postfix", "queue"), ("dovecot", "mail"))
    }
    assert all(int(line.split()[1]) * 1024 <= 48 * 2**20 for line in sizes.values()), sizes
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # The stack delivers on this disk before it fills.
    first = token("disk not yet full")
    stack.deliver(make_message(EXTERNAL_SENDER, BOB, first, filler(MESSAGE_SIZE)))
    stack.wait_for_message(BOB, first)
    traffic = Traffic(token("disk full"))
    full = threading.Event()
    over = threading.Event()

    def send(sender: int) -> None:
        n = 0
        while not over.is_set():
            subject = f"{traffic.prefix} {sender}-{n}"
            outcome = send_one(stack, BOB, subject, body=filler(MESSAGE_SIZE))
            traffic.record(subject, outcome)
            n += 1
            time.sleep(0.3 if outcome != "250" else 0.05)

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(SENDERS)]
    for thread in threads:
        thread.start()
    try:
        wait_until("10 accepted messages", lambda: len(traffic.accepted) >= 10, timeout=60)
        fill(stack)  # while mail flows: some of it is queued, not yet stored
        full.set()
        filled = time.monotonic()
        wait_until(
            "a refusal after the disk filled",
            lambda: sum(traffic.refused.values()) > 0,
            timeout=30,
            detail=traffic.summary(),
        )
        time.sleep(FULL_FOR)
        report = stack.cli("check", code=1)
        queued = stack.queue()
    finally:
        over.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a sender hung"
    disk_lines = [line for line in report.splitlines() if "disk full" in line]
    assert disk_lines, f"`mailstack check` does not name the full disk:\n{report}"
    permanent = {code: n for code, n in traffic.refused.items() if code.startswith("5")}
    assert not permanent, f"permanent refusals while the disk was full: {permanent}"
    assert any(code.startswith("4") for code in traffic.refused), traffic.summary()
    # Freed: delivery resumes by itself (nobody flushes the queue), within a minute or two.
    stack.compose("exec", "-T", "--user", "vmail", "dovecot", "rm", "-f", FILLER)
    freed = time.monotonic()
    accepted = set(traffic.accepted)
    try:
        wait_for_copies(
            lambda: stack.subjects(BOB),
            traffic.prefix,
            accepted,
            timeout=RESUME_WITHIN,
            what=f"all {len(accepted)} accepted messages in bob's INBOX after the disk was freed",
        )
    finally:
        copies = delivered(stack, BOB, traffic.prefix)
        stack.notes.append(
            f"disk full: {traffic.summary()}; {len(queued)} queued while full; delivered "
            f"{len(copies)} ({sum(copies.values())} copies) {time.monotonic() - freed:.0f}s after the "
            f"disk was freed (bound {RESUME_WITHIN:.0f}s; freed {freed - filled:.0f}s after it "
            f"filled); check: {disk_lines[:1]}"
        )
    missing = accepted - set(copies)
    assert not missing, f"lost: {sorted(missing)}"
    assert not [s for s, n in copies.items() if n > 1], f"delivered twice: {copies}"
    # Nothing bounced: no delivery ended as bounced, no notice to the sender was made.
    log = stack.compose("logs", "--no-color", "--since", since, "postfix").stdout.splitlines()
    bounced = [line for line in log if re.search(r"status=bounced|sender non-delivery notification", line)]
    retried = [line for line in log if "requeue-local" in line and "deferred by LMTP" in line]
    assert retried, "requeue-local did not retry what Dovecot deferred: " + repr(log[-20:])
    assert not bounced, bounced[:5]
    assert not [m for m in stack.queue() if m.get("sender") in ("", "MAILER-DAEMON")], stack.queue()
