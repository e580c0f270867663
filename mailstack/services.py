"""The service catalogue: one typed entry per container of the stack.

The compose file, `mailstack dns` (SRV), `check`, `up` (checks, reloads, health, the summary),
`audit` and the Ansible role's checks and handlers all read these entries; adding a service
is one entry here and its configuration templates.

Texts in ``why`` fields become comments of the compose file. Three values differ per site and
are written as ``{placeholders}`` (render/compose.py fills them in): ``{state}`` (the state
directory, relative to the compose file), ``{fence_table}`` and ``{acme_directory}``.
"""

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
from mailstack.site.models import Site

STATE_MOUNT = "/run/mailstack/state"
# tmpfs where the rspamd entrypoint puts what its unprivileged workers must read (0400, _rspamd).
RSPAMD_SECRETS = "/run/rspamd-secrets"
# tmpfs where the redis entrypoint puts its ACL file (0400, redis).
REDIS_SECRETS = "/run/redis-secrets"
GUARD_CONFIG_DIR = "/etc/mailstack-guard"
GUARD_DATA_DIR = "/var/lib/mailstack-guard"  # the guard volume: its bans
# The guard's name on the back network alone: the service name would resolve to its address
# on whichever network Docker's DNS answers first, front included, where it does not listen.
GUARD_POLICY_HOST = "guard-policy"
ACME_CONFIG_DIR = "/etc/mailstack-acme"
ACME_STATE_DIR = "/var/lib/mailstack-acme"  # the state's acme/, read-write
ACME_CHALLENGE_DIR = "/var/lib/mailstack-acme-challenge"  # the acme-challenge volume
# Inside the web container: nginx runs as www-data, on unprivileged ports; compose publishes them.
WEB_HTTP_PORT = 8080
WEB_HTTPS_PORT = 8443
WEB_CONFIG_DIR = "/etc/nginx"
# The named volume with ACME HTTP-01 tokens (the acme service writes them); empty: every token is 404.
ACME_ROOT = "/srv/acme"


def _bans(site: Site) -> bool:
    return site.abuse.auth_ban.enabled


def _fence(site: Site) -> bool:
    return site.abuse.auth_ban.enabled and site.abuse.auth_ban.firewall


def _acme(site: Site) -> bool:
    return site.tls.mode == "acme"


def _online(site: Site) -> bool:
    return not site.offline


def _web(site: Site) -> bool:
    published = site.network.ports.published()
    return "http" in published or "https" in published


_GUARD_TOML = f"{GUARD_CONFIG_DIR}/guard.toml"
_ACME_TOML = f"{ACME_CONFIG_DIR}/acme.toml"

