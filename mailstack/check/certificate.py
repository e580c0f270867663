"""What the site's certificates are: which ones the services are given, who issued them, and
with tls.mode acme what the acme service last did (its status.json in the state).

`mailstack up` prints :func:`summary`; `mailstack check` turns the same facts into results
(:func:`acme_results`) and trusts the chains the services are given (:func:`tls_context`).
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailstack.check.results import Result, passed, warned
from mailstack.remote import HostPaths, Shell
from mailstack.site.models import Host, Site
from mailstack.site.tls import Acme
from mailstack.state import State
from mailstack.state.layout import ACME_LIVE, ACME_STATUS, SERVER_KINDS

# Reads a file of the state (relative path); None when it is not there.
Reader = Callable[[str], bytes | None]


@dataclass(frozen=True)
class Served:
    kind: str
    issuer: str
    not_after: datetime
    temporary: bool  # signed by the site's own CA, waiting for the first issuance


@dataclass(frozen=True)
class AcmeState:
    served: list[Served]
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def last(self) -> dict[str, Any]:
        last = self.status.get("last_attempt")
        return last if isinstance(last, dict) else {}

    @property
    def failing(self) -> bool:
        return bool(self.last) and not self.last.get("ok", False)

    def failure(self) -> str:
        """One line: the last error, how many attempts failed, and when the next one is."""
        count = self.status.get("failures") or 1
        retry = self.status.get("next_retry") or "its next wake-up"
        return (
            f"attempt {count} failed at {self.last.get('at')}: {self.last.get('error')}; next try at {retry}"
        )

    def renewal(self) -> str:
        schedule = self.status.get("schedule") or {}
        times = sorted(
            f"{kind} {entry.get('at')} ({entry.get('basis') or entry.get('reason')})"
            for kind, entry in schedule.items()
            if isinstance(entry, dict)
        )
        return "; renewal: " + ", ".join(times) if times else ""


def state_reader(site: Site, state: State, target: Host | None = None, site_dir: Path = Path()) -> Reader:
    """Files of the state, read through it (it may be vaulted); on a deployed host, what the
    acme service wrote there (acme/) is read from the host's state over SSH."""
    shell = Shell(target, site_dir) if target is not None else None

    def read(relpath: str) -> bytes | None:
        if shell is not None and relpath.startswith("acme/"):
            run = shell.run("cat", str(HostPaths(site.site).state / relpath))
            return run.stdout.encode() if run.returncode == 0 else None
        try:
            return state.read(relpath)
        except FileNotFoundError:
            return None

    return read


def acme_state(read: Reader) -> AcmeState:
    local_ca = read("tls/ca.crt")
    ca_subject = x509.load_pem_x509_certificate(local_ca).subject if local_ca else None
    served = []
    for kind in SERVER_KINDS:
        data = read(f"{ACME_LIVE}/{kind}.crt")
        if data is None:
            continue
        leaf = x509.load_pem_x509_certificates(data)[0]
        served.append(
            Served(kind, leaf.issuer.rfc4514_string(), leaf.not_valid_after_utc, leaf.issuer == ca_subject)
        )
    raw = read(ACME_STATUS)
    try:
        status = json.loads(raw) if raw else {}
    except ValueError:
        status = {}
    return AcmeState(served, status if isinstance(status, dict) else {})


def summary(site: Site, read: Reader) -> list[str]:
    """Lines for `mailstack up`: what is served and, with acme, what the acme service is doing."""
    if site.tls.mode == "files":
        return [f"TLS: the operator's certificate {site.tls.cert_file}"]
    if site.tls.mode == "selfsigned":
        return ["TLS: certificates of the site's own CA (tls/ca.crt in the state)"]
    state = acme_state(read)
    lines = [
        f"TLS: {s.kind} {'temporary, from the site CA' if s.temporary else 'from ' + s.issuer}, "
        f"valid until {s.not_after:%Y-%m-%d %H:%M} UTC"
        for s in state.served
    ]
    if state.failing:
        lines.append(f"ACME: {state.failure()}")
    elif not state.last:
        lines.append(f"ACME: ordering from {site.tls.acme.directory if site.tls.acme else '?'}")
    else:
        lines.append(f"ACME: last attempt at {state.last.get('at')} succeeded{state.renewal()}")
    return lines


def acme_results(site: Site, read: Reader) -> list[Result]:
    """tls.mode acme: the certificates come from the CA, and the acme service is not failing."""
    if site.tls.mode != "acme" or site.tls.acme is None:
        return []
    state = acme_state(read)
    fix = (
        f"make {site.hostname} and the mta-sts/autoconfig/autodiscover names resolve to this "
        "server with its http port reachable; `mailstack tls renew SITE` tries again now"
    )
    temporary = [s.kind for s in state.served if s.temporary]
    if temporary and state.failing:
        return [warned("ACME", f"serving the temporary certificate: {state.failure()}", fix)]
    if temporary:
        return [
            warned("ACME", f"serving the temporary certificate; ordering from {site.tls.acme.directory}", "")
        ]
    issuers = sorted({s.issuer for s in state.served})
    until = min(s.not_after for s in state.served) if state.served else datetime.now(UTC)
    kinds = " and ".join(s.kind for s in state.served)
    seen = f"{kinds} from {', '.join(issuers)}, valid until {until:%Y-%m-%d}"
    if state.failing:
        return [warned("ACME", f"{seen}; {state.failure()}", fix)]
    return [passed("ACME", f"{seen}{state.renewal()}")]


def directory_result(acme: Acme) -> Result:
    """The CA's directory answers from here (checked locally only: a host reaches the CA its
    own way). Without it the next renewal fails; the stack keeps its certificate meanwhile."""
    context = ssl.create_default_context()
    if acme.ca_bundle:
        context.load_verify_locations(acme.ca_bundle)
    try:
        with urllib.request.urlopen(acme.directory, timeout=10, context=context) as response:  # noqa: S310 - https only (model)
            directory = json.loads(response.read())
        if not isinstance(directory, dict) or "newOrder" not in directory:
            raise ValueError("no newOrder in it: not an ACME directory")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return warned(
            "ACME directory",
            f"cannot reach the ACME directory {acme.directory}: {reason}",
            "renewals fail until it answers (the stack keeps its certificate); check the URL and the network",
        )
    ari = ", with ARI (renewalInfo)" if "renewalInfo" in directory else ""
    return passed("ACME directory", f"{acme.directory} answers{ari}")


def tls_context(site: Site, read: Reader) -> ssl.SSLContext:
    """Verify chains against the site's CA (selfsigned), the system's roots (files), or with
    acme the system's roots plus the issuers of the certificates the services are given: a
    private or test CA (Pebble) is trusted where this machine's roots do not know it. Names
    are checked per port, as the stack is reached by address."""
    cadata = ""
    if site.tls.mode in ("selfsigned", "acme"):
        cadata = (read("tls/ca.crt") or b"").decode()
    if site.tls.mode == "acme":
        for kind in SERVER_KINDS:
            data = read(f"{ACME_LIVE}/{kind}.crt")
            chain = x509.load_pem_x509_certificates(data) if data else []
            cadata += "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain[1:])
    context = ssl.create_default_context(cadata=cadata or None)
    if site.tls.mode == "acme":
        context.load_default_certs()
        # The issuer (an intermediate) is an anchor of its own: the root is not in the chain.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False
    return context
