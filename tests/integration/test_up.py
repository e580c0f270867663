"""The stack comes up healthy, with the published ports and certificates the site asks for."""

from __future__ import annotations

import re
import socket
import ssl

import pytest

from tests.integration.stack import SERVICES, Stack

pytestmark = pytest.mark.integration


def test_stack_is_up_and_healthy(stack: Stack) -> None:
    assert stack.up_error is None, f"mailstack up failed: {stack.up_error}"
    states = stack.service_states()
    assert {s: states.get(s, "missing") for s in SERVICES} == dict.fromkeys(SERVICES, "healthy")


def test_every_published_port_answers_on_127_0_0_1(stack: Stack) -> None:
    closed = []
    for protocol, port in stack.ports.items():
        try:
            socket.create_connection((stack.host, port), timeout=5).close()
        except OSError as exc:
            closed.append(f"{protocol} {stack.host}:{port}: {exc}")
    assert not closed, "ports that do not accept connections: " + "; ".join(closed)


def test_imaps_certificate_is_for_the_hostname_and_signed_by_the_site_ca(stack: Stack) -> None:
    context = ssl.create_default_context(cafile=str(stack.ca_path))  # verifies chain and name
    with (
        socket.create_connection((stack.host, stack.ports["imaps"]), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=stack.site.hostname) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_rspamd_starts_from_the_hyperscan_databases_of_its_image(stack: Stack) -> None:
    """#16: compiled at a site's first start, the public suffix matcher left ~200 MiB of heap
    in rspamd's main process (shared by every worker); the image brings it compiled."""
    log = stack.logs("rspamd", 2000)
    assert "rspamd_url_init: initialized" in log, log[-2000:]
    assert re.search(r"full hyperscan database of \d+ regexps has been loaded", log), log[-2000:]
    anonymous_kib = stack.rspamd_heap_kib()
    # 38 MiB measured from the image's databases, 250 MiB after compiling them.
    assert anonymous_kib < 120 * 1024, f"rspamd's main process holds {anonymous_kib} KiB of heap"
