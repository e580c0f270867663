"""The groupware (SOGo, PostgreSQL, memcached): what sogo.conf, PostgreSQL's files, the users'
table and nginx's SOGo locations need.

No secret is rendered: SOGo's database URLs carry no password (libpq finds it in the password
file the sogo entrypoint writes from the state), and the users' table holds the mailboxes'
``{SCHEME}`` hashes, which are in the site file already (like Dovecot's users file).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstack.render.dav_rights import DAV_GRANTED_FILE, dav_reconcile, dav_rights_lines
from mailstack.render.dovecot import MODSEQ_TRACKING
from mailstack.services.paths import (
    MEMCACHED_PORT,
    POSTGRES_CONFIG_DIR,
    POSTGRES_PORT,
    SOGO_PORT,
    SOGO_STATIC,
)
from mailstack.site.groupware import WORKER_MEMORY_MB
from mailstack.site.models import Site

DATABASE = "sogo"  # the database, and the role SOGo connects as
USERS_TABLE = "sogo_users"
# The password of the shared mailboxes' rows: SOGo looks users up in authenticating sources
# only, so a shared mailbox that owns a calendar is a row of the users' table, with a hash
# no password matches (no salt: SOGo's verification fails before it hashes anything).
NO_LOGIN = "{SHA512-CRYPT}!"
# ActiveSync: a Ping holds its worker up to SOGoMaximumPingInterval; the guide's values for
# push (SOGo installation guide, "Microsoft ActiveSync / Tuning").
EAS_PING_SECONDS = 3540
EAS_INTERNAL_SYNC_SECONDS = 30
EAS_WATCHDOG_MINUTES = 60
# Failed web logins per user before SOGo blocks it for a while (SOGoMaximumFailedLoginCount);
# the cache must keep the count as long as the block lasts.
FAILED_LOGINS = 10
FAILED_LOGIN_WINDOW = 600
FAILED_LOGIN_BLOCK = 900


@dataclass(frozen=True)
class SogoUser:
    """One row of the users' table, each value already an SQL literal."""

    uid: str
    name: str
    password: str
    cn: str
    mail: str


@dataclass(frozen=True)
class GroupwareSettings:
    enabled: bool
    activesync: bool
    workers: int
    worker_memory_mb: int
    port: int
    mail_domain: str  # SOGoMailDomain: the first domain
    database_url: str  # postgresql://sogo@postgres:5432/sogo (no password: libpq's file)
    users_table: str
    memcached: str
    imap_server: str
    sieve_server: str
    smtp_server: str
    upload_kb: int  # WOMaxUploadSize, SOGoMaximumMessageSizeLimit: limits.message_size
    body_limit: str  # nginx client_max_body_size for SOGo: the same
    static_root: str  # where web serves SOGo's WebServerResources from
    ping_seconds: int
    internal_sync_seconds: int
    watchdog_minutes: int
    failed_logins: int
    failed_login_window: int
    failed_login_block: int
    cache_seconds: int
    postgres_config_dir: str
    database: str
    users: list[SogoUser]
    dav_rights: list[str]  # rights/wanted: the shared calendars' and address books' rights
    dav_reconcile: tuple[str, ...]  # run in the sogo container after up and deploy; () without
    dav_granted_file: str
    # With ActiveSync, run in the dovecot container after up and deploy (dovecot.py); () without.
    modseq_tracking: tuple[str, ...]


def sql_literal(value: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings: only ' is doubled)."""
    if "\0" in value:
        raise ValueError("an SQL literal cannot hold NUL")
    return "'" + value.replace("'", "''") + "'"


def _user(address: str, name: str | None, password: str) -> SogoUser:
    return SogoUser(
        uid=sql_literal(address),
        name=sql_literal(address),
        password=sql_literal(password),
        cn=sql_literal(name or address.partition("@")[0]),
        mail=sql_literal(address),
    )


def sogo_users(site: Site) -> list[SogoUser]:
    """The mailboxes as SOGo's SQL source sees them: the login is the address, the password
    the mailbox's own ``{SCHEME}`` hash (SOGo 5.12 honours the prefix); and the shared
    mailboxes, which own calendars and address books, with a hash nothing matches."""
    users = [(m.address, m.name, m.password_hash) for m in site.mailboxes]
    users += [(s.address, s.name, NO_LOGIN) for s in site.shared_mailboxes]
    return [_user(*user) for user in sorted(users)]


def groupware_settings(site: Site) -> GroupwareSettings:
    groupware = site.groupware
    # Inside the stack (the back network, no route out): TLS for the users' passwords, but
    # the services present the site's certificate for its hostname, not for their compose
    # names, so SOGo does not verify it (compose/images/NOTES.md, "sogo").
    tls = "?tls=YES&tlsVerifyMode=none"
    kib = -(-site.limits.message_size // 1024)
    return GroupwareSettings(
        enabled=groupware.enabled,
        activesync=groupware.activesync,
        workers=groupware.workers,
        worker_memory_mb=WORKER_MEMORY_MB,
        port=SOGO_PORT,
        mail_domain=site.domain_names[0],
        database_url=f"postgresql://{DATABASE}@postgres:{POSTGRES_PORT}/{DATABASE}",
        users_table=USERS_TABLE,
        memcached=f"memcached:{MEMCACHED_PORT}",
        imap_server=f"imap://dovecot:143/{tls}",
        sieve_server=f"sieve://dovecot:4190/{tls}",
        smtp_server=f"smtp://postfix:587/{tls}",
        upload_kb=kib,
        body_limit=f"{kib}k",
        static_root=f"{SOGO_STATIC}/current",
        ping_seconds=EAS_PING_SECONDS,
        internal_sync_seconds=EAS_INTERNAL_SYNC_SECONDS,
        watchdog_minutes=EAS_WATCHDOG_MINUTES,
        failed_logins=FAILED_LOGINS,
        failed_login_window=FAILED_LOGIN_WINDOW,
        failed_login_block=FAILED_LOGIN_BLOCK,
        cache_seconds=FAILED_LOGIN_BLOCK,
        postgres_config_dir=POSTGRES_CONFIG_DIR,
        database=DATABASE,
        users=sogo_users(site),
        dav_rights=dav_rights_lines(site),
        dav_reconcile=dav_reconcile(site),
        dav_granted_file=DAV_GRANTED_FILE,
        modseq_tracking=MODSEQ_TRACKING if site.groupware.activesync else (),  # as engine.reconcile_rights
    )
