"""`mailstack deploy`: render the release for the hosts' layout, then run playbooks/site.yml
over SSH with the release's inventory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailstack import __version__, services
from mailstack.errors import UserError
from mailstack.images import SERVICES, ensure_images, image_id, image_tag
from mailstack.remote import HostPaths
from mailstack.render import Plan, plan
from mailstack.resources import resource_dir
from mailstack.site.models import Host, Site
from mailstack.state import State
from mailstack.vault import Vault

_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)"
)

Say = Callable[[str], None]


class DeployError(UserError):
    """The play failed or could not start."""


@dataclass(frozen=True)
class DeployOptions:
    check: bool = False
    diff: bool = False
    limit: str | None = None
    tags: str | None = None
    images: str = "build"  # build | load
    base_image: str | None = None
    bootstrap_base: bool = False

    def __post_init__(self) -> None:
        if self.images not in ("build", "load"):
            raise DeployError(f"--images must be build or load, not {self.images!r}")


@dataclass
class DeployResult:
    returncode: int
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    hosts: list[Host] = field(default_factory=list)  # the hosts the play was for (--limit)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and all(
            r["failed"] == 0 and r["unreachable"] == 0 for r in self.recap.values()
        )


def release_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".release")


def inventory_file(out_dir: Path) -> Path:
    """The inventory of the last release (its group_vars/ beside it)."""
    return release_dir(out_dir) / "ansible" / "inventory.yml"


def render_release(site: Site, state_dir: Path, out_dir: Path, vault: Vault | None = None) -> Plan:
    """The site rendered once, for /opt/mailstack/<site>/{live,state} on the hosts, and written
    beside ``out_dir``; its ansible/ tree is the inventory the play runs with."""
    host = HostPaths(site.site)
    release = plan(
        site, release_dir(out_dir), state_dir, vault=vault, live_out_dir=host.live, live_state_dir=host.state
    )
    release.write()
    return release


def selected_hosts(site: Site, limit: str | None) -> list[Host]:
    """The hosts a deploy with ``--limit`` reaches (host names, comma-separated)."""
    return [h for h in site.hosts if limit is None or h.name in limit.split(",")]


def image_archive(out_dir: Path, say: Say, only: tuple[str, ...] = SERVICES) -> tuple[Path, dict[str, str]]:
    """A `docker save` of the service images, made again only when an image changed.

    Returns the archive and the ID of each image in it: the hosts load the archive only
    when they lack one of these IDs (`docker load` keeps them).
    """
    archive = out_dir.with_name(out_dir.name + ".images.tar")
    ids_file = archive.with_suffix(".ids")
    tags = [image_tag(s) for s in only]
    ids: dict[str, str] = {}
    for tag in tags:
        found = image_id(tag)
        if found is None:
            raise DeployError(f"image {tag} is not on this engine; run `mailstack images build`")
        ids[tag] = found
    manifest = json.dumps(ids, sort_keys=True)
    if archive.exists() and ids_file.exists() and ids_file.read_text() == manifest:
        return archive, ids
    say(f"saving {len(tags)} images to {archive}")
    partial = archive.with_suffix(".partial")
    run = subprocess.run(
        ["docker", "save", "--output", str(partial), *tags], capture_output=True, text=True, check=False
    )
    if run.returncode != 0:
        partial.unlink(missing_ok=True)
        raise DeployError(f"docker save failed: {run.stderr.strip()}")
    partial.replace(archive)
    ids_file.write_text(manifest)
    return archive, ids


def deploy(
    site: Site,
    out_dir: Path,
    state_dir: Path,
    options: DeployOptions,
    *,
    vault: Vault | None = None,
    say: Say = print,
) -> DeployResult:
    if not site.hosts:
        raise DeployError("the site lists no hosts; add a `hosts:` entry to deploy to")
    # Ansible's connection, and ansible.posix.synchronize's transfer.
    for tool, package in (("ssh", "openssh-client"), ("rsync", "rsync")):
        if shutil.which(tool) is None:
            raise DeployError(f"`mailstack deploy` needs {tool} on this machine (apt-get install {package})")
    release = render_release(site, state_dir, out_dir, vault)
    extra = extra_vars(release.out_dir, state_dir, options, vaulted=vault is not None)
    if options.images == "load":
        wanted = services.images(site)
        ensure_images(base=options.base_image, bootstrap=options.bootstrap_base, say=say, only=wanted)
        archive, ids = image_archive(out_dir, say, wanted)
        extra["mailstack_images_archive"] = str(archive.resolve())
        extra["mailstack_images_ids"] = ids
    # tls.mode acme: the hosts' acme/ comes back here, then into the state (adopt_acme).
    pulled = out_dir.with_name(out_dir.name + ".acme-pulled")
    shutil.rmtree(pulled, ignore_errors=True)
    if site.tls.mode == "acme":
        extra["mailstack_acme_pull_dir"] = str(pulled.resolve())
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="mailstack-vars-", delete=False) as handle:
        json.dump(extra, handle)
    try:
        command = playbook_command(inventory_file(out_dir), Path(handle.name), options, vault)
        result = run_playbook(command, say)
        result.hosts = selected_hosts(site, options.limit)
        if pulled.is_dir():
            taken = State(state_dir, vault=vault).adopt_acme(pulled)
            if taken:
                say(f"state: took {len(taken)} file(s) of the host's acme service: {', '.join(taken)}")
        return result
    finally:
        Path(handle.name).unlink()
        shutil.rmtree(pulled, ignore_errors=True)  # it held private keys in plain text


def extra_vars(release: Path, state_dir: Path, options: DeployOptions, *, vaulted: bool) -> dict[str, object]:
    """The play's variables, but for the image archive (``--images load``) and the acme pull."""
    extra: dict[str, object] = {
        "mailstack_version": __version__,
        "mailstack_release_src": str(release.resolve()),
        "mailstack_state_src": str(state_dir.resolve()),
        "mailstack_stack_images_mode": options.images,
        # Encrypted state goes through Ansible's copy module, which decrypts it on the way.
        "mailstack_stack_state_vaulted": vaulted,
        # The top of the state directory, for that copy (acme/ is copied without replacing).
        "mailstack_stack_state_entries": sorted(p.name for p in state_dir.iterdir()),
        "mailstack_stack_acme": (state_dir / "acme").is_dir(),
    }
    # --images load is about images only: whether a host refreshes apt's lists is its own
    # setting (hosts[].packages, in the inventory); an extra var here would beat it.
    if options.images == "build":
        extra["mailstack_images_src"] = str(resource_dir("compose"))
        if options.base_image:
            extra["mailstack_stack_base_image"] = options.base_image
        if options.bootstrap_base:
            extra["mailstack_stack_base_bootstrap"] = True
            extra.setdefault("mailstack_stack_base_image", "mailstack/base:trixie")
    return extra


