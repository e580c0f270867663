"""`mailstack deploy` against throwaway Debian 13 servers, over real SSH (issues #4, #12).

TestDeployLifecycle walks one site through the life of a server, in file order, on one
fresh minimal server as hosting providers hand it over (root login by key, no sudo, no
python3-apt, empty apt lists, a container's bind-mounted /etc/hostname): a first deploy
(images shipped with `--images load`, the state committed-style, encrypted with
ansible-vault) → a mail round trip → the hardened host → an idempotent re-deploy → check
mode → a new mailbox → a deploy that fails on purpose → a removed mailbox.

TestCloudServer deploys to the other kind, a cloud image, as its sudo user, with the
server cut off from Debian's mirror (`packages: cache`): deploy, changed=0, a round trip,
then a restart of the server's Docker engine while three clients send on port 25 (issue #16).

Build mode runs where it matters: the failing deploy builds on the server from a base
image in which nothing can run. (A successful build on the server needs a base image
there: `--bootstrap-base` debootstraps one from the mirror, which costs minutes.)
"""

from __future__ import annotations

import imaplib
import json
import re
import secrets
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from mailstack.site.front import front_gateway6
from mailstack.site.loader import load_site
from mailstack.vault import is_encrypted_state
from tests.e2e.conftest import Note
from tests.e2e.deployment import STANDARD_PORTS, Deployment, assert_no_change, assert_ok, needs
from tests.e2e.hardening import (
    bridge_address,
    input_policies,
    lynis_audit,
    ssh_audit,
    tables,
    tcp_sweep,
    wait_for_ssh_login,
)
from tests.e2e.harness import EGRESS_TABLE, MAIL_PORTS, ServerFactory
from tests.integration.traffic import Traffic, outcome, retry_within, wait_for_copies

pytestmark = pytest.mark.e2e

SERVICES = ("postfix", "dovecot", "rspamd", "redis")
#: A base image with no files at all: every RUN step of a Dockerfile fails at once.
BROKEN_BASE = "mailstack-e2e/broken-base:empty"

#: `sshd -T` after mailstack_harden (prohibit-password reads back as without-password).
SSHD_WANTED = {
    "permitrootlogin": "without-password",
    "passwordauthentication": "no",
    "kbdinteractiveauthentication": "no",
    "authenticationmethods": "publickey",
    "x11forwarding": "no",
    "allowtcpforwarding": "no",  # the deploying user: local, to the mail ports (Match block)
}
#: Kernel settings the e2e server (a container: only net.* is writable) must show live.
SYSCTL_LIVE = {
    "net.ipv4.ip_forward": "1",  # the documented exception: Docker routes the published ports
    "net.ipv4.conf.all.rp_filter": "1",
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.all.accept_source_route": "0",
    "net.ipv4.conf.all.log_martians": "1",
    "net.ipv4.tcp_syncookies": "1",
    "net.ipv6.conf.all.accept_redirects": "0",
}
LYNIS_TARGET = 80

#: The engine restart (issue #16, 3): three clients on port 25, each sending until the engine
#: has been back this long, at most this many messages each.
SENDERS = 3
SEND_AFTER_RESTART = 5.0
MESSAGES_PER_SENDER = 150
#: Mail from outside the site (port 25 refuses its own domain without a login).
OUTSIDE_SENDER = "someone@sender-e2e.invalid"
OUTSIDE_HELO = "mx.sender-e2e.invalid"

#: The message files of a maildir (their names hold no spaces).
MESSAGES = "find {}/Maildir -type f \\( -path '*/new/*' -o -path '*/cur/*' \\)"


