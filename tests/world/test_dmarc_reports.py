"""DMARC aggregate reports (RFC 7489 §7.2) between the world's sites. B sends reports
(reports.dmarc): it keeps the DMARC result of A's mail, and its dmarc-reports service, run
on demand here, mails a real report to the rua at A, DKIM-signed by B. What leaves by the
reporter's own transport (Rspamd's lua_smtp, as rspamadm sends) reaches A; nobody else may
use that transport, nor another From.

Rspamd 3.12's reporter (lualib/rspamadm/dmarc_report.lua) parses the rua= addresses and the
reported domain as URLs against the public suffix list and drops what is outside it
("invalid rua url"): .test is not in the list. So the report is about ada@example.com's mail
and goes to reports@example.net, both hosted by A under the world's example.com. and
example.net. zones. The rua is outside the reported domain, so the reporter first asks for
A's authorisation, example.com._report._dmarc.example.net (RFC 7489 §7.1), which
`mailstack dns` publishes."""

from __future__ import annotations

import gzip
import re
import time
import xml.etree.ElementTree as ET
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

import pytest

from mailstack.render.reports import dmarc_reports
from mailstack.services import DMARC_REPORTS_SCRIPT
from mailstack.site.reports import dmarc_org_name, dmarc_sender
from tests.integration.stack import make_message, parse, token
from tests.world.conftest import REPORTED, RUA
from tests.world.sites import WorldStack, authentication_results
from tests.world.world import World

pytestmark = pytest.mark.world

MAIL_TIMEOUT = 90.0
REPORTED_DOMAIN, RUA_DOMAIN = REPORTED.partition("@")[2], RUA.partition("@")[2]


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


def mail_to_be_reported(a: WorldStack, b: WorldStack, tag: str) -> None:
    """ada@example.com (at A) writes to B; once delivered, B has kept its DMARC result for the rua."""
    berta = b.address("berta")
    subject = token(tag)
    a.submit(REPORTED, make_message(REPORTED, berta, subject, "Hello B, please report on me."))
    b.wait_for_message(berta, subject, timeout=MAIL_TIMEOUT)
    saved = rf"dmarc report saved for {re.escape(REPORTED_DOMAIN)} \(rua = mailto:{re.escape(RUA)}\)"
    b.wait_for_log("rspamd", saved, timeout=30)


def report_xml(message: EmailMessage) -> ET.Element:
    """The report's XML: the message's one gzip attachment (RFC 7489 §7.2.1.1)."""
    parts = [p for p in message.walk() if p.get_content_type() == "application/gzip"]
    assert len(parts) == 1, [p.get_content_type() for p in message.walk()]
    filename = parts[0].get_filename() or ""
    assert filename.endswith(".xml.gz"), filename
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return ET.fromstring(gzip.decompress(payload))  # noqa: S314 (B's reporter made it, in this test)


def test_b_reports_the_dmarc_results_of_a_mail_to_the_rua_at_a(
    world: World, sites: tuple[WorldStack, WorldStack]
) -> None:
    a, b = sites
    reported_domain, rua_domain = REPORTED_DOMAIN, RUA_DOMAIN
    mail_to_be_reported(a, b, "reported")
    output = send_reports_now(b)
    assert re.search(r"1 reports: 1 completed, 0 failed", output), output

    raw = a.wait_for_message(RUA, f"Report Domain: {reported_domain}", timeout=MAIL_TIMEOUT)
    received = parse(raw)
    sender = dmarc_sender(b.site)
    assert sender in str(received["From"])
    results = authentication_results(received)
    # B's milter signed it (RSA and Ed25519) as b.test, and it passes DMARC at A.
    assert len(re.findall(r"\bdkim=pass\b", results)) == 2, results
    assert re.search(r"\bdmarc=pass\b", results), results

    feedback = report_xml(received)
    assert feedback.findtext("report_metadata/org_name") == dmarc_org_name(b.site)
    assert feedback.findtext("report_metadata/email") == sender
    assert feedback.findtext("policy_published/domain") == reported_domain
    assert feedback.findtext("policy_published/p") == "reject"
    records = feedback.findall("record")
    assert len(records) == 1, ET.tostring(feedback).decode()
    record = records[0]
    # The source is A as the world sees it; B's Postfix judged that address.
    assert record.findtext("row/source_ip") == world.address_for(a.site.hostname)
    assert record.findtext("row/count") == "1"
    assert record.findtext("row/policy_evaluated/disposition") == "none"
    assert record.findtext("row/policy_evaluated/dkim") == "pass"
    assert record.findtext("row/policy_evaluated/spf") == "pass"
    assert record.findtext("identifiers/header_from") == reported_domain
    dkim = {(d.findtext("domain"), d.findtext("result")) for d in record.findall("auth_results/dkim")}
    assert (reported_domain, "pass") in dkim, dkim
    assert record.findtext("auth_results/spf/domain") == reported_domain
    assert record.findtext("auth_results/spf/result") == "pass"
    # The rua is outside example.com: the reporter sends only with A's authorisation there.
    authorisation, _ = world.dns.rrset(f"{reported_domain}._report._dmarc.{rua_domain}.", "TXT")
    assert authorisation is not None
    assert [r.to_text() for r in authorisation] == ['"v=DMARC1"']


def test_without_the_authorisation_at_the_rua_domain_no_report_is_sent(
    world: World, sites: tuple[WorldStack, WorldStack]
) -> None:
    a, b = sites
    reported_domain, rua_domain = REPORTED_DOMAIN, RUA_DOMAIN
    name = f"{reported_domain}._report._dmarc.{rua_domain}."
    authorisation, _ = world.dns.rrset(name, "TXT")
    assert authorisation is not None, f"{name} is not published"
    world.dns.replace(name, "TXT", [])
    try:
        forget(b, rua_domain)
        mail_to_be_reported(a, b, "unauthorised")
        output = send_reports_now(b)
        assert re.search(rf"{re.escape(name[:-1])}: .*exclude mailto:{re.escape(RUA)}", output), output
        assert f"Cannot process reports for domain {reported_domain}" in output, output
    finally:
        world.dns.replace(name, "TXT", [r.to_text() for r in authorisation])
        forget(b, rua_domain)


def forget(site: WorldStack, zone: str) -> None:
    """Drop what the site's resolver cached of ``zone``, so that a change in the world's DNS counts now."""
    done = site.exec("resolver", "unbound-control", "-c", "/etc/unbound/unbound.conf", "flush_zone", zone)
    assert done.returncode == 0, done.stdout + done.stderr


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
