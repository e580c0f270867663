"""`mailstack deploy` of a groupware site to a server (issue #14): SOGo, PostgreSQL and
memcached installed and reconciled by the roles like the mail stack, and reached through the
server's published https port as clients reach them.

TestGroupwareDeploy walks examples/office.yaml (its mailboxes and hashes, the standard ports,
the server as its host) through a cloud-kind server of its own, as root, with `--images load`
(the controller's sogo and postgres images shipped with the others: no SOGo build on the
server) and packages from the server's apt cache, in file order: a first deploy (which sets
the rights on the shared mailbox, calendar and address book) → SOGo's login page and a login
with a UTF-8 password → CalDAV discovery from /.well-known/caldav to the user's principal →
the shared calendar readable by whom the description says → `mailstack audit --host` of the
containers → a second deploy with changed=0 → a removed mailbox, refused by SOGo once the
users table is applied again.

Not a part of TestDeployLifecycle (CI runs that layer on its own; this class runs beside
the other e2e tests). Each step prints its time as a `[measure]` line.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from urllib.parse import unquote, urljoin

import pytest
import requests
from caldav.davclient import DAVClient
from requests.auth import HTTPBasicAuth

from tests.e2e.conftest import Note
from tests.e2e.deployment import Deployment, assert_no_change, assert_ok, needs
from tests.e2e.harness import ServerFactory
from tests.integration.office import OFFICE, USERS
from tests.integration.test_groupware import SiteAdapter

pytestmark = pytest.mark.e2e

#: Local part -> the plaintext of the office example's hash.
PASSWORDS = {address.split("@")[0]: password for address, password in USERS.values()}
#: The mailbox with the UTF-8 password, and the one the last step removes.
UTF8_USER, REMOVED = "zoe", "lena"
GROUPWARE = ("sogo", "postgres", "memcached")
#: The groupware's named volumes, which every deploy keeps.
VOLUMES = ("postgres", "sogo-static", "sogo-spool")
HTTPS = 443
HTTP_TIMEOUT = 30.0
#: How long SOGo may take to refuse a removed user after the deploy (its user cache).
REFUSAL_TIMEOUT = 60.0
CHECK_PASSED = re.compile(r"^\d+ pass, \d+ warn, 0 fail(, \d+ skipped)? in ", re.M)
#: The role's tasks that reconcile the rights (office.yaml shares a mailbox, a calendar and an
#: address book of office@).
DAV_RIGHTS = (
    "TASK [mailstack_stack : Ensure the rights on the shared calendars and address books "
    "are those of the site description]"
)
MAILBOX_RIGHTS = (
    "TASK [mailstack_stack : Ensure the rights on the shared mailboxes are those of the site description]"
)
#: office@'s calendar, which zoe may read and lena may not (examples/office.yaml).
SHARED_CALENDAR = "/SOGo/dav/office@office.test/Calendar/personal/"
DISPLAYNAME = b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><displayname/></prop></propfind>'
CURRENT_USER_PRINCIPAL = (
    b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><current-user-principal/></prop></propfind>'
)


@pytest.fixture(scope="class")
def office(server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A fresh cloud server of its own (only SSH and https published here) and the office site."""
    server = server_factory.start(ports=(HTTPS,), kind="cloud")
    site = Deployment(
        server=server,
        workdir=tmp_path_factory.mktemp("deploy-groupware"),
        site_id="office",
        domain="office.test",
        packages="cache",
    )
    site.write_example(OFFICE, PASSWORDS)
    try:
        yield site
    finally:
        server_factory.remove(server)
        site.discard_image_archives()


def https(site: Deployment) -> requests.Session:
    """HTTPS to the server's published 443, the certificate checked against the site's CA
    for the site's hostname (SNI too)."""
    ca = site.workdir / "ca.crt"
    ca.write_text(site.state_text("tls/ca.crt"))
    http = requests.Session()
    http.trust_env = False  # no proxy, no REQUESTS_CA_BUNDLE in place of the site's CA
    http.mount("https://", SiteAdapter(site.hostname))
    http.verify = str(ca)
    return http


def base_url(site: Deployment) -> str:
    return f"https://{site.server.host}:{site.server.port(HTTPS)}"


def login(site: Deployment, user: str, password: str) -> requests.Response:
    """SOGo's own login call, as its login page makes it."""
    body = json.dumps({"userName": site.address(user), "password": password}, ensure_ascii=False)
    with https(site) as http:
        return http.post(
            f"{base_url(site)}/SOGo/connect",
            data=body.encode("utf-8"),
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=HTTP_TIMEOUT,
        )