CATALOGUE: tuple[Service, ...] = (
    Service(
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
        networks=(Network("back", resolver_address=True), Network("front")),
        healthcheck=Healthcheck(("/usr/local/bin/resolver-healthcheck",)),
        reload=Reload(),  # a restart: the cache refills in seconds
    ),
    Service(
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
        volumes=(Mount("mta-sts", "/var/lib/mta-sts", why=("Cached policies (SQLite).",)),),
        tmpfs=(Tmpfs("/tmp:size=8m"),),  # noqa: S108 - the container's own /tmp
        networks=(Network("back"), Network("front")),
        depends_on=("resolver",),
        resolves=True,
        healthcheck=Healthcheck(("/usr/local/bin/mta-sts-healthcheck",)),
        reload=Reload(),  # reads its configuration at start only; the cache is on its volume
    ),
    Service(
        name="postfix",
        image="postfix",
        # master stays root: DAC_OVERRIDE to walk the postfix-owned queue, SETUID/SETGID to
        # start its daemons as postfix. No CHOWN, FOWNER, KILL: Postfix needs none of them.
        caps=("DAC_OVERRIDE", "SETUID", "SETGID"),
        memory="512m",
        pids=512,
        hostname=True,
        ports=(
            Port("smtp", 25, "starttls", "STARTTLS, no AUTH", "SMTP"),
            Port("submission", 587, "starttls", "STARTTLS, then AUTH", "SMTP submission", "smtp"),
            Port("submissions", 465, "implicit", "implicit TLS", "SMTP submission", "smtp"),
        ),
        config=Config(
            "postfix",
            "/etc/postfix",
            check=("postfix", "check"),
            why=("Directories, not single files: the renderer replaces files by rename.",),
        ),
        volumes=(
            Mount("queue", "/var/spool/postfix"),
            Mount(
                "postfix-data",
                "/var/lib/postfix",
                why=("data_directory: TLS session and postscreen caches, owned by postfix.",),
            ),
        ),
        tmpfs=(Tmpfs("/run:size=4m"), Tmpfs("/tmp:size=16m")),  # noqa: S108 - the container's own
        reads=("tls",),
        certificates=CertificateReload(
            "postfix reload",
            "postfix start-fg",
            "command",
            ("Reloads postfix when the acme service switches certificates, then runs postfix.",),
        ),
        networks=(Network("front"), Network("back")),
        depends_on=("dovecot", "rspamd", "resolver", "mta-sts"),
        fenced=True,
        resolves=True,
        healthcheck=Healthcheck(("/usr/local/bin/postfix-healthcheck",), ports_env=True),
        reload=Reload(("postfix", "reload")),
    ),
    Service(
        name="dovecot",
        image="dovecot",
        # master stays root: CHOWN for its sockets, SETUID/SETGID for dovecot, dovenull and
        # vmail, SYS_CHROOT for the login processes' chroot; DAC_READ_SEARCH reads the TLS keys
        # (and the entrypoint the controller's password, which CHOWN hands to vmail) when the
        # state belongs to another user than root. KILL: on reload the master sends
        # SIGQUIT to the processes of changed services, which run as other users; without it
        # they keep serving the old configuration ("kill(…, SIGQUIT) failed: Operation not
        # permitted" in its log).
        caps=("CHOWN", "DAC_READ_SEARCH", "KILL", "SETUID", "SETGID", "SYS_CHROOT"),
        memory="512m",
        pids=512,
        hostname=True,
        ports=(
            Port("imap", 143, "starttls", "STARTTLS", "IMAP", "imap"),
            Port("imaps", 993, "implicit", "implicit TLS", "IMAP", "imap"),
            Port("pop3", 110, "starttls", "STLS", "POP3", "pop3"),
            Port("pop3s", 995, "implicit", "implicit TLS", "POP3", "pop3"),
            Port("managesieve", 4190, "starttls", "STARTTLS", "ManageSieve"),
        ),
        internal_ports={
            "lmtp": 24,  # LMTP, for postfix's virtual_transport
            "sasl": 12345,  # auth, for postfix's smtpd_sasl_path
            "quota_status": 12340,  # quota-status policy, for postfix's check_policy_service
        },
        config=Config("dovecot", "/etc/dovecot", check=("doveconf", "-n")),
        volumes=(Mount("mail", "/var/vmail"),),
        tmpfs=(
            Tmpfs(
                "/run:size=4m",
                ("base_dir (/run/dovecot) and state_dir hold sockets and runtime state only.",),
            ),
            Tmpfs("/var/lib/dovecot:size=4m"),
            Tmpfs("/tmp:size=16m"),  # noqa: S108 - the container's own /tmp
        ),
        # rspamd_controller: the IMAPSieve learning program posts to Rspamd's controller.
        reads=("tls", "rspamd_controller"),
        certificates=CertificateReload(
            "doveadm reload",
            "dovecot -F",
            "command",
            ("Reloads dovecot when the acme service switches certificates, then runs dovecot.",),
        ),
        networks=(Network("front"), Network("back")),
        depends_on=("guard",),
        depends_why=("Asked before every login (auth policy); without an answer, logins go on (fail open).",),
        fenced=True,
        healthcheck=Healthcheck(("/usr/local/bin/dovecot-healthcheck",), ports_env=True),
        # doveadm reload, then the sessions of removed mailboxes end (sessions outlive reloads).
        reload=Reload(("dovecot-reload",)),
    ),
    Service(
        name="rspamd",
        image="rspamd",
        # Used by the entrypoint only (read the secrets, hand copies to the daemon's user,
        # setpriv to it); the daemon itself runs without any capability.
        caps=("CHOWN", "DAC_READ_SEARCH", "SETUID", "SETGID"),
        memory="1g",
        pids=128,
        init=False,
        init_why=(
            "The entrypoint copies the secrets for _rspamd, then runs tini and rspamd as _rspamd:",
            "no process keeps root, and tini signals rspamd as the same user (no CAP_KILL).",
        ),
        internal_ports={
            "milter": 11332,  # proxy worker in milter mode
            "normal": 11333,  # normal (scanner) worker
            "controller": 11334,  # web UI, learning; back network only
        },
        # Checked without the entrypoint: the secrets' includes are optional (try=true).
        config=Config("rspamd/local.d", "/etc/rspamd/local.d", check=("rspamadm", "configtest")),
        volumes=(Mount("rspamd", "/var/lib/rspamd"),),
        tmpfs=(
            Tmpfs("/run:size=4m"),
            Tmpfs("/tmp:size=64m"),  # noqa: S108 - the container's own /tmp
            Tmpfs(
                f"{RSPAMD_SECRETS}:size=1m,mode=0700",
                ("DKIM keys and passwords for the _rspamd workers, copied by the entrypoint.",),
            ),
        ),
        reads=("dkim", "redis", "rspamd_controller"),
        networks=(Network("back"), Network("front", online_only=True)),
        networks_why=(
            "The milter (for postfix) and the controller are never published. Offline it needs",
            "only the internal network; online it also needs front, for HTTP maps and fuzzy hashes.",
        ),
        depends_on=("redis", "resolver"),
        resolves=True,
        healthcheck=Healthcheck(
            ("/usr/local/bin/rspamd-healthcheck",),
            start_period="120s",
            start_period_why=(
                "The first start compiles Hyperscan databases (about 25 s on 2 cores, over a minute",
                "on a busy host); failed probes before the end of start_period do not count.",
            ),
        ),
        # Through the entrypoint, which refreshes its copies of the keys first; `docker kill`
        # would mark the container as stopped by hand and void `restart: unless-stopped`.
        reload=Reload(("rspamd-reload",)),
    ),
    Service(
        name="redis",
        image="redis",
        caps=("CHOWN", "DAC_READ_SEARCH", "SETUID", "SETGID"),  # the entrypoint's, as rspamd's
        memory="256m",
        pids=64,
        init=False,
        init_why=(
            "The entrypoint writes the ACL file, then execs redis-server as redis: PID 1, which",
            "handles TERM itself and never runs as root.",
        ),
        internal_ports={"redis": 6379},
        config=Config("redis", "/etc/redis"),
        volumes=(Mount("redis", "/var/lib/redis"),),
        tmpfs=(
            Tmpfs(
                f"{REDIS_SECRETS}:size=1m,mode=0700",
                ("The ACL file with the password's hash, written by the entrypoint.",),
            ),
        ),
        reads=("redis",),
        networks=(Network("back"),),
        healthcheck=Healthcheck(("/usr/local/bin/redis-healthcheck",)),
        reload=Reload(),
    ),
    Service(
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
        ),
        tmpfs=(
            Tmpfs(
                "/run:size=4m", ("pid file and temporary files (/run/nginx), the key copies for www-data.",)
            ),
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
        networks=(Network("front"),),
        healthcheck=Healthcheck(("/usr/local/bin/web-healthcheck",)),
        # Refreshes the copies of the TLS keys, then `nginx -s reload` as www-data (no CAP_KILL).
        reload=Reload(("web-reload",)),
    ),
    Service(
        name="acme",
        image="acme",
        present=_acme,
        why=(
            "Certificates from {acme_directory} (tls.mode acme): orders, renews (two thirds",
            "of the lifetime, or the CA's ARI window) and retries with back-off; writes the state's",
            "acme/ and the HTTP-01 tokens the web service serves. Host network: it only calls out to",
            "the CA, as root without capabilities but DAC_OVERRIDE (see mailstack/services.py).",
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
    ),
    Service(
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
    ),
    Service(
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
    ),
)


def images() -> tuple[str, ...]:
    """The images to build, each once (the guard image also runs the fence service); each
    image's rendered configuration is config/<image>/."""
    return tuple(dict.fromkeys(s.image for s in CATALOGUE))


def present(site: Site) -> list[Service]:
    """The services of the site's compose project, in the catalogue's order."""
    return [s for s in CATALOGUE if s.present(site)]


def service(name: str) -> Service:
    return next(s for s in CATALOGUE if s.name == name)


def ports() -> dict[str, tuple[Service, Port]]:
    """Every protocol a service can publish → the service and its port."""
    return {p.protocol: (s, p) for s in CATALOGUE for p in s.ports}


def client_address(bind: str) -> str:
    """Where a client on this machine reaches a port published on ``bind``: a wildcard
    address is reached through loopback of the same family."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)  # noqa: S104 - compared, not bound
