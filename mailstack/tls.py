"""`mailstack tls`: the certificates the services are given, here or on a deployed host, and
an ACME attempt on demand (tls.mode acme)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailstack.check.certificate import state_reader, summary
from mailstack.engine import EngineError, Project
from mailstack.errors import UserError
from mailstack.remote import HostPaths, Shell
from mailstack.services import ACME_CONFIG_DIR
from mailstack.site.models import Host
from mailstack.state import State

# An attempt orders, validates and downloads up to two certificates.
RENEW_TIMEOUT = 900


@dataclass(frozen=True)
class Issued:
    """One certificate the acme service holds, as its report gives it."""

    kind: str
    serial: str
    issuer: str
    not_after: str
    key: str


@dataclass(frozen=True)
class Renewal:
    ok: bool
    certificates: list[Issued]
    error: str | None  # the last attempt's, when it failed
    reasons: str | None  # what was due, when something was


def status(project: Project, host: Host | None = None, site_dir: Path = Path()) -> list[str]:
    """What is served and, with acme, what the acme service is doing; one line each."""
    read = state_reader(project.site, State(project.state_dir, write=False), host, site_dir)
    return summary(project.site, read)


def renew(project: Project, site_file: Path, *, force: bool, host: Host | None = None) -> Renewal:
    """One attempt of the running acme service now (it ignores its back-off), here or on
    ``host`` over SSH."""
    if project.site.tls.mode != "acme":
        raise UserError(f"{site_file}: tls.mode is {project.site.tls.mode}; only tls.mode acme renews")
    command = ["exec", "-T", "acme", "mailstack-acme", "renew", f"{ACME_CONFIG_DIR}/acme.toml"]
    command += ["--force"] if force else []
    if host is None:
        run = project.compose(*command, timeout=RENEW_TIMEOUT)
    else:
        shell = Shell(host, site_file.resolve().parent)
        where = ["--project-name", project.name, "--file", str(HostPaths(project.site.site).compose_file)]
        run = shell.run("docker", "compose", *where, *command, timeout=RENEW_TIMEOUT)
    try:
        report = json.loads(run.stdout)
    except ValueError:
        detail = run.stderr.strip().splitlines()[-1:] or ["no output"]
        raise EngineError(f"the acme service did not answer (is the stack up?): {detail[0]}") from None
    return _renewal(run.returncode == 0 and bool(report.get("ok")), report)


def _renewal(ok: bool, report: dict[str, Any]) -> Renewal:
    last = report.get("last_attempt") or {}
    issued = [
        Issued(kind, *(str(entry.get(k)) for k in ("serial", "issuer", "not_after", "key")))
        for kind, entry in sorted((report.get("certificates") or {}).items())
    ]
    return Renewal(ok, issued, last.get("error") or None, last.get("reasons") or None)
