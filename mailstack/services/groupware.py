"""The groupware services (groupware.enabled): SOGo, its PostgreSQL and its memcached.

All three are ``optional``: a site without groupware renders exactly as if they did not
exist (no files, images, checks or reloads). None of them is on the front network: web
reaches SOGo over the internal ``groupware`` network, SOGo reaches Dovecot, Postfix,
PostgreSQL and memcached over ``back``.
"""

from __future__ import annotations

from mailstack.service_types import Config, Healthcheck, Mount, Network, Reload, Service, Tmpfs
from mailstack.services.paths import (
    MEMCACHED_PORT,
    POSTGRES_CONFIG_DIR,
    POSTGRES_DATA,
    POSTGRES_PORT,
    SOGO_CONFIG_DIR,
    SOGO_PORT,
    SOGO_STATIC,
)
from mailstack.site.models import Site

# What a worker costs at most before the master replaces it is SxVMemLimit (384 MB); idle
# ones use a tenth of that. The limit leaves room for a few busy workers, not for all.
_SOGO_BASE_MB = 128
_SOGO_PER_WORKER_MB = 160


def groupware(site: Site) -> bool:
    return site.groupware.enabled


def _sogo_memory(site: Site) -> str:
    return f"{_SOGO_BASE_MB + _SOGO_PER_WORKER_MB * site.groupware.workers}m"


SOGO = Service(
    name="sogo",
    image="sogo",
    present=groupware,
    optional=True,
    why=(
        "SOGo: webmail, CalDAV, CardDAV (and ActiveSync with groupware.activesync) behind web.",
        "Users and their {{SCHEME}} hashes come from PostgreSQL (rendered from the mailboxes); it",
        "logs in to dovecot and postfix with each user's own password. The entrypoint writes",
        "libpq's password file from the state and refreshes the static files for web, then",
        "sogod runs as sogo.",
    ),
    # The entrypoint's only (read the database password, hand a copy to sogo, setpriv to it);
    # sogod itself runs as sogo without any capability.
    caps=("CHOWN", "DAC_READ_SEARCH", "SETUID", "SETGID"),
    memory="512m",
    memory_for=_sogo_memory,
    pids=256,
    init=False,
    init_why=(
        "The entrypoint runs tini and sogod as sogo: tini signals sogod as the same user (no",
        "CAP_KILL; Docker's init, as root, could not forward TERM to it).",
    ),
    internal_ports={"sogo": SOGO_PORT},
    config=Config("sogo", SOGO_CONFIG_DIR),
    volumes=(
        Mount(
            "sogo-static",
            SOGO_STATIC,
            why=("WebServerResources of this image's sogo-common, which web serves (read-only).",),
        ),
        Mount("sogo-spool", "/var/spool/sogo", why=("SOGoMailSpoolPath: attachments being composed.",)),
    ),
    tmpfs=(
        Tmpfs("/run/sogo:size=1m", ("pid file and libpq's password file (0600, sogo).",)),
        Tmpfs("/var/lib/sogo:size=4m", ("sogo's home: GNUstep's user defaults and locks.",)),
        Tmpfs("/tmp:size=64m"),  # noqa: S108 - the container's own /tmp
    ),
    reads=("postgres",),
    networks=(Network("back"), Network("groupware")),
    networks_why=(
        "back: dovecot (IMAP, ManageSieve), postfix (submission), postgres and memcached;",
        "groupware: web, its only client. Neither has a route out.",
    ),
    depends_on=("postgres", "memcached", "dovecot", "postfix"),
    depends_healthy=("postgres",),
    depends_why=(
        "SOGo creates its tables when it starts, and only then: it waits for postgres, whose",
        "entrypoint listens on the network once the role and the users are in place.",
    ),
    stop_grace_period="3s",
    stop_why=(
        "Idle workers note TERM but exit only after their next request (SOPE's watchdog waits",
        "for them); all state is in PostgreSQL, so a short wait and a KILL lose nothing.",
    ),
    healthcheck=Healthcheck(
        ("/usr/local/bin/sogo-healthcheck",),
        why=("sogod answers its login page.",),
        start_period="60s",
        start_period_why=("The first start creates SOGo's tables.",),
    ),
    reload=Reload(),  # sogod reads sogo.conf at start only
)


POSTGRES = Service(
    name="postgres",
    image="postgres",
    present=groupware,
    optional=True,
    why=(
        "PostgreSQL 17: SOGo's tables and its users (config/postgres/sogo-users.sql, reconciled",
        "at every start and reload). The entrypoint sets the sogo role's password from the state",
        "and applies the users before the server listens; postgres runs as postgres.",
    ),
    caps=("CHOWN", "DAC_READ_SEARCH", "SETUID", "SETGID"),  # the entrypoint's, as sogo's
    memory="256m",
    pids=128,
    init=False,
    init_why=("The entrypoint execs postgres as postgres: PID 1, which handles its signals itself.",),
    internal_ports={"postgres": POSTGRES_PORT},
    config=Config("postgres", POSTGRES_CONFIG_DIR),
    volumes=(
        Mount("postgres", POSTGRES_DATA, why=("The cluster: SOGo's calendars, contacts, preferences.",)),
    ),
    tmpfs=(
        Tmpfs("/run/postgresql:size=1m", ("Its socket and lock files.",)),
        Tmpfs("/tmp:size=16m"),  # noqa: S108 - the container's own /tmp
    ),
    reads=("postgres",),
    networks=(Network("back"),),
    healthcheck=Healthcheck(("/usr/local/bin/postgres-healthcheck",)),
    # Applies sogo-users.sql again and reloads postgresql.conf and pg_hba.conf.
    reload=Reload(("postgres-apply",)),
)


MEMCACHED = Service(
    name="memcached",
    image="sogo",
    present=groupware,
    optional=True,
    why=("memcached: SOGo's cache of sessions and users (the sogo image, which has it), as memcache.",),
    command=(
        "memcached",
        "--listen=0.0.0.0",  # the back network only (its one network)
        f"--port={MEMCACHED_PORT}",
        "--memory-limit=64",
        "--conn-limit=256",
        "--udp-port=0",
    ),
    user="memcache",
    caps=(),
    memory="96m",
    # memcached runs 10 threads; every healthcheck (or docker exec) adds runc's own, several
    # more on a loaded host. At 16, probes failed with "read init-p: connection reset by peer"
    # and the service went unhealthy while CI ran its layers side by side.
    pids=48,
    internal_ports={"memcached": MEMCACHED_PORT},
    # None of its own: the sogo image's directory, unused here.
    config=Config("sogo", SOGO_CONFIG_DIR),
    networks=(Network("back"),),
    healthcheck=Healthcheck(("/usr/local/bin/sogo-healthcheck", "memcached")),
    reload=Reload(),
)
