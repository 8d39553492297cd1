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


STORAGE_CONF = "recipes-containers/container-host-config/files/storage.conf"


def test_overlay_storage_conf_with_the_vfs_preload_fails_the_preloaded_store_check(build_image, tmp_path, request):
    """storage.conf as it was (driver overlay) while the preload writes a vfs store, as
    meta-virtualization's import does: podman does not find the preloaded image."""
    if request.config.getoption("image") or request.config.getoption("deploy_dir"):
        pytest.skip("builds its own broken image; not run against a kas build")
    layer = tmp_path / "meta-edgecontainers"
    shutil.copytree(default_layer(), layer)
    conf = layer / STORAGE_CONF
    text = conf.read_text()
    assert 'driver = "vfs"' in text, "storage.conf changed; update this test"
    conf.write_text(text.replace('driver = "vfs"', 'driver = "overlay"'))

    image = build_image(ImageSpec(engine="podman", variant="dev", layer=layer, tag="overlay-store"))
    installed = (image.rootfs_dir / "etc/containers/storage.conf").read_text()
    assert 'driver = "overlay"' in installed, "the broken setting did not reach the image"

    expected = checks.Expected(Layer("qemux86-64", "podman", True))  # the checkout's declared values
    target = BootTarget.from_qemuboot(find_qemuboot(image.qemuboot))
    CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
    # The app cannot start: the health gate would mark the slot bad and reboot after
    # its timeout, so it is masked for this boot.
    no_gate = "systemd.mask=edgecontainers-health.service"
    with Session(target, boot="direct", log_path=CONSOLE_DIR / "negative-overlay-store.log",
                 workdir=tmp_path / "session", extra_append=no_gate) as session:  # fmt: skip
        session.wait_ready(900)
        checks.root_read_only(session)
        with pytest.raises(AssertionError) as failure:
            checks.preloaded_store(session, expected)
        with pytest.raises(AssertionError) as app_failure:
            checks.app_running_offline(session, expected)
        session.poweroff(90)
    message = str(failure.value)
    assert "overlay-images/images.lock" in message and "overlay driver" in message, message
    assert "edgecontainers-demo" in str(app_failure.value), str(app_failure.value)
