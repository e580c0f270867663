"""Wake-ups: attempt what is due, record the outcome, back off after failures."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
from typing import Any

from .ari import ari_cache, ari_cert_id
from .clock import iso, now, parse_iso
from .config import Config
from .due import Due, due
from .protocol import AcmeError, connect, issue, short
from .store import Store, write_atomic

log = logging.getLogger("mailstack-acme")

WAKE_SECONDS = 3600  # the longest sleep: ARI windows and the configuration are looked at again


def attempt(config: Config, store: Store, items: list[Due], status: dict[str, Any]) -> bool:
    """Issue what ``items`` asks for; record the outcome, the back-off and the next retry."""
    started = now()
    reasons = ", ".join(f"{i.kind} ({i.reason})" for i in items)
    log.info("attempt: %s from %s", reasons, config.directory_url)
    certificates = status.setdefault("certificates", {})
    installed = []
    try:
        acme, _, _ = connect(config, store)
        for item in items:
            cert = store.live_cert(item.kind)
            ari_id = ari_cert_id(cert) if certificates.get(item.kind, {}).get("serial") else None
            certificates[item.kind] = issue(config, store, acme, item, ari_id)
            installed.append(item.kind)
            status.get("ari", {}).pop(item.kind, None)
        error = None
    except AcmeError as exc:
        error = str(exc)
    except Exception as exc:  # never a crash loop: any failure is an attempt that failed
        log.exception("attempt failed unexpectedly")
        error = f"{type(exc).__name__}: {short(exc)}"
    if installed:
        marker = hashlib.sha256(b"".join(store.live(k, "crt").read_bytes() for k in config.kinds)).hexdigest()
        write_atomic(store.root / "tls" / "live" / "serial", f"{iso(now())} {marker}\n".encode())
    status["last_attempt"] = {"at": iso(started), "reasons": reasons, "ok": error is None, "error": error}
    if error is None:
        status["failures"] = 0
        status["next_retry"] = None
        log.info("attempt succeeded: %s", ", ".join(installed))
    else:
        failures = int(status.get("failures") or 0) + 1
        delay = min(config.retry_min * 2 ** (failures - 1), config.retry_max)
        delay = int(delay * random.uniform(0.9, 1.1))  # noqa: S311 - spread, not secret
        status["failures"] = failures
        status["next_retry"] = iso(started + dt.timedelta(seconds=delay))
        log.error("attempt %d failed: %s; next try at %s", failures, error, status["next_retry"])
    store.save_status(status)
    return error is None


def schedule(plan: list[Due]) -> dict[str, Any]:
    return {
        d.kind: {"at": iso(d.when.replace(microsecond=0)), "reason": d.reason, "basis": d.basis} for d in plan
    }


def tick(config: Config, store: Store, *, force: bool = False, manual: bool = False) -> tuple[bool, float]:
    """One wake-up: attempt what is due (or everything, forced); returns (ok, seconds to sleep)."""
    status = store.status()
    issued = any(status.get("certificates", {}).get(k) for k in config.kinds)
    ari = ari_cache(config, status) if issued else None
    plan = due(config, store, status, ari)
    status["schedule"] = schedule(plan)
    current = now()
    # Forced: renew now what is valid (a first issuance or new names keep their reason).
    items = [
        Due(d.kind, current, "forced" if d.reason == "renewal" else d.reason) if force else d
        for d in plan
        if force or d.when <= current
    ]
    retry = parse_iso(status.get("next_retry"))
    if items and retry and retry > current and not manual:
        store.save_status(status)
        return False, (retry - current).total_seconds()
    ok = True
    if items:
        ok = attempt(config, store, items, status)
        if not ok:
            return False, max(
                (parse_iso(status.get("next_retry")) or current) - now(), dt.timedelta(0)
            ).total_seconds()
        plan = due(config, store, status, ari)
        status["schedule"] = schedule(plan)
    store.save_status(status)
    upcoming = min((d.when for d in plan), default=current + dt.timedelta(seconds=WAKE_SECONDS))
    return ok, max((upcoming - now()).total_seconds(), 1.0)
