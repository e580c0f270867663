"""The `mailstack` command line: one thin function per command."""

from __future__ import annotations

import functools
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from mailstack import __version__, engine
from mailstack.audit import SECTIONS as AUDIT_SECTIONS
from mailstack.audit import run_audit
from mailstack.check import CheckReport, certificate, run_check
from mailstack.check.probe import round_trip
from mailstack.deploy import DeployOptions
from mailstack.deploy import deploy as run_deploy
from mailstack.dns import FORMATS as DNS_FORMATS
from mailstack.dns import format_json, format_table, format_zone, site_records
from mailstack.errors import UserError
from mailstack.images import ensure_images
from mailstack.passwords import SCHEMES, hash_password
from mailstack.purge import purge_hosts, purge_local
from mailstack.remote import HOST_ROOT, Shell
from mailstack.render import default_paths, render_site
from mailstack.render.writer import Change
from mailstack.site.loader import load_site
from mailstack.site.models import Host, Site
from mailstack.site.schema import SCHEMA_RELPATH, schema_text, write_schema
from mailstack.starter import create_starter
from mailstack.state import State
from mailstack.vault import Vault, decrypt_state, encrypt_state

app = typer.Typer(
    name="mailstack",
    help="Run your own mail server from one typed site description.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")

SitePath = Annotated[Path, typer.Argument(help="The site description (YAML).", show_default=False)]
OutDir = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="Output directory [default: build/<site> beside the site file]."),
]
StateDir = Annotated[
    Path | None,
    typer.Option("--state", help="State directory [default: .mailstack/<site> beside the site file]."),
]
BaseImage = Annotated[
    str | None, typer.Option("--base-image", help="Base image to build FROM [default: first present].")
]
Bootstrap = Annotated[
    bool,
    typer.Option(
        "--bootstrap-base", help="Without a base image, build one from Debian's mirror (debootstrap)."
    ),
]
NoCheck = Annotated[
    bool,
    typer.Option("--check/--no-check", help="End with `mailstack check` (its failure fails the command)."),
]
VaultFile = Annotated[
    Path | None,
    typer.Option("--vault-password-file", help="Password file for state encrypted with ansible-vault."),
]
images_app = typer.Typer(help="Build the service images.", no_args_is_help=True)
app.add_typer(images_app, name="images")
TlsHost = Annotated[str | None, typer.Option("--host", help="A deployed host (its name in hosts), over SSH.")]
tls_app = typer.Typer(
    help="The site's certificates: what is served, and ACME renewals (tls.mode acme).", no_args_is_help=True
)
app.add_typer(tls_app, name="tls")
vault_app = typer.Typer(
    help="Encrypt the state for git with ansible-vault, or decrypt it.", no_args_is_help=True
)
app.add_typer(vault_app, name="vault")


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print a UserError's message and exit 1; anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mailstack {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Run your own mail server from one typed site description."""


