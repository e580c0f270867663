"""`make bench`: the stack's speed and footprint, each figure the median of several rounds.

    .venv/bin/python bench/suite.py [--rounds 3] [--messages 2000] [--load 10000]
                                    [--imap-clients 50] [--skip load,fuzz]

Brings up a copy of examples/demo.yaml (its own site id and ports, client limits lifted by
its site file, 50 more mailboxes) on fresh volumes, then measures:

- footprint: `mailstack up` until healthy (images built), idle memory per service (cgroup
  RSS and page cache, 30 s after up), `mailstack check`, a no-change `up`, image sizes;
- delivery: Postfix's own smtp-source, in the stack's front network, sends --messages
  4 KB messages on port 25 (through postscreen, smtpd and the Rspamd milter, LMTP into
  Dovecot), timed from the first connection until Dovecot counts them all; to one mailbox
  and to 50. Three variants of the same stack alternate within every round: as rendered,
  Rspamd without Hyperscan (`disable_hyperscan`), and without the milter (taken out of the
  rendered main.cf, Postfix reloaded). Also Rspamd's scan time per message (its log);
- IMAP: --imap-clients clients at once log in (IMAPS), select INBOX and fetch every body;
- load: --load messages to the 50 mailboxes while the IMAP clients read in a loop: nothing
  lost, no container restarted or killed for memory, each container's peak under its limit;
- fuzz: 100 000 generated site files through the CLI's validation (bench/fuzz_sites.py).

Writes bench/results/<date>.json and <date>.md (the table) and prints the table.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import platform
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_footprint import ROOT, loaded_site

MAILSTACK = Path(sys.executable).with_name("mailstack")
PASSWORD = "bench-Paßwort-1"  # noqa: S105 - the bench mailboxes' own
BOXES = 50
SINK = "sink@example.test"
SENDER = "bench@sender.test"
MILTER = re.compile(r"^smtpd_milters = .*$", re.M)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(*command: str, stdin: str = "", timeout: float = 900) -> str:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])}… failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def box(n: int) -> str:
    return f"bench{n:02d}@example.test"


def site_file(directory: Path, password_hash: str) -> Path:
    boxes = "".join(
        f'  - address: {address}\n    password_hash: "{password_hash}"\n'
        for address in [SINK, *(box(n) for n in range(1, BOXES + 1))]
    )
    site_id = f"bench-{directory.name[-6:].lower().replace('_', '0')}"
    return loaded_site(directory, site_id, connections=500, mailboxes=boxes)


class Bench:
    def __init__(self, directory: Path, site: Path) -> None:
        self.site, self.state, self.out = site, directory / "state", directory / "build"
        self.project = "mailstack-" + re.search(r"^site: (\S+)$", site.read_text(), re.M)[1]  # type: ignore[index]
        self.ports = {
            m[0]: int(m[1]) for m in re.findall(r"^    ([a-z0-9]+): (\d+)$", site.read_text(), re.M)
        }

    def cli(self, command: str, *args: str) -> float:
        started = time.monotonic()
        run(
            str(MAILSTACK),
            command,
            str(self.site),
            "--state",
            str(self.state),
            "--output",
            str(self.out),
            *args,
        )
        return time.monotonic() - started

    def compose(self, *args: str, timeout: float = 300) -> str:
        return run("docker", "compose", "-p", self.project, *args, timeout=timeout)

    def containers(self) -> dict[str, str]:
        listing = run("docker", "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}",
                      "--filter", f"label=com.docker.compose.project={self.project}")  # fmt: skip
        return {
            name.removeprefix(self.project + "-").rsplit("-", 1)[0]: cid
            for cid, name in (line.split() for line in listing.splitlines())
        }

    # -- memory ------------------------------------------------------------------------------
    def memory(self) -> dict[str, dict[str, float]]:
        """Per service: RSS and page cache (MiB), the peak and the limit, from its cgroup."""
        usage = {}
        for service, cid in self.containers().items():
            v1 = Path(f"/sys/fs/cgroup/memory/docker/{cid}")
            v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope")
            if v1.exists():
                stat = dict(line.split() for line in (v1 / "memory.stat").read_text().splitlines())
                rss, cache = int(stat["total_rss"]), int(stat["total_cache"])
                peak, limit = (
                    int((v1 / "memory.max_usage_in_bytes").read_text()),
                    int(stat["hierarchical_memory_limit"]),
                )
            elif v2.exists():
                stat = dict(line.split() for line in (v2 / "memory.stat").read_text().splitlines())
                rss, cache = int(stat["anon"]), int(stat["file"])
                peak_file = v2 / "memory.peak"
                peak = int(peak_file.read_text()) if peak_file.exists() else rss + cache
                raw = (v2 / "memory.max").read_text().strip()
                limit = 2**63 if raw == "max" else int(raw)
            else:
                continue
            usage[service] = {
                "rss": rss / 2**20,
                "cache": cache / 2**20,
                "peak": peak / 2**20,
                "limit": limit / 2**20,
            }
        return usage

    def lives(self) -> dict[str, tuple[str, int, bool]]:
        """Per service: when its container started, its restarts, whether the kernel OOM-killed it."""
        result = {}
        for service, cid in self.containers().items():
            state_json, restarts = run(
                "docker", "inspect", "--format", "{{json .State}}|{{.RestartCount}}", cid
            ).rsplit("|", 1)
            state = json.loads(state_json)
            result[service] = (state["StartedAt"], int(restarts), bool(state["OOMKilled"]))
        return result

    # -- mail --------------------------------------------------------------------------------
    @cached_property
    def mail_volume(self) -> Path:
        """Where the engine keeps the mail volume (it exists once the stack is up)."""
        volume = f"{self.project}_mail"
        return Path(run("docker", "volume", "inspect", "--format", "{{.Mountpoint}}", volume).strip())

    def counts(self) -> dict[str, int]:
        """Messages in each mailbox's INBOX, counted as Maildir files on the mail volume from
        the host: doveadm opening 51 mailboxes four times a second would load the stack it
        measures."""
        found = {}
        for domain in self.mail_volume.iterdir() if self.mail_volume.exists() else ():
            for user in domain.iterdir():
                maildir = user / "Maildir"
                found[f"{user.name}@{domain.name}"] = sum(
                    sum(1 for _ in (maildir / sub).iterdir())
                    for sub in ("new", "cur")
                    if (maildir / sub).exists()
                )
        return found

    def smtp_source(self, targets: list[str], messages: int, sessions: int) -> None:
        """smtp-source in the front network: `sessions` connections at once in all, each
        message on a connection of its own (as MX traffic comes), shared over the targets."""
        share = messages // len(targets)
        each = max(1, sessions // len(targets))
        script = " ".join(
            f"smtp-source -s {each} -m {share} -l 4096 -M bench.sender.test -f {SENDER} -t {t} postfix:25 &"
            for t in targets
        )
        run("docker", "run", "--rm", "--network", f"{self.project}_front", "--entrypoint", "sh",
            "mailstack/postfix:0.1.0", "-c", f"{script} wait", timeout=1800)  # fmt: skip

    def deliver(self, targets: list[str], messages: int, sessions: int = 20) -> float:
        """msg/s from the first connection until Dovecot counts every message; smtp-source
        does not retry what was refused (4xx under load), so the wait also ends once
        Postfix's queue is empty and nothing arrived for 30 s: the rate of what arrived."""
        before = sum(self.counts().get(t, 0) for t in targets)
        messages -= messages % len(targets)
        started = time.monotonic()
        self.smtp_source(targets, messages, sessions)
        last, still_since = -1, time.monotonic()
        while (now := sum(self.counts().get(t, 0) for t in targets)) < before + messages:
            if now != last:
                last, still_since = now, time.monotonic()
            elif (
                time.monotonic() - still_since > 30
                and not self.compose("exec", "-T", "postfix", "postqueue", "-j").strip()
            ):
                say(f"{before + messages - now} of {messages} messages never arrived")
                return (now - before) / (still_since - started)
            time.sleep(0.25)
        return messages / (time.monotonic() - started)

    def scan_times(self, since: str) -> list[float]:
        log = self.compose("logs", "--no-color", "--since", since, "rspamd", timeout=120)
        return [float(m) for m in re.findall(r"time: (\d+\.\d+)ms", log)]

    # -- variants ----------------------------------------------------------------------------
    def variant(self, name: str) -> Callable[[], None]:
        """Switch the running stack to variant `name`; the callable switches it back."""
        main_cf = self.out / "config" / "postfix" / "main.cf"
        options = self.out / "config" / "rspamd" / "local.d" / "options.inc"
        if name == "no milter":
            original = main_cf.read_text()
            main_cf.write_text(MILTER.sub("smtpd_milters =", original))
            self.compose("exec", "-T", "postfix", "postfix", "reload")

            def back() -> None:
                main_cf.write_text(original)
                self.compose("exec", "-T", "postfix", "postfix", "reload")

            return back
        if name == "no hyperscan":
            original = options.read_text()
            options.write_text(original + "disable_hyperscan = true;\n")
            self.compose("restart", "rspamd")
            self.wait_healthy()

            def back() -> None:
                options.write_text(original)
                self.compose("restart", "rspamd")
                self.wait_healthy()

            return back
        return lambda: None

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 300
        while True:
            states = self.compose("ps", "--format", "{{.Service}} {{.Health}}")
            if all(
                line.endswith("healthy") and not line.endswith("unhealthy") for line in states.splitlines()
            ):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"not healthy after 300 s: {states}")
            time.sleep(1)


