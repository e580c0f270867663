"""Issue #15, retention: the model (defaults, overrides, errors) and what Dovecot gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailstack.errors import SiteValidationError
from mailstack.render import plan_files
from mailstack.render.dovecot import dovecot_user_lines, shared_user_lines
from mailstack.render.retention import retention_settings, retention_userdb_fields
from mailstack.site.loader import parse_site
from mailstack.site.models import Site
from mailstack.site.retention import DAY, FOREVER, format_keep, parse_keep, resolve
from tests.conftest import fake_state

pytestmark = pytest.mark.unit

HASH = (
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$NruCNtu7jz3/ZyPM4x9T3A$"
    "yvjc8CAHgrwcLKL1ObYhcb7p8BMq7v2kQhqSBZoocL8"
)
BASE = f"""site: test
hostname: mail.test.example
admin_email: anna@test.example
domains:
  - name: test.example
  - name: shop.example
mailboxes:
  - address: anna@test.example
    password_hash: "{HASH}"
  - address: ben@shop.example
    password_hash: "{HASH}"
"""
# What the sites below add to BASE, by where it goes.
SITE_RETENTION = """retention:
  folders: {Sent: 365d, inbox: forever}
"""
SHOP_RETENTION = """    retention:
      folders: {Junk: 7d, Lists: 90d}
      pop3_delete: false
"""
BEN_RETENTION = """    retention:
      folders: {Junk: 14d, Trash: forever}
