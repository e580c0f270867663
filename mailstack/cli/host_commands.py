"""Commands that reach a running site, here or on its hosts: check, deploy, audit, tls."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailstack import tls
from mailstack.audit import SECTIONS as AUDIT_SECTIONS
from mailstack.audit import run_audit
from mailstack.check import check_hosts, run_check
from mailstack.cli import show
from mailstack.cli.options import (
    AnsibleCheck,
    AnsibleDiff,
    BaseImage,
    Bootstrap,
    Images,
    Json,
    Limit,
    LiveCheck,
    OutDir,
    SitePath,
    StateDir,
    Tags,
    TlsHost,
    VaultFile,
    host,
    project,
    sections,
    site_dir,
    user_errors,
)
from mailstack.deploy import DeployOptions
from mailstack.deploy import deploy as run_deploy
from mailstack.vault import open_vault

out = show.out


@user_errors
def check(
    site: SitePath,
    as_json: Json = False,
    host_name: Annotated[
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
    p = project(site, output, state)
    report = run_check(
        p.site,
        p.state_dir,
        target=host(p.site, host_name, site),
        site_dir=site_dir(site),
        vault=open_vault(vault_password_file),
        resolver=resolver if dns else None,
    )
    show.check(report, as_json=as_json)


@user_errors
def deploy(
    site: SitePath,
    check: AnsibleCheck = False,
    diff: AnsibleDiff = False,
    limit: Limit = None,
    tags: Tags = None,
    images: Images = "build",
    base_image: BaseImage = None,
    bootstrap_base: Bootstrap = False,
    vault_password_file: VaultFile = None,
    output: OutDir = None,
    state: StateDir = None,
    check_after: LiveCheck = True,
) -> None:
    """Install, harden and run the site on its hosts with Ansible over SSH, then check each."""
    options = DeployOptions(
        check=check, diff=diff, limit=limit, tags=tags, images=images, base_image=base_image,
        bootstrap_base=bootstrap_base,
    )  # fmt: skip
    p = project(site, output, state)
    vault = open_vault(vault_password_file)
    result = run_deploy(p.site, p.out_dir, p.state_dir, options, vault=vault, say=show.plain)
    show.deploy(result)
    if check_after and not check:
        show.host_checks(check_hosts(p.site, p.state_dir, result.hosts, site_dir=site_dir(site), vault=vault))


@user_errors
def audit(
    site: SitePath,
    host_name: Annotated[
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
    p = project(site, output, state)
    chosen, target = sections(only, AUDIT_SECTIONS), host(p.site, host_name, site)
    result = run_audit(
        p.site,
        p.name,
        p.state_dir,
        target=target,
        site_dir=site_dir(site),
        only=chosen,
        say=lambda text: out.print(f"[dim]audit:[/] {text}"),
    )
    show.audit(result)
    show.audit_report(result, *result.write(report or p.out_dir.with_name(p.out_dir.name + ".audit")))


@user_errors
def tls_status(
    site: SitePath, host_name: TlsHost = None, output: OutDir = None, state: StateDir = None
) -> None:
    """What the services are given: issuer and expiry per key type; with acme, the last attempt,
    its error, the next retry and the renewal times."""
    p = project(site, output, state)
    show.lines(tls.status(p, host(p.site, host_name, site), site_dir(site)))


@user_errors
def tls_renew(
    site: SitePath,
    force: Annotated[
        bool, typer.Option("--force", help="Renew now even certificates that are not due (next key).")
    ] = False,
    host_name: TlsHost = None,
    output: OutDir = None,
    state: StateDir = None,
) -> None:
    """Ask the running acme service for an attempt now (it ignores the back-off); exit 1 when it
    fails. The services reload the new certificates by themselves."""
    p = project(site, output, state)
    show.renewal(tls.renew(p, site, force=force, host=host(p.site, host_name, site)))
