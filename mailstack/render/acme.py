"""tls.mode acme: the acme service's settings, and how the TLS services follow its switches.

The acme service (compose/images/acme/mailstack_acme/) writes the served keys and chains into the
state's acme/tls/live/ and rewrites live/serial last. postfix, dovecot and web mount that
directory read-only, and a small loop beside each daemon reloads it when serial changes:
no container restart, no connection dropped, no queued message touched (a reload starts new
processes for new connections; running sessions finish on the old certificate).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from mailstack import services
from mailstack.service_types import CertificateReload
from mailstack.services import ACME_CHALLENGE_DIR, ACME_CONFIG_DIR, ACME_STATE_DIR
from mailstack.site.models import Site
from mailstack.state.crypto import server_names
from mailstack.state.layout import ACME_LIVE, SERVER_KINDS

ACME_CA_BUNDLE = "/run/mailstack/acme/ca-bundle.pem"  # acme.ca_bundle, as a compose secret
# Back-off after a failed attempt: 1 min, doubling, at most 6 h (Let's Encrypt allows 5
# failed validations per name and hour; an unreachable CA costs nothing to retry).
RETRY_MIN_SECONDS = 60
RETRY_MAX_SECONDS = 6 * 3600
# How often the TLS services look at live/serial (a stat and a read of 80 bytes).
WATCH_SECONDS = 5


@dataclass(frozen=True)
class AcmeSettings:
    enabled: bool
    directory_url: str = ""
    email: str = ""
    names: tuple[str, ...] = ()
    kinds: tuple[str, ...] = SERVER_KINDS
    config_dir: str = ACME_CONFIG_DIR
    state_dir: str = ACME_STATE_DIR
    challenge_dir: str = ACME_CHALLENGE_DIR
    ca_bundle: str = ""  # inside the acme container; empty: the system's roots only
    retry_min: int = RETRY_MIN_SECONDS
    retry_max: int = RETRY_MAX_SECONDS
    state_source: str = ""  # the state's acme/, relative to the compose file
    tls_source: str = ""  # the state's acme/tls/
    tls_target: str = ""  # where postfix, dovecot and web see it
    commands: dict[str, list[str]] = field(default_factory=dict)  # service → command with the watch loop


def acme_settings(site: Site, state_rel: str, state_mount: str) -> AcmeSettings:
    acme = site.tls.acme
    if site.tls.mode != "acme" or acme is None:
        return AcmeSettings(enabled=False)
    tls_dir = ACME_LIVE.rsplit("/", 1)[0]  # acme/tls
    serial = f"{state_mount}/{ACME_LIVE}/serial"
    return AcmeSettings(
        enabled=True,
        directory_url=acme.directory,
        email=acme.email,
        names=server_names(site),
        ca_bundle=ACME_CA_BUNDLE if acme.ca_bundle else "",
        state_source=f"{state_rel}/acme",
        tls_source=f"{state_rel}/{tls_dir}",
        tls_target=f"{state_mount}/{tls_dir}",
        commands={
            s.name: watched(s.certificates, serial) for s in services.CATALOGUE if s.certificates is not None
        },
    )


def watched(certificates: CertificateReload, serial: str) -> list[str]:
    """``sh -c`` running the reload loop in the background, then the daemon in its place.

    The loop reloads only after a change it saw, and retries a reload that failed at the
    next look; compose's own interpolation is kept away by doubling every $.
    """
    file = shlex.quote(serial)
    loop = (
        f"last=$(cat {file} 2>/dev/null); "
        f"while sleep {WATCH_SECONDS}; do "
        f"now=$(cat {file} 2>/dev/null) || continue; "
        f'[ "$now" = "$last" ] || {{ {certificates.reload} && last=$now; }}; '
        "done"
    )
    script = f"( {loop} ) & exec {certificates.daemon}"
    return ["/bin/sh", "-c", script.replace("$", "$$")]
