"""`mailstack check`: fast live probes of a running site, each pass, warn or fail with the fix
(or skip, where a probe does not apply to the site).

Locally it speaks to the ports `mailstack up` published; for a deployed host it goes through
SSH forwards to the host's own published ports (so it also works where only SSH reaches the
host from here, and from a machine outside the site's DNS). What only the stack can see (its
resolver, Postfix's policy lookup) it asks inside the containers, with `docker exec`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailstack.check import at_rest, certificate, inside, published, roundtrip, transport, web
from mailstack.check.backup import backup_results
from mailstack.check.disk import disk_results
from mailstack.check.probe import client_host
from mailstack.check.results import CheckReport, Result, failed
from mailstack.check.transport import Endpoint
from mailstack.dns import site_records
from mailstack.engine import project_name
from mailstack.errors import UserError
from mailstack.remote import Shell
from mailstack.site.models import Host, Site
from mailstack.state import State
from mailstack.vault import Vault

__all__ = ["CheckReport", "Result", "check_hosts", "run_check"]


def run_check(
    site: Site,
    state_dir: Path,
    *,
    target: Host | None = None,
    site_dir: Path = Path(),
    vault: Vault | None = None,
    resolver: str | None = None,
) -> CheckReport:
    """Every probe, in order; ``resolver`` (address[:port]) also compares the published DNS."""
    started = time.monotonic()
    report = CheckReport(site.site, target.name if target else "local")
    if not (state_dir / "state.json").exists():
        report.results.append(
            failed("state", f"no state at {state_dir}", "render or `mailstack up` the site first")
        )
        return report
    state = State(state_dir, write=False, vault=vault)
    password = state.probe_password()
    records = site_records(site, state_dir, vault=vault).records
    read = certificate.state_reader(site, state, target, site_dir)
    context = certificate.tls_context(site, read)
    report.results += certificate.acme_results(site, read)
    if site.tls.acme is not None and target is None:
        report.results.append(certificate.directory_result(site.tls.acme))
    # Inside the stack first: a resolver that does not answer also stalls Postfix's greetings
    # (its client lookups wait for DNS), and its item is the cause of those ports' failures.
    shell = Shell(target, site_dir)
    report.results += inside.stack_results(shell, project_name(site), site, local=target is None)
    report.results += backup_results(shell, project_name(site), site)
    # A full disk refuses mail (4xx) and stalls the queue: named before the round trip fails on it.
    report.results += disk_results(shell, project_name(site), site)
    with _endpoints(site, target, site_dir) as endpoints:
        report.results += transport.port_results(list(endpoints.values()), site.hostname, context)
        if "smtp" in endpoints:
            report.results.append(transport.relay_result(endpoints["smtp"]))
            tlsa = {r.value.split()[-1].lower() for r in records if r.type == "TLSA"}
            served = transport.served_keys(endpoints["smtp"])
            report.results.append(transport.tlsa_result(tlsa, served))
            if resolver is not None and tlsa and isinstance(served, dict):
                report.results.append(published.dane_result(records, served, resolver))
        report.results += web.web_results(site, endpoints, context)
        report.results.append(at_rest.modes_result(site))
        disk = at_rest.disk_checker(shell, project_name(site), site)
        report.results += roundtrip.round_trip(site, endpoints, context, password, records, disk)
    if resolver is not None:
        report.results += published.dns_results(records, resolver)
    report.seconds = time.monotonic() - started
    return report


def check_hosts(
    site: Site, state_dir: Path, hosts: list[Host], *, site_dir: Path = Path(), vault: Vault | None = None
) -> list[CheckReport]:
    """`mailstack check` of each of ``hosts``, one after the other (after a deploy)."""
    return [run_check(site, state_dir, target=h, site_dir=site_dir, vault=vault) for h in hosts]


@contextmanager
def _endpoints(site: Site, target: Host | None, site_dir: Path) -> Iterator[dict[str, Endpoint]]:
    ports = site.network.ports.published()
    if target is None:
        host = client_host(site)
        yield {name: Endpoint(name, port, host, port) for name, port in ports.items()}
        return
    shell = Shell(target, site_dir)
    bind = site.network.bind[0]
    if bind in ("0.0.0.0", "::"):  # noqa: S104
        # Any address of the host's own reaches its published ports (Docker's DNAT); not
        # loopback, which Docker does not forward without its userland proxy.
        addresses = shell.output("hostname", "--all-ip-addresses").split()
        if not addresses:
            raise UserError(f"{target.name} reports no IP address (hostname -I)")
        bind = addresses[0]
    with shell.forwards({name: (bind, port) for name, port in ports.items()}) as local:
        yield {name: Endpoint(name, port, "127.0.0.1", local[name]) for name, port in ports.items()}
