"""Anti-abuse: what an SMTP client sees (banner, VRFY, relay) and Postfix's effective settings."""

from __future__ import annotations

import re
import smtplib
import ssl
from typing import Any

from mailstack.audit.report import Item
from mailstack.remote import Shell
from mailstack.site.models import Site

PRODUCT_NAMES = re.compile(r"postfix|dovecot|pigeonhole|debian|ubuntu|rspamd|redis|openssl", re.I)
RELAY_PROBE = "audit-relay-probe@relay-test.invalid"
SRC_BANNER = "CIS Debian: no version or product disclosure in service banners"
SRC_VRFY = "RFC 5321 7.3; Postfix disable_vrfy_command (address harvesting)"
SRC_RELAY = "RFC 5321 7.1; RFC 2505 (no open relay)"
SRC_BARE_LF = "Postfix SMTP smuggling advisory (CVE-2023-51764); smtpd_forbid_bare_newline"
SRC_PREGREET = "Postfix POSTSCREEN_README: pregreet test"
SRC_RATE = "Issue #5: a hijacked account must not become a spam cannon (Rspamd ratelimit)"
SRC_ANVIL = "Postfix TUNING_README: per-client connection and rate limits (anvil)"
EXPECTED_POSTCONF = {
    "smtpd_forbid_bare_newline": ("normalize", "yes"),
    "postscreen_greet_action": ("enforce", "drop"),
    "disable_vrfy_command": ("yes",),
}


class _GreetedSMTP(smtplib.SMTP):
    """smtplib.SMTP that keeps the server's greeting (the banner)."""

    greeting = b""

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        code, message = super().connect(host, port, source_address)
        self.greeting = message
        return code, message


def probe_items(site: Site, host: str, ports: dict[str, int]) -> list[Item]:
    """Banner, VRFY and relay as a client on port 25 sees them (the address it comes from
    decides the relay answer: run from a host outside ``mynetworks``)."""
    items: list[Item] = []
    try:
        with _GreetedSMTP(host, ports["smtp"], timeout=30, local_hostname="audit.invalid") as smtp:
            banner = smtp.greeting.decode(errors="replace").splitlines()[-1]
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=_unverified())
                smtp.ehlo()
            vrfy_code, vrfy_text = smtp.verify(site.admin_email)
            smtp.mail("audit@audit.invalid")
            relay_code, relay_text = smtp.rcpt(RELAY_PROBE)
            smtp.rset()
    except (OSError, smtplib.SMTPException) as exc:
        detail = f"no SMTP session on port {ports['smtp']}: {exc}"
        return [
            Item("smtp.banner", "port 25 banner", "fail", detail, SRC_BANNER),
            Item("smtp.vrfy", "VRFY", "fail", detail, SRC_VRFY),
            Item("smtp.relay", "relay", "fail", detail, SRC_RELAY),
        ]
    items.append(
        Item.check(
            "smtp.banner",
            "port 25 greets with '<hostname> ESMTP' and names no product",
            banner.startswith(f"{site.hostname} ESMTP") and not PRODUCT_NAMES.search(banner),
            f"greeting: {banner!r}",
            SRC_BANNER,
        )
    )
    items.append(
        Item.check(
            "smtp.vrfy",
            "VRFY is disabled",
            vrfy_code == 502,
            f"VRFY {site.admin_email}: {vrfy_code} {vrfy_text.decode(errors='replace')}",
            SRC_VRFY,
        )
    )
    items.append(
        Item.check(
            "smtp.relay",
            "relay to an outside domain without AUTH is refused",
            relay_code >= 500,
            f"RCPT TO:<{RELAY_PROBE}>: {relay_code} {relay_text.decode(errors='replace')}",
            SRC_RELAY,
        )
    )
    return items


