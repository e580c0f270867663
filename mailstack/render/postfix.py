"""Postfix's maps and local domains (main.cf, virtual_*, sender_logins, aliases)."""

from __future__ import annotations

import re

from mailstack.site.models import Mailbox, Site
from mailstack.site.sharing import SharedMailbox

# Local parts that RFC 5321 (postmaster) and RFC 2142 (abuse) require for every domain.
ROLE_ACCOUNTS: tuple[str, ...] = ("postmaster", "abuse")
# Names the local(8) delivery agent accepts for the server's own hostname.
LOCAL_ALIASES: tuple[str, ...] = ("postmaster", "abuse", "root", "mailer-daemon")
# Postfix's LMTP concurrency stays below dovecot's per-user limit (render/dovecot.py), so no
# delivery meets "451 4.3.0 Too many concurrent".
POSTFIX_LMTP_CONCURRENCY = 8


# postscreen's blocklists when the site names none (abuse.dnsbl): weights as the lists
# document their replies. ZEN alone reaches the default threshold (3); a DNSWL listing with
# trust medium or high offsets one list.
DEFAULT_DNSBL: tuple[str, ...] = (
    "zen.spamhaus.org=127.0.0.[2..11]*3",
    "bl.spamcop.net=127.0.0.2*2",
    "bl.mailspike.net=127.0.0.[10;11;12]*2",
    "list.dnswl.org=127.0.[0..255].[2;3]*-2",
)


def mta_sts_policy_map(site: Site, port: int) -> str:
    """smtp_tls_policy_maps: the mta-sts service's socketmap; none offline."""
    return "" if site.offline else f"socketmap:inet:mta-sts:{port}:postfix"


def tls_policy_maps(site: Site, ports: dict[str, int]) -> str:
    """smtp_tls_policy_maps: DANE first (the dane-policy service answers dane-only or dane for
    destinations with validated TLSA records), then MTA-STS; none offline. The first map with
    an answer wins, so an MTA-STS policy never overrides DANE (RFC 8461 §2)."""
    if site.offline:
        return ""
    dane = f"socketmap:inet:dane-policy:{ports['dane_policy']}:dane"
    return f"{dane}, {mta_sts_policy_map(site, ports['mta_sts'])}"


def dnsbl_sites(site: Site) -> list[str]:
    """postscreen_dnsbl_sites: none offline (nothing would answer), else abuse.dnsbl or the default.

    With a Spamhaus DQS key (abuse.spamhaus_dqs) the default leaves Spamhaus out: main.cf has
    no include, so the key would sit in the rendered file; Rspamd asks Spamhaus over DQS
    instead. A list the site gives is taken as written."""
    if site.offline:
        return []
    if site.abuse.dnsbl is not None:
        return list(site.abuse.dnsbl)
    if site.abuse.spamhaus_dqs:
        return [entry for entry in DEFAULT_DNSBL if not _spamhaus(entry)]
    return list(DEFAULT_DNSBL)


def _spamhaus(entry: str) -> bool:
    return re.split(r"[=*]", entry, maxsplit=1)[0].endswith(".spamhaus.org")


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
    boxes: list[Mailbox | SharedMailbox] = [*site.mailboxes, *site.shared_mailboxes]
    defined = {a.address for a in site.aliases} | {m.address for m in boxes}
    for domain in site.domain_names:
        for local in ROLE_ACCOUNTS:
            address = f"{local}@{domain}"
            if address not in defined and address != site.admin_email:
                lines.append(f"{address}\t{site.admin_email}")
    # A catch-all also matches the domain's real mailboxes (Postfix tries user@domain, then
    # @domain): each mailbox of such a domain maps to itself first.
    # https://www.postfix.org/VIRTUAL_README.html#virtual_alias
    catch_all_domains = {d.name for d in site.domains if d.catch_all}
    lines += [f"{m.address}\t{m.address}" for m in boxes if m.address.rpartition("@")[2] in catch_all_domains]
    lines += [f"@{d.name}\t{d.catch_all}" for d in site.domains if d.catch_all]
    return lines


def local_alias_lines(site: Site) -> list[str]:
    """alias_maps (texthash: "name value") for mail to the server's own hostname."""
    return [f"{name}\t{site.admin_email}" for name in LOCAL_ALIASES]


def sender_owners(site: Site) -> dict[str, list[str]]:
    """Each address a login may send as (envelope and header From) → those logins, sorted
    by address: Postfix's smtpd_sender_login_maps and Rspamd's header From rule."""
    owners: dict[str, list[str]] = {site.probe_address: [site.probe_address]}
    for m in site.mailboxes:
        for address in (m.address, *m.send_as):
            owners.setdefault(address, []).append(m.address)
    return dict(sorted(owners.items()))


def sender_login_lines(site: Site) -> list[str]:
    """smtpd_sender_login_maps: each address → the logins that may send as it."""
    return [f"{address}\t{','.join(logins)}" for address, logins in sender_owners(site).items()]