@pytest.fixture(scope="class")
def deployment(
    server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A fresh minimal server of its own (removed after the class) and a site with one
    mailbox, deployed as root."""
    yield from _deployment(
        server_factory, tmp_path_factory, kind="minimal", ssh_user="root", packages="mirror"
    )


@pytest.fixture(scope="class")
def cloud_deployment(
    server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A fresh cloud server of its own and a site with one mailbox, deployed as the sudo
    user `debian`, with packages from the server's apt cache only."""
    yield from _deployment(
        server_factory, tmp_path_factory, kind="cloud", ssh_user="debian", packages="cache"
    )


def _deployment(
    factory: ServerFactory, tmp: pytest.TempPathFactory, *, kind: str, ssh_user: str, packages: str
) -> Iterator[Deployment]:
    server = factory.start(ports=MAIL_PORTS, kind=kind)
    site = Deployment(
        server=server, workdir=tmp.mktemp(f"deploy-{kind}"), ssh_user=ssh_user, packages=packages
    )
    site.write_site(["alice"])
    try:
        yield site
    finally:
        factory.remove(server)
        site.discard_image_archives()


def subject(label: str) -> str:
    return f"e2e {label} {secrets.token_hex(4)}"


def assert_login_refused(site: Deployment, user: str) -> None:
    with pytest.raises(imaplib.IMAP4.error, match=r"(?i)authentication failed"), site.imap(user):
        pass


class TestDeployLifecycle:
    """One site, one server, in order; each step needs the ones before it."""

    def test_first_deploy_to_a_minimal_server_as_root_runs_the_stack_under_debians_docker(
        self, deployment: Deployment, note: Note
    ) -> None:
        """No sudo, no python3-apt, empty apt lists, /etc/hostname a bind mount; the images
        come from the controller's engine (`--images load`), the packages from the mirror."""
        site, server = deployment, deployment.server
        # The server as a hosting provider hands it over.
        assert server.exec("command -v sudo", check=False).returncode != 0, "the minimal server has sudo"
        assert server.exec("dpkg -s python3-apt", check=False).returncode != 0, "it has python3-apt"
        assert server.exec("ls /var/lib/apt/lists").stdout.split() in ([], ["auxfiles", "lock", "partial"])
        assert "/etc/hostname" in server.exec("cut -d' ' -f5 /proc/self/mountinfo").stdout.split()
        password_file = site.workdir / "vault-password"
        password_file.write_text(secrets.token_urlsafe(16) + "\n")
        site.mailstack("render", str(site.site_path))
        site.mailstack("vault", "encrypt", str(site.site_path), "--vault-password-file", str(password_file))
        site.vault_password_file = password_file
        assert is_encrypted_state(site.state_dir)

        result = site.deploy("--images", "load", "--diff", "--vault-password-file", str(password_file))
        note(f"first deploy to a fresh minimal server (--images load, vault, --diff): {result.seconds:.0f} s")
        assert_ok(result, server.name)
        # deploy ends with `mailstack check` of the host (ports, TLS, a probe round trip, DKIM, GTUBE).
        assert re.search(r"^\d+ pass, \d+ warn, 0 fail(, \d+ skipped)? in ", result.output, re.M), (
            result.output[-3000:]
        )
        # The hostname could not be set (a bind mount): said in one message (which Ansible's
        # YAML output folds at 80 columns), and the deploy went on.
        assert result.output.count("hostname not set") == 1, result.output[-3000:]
        said = " ".join(result.output.partition("hostname not set")[2].split("'")[0].split())
        reason = "/etc/hostname is mounted by the container manager"
        assert said == f"({reason}); going on: {site.hostname} resolves to 127.0.1.1", said
        assert server.exec("dpkg -s python3-apt").returncode == 0

        # The play waited for health; look again from outside the play.
        health = site.wait_healthy(SERVICES, timeout=60)
        # SERVICES and whatever else the project runs (the guard services), all healthy.
        assert set(SERVICES) <= health.keys(), health
        assert set(health.values()) == {"healthy"}, health

        # Docker and compose v2 from Debian's own packages, configured by the role.
        packages = site.on_server(
            "dpkg-query -W -f '${Package} ${Version} ${Status}\\n' docker.io docker-compose"
        )
        assert re.search(r"^docker\.io \S+\+dfsg\S* install ok installed$", packages, re.M), packages
        assert re.search(r"^docker-compose \S+ install ok installed$", packages, re.M), packages
        assert site.on_server("dpkg -S /usr/sbin/dockerd").startswith("docker.io:")
        assert site.on_server("docker info --format '{{.LiveRestoreEnabled}}'").strip() == "true"
        assert site.on_server("docker compose version --short").startswith("2.")

        # The host layout: a root-only site tree; the state decrypted there, 0700/0600.
        root = site.host_root
        modes = site.on_server(f"stat -c '%a %U %n' {root} {root}/state {root}/live {root}/staging")
        assert modes.split("\n")[:4] == [
            f"750 root {root}",
            f"700 root {root}/state",
            f"750 root {root}/live",
            f"750 root {root}/staging",
        ], modes
        loose = site.on_server(
            f"find {root}/state \\( -type f ! -perm 0600 \\) -o \\( -type d ! -perm 0700 \\)"
        )
        assert loose == "", f"state entries with other modes:\n{loose}"
        assert any("decrypted from ansible-vault" in task for task in result.changed_tasks()), str(result)
        redis = site.state_text("secrets/redis")
        assert site.on_server(f"cat {root}/state/secrets/redis") == redis, (
            "the state on the server is not plain"
        )

        # tls.mode acme: the host's acme service tried the CA and failed; its acme/ came back
        # into the controller's (encrypted) state, and the check named the failure.
        status = json.loads(site.state_text("acme/status.json"))
        assert "cannot reach the ACME directory" in status["last_attempt"]["error"], status
        assert status["failures"] >= 1
        assert re.search(r"\bACME\b", result.output), result.output[-3000:]

        # Secrets never reach the console, not even with --diff.
        for name in ("secrets/redis", "secrets/rspamd_controller", "tls/ca.key"):
            for line in site.state_text(name).splitlines():
                if len(line) >= 16 and not line.startswith("-----"):
                    assert line not in result.output, f"{name} appears in the deploy output"
        site.done.add("deployed")

    def test_mail_round_trip_through_the_published_ports(self, deployment: Deployment, note: Note) -> None:
        site = deployment
        needs(site, "deployed")
        first = subject("first")
        site.submit("alice", ["alice"], first)  # 587: STARTTLS, then AUTH
        seconds = site.wait_for_imap("alice", first)  # 993
        note(f"submission → IMAP round trip on the deployed server: {seconds:.1f} s")
        assert first in site.pop3_subjects("alice")  # 995
        site.first_subject = first
        site.done.add("round trip")

    def test_smtp_answers_over_ipv6_on_the_server(self, deployment: Deployment) -> None:
        """The default bind includes ::, so the server's Docker (ip6tables on, from the role)
        gave the front network an IPv6 subnet and DNATs IPv6 connections into it: from the
        server itself, to its address on that network, Postfix greets."""
        site, server = deployment, deployment.server
        needs(site, "deployed")
        subnet6 = load_site(site.site_path).front_subnet6
        assert subnet6 is not None, "the default bind has no IPv6 address"
        probe = (
            "import socket, sys\n"
            "with socket.create_connection((sys.argv[1], 25), timeout=30) as s:\n"
            "    print(s.makefile('rb').readline().decode().strip())\n"
        )
        greeting = server.exec(["python3", "-c", probe, front_gateway6(subnet6)]).stdout.strip()
        assert greeting.startswith("220"), f"no SMTP greeting over IPv6: {greeting!r}"
        daemon = json.loads(server.exec(["cat", "/etc/docker/daemon.json"]).stdout)
        assert daemon.get("ip6tables") is True, daemon

    # --- the host as mailstack_harden left it (issue #5, part 4), after the round trip ---

    def test_ssh_passes_ssh_audit_and_takes_keys_only(self, deployment: Deployment, note: Note) -> None:
        site, server = deployment, deployment.server
        needs(site, "deployed")
        audit = ssh_audit(server.host, server.ssh_port)
        # ssh-audit's many unauthenticated connections earn this address a penalty
        # (sshd's PerSourcePenalties, OpenSSH >= 9.8): sshd refuses it for a while, by design.
        penalty = wait_for_ssh_login(server, timeout=180)
        note(
            f"ssh-audit of {audit.software}: {len(audit.failures)} failures, {len(audit.warnings)} "
            f"warnings {audit.warnings}; root login by key refused afterwards for {penalty:.0f} s "
            "(PerSourcePenalties)"
        )
        assert audit.failures == [], "ssh-audit failures:\n" + "\n".join(audit.failures)
        assert {"kex", "key", "enc", "mac"} <= audit.report.keys(), audit.report
        effective = dict(line.split(" ", 1) for line in site.on_server("sshd -T").splitlines() if " " in line)
        assert {k: effective[k] for k in SSHD_WANTED} == SSHD_WANTED, "sshd -T differs"

    def test_firewall_drops_inbound_by_default_and_leaves_dockers_tables(
        self, deployment: Deployment
    ) -> None:
        site, server = deployment, deployment.server
        needs(site, "deployed")
        ruleset = json.loads(site.on_server("nft -j list ruleset"))
        hooks = input_policies(ruleset)
        assert ("inet", "mailstack_host", "input", "drop") in hooks, hooks
        assert ("ip", "nat") in tables(ruleset), f"Docker's NAT table is gone: {sorted(tables(ruleset))}"
        # A restart of nftables.service (as at boot) replaces only mailstack's table.
        server.exec(["systemctl", "restart", "nftables"])
        again = json.loads(site.on_server("nft -j list ruleset"))
        assert tables(again) == tables(ruleset), "nftables.service changed other tables than its own"
        assert ("inet", "mailstack_host", "input", "drop") in input_policies(again)
        assert "flush" not in site.on_server("grep -v '^#' /etc/nftables.conf"), "nftables.conf flushes"

    def test_only_ssh_and_the_published_mail_ports_answer(self, deployment: Deployment, note: Note) -> None:
        site, server = deployment, deployment.server
        needs(site, "deployed")
        expected = sorted({22, *STANDARD_PORTS.values()})
        sweep = tcp_sweep(bridge_address(server), confirm=tuple(expected))
        note(
            f"TCP sweep of {sweep.address} ports 1-65535 from this host: {sweep.seconds:.0f} s, "
            f"open {sweep.open}"
        )
        assert sweep.open == expected, f"open ports {sweep.open}, expected {expected}"

    def test_kernel_settings_are_hardened_where_the_kernel_allows(self, deployment: Deployment) -> None:
        site = deployment
        needs(site, "deployed")
        live = dict(
            line.split(" = ", 1) for line in site.on_server(f"sysctl {' '.join(SYSCTL_LIVE)}").splitlines()
        )
        assert live == SYSCTL_LIVE, f"sysctl differs from {SYSCTL_LIVE}"
        boot = site.on_server("cat /etc/sysctl.d/90-mailstack-harden.conf")
        # Keys the container may not set are listed with the reason, not left out silently.
        assert re.search(r"^# kernel\.kptr_restrict = 2 .*read-only", boot, re.M), boot

    def test_lynis_hardening_index_is_at_least_80(self, deployment: Deployment, note: Note) -> None:
        site, server = deployment, deployment.server
        needs(site, "deployed")
        lynis = lynis_audit(server)
        note(
            f"Lynis hardening index after `mailstack deploy`: {lynis.hardening_index} "
            f"({lynis.tests_performed} tests, {len(lynis.warnings)} warnings, "
            f"{len(lynis.suggestions)} suggestions, {lynis.seconds:.0f} s)"
        )
        assert lynis.hardening_index >= LYNIS_TARGET, lynis.summary()

    def test_mailstack_audit_of_the_host_passes(self, deployment: Deployment, note: Note) -> None:
        """`mailstack audit --host` as an admin runs it: the host's items, the containers and
        Postfix's anti-abuse settings over SSH (TLS is audited by the integration suite)."""
        site, server = deployment, deployment.server
        needs(site, "deployed")
        run_audit, report = site.audit("host,containers,smtp")
        items = report["by_id"]
        note(
            f"mailstack audit --host: {report['counts']} in {report['seconds']:.0f} s; "
            f"lynis: {items['host.lynis']['detail'][:60]}"
        )
        failed = {k: v["detail"] for k, v in items.items() if v["status"] == "fail"}
        assert failed == {}, failed
        assert run_audit.returncode == 0, run_audit.stdout[-3000:] + run_audit.stderr[-2000:]
        for item in (
            "host.ssh_audit",
            "host.firewall",
            "host.lynis",
            "container.postfix.read_only",
            "smtp.relay",
        ):
            assert items[item]["status"] == "pass", items.get(item)
        assert items["host.ports"]["status"] == "skip"  # the server is reached on 127.0.0.1 here
        wait_for_ssh_login(server, timeout=180)  # ssh-audit's penalty (see the ssh-audit test)

    def test_mail_still_flows_after_the_hardening_checks(self, deployment: Deployment) -> None:
        """The checks above restarted nftables.service: Docker's forwarding must have survived it."""
        site = deployment
        needs(site, "deployed", "round trip")
        after = subject("after the hardening checks")
        site.submit("alice", ["alice"], after)
        site.wait_for_imap("alice", after)

    def test_second_deploy_changes_nothing(self, deployment: Deployment, note: Note) -> None:
        site = deployment
        needs(site, "deployed")
        assert site.vault_password_file is not None
        before = site.containers()
        # What the host's acme service makes after a renewal: a key generation the controller
        # lacks. A deploy must keep it on the host and take it into the state.
        keys = f"{site.host_root}/state/acme/keys"
        site.on_server(f"cp -p {keys}/ecdsa-0002.key {keys}/ecdsa-0009.key")
        host_status = site.on_server(f"sha256sum {site.host_root}/state/acme/tls/live/ecdsa.crt")
        result = site.deploy("--images", "load", "--vault-password-file", str(site.vault_password_file))
        note(f"no-change re-deploy (vault-encrypted state): {result.seconds:.0f} s")
        assert_no_change(site, result, before)
        assert site.on_server(f"sha256sum {site.host_root}/state/acme/tls/live/ecdsa.crt") == host_status
        assert site.on_server(f"cmp {keys}/ecdsa-0002.key {keys}/ecdsa-0009.key; echo $?").strip() == "0"
        assert site.state_text("acme/keys/ecdsa-0009.key") == site.state_text("acme/keys/ecdsa-0002.key")
        assert (site.state_dir / "acme/keys/ecdsa-0009.key").read_bytes().startswith(b"$ANSIBLE_VAULT;")

    def test_check_mode_on_the_deployed_server_reports_no_changes(
        self, deployment: Deployment, note: Note
    ) -> None:
        """From here on the state is plain (`mailstack vault decrypt`): same content, so no change."""
        site = deployment
        needs(site, "deployed")
        assert site.vault_password_file is not None
        site.mailstack(
            "vault", "decrypt", str(site.site_path), "--vault-password-file", str(site.vault_password_file)
        )
        before = site.containers()
        result = site.deploy("--images", "load", "--check")
        note(f"--check on the deployed server: {result.seconds:.0f} s")
        assert_no_change(site, result, before)

    def test_a_new_mailbox_works_and_only_changed_services_are_reloaded(self, deployment: Deployment) -> None:
        site = deployment
        needs(site, "deployed", "round trip")
        before = site.containers()
        site.write_site(["alice", "bob"])
        result = site.deploy("--images", "load")
        assert_ok(result, site.server.name)

        tasks = result.tasks()
        handler = "RUNNING HANDLER [mailstack_stack : Reload the services whose configuration changed]"
        reloaded = [
            found[1]
            for line in tasks.get(handler, [])
            if line.startswith("changed") and (found := re.search(r"\(item=(\w+)\)", line))
        ]
        # Postfix's maps, Dovecot's passwd-file, Rspamd's From rule (who may send as whom)
        # and the web service's Apple profiles changed; nothing of redis's did.
        assert reloaded == ["postfix", "dovecot", "rspamd", "web"], f"{tasks.get(handler)}\n{result}"
        assert tasks["TASK [mailstack_stack : Ensure the stack runs and is healthy]"] == [
            f"ok: [{site.server.name}]"
        ], str(result)
        assert site.containers() == before, "a service was recreated or restarted instead of reloaded"

        welcome = subject("welcome bob")
        site.submit("alice", ["bob"], welcome)
        site.wait_for_imap("bob", welcome)
        site.submit("bob", ["bob"], subject("bob to himself"))
        assert site.first_subject in site.imap_subjects("alice"), "earlier mail is gone"
        site.done.add("bob")

    def test_a_shared_mailbox_gets_its_rights_and_a_redeploy_changes_nothing(
        self, deployment: Deployment, note: Note
    ) -> None:
        """The role reconciles the rights of shared_mailboxes: changed when it set them, ok
        (changed=0 for the whole play) when they already are the description's."""
        site = deployment
        needs(site, "deployed", "bob")
        site.write_site(["alice", "bob"], shared={"office": {"alice": "read", "bob": "write"}})
        result = site.deploy("--images", "load")
        note(f"deploy adding a shared mailbox: {result.seconds:.0f} s")
        assert_ok(result, site.server.name)
        task = (
            "TASK [mailstack_stack : Ensure the rights on the shared mailboxes "
            "are those of the site description]"
        )
        assert result.tasks()[task] == [f"changed: [{site.server.name}]"], str(result)
        for_office = subject("for the office")
        site.submit("bob", ["office"], for_office)
        site.wait_for_imap("alice", for_office, folder=f"shared/{site.address('office')}/INBOX")
        before = site.containers()
        again = site.deploy("--images", "load")
        note(f"no-change re-deploy with a shared mailbox: {again.seconds:.0f} s")
        assert_no_change(site, again, before)
        assert again.tasks()[task] == [f"ok: [{site.server.name}]"], str(again)
        site.write_site(["alice", "bob"])  # the later steps start from the site without it
        assert_ok(site.deploy("--images", "load"), site.server.name)

    def test_a_deploy_that_cannot_build_fails_and_leaves_the_stack_serving(
        self, deployment: Deployment
    ) -> None:
        site, server = deployment, deployment.server
        needs(site, "deployed", "bob")
        server.ssh(f"tar -cf - -T /dev/null | docker import - {BROKEN_BASE}")
        before = site.containers()
        # carol is in the release that fails: she must not reach the live stack.
        site.write_site(["alice", "bob", "carol"])
        result = site.deploy("--images", "build", "--base-image", BROKEN_BASE)
        assert result.returncode != 0, str(result)
        assert result.recap[server.name]["failed"] >= 1, str(result)
        build = [t for t in result.tasks() if "Ensure the service images are built" in t]
        assert build, str(result)
        assert any(x.startswith("failed") for x in result.tasks()[build[0]]), str(result)
        assert "Error building mailstack/" in result.output, str(result)
        assert "TASK [mailstack_stack : Ensure the live tree matches" not in result.output, str(result)

        assert site.containers() == before
        health = site.wait_healthy(SERVICES, timeout=30)
        assert set(SERVICES) <= health.keys(), health
        assert set(health.values()) == {"healthy"}, health
        after = subject("after the failed deploy")
        site.submit("alice", ["alice", "bob"], after)
        site.wait_for_imap("alice", after)
        site.wait_for_imap("bob", after)
        assert_login_refused(site, "carol")
        assert "carol@" not in site.on_server(f"cat {site.host_root}/live/config/dovecot/users")

    def test_a_removed_mailbox_loses_login_and_delivery_but_keeps_its_mail(
        self, deployment: Deployment
    ) -> None:
        site = deployment
        needs(site, "deployed", "round trip", "bob")
        mail_home = f"/var/vmail/{site.domain}/bob"
        stored = len(site.compose(f"exec -T dovecot {MESSAGES.format(mail_home)}").split())
        assert stored >= 1, "bob has no stored mail to keep"

        site.write_site(["alice"])
        result = site.deploy("--images", "load")
        assert_ok(result, site.server.name)

        assert_login_refused(site, "bob")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            site.submit("alice", ["bob"], subject("to a removed mailbox"))
        # The mail stays on the volume until `mailstack purge`.
        assert "Maildir" in site.compose(f"exec -T dovecot ls {mail_home}").split()
        assert len(site.compose(f"exec -T dovecot {MESSAGES.format(mail_home)}").split()) == stored
        # alice is unaffected, with her mail.
        assert site.first_subject in site.imap_subjects("alice")


class TestCloudServer:
    """The other kind of server: a cloud image, deployed as its sudo user, cut off from the
    mirror (`packages: cache`: docker.io and the rest from its apt cache)."""

    def test_deploy_as_a_sudo_user_without_a_mirror(self, cloud_deployment: Deployment, note: Note) -> None:
        site, server = cloud_deployment, cloud_deployment.server
        with server.egress_blocked():
            result = site.deploy("--images", "load")
            blocked = EGRESS_TABLE in server.exec(["nft", "list", "tables"]).stdout
        note(f"first deploy to a cloud server as its sudo user, no mirror: {result.seconds:.0f} s")
        assert_ok(result, server.name)
        assert blocked, "the server's route to the mirror was not blocked throughout the deploy"
        assert re.search(r"^\d+ pass, \d+ warn, 0 fail(, \d+ skipped)? in ", result.output, re.M), (
            result.output[-3000:]
        )
        # Logged in as debian, the play wrote root's tree through sudo.
        assert site.on_server(f"stat -c '%U %a' {site.host_root}/state").strip() == "root 700"
        site.done.add("deployed")

    def test_a_second_deploy_changes_nothing(self, cloud_deployment: Deployment, note: Note) -> None:
        site = cloud_deployment
        needs(site, "deployed")
        before = site.containers()
        with site.server.egress_blocked():
            result = site.deploy("--images", "load")
        note(f"no-change re-deploy to the cloud server: {result.seconds:.0f} s")
        assert_no_change(site, result, before)

    def test_mail_round_trip(self, cloud_deployment: Deployment) -> None:
        site = cloud_deployment
        needs(site, "deployed")
        hello = subject("cloud")
        site.submit("alice", ["alice"], hello)
        site.wait_for_imap("alice", hello)
        assert hello in site.pop3_subjects("alice")

    def test_a_docker_engine_restart_during_delivery_loses_nothing(
        self, cloud_deployment: Deployment, note: Note
    ) -> None:
        """`systemctl restart docker` on the server while three clients send on port 25:
        with live-restore (mailstack_docker's daemon.json) the containers keep running, and
        every message that got 250 after DATA is in the mailbox exactly once."""
        site, server = cloud_deployment, cloud_deployment.server
        needs(site, "deployed")
        daemon = json.loads(server.exec(["cat", "/etc/docker/daemon.json"]).stdout)
        assert daemon.get("live-restore") is True, daemon
        before = site.containers()
        traffic = Traffic(subject("engine restart"))
        over = threading.Event()

        def send(sender: int) -> None:
            for n in range(MESSAGES_PER_SENDER):
                if over.is_set():
                    return
                title = f"{traffic.prefix} {sender}-{n}"
                seen = send_on_port_25(site, title)
                traffic.record(title, seen)
                time.sleep(0.1 if seen == "250" else 0.5)

        threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(SENDERS)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 60
            while len(traffic.accepted) < 10:
                assert time.monotonic() < deadline, f"not 10 messages accepted in 60 s: {traffic.summary()}"
                time.sleep(0.2)
            started = time.monotonic()
            server.exec("systemctl restart docker", timeout=180)
            restarted = time.monotonic() - started
            time.sleep(SEND_AFTER_RESTART)
        finally:
            over.set()
            for thread in threads:
                thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a sender hung"
        health = site.wait_healthy(SERVICES, timeout=180)
        assert all(health.get(s) == "healthy" for s in SERVICES), health
        # live-restore: the same containers, never restarted.
        assert site.containers() == before, "containers were restarted or recreated by the engine restart"
        # Mail that Postfix deferred while the engine's DNS was away waits for Postfix's
        # retry (its queue run and backoff); delivered by itself within that, never lost.
        schedule = site.compose("exec -T postfix postconf -h queue_run_delay minimal_backoff_time")
        resume_within = retry_within(schedule) + 60
        back = time.monotonic()
        queued = site.compose("exec -T postfix postqueue -p", check=False)
        try:
            wait_for_copies(
                lambda: site.imap_subjects("alice"),
                traffic.prefix,
                traffic.accepted,
                timeout=resume_within,
                what=f"all {len(traffic.accepted)} accepted messages in alice's INBOX",
            )
        finally:
            copies = Counter(s for s in site.imap_subjects("alice") if s.startswith(traffic.prefix))
            twice = sorted(s for s, n in copies.items() if n > 1)
            reasons = Counter(line.strip() for line in queued.splitlines() if line.strip().startswith("("))
            note(
                f"docker restart on the server ({restarted:.0f} s) during delivery: {traffic.summary()}; "
                f"{len(copies)} delivered, {len(twice)} twice, all there {time.monotonic() - back:.0f} s "
                f"after the engine was back (bound {resume_within:.0f} s); queued then: {dict(reasons)}"
            )
        lost = set(traffic.accepted) - set(copies)
        assert not lost, f"lost: {sorted(lost)}"
        assert not twice, f"delivered more than once: {twice}"
        assert not [code for code in traffic.refused if code.startswith("5")], traffic.summary()


def send_on_port_25(site: Deployment, title: str) -> str:
    """One message from outside to alice on the server's port 25 (see traffic.outcome)."""
    message = EmailMessage()
    message["From"] = OUTSIDE_SENDER
    message["To"] = site.address("alice")
    message["Subject"] = title
    message["Message-ID"] = f"<{secrets.token_hex(8)}@sender-e2e.invalid>"
    message.set_content(f"{title}\n")

    def connect() -> smtplib.SMTP:
        return smtplib.SMTP(site.server.host, site.server.port(25), local_hostname=OUTSIDE_HELO, timeout=30)

    return outcome(connect, message, OUTSIDE_SENDER)
