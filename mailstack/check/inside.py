"""Probes from inside the running stack, where only the stack's services can look: does the
resolver answer and validate DNSSEC, and does Postfix's MTA-STS policy lookup answer.

Both run a client in a service's container (`docker exec`, here or on a deployed host over
SSH), so they see what Postfix and Rspamd see: the back network, Docker's DNS, the resolver.
Offline sites run neither the resolver nor mta-sts; their probes are skipped.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from mailstack import services
from mailstack.check.results import Result, failed, passed, skipped
from mailstack.remote import RemoteError, Shell
from mailstack.render.postfix import mta_sts_policy_map
from mailstack.site.models import Site

RESOLVER_PROBE = "resolver DNSSEC"
POLICY_PROBE = "MTA-STS policy lookup"
# drill retries for 15 s without an answer; a postmap lookup waits for the mta-sts service,
# which gives up on a destination's policy after default_zone.timeout (4 s).
EXEC_TIMEOUT = 30.0
# drill's header lines: ";; ->>HEADER<<- opcode: QUERY, rcode: NOERROR, id: 5758" and
# ";; flags: qr rd ra ad ; QUERY: 1, ANSWER: 2, …".
_RCODE = re.compile(r"->>HEADER<<-.*\brcode: (\w+)")
_FLAGS = re.compile(r"^;; flags:([^;]*);", re.MULTILINE)


@dataclass(frozen=True)
class Ran:
    """What one command in a container did; ``running`` False when the service's container
    is not running (then nothing ran)."""

    running: bool
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""

    @property
    def error(self) -> str:
        """The command's last words, for a reason line."""
        text = (self.stderr or self.stdout).strip()
        return " ".join(text.splitlines()[-2:])[-300:] or f"exit {self.returncode}"


@dataclass(frozen=True)
class DrillAnswer:
    rcode: str
    flags: frozenset[str]

    @property
    def validated(self) -> bool:
        """NOERROR with the ad flag: Unbound checked the answer's signatures up to an anchor."""
        return self.rcode == "NOERROR" and "ad" in self.flags


def parse_drill(text: str) -> DrillAnswer | None:
    """The rcode and header flags of drill's answer; None when drill printed no answer."""
    rcode, flags = _RCODE.search(text), _FLAGS.search(text)
    if rcode is None or flags is None:
        return None
    return DrillAnswer(rcode.group(1), frozenset(flags.group(1).split()))


def anchor_zone(site: Site) -> str:
    """The zone whose SOA the probe asks for: the first private trust anchor's zone (a site
    that forwards to a company resolver may reach nothing else), else the root."""
    anchors = site.dns.resolver.trust_anchors
    return anchors[0].split()[0] if anchors else "."


