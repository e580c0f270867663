"""The web service (nginx): what its configuration needs, and the static files it serves.

Everything nginx answers is a file the renderer writes into ``config/web/htdocs`` (nginx has
no scripting here):

- ``.well-known/mta-sts.txt``: the MTA-STS policy, the very text the ``_mta-sts`` TXT id is
  computed from (``dns.mta_sts_policy``), on ``mta-sts.<domain>``;
- ``autoconfig/<domain>.xml``: Thunderbird's autoconfig, chosen by the Host header
  (``autoconfig.<domain>``) or by the domain of ``?emailaddress=``;
- ``autodiscover/autodiscover.xml``: the Outlook (POX) answer, the same for every domain
  (the servers and ports are the site's, whoever asks); nginx answers a POST with it through
  ``error_page 405 =200`` (its static handler refuses POST with 405);
- with ``groupware.activesync``, ``autodiscover/mobilesync.xml`` and
  ``autodiscover/mobilesync/<address>.xml``: the ActiveSync answer ([MS-ASCMD] 2.2.1.1) for
  requests that ask for the mobilesync response schema (phones, Windows Mail), per mailbox
  with its User element, else without. nginx cannot read a body into a static answer, but it
  sets ``$request_body`` for a proxied request once the body is read: the autodiscover
  location proxies to a loopback server of its own, with the answer chosen by a ``map`` of
  the body in a header (see nginx.conf.j2). Outlook's own schema (POX, [MS-OXDSCLI]) has no
  ActiveSync protocol type (EXCH and EXPR are Exchange RPC, which SOGo does not speak), so
  Outlook keeps getting IMAP and SMTP;
- ``apple/<address>.mobileconfig``: an Apple configuration profile per mailbox, without a
  password; any other address finds no file (404).

The per-domain and per-mailbox files come from ``templates/web/`` (one render per item);
``templates/compose/web/nginx.conf.j2`` is rendered like every other config file.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from mailstack import services
from mailstack.discovery import MOBILESYNC_SCHEMA, Dav, dav
from mailstack.dns import mta_sts_policy
from mailstack.render.environment import environment
from mailstack.render.writer import PlannedFile
from mailstack.services import ACME_ROOT, WEB_CONFIG_DIR, WEB_HTTP_PORT, WEB_HTTPS_PORT
from mailstack.site.models import Site

WEB_HEALTH_PORT = 8081  # 127.0.0.1 only, for the healthcheck
# The static files inside the config directory (WEB_CONFIG_DIR).
WEB_ROOT = f"{WEB_CONFIG_DIR}/htdocs"
# tmpfs where the entrypoint copies the TLS keys from /run/mailstack/… for www-data.
WEB_SECRETS = "/run/web-secrets"
SECRETS_MOUNT = "/run/mailstack"
HSTS_MAX_AGE = 31536000  # one year (RFC 6797); no includeSubDomains: other hosts are not ours
AUTODISCOVER_BODY_LIMIT = "64k"  # Outlook's POX request is well under 1 KiB
# The loopback server that serves the autodiscover answer nginx chose by the request body.
WEB_AUTODISCOVER_PORT = 8082  # 127.0.0.1 only
# Addresses nginx takes from a request's <EMailAddress> to find a mailbox's answer: no '/'
# (a file name) and nothing nginx's config syntax would need quoted; other addresses, and
# upper case (the site's are lower case), get the answer without User.
ADDRESS_CHARS = "A-Za-z0-9._=-"
ADDRESS_PATTERN = f"[{ADDRESS_CHARS}]+@[{ADDRESS_CHARS}]+"

# Mail client kinds, incoming first; within a kind implicit TLS is preferred (RFC 8314 §3).
INCOMING = ("imap", "pop3")
OUTGOING = ("smtp",)


@dataclass(frozen=True)
class Endpoint:
    """A published client port and how a client speaks TLS on it."""

    protocol: str  # imaps, imap, pop3s, pop3, submissions, submission
    kind: str  # imap | pop3 | smtp (Thunderbird's type; POX upper-cases it)
    port: int
    implicit_tls: bool  # True: TLS from the first byte; False: STARTTLS (required before login)

    @property
    def socket_type(self) -> str:
        """Thunderbird autoconfig socketType."""
        return "SSL" if self.implicit_tls else "STARTTLS"

    @property
    def pox_encryption(self) -> str:
        """Outlook POX <Encryption>: SSL = implicit TLS, TLS = STARTTLS."""
        return "SSL" if self.implicit_tls else "TLS"


@dataclass(frozen=True)
class MapEntry:
    """One line of an nginx map: a source (quoted) and its value."""

    source: str
    value: str


@dataclass(frozen=True)
class WebSettings:
    enabled: bool  # the compose file has a web service (http or https is published)
    ipv6: bool  # clients arrive over IPv6 too (the front network has an IPv6 subnet)
    http_port: int
    https_port: int
    health_port: int
    config_dir: str
    root: str
    acme_root: str
    redirect: str  # the return 301 target of plain HTTP
    server_names: list[str]  # the mail host, autoconfig.<d> and autodiscover.<d>
    mta_sts_names: list[str]  # mta-sts.<d>
    autoconfig_hosts: list[MapEntry]  # $host → domain
    autoconfig_emails: list[MapEntry]  # $arg_emailaddress → domain
    certificates: list[tuple[str, str]]  # (cert, key) inside the container, ECDSA first
    protocols: str  # ssl_protocols
    hsts_max_age: int
    body_limit: str
    # groupware.activesync: autodiscover answers by the request body (mobilesync or Outlook).
    activesync: bool
    autodiscover_port: int
    mobilesync_match: str  # map source: the body asks for the mobilesync response schema
    address_match: str  # map source: the body's <EMailAddress>, captured as $autodiscover_address


def client_endpoints(site: Site) -> tuple[list[Endpoint], list[Endpoint]]:
    """(incoming, outgoing) published client ports, preferred first."""
    published = site.network.ports.published()
    ports = [p for _, p in services.ports().values() if p.client is not None and p.protocol in published]

    def pick(kinds: tuple[str, ...]) -> list[Endpoint]:
        return [
            Endpoint(p.protocol, kind, published[p.protocol], p.tls == "implicit")
            for kind in kinds
            for p in sorted(ports, key=lambda p: p.tls != "implicit")
            if p.client == kind
        ]

    return pick(INCOMING), pick(OUTGOING)


def pox_protocols(site: Site) -> list[Endpoint]:
    """Outlook takes the first <Protocol> of each type: the preferred IMAP, POP3 and SMTP port."""
    incoming, outgoing = client_endpoints(site)
    chosen: dict[str, Endpoint] = {}
    for endpoint in incoming + outgoing:
        chosen.setdefault(endpoint.kind, endpoint)
    return list(chosen.values())


def web_enabled(site: Site) -> bool:
    return services.service("web").present(site)


def https_redirect(site: Site) -> str:
    """Where plain HTTP sends clients: the same host and path on the published HTTPS port."""
    port = site.network.ports.https
    suffix = "" if port in (None, 443) else f":{port}"
    return f"https://$host{suffix}$request_uri"


def nginx_regex(text: str) -> str:
    """A literal inside a PCRE, for nginx maps (domain names: only the dot needs escaping)."""
    return re.sub(r"([.\\^$|?*+()\[\]{}])", r"\\\1", text)


def web_settings(site: Site, certificates: list[tuple[str, str]], protocols: str) -> WebSettings:
    """``certificates``: (cert, key) paths as the other services see them (under /run/mailstack);
    the web service reads the entrypoint's copies of the same files."""
    domains = site.domain_names
    return WebSettings(
        enabled=web_enabled(site),
        ipv6=site.front_subnet6 is not None,
        http_port=WEB_HTTP_PORT,
        https_port=WEB_HTTPS_PORT,
        health_port=WEB_HEALTH_PORT,
        config_dir=WEB_CONFIG_DIR,
        root=WEB_ROOT,
        acme_root=ACME_ROOT,
        redirect=https_redirect(site),
        server_names=[site.hostname, *(f"{p}.{d}" for d in domains for p in ("autoconfig", "autodiscover"))],
        mta_sts_names=[f"mta-sts.{d}" for d in domains],
        autoconfig_hosts=[MapEntry(f'"autoconfig.{d}"', d) for d in domains],
        # ?emailaddress= arrives URL-encoded or not ($arg_ is never decoded): @ or %40.
        autoconfig_emails=[MapEntry(f'"~*(@|%40){nginx_regex(d)}$"', d) for d in domains],
        certificates=[(_web_path(cert), _web_path(key)) for cert, key in certificates],
        protocols=protocols,
        hsts_max_age=HSTS_MAX_AGE,
        body_limit=AUTODISCOVER_BODY_LIMIT,
        activesync=activesync_announced(site),
        autodiscover_port=WEB_AUTODISCOVER_PORT,
        # Any namespace prefix (a:AcceptableResponseSchema), blanks around the text.
        mobilesync_match=f'"~AcceptableResponseSchema>\\s*{nginx_regex(MOBILESYNC_SCHEMA)}\\s*<"',
        address_match=f'"~EMailAddress>\\s*(?<autodiscover_address>{ADDRESS_PATTERN})\\s*<"',
    )


