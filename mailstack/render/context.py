"""Derived values for the templates.

Templates only loop and substitute; every string that needs building (map lines, port
bindings, IPv6 brackets, paths) is built here, where it is unit-tested.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mailstack import __version__
from mailstack.render.acme import ACME_CA_BUNDLE, AcmeSettings, acme_settings
from mailstack.render.web import WEB_HTTP_PORT, WEB_HTTPS_PORT, WebSettings, web_settings
from mailstack.site.fields import format_size, rate_parts
from mailstack.site.models import Site
from mailstack.state.view import StateView

# Where each protocol listens inside its container, and which service serves it.
CONTAINER_PORTS: dict[str, tuple[str, int]] = {
    "smtp": ("postfix", 25),
    "submission": ("postfix", 587),
    "submissions": ("postfix", 465),
    "imap": ("dovecot", 143),
    "imaps": ("dovecot", 993),
    "pop3": ("dovecot", 110),
    "pop3s": ("dovecot", 995),
    "managesieve": ("dovecot", 4190),
    "http": ("web", WEB_HTTP_PORT),  # nginx runs as www-data: unprivileged ports inside
    "https": ("web", WEB_HTTPS_PORT),
}
# Ports the services speak to each other on, over the compose networks only (never published).
INTERNAL_PORTS: dict[str, int] = {
    "lmtp": 24,  # dovecot LMTP, for postfix's virtual_transport
    "sasl": 12345,  # dovecot auth, for postfix's smtpd_sasl_path
    "quota_status": 12340,  # dovecot quota-status policy, for postfix's check_policy_service
    "milter": 11332,  # rspamd proxy worker in milter mode
    "normal": 11333,  # rspamd normal (scanner) worker
    "controller": 11334,  # rspamd controller (web UI, learning); back network only
    "redis": 6379,
    "guard": 8425,  # the guard's auth policy API, for dovecot's auth_policy_server_url; back network only
}
STATE_MOUNT = "/run/mailstack/state"
# tmpfs where the rspamd entrypoint puts what its unprivileged workers must read (0400, _rspamd).
RSPAMD_SECRETS = "/run/rspamd-secrets"
# tmpfs where the redis entrypoint puts its ACL file (0400, redis).
REDIS_SECRETS = "/run/redis-secrets"
# Where the guard image reads config/guard, and where it keeps the bans (its volume).
GUARD_CONFIG_DIR = "/etc/mailstack-guard"
GUARD_BANS_FILE = "/var/lib/mailstack-guard/bans.json"
# The guard's name on the back network alone: the service name would resolve to its address
# on whichever network Docker's DNS answers first, front included, where it does not listen.
GUARD_POLICY_HOST = "guard-policy"
# A banned address gets no connection to these services' published ports (the web's stay open).
MAIL_SERVICES = ("postfix", "dovecot")
# Where tls.mode "files" mounts the operator's certificate and key in postfix and dovecot.
TLS_FILES_DIR = "/run/mailstack/tls"

# --- TLS policy (issue #5): the same on every port, port 25 included ----------------------
# TLS 1.2 suites: ECDHE key exchange, AEAD ciphers only (Mozilla "intermediate" 5.7+, minus
# DHE as in its 6.0 guidelines; internet.nl "good"). ECDSA first: the ECDSA certificate is
# preferred, RSA serves older clients. https://ssl-config.mozilla.org/guidelines/5.7.json
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
# TLS 1.3 suites (all AEAD, all with (EC)DHE); OpenSSL's default set, named explicitly.
TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
# Key exchange groups (Mozilla): no finite-field DHE group, not even RFC 7919's in TLS 1.3.
TLS_GROUPS = ("X25519", "prime256v1", "secp384r1")
# Signature algorithms without SHA-1 and SHA-224 (internet.nl "key exchange hash"), for the
# OpenSSL configuration Postfix and Dovecot load: neither has a setting of its own for it.
TLS_SIGNATURE_ALGORITHMS = (
    "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:ed25519:ed448:"
    "rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pss_pss_sha512:"
    "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:"
    "RSA+SHA256:RSA+SHA384:RSA+SHA512"
)
# Lowest TLS version of the client ports (465, 587, IMAP, POP3, ManageSieve) per tls.profile.
# Port 25 always accepts TLS 1.2 and 1.3: a sender refused there falls back to plaintext.
TLS_PROFILE_MIN_VERSION = {"intermediate": "TLSv1.2", "modern": "TLSv1.3"}

# --- Containers (issue #5) -------------------------------------------------------------------
# Every service runs with cap_drop [ALL], no-new-privileges and a read-only root filesystem;
# these are the capabilities each one gets back, found by experiment (compose/images/NOTES.md),
# and its memory and process limits (idle use measured there, limits at several times that).
CONTAINER_CAPS: dict[str, tuple[str, ...]] = {
    # master stays root: DAC_OVERRIDE to walk the postfix-owned queue, SETUID/SETGID to
    # start its daemons as postfix. No CHOWN, FOWNER, KILL: Postfix needs none of them.
    "postfix": ("DAC_OVERRIDE", "SETUID", "SETGID"),
    # master stays root: CHOWN for its sockets, SETUID/SETGID for dovecot, dovenull and
    # vmail, SYS_CHROOT for the login processes' chroot; DAC_READ_SEARCH reads the TLS keys
    # when the state belongs to another user than root. KILL: on reload the master sends
    # SIGQUIT to the processes of changed services, which run as other users; without it
    # they keep serving the old configuration ("kill(…, SIGQUIT) failed: Operation not
    # permitted" in its log).
    "dovecot": ("CHOWN", "DAC_READ_SEARCH", "KILL", "SETUID", "SETGID", "SYS_CHROOT"),
    # Used by the entrypoints only (read the secrets, hand copies to the daemon's user,
    # setpriv to it); the daemons themselves run without any capability.
    "rspamd": ("CHOWN", "DAC_READ_SEARCH", "SETUID", "SETGID"),
    "redis": ("CHOWN", "DAC_READ_SEARCH", "SETUID", "SETGID"),
    # The guard runs as its own user and needs nothing; the fence (host network namespace)
    # only changes its own nftables table: NET_ADMIN, as root without any other capability.
    "guard": (),
    "fence": ("NET_ADMIN",),
    # Used by the entrypoint only (read the TLS keys, give copies to www-data, setpriv to it);
    # nginx itself, master included, runs as www-data without any capability.
    "web": ("CHOWN", "DAC_READ_SEARCH", "SETUID", "SETGID"),
    # Root writing the state's acme/ (tls.mode acme); DAC_OVERRIDE only for a state directory
    # that belongs to another user than root (mailstack run without root).
    "acme": ("DAC_OVERRIDE",),
}
CONTAINER_MEMORY: dict[str, str] = {
    "postfix": "512m",
    "dovecot": "512m",
    "rspamd": "1g",
    "redis": "256m",
    "guard": "64m",
    "fence": "64m",
    "web": "64m",
    "acme": "128m",
}
CONTAINER_PIDS: dict[str, int] = {
    "postfix": 512,
    "dovecot": 512,
    "rspamd": 128,
    "redis": 64,
    "guard": 32,
    "fence": 16,
    "web": 32,
    "acme": 16,
}
# Redis keeps this much data at most (Rspamd's rate limits, history, Bayes), below its memory limit.
REDIS_MAXMEMORY = "192mb"

PROBE_QUOTA = "10M"

# Which service reads which secret of the state (compose secrets, mounted one file each).
SECRET_SERVICES: dict[str, tuple[str, ...]] = {
    "rspamd_controller": ("rspamd",),
    "redis": ("rspamd", "redis"),
}

# Dovecot delivers concurrently to one user at most this often (lmtp_user_concurrency_limit);
# Postfix's LMTP concurrency stays below it so no delivery meets "451 4.3.0 Too many concurrent".
DOVECOT_LMTP_USER_CONCURRENCY = 10
POSTFIX_LMTP_CONCURRENCY = 8

# Rspamd modules that look things up on the internet (DNS lists, HTTP feeds, rspamd.com
# services). Without a resolver that reaches the world they only add latency and errors.
RSPAMD_ONLINE_MODULES: tuple[str, ...] = (
    "asn",
    "dmarc",
    "fuzzy_check",
    "hfilter",
    "known_senders",
    "neural",
    "phishing",
    "rbl",
    "reputation",
    "rspamd_update",
    "spf",
    "url_redirector",
)
# Local parts that RFC 5321 (postmaster) and RFC 2142 (abuse) require for every domain.
ROLE_ACCOUNTS: tuple[str, ...] = ("postmaster", "abuse")
# Names the local(8) delivery agent accepts for the server's own hostname.
LOCAL_ALIASES: tuple[str, ...] = ("postmaster", "abuse", "root", "mailer-daemon")


@dataclass(frozen=True)
class DkimSelector:
    domain: str
    selector: str
    algorithm: str
    key_path: str  # inside the rspamd container (its secrets tmpfs, readable by _rspamd)
    dns_name: str
    dns_value: str


@dataclass(frozen=True)
class DkimDomain:
    """One signing domain: every selector signs (RSA and Ed25519); ARC seals with RSA."""

    domain: str
    selectors: tuple[DkimSelector, ...]
    arc: DkimSelector | None  # RFC 8617 only defines rsa-sha256 for ARC


@dataclass(frozen=True)
class TlsPair:
    key: str
    cert: str


@dataclass(frozen=True)
class TlsPolicy:
    profile: str
    client_min_version: str  # Dovecot ssl_min_protocol: TLSv1.2 or TLSv1.3
    postfix_mandatory_protocols: str  # 587 and 465: >=TLSv1.2 or >=TLSv1.3
    ciphers: str  # TLS 1.2
    suites: str  # TLS 1.3
    postfix_groups: str  # tls_eecdh_auto_curves: space-separated
    dovecot_groups: str  # ssl_curve_list: colon-separated
    signature_algorithms: str


@dataclass(frozen=True)
class Secret:
    """A file of the state (or the operator's) that one service reads, as a compose secret."""

    name: str
    file: str  # relative to the compose file (state), or absolute (tls.mode files)
    target: str  # where the service's configuration expects it


@dataclass(frozen=True)
class Confinement:
    cap_add: tuple[str, ...]
    mem_limit: str
    pids_limit: int


@dataclass(frozen=True)
class AuthBanSettings:
    """abuse.auth_ban for the guard (guard.toml), the fence (fence.nft) and dovecot."""

    enabled: bool  # the guard runs and dovecot asks it before every login
    firewall: bool  # the fence runs too (only when enabled)
    failures: int
    window: int  # seconds
    ban: int  # seconds
    exempt: list[str]  # besides loopback and the front network's gateway (the guard adds those)
    policy_host: str  # the guard's name on the back network only (a compose network alias)
    policy_url: str  # dovecot auth_policy_server_url
    hash_nonce: str  # dovecot auth_policy_hash_nonce (required; see auth_ban_settings)
    table: str  # the fence's nftables table (family inet)
    fence_rules: list[str]  # its forward chain's rules
    config_dir: str
    bans_file: str


@dataclass(frozen=True)
class RateLimit:
    """An Rspamd ratelimit rule: one bucket per authenticated user it selects."""

    name: str
    selector: str  # a UCL-quoted string: Rspamd's selector language
    burst: int
    rate: str  # "100 / 1h"


@dataclass(frozen=True)
class Context:
    site: Site
    version: str
    published: dict[str, list[str]]  # service → compose "ip:host:container" bindings
    ports: dict[str, int]  # internal service ports (INTERNAL_PORTS)
    message_size: int
    message_size_human: str
    mydestination: str
    virtual_domains: list[str]
    virtual_mailboxes: list[str]
    virtual_aliases: list[str]
    local_aliases: list[str]
    sender_logins: list[str]
    dovecot_users: list[str]
    dkim: list[DkimSelector]
    dkim_domains: list[DkimDomain]
    tls: dict[str, str]  # role → path inside the containers
    tls_pairs: list[TlsPair]  # server key/cert pairs, preferred first (ECDSA, then RSA)
    tls_chain_files: str  # postfix smtpd_tls_chain_files: key, cert, key, cert
    tls_policy: TlsPolicy
    secrets: dict[str, list[Secret]]  # service → the secrets it reads
    secret_files: list[Secret]  # every secret once, for the compose file's top-level secrets
    confinement: dict[str, Confinement]
    redis_maxmemory: str
    send_limits: list[RateLimit]
    rspamd_secrets: str
    redis_secrets: str
    offline: bool
    rspamd_disabled: dict[str, bool]  # online-only rspamd module → disabled here
    lmtp_user_concurrency: int
    lmtp_concurrency: int
    auth_ban: AuthBanSettings
    web: WebSettings
    acme: AcmeSettings

    def as_template_vars(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def build_context(
    site: Site, state: StateView, state_dir: Path, out_dir: Path, *, offline: bool = True
) -> Context:
    pairs = tls_pairs(site, state)
    dkim = dkim_selectors(state)
    state_rel = os.path.relpath(state_dir.resolve(), out_dir.resolve())
    service_secrets = compose_secrets(site, state, state_rel)
    return Context(
        site=site,
        version=__version__,
        published=published_ports(site),
        ports=dict(INTERNAL_PORTS),
        message_size=site.limits.message_size,
        message_size_human=format_size(site.limits.message_size),
        mydestination=mydestination(site),
        virtual_domains=[f"{name}\tOK" for name in site.domain_names],
        virtual_mailboxes=[f"{m.address}\tOK" for m in site.mailboxes] + [f"{site.probe_address}\tOK"],
        virtual_aliases=virtual_alias_lines(site),
        local_aliases=local_alias_lines(site),
        sender_logins=sender_login_lines(site),
        dovecot_users=dovecot_user_lines(site, state.probe_hash),
        dkim=dkim,
        dkim_domains=dkim_domains(dkim),
        tls=tls_paths(site, state),
        tls_pairs=pairs,
        tls_chain_files=chain_files(pairs, state),
        tls_policy=tls_policy(site),
        secrets=service_secrets,
        secret_files=sorted(
            {x.name: x for xs in service_secrets.values() for x in xs}.values(), key=lambda x: x.name
        ),
        confinement={
            service: Confinement(CONTAINER_CAPS[service], CONTAINER_MEMORY[service], CONTAINER_PIDS[service])
            for service in CONTAINER_CAPS
        },
        redis_maxmemory=REDIS_MAXMEMORY,
        send_limits=send_limits(site),
        rspamd_secrets=RSPAMD_SECRETS,
        redis_secrets=REDIS_SECRETS,
        offline=offline,
        rspamd_disabled=rspamd_disabled(offline=offline),
        lmtp_user_concurrency=DOVECOT_LMTP_USER_CONCURRENCY,
        lmtp_concurrency=POSTFIX_LMTP_CONCURRENCY,
        auth_ban=auth_ban_settings(site),
        web=web_settings(site, [(p.cert, p.key) for p in pairs], web_tls_protocols(site)),
        acme=acme_settings(site, state_rel, STATE_MOUNT),
    )


def bind_host(address: str) -> str:
    """An address as compose's ports syntax wants it: IPv6 in brackets."""
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def published_ports(site: Site) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for protocol, host_port in site.network.ports.published().items():
        service, container_port = CONTAINER_PORTS[protocol]
        for address in site.network.bind:
            out.setdefault(service, []).append(f"{bind_host(address)}:{host_port}:{container_port}")
    return out


def mydestination(site: Site) -> str:
    """Postfix's local domains: the server's own name, unless it is also a virtual domain.

    A domain must never be both in mydestination and virtual_mailbox_domains.
    """
    names = ["localhost"]
    if site.hostname not in site.domain_names:
        names.insert(0, "$myhostname")
    return ", ".join(names)


def virtual_alias_lines(site: Site) -> list[str]:
    """Postfix virtual_alias_maps: aliases, role accounts, mailboxes of catch-all domains, catch-alls.

    postmaster@ (RFC 5321 §4.5.1) and abuse@ (RFC 2142) must reach someone in every domain:
    where the site defines no such alias or mailbox, they go to admin_email.
    """
    lines = [f"{a.address}\t{','.join(a.to)}" for a in site.aliases]
    defined = {a.address for a in site.aliases} | {m.address for m in site.mailboxes}
    for domain in site.domain_names:
        for local in ROLE_ACCOUNTS:
            address = f"{local}@{domain}"
            if address not in defined and address != site.admin_email:
                lines.append(f"{address}\t{site.admin_email}")
    # A catch-all also matches the domain's real mailboxes (Postfix tries user@domain, then
    # @domain): each mailbox of such a domain maps to itself first.
    # https://www.postfix.org/VIRTUAL_README.html#virtual_alias
    catch_all_domains = {d.name for d in site.domains if d.catch_all}
    lines += [
        f"{m.address}\t{m.address}"
        for m in site.mailboxes
        if m.address.rpartition("@")[2] in catch_all_domains
    ]
    lines += [f"@{d.name}\t{d.catch_all}" for d in site.domains if d.catch_all]
    return lines


def local_alias_lines(site: Site) -> list[str]:
    """alias_maps (texthash: "name value") for mail to the server's own hostname."""
    return [f"{name}\t{site.admin_email}" for name in LOCAL_ALIASES]


def sender_login_lines(site: Site) -> list[str]:
    """smtpd_sender_login_maps: each address → the logins that may send as it."""
    owners: dict[str, list[str]] = {site.probe_address: [site.probe_address]}
    for m in site.mailboxes:
        for address in (m.address, *m.send_as):
            owners.setdefault(address, []).append(m.address)
    return [f"{address}\t{','.join(logins)}" for address, logins in sorted(owners.items())]


def dovecot_user_lines(site: Site, probe_hash: str) -> list[str]:
    """passwd-file lines: user:password:uid:gid:gecos:home:shell:extra fields.

    uid, gid and home come from mail_uid, mail_gid and mail_home in dovecot.conf. The quota
    needs the userdb_ prefix or Dovecot 2.4 ignores it silently; a size without a unit is
    bytes. No quota means the global quota_storage_size (unlimited).
    """
    lines = []
    for m in site.mailboxes:
        extra = f"userdb_quota_storage_size={m.quota}" if m.quota is not None else ""
        lines.append(f"{m.address}:{m.password_hash}::::::{extra}")
    # The probe mailbox holds at most a few probe messages, each deleted by the check that sent it.
    lines.append(f"{site.probe_address}:{probe_hash}::::::userdb_quota_storage_size={PROBE_QUOTA}")
    return lines


def dkim_selectors(state: StateView) -> list[DkimSelector]:
    return [
        DkimSelector(
            domain=k.domain,
            selector=k.selector,
            algorithm=k.algorithm,
            key_path=f"{RSPAMD_SECRETS}/{k.relpath}",
            dns_name=f"{k.selector}._domainkey.{k.domain}",
            dns_value=f"v=DKIM1; k={k.algorithm}; p={k.public_b64}",
        )
        for k in state.dkim
    ]


def dkim_domains(selectors: list[DkimSelector]) -> list[DkimDomain]:
    """Selectors grouped by domain, in the order they come; RSA first within a domain."""
    grouped: dict[str, list[DkimSelector]] = {}
    for s in selectors:
        grouped.setdefault(s.domain, []).append(s)
    out = []
    for domain, items in grouped.items():
        ordered = tuple(sorted(items, key=lambda s: s.algorithm != "rsa"))
        arc = next((s for s in ordered if s.algorithm == "rsa"), None)
        out.append(DkimDomain(domain=domain, selectors=ordered, arc=arc))
    return out


def tls_paths(site: Site, state: StateView) -> dict[str, str]:
    if site.tls.mode == "files":
        return {"cert": f"{TLS_FILES_DIR}/cert.pem", "key": f"{TLS_FILES_DIR}/key.pem"}
    return {role: f"{STATE_MOUNT}/{path}" for role, path in sorted(state.tls_files.items())}


def tls_pairs(site: Site, state: StateView) -> list[TlsPair]:
    """Server key/cert pairs, preferred first: ECDSA, then RSA for older clients."""
    paths = tls_paths(site, state)
    if site.tls.mode == "files":
        return [TlsPair(key=paths["key"], cert=paths["cert"])]
    return [
        TlsPair(key=paths[f"{kind}_key"], cert=paths[f"{kind}_cert"])
        for kind in ("ecdsa", "rsa")
        if f"{kind}_key" in paths and f"{kind}_cert" in paths
    ]


def chain_files(pairs: list[TlsPair], state: StateView) -> str:
    """smtpd_tls_chain_files: each key followed by its certificate chain. With tls.mode acme,
    files with both (the acme service replaces each by one rename, so a new smtpd never
    reads a key without its certificate)."""
    combined = [state.tls_files.get(f"{kind}_pem") for kind in ("ecdsa", "rsa")]
    if all(combined):
        return ", ".join(f"{STATE_MOUNT}/{path}" for path in combined)
    return ", ".join(f"{p.key}, {p.cert}" for p in pairs)


def tls_policy(site: Site) -> TlsPolicy:
    minimum = TLS_PROFILE_MIN_VERSION[site.tls.profile]
    return TlsPolicy(
        profile=site.tls.profile,
        client_min_version=minimum,
        postfix_mandatory_protocols=f">={minimum}",
        ciphers=TLS12_CIPHERS,
        suites=TLS13_SUITES,
        postfix_groups=" ".join(TLS_GROUPS),
        dovecot_groups=":".join(TLS_GROUPS),
        signature_algorithms=TLS_SIGNATURE_ALGORITHMS,
    )


def web_tls_protocols(site: Site) -> str:
    """nginx ssl_protocols: TLS 1.2 and 1.3, or 1.3 only with tls.profile modern (as 465, 993, …)."""
    minimum = TLS_PROFILE_MIN_VERSION[site.tls.profile]
    return "TLSv1.3" if minimum == "TLSv1.3" else "TLSv1.2 TLSv1.3"


def compose_secrets(site: Site, state: StateView, state_rel: str) -> dict[str, list[Secret]]:
    """Each service's files from the state, one compose secret per file, mounted exactly where
    its configuration expects them (the paths the whole state mount used to provide).

    No container sees the state directory itself: postfix and dovecot get the server keys
    and certificates, rspamd the DKIM keys and its passwords, redis its password; nobody
    gets the local CA's key.
    """
    if site.tls.mode == "files":
        tls = [
            Secret("tls_cert", str(site.tls.cert_file), f"{TLS_FILES_DIR}/cert.pem"),
            Secret("tls_key", str(site.tls.key_file), f"{TLS_FILES_DIR}/key.pem"),
        ]
    elif site.tls.mode == "acme":
        tls = []  # a read-only mount of the state's acme/tls (the acme service switches files in it)
    else:
        tls = [
            Secret(f"tls_{role}", f"{state_rel}/{path}", f"{STATE_MOUNT}/{path}")
            for role, path in sorted(state.tls_files.items())
            if role != "ca_cert"
        ]
    out: dict[str, list[Secret]] = {"postfix": list(tls), "dovecot": list(tls), "rspamd": [], "redis": []}
    out["web"] = list(tls)
    acme = site.tls.acme
    out["acme"] = []
    if acme is not None and acme.ca_bundle is not None:
        out["acme"].append(Secret("acme_ca_bundle", acme.ca_bundle, ACME_CA_BUNDLE))
    for key in state.dkim:
        out["rspamd"].append(
            Secret(
                f"dkim_{key.domain}_{key.selector}",
                f"{state_rel}/{key.relpath}",
                f"{STATE_MOUNT}/{key.relpath}",
            )
        )
    for name, path in sorted(state.secret_files.items()):
        for service in SECRET_SERVICES.get(name, ()):
            out[service].append(Secret(name, f"{state_rel}/{path}", f"{STATE_MOUNT}/{path}"))
    return out


def send_limits(site: Site) -> list[RateLimit]:
    """Rspamd ratelimit rules for authenticated senders: one for every mailbox without a
    send_rate of its own (limits.send_rate), one per distinct mailbox send_rate.

    The selectors never pick the same user twice (the bucket key is the selected value).
    The ratelimit bucket counts recipients: burst = the rate's count, refilled over its period.
    """
    own: dict[str, list[str]] = {}
    for m in site.mailboxes:
        if m.send_rate is not None:
            own.setdefault(m.send_rate, []).append(m.address)
    rules = []
    if site.limits.send_rate is not None:
        listed = [address for addresses in own.values() for address in addresses]
        selector = "user.lower" + (f".not_in({_selector_args(listed)})" if listed else "")
        rules.append(_rate_rule("mailstack_send", selector, site.limits.send_rate))
    for i, (rate, addresses) in enumerate(sorted(own.items(), key=lambda kv: kv[1][0]), start=1):
        rules.append(_rate_rule(f"mailstack_send_{i}", f"user.lower.in({_selector_args(addresses)})", rate))
    return rules


def _selector_args(addresses: list[str]) -> str:
    # Double-quoted selector arguments; addresses never contain '"' or '\' (see fields.py).
    return ", ".join(f'"{a}"' for a in addresses)


def _rate_rule(name: str, selector: str, rate: str) -> RateLimit:
    count, period = rate_parts(rate)
    return RateLimit(name=name, selector=json.dumps(selector), burst=count, rate=f"{count} / {period}")


def rspamd_disabled(*, offline: bool) -> dict[str, bool]:
    """Each module that needs the internet → whether to switch it off (all of them offline)."""
    return dict.fromkeys(RSPAMD_ONLINE_MODULES, offline)


def auth_ban_settings(site: Site) -> AuthBanSettings:
    ban = site.abuse.auth_ban
    return AuthBanSettings(
        enabled=ban.enabled,
        firewall=ban.enabled and ban.firewall,
        failures=ban.failures,
        window=ban.window,
        ban=ban.ban,
        exempt=list(ban.exempt),
        policy_host=GUARD_POLICY_HOST,
        policy_url=f"http://{GUARD_POLICY_HOST}:{INTERNAL_PORTS['guard']}/",
        # Dovecot refuses a policy server without a nonce. It salts the password hash it sends
        # (auth_policy_hash_truncate keeps 12 bits of it): the guard only tells attempts apart
        # by it and never learns anything about a password, so the nonce needs no secrecy.
        hash_nonce=f"mailstack-{site.site}",
        table=fence_table(site),
        fence_rules=fence_rules(site),
        config_dir=GUARD_CONFIG_DIR,
        bans_file=GUARD_BANS_FILE,
    )


def fence_table(site: Site) -> str:
    """The fence's nftables table: one per site, so that sites on one host never meet."""
    return "mailstack_" + site.site.replace("-", "_")


def fence_rules(site: Site) -> list[str]:
    """Rules of the fence's forward chain: a banned source's TCP connections to the site's
    published mail ports (the host port before Docker's DNAT: ct original) are reset.

    One rule per address family the ports are published on; a specific bind address is
    matched too, so another site on the same port but another address is not affected.
    """
    ports = sorted(
        {
            port
            for protocol, port in site.network.ports.published().items()
            if CONTAINER_PORTS[protocol][0] in MAIL_SERVICES
        }
    )
    if not ports:
        return []
    port_set = ", ".join(str(port) for port in ports)
    rules = []
    for version, family, banned, wildcard in ((4, "ip", "banned4", "0.0.0.0"), (6, "ip6", "banned6", "::")):  # noqa: S104
        addresses = [a for a in site.network.bind if ipaddress.ip_address(a).version == version]
        if not addresses:
            continue
        daddr = "" if wildcard in addresses else f"ct original {family} daddr {{ {', '.join(addresses)} }} "
        rules.append(
            f"{family} saddr @{banned} {daddr}meta l4proto tcp ct original proto-dst {{ {port_set} }} "
            "reject with tcp reset"
        )
    return rules
