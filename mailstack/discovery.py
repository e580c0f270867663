"""Where clients find the groupware: CalDAV and CardDAV under SOGo's DAV root, for the
autoconfig XML, the Apple profiles and the RFC 6764 records of `mailstack dns`."""

from __future__ import annotations

from dataclasses import dataclass

from mailstack.site.models import Site

# SOGo's DAV tree: principals and collections live under /SOGo/dav/<user>/ (the guide's
# "DAV URLs"); /.well-known/caldav and carddav redirect here (the web service).
DAV_ROOT = "/SOGo/dav/"
# Exchange ActiveSync's fixed path (the request URI of [MS-ASHTTP]); web proxies it to SOGo.
ACTIVESYNC_PATH = "/Microsoft-Server-ActiveSync"
# The autodiscover response schema phones ask for ([MS-ASCMD] 2.2.3.1); its answer names
# the ActiveSync URL (MobileSync).
MOBILESYNC_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
HTTPS_DEFAULT_PORT = 443


@dataclass(frozen=True)
class Dav:
    host: str
    port: int  # the published https port
    base_url: str  # https://host, with :port unless 443
    root: str  # DAV_ROOT
    activesync: bool

    @property
    def activesync_url(self) -> str | None:
        """What autodiscover announces to phones (MobileSync); None with ActiveSync off."""
        return f"{self.base_url}{ACTIVESYNC_PATH}" if self.activesync else None


def dav(site: Site) -> Dav | None:
    """The groupware's DAV service as clients see it; None without groupware (or https)."""
    port = site.network.ports.https
    if not site.groupware.enabled or port is None:
        return None
    suffix = "" if port == HTTPS_DEFAULT_PORT else f":{port}"
    return Dav(
        host=site.hostname,
        port=port,
        base_url=f"https://{site.hostname}{suffix}",
        root=DAV_ROOT,
        activesync=site.groupware.activesync,
    )
