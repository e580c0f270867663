"""The office example (examples/office.yaml: groupware on) as a test stack: its users'
plaintext passwords, shared by the groupware and webmail tests through conftest's `office`."""

from __future__ import annotations

from tests.integration.stack import ROOT, Stack

OFFICE = ROOT / "examples" / "office.yaml"
# The plaintexts of examples/office.yaml's hashes: one mailbox per scheme.
USERS = {
    "SHA512-CRYPT": ("anna@office.test", "anna-office-password"),
    "SHA256-CRYPT": ("jonas@office.test", "jonas-office-password"),
    "BLF-CRYPT": ("lena@office.test", "lena-office-password"),
    "ARGON2I": ("omar@office.test", "omar-office-password"),
    "ARGON2ID (UTF-8)": ("zoe@office.test", "zoë-Pässwörd-€"),
}
UP_TIMEOUT = 420.0  # a first start builds the sogo and postgres images too


class OfficeStack(Stack):
    """The office stack; its IMAP and submission clients log in with the office passwords."""

    def password(self, user: str) -> str:
        return dict(USERS.values())[user]
