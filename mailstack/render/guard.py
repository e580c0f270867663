"""abuse.auth_ban: the guard (dovecot's auth policy server) and the fence (nftables)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mailstack import services
from mailstack.services import GUARD_CONFIG_DIR, GUARD_DATA_DIR, GUARD_POLICY_HOST
from mailstack.site.front import front_gateway6
from mailstack.site.models import Site

# Where the guard keeps the bans (its volume).
GUARD_BANS_FILE = f"{GUARD_DATA_DIR}/bans.json"


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


def auth_ban_settings(site: Site) -> AuthBanSettings:
    ban = site.abuse.auth_ban
    return AuthBanSettings(
        enabled=ban.enabled,
        firewall=ban.enabled and ban.firewall,
        failures=ban.failures,
        window=ban.window,
        ban=ban.ban,
        # docker-proxy relays IPv6 connections from the host itself from the front network's
        # IPv6 gateway; the guard finds only the IPv4 one on its own.
        exempt=[
            *ban.exempt,
            *([f"{front_gateway6(subnet6)}/128"] if (subnet6 := site.front_subnet6) else []),
        ],
        policy_host=GUARD_POLICY_HOST,
        policy_url=f"http://{GUARD_POLICY_HOST}:{services.service('guard').internal_ports['guard']}/",
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
    table = services.ports()
    ports = sorted(
        {port for protocol, port in site.network.ports.published().items() if table[protocol][0].fenced}
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