def project_services(shell: Shell, project: str) -> dict[str, str] | str:
    """service → container id of the project's running containers, or why they could not be
    listed (no Docker, no permission, no SSH)."""
    try:
        run = shell.run(
            "docker",
            "ps",
            "--no-trunc",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--format",
            '{{.ID}} {{.Label "com.docker.compose.service"}}',
            timeout=EXEC_TIMEOUT,
        )
    except (RemoteError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if run.returncode != 0:
        return (run.stderr or run.stdout).strip()[-300:] or f"docker ps: exit {run.returncode}"
    return {service: cid for cid, _, service in (line.partition(" ") for line in run.stdout.splitlines())}


def run_in(shell: Shell, container: str | None, *argv: str) -> Ran:
    if container is None:
        return Ran(running=False)
    try:
        run = shell.run("docker", "exec", container, *argv, timeout=EXEC_TIMEOUT)
    except subprocess.TimeoutExpired:
        return Ran(True, -1, "", f"no answer within {EXEC_TIMEOUT:.0f} s")
    return Ran(True, run.returncode, run.stdout, run.stderr)


def stack_results(shell: Shell, project: str, site: Site, *, local: bool) -> list[Result]:
    """The resolver's and the policy lookup's results (skipped offline)."""
    if site.offline:
        why = "the site is offline (offline: true): it runs no resolver and no mta-sts"
        return [skipped(RESOLVER_PROBE, why), skipped(POLICY_PROBE, why)]
    running = project_services(shell, project)
    if isinstance(running, str):
        fix = "run check where `docker ps` works (the Docker socket, or sudo on the host)"
        reason = f"could not list the containers of {project}: {running}"
        return [failed(RESOLVER_PROBE, reason, fix), failed(POLICY_PROBE, reason, fix)]
    zone = anchor_zone(site)
    resolver = running.get("resolver")
    asked = run_in(shell, resolver, "drill", "-D", "@127.0.0.1", zone, "SOA")
    unchecked = None
    if asked.running and not _validated(asked):
        # The same question with checking disabled (CD): an answer now means the signatures
        # failed, none means the resolver reaches no name server.
        unchecked = run_in(shell, resolver, "drill", "-D", "-o", "CD", "@127.0.0.1", zone, "SOA")
    policy_map = mta_sts_policy_map(site, services.service("mta-sts").internal_ports["mta_sts"])
    domain = site.domain_names[0]
    looked_up = run_in(shell, running.get("postfix"), "postmap", "-q", domain, policy_map)
    return [
        resolver_result(site, zone, asked, unchecked, local=local),
        policy_result(site, domain, looked_up, local=local),
    ]


def _validated(ran: Ran) -> bool:
    answer = parse_drill(ran.stdout) if ran.returncode == 0 else None
    return answer is not None and answer.validated


def _logs(site: Site, service: str, *, local: bool) -> str:
    if local:
        return f"`mailstack logs {site.site} {service}`"
    return f"`docker logs` of {service} on the host"


def resolver_result(site: Site, zone: str, asked: Ran, unchecked: Ran | None, *, local: bool) -> Result:
    """Whether the resolver gave a validated answer for ``zone`` SOA, and if not, what to do."""
    question = f"{zone} SOA"
    logs = _logs(site, "resolver", local=local)
    if not asked.running:
        start = f"`mailstack up {site.site}`" if local else f"`mailstack deploy {site.site}`"
        return failed(
            RESOLVER_PROBE,
            "the resolver (Unbound) is not running: Postfix and Rspamd cannot look up MX, TLSA, SPF or DKIM",
            f"start it with {start}; see `mailstack status` and {logs}",
        )
    answer = parse_drill(asked.stdout) if asked.returncode == 0 else None
    if answer is None:
        return failed(
            RESOLVER_PROBE,
            f"the resolver does not answer {question} on 127.0.0.1: {asked.error}",
            f"is Unbound healthy? see {logs}",
        )
    if answer.validated:
        return passed(RESOLVER_PROBE, f"the resolver answers {question} NOERROR, validated (ad)")
    upstream = (
        f"check dns.resolver.forward ({', '.join(site.dns.resolver.forward)}) answers"
        if site.dns.resolver.mode == "forward"
        else "check that outbound DNS (port 53, UDP and TCP) is open"
    )
    plain = parse_drill(unchecked.stdout) if unchecked is not None and unchecked.returncode == 0 else None
    if answer.rcode == "NOERROR":
        why = "its answer is not validated (no ad flag): the zone is unsigned or has no anchor"
        anchor = "add its DS as dns.resolver.trust_anchors" if zone != "." else "check the root key"
        return failed(RESOLVER_PROBE, f"{why} ({question})", f"{anchor}; see {logs}")
    if plain is not None and plain.rcode == "NOERROR":
        fix = (
            f"compare dns.resolver.trust_anchors with the DS of {zone}"
            if zone != "."
            else "check the clock and the root key in the resolver image"
        )
        return failed(
            RESOLVER_PROBE,
            f"the resolver gives no validated answer for {question} ({answer.rcode}); with checking "
            "disabled it answers: the signatures do not validate",
            f"{fix}; {logs} names the failing signature",
        )
    return failed(
        RESOLVER_PROBE,
        f"the resolver gives no validated answer for {question} ({answer.rcode}): it reaches no name server",
        f"{upstream}; see {logs}",
    )


def policy_result(site: Site, domain: str, looked_up: Ran, *, local: bool) -> Result:
    """postmap's exit: 0 found a policy, 1 found none (both answered); a table error is
    postmap's fatal, which also exits 1, so stderr decides."""
    logs = _logs(site, "mta-sts", local=local)
    if not looked_up.running:
        return failed(
            POLICY_PROBE,
            "postfix is not running, so its MTA-STS policy lookup was not tried",
            "see `mailstack status` and " + _logs(site, "postfix", local=local),
        )
    fatal = "fatal:" in looked_up.stderr
    if looked_up.returncode == 0 and not fatal:
        policy = looked_up.stdout.strip().splitlines()[0] if looked_up.stdout.strip() else "(empty)"
        return passed(POLICY_PROBE, f"mta-sts answers Postfix's lookup for {domain}: {policy[:100]}")
    if looked_up.returncode == 1 and not fatal:
        return passed(
            POLICY_PROBE,
            f"mta-sts answers Postfix's lookup for {domain}: no MTA-STS policy (DANE or opportunistic TLS)",
        )
    return failed(
        POLICY_PROBE,
        f"Postfix's MTA-STS policy lookup for {domain} failed: {looked_up.error}",
        f"is the mta-sts service running and the resolver answering? see `mailstack status` and {logs}",
    )