def playbook_command(
    inventory: Path, extra_vars: Path, options: DeployOptions, vault: Vault | None = None
) -> list[str]:
    command = [
        str(Path(sys.executable).with_name("ansible-playbook")),
        "--inventory",
        str(inventory),
        "--extra-vars",
        f"@{extra_vars}",
        str(resource_dir("playbooks") / "site.yml"),
    ]
    command += ["--check"] if options.check else []
    command += ["--diff"] if options.diff else []
    command += ["--limit", options.limit] if options.limit else []
    command += ["--tags", options.tags] if options.tags else []
    if vault is not None:
        command += ["--vault-password-file", str(vault.password_file)]
    return command


def run_playbook(command: list[str], say: Say) -> DeployResult:
    playbooks = resource_dir("playbooks")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(playbooks / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
    }
    result = DeployResult(returncode=1)
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
    except OSError as exc:
        raise DeployError(f"cannot run ansible-playbook: {exc}") from None
    with process:  # closes the pipe
        assert process.stdout is not None  # noqa: S101 - we asked for a pipe
        for line in process.stdout:
            shown = progress_line(line.rstrip("\n"))
            if shown is not None:
                say(shown)
            if recap := recap_line(line):
                host, counts = recap
                result.recap[host] = counts
        result.returncode = process.wait()
    return result


def recap_line(line: str) -> tuple[str, dict[str, int]] | None:
    """A host's line of the PLAY RECAP: (host, {ok, changed, unreachable, failed})."""
    match = _RECAP.match(line.strip())
    if match is None:
        return None
    return match["host"], {k: int(v) for k, v in match.groupdict().items() if k != "host"}


def progress_line(line: str) -> str | None:
    """Ansible's default output, without its rulers: one line per task and per host result."""
    stripped = line.rstrip("*").rstrip()
    if not stripped:
        return None
    if stripped.startswith(("TASK [", "RUNNING HANDLER [", "PLAY [")):
        return stripped
    if stripped.startswith("PLAY RECAP"):
        return "PLAY RECAP"
    return "  " + stripped
