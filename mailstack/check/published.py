"""With `--dns`: what the DNS answers, through a resolver of the operator's choice, against
what `mailstack dns` says should be published."""

from __future__ import annotations

from collections import defaultdict

import dns.exception
import dns.resolver

from mailstack.check.results import Result, failed, passed, warned
from mailstack.dns import Record

TIMEOUT = 3.0


def resolver_for(address: str) -> dns.resolver.Resolver:
    """``address`` or ``address:port`` (IPv6 in brackets: ``[::1]:5353``)."""
    host, port = address, 53
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif address.count(":") == 1:
        host, _, text = address.partition(":")
        port = int(text)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    resolver.timeout = resolver.lifetime = TIMEOUT
    return resolver


def normalise(record_type: str, value: str) -> str:
    if record_type == "TXT":
        return value.replace('" "', "").strip('"')
    return value.rstrip(".").lower() if record_type in ("MX", "CNAME", "SRV") else value.lower()


def dns_results(records: tuple[Record, ...], resolver_address: str) -> list[Result]:
    resolver = resolver_for(resolver_address)
    wanted: dict[tuple[str, str], set[str]] = defaultdict(set)
    for record in records:
        if not record.placeholder:
            wanted[(record.name.rstrip("."), record.type)].add(normalise(record.type, record.value))
    results = []
    for (name, record_type), values in sorted(wanted.items()):
        probe = f"DNS {record_type} {name}"
        try:
            answer = resolver.resolve(name, record_type, raise_on_no_answer=False)
            seen = {normalise(record_type, _text(record_type, rdata)) for rdata in answer}
        except dns.resolver.NXDOMAIN:
            seen = set()
        except dns.exception.DNSException as exc:
            results.append(failed(probe, f"no answer from {resolver_address}: {exc}", "check the resolver"))
            continue
        missing = values - seen
        if missing and record_type == "TLSA":
            # Whether the key in use is pinned is dane_result's to say; a next key that is
            # not published yet is a warning until the renewal that switches to it.
            results.append(
                warned(
                    probe,
                    f"{len(missing)} TLSA value(s) not published: {sorted(missing)[0][:70]}",
                    "publish the TLSA records `mailstack dns SITE` prints (the next keys before the renewal)",
                )
            )
        elif missing:
            results.append(
                failed(
                    probe,
                    f"missing {sorted(missing)[0][:60]}"
                    + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""),
                    "publish the records `mailstack dns SITE` prints",
                )
            )
        else:
            results.append(passed(probe, f"published as `mailstack dns` prints ({len(values)} value(s))"))
    return results


def dane_result(records: tuple[Record, ...], served: dict[str, str], resolver_address: str) -> Result:
    """DANE: the keys port 25 serves against the TLSA records the DNS answers: a mismatch
    makes DANE senders refuse to deliver (RFC 7672), so it is named key by key."""
    names = sorted({r.name.rstrip(".") for r in records if r.type == "TLSA"})
    resolver = resolver_for(resolver_address)
    published: set[str] = set()
    for name in names:
        try:
            answer = resolver.resolve(name, "TLSA", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            continue
        except dns.exception.DNSException as exc:
            return warned(
                "DANE", f"no TLSA answer for {name} from {resolver_address}: {exc}", "check the resolver"
            )
        published |= {normalise("TLSA", _text("TLSA", rdata)).split()[-1] for rdata in answer}
    if not published:
        return passed("DANE", f"no TLSA record published for {', '.join(names)} (DANE not in use)")
    unpinned = {kind: digest for kind, digest in served.items() if digest not in published}
    if unpinned:
        return warned(
            "DANE",
            "port 25 serves keys the published TLSA records do not pin: "
            + ", ".join(f"{kind} {digest[:16]}…" for kind, digest in sorted(unpinned.items())),
            "publish the TLSA records `mailstack dns SITE` prints now; DANE senders refuse to deliver",
        )
    return passed("DANE", f"the published TLSA records pin the {' and '.join(sorted(served))} keys served")


def _text(record_type: str, rdata: object) -> str:
    if record_type == "TXT":
        return b"".join(rdata.strings).decode()  # type: ignore[attr-defined]
    return str(rdata.to_text())  # type: ignore[attr-defined]
