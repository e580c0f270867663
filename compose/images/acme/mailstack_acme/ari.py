"""ACME Renewal Information (RFC 9773): the CA's renewal window of each certificate.

The library (python3-acme 4.0) has no ARI yet; the lookup uses its HTTP session."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import random
from typing import Any

import requests
from cryptography import x509

from .clock import iso, now, parse_iso
from .config import Config
from .protocol import trust_bundle

log = logging.getLogger("mailstack-acme")

ARI_DEFAULT_RETRY = 6 * 3600  # RFC 9773 §4.3: poll again after Retry-After, else about 6 h


def ari_cert_id(cert: x509.Certificate) -> str | None:
    """RFC 9773 §4.1: base64url(authority key identifier) "." base64url(serial number)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None
    if not aki:
        return None
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big")

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"{b64(aki)}.{b64(serial)}"


class AriCache:
    """Renewal windows (RFC 9773) per certificate, kept in status.json between wake-ups."""

    def __init__(self, endpoint: str, session: requests.Session, verify: str | bool, status: dict[str, Any]):
        self.endpoint = endpoint.rstrip("/")
        self.session = session
        self.verify = verify
        self.entries: dict[str, Any] = status.setdefault("ari", {})

    def renew_at(self, kind: str, cert: x509.Certificate) -> dt.datetime | None:
        cert_id = ari_cert_id(cert)
        if cert_id is None:
            return None
        entry = self.entries.get(kind, {})
        if entry.get("cert_id") != cert_id or (parse_iso(entry.get("poll_after")) or now()) <= now():
            entry = self._fetch(cert_id, entry if entry.get("cert_id") == cert_id else {})
            self.entries[kind] = entry
        return parse_iso(entry.get("renew_at"))

    def _fetch(self, cert_id: str, old: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self.session.get(f"{self.endpoint}/{cert_id}", timeout=30, verify=self.verify)
            response.raise_for_status()
            window = response.json()["suggestedWindow"]
            start, end = parse_iso(window["start"]), parse_iso(window["end"])
            if start is None or end is None:
                raise ValueError("empty suggestedWindow")
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            log.warning("ARI: no renewal window for %s (%s); keeping %s", cert_id, exc, old or "two thirds")
            return {**old, "cert_id": cert_id, "poll_after": iso(now() + dt.timedelta(hours=1))}
        retry = _retry_after(response.headers.get("Retry-After"))
        if old.get("window") == [iso(start), iso(end)]:
            renew_at = old["renew_at"]  # the same window: keep the moment chosen in it
        else:
            span = max((end - start).total_seconds(), 0)
            renew_at = iso(start + dt.timedelta(seconds=int(random.uniform(0, span))))  # noqa: S311 - spread, not secret
            log.info("ARI: window %s .. %s, renewal at %s", iso(start), iso(end), renew_at)
        return {
            "cert_id": cert_id,
            "window": [iso(start), iso(end)],
            "renew_at": renew_at,
            "poll_after": iso(now() + dt.timedelta(seconds=retry)),
        }


def _retry_after(value: str | None) -> int:
    if value and value.isdigit():
        return min(max(int(value), 60), 24 * 3600)
    return ARI_DEFAULT_RETRY


def ari_cache(config: Config, status: dict[str, Any]) -> AriCache | None:
    """ARI needs the directory; without it (CA unreachable) renewal falls back to two thirds."""
    try:
        verify = trust_bundle(config)
        session = requests.Session()
        directory = session.get(config.directory_url, timeout=30, verify=verify).json()
        endpoint = directory.get("renewalInfo")
    except (requests.RequestException, ValueError, OSError):
        return None
    return AriCache(endpoint, session, verify, status) if endpoint else None
