"""Issue #6, item 1: `mailstack dns` — every record to publish, from the site and its state."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from mailstack import dns as msdns
from mailstack import zonefile
from mailstack.cli import app
from mailstack.site.loader import load_site, parse_site
from mailstack.site.models import Site
from mailstack.site.records import MtaSts
from mailstack.state import State
from tests.conftest import EXAMPLES

runner = CliRunner()
ACME = next(p for p in EXAMPLES if p.name == "acme.yaml")
DOMAINS = ("acme.example", "acme-shop.example")
HOST = "mail.acme.example"
JsonRecord = dict[str, Any]


@pytest.fixture(scope="module")
def acme_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """acme.yaml in a directory of its own; its state is made by the first `mailstack dns`."""
    base = tmp_path_factory.mktemp("acme")
    shutil.copy(ACME, base / "site.yaml")
    return base


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def records(acme_dir: Path) -> list[JsonRecord]:
    data = json.loads(cli("dns", str(acme_dir / "site.yaml"), "--format", "json"))
    assert isinstance(data, list)
    return data


@pytest.fixture(scope="module")
def zone_text(acme_dir: Path, records: list[JsonRecord]) -> str:
    return cli("dns", str(acme_dir / "site.yaml"), "--format", "zone")


def state_dir(acme_dir: Path) -> Path:
    return acme_dir / ".mailstack" / "acme"


def pick(records: list[JsonRecord], name: str, rtype: str) -> list[str]:
    return [r["value"] for r in records if r["name"] == name and r["type"] == rtype]


def acme_variant(**replace: str) -> Site:
    text = ACME.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new, 1)
    return parse_site(text)


# -- JSON: every record, with the documented fields -------------------------------------------
def test_json_lists_every_record_type_for_each_domain(records: list[JsonRecord]) -> None:
    assert all(list(r) == ["domain", "name", "type", "value", "ttl", "purpose"] for r in records)
    assert all(r["purpose"] and r["ttl"] == 3600 and not r["name"].endswith(".") for r in records)
    for d in DOMAINS:
        mine = [r for r in records if r["domain"] == d]
        assert all(r["name"] == d or r["name"].endswith("." + d) for r in mine)
        assert pick(mine, d, "MX") == [f"10 {HOST}."]
        assert pick(mine, d, "TXT") == ["v=spf1 mx -all"]
        dkim_values = [r["value"] for r in mine if r["name"].endswith(f"._domainkey.{d}")]
        assert sorted(v.split(";")[1].strip() for v in dkim_values) == ["k=ed25519", "k=rsa"]
        assert pick(mine, f"_dmarc.{d}", "TXT") == ["v=DMARC1; p=quarantine; rua=mailto:admin@acme.example"]
        assert re.fullmatch(r"v=STSv1; id=[A-Za-z0-9]{1,32}", pick(mine, f"_mta-sts.{d}", "TXT")[0])
        assert pick(mine, f"_smtp._tls.{d}", "TXT") == ["v=TLSRPTv1; rua=mailto:admin@acme.example"]
        for host in ("mta-sts", "autoconfig", "autodiscover"):
            assert pick(mine, f"{host}.{d}", "CNAME") == [f"{HOST}."]
        srv = {r["name"].removesuffix(f".{d}"): r["value"] for r in mine if r["type"] == "SRV"}
        assert srv == {
            "_submissions._tcp": f"0 1 465 {HOST}.",
            "_imaps._tcp": f"0 1 993 {HOST}.",
            "_pop3s._tcp": f"0 1 995 {HOST}.",
            "_submission._tcp": f"10 1 587 {HOST}.",
            "_imap._tcp": f"10 1 143 {HOST}.",
            "_pop3._tcp": f"10 1 110 {HOST}.",
            "_autodiscover._tcp": f"0 1 443 {HOST}.",
        }
        assert pick(mine, d, "CAA") == ['0 issue "letsencrypt.org"', '0 iodef "mailto:admin@acme.example"']
    # The server's own name is in acme.example: its records are published there, once.
    host_records = [r for r in records if r["name"] == HOST or r["name"].endswith("." + HOST)]
    assert {r["domain"] for r in host_records} == {"acme.example"}
    assert pick(records, HOST, "A") == ["203.0.113.10"]  # from hosts[]
    assert pick(records, HOST, "AAAA")[0].startswith("<")  # a reminder: hosts[] has no IPv6
    assert pick(records, HOST, "TXT") == ["v=spf1 a -all"]
    assert len(pick(records, f"_25._tcp.{HOST}", "TLSA")) == 4
    # acme-shop.example's DMARC reports go to acme.example, which must say it accepts them.
    assert pick(records, "acme-shop.example._report._dmarc.acme.example", "TXT") == ["v=DMARC1"]


def test_render_writes_the_same_json_as_dns(acme_dir: Path, records: list[JsonRecord]) -> None:
    site = acme_dir / "site.yaml"
    out = cli("dns", str(site), "--format", "json")
    cli("render", str(site))
    assert (acme_dir / "build" / "acme" / "dns" / "records.json").read_text() == out
    assert json.loads(out) == records


# -- DKIM: the exact keys in state, and signatures made with them verify ----------------------
def test_dkim_values_are_the_public_keys_in_state(acme_dir: Path, records: list[JsonRecord]) -> None:
    view = State(state_dir(acme_dir)).ensure(load_site(acme_dir / "site.yaml"))
    assert len(view.dkim) == 4
    for key in view.dkim:
        private = serialization.load_pem_private_key((state_dir(acme_dir) / key.relpath).read_bytes(), None)
        if isinstance(private, ed25519.Ed25519PrivateKey):
            public = private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        else:
            public = private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        expected = f"v=DKIM1; k={key.algorithm}; p={base64.b64encode(public).decode()}"
        assert pick(records, f"{key.selector}._domainkey.{key.domain}", "TXT") == [expected]


def dnsfunc(records: list[JsonRecord], asked: list[str]) -> Callable[..., bytes | None]:
    txt = {r["name"]: r["value"] for r in records if r["type"] == "TXT"}

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        key = name.decode().rstrip(".").lower()
        asked.append(key)
        return txt[key].encode() if key in txt else None

    return lookup


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_mail_signed_with_the_state_keys_verifies_against_the_json(
    acme_dir: Path, records: list[JsonRecord], domain: str, algorithm: str
) -> None:
    view = State(state_dir(acme_dir)).ensure(load_site(acme_dir / "site.yaml"))
    key = next(k for k in view.dkim if k.domain == domain and k.algorithm == algorithm)
    pem = (state_dir(acme_dir) / key.relpath).read_bytes()
    if algorithm == "ed25519":  # dkimpy wants the raw 32-byte seed, base64
        private = serialization.load_pem_private_key(pem, None)
        assert isinstance(private, ed25519.Ed25519PrivateKey)
        raw = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        pem = base64.b64encode(raw)
    message = (
        f"From: alice@{domain}\r\nTo: bob@elsewhere.example\r\nSubject: dns test\r\n"
        f"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <dns-test@{domain}>\r\n\r\nHello.\r\n"
    ).encode()
    signature = dkim.sign(
        message,
        key.selector.encode(),
        domain.encode(),
        pem,
        signature_algorithm=b"rsa-sha256" if algorithm == "rsa" else b"ed25519-sha256",
    )
    asked: list[str] = []
    assert dkim.verify(signature + message, dnsfunc=dnsfunc(records, asked))
    assert asked == [f"{key.selector}._domainkey.{domain}"]
    tampered = signature + message.replace(b"Hello.", b"Hello!")
    assert not dkim.verify(tampered, dnsfunc=dnsfunc(records, []))


# -- zone format: loads in dnspython and holds exactly the JSON's records ----------------------
def zone_parts(text: str) -> dict[str, str]:
    parts = re.split(r"(?m)^(?=\$ORIGIN )", text)
    return {p.split()[1].removesuffix("."): p for p in parts[1:]}


def test_zone_output_loads_in_dnspython_with_every_record(zone_text: str, records: list[JsonRecord]) -> None:
    parts = zone_parts(zone_text)
    assert list(parts) == list(DOMAINS)
    for domain, text in parts.items():
        zone = dns.zone.from_text(text, origin=domain, relativize=False, check_origin=False)
        mine = [r for r in records if r["domain"] == domain]
        types = {rdataset.rdtype.name for _, rdataset in zone.iterate_rdatasets()}
        assert {"MX", "TXT", "SRV", "CNAME", "CAA"} <= types
        if domain == "acme.example":
            assert {"A", "TLSA"} <= types
            assert "AAAA" not in types  # the reminder is commented out
        loaded = sum(len(rdataset) for _, rdataset in zone.iterate_rdatasets())
        assert loaded == sum(1 for r in mine if not r["value"].startswith("<"))
        for r in mine:
            if r["value"].startswith("<"):
                continue
            rdataset = zone.find_rdataset(r["name"] + ".", r["type"])
            assert rdataset.ttl == r["ttl"]
            if r["type"] == "TXT":
                assert r["value"].encode() in {b"".join(rd.strings) for rd in rdataset}
                assert all(len(s) <= 255 for rd in rdataset for s in rd.strings)
            else:
                rdtype = dns.rdatatype.from_text(r["type"])
                assert dns.rdata.from_text(dns.rdataclass.IN, rdtype, r["value"]) in rdataset


def test_long_dkim_values_are_split_into_strings_of_255_bytes(zone_text: str) -> None:
    zone = dns.zone.from_text(
        zone_parts(zone_text)["acme.example"], origin="acme.example", relativize=False, check_origin=False
    )
    rsa_keys = [
        rd
        for name, rdataset in zone.iterate_rdatasets(dns.rdatatype.TXT)
        if name.labels[1:2] == (b"_domainkey",)
        for rd in rdataset
        if b"k=rsa" in rd.strings[0]
    ]
    assert len(rsa_keys) == 1
    assert len(rsa_keys[0].strings) == 2
    assert len(rsa_keys[0].strings[0]) == 255


def test_txt_strings_escape_quotes_and_backslashes() -> None:
    record = msdns.Record("x.example", "x.example", "TXT", 'a "b" \\c ' + "d" * 300, 60, "test")
    zone = dns.zone.from_text(record.zone_line(), origin="x.example", relativize=False, check_origin=False)
    (rd,) = zone.find_rdataset("x.example.", "TXT")
    assert b"".join(rd.strings).decode() == record.value


# -- TLSA: the keys in use and the next ones -----------------------------------------------------
def spki_sha256(public: Any) -> str:
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def test_tlsa_pins_the_served_certificates_then_the_next_keys(
    acme_dir: Path, records: list[JsonRecord]
) -> None:
    tls = state_dir(acme_dir) / "tls" / HOST
    certs = [x509.load_pem_x509_certificate((tls / f"{k}.crt").read_bytes()) for k in ("ecdsa", "rsa")]
    served = [f"3 1 1 {spki_sha256(cert.public_key())}" for cert in certs]
    next_keys = [
        serialization.load_pem_private_key((tls / f"next-{k}.key").read_bytes(), None)
        for k in ("ecdsa", "rsa")
    ]
    following = [f"3 1 1 {spki_sha256(key.public_key())}" for key in next_keys]
    assert pick(records, f"_25._tcp.{HOST}", "TLSA") == served + following
    assert not set(served) & set(following)
    for name in ("next-ecdsa.key", "next-rsa.key"):
        assert (tls / name).stat().st_mode & 0o777 == 0o600


def test_rerender_keeps_records_and_never_rotates_the_next_key(tmp_path: Path) -> None:
    shutil.copy(ACME, tmp_path / "site.yaml")
    site = str(tmp_path / "site.yaml")
    cli("render", site)
    records_json = tmp_path / "build" / "acme" / "dns" / "records.json"
    tls = tmp_path / ".mailstack" / "acme" / "tls" / HOST
    first = records_json.read_bytes()
    keys = {p.name: p.read_bytes() for p in tls.glob("next-*.key")}
    assert sorted(keys) == ["next-ecdsa.key", "next-rsa.key"]
    second = cli("render", site)
    assert "state" not in second
    assert "unchanged dns/records.json" in second
    assert records_json.read_bytes() == first
    assert {p.name: p.read_bytes() for p in tls.glob("next-*.key")} == keys
    assert cli("dns", site, "--format", "json").encode() == first


def test_an_older_state_gains_next_keys_without_touching_the_rest(tmp_path: Path) -> None:
    shutil.copy(ACME, tmp_path / "site.yaml")
    cli("render", str(tmp_path / "site.yaml"))
    state = tmp_path / ".mailstack" / "acme"
    for name in ("next-ecdsa.key", "next-rsa.key"):
        (state / "tls" / HOST / name).unlink()
    before = {p: p.read_bytes() for p in state.rglob("*") if p.is_file()}
    output = cli("render", str(tmp_path / "site.yaml"))
    assert f"state     created tls/{HOST}/next-ecdsa.key" in output
    assert all(p.read_bytes() == content for p, content in before.items())


def self_signed(path: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return spki_sha256(key.public_key())


def test_files_mode_pins_the_operators_certificate_and_says_no_next_key_is_known(tmp_path: Path) -> None:
    digest = self_signed(tmp_path / "fullchain.pem")
    site = acme_variant(
        **{"mode: selfsigned": f"mode: files\n  cert_file: {tmp_path}/fullchain.pem\n  key_file: /k.pem"}
    )
    result = msdns.site_records(site, tmp_path / "state")
    tlsa = [r for r in result.records if r.type == "TLSA"]
    assert [r.value for r in tlsa] == [f"3 1 1 {digest}"]
    assert any("no next key" in n for n in result.notes)
    assert not (tmp_path / "state" / "tls").exists()

    missing = acme_variant(**{"mode: selfsigned": "mode: files\n  cert_file: /nonexistent\n  key_file: /k"})
    result = msdns.site_records(missing, tmp_path / "state")
    assert not [r for r in result.records if r.type == "TLSA"]
    assert any("cannot read a certificate from /nonexistent" in n for n in result.notes)


# -- MTA-STS policy id -------------------------------------------------------------------------------
def test_mta_sts_id_changes_exactly_when_the_policy_does() -> None:
    site = load_site(ACME)
    base = msdns.mta_sts_id(site)
    assert re.fullmatch(r"[A-Za-z0-9]{1,32}", base)
    assert msdns.mta_sts_id(load_site(ACME)) == base
    assert msdns.mta_sts_id(site.model_copy(update={"mta_sts": MtaSts(mode="enforce")})) == base
    unrelated = acme_variant(**{"message_size: 25M": "message_size: 20M", "smtp: 25": "smtp: 2525"})
    assert msdns.mta_sts_id(unrelated) == base
    testing = site.model_copy(update={"mta_sts": MtaSts(mode="testing")})
    assert msdns.mta_sts_id(testing) != base
    assert msdns.mta_sts_id(site.model_copy(update={"mta_sts": MtaSts(max_age=1209600)})) != base
    assert msdns.mta_sts_id(acme_variant(**{"hostname: mail.": "hostname: mx."})) != base
    assert "mode: testing\r\n" in msdns.mta_sts_policy(testing)
    assert f"mx: {HOST}\r\n" in msdns.mta_sts_policy(site)


# -- settings and edge cases ------------------------------------------------------------------------
def no_state_view(site: Site, tmp_path: Path) -> list[msdns.Record]:
    return msdns.build_records(site, State(tmp_path / "s", write=False).ensure(site))


def test_dns_settings_and_per_domain_overrides(tmp_path: Path) -> None:
    site = acme_variant(
        **{
            "  - name: acme-shop.example\n": (
                "  - name: acme-shop.example\n    spf: v=spf1 mx include:_spf.shop.example -all\n"
                "    dmarc: {policy: reject}\n"
            ),
            "\nhosts:": (
                "\ndns:\n  ttl: 600\n  caa: []\n  dmarc:\n    rua: [reports@dmarc.example]\n"
                "mta_sts:\n  mode: testing\n\nhosts:"
            ),
        }
    )
    records = no_state_view(site, tmp_path)
    by = {(r.name, r.type, r.value.split(";")[0]): r.value for r in records}
    assert by[("acme.example", "TXT", "v=spf1 mx -all")] == "v=spf1 mx -all"
    assert ("acme-shop.example", "TXT", "v=spf1 mx include:_spf.shop.example -all") in by
    assert by[("_dmarc.acme.example", "TXT", "v=DMARC1")] == (
        "v=DMARC1; p=quarantine; rua=mailto:reports@dmarc.example"
    )
    assert by[("_dmarc.acme-shop.example", "TXT", "v=DMARC1")] == (
        "v=DMARC1; p=reject; rua=mailto:reports@dmarc.example"
    )
    assert all(r.ttl == 600 for r in records)
    assert not [r for r in records if r.type == "CAA"]
    assert not [r for r in records if "._report._dmarc." in r.name]  # reports leave the site
    notes = list(msdns.notes(site, State(tmp_path / "s", write=False).ensure(site)))
    assert any("acme-shop.example._report._dmarc.dmarc.example" in n for n in notes)


def test_unpublished_protocols_get_srv_target_root(tmp_path: Path) -> None:
    ports = "  ports:\n    smtp: 25\n    submissions: 465\n    imaps: 993\n"
    text = ACME.read_text()
    site = acme_variant(**{text[text.index("  ports:\n") : text.index("\ntls:")]: ports})
    srv = {r.name: r.value for r in no_state_view(site, tmp_path) if r.type == "SRV"}
    assert srv["_submissions._tcp.acme.example"] == f"0 1 465 {HOST}."
    assert srv["_imaps._tcp.acme.example"] == f"0 1 993 {HOST}."
    for service in ("_pop3s", "_submission", "_imap", "_pop3"):
        assert srv[f"{service}._tcp.acme.example"] == "0 0 0 ."


def test_hostname_outside_the_site_domains_gets_a_section_of_its_own(tmp_path: Path) -> None:
    site = acme_variant(**{"hostname: mail.acme.example": "hostname: mx1.provider.example"})
    records = no_state_view(site, tmp_path)
    assert msdns.zones(site) == [*DOMAINS, "provider.example"]
    own = [r for r in records if r.domain == "provider.example"]
    assert {r.type for r in own} == {"A", "AAAA", "TXT", "CAA", "TLSA"}
    assert all(r.name.endswith("mx1.provider.example") for r in own)
    parts = zone_parts(zonefile.format_zone(site, records))
    for origin, text in parts.items():
        dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False)


def test_cli_rejects_an_unknown_format(acme_dir: Path) -> None:
    result = runner.invoke(app, ["dns", str(acme_dir / "site.yaml"), "--format", "bind"])
    assert result.exit_code == 1
    assert "--format must be one of table, zone, json" in result.output


def test_table_names_records_relative_to_their_zone(acme_dir: Path, records: list[JsonRecord]) -> None:
    out = runner.invoke(app, ["dns", str(acme_dir / "site.yaml")], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "_dmarc " in out.stdout
    assert "_25._tcp.mail" in out.stdout
    assert "MIIB" in out.stdout
    assert "…" in out.stdout  # the RSA key is shortened
