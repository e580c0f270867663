"""DMARC aggregate reports (RFC 7489 §7.2) between the world's sites. B sends reports
(reports.dmarc): it keeps the DMARC result of A's mail, and its dmarc-reports service runs
on demand. What leaves by the reporter's own transport (Rspamd's lua_smtp, as rspamadm
sends) reaches A DKIM-signed by B; nobody else may use that transport, nor another From.

The world's domains end in .test, which is not in the public suffix list: Rspamd 3.12's
reporter parses rua= addresses as URLs and drops those outside it ("invalid rua url"), so
in this world the run finds A's results and sends no report itself (see the README)."""

from __future__ import annotations

import gzip
import re
import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

import pytest

from mailstack.render.reports import dmarc_reports
from mailstack.services import DMARC_REPORTS_SCRIPT
from tests.integration.stack import make_message, parse, token
from tests.world.sites import WorldStack, authentication_results

pytestmark = pytest.mark.world

MAIL_TIMEOUT = 90.0


def send_reports_now(site: WorldStack) -> str:
    """One run of the site's reporter, for today's results (the loop sends yesterday's)."""
    today = time.strftime("%Y%m%d", time.gmtime())
    done = site.exec("dmarc-reports", "sh", DMARC_REPORTS_SCRIPT, "now", today, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"exit {done.returncode}: {output}"
    return output


def report_message(header_from: str, to: str, subject: str) -> bytes:
    """A message shaped like Rspamd's reports: text, and the XML as a gzip attachment."""
    message = EmailMessage(policy=SMTP)
    message["From"] = header_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="mail.b.test")
    message.set_content("This is an aggregate report from b.test.\n")
    xml = b"<feedback><report_metadata><org_name>b.test</org_name></report_metadata></feedback>\n"
    message.add_attachment(
        gzip.compress(xml), maintype="application", subtype="gzip", filename="b.test!a.test!0!1.xml.gz"
    )
    return message.as_bytes()


def send_as_reporter(site: WorldStack, service: str, envelope_from: str, rcpt: str, message: bytes) -> str:
    """Rspamd's lua_smtp with the site's reporting settings (dmarc.conf's smtp, smtp_port and
    helo), as `rspamadm dmarc_report` sends, from ``service``'s container; its verdict."""
    settings = dmarc_reports(site.site)
    assert settings is not None
    code = f"""
local lua_smtp = require "lua_smtp"
lua_smtp.sendmail({{
  ev_base = rspamadm_ev_base, session = rspamadm_session, config = rspamd_config,
  resolver = rspamadm_dns_resolver, host = '{settings.smtp_address}', port = {settings.smtp_port},
  helo = '{settings.hostname}', from = [==[{envelope_from}]==], recipients = {{ [==[{rcpt}]==] }},
}}, [==[{message.decode()}]==], function(ok, err)
  print(ok and 'verdict: sent' or ('verdict: refused: ' .. tostring(err)))
end)
"""
    done = site.compose(
        "exec", "-T", "--user", "_rspamd", service, "rspamadm", "lua", "-e", code, timeout=120
    )
    output = done.stdout + done.stderr
    verdicts = [line for line in output.splitlines() if line.startswith("verdict: ")]
    assert verdicts, f"exit {done.returncode}: {output}"
    return verdicts[-1]


def test_b_keeps_the_dmarc_results_of_a_mail_and_its_reporter_finds_them(
    sites: tuple[WorldStack, WorldStack],
) -> None:
    a, b = sites
    anna, berta = a.address("anna"), b.address("berta")
    subject = token("reported")
    a.submit(anna, make_message(anna, berta, subject, "Hello B, please report on me."))
    b.wait_for_message(berta, subject, timeout=MAIL_TIMEOUT)
    b.wait_for_log("rspamd", r"dmarc report saved for a\.test \(rua = mailto:anna@a\.test\)", timeout=30)
    output = send_reports_now(b)
    # It processed a.test's results: in this world Rspamd drops the .test rua (see above);
    # with a domain under a public suffix the run sends the report.
    assert re.search(r'invalid rua url: "mailto:anna@a\.test"|1 reports: 1 completed', output), output


def test_the_reporter_transport_delivers_dkim_signed_mail_to_a(sites: tuple[WorldStack, WorldStack]) -> None:
    a, b = sites
    anna = a.address("anna")
    subject = token("Report Domain: a.test")
    sender = "noreply-dmarc@b.test"
    message = report_message(f'"DMARC reports of b.test" <{sender}>', anna, subject)
    assert send_as_reporter(b, "dmarc-reports", sender, anna, message) == "verdict: sent"
    raw = a.wait_for_message(anna, subject, timeout=MAIL_TIMEOUT)
    received = parse(raw)
    results = authentication_results(received)
    # B's milter signed it (RSA and Ed25519) as b.test, and it passes DMARC at A.
    assert len(re.findall(r"\bdkim=pass\b", results)) == 2, results
    assert re.search(r"\bdmarc=pass\b", results), results
    parts = [p for p in received.walk() if p.get_content_type() == "application/gzip"]
    assert len(parts) == 1
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert b"<org_name>b.test</org_name>" in gzip.decompress(payload)


def test_the_reporter_may_use_no_other_from(sites: tuple[WorldStack, WorldStack]) -> None:
    a, b = sites
    anna, berta = a.address("anna"), b.address("berta")
    message = report_message(berta, anna, token("not-the-reporter"))
    verdict = send_as_reporter(b, "dmarc-reports", "noreply-dmarc@b.test", anna, message)
    assert "not the address of the DMARC reports" in verdict, verdict


def test_no_other_container_may_relay_through_the_reporter_listener(
    sites: tuple[WorldStack, WorldStack],
) -> None:
    a, b = sites
    anna = a.address("anna")
    sender = "noreply-dmarc@b.test"
    verdict = send_as_reporter(b, "rspamd", sender, anna, report_message(sender, anna, token("relay")))
    assert re.search(r"refused: .*\b554\b.*(Client host rejected|Access denied)", verdict), verdict
