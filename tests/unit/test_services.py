"""The service catalogue (services.py) and everything derived from it agree."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from mailstack import dns, engine, images, render, services
from mailstack.check import transport
from mailstack.render import plan_files
from mailstack.render.acme import acme_settings
from mailstack.render.guard import fence_table
from mailstack.render.web import web_files
from mailstack.resources import resource_dir
from mailstack.service_types import Config, Healthcheck, Mount, Network, Port, Reload, Service
from mailstack.site.loader import load_site, parse_site
from mailstack.site.models import STANDARD_PORTS, Ports, Site
from tests.conftest import EXAMPLES, ROOT, fake_state

DEMO = next(p for p in EXAMPLES if p.stem == "demo")
# The module, not the function of the same name that mailstack.render exports.
render_environment = importlib.import_module("mailstack.render.environment")
LETSENCRYPT = next(p for p in EXAMPLES if p.stem == "letsencrypt")


def rendered(site: Site, tmp_path: Path) -> dict[str, str]:
    files = plan_files(
        site, fake_state(site.domain_names, site.tls.mode), tmp_path / "state", tmp_path / "out"
    )
    return {f.path: f.content.decode() for f in files}


def compose(site: Site, tmp_path: Path) -> dict[str, Any]:
    """The compose file's services."""
    project: dict[str, Any] = YAML(typ="safe").load(rendered(site, tmp_path)["compose.yaml"])
    services_: dict[str, Any] = project["services"]
    return services_


def test_the_site_default_ports_name_the_catalogue_protocols_in_its_order() -> None:
    protocols = [p.protocol for s in services.CATALOGUE for p in s.ports]
    assert protocols == list(STANDARD_PORTS)
    assert set(protocols) == set(Ports.model_fields)


def test_every_published_protocol_appears_in_compose_check_dns_and_autoconfig(tmp_path: Path) -> None:
    site = load_site(DEMO)
    published = site.network.ports.published()
    assert set(published) == set(STANDARD_PORTS)  # the demo publishes every protocol
    composed = compose(site, tmp_path)
    records = dns.build_records(site, fake_state(site.domain_names))
    srv = {r.name.split(".")[0].removeprefix("_"): r.value for r in records if r.type == "SRV"}
    srv.pop("autodiscover")  # Outlook's, over HTTPS
    autoconfig = next(
        c for p, c in ((f.path, f.content.decode()) for f in web_files(site)) if "/autoconfig/" in p
    )
    for protocol, port in published.items():
        service, entry = services.ports()[protocol]
        assert f"{site.network.bind[0]}:{port}:{entry.container}" in composed[service.name]["ports"]
        assert transport.SERVICE[protocol] == (service.name, entry.label)
        if entry.tls != "none":
            assert protocol in transport.SPEAK, protocol
        if entry.client is not None:
            assert srv[protocol] == f"{0 if entry.tls == 'implicit' else 10} 1 {port} {site.hostname}."
            assert f"<port>{port}</port>" in autoconfig
        else:
            assert protocol not in srv
    assert {label for label, _, _ in dns.CLIENT_SERVICES} == {f"_{p}._tcp" for p in srv}


def test_every_service_has_a_healthcheck_limits_a_reload_and_a_config(tmp_path: Path) -> None:
    for s in services.CATALOGUE:
        assert s.healthcheck.test, s.name
        assert s.memory[-1] in "mg", s.name
        assert int(s.memory[:-1]) > 0, s.name
        assert s.pids > 0, s.name
        assert engine.RELOAD[s.name] in (["exec", "-T", s.name, *s.reload.exec], ["restart", s.name])
        assert (ROOT / "templates" / "compose" / s.config.top).is_dir(), s.name
        assert (ROOT / "compose" / "images" / s.image / "Dockerfile").is_file(), s.name
    assert set(images.SERVICES) == {s.image for s in services.CATALOGUE}
    # Every service present in the richest sites, with the catalogue's confinement.
    for example in (DEMO, LETSENCRYPT):
        site = load_site(example)
        composed = compose(site, tmp_path)
        assert set(composed) == engine.expected_services(site) == {s.name for s in services.present(site)}
        for s in services.present(site):
            entry = composed[s.name]
            assert (entry["cap_add"], entry["mem_limit"], entry["pids_limit"]) == (
                list(s.caps),
                s.memory,
                s.pids,
            )
            assert entry["healthcheck"]["test"][1:] == [
                arg.replace("{fence_table}", fence_table(site)) for arg in s.healthcheck.test
            ]


