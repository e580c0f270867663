"""The services around the mail path: the resolver, MTA-STS policies, the web service,
certificates from an ACME CA, and login bans (guard, fence)."""

from __future__ import annotations

from mailstack.service_types import (
    CertificateReload,
    Config,
    Healthcheck,
    Mount,
    Network,
    Port,
    Reload,
    Service,
    Tmpfs,
)
from mailstack.services.paths import (
    ACME_CHALLENGE_DIR,
    ACME_CONFIG_DIR,
    ACME_ROOT,
    ACME_STATE_DIR,
    GUARD_CONFIG_DIR,
    GUARD_DATA_DIR,
    GUARD_POLICY_HOST,
    SOGO_STATIC,
    WEB_CONFIG_DIR,
    WEB_HTTP_PORT,
    WEB_HTTPS_PORT,
)
from mailstack.site.models import Site


def _bans(site: Site) -> bool:
    return site.abuse.auth_ban.enabled


def _fence(site: Site) -> bool:
    return site.abuse.auth_ban.enabled and site.abuse.auth_ban.firewall


def _acme(site: Site) -> bool:
    return site.tls.mode == "acme"


def _online(site: Site) -> bool:
    return not site.offline


def _groupware(site: Site) -> bool:
    return site.groupware.enabled


def _web(site: Site) -> bool:
    published = site.network.ports.published()
    return "http" in published or "https" in published


_GUARD_TOML = f"{GUARD_CONFIG_DIR}/guard.toml"
_ACME_TOML = f"{ACME_CONFIG_DIR}/acme.toml"


RESOLVER = Service(
    name="resolver",
    image="resolver",
    present=_online,
    why=(
        "Unbound: the stack's own DNSSEC-validating, caching resolver (dns.resolver). postfix,",
        "rspamd and mta-sts ask it through Docker's DNS, which forwards every name outside the",
        "project to it. It answers on its fixed back-network address only; front is its way out.",
    ),
    # Runs as unbound from the start; port 53 needs no capability inside a container.
    caps=(),
    memory="128m",
    pids=32,
    config=Config("resolver", "/etc/unbound", check=("unbound-checkconf", "/etc/unbound/unbound.conf")),
    tmpfs=(
        Tmpfs(
            "/tmp:size=1m",  # noqa: S108 - the container's own /tmp
            (
                "The control socket. /tmp because Docker applies a tmpfs mode= option at the",
                "first start only: after a restart another directory would be root's again.",
            ),
        ),
    ),
    networks=(Network("back", fixed_address=_online), Network("front")),
    healthcheck=Healthcheck(("/usr/local/bin/resolver-healthcheck",)),
    reload=Reload(),  # a restart: the cache refills in seconds
)


MTA_STS = Service(
    name="mta-sts",
    image="mta-sts",
    present=_online,
    why=(
        "postfix-mta-sts-resolver: Postfix's smtp_tls_policy_maps. It fetches destinations'",
        "MTA-STS policies (DNS through the resolver, HTTPS through front) and caches them on",
        "its volume; as _mta-sts, without capabilities.",
    ),
    caps=(),
    memory="128m",
    pids=32,
    internal_ports={"mta_sts": 8461},  # socketmap, for postfix
    config=Config("mta-sts", "/etc/mta-sts"),
    reads=("outbound_ca_bundle",),
    # aiohttp's default context: this file plus Debian's hashed roots in /etc/ssl/certs.
    ca_bundle_env="SSL_CERT_FILE",
    volumes=(Mount("mta-sts", "/var/lib/mta-sts", why=("Cached policies (SQLite).",)),),
    tmpfs=(Tmpfs("/tmp:size=8m"),),  # noqa: S108 - the container's own /tmp
    networks=(Network("back"), Network("front")),
    depends_on=("resolver",),
    resolves=True,
    healthcheck=Healthcheck(("/usr/local/bin/mta-sts-healthcheck",)),
    reload=Reload(),  # reads its configuration at start only; the cache is on its volume
)


DANE_POLICY = Service(
    name="dane-policy",
    image="mta-sts",
    present=_online,
    why=(
        "Postfix's first smtp_tls_policy_maps: dane-only (or dane) for destinations whose MX",
        "hosts have DNSSEC-validated TLSA records, so that an MTA-STS policy never overrides",
        "DANE (RFC 8461 section 2); NOTFOUND otherwise, and Postfix asks mta-sts. As _mta-sts,",
        "without capabilities; the mta-sts image, which has Python.",
    ),
    caps=(),
    memory="64m",
    pids=16,
    internal_ports={"dane_policy": 8462},  # socketmap, for postfix
    config=Config("mta-sts", "/etc/mta-sts"),
    # All of the container's addresses: it is only on the internal back network.
    command=("mailstack-dane-policy", "serve", "0.0.0.0", "8462"),  # noqa: S104
    networks=(Network("back"),),
    depends_on=("resolver",),
    resolves=True,
    healthcheck=Healthcheck(("mailstack-dane-policy", "healthcheck", "127.0.0.1", "8462")),
    reload=Reload(),  # no configuration; answers come from DNS, cached by the resolver
)


