"""The commands: serve, renew, health (see the package's docstring)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from .config import Config
from .schedule import WAKE_SECONDS, tick
from .store import Store

log = logging.getLogger("mailstack-acme")


def serve(config: Config) -> int:
    store = Store(config)
    log.info("serving %s for %s", config.directory_url, ", ".join(config.names))
    while True:
        try:
            with store.locked():
                _, wait = tick(config, store)
        except Exception:  # a bad state file must not end the service: log, wait, look again
            log.exception("wake-up failed")
            wait = config.retry_min
        time.sleep(min(max(wait, 1.0), WAKE_SECONDS))


def renew(config: Config, force: bool) -> int:
    store = Store(config)
    with store.locked():
        ok, _ = tick(config, store, force=force, manual=True)
        status = store.status()
    last = status.get("last_attempt") or {}
    print(
        json.dumps({"ok": ok, "last_attempt": last, "certificates": status.get("certificates", {})}, indent=2)
    )
    return 0 if ok else 1


def health(config: Config) -> int:
    store = Store(config)
    for kind in config.kinds:
        store.live_cert(kind)
    return 0 if os.access(store.root, os.W_OK) and os.access(config.challenge_dir, os.W_OK) else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mailstack-acme")
    parser.add_argument("command", choices=("serve", "renew", "health"))
    parser.add_argument("config")
    parser.add_argument("--force", action="store_true", help="renew even certificates that are not due")
    args = parser.parse_args(argv)
    # serve logs to stdout (the container's log); renew prints its result there, logs to stderr.
    stream = sys.stdout if args.command == "serve" else sys.stderr
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s mailstack-acme %(levelname)s %(message)s", stream=stream
    )
    logging.getLogger("acme").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    config = Config.load(args.config)
    if args.command == "serve":
        return serve(config)
    if args.command == "renew":
        return renew(config, args.force)
    return health(config)
