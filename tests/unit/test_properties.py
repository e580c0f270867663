"""Property: every valid site renders without error, deterministically, with headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstack.render import plan_files
from mailstack.site.models import STANDARD_PORTS, Site
from tests.conftest import assert_generated_header, fake_state

HASH = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
label = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
local = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,8}[a-z0-9]", fullmatch=True).filter(lambda s: ".." not in s)


@st.composite
def sites(draw: st.DrawFn) -> dict[str, Any]:
    domains = [f"{d}.example" for d in draw(st.lists(label, min_size=1, max_size=3, unique=True))]
    pairs = draw(st.lists(st.tuples(local, st.sampled_from(domains)), min_size=1, max_size=6, unique=True))
    addresses = [f"{lp}@{d}" for lp, d in pairs]
    n_mailboxes = draw(st.integers(min_value=1, max_value=len(addresses)))
    mailboxes, alias_names = addresses[:n_mailboxes], addresses[n_mailboxes:]
    quota = draw(st.sampled_from(["100M", "1G", "2G", None]))
    send_as = draw(st.booleans())
    ports = draw(
        st.lists(
            st.integers(1024, 65535),
            min_size=len(STANDARD_PORTS),
            max_size=len(STANDARD_PORTS),
            unique=True,
        )
    )
    published = draw(st.lists(st.sampled_from(list(STANDARD_PORTS)), unique=True))
    return {
        "site": draw(label),
        "hostname": f"mail.{domains[0]}",
        "admin_email": mailboxes[0],
        "network": {
            "bind": draw(st.sampled_from(["127.0.0.1", ["127.0.0.1", "::1"], "0.0.0.0"])),
            "ports": {name: ports[i] for i, name in enumerate(STANDARD_PORTS) if name in published},
        },
        "limits": {"message_size": "10M"},
        "domains": [
            {"name": d, **({"catch_all": mailboxes[0]} if catch_all else {})}
            for d, catch_all in zip(
                domains,
                draw(st.lists(st.booleans(), min_size=len(domains), max_size=len(domains))),
                strict=True,
            )
        ],
        "mailboxes": [
            {
                "address": a,
                "password_hash": HASH,
                **({"quota": quota} if quota else {}),
                **({"send_as": alias_names[:1]} if alias_names and send_as else {}),
            }
            for a in mailboxes
        ],
        "aliases": [
            {
                "address": a,
                "to": draw(st.lists(st.sampled_from(mailboxes), min_size=1, max_size=3, unique=True)),
            }
            for a in alias_names
        ],
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sites())
def test_any_valid_site_renders_deterministically(data: dict[str, Any]) -> None:
    site = Site.model_validate(data)
    state, out = Path("/srv/.mailstack") / site.site, Path("/srv/build") / site.site
    first = plan_files(site, fake_state(site.domain_names), state, out)
    second = plan_files(site, fake_state(site.domain_names), state, out)
    assert first == second
    assert len({f.path for f in first}) == len(first)
    for planned in first:
        assert_generated_header(planned.path, planned.content)
    users = next(f for f in first if f.path == "config/dovecot/users").content.decode()
    assert all(m.address in users for m in site.mailboxes)
