"""OTA on the U-Boot path (markers ``uboot`` and ``ota``): the arm64 test image
(qemuarm64) booted through Debian's qemu_arm64 U-Boot and the layer's boot.scr,
updated with signed bundles through RAUC's ``uboot`` backend, which reads and
writes the boot state with fw_printenv/fw_setenv and the layer's
/etc/fw_env.config (the state file on the FAT boot partition that boot.scr
imports and writes on every boot).

One guest goes through the scenarios in order, as the GRUB chain of test_ota.py
does: its first boot from boot.scr, an update streamed from the host into slot
B and marked good by the health gate, then an update whose health hook fails,
which the gate marks bad and the device rolls back from by itself.  Bundles are
the arm64 image's own slot image plus the changes of otakit's update-v2 and
update-unhealthy, signed with the test CA and the layer's bundle settings
(otakit.build_slot_updates), served by a server on the host's loopback through
a guestfwd rule.  The state file is checked from inside the guest (fw_printenv,
what RAUC reads) after every step and from the disk once the guest is off."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bootchain import (
    BootState,
    attempts,
    booted_slot_good,
    bootings,
    console_since,
    guest_state,
    log_offset,
    slot_of_root,
)
from conftest import UBOOT_MACHINE
from otachain import chained, ota_guest, scenario_log

from edgecontainers.qemu import ota
from edgecontainers.qemu.session import Session
from edgecontainers.testimage.builder import Builder, TestImage, machine_facts
from edgecontainers.testimage.httpserve import BundleServer
from edgecontainers.testimage.layer import Layer
from edgecontainers.testimage.otakit import (
    VERSION_MARKER,
    SlotUpdate,
    build_slot_updates,
    unhealthy_files,
    update_v2_files,
)

pytestmark = [pytest.mark.qemu, pytest.mark.uboot, pytest.mark.ota]

PROBE = "/data/.edgecontainers-uboot-ota-probe"


@dataclass
class UbootOta:
    session: Session
    layer: Layer
    server: BundleServer
    disk: Path
    seen: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    figures: dict[str, float | int] = field(default_factory=dict)
    # what the state file on the disk must hold once the guest is off (set by the last scenario)
    final: dict[str, str] | None = None

    @property
    def n(self) -> int:
        return attempts(self.layer)

    def run(self, command: str, timeout: float = 120) -> str:
        res = self.session.run(command, timeout=timeout)
        assert res.ok, f"'{command}' exited {res.rc}: {res.output.strip()[-800:]}"
        return res.output

    def state(self, order: str, a: int, b: int) -> dict[str, str]:
        return {"BOOT_ORDER": order, "BOOT_A_LEFT": str(a), "BOOT_B_LEFT": str(b)}


def slot_updates(builder: Builder, image: TestImage) -> Path:
    """update-v2.raucb and update-unhealthy.raucb of the arm64 image, as otakit makes them for the GRUB chain."""
    busybox = builder.busybox(machine_facts(image.spec.machine).debian_arch)
    v2 = tuple((path, data, mode) for path, (data, mode) in update_v2_files(busybox).items())
    return build_slot_updates(builder, "uboot-ota", (
        SlotUpdate("update-v2.raucb", image, v2, "2.0.0", "OTA test (U-Boot): one package added"),
        SlotUpdate("update-unhealthy.raucb", image, unhealthy_files(b"3-unhealthy\n"), "3.0.0",
                   "OTA test (U-Boot): fails its health check"),
    ))  # fmt: skip


@pytest.fixture(scope="module")
def chain(arm64_image: TestImage, tmp_path_factory: pytest.TempPathFactory):
    builder = Builder()
    server = BundleServer(slot_updates(builder, arm64_image)).start()
    figures: dict[str, float | int] = {}
    workdir = tmp_path_factory.mktemp("uboot-ota")
    guest = ota_guest(arm64_image, "uboot-ota-podman-production", workdir=workdir, figures=figures,
                      guestfwd=((ota.GUEST_HTTP_PORT, server.port),), figures_file="uboot-ota-figures.json",
                      boot="uboot")  # fmt: skip
    layer = Layer(UBOOT_MACHINE, "podman", False)
    try:
        with guest as session:
            state = UbootOta(session, layer, server, workdir / "disk.qcow2", figures=figures)
            state.seen.add(session.boot_id())
            yield state
        # the guest is off: the state file on the disk, read on the host as the guest's fw_printenv read it
        if state.final is not None:
            on_disk = BootState(layer, workdir / "state").read(state.disk, "qcow2")
            assert on_disk == state.final, f"the state file on the disk after the power-off: {on_disk}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _console_per_test(request: pytest.FixtureRequest, chain: UbootOta):
    with scenario_log(request, chain.session, "uboot-ota", chain.figures):
        yield


@pytest.fixture(autouse=True)
def _chain(request: pytest.FixtureRequest, chain: UbootOta):
    with chained(request, chain.failed, "U-Boot OTA"):
        yield


def test_uboot_ota_first_boot_is_slot_a_from_boot_scr(chain: UbootOta, arm64_image: TestImage, tmp_path: Path):
    """The device's first boot: the image's boot partition held boot.scr and no state
    file; boot.scr took one of A's attempts, booted A's kernel with root= on
    partition 2; A is good and its attempts are back (RAUC's mark-good through
    fw_setenv); slot B was never installed."""
    s, n = chain.session, chain.n
    flashed = BootState(chain.layer, tmp_path / "image")
    assert flashed.files(arm64_image.disk) == ["boot.scr"], "the boot partition holds IMAGE_BOOT_FILES only"
    assert flashed.read(arm64_image.disk) == {}, "the image has a state file before its first boot"
    console = console_since(s, 0)
    assert re.search(r"U-Boot \d{4}\.\d\d", console), "not booted through U-Boot"
    assert bootings(console) == [("A", 2, n - 1, 0)]
    assert "Starting kernel ..." in console.split("edgecontainers: booting slot A", 1)[1], "booti did not start A"
    assert slot_of_root(s) == ("A", 2)
    booted_slot_good(s, "A")
    assert guest_state(s) == chain.state("A B", n, 0)
    slots = ota.slots(s)
    assert slots.boot_status.get("B") != "good", slots.describe()


def test_uboot_ota_update_boots_slot_b_and_is_marked_good(chain: UbootOta):
    """A streamed, adaptive install of update-v2 into B: RAUC's uboot backend makes B
    primary (BOOT_ORDER "B A", B with all its attempts); the reboot runs B from
    partition 3, the health gate marks it good (B's attempts back) and what was on
    /data is still there."""
    s, n = chain.session, chain.n
    chain.run(f"echo 'written before the update' > {PROBE} && sync")
    machine_id = chain.run("cat /etc/machine-id").strip()
    res, seconds = ota.install(s, ota.server_url("update-v2.raucb"))
    assert res.ok, res.output
    chain.figures["install_s"] = round(seconds, 1)
    assert chain.server.bytes_sent["update-v2.raucb"] > 0
    assert ota.slots(s).primary == "B"
    assert guest_state(s) == chain.state("B A", n, n), "RAUC's set-primary through fw_setenv"

    offset = log_offset(s)
    t = time.monotonic()
    passed = ota.reboot_into(s, "B", seen=chain.seen)
    assert passed == ["B"], f"slots booted: {passed}"
    assert ota.wait_health_decided(s) == ("active", "success")
    chain.figures["reboot_to_marked_good_s"] = round(time.monotonic() - t, 1)
    assert bootings(console_since(s, offset)) == [("B", 3, n, n - 1)]
    booted_slot_good(s, "B")
    assert guest_state(s) == chain.state("B A", n, n), "RAUC's mark-good of B through fw_setenv"
    assert chain.run(f"cat {VERSION_MARKER}").strip() == "2"
    assert "marked slot B good" in chain.run("cat /data/edgecontainers/health.log")
    assert chain.run(f"cat {PROBE}").strip() == "written before the update"
    assert chain.run("cat /etc/machine-id").strip() == machine_id


def test_uboot_ota_unhealthy_update_is_marked_bad_and_slot_b_boots_again(chain: UbootOta):
    """An update whose health hook fails, installed into A: A boots from partition 2,
    the health gate marks it bad (RAUC's uboot backend: A out of BOOT_ORDER, no
    attempts left) and reboots; boot.scr then runs B, which is marked good."""
    s, n = chain.session, chain.n
    assert ota.slots(s).booted == "B"
    res, _ = ota.install(s, ota.server_url("update-unhealthy.raucb"))
    assert res.ok, res.output
    assert guest_state(s) == chain.state("A B", n, n)

    offset = log_offset(s)
    t = time.monotonic()
    passed = ota.reboot_into(s, "B", seen=chain.seen)
    assert passed == ["A", "B"], f"slots booted: {passed} (want the new slot A, then B again)"
    assert ota.wait_health_decided(s) == ("active", "success")
    chain.figures["rollback_s"] = round(time.monotonic() - t, 1)
    assert bootings(console_since(s, offset)) == [("A", 2, n - 1, n), ("B", 3, 0, n - 1)]
    booted_slot_good(s, "B")
    slots = ota.slots(s)
    assert slots.boot_status["A"] == "bad", slots.describe()
    assert guest_state(s) == chain.state("B", 0, n)
    log = chain.run("cat /data/edgecontainers/health.log")
    assert "slot=A" in log and "99-test-always-fails failed" in log and "marked slot A bad" in log, log
    assert chain.run(f"cat {PROBE}").strip() == "written before the update"
    chain.final = chain.state("B", 0, n)
