"""Negative proofs: the smoke checks catch broken on-target settings.

One test image is built from a copy of the layer with independent breakages,
each of a setting that a smoke check proves; it is booted once, and each
check must fail on it, saying why, while a check of something that was not
broken still passes:

- the journald drop-in no longer keeps the journal in RAM
  (``Storage=persistent``): ``journald_volatile`` fails;
- storage.conf as it was (driver ``overlay``) while the preload writes a vfs
  store, as meta-virtualization's import does: podman does not find the
  preloaded image, ``preloaded_store`` and ``app_running_offline`` fail.

One boot for all of them: the breakages touch different files and different
checks, and a boot costs minutes under TCG."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import checks
import pytest
from conftest import CONSOLE_DIR

from edgecontainers.qemu.qemuboot import find_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.testimage.builder import ImageSpec, TestImage
from edgecontainers.testimage.layer import Layer, default_layer

pytestmark = pytest.mark.qemu

JOURNALD = "recipes-core/edgecontainers-base/files/journald.conf"
STORAGE_CONF = "recipes-containers/container-host-config/files/storage.conf"

# file -> (what the checkout says, what the broken copy says)
BREAKAGES = {
    JOURNALD: ("Storage=@EDGECONTAINERS_JOURNAL_STORAGE@", "Storage=persistent"),
    STORAGE_CONF: ('driver = "vfs"', 'driver = "overlay"'),
}


@dataclass
class Broken:
    image: TestImage
    session: Session
    expected: checks.Expected


@pytest.fixture(scope="module")
def broken(request, build_image, tmp_path_factory):
    if request.config.getoption("image") or request.config.getoption("deploy_dir"):
        pytest.skip("builds its own broken image; not run against a kas build")
    tmp = tmp_path_factory.mktemp("negative")
    layer = tmp / "meta-edgecontainers"
    shutil.copytree(default_layer(), layer)
    for rel, (good, bad) in BREAKAGES.items():
        text = (layer / rel).read_text()
        assert good in text, f"{rel} changed; update this test"
        (layer / rel).write_text(text.replace(good, bad))
    image = build_image(ImageSpec(engine="podman", variant="dev", layer=layer, tag="negative"))
    expected = checks.Expected(Layer("qemux86-64", "podman", True))  # the checkout's declared values
    target = BootTarget.from_qemuboot(find_qemuboot(image.qemuboot))
    CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
    # The app cannot start: the health gate is masked, so that this boot is not
    # about what the gate does with it.
    no_gate = "systemd.mask=edgecontainers-health.service"
    session = Session(target, boot="direct", log_path=CONSOLE_DIR / "negative.log",
                      workdir=tmp / "session", extra_append=no_gate)  # fmt: skip
    try:
        session.start()
        session.wait_ready(900)
        yield Broken(image, session, expected)
    finally:
        session.poweroff(90)
        session.close()


def test_a_check_of_what_was_not_broken_still_passes(broken):
    checks.root_read_only(broken.session)


def test_broken_journald_setting_fails_the_journald_smoke_check(broken):
    installed = (broken.image.rootfs_dir / "usr/lib/systemd/journald.conf.d/60-edgecontainers.conf").read_text()
    assert "Storage=persistent" in installed, "the broken setting did not reach the image"
    with pytest.raises(AssertionError) as failure:
        checks.journald_volatile(broken.session, broken.expected)
    message = str(failure.value)
    assert "persistent journal" in message and "/var/log/journal" in message, message


def test_overlay_storage_conf_with_the_vfs_preload_fails_the_preloaded_store_check(broken):
    installed = (broken.image.rootfs_dir / "etc/containers/storage.conf").read_text()
    assert 'driver = "overlay"' in installed, "the broken setting did not reach the image"
    with pytest.raises(AssertionError) as failure:
        checks.preloaded_store(broken.session, broken.expected)
    with pytest.raises(AssertionError) as app_failure:
        checks.app_running_offline(broken.session, broken.expected)
    message = str(failure.value)
    assert "overlay-images/images.lock" in message and "overlay driver" in message, message
    assert "edgecontainers-demo" in str(app_failure.value), str(app_failure.value)
