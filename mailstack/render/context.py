"""The values the templates substitute, gathered from the per-service render modules.

Templates only loop and substitute; every string that needs building (map lines, port
bindings, IPv6 brackets, paths) is built in render/<service>.py, where it is unit-tested.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mailstack import __version__, services
from mailstack.render.acme import AcmeSettings, acme_settings
from mailstack.render.ansible import ConfigCheck, Reload, config_checks, reloads
from mailstack.render.backup import BackupSettings, backup_settings, host_repository
from mailstack.render.compose import (
    ComposeService,
    Secret,
    Slots,
    compose_secrets,
    compose_services,
    named_volumes,
    secret_files,
)
from mailstack.render.dovecot import (
    DOVECOT_LMTP_USER_CONCURRENCY,
    JunkSettings,
    SharingSettings,
    acl_rights_lines,
    dovecot_user_lines,
    junk_settings,
    shared_user_lines,
    sharing_settings,
)
from mailstack.render.groupware import GroupwareSettings, groupware_settings
from mailstack.render.guard import AuthBanSettings, auth_ban_settings
from mailstack.render.guard import fence_table as fence_table  # tests/integration import it from here
from mailstack.render.mailcrypt import MailCryptSettings, mailcrypt_fields, mailcrypt_settings
from mailstack.render.postfix import (
    POSTFIX_LMTP_CONCURRENCY,
    dnsbl_sites,
    local_alias_lines,
    mydestination,
    sender_login_lines,
    sender_owners,
    tls_policy_maps,
    virtual_alias_lines,
)
from mailstack.render.reports import DmarcReports, dmarc_reports
from mailstack.render.resolver import (
    BackNetwork,
    FrontNetwork,
    ResolverSettings,
    back_network,
    front_network,
    resolver_settings,
)
from mailstack.render.retention import RetentionSettings, retention_settings
from mailstack.render.rspamd import (
    REDIS_MAXMEMORY,
    DkimDomain,
    DkimSelector,
    RateLimit,
    dkim_domains,
    dkim_selectors,
    rspamd_disabled,
    send_limits,
)
from mailstack.render.tls import (
    TlsPair,
    TlsPolicy,
    chain_files,
    tls_pairs,
    tls_paths,
    tls_policy,
    web_tls_protocols,
)
from mailstack.render.web import WebSettings, web_settings
from mailstack.services import REDIS_SECRETS, RSPAMD_SECRETS
from mailstack.site.fields import format_size
from mailstack.site.models import Site
from mailstack.state.view import StateView

# Each service's limits, from the catalogue (tests/integration compare the containers with them).
CONTAINER_CAPS = {s.name: s.caps for s in services.CATALOGUE}
CONTAINER_MEMORY = {s.name: s.memory for s in services.CATALOGUE}
CONTAINER_PIDS = {s.name: s.pids for s in services.CATALOGUE}


@dataclass(frozen=True)
class Context:
    site: Site
    version: str
    services: list[ComposeService]  # the compose project's, resolved for the site
    volumes: list[str]  # the named volumes they mount
    ports: dict[str, int]  # internal service ports (the catalogue's internal_ports)
    message_size: int
    message_size_human: str
    mydestination: str
    virtual_domains: list[str]
    virtual_mailboxes: list[str]
    virtual_aliases: list[str]
    local_aliases: list[str]
    sender_logins: list[str]
    sender_owners: dict[str, list[str]]  # address → logins that may use it (Rspamd's From rule)
    dovecot_users: list[str]
    mailcrypt: MailCryptSettings
    shared_users: list[str]  # userdb only: the shared mailboxes, which have no login
    acl_rights: list[str]  # the rights on shared mailboxes, for acl/reconcile.sh
    sharing: SharingSettings
    junk: JunkSettings  # Sieve: spam into Junk, and learning from moves into and out of it
    retention: RetentionSettings  # the site's autoexpunge per folder, POP3 deletion
    dkim: list[DkimSelector]
    dkim_domains: list[DkimDomain]
    tls: dict[str, str]  # role → path inside the containers
    tls_pairs: list[TlsPair]  # server key/cert pairs, preferred first (ECDSA, then RSA)
    tls_chain_files: str  # postfix smtpd_tls_chain_files: key, cert, key, cert
    tls_policy: TlsPolicy
    secret_files: list[Secret]  # every secret once, for the compose file's top-level secrets
    redis_maxmemory: str
    send_limits: list[RateLimit]
    rspamd_secrets: str
    redis_secrets: str
    offline: bool
    rspamd_disabled: dict[str, bool]  # online-only rspamd module → disabled here
    resolver: ResolverSettings | None  # None offline
    back_network: BackNetwork | None  # its fixed subnet (online)
    front_network: FrontNetwork | None  # its IPv6 subnet (the site listens on IPv6)
    dmarc_reports: DmarcReports | None  # reports.dmarc, when enabled
    backup: BackupSettings | None  # backup, when the site has it
    dnsbl_sites: list[str]  # postscreen's
    tls_policy_maps: str  # postfix's smtp_tls_policy_maps; empty offline
    outbound_ca_file: str  # tls.outbound_ca_bundle inside postfix; empty: Debian's roots only
    spamhaus_dqs: bool  # Rspamd asks Spamhaus over DQS, with the key from the state
    lmtp_user_concurrency: int
    lmtp_concurrency: int
    auth_ban: AuthBanSettings
    web: WebSettings
    acme: AcmeSettings
    groupware: GroupwareSettings
    config_checks: list[ConfigCheck]  # for the Ansible role (group_vars)
    reloads: list[Reload]
    images: tuple[str, ...]  # the images, each with its config/<image>/ (the role's switch and builds)

    def as_template_vars(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def internal_ports() -> dict[str, int]:
    return {name: port for s in services.CATALOGUE for name, port in s.internal_ports.items()}


def build_context(site: Site, state: StateView, state_dir: Path, out_dir: Path) -> Context:
    pairs = tls_pairs(site, state)
    dkim = dkim_selectors(state)
    state_rel = os.path.relpath(state_dir.resolve(), out_dir.resolve())
    secrets = compose_secrets(site, state, state_rel)
    auth_ban = auth_ban_settings(site)
    acme = acme_settings(site, state_rel, services.STATE_MOUNT)
    slots = Slots(
        state=state_rel,
        fence_table=auth_ban.table,
        acme_directory=acme.directory_url,
        backup_repository=host_repository(site),
    )
    return Context(
        site=site,
        version=__version__,
        services=compose_services(site, slots, secrets, acme, __version__, offline=site.offline),
        volumes=named_volumes(site),
        ports=internal_ports(),
        message_size=site.limits.message_size,
        message_size_human=format_size(site.limits.message_size),
        mydestination=mydestination(site),
        virtual_domains=[f"{name}\tOK" for name in site.domain_names],
        virtual_mailboxes=[f"{address}\tOK" for address in site.delivered_addresses],
        virtual_aliases=virtual_alias_lines(site),
        local_aliases=local_alias_lines(site),
        sender_logins=sender_login_lines(site),
        sender_owners=sender_owners(site),
        dovecot_users=dovecot_user_lines(site, state.probe_hash, mailcrypt_fields(site, state)),
        mailcrypt=mailcrypt_settings(),
        shared_users=shared_user_lines(site),
        acl_rights=acl_rights_lines(site),
        sharing=sharing_settings(site),
        junk=junk_settings(),
        retention=retention_settings(site),
        dkim=dkim,
        dkim_domains=dkim_domains(dkim),
        tls=tls_paths(site, state),
        tls_pairs=pairs,
        tls_chain_files=chain_files(pairs, state),
        tls_policy=tls_policy(site),
        secret_files=secret_files(secrets),
        redis_maxmemory=REDIS_MAXMEMORY,
        send_limits=send_limits(site),
        rspamd_secrets=RSPAMD_SECRETS,
        redis_secrets=REDIS_SECRETS,
        offline=site.offline,
        rspamd_disabled=rspamd_disabled(offline=site.offline),
        resolver=resolver_settings(site),
        back_network=back_network(site),
        front_network=front_network(site),
        dmarc_reports=dmarc_reports(site),
        backup=backup_settings(site),
        dnsbl_sites=dnsbl_sites(site),
        tls_policy_maps=tls_policy_maps(site, internal_ports()),
        outbound_ca_file=services.OUTBOUND_CA_BUNDLE
        if site.tls.outbound_ca_bundle and not site.offline
        else "",
        spamhaus_dqs=site.abuse.spamhaus_dqs and not site.offline,
        lmtp_user_concurrency=DOVECOT_LMTP_USER_CONCURRENCY,
        lmtp_concurrency=POSTFIX_LMTP_CONCURRENCY,
        auth_ban=auth_ban,
        web=web_settings(site, [(p.cert, p.key) for p in pairs], web_tls_protocols(site)),
        acme=acme,
        groupware=groupware_settings(site),
        config_checks=config_checks(site),
        reloads=reloads(site),
        images=services.images(site),
    )
