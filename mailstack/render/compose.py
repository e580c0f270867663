"""The compose file's services, resolved from the catalogue (services/) for one site.

The template only prints these: which service is present, its ports, mounts, secrets and
networks, and every comment, are decided here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mailstack import services
from mailstack.errors import StateError
from mailstack.render.acme import ACME_CA_BUNDLE, AcmeSettings
from mailstack.render.tls import TLS_FILES_DIR
from mailstack.service_types import Network as ServiceNetwork
from mailstack.service_types import SecretKind, Service
from mailstack.services import OUTBOUND_CA_BUNDLE, STATE_MOUNT
from mailstack.site.models import Site
from mailstack.site.resolver import fixed_address
from mailstack.state.layout import BACKUP_SECRET
from mailstack.state.view import StateView

DQS_SECRET = "spamhaus_dqs"  # noqa: S105 - a name: the compose secret, named as its state file
POSTGRES_SECRET = "postgres"  # noqa: S105 - a name, as above
BACKUP_CREDENTIALS_SECRET = "backup_credentials"  # noqa: S105 - a name, as above


@dataclass(frozen=True)
class Secret:
    """A file of the state (or the operator's) that one service reads, as a compose secret."""

    name: str
    file: str  # relative to the compose file (state), or absolute (tls.mode files)
    target: str  # where the service's configuration expects it


@dataclass(frozen=True)
class Entry:
    """A line of a compose list, with the comment lines before it."""

    text: str
    quoted: bool = False
    why: tuple[str, ...] = ()


@dataclass(frozen=True)
class Network:
    name: str
    aliases: tuple[str, ...]
    address: str = ""  # a fixed IPv4 address (site/resolver.py FIXED_ADDRESSES)


@dataclass(frozen=True)
class ComposeService:
    name: str
    why: tuple[str, ...]
    image: str
    command: tuple[str, ...]  # the catalogue's, right after image
    user: str
    network_mode: str
    hostname: str
    init: bool
    init_why: tuple[str, ...]
    cap_add: tuple[str, ...]
    mem_limit: str
    pids_limit: int
    ports: list[str]  # "ip:host:container"
    hook: str  # tls.mode acme: "command" or "entrypoint" that the reload loop replaces; "" for none
    hook_argv: list[str]
    hook_why: tuple[str, ...]
    volumes: list[Entry]
    tmpfs: list[Entry]
    secrets: list[Secret]
    networks: list[Network]
    networks_why: tuple[str, ...]
    depends_on: list[str]
    depends_healthy: list[str]  # of depends_on: compose waits until they are healthy
    depends_why: tuple[str, ...]
    stop_grace_period: str
    stop_why: tuple[str, ...]
    healthcheck: list[str]  # after "CMD"
    healthcheck_why: tuple[str, ...]
    start_period: str
    start_period_why: tuple[str, ...]
    environment: dict[str, str]
    dns: list[str]  # the resolver Docker's DNS forwards other names to

    @property
    def network_aliases(self) -> bool:
        """Whether the networks need the long form (a network with aliases or an address)."""
        return any(n.aliases or n.address for n in self.networks)


@dataclass(frozen=True)
class Slots:
    """The per-site values of the catalogue's ``{placeholders}``."""

    state: str
    fence_table: str
    acme_directory: str
    backup_repository: str = ""  # backup.repository, when it is a path on the host

    def fill(self, text: str) -> str:
        return text.format(
            state=self.state,
            fence_table=self.fence_table,
            acme_directory=self.acme_directory,
            backup_repository=self.backup_repository,
        )


def bind_host(address: str) -> str:
    """An address as compose's ports syntax wants it: IPv6 in brackets."""
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def published_ports(site: Site) -> dict[str, list[str]]:
    """service → its compose "ip:host:container" bindings, for the protocols the site publishes."""
    table = services.ports()
    out: dict[str, list[str]] = {}
    for protocol, host_port in site.network.ports.published().items():
        service, port = table[protocol]
        for address in site.network.bind:
            out.setdefault(service.name, []).append(f"{bind_host(address)}:{host_port}:{port.container}")
    return out


@dataclass(frozen=True)
class _Project:
    """What every service's entry needs to know about the site's project."""

    site: Site
    slots: Slots
    secrets: dict[str, list[Secret]]
    acme: AcmeSettings
    version: str
    offline: bool
    present: set[str]  # service names
    published: dict[str, list[str]]


def compose_services(
    site: Site,
    slots: Slots,
    secrets: dict[str, list[Secret]],
    acme: AcmeSettings,
    version: str,
    *,
    offline: bool,
) -> list[ComposeService]:
    present = services.present(site)
    names = {s.name for s in present}
    project = _Project(site, slots, secrets, acme, version, offline, names, published_ports(site))
    return [_resolve(s, project) for s in present]


def _resolve(s: Service, p: _Project) -> ComposeService:
    # tls.mode acme: the certificate readers run a reload loop beside their daemon.
    hook = s.certificates if p.acme.enabled else None
    return ComposeService(
        name=s.name,
        why=tuple(p.slots.fill(line) for line in s.why),
        image=f"mailstack/{s.image}:{p.version}",
        command=s.command,
        user=s.user,
        network_mode="host" if s.host_network else "",
        hostname=p.site.hostname if s.hostname else "",
        init=s.init,
        init_why=s.init_why,
        cap_add=s.caps,
        mem_limit=s.mem_limit(p.site),
        pids_limit=s.pids,
        ports=p.published.get(s.name, []),
        hook=hook.replaces if hook else "",
        hook_argv=p.acme.commands[s.name] if hook else [],
        hook_why=hook.why if hook else (),
        volumes=_volumes(s, p.site, p.slots, p.acme),
        tmpfs=[Entry(t.spec, why=t.why) for t in s.tmpfs],
        secrets=p.secrets.get(s.name, []),
        networks=[
            _network(s, n, p)
            for n in s.networks
            if not (n.online_only and p.offline) and (n.when is None or n.when(p.site))
        ],
        networks_why=s.networks_why,
        depends_on=[d for d in s.depends_on if d in p.present],
        depends_healthy=[d for d in s.depends_healthy if d in p.present],
        depends_why=s.depends_why,
        stop_grace_period=s.stop_grace_period,
        stop_why=s.stop_why,
        healthcheck=[p.slots.fill(arg) for arg in s.healthcheck.test],
        healthcheck_why=s.healthcheck.why,
        start_period=s.healthcheck.start_period,
        start_period_why=s.healthcheck.start_period_why,
        environment=_environment(s, p),
        dns=[p.site.resolver_address] if s.resolves and p.site.resolver_address else [],
    )


def _environment(s: Service, p: _Project) -> dict[str, str]:
    env = (
        {"HEALTHCHECK_PORTS": " ".join(str(port) for port in listening(s))} if s.healthcheck.ports_env else {}
    )
    if s.ca_bundle_env and any(x.name == "outbound_ca_bundle" for x in p.secrets.get(s.name, [])):
        env[s.ca_bundle_env] = OUTBOUND_CA_BUNDLE
    return env


def _network(s: Service, n: ServiceNetwork, p: _Project) -> Network:
    fixed = n.fixed_address is not None and n.fixed_address(p.site)
    return Network(n.name, n.aliases, fixed_address(p.site.internal_subnet, s.name) if fixed else "")


def listening(s: Service) -> list[int]:
    """Every port the service listens on: its published protocols', then its internal ones."""
    return [p.container for p in s.ports] + list(s.internal_ports.values())


def _volumes(s: Service, site: Site, slots: Slots, acme: AcmeSettings) -> list[Entry]:
    config = Entry(f"./config/{s.config.rendered}:{s.config.target}:ro", why=s.config.why)
    mounts = [config] + [
        Entry(
            slots.fill(f"{m.source}:{m.target}" + (":ro" if m.read_only else "")),
            quoted=m.source.startswith("{state}"),
            why=m.why,
        )
        for m in s.volumes
        if m.wanted(site)
    ]
    if acme.enabled and s.certificates is not None:
        mounts.append(Entry(f"{acme.tls_source}:{acme.tls_target}:ro", quoted=True))
    return mounts


def named_volumes(site: Site) -> list[str]:
    """The named volumes the site's services mount, in the order they first appear."""
    mounted = [m.volume for s in services.present(site) for m in s.volumes if m.volume and m.wanted(site)]
    return list(dict.fromkeys(mounted))


def compose_secrets(site: Site, state: StateView, state_rel: str) -> dict[str, list[Secret]]:
    """Each service's files from the state, one compose secret per file, mounted exactly where
    its configuration expects them.

    No container sees the state directory itself: postfix and dovecot get the server keys
    and certificates, rspamd the DKIM keys and its passwords, redis its password; nobody
    gets the local CA's key.
    """
    by_kind: dict[SecretKind, list[Secret]] = {"tls": _tls_secrets(site, state, state_rel)}
    by_kind["dkim"] = [
        Secret(f"dkim_{k.domain}_{k.selector}", f"{state_rel}/{k.relpath}", f"{STATE_MOUNT}/{k.relpath}")
        for k in state.dkim
    ]
    for name in ("rspamd_controller", "redis"):
        path = state.secret_files.get(name)
        by_kind[name] = [Secret(name, f"{state_rel}/{path}", f"{STATE_MOUNT}/{path}")] if path else []
    by_kind["spamhaus_dqs"] = _dqs_secret(site, state, state_rel)
    by_kind["postgres"] = _postgres_secret(site, state, state_rel)
    by_kind["restic"], by_kind["backup_credentials"] = _backup_secrets(site, state, state_rel)
    by_kind["mailcrypt"] = [
        Secret(f"mailcrypt_{role}", f"{state_rel}/{path}", f"{STATE_MOUNT}/{path}")
        for role, path in sorted(state.mailcrypt_files.items())
    ]
    acme = site.tls.acme
    bundle = acme.ca_bundle if acme is not None else None
    by_kind["acme_ca_bundle"] = [Secret("acme_ca_bundle", bundle, ACME_CA_BUNDLE)] if bundle else []
    outbound = site.tls.outbound_ca_bundle
    by_kind["outbound_ca_bundle"] = (
        [Secret("outbound_ca_bundle", outbound, OUTBOUND_CA_BUNDLE)] if outbound and not site.offline else []
    )
    return {s.name: [x for kind in s.reads for x in by_kind[kind]] for s in services.CATALOGUE}


def _postgres_secret(site: Site, state: StateView, state_rel: str) -> list[Secret]:
    """The sogo role's database password (groupware), made once in the state."""
    path = state.secret_files.get(POSTGRES_SECRET)
    if not site.groupware.enabled:
        return []
    if path is None:
        raise StateError("groupware is on, but the state has no database password for SOGo")
    return [Secret(POSTGRES_SECRET, f"{state_rel}/{path}", f"{STATE_MOUNT}/{path}")]


def _backup_secrets(site: Site, state: StateView, state_rel: str) -> tuple[list[Secret], list[Secret]]:
    """The repository's password (made once in the state) and, for rest: and s3:, the login
    the operator gave; only their paths are rendered."""
    if site.backup is None:
        return [], []
    password = state.secret_files.get(BACKUP_SECRET)
    if password is None:
        raise StateError("backup is on, but the state has no restic password")
    login = state.secret_files.get(BACKUP_CREDENTIALS_SECRET)
    if login is None and site.backup.kind in ("rest", "s3"):
        raise StateError(
            f"backup.repository is a {site.backup.kind}: repository, but the state has no login for it: "
            "give it with `mailstack secret set SITE backup-credentials` (NAME=value pairs on "
            "standard input, such as AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=…)"
        )
    return (
        [Secret(BACKUP_SECRET, f"{state_rel}/{password}", f"{STATE_MOUNT}/{password}")],
        [Secret(BACKUP_CREDENTIALS_SECRET, f"{state_rel}/{login}", f"{STATE_MOUNT}/{login}")]
        if login
        else [],
    )


def _dqs_secret(site: Site, state: StateView, state_rel: str) -> list[Secret]:
    """The Spamhaus DQS key (abuse.spamhaus_dqs), which the operator keeps in the state: only
    its path is rendered, never the key."""
    if not site.abuse.spamhaus_dqs or site.offline:
        return []
    path = state.secret_files.get(DQS_SECRET)
    if path is None:
        raise StateError(
            "abuse.spamhaus_dqs is on, but the state has no Spamhaus DQS key: give it with "
            "`mailstack secret set SITE spamhaus-dqs` (it reads the key from standard input)"
        )
    return [Secret(DQS_SECRET, f"{state_rel}/{path}", f"{STATE_MOUNT}/{path}")]


def _tls_secrets(site: Site, state: StateView, state_rel: str) -> list[Secret]:
    if site.tls.mode == "files":
        return [
            Secret("tls_cert", str(site.tls.cert_file), f"{TLS_FILES_DIR}/cert.pem"),
            Secret("tls_key", str(site.tls.key_file), f"{TLS_FILES_DIR}/key.pem"),
        ]
    if site.tls.mode == "acme":
        return []  # a read-only mount of the state's acme/tls (the acme service switches files in it)
    return [
        Secret(f"tls_{role}", f"{state_rel}/{path}", f"{STATE_MOUNT}/{path}")
        for role, path in sorted(state.tls_files.items())
        if role != "ca_cert"
    ]


def secret_files(secrets: dict[str, list[Secret]]) -> list[Secret]:
    """Every secret once, by name: the compose file's top-level secrets."""
    return sorted({x.name: x for xs in secrets.values() for x in xs}.values(), key=lambda x: x.name)
