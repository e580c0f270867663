"""The mail path's services: postfix, dovecot, rspamd and redis."""

from __future__ import annotations

from mailstack.service_types import (
    MAILCRYPT_PASSDB,
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
    DMARC_REPORTS_DIR,
    DMARC_REPORTS_SCRIPT,
    MAILCRYPT_PASSDB_DIR,
    REDIS_SECRETS,
    RSPAMD_SECRETS,
)
from mailstack.site.encryption import per_user_addresses
from mailstack.site.models import Site


def _dmarc_reports(site: Site) -> bool:
    return site.reports.dmarc.enabled


POSTFIX = Service(
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
    reads=("tls", "outbound_ca_bundle"),
    certificates=CertificateReload(
        "postfix reload",
        "postfix start-fg",
        "command",
        ("Reloads postfix when the acme service switches certificates, then runs postfix.",),
    ),
    # With reports.dmarc a fixed back address: the dmarc-reports service reaches its listener
    # there by address (Rspamd's SMTP client resolves through the stack's resolver, which
    # knows no compose names).
    networks=(Network("front"), Network("back", fixed_address=_dmarc_reports)),
    depends_on=("dovecot", "rspamd", "resolver", "dane-policy", "mta-sts"),
    fenced=True,
    resolves=True,
    healthcheck=Healthcheck(("/usr/local/bin/postfix-healthcheck",), ports_env=True),
    reload=Reload(("postfix", "reload")),
)


DOVECOT = Service(
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
    volumes=(
        Mount("mail", "/var/vmail"),
        Mount(
            "{state}/" + MAILCRYPT_PASSDB,
            MAILCRYPT_PASSDB_DIR,
            read_only=True,
            why=(
                "The per_user mailboxes' wrapped keys (root's): a folder, so that a password",
                "change (written in place, or renamed by a deploy) is seen without a restart.",
            ),
            when=lambda site: bool(per_user_addresses(site)),
        ),
    ),
    tmpfs=(
        Tmpfs(
            "/run:size=4m",
            ("base_dir (/run/dovecot) and state_dir hold sockets and runtime state only.",),
        ),
        Tmpfs("/var/lib/dovecot:size=4m"),
        Tmpfs("/tmp:size=16m"),  # noqa: S108 - the container's own /tmp
    ),
    # rspamd_controller: the IMAPSieve learning program posts to Rspamd's controller.
    # mailcrypt: the site's key pair and the per_user logins' wrapped keys.
    reads=("tls", "rspamd_controller", "mailcrypt"),
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
)


RSPAMD = Service(
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
    # spamhaus_dqs: only a site with abuse.spamhaus_dqs has it; the entrypoint hands it to
    # rspamd as RSPAMD_SPAMHAUS_DQS_KEY, for rbl.conf's {= env.SPAMHAUS_DQS_KEY =}.
    reads=("dkim", "redis", "rspamd_controller", "spamhaus_dqs"),
    networks=(Network("back"), Network("front", online_only=True)),
    networks_why=(
        "The milter (for postfix) and the controller are never published. Offline it needs",
        "only the internal network; online it also needs front, for HTTP maps and fuzzy hashes.",
    ),
    depends_on=("redis", "resolver"),
    resolves=True,
    healthcheck=Healthcheck(
        ("/usr/local/bin/rspamd-healthcheck",),
        start_period="300s",
        start_period_why=(
            "The first start compiles Hyperscan databases (about 25 s on 2 cores, over two",
            "minutes on a busy host: CI saw 146 s); failed probes before the end of start_period",
            "do not count, and a passing one ends it.",
        ),
    ),
    # Through the entrypoint, which refreshes its copies of the keys first; `docker kill`
    # would mark the container as stopped by hand and void `restart: unless-stopped`.
    reload=Reload(("rspamd-reload",)),
)


REDIS = Service(
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
)


DMARC_REPORTS = Service(
    name="dmarc-reports",
    image="rspamd",
    present=_dmarc_reports,
    why=(
        "DMARC aggregate reports (reports.dmarc, RFC 7489 §7.2): once a day `rspamadm dmarc_report`",
        "mails the DMARC results rspamd kept in Redis to each sender domain that asks (rua=), through",
        "postfix's listener for it; the milter DKIM-signs them. The rspamd image, as _rspamd.",
    ),
    command=("sh", DMARC_REPORTS_SCRIPT),
    # The rspamd entrypoint's (copies the Redis password for _rspamd, then setpriv to it);
    # the loop and rspamadm run without any capability.
    caps=("CHOWN", "DAC_READ_SEARCH", "SETUID", "SETGID"),
    # rspamadm loads Rspamd's rules too; compiling their Hyperscan databases itself (when
    # rspamd's are not ready yet) peaks at about 330 MB, loading rspamd's at about 64 MB.
    memory="512m",
    pids=16,
    init=False,
    init_why=("The rspamd entrypoint runs tini and the loop as _rspamd (see rspamd).",),
    # The loop; it reads Rspamd's settings from the mount below at every run.
    config=Config("rspamd/dmarc-reports", DMARC_REPORTS_DIR),
    volumes=(
        Mount(
            "./config/rspamd/local.d",
            "/etc/rspamd/local.d",
            read_only=True,
            why=("Rspamd's settings: dmarc.conf's reporting block, Redis, the resolver.",),
        ),
        Mount(
            "rspamd",
            "/var/lib/rspamd",
            read_only=True,
            why=(
                "rspamd's compiled Hyperscan databases, which rspamadm loads instead of compiling its own.",
            ),
        ),
    ),
    tmpfs=(
        Tmpfs("/run:size=1m"),
        Tmpfs("/tmp:size=16m"),  # noqa: S108 - the container's own /tmp
        Tmpfs(
            f"{RSPAMD_SECRETS}:size=1m,mode=0700",
            ("The Redis password for _rspamd, copied by the entrypoint.",),
        ),
    ),
    # The entrypoint insists on the controller's password as well, though the reporter never
    # uses it (the image's entrypoint is shared with rspamd).
    reads=("redis", "rspamd_controller"),
    networks=(Network("back", fixed_address=_dmarc_reports),),
    networks_why=(
        "The back network only, at a fixed address: postfix's listener for the reports and",
        "rspamd's signing and From rule admit that address alone.",
    ),
    depends_on=("redis", "resolver", "postfix"),
    resolves=True,
    healthcheck=Healthcheck(
        ("sh", DMARC_REPORTS_SCRIPT, "health"),
        why=("The loop has planned its next run.",),
    ),
    reload=Reload(),  # a restart: the loop plans its next run afresh
)