def test_engine_tables_derive_from_the_catalogue() -> None:
    assert engine.CONFIG_CHECKS == {
        "postfix": ("config/postfix", "/etc/postfix", ["postfix", "check"]),
        "dovecot": ("config/dovecot", "/etc/dovecot", ["doveconf", "-n"]),
        "rspamd": ("config/rspamd/local.d", "/etc/rspamd/local.d", ["rspamadm", "configtest"]),
        "web": ("config/web", "/etc/nginx", ["web-entrypoint", "nginx", "-e", "stderr", "-t"]),
        "resolver": ("config/resolver", "/etc/unbound", ["unbound-checkconf", "/etc/unbound/unbound.conf"]),
    }
    assert engine.TLS_SERVICES == ("postfix", "dovecot", "web")
    assert engine.CONFIG_DIRS["fence"] == "guard"
    assert engine.CONFIG_DIRS["rspamd"] == "rspamd"
    assert engine.RELOAD["guard"] == ["restart", "guard"]
    assert engine.RELOAD["dovecot"] == ["exec", "-T", "dovecot", "dovecot-reload"]


def test_acme_reload_loops_come_from_the_certificate_readers() -> None:
    site = load_site(LETSENCRYPT)
    commands = acme_settings(site, "../state", services.STATE_MOUNT).commands
    assert set(commands) == set(engine.TLS_SERVICES)
    for s in services.CATALOGUE:
        if s.certificates is not None:
            script = commands[s.name][-1]
            assert s.certificates.reload in script
            assert script.endswith(f"exec {s.certificates.daemon}".replace("$", "$$"))


@pytest.mark.parametrize(
    ("bind", "client"),
    [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("192.0.2.1", "192.0.2.1"), ("::1", "::1")],
)
def test_the_client_address_of_a_wildcard_bind_is_loopback_of_its_family(bind: str, client: str) -> None:
    assert services.client_address(bind) == client


def test_endpoints_after_up_show_loopback_for_a_wildcard_ipv6_bind() -> None:
    site = parse_site(
        "site: six\nhostname: mail.six.example\nadmin_email: a@six.example\n"
        "network:\n  bind: '::'\n  ports:\n    imaps: 993\ndomains:\n  - name: six.example\n"
    )
    assert engine.endpoints(site) == [("imaps", "[::1]:993", "implicit TLS")]


def test_the_ansible_role_holds_no_copy_of_a_command(tmp_path: Path) -> None:
    role = ROOT / "playbooks" / "roles" / "mailstack_stack"
    text = "\n".join(p.read_text() for p in [*role.glob("tasks/*.yml"), *role.glob("handlers/*.yml")])
    for s in services.CATALOGUE:
        for command in (s.config.check, s.reload.exec):
            if command:
                assert " ".join(command) not in text, command
                assert f"[{', '.join(command)}]" not in text, command
    demo = load_site(DEMO)
    group_vars = YAML(typ="safe").load(rendered(demo, tmp_path)["ansible/group_vars/all.yml"])
    # The demo has no groupware: the optional services are not in its tree at all.
    known = {s.name for s in services.rendered(demo)}
    assert known == {s.name for s in services.CATALOGUE if not s.optional}
    assert {c["service"]: c["command"] for c in group_vars["mailstack_stack_config_checks"]} == {
        name: command for name, (_, _, command) in engine.CONFIG_CHECKS.items() if name in known
    }
    assert {r["service"]: r["exec"] or None for r in group_vars["mailstack_stack_reloads"]} == {
        name: (command[3:] if command[0] == "exec" else None)
        for name, command in engine.RELOAD.items()
        if name in known
    }
    # The images it builds or loads, and the config/ directories it switches.
    assert group_vars["mailstack_stack_services"] == list(services.images(demo))
    assert set(images.SERVICES) - set(services.images(demo)) == {"sogo", "postgres", "backup"}
    assert "mailstack_stack_services" not in YAML(typ="safe").load(
        (role / "defaults" / "main.yml").read_text()
    )


