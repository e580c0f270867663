"""The world's test-only images, built from tests/world/image/ when its content changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import docker

CONTEXT = Path(__file__).resolve().parent / "image"
BASE_IMAGE = "mailstack/base:trixie"  # the product's Debian 13 base (`make images` builds it)
IMAGES = {"dns": "mailstack-world/dns:test", "forger": "mailstack-world/forger:test"}
DIGEST_LABEL = "mailstack-world.context-digest"


def context_digest() -> str:
    """Of the build context's files and the base image's id: a change of either rebuilds."""
    digest = hashlib.sha256()
    for path in sorted(p for p in CONTEXT.rglob("*") if p.is_file()):
        digest.update(path.relative_to(CONTEXT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def ensure_images(client: docker.DockerClient) -> list[str]:
    """Build the images whose digest label differs from the context's; returns the tags built."""
    try:
        base_id = client.images.get(BASE_IMAGE).id
    except docker.errors.ImageNotFound:
        raise AssertionError(f"the world's images need {BASE_IMAGE}: run `make images` first") from None
    digest = hashlib.sha256(f"{context_digest()} {base_id}".encode()).hexdigest()
    built = []
    for target, tag in IMAGES.items():
        try:
            if client.images.get(tag).labels.get(DIGEST_LABEL) == digest:
                continue
        except docker.errors.ImageNotFound:
            pass
        try:
            client.images.build(
                path=str(CONTEXT),
                target=target,
                tag=tag,
                buildargs={"BASE_IMAGE": BASE_IMAGE},
                labels={DIGEST_LABEL: digest},
                rm=True,
                pull=False,
            )
        except docker.errors.BuildError as exc:
            tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)[
                -2000:
            ]
            raise AssertionError(f"building {tag} from {CONTEXT} failed: {exc}\n{tail}") from None
        built.append(tag)
    return built
