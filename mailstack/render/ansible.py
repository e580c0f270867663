"""What the Ansible role mailstack_stack runs per service: config checks and reloads, from
the catalogue (rendered into group_vars, so that the role holds no copy of a command)."""

from __future__ import annotations

from dataclasses import dataclass

from mailstack import services
from mailstack.site.models import Site


@dataclass(frozen=True)
class ConfigCheck:
    """``docker run --network=none --entrypoint=<command[0]>`` with the staged config mounted."""

    service: str
    image: str  # compose/images/<image>
    source: str  # the rendered directory, relative to the release
    target: str  # where compose mounts it
    state: str  # where the state is mounted (read-only)
    command: list[str]


@dataclass(frozen=True)
class Reload:
    """How a running service picks up a changed config/<config>/: exec in it, or a restart."""

    service: str
    config: str  # the directory under config/ whose change means this reload
    exec: list[str]  # empty: restart the service


def config_checks(site: Site | None = None) -> list[ConfigCheck]:
    return [
        ConfigCheck(
            s.name,
            s.image,
            f"config/{s.config.rendered}",
            s.config.target,
            services.STATE_MOUNT,
            list(s.config.check),
        )
        for s in services.rendered(site)
        if s.config.check
    ]


def reloads(site: Site | None = None) -> list[Reload]:
    return [Reload(s.name, s.config.top, list(s.reload.exec)) for s in services.rendered(site)]
