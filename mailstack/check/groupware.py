"""The groupware as its clients find it: CalDAV and CardDAV discovery (RFC 6764's
/.well-known), the webmail's login page and, when on, ActiveSync's OPTIONS."""

from __future__ import annotations

import http.client
import ssl

from mailstack.check.http import http_request
from mailstack.check.results import Result, failed, passed
from mailstack.check.transport import Endpoint
from mailstack.discovery import ACTIVESYNC_PATH, DAV_ROOT
from mailstack.site.models import Site

FIX_GROUPWARE = "is SOGo running? `mailstack status`, `mailstack logs SITE sogo` and `… web`"
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 3


def groupware_results(site: Site, endpoint: Endpoint, context: ssl.SSLContext) -> list[Result]:
    results = [_well_known(endpoint, context, site, kind) for kind in ("caldav", "carddav")]
    results.append(_webmail(endpoint, context, site))
    if site.groupware.activesync:
        results.append(_activesync(endpoint, context, site))
    return results


def _well_known(endpoint: Endpoint, context: ssl.SSLContext, site: Site, kind: str) -> Result:
    probe = f"{'CalDAV' if kind == 'caldav' else 'CardDAV'} discovery"
    path = f"/.well-known/{kind}"
    try:
        status, headers, _ = http_request(endpoint, context, site.hostname, path)
    except (OSError, http.client.HTTPException) as exc:
        return failed(probe, f"https://{site.hostname}{path}: {exc}", FIX_GROUPWARE)
    location = headers.get("location", "")
    if status in REDIRECTS and leads_to_dav_root(location, site):
        return passed(probe, f"{path} leads to {DAV_ROOT} ({status}), as RFC 6764 §5 asks")
    return failed(
        probe,
        f"{path} answered {status} {location!r}, not a redirect to {DAV_ROOT} on the published port",
        FIX_GROUPWARE,
    )


def leads_to_dav_root(location: str, site: Site) -> bool:
    """A Location a client follows to the DAV root: relative, or absolute on the site's
    hostname and published HTTPS port (not the port web listens on in its container)."""
    port = site.network.ports.https
    origin = f"https://{site.hostname}" + ("" if port in (None, 443) else f":{port}")
    target = location.removeprefix(origin) if location.startswith(origin + "/") else location
    return target.rstrip("/") == DAV_ROOT.rstrip("/")


def _webmail(endpoint: Endpoint, context: ssl.SSLContext, site: Site) -> Result:
    probe = "webmail"
    path = "/SOGo/"
    try:
        for _ in range(MAX_REDIRECTS + 1):
            status, headers, body = http_request(endpoint, context, site.hostname, path)
            location = headers.get("location", "")
            if status not in REDIRECTS or not location.startswith(("/", f"https://{site.hostname}")):
                break
            path = "/" + location.split("/", 3)[3] if location.startswith("https://") else location
    except (OSError, http.client.HTTPException) as exc:
        return failed(probe, f"https://{site.hostname}/SOGo/: {exc}", FIX_GROUPWARE)
    if status == 200 and b"SOGo" in body:
        return passed(probe, f"the login page answers at {path} ({len(body)} bytes)")
    return failed(
        probe, f"https://{site.hostname}{path} answered {status}, not SOGo's login page", FIX_GROUPWARE
    )


def _activesync(endpoint: Endpoint, context: ssl.SSLContext, site: Site) -> Result:
    probe = "ActiveSync"
    path = ACTIVESYNC_PATH
    try:
        status, headers, _ = http_request(endpoint, context, site.hostname, path, method="OPTIONS")
    except (OSError, http.client.HTTPException) as exc:
        return failed(probe, f"OPTIONS https://{site.hostname}{path}: {exc}", FIX_GROUPWARE)
    versions = headers.get("ms-asprotocolversions")
    if status == 200 and versions:
        return passed(probe, f"OPTIONS offers protocol versions {versions}")
    if status == 401 and headers.get("www-authenticate", "").lower().startswith("basic"):
        return passed(probe, "OPTIONS reaches SOGo, which asks for a login (401, Basic)")
    return failed(probe, f"OPTIONS {path} answered {status}", FIX_GROUPWARE)
