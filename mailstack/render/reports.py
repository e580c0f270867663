"""reports.dmarc: Rspamd's reporting settings, Postfix's listener for the reporter, the loop."""

from __future__ import annotations

from dataclasses import dataclass

from mailstack.services import DMARC_REPORTS_NEXT, DMARC_REPORTS_SMTP_PORT
from mailstack.site.models import Site
from mailstack.site.reports import dmarc_org_name, dmarc_sender
from mailstack.site.resolver import fixed_address

# Hourly tries of a failed daily run: Rspamd keeps a day's results for two days, so six hours
# of Postfix or Redis being away still sends the day's reports.
DMARC_REPORT_TRIES = 6


@dataclass(frozen=True)
class DmarcReports:
    sender: str  # envelope and header From, and report_metadata's email
    domain: str  # the submitter (the sender's domain)
    org_name: str
    from_name: str  # the From header's display name
    hostname: str  # HELO and the Message-ID's domain
    smtp_address: str  # postfix's fixed back address, where its listener for the reports is
    smtp_port: int
    reporter_address: str  # the dmarc-reports service's fixed back address
    send_at: str  # HH:MM, UTC
    next_file: str  # where the loop notes its next run (the healthcheck looks for it)
    retries: int  # hourly tries of a failed run before that day is given up

    @property
    def listener(self) -> str:
        """master.cf's service name of the listener: address:port."""
        return f"{self.smtp_address}:{self.smtp_port}"


def dmarc_reports(site: Site) -> DmarcReports | None:
    """The settings of the DMARC reports, or None when the site sends none."""
    if not site.reports.dmarc.enabled:
        return None
    org_name = dmarc_org_name(site)
    sender = dmarc_sender(site)
    return DmarcReports(
        sender=sender,
        domain=sender.rpartition("@")[2],
        org_name=org_name,
        from_name=f"DMARC reports of {org_name}",
        hostname=site.hostname,
        smtp_address=fixed_address(site.internal_subnet, "postfix"),
        smtp_port=DMARC_REPORTS_SMTP_PORT,
        reporter_address=fixed_address(site.internal_subnet, "dmarc-reports"),
        send_at=site.reports.dmarc.send_at,
        next_file=DMARC_REPORTS_NEXT,
        retries=DMARC_REPORT_TRIES,
    )
