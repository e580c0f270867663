"""A second, smaller stack for the hardening tests, started in the background.

It is the fixture site with its own id and ports, `tls.profile: modern` and the default
per-client limits (the session stack raises them for its many loopback clients). Starting
it takes as long as the session stack's first start; a thread brings it up while the
other hardening tests run against the session stack.
"""

from __future__ import annotations

import re
import secrets
import sys
import threading
from pathlib import Path

from mailstack import engine
from mailstack.errors import UserError
from mailstack.site.loader import load_site
from mailstack.site.models import STANDARD_PORTS
from tests.integration.ports import free_ports
from tests.integration.stack import SITE_FIXTURE, Stack

UP_TIMEOUT = 240.0


def side_site_text() -> str:
    """The fixture site as `itest-modern-<random>`: other ports, modern TLS, default client limits."""
    text = SITE_FIXTURE.read_text()
    # A site id of its own, so that two runs on one engine never meet.
    text = re.sub(r"^site: itest$", f"site: itest-modern-{secrets.token_hex(3)}", text, flags=re.M)
    ports = iter(free_ports(len(STANDARD_PORTS)))
    protocols = "|".join(STANDARD_PORTS)
    text = re.sub(
        rf"^(    (?:{protocols})): \d+$", lambda m: f"{m.group(1)}: {next(ports)}", text, flags=re.M
    )
    text, tls = re.subn(
        r"^tls:\n  mode: selfsigned\n", "tls:\n  mode: selfsigned\n  profile: modern\n", text, flags=re.M
    )
    text, limits = re.subn(r"^  clients:\n(?:    .*\n)+", "", text, flags=re.M)
    assert tls == 1, "the fixture site no longer has tls.mode selfsigned where side_stack expects it"
    assert limits == 1, "the fixture site no longer has limits.clients where side_stack expects it"
    return text


class SideStack:
    """Bring the side stack up in a thread; `get()` waits for it (bounded) and returns it."""

    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        site_path = base / "site.yaml"
        site_path.write_text(side_site_text())
        project = engine.Project(site=load_site(site_path), out_dir=base / "build", state_dir=base / "state")
        self.stack = Stack(site_path=site_path, project=project)
        self.done = threading.Event()
        self.started = False
        self.thread = threading.Thread(target=self._up, name="side-stack-up", daemon=True)

    def start(self) -> SideStack:
        """Start bringing it up (once; later calls do nothing)."""
        if not self.started:
            self.started = True
            self.thread.start()
        return self

    def _up(self) -> None:
        try:
            self.stack.up_result = engine.up(self.stack.project, timeout=UP_TIMEOUT, say=_say)
        except UserError as exc:
            self.stack.up_error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # reported by get(), never lost in the thread
            self.stack.up_error = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def get(self) -> Stack:
        if not self.done.wait(UP_TIMEOUT + 60):
            raise AssertionError(f"the side stack {self.stack.project.name} did not come up in time")
        assert self.stack.up_error is None, f"the side stack failed to come up: {self.stack.up_error}"
        return self.stack

    def stop(self) -> None:
        if self.started:
            self.done.wait(UP_TIMEOUT + 60)
            engine.down(self.stack.project, volumes=True)


def _say(text: str) -> None:
    print(f"[side stack up] {text}", file=sys.stderr)