WEB = Service(
    name="web",
    image="web",
    present=_web,
    why=(
        "nginx: MTA-STS policy, autoconfig, autodiscover, Apple profiles (static files rendered",
        "into config/web/htdocs); plain HTTP redirects. The entrypoint copies the TLS keys for",
        "www-data, then nginx runs as www-data: PID 1, which handles its signals itself.",
    ),
    # Used by the entrypoint only (read the TLS keys, give copies to www-data, setpriv to it);
    # nginx itself, master included, runs as www-data without any capability.
    caps=("CHOWN", "DAC_READ_SEARCH", "SETUID", "SETGID"),
    memory="64m",
    pids=32,
    init=False,
    ports=(
        Port("http", WEB_HTTP_PORT, "none", "redirect to HTTPS (and ACME challenges)", "HTTP"),
        Port("https", WEB_HTTPS_PORT, "implicit", "TLS: MTA-STS, autoconfig, autodiscover", "HTTPS"),
    ),
    # Through the entrypoint, which copies the TLS keys for www-data (nginx -t loads them).
    config=Config("web", WEB_CONFIG_DIR, check=("web-entrypoint", "nginx", "-e", "stderr", "-t")),
    volumes=(
        Mount(
            "acme-challenge",
            f"{ACME_ROOT}/.well-known/acme-challenge",
            read_only=True,
            why=(
                "ACME HTTP-01 tokens (the acme service writes them); served under "
                "/.well-known/acme-challenge/.",
            ),
        ),
        Mount(
            "sogo-static",
            SOGO_STATIC,
            read_only=True,
            why=("SOGo's static files (groupware), copied there by the sogo service.",),
            when=_groupware,
        ),
    ),
    tmpfs=(
        Tmpfs("/run:size=4m", ("pid file and temporary files (/run/nginx), the key copies for www-data.",)),
    ),
    reads=("tls",),
    certificates=CertificateReload(
        "web-reload",
        "web-entrypoint nginx -e stderr -g 'daemon off;'",
        "entrypoint",
        (
            "As root: the reload loop (web-reload copies the new keys for www-data), then the",
            "entrypoint, which drops to www-data for nginx.",
        ),
    ),
    # groupware: where SOGo answers (an internal network of web and sogo alone).
    networks=(Network("front"), Network("groupware", when=_groupware)),
    healthcheck=Healthcheck(("/usr/local/bin/web-healthcheck",)),
    # Refreshes the copies of the TLS keys, then `nginx -s reload` as www-data (no CAP_KILL).
    reload=Reload(("web-reload",)),
)


ACME = Service(
    name="acme",
    image="acme",
    present=_acme,
    why=(
        "Certificates from {acme_directory} (tls.mode acme): orders, renews (two thirds",
        "of the lifetime, or the CA's ARI window) and retries with back-off; writes the state's",
        "acme/ and the HTTP-01 tokens the web service serves. Host network: it only calls out to",
        "the CA, as root without capabilities but DAC_OVERRIDE (see mailstack/services/edge.py).",
    ),
    command=("mailstack-acme", "serve", _ACME_TOML),
    user="0:0",
    host_network=True,
    # Root writing the state's acme/; DAC_OVERRIDE only for a state directory that
    # belongs to another user than root (mailstack run without root).
    caps=("DAC_OVERRIDE",),
    memory="128m",
    pids=16,
    config=Config("acme", ACME_CONFIG_DIR),
    volumes=(Mount("{state}/acme", ACME_STATE_DIR), Mount("acme-challenge", ACME_CHALLENGE_DIR)),
    tmpfs=(Tmpfs("/tmp:size=8m"),),  # noqa: S108 - the container's own /tmp
    reads=("acme_ca_bundle",),
    healthcheck=Healthcheck(("mailstack-acme", "health", _ACME_TOML)),
    reload=Reload(),  # reads acme.toml at start only; its state is on disk
)


GUARD = Service(
    name="guard",
    image="guard",
    present=_bans,
    why=(
        "Login bans (abuse.auth_ban): dovecot's auth policy server. It counts failed logins per",
        "client address and keeps the bans on its volume; as its own user, without capabilities.",
    ),
    command=("mailstack-guard", "serve", _GUARD_TOML),
    caps=(),
    memory="64m",
    pids=32,
    internal_ports={"guard": 8425},  # the auth policy API, for dovecot; back network only
    config=Config("guard", GUARD_CONFIG_DIR),
    volumes=(Mount("guard", GUARD_DATA_DIR),),
    networks=(Network("back", aliases=(GUARD_POLICY_HOST,)), Network("front")),
    networks_why=(
        f"It listens on the back network only, where dovecot reaches it as {GUARD_POLICY_HOST}",
        '("guard" could resolve to its front address). front gives it the address every loopback',
        "client comes from (the front network's gateway, its default route), never banned.",
    ),
    healthcheck=Healthcheck(("mailstack-guard", "health", _GUARD_TOML)),
    reload=Reload(),  # reads config/guard at start only; bans survive on its volume
)


FENCE = Service(
    name="fence",
    image="guard",
    present=_fence,
    why=(
        "The bans as an nftables table of its own in the host's network namespace (published",
        "ports are DNATed there, and the real client address is only known there). Root with",
        "NET_ADMIN and nothing else, no listening socket; reads the guard's bans read-only.",
    ),
    command=("mailstack-guard", "fence", _GUARD_TOML),
    user="0:0",
    host_network=True,
    # Changes only its own nftables table.
    caps=("NET_ADMIN",),
    memory="64m",
    pids=16,
    config=Config("guard", GUARD_CONFIG_DIR),
    volumes=(Mount("guard", GUARD_DATA_DIR, read_only=True),),
    depends_on=("guard",),
    stop_grace_period="10s",
    stop_why=('Enough for SIGTERM → "delete table" (the kernel drops the table\'s bans with it).',),
    healthcheck=Healthcheck(
        ("nft", "list", "chain", "inet", "{fence_table}", "forward"),
        why=("Its table and chain are in place (a flushed host ruleset makes it unhealthy).",),
    ),
    reload=Reload(),  # reads config/guard at start only
)