def volumes(site: Deployment) -> dict[str, str]:
    """The project's groupware volumes -> their creation time (unchanged unless re-made)."""
    names = " ".join(f"{site.project}_{v}" for v in VOLUMES)
    out = site.on_server(f"docker volume inspect --format '{{{{.Name}}}} {{{{.CreatedAt}}}}' {names}")
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


class TestGroupwareDeploy:
    """One groupware site, one server, in order; each step needs the ones before it."""

    def test_first_deploy_runs_the_groupware_like_the_mail_stack(
        self, office: Deployment, note: Note
    ) -> None:
        site, server = office, office.server
        result = site.deploy("--images", "load")
        note(f"first deploy of the groupware site (--images load, cloud server): {result.seconds:.0f} s")
        assert_ok(result, server.name)
        # deploy ends with `mailstack check` of the host: CalDAV and CardDAV discovery, the
        # webmail's login page and ActiveSync among its probes.
        assert CHECK_PASSED.search(result.output), result.tail(80)
        health = site.wait_healthy(GROUPWARE, timeout=60)
        assert set(GROUPWARE) <= health.keys(), health
        assert set(health.values()) == {"healthy"}, health

        # SOGo's database password: a state secret, on the host as root's 0600 like the others,
        # never in the rendered release nor in the output.
        secret = site.state_text("secrets/postgres").strip()
        assert len(secret) >= 16
        stat = site.on_server(f"stat -c '%a %U %G' {site.host_root}/state/secrets/postgres").strip()
        assert stat == "600 root root", stat
        assert site.on_server(f"cat {site.host_root}/state/secrets/postgres").strip() == secret
        leaks = site.on_server(
            f"grep -rlF -- '{secret}' {site.host_root}/live {site.host_root}/staging", check=False
        )
        assert leaks == "", f"the database password is in the rendered tree: {leaks}"
        assert secret not in result.output
        assert set(volumes(site)) == {f"{site.project}_{v}" for v in VOLUMES}
        # The rights on the shared mailbox, calendar and address book were set, in that order.
        tasks = result.tasks()
        assert tasks[MAILBOX_RIGHTS] == [f"changed: [{server.name}]"], str(result)
        assert tasks[DAV_RIGHTS] == [f"changed: [{server.name}]"], str(result)
        assert list(tasks).index(DAV_RIGHTS) == list(tasks).index(MAILBOX_RIGHTS) + 1
        site.done.add("deployed")

    def test_sogo_answers_on_https_and_a_utf8_password_logs_in(self, office: Deployment, note: Note) -> None:
        site = office
        needs(site, "deployed")
        with https(site) as http:
            page = http.get(f"{base_url(site)}/", timeout=HTTP_TIMEOUT)  # / → /SOGo/ → its login page
        assert page.status_code == 200, page.status_code
        assert page.url.startswith(f"{base_url(site)}/SOGo"), page.url
        assert "SOGo" in page.text
        started = time.monotonic()
        answer = login(site, UTF8_USER, site.passwords[UTF8_USER])
        note(f"SOGo login on the deployed server (UTF-8 password): {time.monotonic() - started:.2f} s")
        assert answer.status_code == 200, f"{answer.status_code} {answer.text[:300]}"
        assert answer.json()["username"] == site.address(UTF8_USER)
        assert "0xHIGHFLYxSOGo" in (answer.headers.get("set-cookie") or ""), answer.headers
        assert login(site, UTF8_USER, site.passwords[UTF8_USER] + "x").status_code == 403
        site.done.add("login")

    def test_caldav_discovery_leads_from_the_well_known_url_to_the_principal(
        self, office: Deployment
    ) -> None:
        """RFC 6764 as a client does it: PROPFIND on /.well-known/caldav, follow the redirect
        (on the published port), then the current-user-principal and its calendar home."""
        site = office
        needs(site, "deployed")
        user, password = site.address(UTF8_USER), site.passwords[UTF8_USER]
        auth = HTTPBasicAuth(user.encode(), password.encode("utf-8"))
        well_known = f"{base_url(site)}/.well-known/caldav"
        with https(site) as http:
            hop = http.request(
                "PROPFIND",
                well_known,
                headers={"Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
                data=CURRENT_USER_PRINCIPAL,
                auth=auth,
                allow_redirects=False,
                timeout=HTTP_TIMEOUT,
            )
        assert hop.status_code in (301, 308), hop.status_code
        dav_root = urljoin(well_known, hop.headers["location"])
        assert dav_root == f"{base_url(site)}/SOGo/dav/", hop.headers["location"]
        client = DAVClient(
            url=dav_root, username=user, password=password, ssl_verify_cert=str(site.workdir / "ca.crt")
        )
        client.session = https(site)
        principal = client.principal()  # type: ignore[no-untyped-call]
        assert unquote(str(principal.url)).endswith(f"/SOGo/dav/{user}/"), principal.url
        home = unquote(str(principal.calendar_home_set.url))  # SOGo writes @ as %40
        assert home.endswith(f"/SOGo/dav/{user}/Calendar/"), home

    def test_the_shared_calendar_is_read_by_whom_the_description_says(self, office: Deployment) -> None:
        """The role's reconciler gave zoe the right to read office@'s calendar, lena none."""
        site = office
        needs(site, "deployed")

        def propfind(user: str) -> requests.Response:
            password = site.passwords[user].encode("utf-8")
            with https(site) as http:
                return http.request(
                    "PROPFIND",
                    f"{base_url(site)}{SHARED_CALENDAR}",
                    headers={"Depth": "0", "Content-Type": "application/xml; charset=utf-8"},
                    data=DISPLAYNAME,
                    auth=HTTPBasicAuth(site.address(user).encode(), password),
                    timeout=HTTP_TIMEOUT,
                )

        granted = propfind(UTF8_USER)
        assert granted.status_code == 207, f"{granted.status_code} {granted.text[:300]}"
        assert "Office" in granted.text, granted.text[:500]
        refused = propfind(REMOVED)
        assert refused.status_code in (403, 404), f"{refused.status_code} {refused.text[:300]}"

    def test_mailstack_audit_covers_the_groupware_containers(self, office: Deployment, note: Note) -> None:
        site = office
        needs(site, "deployed")
        audit, report = site.audit("containers", timeout=300)
        note(f"mailstack audit --host --only containers: {report['counts']} in {report['seconds']:.0f} s")
        items = report["by_id"]
        failed = {k: v["detail"] for k, v in items.items() if v["status"] != "pass"}
        assert failed == {}, failed
        for service in GROUPWARE:
            for check in (
                "running",
                "capabilities",
                "read_only",
                "limits",
                "no_new_privileges",
                "internal_only",
            ):
                assert items[f"container.{service}.{check}"]["status"] == "pass"
        assert items["container.memcached.user"]["status"] == "pass"
        assert audit.returncode == 0, audit.stdout[-3000:]

    def test_second_deploy_changes_nothing(self, office: Deployment, note: Note) -> None:
        site = office
        needs(site, "deployed")
        before, kept = site.containers(), volumes(site)
        result = site.deploy("--images", "load")
        note(f"no-change re-deploy of the groupware site: {result.seconds:.0f} s")
        assert_no_change(site, result, before)
        assert volumes(site) == kept
        assert result.tasks()[DAV_RIGHTS] == [f"ok: [{site.server.name}]"], str(result)
        site.done.add("idempotent")

    def test_a_removed_mailbox_is_refused_by_sogo_and_no_container_is_restarted(
        self, office: Deployment, note: Note
    ) -> None:
        """The users table is applied again by the postgres reload handler (postgres-apply);
        config/sogo/ did not change (the rights are in groupware/dav-rights.sh), so no
        container is restarted, and SOGo's data stays on its volumes."""
        site = office
        needs(site, "deployed", "login")
        assert login(site, REMOVED, site.passwords[REMOVED]).status_code == 200
        before, kept = site.containers(), volumes(site)
        site.write_example(OFFICE, PASSWORDS, without=(REMOVED,))
        # As an operator changes mailboxes: the stack role only (the host is as the last full
        # deploy left it), and no check after it (this test probes SOGo itself).
        result = site.deploy("--images", "load", "--tags", "stack", "--no-live-check")
        note(f"deploy (--tags stack) removing a mailbox from the groupware site: {result.seconds:.0f} s")
        assert_ok(result, site.server.name)
        assert "TASK [mailstack_harden : Ensure" not in result.output, str(result)
        handler = "RUNNING HANDLER [mailstack_stack : Reload the services whose configuration changed]"
        reloaded = [
            found[1]
            for line in result.tasks().get(handler, [])
            if line.startswith("changed") and (found := re.search(r"\(item=([\w-]+)\)", line))
        ]
        assert "postgres" in reloaded, str(result)
        assert result.tasks()[DAV_RIGHTS][0].startswith(("ok:", "changed:")), str(result)  # ran
        assert site.containers() == before, "a container was recreated or restarted"
        assert volumes(site) == kept
        started = time.monotonic()
        while (status := login(site, REMOVED, site.passwords[REMOVED]).status_code) != 403:
            assert time.monotonic() - started < REFUSAL_TIMEOUT, (
                f"SOGo still answers {status} to {REMOVED}'s login {REFUSAL_TIMEOUT:.0f} s after the deploy"
            )
            time.sleep(2)
        note(f"the removed mailbox refused by SOGo {time.monotonic() - started:.1f} s after the deploy")
        assert login(site, UTF8_USER, site.passwords[UTF8_USER]).status_code == 200
