"""reports.dmarc: the model and its rules (with field paths), and what it renders: Rspamd's
reporting block, Postfix's listener for the reporter, the dmarc-reports service."""

from __future__ import annotations

import pytest

from mailstack.errors import SiteValidationError
from mailstack.site.loader import parse_site
from mailstack.site.reports import dmarc_org_name, dmarc_sender

HASH = (
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$NruCNtu7jz3/ZyPM4x9T3A$"
    "yvjc8CAHgrwcLKL1ObYhcb7p8BMq7v2kQhqSBZoocL8"
)


def site_text(reports: str = "", *, offline: bool = False) -> str:
    return f"""
site: reports-test
hostname: mail.reports.example
admin_email: admin@reports.example
offline: {"true" if offline else "false"}
network:
  bind: 127.0.0.1
  internal_subnet: 10.251.7.0/27
  ports:
    smtp: 2525
    submission: 2587
domains:
  - name: reports.example
  - name: second.example
mailboxes:
  - address: admin@reports.example
    password_hash: "{HASH}"
{reports}"""


ENABLED = "reports:\n  dmarc:\n    enabled: true\n"


def test_reports_are_off_by_default() -> None:
    site = parse_site(site_text())
    assert site.reports.dmarc.enabled is False


def test_the_defaults_come_from_the_first_domain() -> None:
    site = parse_site(site_text(ENABLED))
    assert dmarc_sender(site) == "noreply-dmarc@reports.example"
    assert dmarc_org_name(site) == "reports.example"
    assert site.reports.dmarc.send_at == "01:00"


def test_a_sender_in_another_site_domain_names_the_organisation_by_default() -> None:
    site = parse_site(site_text(ENABLED + "    sender: DMARC@Second.example\n"))
    assert dmarc_sender(site) == "dmarc@second.example"
    assert dmarc_org_name(site) == "second.example"
    named = parse_site(site_text(ENABLED + "    org_name: Reports Example Ltd.\n"))
    assert dmarc_org_name(named) == "Reports Example Ltd."


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (
            "    sender: reports@elsewhere.example\n",
            ["reports.dmarc.sender (line 21)", "elsewhere.example, which is not listed under domains"],
        ),
        ("    sender: not-an-address\n", ["reports.dmarc.sender (line 21)"]),
        ('    org_name: "Say \\"hi\\""\n', ["reports.dmarc.org_name (line 21)", "without quotes"]),
        ("    org_name: Bücher GmbH\n", ["reports.dmarc.org_name (line 21)", "printable ASCII"]),
        ("    send_at: '24:00'\n", ["reports.dmarc.send_at (line 21)", "HH:MM, UTC"]),
        ("    send_at: 1am\n", ["reports.dmarc.send_at (line 21)"]),
        ("    every: day\n", ["reports.dmarc.every (line 21)"]),
    ],
)
def test_invalid_settings_name_the_field_and_line(extra: str, fragments: list[str]) -> None:
    with pytest.raises(SiteValidationError) as caught:
        parse_site(site_text(ENABLED + extra))
    text = "\n".join(caught.value.problems)
    for fragment in fragments:
        assert fragment in text, text


def test_an_offline_site_is_refused_reports_with_the_field_path() -> None:
    with pytest.raises(SiteValidationError) as caught:
        parse_site(site_text(ENABLED, offline=True))
    text = "\n".join(caught.value.problems)
    assert "reports.dmarc.enabled (line 20)" in text, text
    assert "offline" in text, text


def test_an_offline_site_may_keep_them_disabled() -> None:
    site = parse_site(site_text("reports:\n  dmarc:\n    enabled: false\n", offline=True))
    assert not site.reports.dmarc.enabled
