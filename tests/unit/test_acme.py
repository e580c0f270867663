"""tls.mode acme without a CA: the site rules, the state's key generations, and the acme
service's own logic (compose/images/acme/mailstack_acme, loaded as modules) — ARI identifiers,
what is due, back-off after failures, and which key a renewal takes."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailstack.errors import SiteValidationError
from mailstack.render import plan_files
from mailstack.site.loader import load_site, parse_site
from mailstack.site.models import Site
from mailstack.state import State
from mailstack.state.layout import acme_key_path
from tests.conftest import ROOT, image_program

pytestmark = pytest.mark.unit

EXAMPLE = ROOT / "examples" / "letsencrypt.yaml"
ACME_BLOCK = (
    "  acme:\n    email: hostmaster@example.org\n"
    "    directory_url: letsencrypt    # letsencrypt-staging while trying things out\n"
)


acme_ari = image_program("acme", "mailstack_acme.ari")
acme_config = image_program("acme", "mailstack_acme.config")
acme_due = image_program("acme", "mailstack_acme.due")
acme_schedule = image_program("acme", "mailstack_acme.schedule")
acme_store = image_program("acme", "mailstack_acme.store")


def self_signed(
    key: ec.EllipticCurvePrivateKey, serial: int, aki: x509.AuthorityKeyIdentifier | None = None
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.org")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=90))
    )
    if aki is not None:
        builder = builder.add_extension(aki, critical=False)
    return builder.sign(key, hashes.SHA256())


def site_text(extra: str = "") -> str:
    return EXAMPLE.read_text() + extra


# --- the site description ---------------------------------------------------------------------
def test_the_example_selects_lets_encrypt_production_by_name() -> None:
    site = load_site(EXAMPLE)
    assert site.tls.acme is not None
    assert site.tls.acme.directory == "https://acme-v02.api.letsencrypt.org/directory"
    staging = parse_site(
        EXAMPLE.read_text().replace("directory_url: letsencrypt ", "directory_url: letsencrypt-staging ")
    )
    assert staging.tls.acme is not None
    assert "staging" in staging.tls.acme.directory


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (("    email: hostmaster@example.org\n", ""), "tls.acme.email", "required field is missing"),
        (
            ("directory_url: letsencrypt ", "directory_url: http://ca.example/dir "),
            "tls.acme.directory_url",
            "pattern",
        ),
        (("  mode: acme\n  acme:", "  mode: selfsigned\n  acme:"), "tls", "only applies to tls.mode 'acme'"),
        ((ACME_BLOCK, ""), "tls", "needs tls.acme"),
    ],
)
def test_bad_acme_settings_name_the_field(change: tuple[str, str], field: str, words: str) -> None:
    text = site_text()
    assert change[0] in text
    with pytest.raises(SiteValidationError) as caught:
        parse_site(text.replace(*change))
    message = str(caught.value).lower()
    assert field in message
    assert words.lower() in message


def test_acme_needs_the_http_port_one_host_and_at_most_a_hundred_names() -> None:
    no_http = site_text("\nnetwork:\n  ports:\n    smtp: 25\n    https: 443\n")
    with pytest.raises(SiteValidationError, match=r"network\.ports\.http.*http-01"):
        parse_site(no_http)
    two_hosts = site_text().replace(
        "hosts:\n  - name: mx1\n", "hosts:\n  - name: mx2\n    address: 192.0.2.26\n  - name: mx1\n"
    )
    with pytest.raises(SiteValidationError, match=r"hosts\[1\].*one host per site"):
        parse_site(two_hosts)
    domains = "".join(f"  - name: d{i}.example.org\n" for i in range(33))
    many = site_text().replace(
        "domains:\n  - name: example.org\n", "domains:\n  - name: example.org\n" + domains
    )
    with pytest.raises(SiteValidationError, match="103 names"):
        parse_site(many)


def test_a_relative_ca_bundle_is_relative_to_the_site_file(tmp_path: Path) -> None:
    text = re.sub(
        r"^    directory_url: .*$",
        "    directory_url: https://ca.internal.example/acme/dir\n    ca_bundle: roots/ca.pem",
        site_text(),
        flags=re.M,
    )
    (tmp_path / "site.yaml").write_text(text)
    site = load_site(tmp_path / "site.yaml")
    assert site.tls.acme is not None
    assert site.tls.acme.ca_bundle == str(tmp_path / "roots" / "ca.pem")


# --- the state -----------------------------------------------------------------------------------
def acme_site() -> Site:
    return load_site(EXAMPLE)


def spki(path: Path) -> str:
    from mailstack.state.crypto import spki_sha256

    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return spki_sha256(key)  # type: ignore[arg-type]


def test_first_render_makes_two_key_generations_and_a_temporary_certificate(tmp_path: Path) -> None:
    state = tmp_path / "state"
    view = State(state).ensure(acme_site())
    live = state / "acme" / "tls" / "live"
    for kind in ("ecdsa", "rsa"):
        cert = x509.load_pem_x509_certificate((live / f"{kind}.crt").read_bytes())
        ca = x509.load_pem_x509_certificate((state / "tls" / "ca.crt").read_bytes())
        assert cert.issuer == ca.subject  # temporary: the site's CA, until the first issuance
        assert (live / f"{kind}.key").read_bytes() == (state / acme_key_path(kind, 1)).read_bytes()
        pem = (live / f"{kind}.pem").read_bytes()
        assert pem.startswith((live / f"{kind}.key").read_bytes())  # key, then the chain
        assert (state / acme_key_path(kind, 2)).exists()
    assert (state / "acme" / "account.key").stat().st_mode & 0o777 == 0o600
    pins = {(p.kind, p.role): p.spki_sha256 for p in view.tlsa}
    assert pins[("ecdsa", "current")] == spki(state / acme_key_path("ecdsa", 1))
    assert pins[("ecdsa", "next")] == spki(state / acme_key_path("ecdsa", 2))
    # Rendering again changes nothing and rotates nothing.
    again = State(state)
    assert again.ensure(acme_site()).tlsa == view.tlsa
    assert again.changes.created == []


def test_after_a_renewal_to_the_next_key_dns_pins_it_and_a_new_next_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    State(state).ensure(acme_site())
    # What the acme service does on a renewal: the live files switch to generation 2.
    live = state / "acme" / "tls" / "live"
    key = serialization.load_pem_private_key((state / acme_key_path("ecdsa", 2)).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = self_signed(key, 7)
    (live / "ecdsa.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pins = {(p.kind, p.role): p for p in State(state).ensure(acme_site()).tlsa}
    assert pins[("ecdsa", "current")].spki_sha256 == spki(state / acme_key_path("ecdsa", 2))
    assert pins[("ecdsa", "next")].source == acme_key_path("ecdsa", 3)
    assert (state / acme_key_path("ecdsa", 3)).exists()
    assert pins[("rsa", "next")].source == acme_key_path("rsa", 2)  # RSA did not switch


def test_keys_of_a_selfsigned_site_are_carried_over_so_published_tlsa_stays_valid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    selfsigned = parse_site(
        re.sub(r"^tls:\n(?:  .*\n)+", "tls:\n  mode: selfsigned\n", site_text(), flags=re.M)
    )
    before = {(p.kind, p.role): p.spki_sha256 for p in State(state).ensure(selfsigned).tlsa}
    after = {(p.kind, p.role): p.spki_sha256 for p in State(state).ensure(acme_site()).tlsa}
    assert after == before


def test_adopting_a_hosts_acme_directory_adds_keys_and_replaces_certificates(tmp_path: Path) -> None:
    state = tmp_path / "state"
    State(state).ensure(acme_site())
    pulled = tmp_path / "pulled"
    shutil.copytree(state / "acme", pulled)
    (pulled / "keys" / "ecdsa-0001.key").write_bytes(b"must not replace a key")
    (pulled / "keys" / "ecdsa-0003.key").write_bytes((state / acme_key_path("ecdsa", 2)).read_bytes())
    (pulled / "status.json").write_text('{"failures": 0}\n')
    (pulled / ".lock").write_text("")
    taken = State(state).adopt_acme(pulled)
    assert sorted(taken) == ["acme/keys/ecdsa-0003.key", "acme/status.json"]
    assert b"must not" not in (state / acme_key_path("ecdsa", 1)).read_bytes()
    assert not (state / "acme" / ".lock").exists()


def test_rendering_mounts_the_live_directory_and_runs_the_acme_service(tmp_path: Path) -> None:
    site = acme_site()
    state = tmp_path / "state"
    files = {
        f.path: f.content.decode()
        for f in plan_files(site, State(state).ensure(site), state, tmp_path / "out")
    }
    compose = files["compose.yaml"]
    assert "mailstack/acme:" in compose
    assert "network_mode: host" in compose
    assert compose.count("/acme/tls:/run/mailstack/state/acme/tls:ro") == 3  # postfix, dovecot, web
    assert "postfix reload" in compose
    assert "doveadm reload" in compose
    assert "web-reload" in compose
    main_cf = files["config/postfix/main.cf"]
    assert "smtpd_tls_chain_files = /run/mailstack/state/acme/tls/live/ecdsa.pem, " in main_cf
    toml = files["config/acme/acme.toml"]
    assert 'directory_url = "https://acme-v02.api.letsencrypt.org/directory"' in toml
    assert '"mta-sts.example.org", "autoconfig.example.org", "autodiscover.example.org"' in toml
    assert "shutdown_clients = no" in files["config/dovecot/dovecot.conf"]


# --- the acme service ------------------------------------------------------------------------------
def test_ari_certificate_id_is_rfc_9773s_example() -> None:
    aki = x509.AuthorityKeyIdentifier(bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4"), None, None)
    cert = self_signed(ec.generate_private_key(ec.SECP256R1()), 0x87654321, aki)
    assert acme_ari.ari_cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def service_config(state_dir: Path, names: tuple[str, ...]) -> object:
    return acme_config.Config(
        directory_url="https://127.0.0.1:1/dir",  # nothing listens there
        email="hostmaster@example.org",
        names=names,
        kinds=("ecdsa", "rsa"),
        state_dir=state_dir,
        challenge_dir=state_dir / "challenges",
        ca_bundle="",
        retry_min=60,
        retry_max=300,
    )


def test_due_first_for_the_temporary_certificate_then_at_two_thirds(tmp_path: Path) -> None:
    state = tmp_path / "state"
    site = acme_site()
    State(state).ensure(site)
    names = ("mail.example.org", "mta-sts.example.org", "autoconfig.example.org", "autodiscover.example.org")
    config = service_config(state / "acme", names)
    store = acme_store.Store(config)
    assert {d.reason for d in acme_due.due(config, store, {}, None)} == {"first"}
    cert = store.live_cert("ecdsa")
    issued = {"certificates": {"ecdsa": {"serial": format(cert.serial_number, "x")}}}
    plan = {d.kind: d for d in acme_due.due(config, store, issued, None)}
    assert plan["ecdsa"].reason == "renewal"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert plan["ecdsa"].when == cert.not_valid_before_utc + lifetime * 2 / 3
    # Another directory now (letsencrypt-staging → letsencrypt): a certificate of the new CA.
    elsewhere = {"certificates": {"ecdsa": {**issued["certificates"]["ecdsa"], "directory": "https://x/dir"}}}
    assert {d.kind: d.reason for d in acme_due.due(config, store, elsewhere, None)}["ecdsa"] == "ca"
    wider = service_config(state / "acme", (*names, "mta-sts.example.net"))
    assert {d.kind: d.reason for d in acme_due.due(wider, store, issued, None)}["ecdsa"] == "names"


def test_failed_attempts_back_off_doubling_and_keep_the_certificate(tmp_path: Path) -> None:
    state = tmp_path / "state"
    State(state).ensure(acme_site())
    config = service_config(state / "acme", ("mail.example.org",))
    store = acme_store.Store(config)
    served = (state / "acme" / "tls" / "live" / "ecdsa.crt").read_bytes()
    delays = []
    for _ in range(4):
        ok, _wait = acme_schedule.tick(config, store, manual=True)
        assert ok is False
        status = json.loads((state / "acme" / "status.json").read_text())
        assert "cannot reach the ACME directory" in status["last_attempt"]["error"]
        retry = dt.datetime.fromisoformat(status["next_retry"].replace("Z", "+00:00"))
        started = dt.datetime.fromisoformat(status["last_attempt"]["at"].replace("Z", "+00:00"))
        delays.append((retry - started).total_seconds())
    assert status["failures"] == 4
    assert 54 <= delays[0] <= 66
    assert 108 <= delays[1] <= 132
    assert delays[3] <= 300 * 1.1  # capped at retry_max
    # The daemon (not manual) waits for next_retry instead of trying again.
    ok, wait = acme_schedule.tick(config, store)
    assert ok is False
    assert wait > 0
    assert json.loads((state / "acme" / "status.json").read_text())["failures"] == 4
    assert (state / "acme" / "tls" / "live" / "ecdsa.crt").read_bytes() == served


def test_a_key_made_in_an_encrypted_state_is_encrypted_too(tmp_path: Path) -> None:
    from mailstack.vault import Vault, encrypt_state

    state = tmp_path / "state"
    State(state).ensure(acme_site())
    password = tmp_path / "vault-password"
    password.write_text("correct horse\n")
    vault = Vault(password)
    encrypt_state(state, vault)
    (state / acme_key_path("rsa", 2)).unlink()  # as if a renewal had to make the next key here
    again = State(state, vault=vault)
    again.ensure(acme_site())
    assert again.changes.created == [acme_key_path("rsa", 2)]
    assert (state / acme_key_path("rsa", 2)).read_bytes().startswith(b"$ANSIBLE_VAULT;")