"""


def site_with(*, site: str = "", shop: str = "", ben: str = "", shared: str = "") -> Site:
    text = BASE.replace("  - name: shop.example\n", "  - name: shop.example\n" + shop)
    return parse_site(text + ben + site + shared)


def problems(text: str) -> list[str]:
    with pytest.raises(SiteValidationError) as caught:
        parse_site(text)
    return caught.value.problems


# -- the model --------------------------------------------------------------------------------
def test_by_default_trash_and_junk_keep_thirty_days_and_pop3_really_deletes() -> None:
    retention = site_with().retention
    assert retention.folders == {"Junk": 30 * DAY, "Trash": 30 * DAY}
    assert retention.pop3_delete is True
    assert site_with().mailboxes[0].retention is None


def test_the_sites_folders_add_to_the_defaults_and_inbox_is_spelt_inbox() -> None:
    retention = site_with(site=SITE_RETENTION + "  pop3_delete: false\n").retention
    assert retention.folders == {"Junk": 30 * DAY, "Trash": 30 * DAY, "Sent": 365 * DAY, "INBOX": FOREVER}
    assert retention.pop3_delete is False
    # A limit the site sets replaces the default one.
    assert site_with(site="retention:\n  folders: {Trash: 5s}\n").retention.folders["Trash"] == 5


def test_the_most_specific_wins_folder_by_folder() -> None:
    site = site_with(site=SITE_RETENTION, shop=SHOP_RETENTION, ben=BEN_RETENTION)
    ben = resolve(site.retention, site.domains[1].retention, site.mailboxes[1].retention)
    assert dict(ben.folders) == {
        "Junk": 14 * DAY,  # his own over his domain's 7d over the site's 30d
        "Trash": FOREVER,  # his own over the site's 30d
        "Sent": 365 * DAY,  # the site's
        "INBOX": FOREVER,
        "Lists": 90 * DAY,  # his domain's
    }
    assert ben.pop3_delete is False  # his domain's
    anna = resolve(site.retention, site.domains[0].retention, site.mailboxes[0].retention)
    assert anna.folders == site.retention.folders
    assert anna.pop3_delete is True


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5), ("90", 90), (90, 90), ("12h", 12 * 3600), ("30d", 30 * DAY), ("forever", 0), ("Forever", 0)],
)
def test_how_long_a_folder_keeps_mail(text: str | int, seconds: int) -> None:
    assert parse_keep(text) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5s"), (90, "90s"), (600, "10m"), (7200, "2h"), (30 * DAY, "30d"), (0, "0")]
)
def test_dovecot_reads_the_largest_exact_unit(seconds: int, text: str) -> None:
    assert format_keep(seconds) == text


@pytest.mark.parametrize(
    ("where", "entry", "expected"),
    [
        (
            "site",
            "retention:\n  folders: {trash: 7d}\n",
            "retention.folders.trash (line 13): the folder is called Trash, not trash",
        ),
        (
            "site",
            "retention:\n  folders: {Trash: 7 days}\n",
            "retention.folders.Trash (line 13): expected how long",
        ),
        (
            "site",
            "retention:\n  folders: {Trash: 0}\n",
            "retention.folders.Trash (line 13): expected how long",
        ),
        ("site", "retention:\n  folders: {Trash: 40000d}\n", "more than 100 years; use forever"),
        (
            "site",
            'retention:\n  folders: {"Old Stuff": 7d}\n',
            "retention.folders.Old Stuff (line 13): 'Old Stuff' is not a folder",
        ),
        ("site", "retention:\n  folders: {Lists/dev: 7d}\n", "no spaces, no subfolders"),
        (
            "site",
            "retention:\n  folders: {inbox: 7d, INBOX: 1d}\n",
            "retention.folders (line 13): these folders are all INBOX: inbox, INBOX; keep one",
        ),
        (
            "site",
            "retention:\n  pop3_deletes: false\n",
            "retention.pop3_deletes (line 13): unknown field 'pop3_deletes'; did you mean 'pop3_delete'?",
        ),
        (
            "ben",
            "    retention:\n      folders: {Junk: soon}\n",
            "mailboxes[1].retention.folders.Junk (line 13): expected how long",
        ),
        ("shop", "    retention:\n      pop3_delete: maybe\n", "domains[1].retention.pop3_delete (line 8)"),
    ],
)
def test_a_wrong_retention_is_reported_with_its_field_path_and_line(
    where: str, entry: str, expected: str
) -> None:
    text = (
        BASE.replace("  - name: shop.example\n", "  - name: shop.example\n" + entry)
        if where == "shop"
        else BASE + entry
    )
    found = problems(text)
    assert any(expected in p for p in found), found


# -- what Dovecot gets ----------------------------------------------------------------------------
def test_a_site_without_retention_renders_the_defaults_and_no_userdb_fields() -> None:
    site = site_with()
    settings = retention_settings(site)
    assert [(f.name, f.autoexpunge) for f in settings.folders] == [("Junk", "30d"), ("Trash", "30d")]
    assert settings.pop3_deleted_flag == ""
    assert all(line.endswith("::::::") for line in dovecot_user_lines(site, HASH, {})[:2])


def test_every_folder_named_anywhere_is_declared_with_the_sites_limit() -> None:
    """Dovecot 2.4.1 applies a userdb autoexpunge only to a folder dovecot.conf declares."""
    site = site_with(site=SITE_RETENTION, shop=SHOP_RETENTION, ben=BEN_RETENTION)
    assert [(f.name, f.autoexpunge) for f in retention_settings(site).folders] == [
        ("INBOX", "0"),
        ("Sent", "365d"),
        ("Junk", "30d"),
        ("Trash", "30d"),
        ("Lists", "0"),  # only the shop domain limits it
    ]


def test_a_mailbox_gets_userdb_fields_where_it_differs_from_the_site() -> None:
    site = site_with(site=SITE_RETENTION, shop=SHOP_RETENTION, ben=BEN_RETENTION)
    anna, ben, probe = dovecot_user_lines(site, HASH, {})
    assert anna == f"anna@test.example:{HASH}::::::"
    key = "userdb_namespace/inbox/mailbox/{}/mailbox_autoexpunge={}"
    assert ben == f"ben@shop.example:{HASH}::::::" + " ".join(
        [
            key.format("Junk", "14d"),
            key.format("Trash", "0"),
            key.format("Lists", "90d"),
            "userdb_pop3_deleted_flag=$POP3Deleted",
        ]
    )
    assert probe.endswith("userdb_quota_storage_size=10M")  # the probe has the site's retention


def test_pop3_delete_renders_the_flag_globally_and_back_per_mailbox() -> None:
    site = site_with(
        site="retention:\n  pop3_delete: false\n", ben="    retention:\n      pop3_delete: true\n"
    )
    assert retention_settings(site).pop3_deleted_flag == "$POP3Deleted"
    assert retention_userdb_fields(site, "anna@test.example") == []
    assert retention_userdb_fields(site, "ben@shop.example", site.mailboxes[1].retention) == [
        "userdb_pop3_deleted_flag="
    ]


def test_a_quota_and_retention_share_the_extra_fields() -> None:
    site = site_with(ben="    quota: 1G\n" + BEN_RETENTION)
    ben = dovecot_user_lines(site, HASH, {})[1]
    assert ben.split("::::::")[1].split(" ")[0] == "userdb_quota_storage_size=1073741824"
    assert "mailbox/Trash/mailbox_autoexpunge=0" in ben


def test_a_shared_mailbox_follows_its_domains_retention() -> None:
    shared = (
        "shared_mailboxes:\n  - address: desk@shop.example\n    rights:\n"
        "      - mailbox: ben@shop.example\n        right: read\n"
    )
    site = site_with(shop=SHOP_RETENTION, shared=shared)
    (line,) = shared_user_lines(site)
    assert line.startswith("desk@shop.example::vmail:vmail::::")
    assert "mailbox/Junk/mailbox_autoexpunge=7d" in line
    assert line.endswith("userdb_pop3_deleted_flag=$POP3Deleted")


def test_dovecot_conf_declares_the_limits_and_counts_from_the_save_date() -> None:
    site = site_with(site=SITE_RETENTION, shop=SHOP_RETENTION)
    files = plan_files(site, fake_state(site.domain_names), Path("/srv/state"), Path("/srv/build"))
    conf = next(f for f in files if f.path == "config/dovecot/dovecot.conf").content.decode()
    block = conf[conf.index("# --- Retention") :]
    limits = re.findall(r"^  mailbox (\S+) \{\n    autoexpunge = (\S+)\n  \}$", block, re.MULTILINE)
    assert limits == [("INBOX", "0"), ("Sent", "365d"), ("Junk", "30d"), ("Trash", "30d"), ("Lists", "0")]
    assert "\nmail_always_cache_fields = date.save\n" in block
    assert '\npop3_deleted_flag = ""\n' in block


def test_the_json_schema_refuses_what_the_loader_refuses() -> None:
    schema = Site.model_json_schema(mode="validation")
    for model in ("Retention", "RetentionOverride"):
        folders = schema["$defs"][model]["properties"]["folders"]
        assert folders["additionalProperties"] is False
        (pattern,) = folders["patternProperties"]
        assert re.match(pattern, "Trash")
        assert not re.match(pattern, "Old Stuff")
