"""Exchange ActiveSync as a phone speaks it, for test_groupware: autodiscover, then a real EAS
client library (pyactivesync 0.17: WBXML commands over HTTPS) against the stack's SOGo.

Three things about that library and SOGo, each handled here once:
- pyactivesync gives requests the password as a str, and requests encodes Basic credentials
  as Latin-1, which cannot carry '€' (UnicodeEncodeError before anything is sent). Phones send
  UTF-8, so the client talks through the tests' own session with UTF-8 Basic credentials (the
  same session checks the site's CA and hostname while dialling 127.0.0.1).
- SOGo answers Provision with Status 1 and policy Status 2, "no policy for this client"
  ([MS-ASPROV] 2.2.2.54.1), and no PolicyKey, and it checks no X-MS-PolicyKey on later
  commands; pyactivesync takes a Provision without a key for an error (ProvisionError) and
  would provision again before every command. `without_policy` records that there is none.
- SOGo 5.12's ActiveSync reads a mail folder's state from the SELECT answer (UIDNEXT and
  HIGHESTMODSEQ) without enabling CONDSTORE first (SOGoMailFolder -davCollectionTag; its
  webmail enables QRESYNC before, since commit 1ab21b041). Dovecot tracks a Maildir folder's
  modification sequences only once some client enabled CONDSTORE on it, and before that its
  SELECT has no HIGHESTMODSEQ: SOGo's tag is then "-1", the very SyncKey it hands out on a
  first Sync, so every later Sync looks unchanged and no mail ever comes.
  SOGo's own webmail enables QRESYNC when it lists a folder, which is enough.
- pyactivesync sends MS-ASProtocolVersion 16.1 always; SOGo 5.12 offers up to 14.1 in its
  OPTIONS answer, so 14.1 is what a phone speaks to it, though SOGo serves 16.x requests too
  (its ActiveSync code has 16.0 branches). `PROTOCOLS` are both; `speak` sets the one sent.
"""

from __future__ import annotations

import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pyactivesync._http
import pytest
import requests
from pyactivesync import Client, Folder
from requests.auth import HTTPBasicAuth

from mailstack.discovery import ACTIVESYNC_PATH, MOBILESYNC_SCHEMA

# 14.1: what phones choose with SOGo (the highest version both offer); 16.1: pyactivesync's own.
PROTOCOLS = ("14.1", "16.1")
SYNC_TIMEOUT = 60.0  # delivery through postscreen, rspamd and LMTP, then SOGo's IMAP view


def autodiscover(http: requests.Session, base_url: str, request: str, address: str) -> requests.Response:
    """POST ``request`` (check.web's AUTODISCOVER_REQUEST or MOBILESYNC_REQUEST) for ``address``."""
    return http.post(
        f"{base_url}/autodiscover/autodiscover.xml",
        data=request.format(address=address).encode(),
        headers={"Content-Type": "text/xml; charset=utf-8"},
        timeout=30,
    )


def mobilesync_server(answer: str) -> tuple[str | None, str | None, str | None]:
    """(EMailAddress, Type, Url) of a mobilesync autodiscover answer."""
    ns = f"{{{MOBILESYNC_SCHEMA}}}"
    response = ET.fromstring(answer).find(f"{ns}Response")  # noqa: S314 - the stack under test
    assert response is not None, answer
    return (
        response.findtext(f"{ns}User/{ns}EMailAddress"),
        response.findtext(f"{ns}Action/{ns}Settings/{ns}Server/{ns}Type"),
        response.findtext(f"{ns}Action/{ns}Settings/{ns}Server/{ns}Url"),
    )


def eas_client(http: requests.Session, url: str, user: str, password: str) -> Client:
    """A pyactivesync client for ``url`` (https://127.0.0.1:port/Microsoft-Server-ActiveSync)
    that sends its commands through ``http`` with ``password`` in UTF-8, as a device of its own."""
    server = url.removeprefix("https://").removesuffix(ACTIVESYNC_PATH)
    client = Client(
        server=server,
        username=user,
        password=password,
        user=user,
        device_id=f"mailstack{secrets.token_hex(8)}",  # [MS-ASHTTP]: up to 32 letters and digits
        device_type="mailstackTest",
    )
    http.auth = HTTPBasicAuth(user.encode(), password.encode("utf-8"))
    client._transport.session.close()
    client._transport.session = http  # pyactivesync 0.17 has no public way to pass a session
    return client


def speak(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """Have pyactivesync send MS-ASProtocolVersion ``version``: 0.17 reads a module constant
    on every request and offers no option (its request bodies are valid in 14.1 too)."""
    monkeypatch.setattr(pyactivesync._http, "_EAS_PROTOCOL_VERSION", version)


def without_policy(client: Client) -> Client:
    """SOGo has no device policy (see the module docstring): commands go without a PolicyKey."""
    client._provisioned = True
    return client


def folder(folders: list[Folder], kind: int) -> Folder:
    found = [f for f in folders if f.type == kind]
    assert found, f"no folder of type {kind} among {[(f.name, int(f.type)) for f in folders]}"
    return found[0]


def sync_until(
    client: Client,
    folder_id: str,
    what: str,
    wanted: Callable[[dict[str, str]], bool],
    *,
    timeout: float = SYNC_TIMEOUT,
) -> dict[str, str]:
    """Sync a folder from SyncKey 0 on, as a new device does, until an added item is
    ``wanted``; its fields ("Email.Subject", …). Gives up after ``timeout``, naming ``what``."""
    deadline = time.monotonic() + timeout
    key = client.sync_folder(folder_id).sync_key  # the first Sync only hands out a key
    seen: list[dict[str, str]] = []
    while True:
        result = client.sync_folder(folder_id, key)
        key = result.sync_key
        seen += [item.fields for item in result.added + result.changed]
        found = [fields for fields in seen if wanted(fields)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"gave up after {timeout:.0f}s waiting for {what} in an EAS Sync (SyncKey {key}); "
                f"{len(seen)} items came: {seen[-5:]}"
            )
        if not result.more_available:
            time.sleep(1)