def postfix_items(shell: Shell, postfix_container: str, site: Site) -> list[Item]:
    """Postfix's effective settings, as `postconf` in the running container reports them."""
    names = [*EXPECTED_POSTCONF, "smtpd_client_connection_count_limit", "smtpd_client_auth_rate_limit"]
    values = dict(
        zip(
            names,
            shell.output("docker", "exec", postfix_container, "postconf", "-h", *names).splitlines(),
            strict=False,
        )
    )
    items = [
        Item.check(
            "smtp.bare_newline",
            "bare LF line endings are normalised or refused (SMTP smuggling)",
            values.get("smtpd_forbid_bare_newline") in EXPECTED_POSTCONF["smtpd_forbid_bare_newline"],
            f"smtpd_forbid_bare_newline = {values.get('smtpd_forbid_bare_newline')}",
            SRC_BARE_LF,
        ),
        Item.check(
            "smtp.pregreet",
            "postscreen rejects clients that talk before the greeting",
            values.get("postscreen_greet_action") in EXPECTED_POSTCONF["postscreen_greet_action"],
            f"postscreen_greet_action = {values.get('postscreen_greet_action')}",
            SRC_PREGREET,
        ),
        Item.check(
            "smtp.client_limits",
            "per-client connection and AUTH rate limits",
            _positive(values.get("smtpd_client_connection_count_limit"))
            and _positive(values.get("smtpd_client_auth_rate_limit")),
            f"connections {values.get('smtpd_client_connection_count_limit')}, "
            f"AUTH per minute {values.get('smtpd_client_auth_rate_limit')}",
            SRC_ANVIL,
        ),
    ]
    unlimited = [m.address for m in site.mailboxes if (m.send_rate or site.limits.send_rate) is None]
    items.append(
        Item.check(
            "smtp.send_rate",
            "every mailbox has an outbound rate limit",
            not unlimited,
            f"site limit {site.limits.send_rate or 'none'}"
            + (f"; without a limit: {', '.join(unlimited)}" if unlimited else ""),
            SRC_RATE,
        )
    )
    return items


def _positive(value: str | None) -> bool:
    return value is not None and value.isdigit() and int(value) > 0


def _unverified() -> ssl.SSLContext:
    """The audit reads what the server says, not whether this machine trusts its CA."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


SRC_BANS = "Issue #5: brute-force logins blocked on every mail port (NIST SP 800-63B 5.2.2 rate limiting)"


def ban_item(shell: Shell, running: dict[str, dict[str, Any]], site: Site, fence_table: str) -> Item:
    """Login bans are on: Dovecot asks the guard about every login, and (with the firewall)
    the fence's nftables table is loaded on the Docker host."""
    title = "failed logins get the address banned on every mail port"
    settings = site.abuse.auth_ban
    if not settings.enabled:
        return Item("abuse.auth_ban", title, "fail", "abuse.auth_ban.enabled is false", SRC_BANS)
    dovecot, fence = running.get("dovecot"), running.get("fence")
    policy = ""
    if dovecot is not None:
        # doveconf -n groups it as `auth_policy { server_url = … }` (Dovecot 2.4).
        run = shell.run("docker", "exec", dovecot["Id"], "doveconf", "-n")
        found = re.search(r"^\s*(?:auth_policy_)?server_url = (\S+)$", run.stdout, re.M)
        policy = found.group(1) if run.returncode == 0 and found else ""
    table = ""
    if settings.firewall and fence is not None:
        run = shell.run("docker", "exec", fence["Id"], "nft", "list", "table", "inet", fence_table)
        table = fence_table if run.returncode == 0 and "hook forward" in run.stdout else ""
    ok = bool(policy) and "guard" in running and (table or not settings.firewall)
    return Item.check(
        "abuse.auth_ban",
        title,
        bool(ok),
        f"{settings.failures} failed logins within {settings.window} s ban for {settings.ban} s; "
        f"Dovecot's auth policy: {policy or 'not set'}; "
        + (
            f"firewall table inet {table or fence_table}: {'loaded' if table else 'missing'}"
            if settings.firewall
            else "firewall off: logins refused only"
        ),
        SRC_BANS,
    )
