"""Records as people and name servers read them: zone-file text and a table."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table

from mailstack.dns import Record
from mailstack.site.models import Site


def zone_sections(records: Iterable[Record], ttl: int) -> dict[str, str]:
    """Zone → zone-file text, each starting with its ``$ORIGIN``, loadable on its own."""
    grouped: dict[str, list[Record]] = {}
    for r in records:
        grouped.setdefault(r.domain, []).append(r)
    return {
        zone: "\n".join(
            [f"$ORIGIN {zone}.", f"$TTL {ttl}", *(f"; {r.purpose}\n{r.zone_line()}" for r in items)]
        )
        + "\n"
        for zone, items in grouped.items()
    }


def format_zone(site: Site, records: Iterable[Record], notes: Iterable[str] = ()) -> str:
    head = [f"; DNS records for mailstack site {site.site}; one $ORIGIN section per zone"]
    head += [f"; note: {n}" for n in notes]
    return "\n".join(head) + "\n\n" + "\n".join(zone_sections(records, site.dns.ttl).values())


def format_table(records: Iterable[Record], width: int = 64) -> Table:
    """For people: names relative to their zone (@ for the zone itself), long values shortened
    (the zone and JSON formats carry them whole)."""
    table = Table("domain", "name", "type", "value", "purpose")
    table.columns[2].no_wrap = True
    for r in records:
        name = "@" if r.name == r.domain else r.name.removesuffix(f".{r.domain}")
        table.add_row(r.domain, name, r.type, _shorten(r.value, width), r.purpose)
    return table


def _shorten(value: str, width: int) -> str:
    if len(value) <= width:
        return value
    half = (width - 1) // 2
    return f"{value[:half]}…{value[-half:]}"
