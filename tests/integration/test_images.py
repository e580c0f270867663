"""Image builds against the real engine: content-addressed caching and clear failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack import images

pytestmark = pytest.mark.integration


def test_second_build_reuses_every_image() -> None:
    images.ensure_images(bootstrap=True, say=lambda _m: None)
    again = images.ensure_images(say=lambda _m: None)
    assert [r.built for r in again] == [False] * len(images.SERVICES)
    for result in again:
        assert images.image_label(result.tag, images.DIGEST_LABEL)


def test_a_failing_build_names_its_step_and_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context = tmp_path / "images" / "broken"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo preparing\nRUN echo about to fail && exit 3\n"
    )
    monkeypatch.setattr(images, "resource_dir", lambda _name: tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    base = images.resolve_base(None, bootstrap=False, say=lambda _m: None)
    with pytest.raises(images.ImageBuildError) as failure:
        images.build("broken", "mailstack/broken:test", base, "digest")
    message = str(failure.value)
    assert "building mailstack/broken:test failed at" in message
    assert "exit 3" in message
    log = tmp_path / "cache" / "mailstack" / "logs" / "build-broken.log"
    assert f"(log: {log})" in message
    assert "about to fail" in log.read_text()