TOY = Service(
    name="toy",
    image="toy",
    caps=(),
    memory="16m",
    pids=8,
    ports=(),
    internal_ports={"toy": 7777},
    config=Config("toy", "/etc/toy"),
    volumes=(Mount("toy-data", "/var/lib/toy"),),
    networks=(Network("back"),),
    healthcheck=Healthcheck(("toy", "health")),
    reload=Reload(),
)


@pytest.fixture
def toy_template(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The templates with the toy's one configuration template added (a copy)."""
    templates = tmp_path / "templates"
    shutil.copytree(resource_dir("templates"), templates)
    (templates / "compose" / "toy").mkdir()
    (templates / "compose" / "toy" / "toy.conf.j2").write_text(
        "{{ header() }}\nlisten = {{ site.hostname }}:7777\n"
    )
    for module in (render, render_environment):
        monkeypatch.setattr(module, "resource_dir", lambda name: tmp_path / name)
    render_environment.environment.cache_clear()
    yield
    render_environment.environment.cache_clear()


@pytest.mark.usefixtures("toy_template")
def test_a_new_service_takes_one_catalogue_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(services, "CATALOGUE", (*services.CATALOGUE, TOY))
    site = load_site(DEMO)
    files = rendered(site, tmp_path)
    assert files["config/toy/toy.conf"].splitlines()[1] == f"listen = {site.hostname}:7777"
    project = YAML(typ="safe").load(files["compose.yaml"])
    toy = project["services"]["toy"]
    assert toy["image"].startswith("mailstack/toy:")
    assert (toy["cap_add"], toy["mem_limit"], toy["pids_limit"]) == ([], "16m", 8)
    assert toy["volumes"] == ["./config/toy:/etc/toy:ro", "toy-data:/var/lib/toy"]
    assert toy["networks"] == ["back"]
    assert toy["healthcheck"]["test"] == ["CMD", "toy", "health"]
    assert "toy-data" in project["volumes"]
    assert "toy" in engine.expected_services(site)
    reloads = YAML(typ="safe").load(files["ansible/group_vars/all.yml"])["mailstack_stack_reloads"]
    assert {"service": "toy", "config": "toy", "exec": []} in reloads


def test_a_toy_with_a_published_port_and_certificates_gets_ports_secrets_and_the_acme_loop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The toy serves ManageSieve instead of dovecot, with the web service's certificate reload.
    dovecot = services.service("dovecot")
    toy = dataclasses.replace(
        TOY,
        ports=(Port("managesieve", 14190, "starttls", "STARTTLS", "Toy"),),
        reads=("tls",),
        certificates=services.service("web").certificates,
    )
    without = dataclasses.replace(
        dovecot, ports=tuple(p for p in dovecot.ports if p.protocol != "managesieve")
    )
    catalogue = (*(without if s is dovecot else s for s in services.CATALOGUE), toy)
    monkeypatch.setattr(services, "CATALOGUE", catalogue)
    site = load_site(LETSENCRYPT)
    assert site.network.ports.managesieve == 4190  # the default ports
    toy_compose = compose(site, tmp_path)["toy"]
    assert toy_compose["ports"] == ["0.0.0.0:4190:14190", "[::]:4190:14190"]
    assert toy_compose["entrypoint"][:2] == ["/bin/sh", "-c"]
    assert any(str(v).endswith(f"{services.STATE_MOUNT}/acme/tls:ro") for v in toy_compose["volumes"])


def test_services_are_one_blank_line_apart_whichever_are_present(tmp_path: Path) -> None:
    text = DEMO.read_text() + "abuse:\n  auth_ban:\n    enabled: false\n"
    composed = rendered(parse_site(text), tmp_path)["compose.yaml"]
    assert "\n\n\n" not in composed
    assert "\n  redis:\n" in composed
    assert "\n  guard:\n" not in composed
