"""The types of the service catalogue (services/): one frozen dataclass per aspect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from mailstack.site.models import Site

TlsMode = Literal["implicit", "starttls", "none"]
# What a service reads from the state (or the operator), each file a compose secret.
# The state's folder of per_user passdb files (mailstack.state.mailcrypt), which the dovecot
# service mounts whole.
MAILCRYPT_PASSDB = "mailcrypt/passdb"

SecretKind = Literal[
    "tls",
    "dkim",
    "rspamd_controller",
    "redis",
    "spamhaus_dqs",
    "acme_ca_bundle",
    "outbound_ca_bundle",
    "postgres",
    "restic",
    "backup_credentials",
    "mailcrypt",
]


@dataclass(frozen=True)
class Port:
    """A protocol the service listens on, published on the site's network.ports.<protocol>."""

    protocol: str  # the field of network.ports (and of site.models.STANDARD_PORTS)
    container: int  # where it listens inside the container
    tls: TlsMode
    security: str  # what `up` prints beside it
    label: str  # the protocol's name in `check`'s reasons
    client: Literal["smtp", "imap", "pop3"] | None = None  # a mail client's (RFC 6186 SRV, autoconfig)


@dataclass(frozen=True)
class Mount:
    """A volume line: ``source:target[:ro]``; a source with a / is a path, else a named volume."""

    source: str
    target: str
    read_only: bool = False
    why: tuple[str, ...] = ()
    # Mounted only when true for the site (None: always).
    when: Callable[[Site], bool] | None = None

    def wanted(self, site: Site) -> bool:
        return self.when is None or self.when(site)

    @property
    def volume(self) -> str | None:
        """The named volume it mounts, if any."""
        return None if "/" in self.source or self.source.startswith("{") else self.source


@dataclass(frozen=True)
class Tmpfs:
    spec: str  # path:options
    why: tuple[str, ...] = ()


@dataclass(frozen=True)
class Network:
    name: str
    aliases: tuple[str, ...] = ()
    online_only: bool = False  # only when the stack may reach the internet (not offline)
    # When true for the site: the service's fixed address on this network
    # (site/resolver.py FIXED_ADDRESSES).
    fixed_address: Callable[[Site], bool] | None = None
    # Joined only when true for the site (None: always).
    when: Callable[[Site], bool] | None = None


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]  # after "CMD"
    why: tuple[str, ...] = ()  # before the test
    start_period: str = ""  # empty: the x-healthcheck default
    start_period_why: tuple[str, ...] = ()
    ports_env: bool = False  # HEALTHCHECK_PORTS: every port the service listens on


@dataclass(frozen=True)
class Config:
    """The service's rendered configuration: config/<rendered>, mounted read-only at target."""

    rendered: str
    target: str
    # How the daemon checks a new configuration before `up` or `deploy` switches to it: run
    # as the container's entrypoint in a throwaway container, the state mounted at STATE_MOUNT.
    check: tuple[str, ...] = ()
    why: tuple[str, ...] = ()  # before its volume line

    @property
    def top(self) -> str:
        """The directory under config/ whose change means a reload."""
        return self.rendered.split("/")[0]


@dataclass(frozen=True)
class Reload:
    """How a running service picks up changed files without losing connections."""

    exec: tuple[str, ...] = ()  # run in the running container; empty: restart the service


@dataclass(frozen=True)
class CertificateReload:
    """The service reads the server certificates. With tls.mode acme, a loop beside the
    daemon runs ``reload`` when the acme service switches certificates."""

    reload: str  # a shell command
    daemon: str  # the daemon in the foreground (the image's CMD), after the loop started
    replaces: Literal["command", "entrypoint"]  # what the loop and the daemon replace
    why: tuple[str, ...]


def _always(_site: Site) -> bool:
    return True


@dataclass(frozen=True)
class Service:
    name: str
    image: str  # compose/images/<image>
    caps: tuple[str, ...]  # added back after cap_drop [ALL] (compose/images/NOTES.md)
    memory: str
    pids: int
    healthcheck: Healthcheck
    reload: Reload
    config: Config
    present: Callable[[Site], bool] = _always
    why: tuple[str, ...] = ()  # before the service in the compose file
    ports: tuple[Port, ...] = ()
    internal_ports: dict[str, int] = field(default_factory=dict)  # compose networks only
    networks: tuple[Network, ...] = ()
    networks_why: tuple[str, ...] = ()
    host_network: bool = False  # network_mode: host
    volumes: tuple[Mount, ...] = ()  # besides the config directory
    tmpfs: tuple[Tmpfs, ...] = ()
    reads: tuple[SecretKind, ...] = ()
    # The environment variable through which the service's TLS library finds
    # tls.outbound_ca_bundle (set only when the site names one).
    ca_bundle_env: str = ""
    certificates: CertificateReload | None = None
    user: str = ""  # empty: the image's
    command: tuple[str, ...] = ()  # empty: the image's
    init: bool = True  # tini as PID 1 (see x-service)
    init_why: tuple[str, ...] = ()
    hostname: bool = False  # the site's hostname (HELO, greeting)
    depends_on: tuple[str, ...] = ()  # those present for the site
    depends_healthy: tuple[str, ...] = ()  # of depends_on: started only once these are healthy
    depends_why: tuple[str, ...] = ()
    fenced: bool = False  # a banned address gets no connection to its published ports
    resolves: bool = False  # looks names up in the world: through the stack's resolver (online)
    stop_grace_period: str = ""
    stop_why: tuple[str, ...] = ()
    # Optional parts of the product (groupware): only a site that has the service gets its
    # configuration files, image, checks and reloads; the others render as if it did not exist.
    optional: bool = False
    # The memory limit when it depends on the site (None: ``memory``).
    memory_for: Callable[[Site], str] | None = None

    def mem_limit(self, site: Site) -> str:
        return self.memory_for(site) if self.memory_for is not None else self.memory