def activesync_announced(site: Site) -> bool:
    """Autodiscover answers phones with the ActiveSync URL (groupware.activesync, https)."""
    found = dav(site)
    return found is not None and found.activesync


def _web_path(path: str) -> str:
    return WEB_SECRETS + path.removeprefix(SECRETS_MOUNT) if path.startswith(SECRETS_MOUNT + "/") else path


def profile_uuid(site: Site, address: str, part: str) -> str:
    """A stable PayloadUUID: the same profile for the same mailbox on every render."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailstack:{site.site}:{address}:{part}")).upper()


def reverse_dns(name: str) -> str:
    """com.apple payload identifiers: mail.example.org → org.example.mail."""
    return ".".join(reversed(name.split(".")))


def _label(address: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", address)


def mobilesync_files(site: Site, found: Dav) -> list[PlannedFile]:
    """The ActiveSync autodiscover answers: one for any address, one per mailbox nginx can
    name from a request (ADDRESS_PATTERN)."""
    template = environment().get_template("web/mobilesync.xml.j2")
    files = [
        PlannedFile(
            "config/web/htdocs/autodiscover/mobilesync.xml",
            template.render(site=site, dav=found, mailbox=None).encode(),
        )
    ]
    for mailbox in site.mailboxes:
        if re.fullmatch(ADDRESS_PATTERN, mailbox.address):
            text = template.render(site=site, dav=found, mailbox=mailbox)
            files.append(
                PlannedFile(f"config/web/htdocs/autodiscover/mobilesync/{mailbox.address}.xml", text.encode())
            )
    return files


def web_files(site: Site) -> list[PlannedFile]:
    """The static files under config/web/htdocs: a pure function of the site."""
    incoming, outgoing = client_endpoints(site)
    env = environment()
    common = {
        "site": site,
        "incoming": incoming,
        "outgoing": outgoing,
        "pox": pox_protocols(site),
        "dav": dav(site),
    }
    files = [PlannedFile("config/web/htdocs/.well-known/mta-sts.txt", mta_sts_policy(site).encode())]
    autoconfig = env.get_template("web/autoconfig.xml.j2")
    for domain in site.domain_names:
        text = autoconfig.render(common | {"domain": domain})
        files.append(PlannedFile(f"config/web/htdocs/autoconfig/{domain}.xml", text.encode()))
    autodiscover = env.get_template("web/autodiscover.xml.j2").render(common)
    files.append(PlannedFile("config/web/htdocs/autodiscover/autodiscover.xml", autodiscover.encode()))
    found = dav(site)
    if found is not None and found.activesync:
        files += mobilesync_files(site, found)
    if incoming and outgoing:  # a profile needs both; Apple Mail offers IMAP or POP3
        profile = env.get_template("web/mobileconfig.j2")
        for mailbox in site.mailboxes:
            text = profile.render(
                common
                | {
                    "mailbox": mailbox,
                    "identifier": f"{reverse_dns(site.hostname)}.mailstack.{_label(mailbox.address)}",
                    "profile_uuid": profile_uuid(site, mailbox.address, "profile"),
                    "account_uuid": profile_uuid(site, mailbox.address, "account"),
                    "caldav_uuid": profile_uuid(site, mailbox.address, "caldav"),
                    "carddav_uuid": profile_uuid(site, mailbox.address, "carddav"),
                }
            )
            files.append(
                PlannedFile(f"config/web/htdocs/apple/{mailbox.address}.mobileconfig", text.encode())
            )
    return files
