"""tls.outbound_ca_bundle: extra CAs a site trusts when it verifies other servers (MTA-STS)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ruamel.yaml import YAML

from mailstack.errors import SiteValidationError
from mailstack.render import plan_files
from mailstack.services import OUTBOUND_CA_BUNDLE
from mailstack.site.loader import load_site
from tests.conftest import fake_state

SITE = """\
site: world-a
hostname: mail.a.test
admin_email: admin@a.test
network:
  bind: 127.0.0.1
  ports: {smtp: 2525, submission: 2587}
tls:
  mode: selfsigned
  outbound_ca_bundle: BUNDLE
domains:
  - name: a.test
"""


def certificate(*, ca: bool) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Company CA" if ca else "leaf")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def write_site(tmp_path: Path, bundle: str, *, offline: bool = False) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE.replace("BUNDLE", bundle) + ("offline: true\n" if offline else ""))
    return path


def rendered(tmp_path: Path, site_path: Path) -> dict[str, str]:
    site = load_site(site_path)
    files = plan_files(site, fake_state(site.domain_names), tmp_path / "state", tmp_path / "build")
    return {f.path: f.content.decode() for f in files}


def test_the_bundle_reaches_postfix_and_the_policy_fetcher(tmp_path: Path) -> None:
    (tmp_path / "roots").mkdir()
    (tmp_path / "roots" / "company.pem").write_bytes(certificate(ca=True))
    site_path = write_site(tmp_path, "roots/company.pem")
    assert load_site(site_path).tls.outbound_ca_bundle == str(tmp_path / "roots" / "company.pem")
    files = rendered(tmp_path, site_path)
    main_cf = files["config/postfix/main.cf"]
    assert f"\nsmtp_tls_CAfile = {OUTBOUND_CA_BUNDLE}\n" in main_cf
    assert "\nsmtp_tls_CApath = /etc/ssl/certs\n" in main_cf  # Debian's roots stay trusted
    compose = YAML(typ="safe").load(files["compose.yaml"])
    assert compose["secrets"]["outbound_ca_bundle"] == {"file": str(tmp_path / "roots" / "company.pem")}
    for name in ("postfix", "mta-sts"):
        assert {"source": "outbound_ca_bundle", "target": OUTBOUND_CA_BUNDLE} in compose["services"][name][
            "secrets"
        ], name
    assert compose["services"]["mta-sts"]["environment"] == {"SSL_CERT_FILE": OUTBOUND_CA_BUNDLE}
    assert "environment" not in compose["services"]["dane-policy"]
    assert rendered(tmp_path, site_path) == files  # deterministic


def test_an_offline_site_ignores_the_bundle(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(certificate(ca=True))
    files = rendered(tmp_path, write_site(tmp_path, "ca.pem", offline=True))
    assert "CAfile" not in files["config/postfix/main.cf"]
    assert "outbound_ca_bundle" not in files["compose.yaml"]


@pytest.mark.parametrize(
    ("content", "mode", "words"),
    [
        (None, 0o644, "file not found"),
        (b"not a certificate\n", 0o644, "holds no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 0o644, "cannot be parsed"),
        ("leaf", 0o644, "is not a CA certificate"),
        ("ca", 0o600, "readable by others"),
    ],
)
def test_a_bad_bundle_is_named_with_its_field_and_line(
    tmp_path: Path, content: bytes | str | None, mode: int, words: str
) -> None:
    bundle = tmp_path / "bundle.pem"
    if content is not None:
        bundle.write_bytes(certificate(ca=content == "ca") if isinstance(content, str) else content)
        bundle.chmod(mode)
    with pytest.raises(SiteValidationError) as caught:
        load_site(write_site(tmp_path, "bundle.pem"))
    assert caught.value.problems == [
        f"tls.outbound_ca_bundle (line 9): {caught.value.problems[0].split('): ', 1)[1]}"
    ]
    assert words in str(caught.value)
