"""How the commands print their typed results."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mailstack import engine
from mailstack.audit import Report
from mailstack.backup import Run
from mailstack.check import CheckReport
from mailstack.deploy import DeployResult
from mailstack.dns import SiteRecords, format_json
from mailstack.errors import UserError
from mailstack.render import Plan
from mailstack.render.writer import Change
from mailstack.site.models import Site
from mailstack.tls import Renewal
from mailstack.zonefile import format_table, format_zone

out = Console(highlight=False, soft_wrap=True)
# Ansible's lines are full of [brackets]: print them as they are, not as rich markup.
plain = functools.partial(out.print, markup=False, emoji=False)


def count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def lines(texts: list[str], indent: str = "") -> None:
    for text in texts:
        out.print(f"{indent}{text}", markup=False)


def plan(result: Plan) -> None:
    verb = "would create" if result.dry_run else "created"
    for item in result.state.created:
        out.print(f"state     {verb} {item}")
    for action in result.actions:
        out.print(f"{action.change.value:<9} {action.path}")
    if result.dry_run:
        out.print(f"dry run: nothing written to {result.out_dir} ({result.summary()})")
    else:
        out.print(f"rendered {result.out_dir} ({result.summary()})")


def records(site: Site, result: SiteRecords, fmt: str) -> None:
    for item in result.state_created:
        typer.echo(f"state     created {item}", err=True)
    if fmt == "json":
        sys.stdout.write(format_json(result.records))
    elif fmt == "zone":
        sys.stdout.write(format_zone(site, result.records, result.notes))
    else:
        out.print(format_table(result.records))
    for note in result.notes if fmt != "zone" else ():
        typer.echo(f"note: {note}", err=True)


def up(project: engine.Project, result: engine.UpResult) -> None:
    changed = [a.path for a in result.actions if a.change is not Change.UNCHANGED]
    out.print(
        f"{project.name} is up and healthy after {result.seconds:.0f}s "
        f"({len(changed)} files changed, reloaded: {', '.join(result.reloaded) or 'none'}"
        + (f", {count(len(result.rights), 'right')} changed" if project.site.shared_mailboxes else "")
        + ")"
    )
    for protocol, where, security in engine.endpoints(project.site):
        out.print(f"  {protocol:<12} {where:<22} {security}")


def status(rows: list[engine.ServiceStatus]) -> None:
    for row in rows:
        out.print(f"{row.service:<10} {row.state:<10} {row.health:<10} {' '.join(row.ports)}")


def check(report: CheckReport, *, as_json: bool, exit_on_fail: bool = True) -> None:
    """Print the results; exit 1 when one failed."""
    if as_json:
        typer.echo(report.to_json(), nl=False)
    else:
        table = Table(title=f"mailstack check {report.site} ({report.target})", title_justify="left")
        for column in ("result", "probe", "what was seen", "fix"):
            table.add_column(column, overflow="fold")
        colours = {"pass": "green", "warn": "yellow", "fail": "red bold", "skip": "dim"}
        for r in report.results:
            table.add_row(
                f"[{colours[r.status]}]{r.status}[/]", escape(r.probe), escape(r.reason), escape(r.fix)
            )
        out.print(table)
        counts = {s: sum(r.status == s for r in report.results) for s in ("pass", "warn", "fail", "skip")}
        summary = f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail"
        skips = f", {counts['skip']} skipped" if counts["skip"] else ""
        out.print(f"{summary}{skips} in {report.seconds:.1f} s")
    if exit_on_fail and not report.ok:
        raise typer.Exit(1)


def deploy(result: DeployResult) -> None:
    """The recap per host; a failed play is a UserError."""
    for host, counts in result.recap.items():
        plain(f"{host}: " + " ".join(f"{k}={v}" for k, v in counts.items()))
    if not result.ok:
        raise UserError(f"deploy failed (ansible-playbook exit {result.returncode})")


def host_checks(reports: list[CheckReport]) -> None:
    """Every host's results; exit 1 when a host failed one."""
    for report in reports:
        check(report, as_json=False, exit_on_fail=False)
    if not all(report.ok for report in reports):
        raise typer.Exit(1)


def audit(result: Report) -> None:
    marks = {"pass": "[green]PASS[/]", "fail": "[red bold]FAIL[/]", "skip": "[yellow]skip[/]"}
    for item in result.items:
        out.print(f"{marks[item.status]} {item.id:<40} {escape(item.detail)}")


def audit_report(result: Report, markdown: Path, data: Path) -> None:
    """The counts and where the report is; exit 1 when an item failed."""
    counts = result.counts()
    out.print(
        f"{counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skipped in {result.seconds:.0f} s; "
        f"report: {markdown} and {data}"
    )
    if not result.ok:
        raise typer.Exit(1)


def renewal(result: Renewal) -> None:
    """The acme service's certificates; a failed attempt is a UserError."""
    for c in result.certificates:
        out.print(
            f"{c.kind}: serial {c.serial} from {c.issuer}, valid until {c.not_after} (key {c.key})",
            markup=False,
        )
    if not result.ok:
        raise UserError(f"ACME attempt failed: {result.error or 'see `mailstack logs SITE acme`'}")
    out.print(f"renewed: {result.reasons or 'nothing was due'}", markup=False)


def backups(runs: list[Run]) -> None:
    if not runs:
        out.print("no backups yet")
        return
    for run in runs:
        parts = " ".join(sorted(run.parts))
        added = f"added {run.added / 1024**2:.1f} MiB" if run.added else ""
        out.print(f"{run.id or '-':<10} {run.time} UTC  {parts:<24} {added}")


def connect_help(project: engine.Project, user: str) -> str:
    lines = [f"Connect a mail client to {project.site.hostname} (or the address below) as {user}:"]
    lines += [f"  {p:<12} {where:<22} {sec}" for p, where, sec in engine.endpoints(project.site)]
    if project.site.tls.mode == "selfsigned":
        lines.append(
            f"  The TLS certificate is signed by the site's own CA: {project.state_dir / 'tls' / 'ca.crt'}"
        )
    lines.append(
        "  Passwords: only hashes are stored; the demo's are listed at the top of examples/demo.yaml."
    )
    return "\n".join(lines)
