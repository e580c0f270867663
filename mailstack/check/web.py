"""The web service as senders and mail clients use it: the MTA-STS policy of every domain,
Thunderbird autoconfig, Outlook autodiscover (and, with ActiveSync, the phones' autodiscover),
and plain HTTP that only redirects."""

from __future__ import annotations

import http.client
import ssl
import xml.etree.ElementTree as ET

from mailstack.check.groupware import groupware_results
from mailstack.check.http import http_request
from mailstack.check.results import Result, failed, passed
from mailstack.check.transport import Endpoint
from mailstack.discovery import MOBILESYNC_SCHEMA, dav
from mailstack.mtasts import PolicyError, mx_matches, parse_policy
from mailstack.site.models import Site

FIX_WEB = "is the web service running? `mailstack status`, `mailstack logs SITE web`"
AUTODISCOVER_REQUEST = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>{address}</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>
"""
# What phones post ([MS-ASCMD] 4.2): the mobilesync request and response schemas.
MOBILESYNC_REQUEST = f"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006">
  <Request>
    <EMailAddress>{{address}}</EMailAddress>
    <AcceptableResponseSchema>{MOBILESYNC_SCHEMA}</AcceptableResponseSchema>
  </Request>
</Autodiscover>
"""


def web_results(site: Site, endpoints: dict[str, Endpoint], context: ssl.SSLContext) -> list[Result]:
    results: list[Result] = []
    if (plain := endpoints.get("http")) is not None:
        results.append(_redirects(plain, site))
    if (https := endpoints.get("https")) is None:
        return results
    for domain in site.domain_names:
        results.append(_mta_sts(https, context, site, domain))
    first = site.domain_names[0]
    results.append(_autoconfig(https, context, site, first))
    results.append(_autodiscover(https, context, site))
    if (found := dav(site)) is not None and found.activesync_url is not None:
        results.append(_mobilesync(https, context, site, found.activesync_url))
    if site.groupware.enabled:
        results += groupware_results(site, https, context)
    return results


def _redirects(endpoint: Endpoint, site: Site) -> Result:
    try:
        status, headers, _ = http_request(endpoint, None, site.hostname, "/mail/config-v1.1.xml")
    except OSError as exc:
        return failed(endpoint.label, f"HTTP on {endpoint.host}:{endpoint.port} failed: {exc}", FIX_WEB)
    location = headers.get("location", "")
    if status in (301, 302, 307, 308) and location.startswith("https://"):
        return passed(endpoint.label, f"plain HTTP redirects to HTTPS ({status} {location})")
    return failed(endpoint.label, f"plain HTTP answered {status}, not a redirect to HTTPS", FIX_WEB)


def _mta_sts(endpoint: Endpoint, context: ssl.SSLContext, site: Site, domain: str) -> Result:
    probe = f"MTA-STS {domain}"
    name = f"mta-sts.{domain}"
    try:
        status, _, body = http_request(endpoint, context, name, "/.well-known/mta-sts.txt")
    except (OSError, http.client.HTTPException) as exc:
        return failed(probe, f"https://{name}/.well-known/mta-sts.txt: {exc}", FIX_WEB)
    if status != 200:
        return failed(probe, f"https://{name}/.well-known/mta-sts.txt answered {status}", FIX_WEB)
    try:
        policy = parse_policy(body)
    except PolicyError as exc:
        return failed(probe, f"the served policy does not parse: {exc}", "re-render and `mailstack up`")
    if not any(mx_matches(pattern, site.hostname) for pattern in policy.mx):
        return failed(probe, f"its mx lines {list(policy.mx)} do not cover {site.hostname}", "re-render")
    if (policy.mode, policy.max_age) != (site.mta_sts.mode, site.mta_sts.max_age):
        return failed(
            probe,
            f"it says mode {policy.mode}, max_age {policy.max_age}; the site says "
            f"{site.mta_sts.mode}, {site.mta_sts.max_age}",
            "re-render and `mailstack up`",
        )
    return passed(probe, f"policy served and valid: mode {policy.mode}, max_age {policy.max_age}")


def _autoconfig(endpoint: Endpoint, context: ssl.SSLContext, site: Site, domain: str) -> Result:
    probe = "autoconfig"
    try:
        status, _, body = http_request(endpoint, context, f"autoconfig.{domain}", "/mail/config-v1.1.xml")
        root = ET.fromstring(body) if status == 200 else None  # noqa: S314 - our own server's answer
    except (OSError, http.client.HTTPException, ET.ParseError) as exc:
        return failed(probe, f"autoconfig for {domain}: {exc}", FIX_WEB)
    if root is None:
        return failed(probe, f"autoconfig for {domain} answered {status}", FIX_WEB)
    servers = {
        (e.get("type"), e.findtext("hostname"), e.findtext("port"))
        for e in [*root.iter("incomingServer"), *root.iter("outgoingServer")]
    }
    wrong = [s for s in servers if s[1] != site.hostname or not _published(site, s[2])]
    if not servers or wrong:
        return failed(probe, f"autoconfig names {sorted(map(str, wrong or servers))}", "re-render")
    return passed(probe, f"autoconfig for {domain} names {len(servers)} servers on published ports")


def _autodiscover(endpoint: Endpoint, context: ssl.SSLContext, site: Site) -> Result:
    probe = "autodiscover"
    root = _post_autodiscover(endpoint, context, site, AUTODISCOVER_REQUEST)
    if isinstance(root, str):
        return failed(probe, f"autodiscover POST {root}", FIX_WEB)
    protocols = [
        (p.findtext("{*}Type"), p.findtext("{*}Server"), p.findtext("{*}Port"))
        for p in root.iter()
        if p.tag.endswith("Protocol")
    ]
    wrong = [p for p in protocols if p[1] != site.hostname or not _published(site, p[2])]
    if not protocols or wrong:
        return failed(probe, f"autodiscover names {sorted(map(str, wrong or protocols))}", "re-render")
    return passed(
        probe, f"autodiscover POST names {', '.join(str(p[0]) for p in protocols)} on published ports"
    )


def _mobilesync(endpoint: Endpoint, context: ssl.SSLContext, site: Site, expected: str) -> Result:
    probe = "ActiveSync autodiscover"
    root = _post_autodiscover(endpoint, context, site, MOBILESYNC_REQUEST)
    if isinstance(root, str):
        return failed(probe, f"autodiscover POST (mobilesync) {root}", FIX_WEB)
    url = root.findtext("{*}Response/{*}Action/{*}Settings/{*}Server/{*}Url")
    if url != expected:
        return failed(probe, f"autodiscover tells phones {url!r}, not {expected}", "re-render, then `up`")
    return passed(probe, f"autodiscover tells phones ActiveSync at {url}")


def _post_autodiscover(
    endpoint: Endpoint, context: ssl.SSLContext, site: Site, request: str
) -> ET.Element | str:
    """The parsed answer to ``request`` for the probe address, or what went wrong."""
    host = f"autodiscover.{site.domain_names[0]}"
    body = request.format(address=site.probe_address)
    try:
        status, _, answer = http_request(endpoint, context, host, "/autodiscover/autodiscover.xml", body)
        return ET.fromstring(answer) if status == 200 else f"answered {status}"  # noqa: S314 - our own server
    except (OSError, http.client.HTTPException, ET.ParseError) as exc:
        return f"failed: {exc}"


def _published(site: Site, port: str | None) -> bool:
    return port is not None and port.isdigit() and int(port) in site.network.ports.published().values()
