"""What is due for each certificate, and when."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .clock import now
from .config import Config
from .keys import dns_names
from .store import Store

if TYPE_CHECKING:
    from .ari import AriCache

RENEW_AT = 2 / 3  # of the lifetime, without (or before) an ARI window


@dataclass(frozen=True)
class Due:
    kind: str
    when: dt.datetime
    reason: str  # first | names | ca | renewal | forced
    basis: str = ""  # for renewal: ari | two-thirds


def due(config: Config, store: Store, status: dict[str, Any], ari: AriCache | None) -> list[Due]:
    out = []
    issued = status.get("certificates", {})
    for kind in config.kinds:
        cert = store.live_cert(kind)
        serial = format(cert.serial_number, "x")
        entry = issued.get(kind, {})
        if entry.get("serial") != serial:
            out.append(Due(kind, now(), "first"))
        elif entry.get("directory", config.directory_url) != config.directory_url:
            out.append(Due(kind, now(), "ca"))  # another CA now (staging → production): its own
        elif not set(config.names) <= dns_names(cert):
            out.append(Due(kind, now(), "names"))
        else:
            when = ari.renew_at(kind, cert) if ari else None
            if when is not None:
                out.append(Due(kind, when, "renewal", "ari"))
            else:
                start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
                out.append(Due(kind, start + (end - start) * RENEW_AT, "renewal", "two-thirds"))
    return out