@app.command()
@user_errors
def init(
    domain: Annotated[str, typer.Argument(help="The first mail domain, such as example.org.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Site file to write.")] = Path("site.yaml"),
    user: Annotated[str, typer.Option(help="Local part of the first mailbox.")] = "admin",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter site with a first mailbox and a generated password."""
    starter = create_starter(domain, output, user=user, force=force)
    out.print(f"Wrote {starter.path} (JSON Schema for editors: {starter.path.parent / SCHEMA_RELPATH})")
    out.print(
        Panel(
            f"Mailbox  {starter.address}\nPassword {starter.password}",
            title="Shown once — only its hash is stored",
            expand=False,
        )
    )


@app.command()
@user_errors
def validate(site: SitePath) -> None:
    """Check a site file and print a one-line summary."""
    s = load_site(site)
    out.print(
        f"{site}: site {s.site} is valid: {_count(len(s.domains), 'domain')}, "
        f"{_count(len(s.mailboxes), 'mailbox', 'mailboxes')}, {_count(len(s.aliases), 'alias', 'aliases')}"
    )


@app.command()
@user_errors
def render(
    site: SitePath,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Output directory [default: build/<site> beside the site file]."),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="State directory [default: .mailstack/<site> beside the site file]."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; write nothing.")] = False,
    vault_password_file: VaultFile = None,
) -> None:
    """Render the compose project, Ansible inventory and DNS records (plan → diff → write)."""
    s = load_site(site)
    default_out, default_state = default_paths(s, site)
    vault = Vault(vault_password_file) if vault_password_file else None
    result = render_site(s, output or default_out, state or default_state, dry_run=dry_run, vault=vault)
    verb = "would create" if dry_run else "created"
    for item in result.state.created:
        out.print(f"state     {verb} {item}")
    for action in result.actions:
        out.print(f"{action.change.value:<9} {action.path}")
    counts = {c: sum(1 for a in result.actions if a.change is c) for c in Change}
    summary = ", ".join(f"{n} {c.value}" for c, n in counts.items() if n)
    if dry_run:
        out.print(f"dry run: nothing written to {result.out_dir} ({summary})")
    else:
        write_schema(site.resolve().parent / SCHEMA_RELPATH)
        out.print(f"rendered {result.out_dir} ({summary})")


@app.command("dns")
@user_errors
def dns_command(
    site: SitePath,
    fmt: Annotated[
        str, typer.Option("--format", help="table, zone (one $ORIGIN section per zone) or json.")
    ] = "table",
    state: StateDir = None,
    vault_password_file: VaultFile = None,
) -> None:
    """Print the DNS records to publish for every domain, each with why it exists."""
    if fmt not in DNS_FORMATS:
        raise UserError(f"--format must be one of {', '.join(DNS_FORMATS)}, not {fmt!r}")
    project = _project(site, None, state)
    vault = Vault(vault_password_file) if vault_password_file else None
    result = site_records(project.site, project.state_dir, vault=vault)
    for item in result.state_created:
        typer.echo(f"state     created {item}", err=True)
    if fmt == "json":
        sys.stdout.write(format_json(result.records))
    elif fmt == "zone":
        sys.stdout.write(format_zone(project.site, result.records, result.notes))
    else:
        out.print(format_table(result.records))
    for note in result.notes if fmt != "zone" else ():
        typer.echo(f"note: {note}", err=True)


@app.command("hash-password")
@user_errors
def hash_password_command(
    scheme: Annotated[str, typer.Option(help=f"One of {', '.join(SCHEMES)}.")] = "ARGON2ID",
) -> None:
    """Hash a password for a site file. Reads it without echo, or from standard input."""
    if scheme not in SCHEMES:
        raise UserError(f"--scheme must be one of {', '.join(SCHEMES)}, not {scheme!r}")
    password = _read_password()
    typer.echo(hash_password(password, scheme))


@app.command()
@user_errors
def up(
    site: SitePath,
    output: OutDir = None,
    state: StateDir = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every service to be healthy.")] = 180,
    base_image: BaseImage = None,
    bootstrap_base: Bootstrap = False,
    check: NoCheck = True,
) -> None:
    """Render, build images if needed, start the stack, wait until it is healthy, check it."""
    project = _project(site, output, state)
    result = engine.up(project, timeout=timeout, base=base_image, bootstrap=bootstrap_base, say=out.print)
    changed = [a.path for a in result.actions if a.change is not Change.UNCHANGED]
    out.print(
        f"{project.name} is up and healthy after {result.seconds:.0f}s "
        f"({len(changed)} files changed, reloaded: {', '.join(result.reloaded) or 'none'})"
    )
    for protocol, where, security in engine.endpoints(project.site):
        out.print(f"  {protocol:<12} {where:<22} {security}")
    for line in certificate.summary(project.site, _state_reader(project, None, site)):
        out.print(f"  {line}", markup=False)
    if check:
        _show_check(run_check(project.site, project.state_dir), as_json=False)


@app.command("check")
@user_errors
def check_site(
    site: SitePath,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    host: Annotated[
        str | None, typer.Option("--host", help="Check this deployed host (its name in hosts) over SSH.")
    ] = None,
    dns: Annotated[
        bool, typer.Option("--dns", help="Also compare the published DNS with `mailstack dns`.")
    ] = False,
    resolver: Annotated[
        str, typer.Option(help="The resolver --dns asks: address or address:port.")
    ] = "127.0.0.53",
    vault_password_file: VaultFile = None,
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Probe the running site: ports and certificates, AUTH policy, relay, a round trip with
    DKIM, GTUBE; a fail exits 1."""
    project = _project(site, output, state)
    report = run_check(
        project.site,
        project.state_dir,
        target=_host(project.site, host, site),
        site_dir=site.resolve().parent,
        vault=Vault(vault_password_file) if vault_password_file else None,
        resolver=resolver if dns else None,
    )
    _show_check(report, as_json=as_json)


def _show_check(report: CheckReport, *, as_json: bool, exit_on_fail: bool = True) -> None:
    """Print the results; exit 1 when one failed."""
    if as_json:
        typer.echo(report.to_json(), nl=False)
    else:
        table = Table(title=f"mailstack check {report.site} ({report.target})", title_justify="left")
        for column in ("result", "probe", "what was seen", "fix"):
            table.add_column(column, overflow="fold")
        colours = {"pass": "green", "warn": "yellow", "fail": "red bold"}
        for r in report.results:
            table.add_row(
                f"[{colours[r.status]}]{r.status}[/]", escape(r.probe), escape(r.reason), escape(r.fix)
            )
        out.print(table)
        counts = {s: sum(r.status == s for r in report.results) for s in ("pass", "warn", "fail")}
        out.print(
            f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail in {report.seconds:.1f} s"
        )
    if exit_on_fail and not report.ok:
        raise typer.Exit(1)


@app.command()
@user_errors
def down(
    site: SitePath,
    output: OutDir = None,
    state: StateDir = None,
    volumes: Annotated[
        bool, typer.Option("--volumes", help="Also delete mail, queue and data volumes.")
    ] = False,
) -> None:
    """Stop the stack. Mail and queues are kept unless --volumes is given."""
    project = _project(site, output, state)
    engine.down(project, volumes=volumes)
    out.print(f"{project.name} is down" + (" and its volumes are deleted" if volumes else "; volumes kept"))


@app.command()
@user_errors
def status(site: SitePath, output: OutDir = None, state: StateDir = None) -> None:
    """Show each service's state, health and published ports, and the certificates."""
    project = _project(site, output, state)
    rows = engine.status(project)
    if not rows:
        out.print(f"{project.name} is not running")
        raise typer.Exit(3)
    for row in rows:
        out.print(f"{row['service']:<10} {row['state']:<10} {row['health']:<10} {row['ports']}")
    for line in certificate.summary(project.site, _state_reader(project, None, site)):
        out.print(line, markup=False)


@app.command()
@user_errors
def logs(
    site: SitePath,
    service: Annotated[str | None, typer.Argument(help="postfix, dovecot, rspamd or redis.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines of each service.")] = None,
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Print the stack's logs, or one service's."""
    raise typer.Exit(engine.logs(_project(site, output, state), service, follow=follow, tail=tail))


@app.command()
@user_errors
def deploy(
    site: SitePath,
    check: Annotated[bool, typer.Option("--check", help="Change nothing; report what would change.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show the changes to files.")] = False,
    limit: Annotated[str | None, typer.Option(help="Only these hosts (Ansible pattern).")] = None,
    tags: Annotated[str | None, typer.Option(help="Only these roles: host, docker, harden, stack.")] = None,
    images: Annotated[
        str, typer.Option(help="build: build on the hosts; load: ship `docker save` archives.")
    ] = "build",
    base_image: BaseImage = None,
    bootstrap_base: Bootstrap = False,
    vault_password_file: VaultFile = None,
    output: OutDir = None,
    state: StateDir = None,
    check_after: Annotated[
        bool,
        typer.Option(
            "--live-check/--no-live-check",
            help="End with `mailstack check` on each host (its failure fails the deploy).",
        ),
    ] = True,
) -> None:
    """Install, harden and run the site on its hosts with Ansible over SSH, then check each."""
    if images not in ("build", "load"):
        raise UserError(f"--images must be build or load, not {images!r}")
    project = _project(site, output, state)
    vault = Vault(vault_password_file) if vault_password_file else None
    render_site(project.site, project.out_dir, project.state_dir, vault=vault)
    options = DeployOptions(
        check=check,
        diff=diff,
        limit=limit,
        tags=tags,
        images=images,
        base_image=base_image,
        bootstrap_base=bootstrap_base,
        vault_password_file=vault_password_file,
    )
    # Ansible's lines are full of [brackets]: print them as they are, not as rich markup.
    plain = functools.partial(out.print, markup=False, emoji=False)
    result = run_deploy(project.site, project.out_dir, project.state_dir, options, say=plain)
    for host, counts in result.recap.items():
        plain(f"{host}: " + " ".join(f"{k}={v}" for k, v in counts.items()))
    if not result.ok:
        raise UserError(f"deploy failed (ansible-playbook exit {result.returncode})")
    if check_after and not check:
        vault = Vault(vault_password_file) if vault_password_file else None
        reports = [
            run_check(project.site, project.state_dir, target=h, site_dir=site.resolve().parent, vault=vault)
            for h in project.site.hosts
            if limit is None or h.name in limit.split(",")
        ]
        for report in reports:
            _show_check(report, as_json=False, exit_on_fail=False)
        if not all(report.ok for report in reports):
            raise typer.Exit(1)


@app.command()
@user_errors
def probe(
    site: SitePath,
    user: Annotated[str, typer.Option(help="Mailbox to log in as (the message goes to itself).")],
    password: Annotated[
        str | None, typer.Option(help="Its password [default: read from standard input].")
    ] = None,
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Send a message through submission and read it back over IMAP, as a mail client would."""
    project = _project(site, output, state)
    result = round_trip(project.site, project.state_dir, user, password or _read_password())
    out.print(
        f"sent {result.subject!r} via {result.sent_via}; found it via {result.found_via} "
        f"after {result.seconds:.1f}s"
    )
    out.print(connect_help(project, user))


@app.command()
@user_errors
def audit(
    site: SitePath,
    host: Annotated[
        str | None, typer.Option("--host", help="Audit this deployed host (its name in hosts) over SSH.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Report directory [default: <output>.audit].")
    ] = None,
    only: Annotated[
        str,
        typer.Option(help="Only these sections, comma-separated: containers, tls, smtp, host."),
    ] = ",".join(AUDIT_SECTIONS),
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Measure the running site's hardening with testssl.sh, ssh-audit, lynis and docker inspect."""
    project = _project(site, output, state)
    sections = tuple(part.strip() for part in only.split(",") if part.strip())
    unknown = sorted(set(sections) - set(AUDIT_SECTIONS))
    if unknown or not sections:
        raise UserError(f"--only takes {', '.join(AUDIT_SECTIONS)}, not {', '.join(unknown) or 'nothing'}")
    result = run_audit(
        project.site,
        project.name,
        project.state_dir,
        target=_host(project.site, host, site),
        site_dir=site.resolve().parent,
        only=sections,
        say=lambda text: out.print(f"[dim]audit:[/] {text}"),
    )
    marks = {"pass": "[green]PASS[/]", "fail": "[red bold]FAIL[/]", "skip": "[yellow]skip[/]"}
    for item in result.items:
        out.print(f"{marks[item.status]} {item.id:<40} {escape(item.detail)}")
    directory = report or project.out_dir.with_name(project.out_dir.name + ".audit")
    markdown, data = result.write(directory)
    counts = result.counts()
    out.print(
        f"{counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skipped in {result.seconds:.0f} s; "
        f"report: {markdown} and {data}"
    )
    if not result.ok:
        raise typer.Exit(1)


@images_app.command("build")
@user_errors
def images_build(
    base_image: BaseImage = None,
    bootstrap_base: Bootstrap = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build even when nothing changed.")] = False,
) -> None:
    """Build every service image (cached by content)."""
    engine.check_engine()
    for result in ensure_images(base=base_image, bootstrap=bootstrap_base, rebuild=rebuild, say=out.print):
        out.print(f"{result.tag:<28} {'built' if result.built else 'up to date'}")


@app.command()
@user_errors
def purge(
    site: SitePath,
    address: Annotated[str, typer.Argument(help="The address whose stored mail is deleted.")],
    yes: Annotated[bool, typer.Option("--yes", help="Really delete it.")] = False,
    hosts: Annotated[bool, typer.Option("--hosts", help="On the site's hosts instead of here.")] = False,
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Delete the stored mail of an address that is no longer in the site."""
    project = _project(site, output, state)
    if hosts:
        raise typer.Exit(purge_hosts(project, address, yes=yes))
    removed = purge_local(project, address, yes=yes)
    out.print(f"purged {address}: {'nothing was stored' if removed == 'none' else removed + ' deleted'}")


@vault_app.command("encrypt")
@user_errors
def vault_encrypt(
    site: SitePath,
    vault_password_file: Annotated[Path, typer.Option("--vault-password-file", help="The vault password.")],
    state: StateDir = None,
) -> None:
    """Encrypt every state file in place (state.json stays plain)."""
    project = _project(site, None, state)
    result = encrypt_state(project.state_dir, Vault(vault_password_file))
    out.print(f"encrypted {len(result.changed)} files in {project.state_dir} ({result.skipped} already were)")


@vault_app.command("decrypt")
@user_errors
def vault_decrypt(
    site: SitePath,
    vault_password_file: Annotated[Path, typer.Option("--vault-password-file", help="The vault password.")],
    state: StateDir = None,
) -> None:
    """Decrypt every state file in place, for `mailstack up` on this machine."""
    project = _project(site, None, state)
    result = decrypt_state(project.state_dir, Vault(vault_password_file))
    out.print(f"decrypted {len(result.changed)} files in {project.state_dir} ({result.skipped} were plain)")


@tls_app.command("status")
@user_errors
def tls_status(site: SitePath, host: TlsHost = None, output: OutDir = None, state: StateDir = None) -> None:
    """What the services are given: issuer and expiry per key type; with acme, the last attempt,
    its error, the next retry and the renewal times."""
    project = _project(site, output, state)
    read = _state_reader(project, _host(project.site, host, site), site)
    for line in certificate.summary(project.site, read):
        out.print(line, markup=False)


@tls_app.command("renew")
@user_errors
def tls_renew(
    site: SitePath,
    force: Annotated[
        bool, typer.Option("--force", help="Renew now even certificates that are not due (next key).")
    ] = False,
    host: TlsHost = None,
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Ask the running acme service for an attempt now (it ignores the back-off); exit 1 when it
    fails. The services reload the new certificates by themselves."""
    project = _project(site, output, state)
    if project.site.tls.mode != "acme":
        raise UserError(f"{site}: tls.mode is {project.site.tls.mode}; only tls.mode acme renews")
    target = _host(project.site, host, site)
    remote = Shell(target, site.resolve().parent).run if target is not None else None
    compose_file = str(HOST_ROOT / project.site.site / "live" / "compose.yaml")
    ok, report = engine.acme_renew(project, force=force, remote=remote, remote_compose_file=compose_file)
    last = report.get("last_attempt") or {}
    for kind, entry in sorted((report.get("certificates") or {}).items()):
        out.print(
            f"{kind}: serial {entry.get('serial')} from {entry.get('issuer')}, valid until "
            f"{entry.get('not_after')} (key {entry.get('key')})",
            markup=False,
        )
    if not ok:
        raise UserError(f"ACME attempt failed: {last.get('error') or 'see `mailstack logs SITE acme`'}")
    out.print(f"renewed: {last.get('reasons') or 'nothing was due'}", markup=False)


def _state_reader(project: engine.Project, target: Host | None, site: Path) -> certificate.Reader:
    state = State(project.state_dir, write=False)
    return certificate.state_reader(project.site, state, target, site.resolve().parent)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the site description."""
    sys.stdout.write(schema_text())


def _host(site: Site, name: str | None, path: Path) -> Host | None:
    """The site's host called ``name`` (None for None)."""
    if name is None:
        return None
    for host in site.hosts:
        if host.name == name:
            return host
    known = ", ".join(h.name for h in site.hosts) or "none"
    raise UserError(f"no host named {name!r} in {path} (hosts: {known})")


def _project(site: Path, output: Path | None, state: Path | None) -> engine.Project:
    s = load_site(site)
    default_out, default_state = default_paths(s, site)
    return engine.Project(site=s, out_dir=output or default_out, state_dir=state or default_state)


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


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise UserError("the passwords differ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise UserError("the password is empty")
    return password


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
