"""Negative proof: the smoke checks catch a broken on-target setting.

Builds the test image from a copy of the layer whose journald drop-in no longer
keeps the journal in RAM, boots it and runs the same check the smoke suite
runs; the check must fail, saying why."""

from __future__ import annotations

import shutil

import checks
import pytest
from conftest import CONSOLE_DIR

from edgecontainers.qemu.qemuboot import find_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.testimage.builder import ImageSpec
from edgecontainers.testimage.layer import Layer, default_layer

pytestmark = pytest.mark.qemu

JOURNALD = "recipes-core/edgecontainers-base/files/journald.conf"


def test_broken_journald_setting_fails_the_journald_smoke_check(build_image, tmp_path, request):
    if request.config.getoption("image") or request.config.getoption("deploy_dir"):
        pytest.skip("builds its own broken image; not run against a kas build")
    layer = tmp_path / "meta-edgecontainers"
    shutil.copytree(default_layer(), layer)
    conf = layer / JOURNALD
    text = conf.read_text()
    assert "Storage=@EDGECONTAINERS_JOURNAL_STORAGE@" in text, "the journald drop-in changed; update this test"
    conf.write_text(text.replace("Storage=@EDGECONTAINERS_JOURNAL_STORAGE@", "Storage=persistent"))

    image = build_image(ImageSpec(engine="podman", variant="dev", layer=layer, tag="broken-journald"))
    installed = (image.rootfs_dir / "usr/lib/systemd/journald.conf.d/60-edgecontainers.conf").read_text()
    assert "Storage=persistent" in installed, "the broken setting did not reach the image"

    expected = checks.Expected(Layer("qemux86-64", "podman", True))  # the checkout's declared values
    target = BootTarget.from_qemuboot(find_qemuboot(image.qemuboot))
    CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
    with Session(target, boot="direct", log_path=CONSOLE_DIR / "negative-broken-journald.log",
                 workdir=tmp_path / "session") as session:  # fmt: skip
        session.wait_ready(900)
        # A check that does not depend on journald still passes on this image ...
        checks.root_read_only(session)
        # ... and the journald check fails, naming the persistent journal.
        with pytest.raises(AssertionError) as failure:
            checks.journald_volatile(session, expected)
        session.poweroff(90)
    message = str(failure.value)
    assert "persistent journal" in message and "/var/log/journal" in message, message