def imap_clients(port: int, addresses: list[str], stop: threading.Event | None = None) -> dict[str, Any]:
    """Each address logs in at once, selects INBOX and fetches every body; with `stop`, each
    stays logged in and fetches again every second until it is set."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    logins: list[float] = []
    fetched: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(addresses))

    def client(address: str) -> None:
        barrier.wait()
        imap = None
        while True:
            try:
                if imap is None:
                    started = time.monotonic()
                    imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=120)
                    imap.authenticate("PLAIN", lambda _: f"\0{address}\0{PASSWORD}".encode())
                    with lock:
                        logins.append(time.monotonic() - started)
                # As a mail client that stays connected: select again, fetch every body.
                _, exists = imap.select("INBOX", readonly=True)
                # An empty INBOX has no 1:* (BAD from FETCH).
                data = imap.fetch("1:*", "(BODY.PEEK[])")[1] if exists[0] != b"0" else []
                with lock:
                    fetched.append(sum(1 for item in data if isinstance(item, tuple)))
            except (OSError, imaplib.IMAP4.error) as exc:
                with lock:
                    errors.append(f"{address}: {exc}")
                imap = None
            if stop is None or stop.is_set():
                if imap is not None:
                    imap.logout()
                return
            time.sleep(1)

    threads = [threading.Thread(target=client, args=(a,)) for a in addresses]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    return {
        "seconds": seconds, "logins": len(logins), "fetch_rounds": len(fetched),
        "errors": len(errors), "first_errors": errors[:3],
        "logins_per_s": len(logins) / seconds, "login_median_s": statistics.median(logins) if logins else 0,
        "fetches_per_s": sum(fetched) / seconds, "messages_fetched": sum(fetched),
    }  # fmt: skip


def footprint(bench: Bench) -> dict[str, Any]:
    result: dict[str, Any] = {"up_s": bench.cli("up", "--no-check", "--timeout", "600")}
    time.sleep(30)
    result["idle"] = bench.memory()
    result["check_s"] = bench.cli("check")
    result["no_change_up_s"] = bench.cli("up", "--no-check")
    sizes = run("docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}", "mailstack/*")
    result["images"] = dict(
        line.split(" ", 1) for line in sorted(sizes.splitlines()) if "e2e-server" not in line
    )
    return result


def alternate(bench: Bench, variants: tuple[str, ...], targets: dict[str, list[str]], rounds: int,
              messages: int) -> dict[str, Any]:  # fmt: skip
    """Each round runs every variant (the order rotating) on every target; medians of msg/s
    and of Rspamd's scan time per message."""
    rates: dict[str, dict[str, list[float]]] = {v: {t: [] for t in targets} for v in variants}
    scans: dict[str, list[float]] = {v: [] for v in variants}
    for round_ in range(rounds):
        shift = round_ % len(variants)
        for name in variants[shift:] + variants[:shift]:
            back = bench.variant(name)
            try:
                for label, addresses in targets.items():
                    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    rate = bench.deliver(addresses, messages, sessions=max(20, len(addresses)))
                    rates[name][label].append(rate)
                    scans[name].extend(bench.scan_times(since))
                    say(f"round {round_ + 1} {name:<13} {label:<13} {rate:6.1f} msg/s")
            finally:
                back()
    return {
        "messages": messages,
        "rates": rates,
        "median": {v: {t: statistics.median(r) for t, r in by.items()} for v, by in rates.items()},
        "scan_ms_median": {v: statistics.median(s) if s else None for v, s in scans.items()},
        "scans": {v: len(s) for v, s in scans.items()},
    }


