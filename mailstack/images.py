"""Service images: built from compose/images/<service>, FROM a Debian 13 base image.

An image is rebuilt only when its build context or its base image changed: the digest of
both is stored as a label, so a second `up` starts without invoking the builder at all.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from docker.models.images import Image

from mailstack import __version__, services
from mailstack.errors import UserError
from mailstack.resources import resource_dir

SERVICES = services.images()
DEFAULT_BASE = "debian:trixie-slim"
BOOTSTRAP_BASE = "mailstack/base:trixie"
DIGEST_LABEL = "org.mailstack.context-digest"


class ImageBuildError(UserError):
    """An image could not be built; the message names the step and the log."""


@dataclass(frozen=True)
class ImageResult:
    service: str
    tag: str
    built: bool


def image_tag(service: str) -> str:
    return f"mailstack/{service}:{__version__}"


def log_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mailstack" / "logs"


def _image(name: str) -> Image | None:
    try:
        return docker.from_env().images.get(name)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as exc:
        raise UserError(f"cannot ask the Docker engine about image {name}: {exc}") from None


def image_id(name: str) -> str | None:
    image = _image(name)
    return str(image.id) if image else None


def image_label(name: str, label: str) -> str | None:
    image = _image(name)
    value = (image.labels or {}).get(label) if image else None
    return str(value) if value else None


def resolve_base(requested: str | None, *, bootstrap: bool, say: Callable[[str], None]) -> str:
    """The base image to build FROM: the one asked for, else the first one present."""
    if requested:
        if image_id(requested):
            return requested
        if requested != BOOTSTRAP_BASE or not bootstrap:
            raise UserError(f"base image {requested} is not present on this engine; pull or import it first")
    for candidate in (DEFAULT_BASE, BOOTSTRAP_BASE):
        if not requested and image_id(candidate):
            return candidate
    if not bootstrap:
        raise UserError(
            f"no base image: neither {DEFAULT_BASE} nor {BOOTSTRAP_BASE} is present. "
            "Where no registry is reachable, run `mailstack images build --bootstrap-base` "
            "to build one from Debian's mirror with debootstrap"
        )
    bootstrap_base(BOOTSTRAP_BASE, say)
    return BOOTSTRAP_BASE


def bootstrap_base(name: str, say: Callable[[str], None]) -> None:
    """Build the base image with debootstrap (compose/bootstrap-base.sh), as operators do air-gapped."""
    script = resource_dir("compose") / "bootstrap-base.sh"
    log = log_dir() / "bootstrap-base.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"building base image {name} with debootstrap (log: {log})")
    with log.open("w") as handle:
        result = subprocess.run(
            ["bash", str(script), name], stdout=handle, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise ImageBuildError(f"bootstrapping base image {name} failed: {tail[0]} (log: {log})")


def context_digest(service: str, base_id: str) -> str:
    root = resource_dir("compose") / "images" / service
    digest = hashlib.sha256(base_id.encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


def ensure_images(
    *,
    base: str | None = None,
    bootstrap: bool = False,
    rebuild: bool = False,
    say: Callable[[str], None] = print,
    only: tuple[str, ...] = SERVICES,
) -> list[ImageResult]:
    """Build every service image (of ``only``: a site's, see services.images) whose context
    or base changed; return what was done."""
    base_name = resolve_base(base, bootstrap=bootstrap, say=say)
    base_id = image_id(base_name) or ""
    results = []
    for service in only:
        tag, digest = image_tag(service), context_digest(service, base_id)
        if not rebuild and image_label(tag, DIGEST_LABEL) == digest:
            results.append(ImageResult(service, tag, built=False))
            continue
        say(f"building image {tag} from {base_name}")
        build(service, tag, base_name, digest)
        results.append(ImageResult(service, tag, built=True))
    return results


_STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[.*\] .*)$")


def build(service: str, tag: str, base: str, digest: str) -> None:
    context = resource_dir("compose") / "images" / service
    log = log_dir() / f"build-{service}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "docker",
        "build",
        # A failed step leaves no stopped container behind (the legacy builder keeps it).
        "--force-rm",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--label",
        f"{DIGEST_LABEL}={digest}",
        "--tag",
        tag,
        str(context),
    ]
    with log.open("w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()
        steps = [line for line in lines if _STEP.match(line)]
        step = steps[-1] if steps else "(before the first step)"
        raise ImageBuildError(f"building {tag} failed at {step.strip()} (log: {log})")