def delivery(bench: Bench, rounds: int, messages: int) -> dict[str, Any]:
    one, fifty = [SINK], [box(n) for n in range(1, BOXES + 1)]
    bench.deliver(one, 100)  # postscreen's first look at the client; caches warm
    result = alternate(bench, ("as rendered", "no milter"), {"one mailbox": one, "50 mailboxes": fifty},
                       rounds, messages)  # fmt: skip
    # What Hyperscan buys: a smaller run of its own (each switch restarts Rspamd).
    result["hyperscan"] = alternate(bench, ("as rendered", "no hyperscan"), {"one mailbox": one},
                                    max(2, rounds - 1), messages // 2)  # fmt: skip
    return result


def imap(bench: Bench, rounds: int, clients: int) -> dict[str, Any]:
    addresses = [box(n % BOXES + 1) for n in range(clients)]
    runs = [imap_clients(bench.ports["imaps"], addresses) for _ in range(rounds)]
    for result in runs:
        say(f"imap: {json.dumps(result)}")
    return {
        "runs": runs,
        "logins_per_s": statistics.median(r["logins_per_s"] for r in runs),
        "fetches_per_s": statistics.median(r["fetches_per_s"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
    }


def load(bench: Bench, messages: int, clients: int) -> dict[str, Any]:
    targets = [box(n) for n in range(1, BOXES + 1)]
    lives = bench.lives()
    stop = threading.Event()
    readers: dict[str, Any] = {}
    reader = threading.Thread(
        target=lambda: readers.update(
            imap_clients(bench.ports["imaps"], [box(n % BOXES + 1) for n in range(clients)], stop)
        )
    )
    reader.start()
    try:
        rate = bench.deliver(targets, messages, sessions=BOXES)
    finally:
        stop.set()
        reader.join()
    time.sleep(5)
    after, memory = bench.lives(), bench.memory()
    queue = bench.compose("exec", "-T", "postfix", "postqueue", "-j").strip()
    return {
        "messages": messages, "msg_per_s": rate, "imap": readers,
        "restarted": sorted(s for s in lives if after.get(s, ("", 0, False))[:2] != lives[s][:2]),
        "oom_killed": sorted(s for s, life in after.items() if life[2]),
        "queue_left": len(queue.splitlines()) if queue else 0,
        "peak_mib": {s: m["peak"] for s, m in memory.items()},
        "over_limit": sorted(s for s, m in memory.items() if m["peak"] >= m["limit"]),
    }  # fmt: skip


def fuzz(examples: int) -> dict[str, Any]:
    script = ROOT / "bench" / "fuzz_sites.py"
    if not script.exists():
        return {"skipped": "bench/fuzz_sites.py is missing"}
    started = time.monotonic()
    output = run(sys.executable, str(script), "--examples", str(examples), timeout=3600)
    return {"examples": examples, "seconds": time.monotonic() - started, "output": output.strip()[-2000:]}


def table(result: dict[str, Any]) -> str:
    lines = [f"`make bench` on {result['machine']}, {result['date']}, {result['rounds']} rounds, medians", ""]
    delivery = result["delivery"]
    medians, hyperscan = delivery["median"], delivery["hyperscan"]
    lines += [f"| delivery of {delivery['messages']} × 4 KB on port 25 | one mailbox | 50 mailboxes |",
              "|---|---|---|"]  # fmt: skip
    for name in ("as rendered", "no milter"):
        lines.append(
            f"| {name} | {medians[name]['one mailbox']:.1f} msg/s | "
            f"{medians[name]['50 mailboxes']:.1f} msg/s |"
        )
    lines.append(
        "| ratio | "
        + " | ".join(
            f"{medians['as rendered'][t] / medians['no milter'][t]:.2f}"
            for t in ("one mailbox", "50 mailboxes")
        )
        + " |"
    )
    lines += ["", "| what | value |", "|---|---|"]
    for name in ("as rendered", "no hyperscan"):
        lines.append(
            f"| {name}: {hyperscan['messages']} messages to one mailbox; Rspamd's scan time per message "
            f"(median of its log) | {hyperscan['median'][name]['one mailbox']:.1f} msg/s; "
            f"{hyperscan['scan_ms_median'][name] or 0:.1f} ms |"
        )
    im = result.get("imap")
    if im:
        lines.append(
            f"| IMAP, {result['imap_clients']} clients at once: logins | {im['logins_per_s']:.1f} /s |"
        )
        lines.append(
            f"| IMAP: messages fetched (whole bodies) | {im['fetches_per_s']:.0f} /s "
            f"({im['errors']} errors) |"
        )
    fp = result["footprint"]
    lines.append(f"| `mailstack up` on fresh volumes until healthy | {fp['up_s']:.1f} s |")
    lines.append(f"| `mailstack check` | {fp['check_s']:.1f} s |")
    lines.append(f"| `mailstack up` without a change | {fp['no_change_up_s']:.1f} s |")
    idle = fp["idle"]
    rss, cache = sum(m["rss"] for m in idle.values()), sum(m["cache"] for m in idle.values())
    lines.append(f"| idle memory, every container: RSS (page cache) | {rss:.1f} MiB ({cache:.1f} MiB) |")
    for service, m in sorted(idle.items()):
        lines.append(f"| idle {service}: RSS (page cache) | {m['rss']:.1f} MiB ({m['cache']:.1f} MiB) |")
    ld = result.get("load")
    if ld:
        lines.append(
            f"| load: {ld['messages']} messages and {result['imap_clients']} IMAP clients at once | "
            f"{ld['msg_per_s']:.1f} msg/s, {ld['imap'].get('fetch_rounds', 0)} IMAP fetches of a whole INBOX "
            f"({ld['imap'].get('errors', 0)} errors), restarted {ld['restarted'] or 'none'}, "
            f"OOM {ld['oom_killed'] or 'none'}, over a limit {ld['over_limit'] or 'none'}, "
            f"lost {ld['lost']} |"
        )
    fz = result.get("fuzz")
    if fz and "seconds" in fz:
        lines.append(f"| fuzzed site files | {fz['examples']} in {fz['seconds']:.0f} s |")
    lines += ["", "| image | size |", "|---|---|"]
    lines += [f"| {image} | {size} |" for image, size in fp["images"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--load", type=int, default=10000)
    parser.add_argument("--imap-clients", type=int, default=50)
    parser.add_argument("--fuzz", type=int, default=100000)
    parser.add_argument("--skip", default="", help="comma-separated: delivery, imap, load, fuzz")
    parser.add_argument("--keep", action="store_true", help="leave the stack up")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    from mailstack.passwords import hash_password

    directory = Path(tempfile.mkdtemp(prefix="mailstack-bench-"))
    bench = Bench(directory, site_file(directory, hash_password(PASSWORD)))
    started = time.monotonic()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}: {shutil.os.cpu_count()} cores, {platform.platform()}",  # type: ignore[attr-defined]
        "rounds": args.rounds, "messages": args.messages, "imap_clients": args.imap_clients,
    }  # fmt: skip
    try:
        result["footprint"] = footprint(bench)
        say(f"footprint: {json.dumps(result['footprint'])}")
        if "delivery" not in skip:
            result["delivery"] = delivery(bench, args.rounds, args.messages)
        if "imap" not in skip:
            result["imap"] = imap(bench, args.rounds, args.imap_clients)
        if "load" not in skip:
            before = sum(bench.counts().values())
            result["load"] = load(bench, args.load, args.imap_clients)
            result["load"]["lost"] = before + args.load - sum(bench.counts().values())
            say(f"load: {json.dumps(result['load'])}")
    finally:
        if not args.keep:
            bench.cli("down", "--volumes")
    if "fuzz" not in skip:
        result["fuzz"] = fuzz(args.fuzz)
    result["seconds"] = time.monotonic() - started
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    (results / f"{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = table(result) if "delivery" in result else json.dumps(result, indent=2)
    (results / f"{stamp}.md").write_text(markdown)
    print(markdown)
    say(f"bench took {result['seconds']:.0f} s; results in {results}/{stamp}.json and .md")


if __name__ == "__main__":
    main()
