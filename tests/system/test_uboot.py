"""The U-Boot A/B boot chain, executed: the arm64 test image (qemuarm64: Debian
trixie arm64 packages plus the layer's files, the layout of
edgecontainers-ab-uboot.wks) booted through a real U-Boot (Debian's u-boot-qemu,
qemu_arm64, ``-bios u-boot.bin``) that runs the layer's boot.scr from the boot
partition, and the Raspberry Pi's own U-Boot (Debian's u-boot-rpi, rpi_arm64)
on QEMU's raspi3b with the boot.scr rendered for the Pi.

Every boot here goes through U-Boot; no test passes a kernel to QEMU.  The
state file is read back from the disk after the boots with fw_printenv and
the layer's fw_env.config (bootchain.py).

Slow: the arm64 image is built under user-mode emulation and every boot runs
under TCG (docs/testing.md has the measured times).  Run with
``-m uboot`` (scripts/run-tests does not run them by default)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from bootchain import (
    BOOTING,
    NO_SLOT_LEFT,
    BootState,
    NoRebootSession,
    attempts,
    booted_slot_good,
    bootings,
    console_since,
    guest_state,
    one_attempt,
    panicking_slot,
    partitions,
    shutdown,
    slot_of_root,
    wait_log,
)
from conftest import CONSOLE_DIR, UBOOT_MACHINE

from edgecontainers.qemu.qemuboot import find_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.testimage.builder import Builder, TestImage, compile_boot_script
from edgecontainers.testimage.layer import Layer, default_layer

pytestmark = [pytest.mark.qemu, pytest.mark.uboot]

MACHINE = UBOOT_MACHINE
BOOT_TIMEOUT = 1500
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def layer() -> Layer:
    return Layer(MACHINE, "podman", False)


@pytest.fixture(scope="module")
def target(arm64_image: TestImage) -> BootTarget:
    t = BootTarget.from_qemuboot(find_qemuboot(arm64_image.qemuboot))
    assert "uboot" in t.boot_paths and t.bios is not None, t
    return t


# ---------------------------------------------------------------- slot A from boot.scr
def assert_uboot_boots_slot_a(target: BootTarget, layer: Layer, work: Path, log: Path) -> None:
    """The first boot of the image: U-Boot runs boot.scr from the boot partition,
    which takes one of slot A's attempts, writes the state file, boots A's kernel
    from partition 2 with root= on partition 2; the health gate marks A good
    (its attempts back); fw_printenv in the guest and on the host read the state."""
    n = attempts(layer)
    state = BootState(layer, work / "state")
    disk = work / "disk.qcow2"
    assert state.read(target.disk) == {}, "the image's boot partition has a state file before the first boot"
    assert state.files(target.disk) == ["boot.scr"], "the boot partition holds IMAGE_BOOT_FILES only"
    log.unlink(missing_ok=True)
    with Session(target, boot="uboot", log_path=log, disk=disk, workdir=work / "session") as s:
        # boot.scr's choice first (a wrong one would never become ready)
        choice = wait_log(s, 0, BOOTING, 600)
        assert re.search(r"U-Boot \d{4}\.\d\d", choice), "not booted through U-Boot"
        assert bootings(choice) == [("A", 2, n - 1, 0)], choice[-3000:]
        s.wait_ready(BOOT_TIMEOUT)
        console = console_since(s, 0)
        assert bootings(console) == [("A", 2, n - 1, 0)], console[-3000:]
        assert slot_of_root(s) == ("A", 2)
        assert "Starting kernel ..." in console.split("edgecontainers: booting slot A", 1)[1], "booti did not start A"
        booted_slot_good(s, "A")
        assert guest_state(s) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": str(n), "BOOT_B_LEFT": "0"}
        shutdown(s)
    assert state.read(disk, "qcow2") == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": str(n), "BOOT_B_LEFT": "0"}


@pytest.mark.uboot_full
def test_uboot_boots_slot_a_from_boot_scr(target: BootTarget, layer: Layer, tmp_path: Path):
    CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
    assert_uboot_boots_slot_a(target, layer, tmp_path, CONSOLE_DIR / "uboot-slot-a.log")


SWAPPED = ("setenv ec_part 2", "setenv ec_part 3")


def test_uboot_negative_swapped_partitions_fail_the_slot_a_boot(target: BootTarget, arm64_image: TestImage,
                                                                 tmp_path: Path):  # fmt: skip
    """Negative proof: boot.scr from a copy of boot.cmd.in whose slots' partition
    numbers are swapped (A on 3, B on 2) on the same image fails the slot-A test."""
    copy = tmp_path / "meta-edgecontainers"
    shutil.copytree(default_layer(), copy)
    cmd = copy / "recipes-bsp/edgecontainers-boot/files/boot.cmd.in"
    text = cmd.read_text()
    assert all(text.count(s) == 1 for s in SWAPPED), "boot.cmd.in changed; update this test"
    cmd.write_text(text.replace(SWAPPED[0], "@SWAP@").replace(SWAPPED[1], SWAPPED[0]).replace("@SWAP@", SWAPPED[1]))
    swapped = Layer(MACHINE, "podman", False, path=copy)
    disk = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(arm64_image.disk), str(disk)], check=True)
    scr = tmp_path / "boot.scr"
    compile_boot_script(swapped, scr)
    boot = partitions(disk)[0]
    subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{boot.start}", str(scr), "::/boot.scr"], check=True)
    broken = dataclasses.replace(target, disk=disk)
    with pytest.raises(AssertionError) as failure:
        assert_uboot_boots_slot_a(broken, swapped, tmp_path / "run", CONSOLE_DIR / "uboot-negative-swapped.log")
    assert "(partition 3" in str(failure.value) or "'A', 3" in str(failure.value), str(failure.value)


# ---------------------------------------------------------------- boot counting
def panicking_b_attempts(target: BootTarget, state: BootState, overlay: Path, log: Path, work: Path,
                         n: int) -> list[str]:  # fmt: skip
    """Boot slot B, whose kernel panics, until its attempts are gone: one QEMU run per
    attempt (-no-reboot), the state file read back from the disk after each; the
    console of each attempt."""
    consoles = []
    for left in range(n - 1, -1, -1):
        s = NoRebootSession(target, boot="uboot", log_path=log, disk=overlay, workdir=work / f"attempt-{left}")
        console = one_attempt(s)
        s.close()
        assert bootings(console) == [("B", 3, n, left)], console[-3000:]
        assert "Kernel panic - not syncing" in console, console[-3000:]
        assert state.read(overlay, "qcow2") == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": str(n), "BOOT_B_LEFT": str(left)}
        consoles.append(console)
    return consoles


@contextlib.contextmanager
def falls_back_to_a(target: BootTarget, overlay: Path, log: Path, work: Path, n: int) -> Iterator[Session]:
    """The boot after B's last attempt: boot.scr chooses A, which becomes ready and is
    marked good by the health gate; powered off afterwards."""
    offset = log.stat().st_size
    with Session(target, boot="uboot", log_path=log, disk=overlay, workdir=work) as s:
        choice = wait_log(s, offset, BOOTING, 600)
        assert bootings(choice) == [("A", 2, n - 1, 0)], choice[-3000:]
        s.wait_ready(BOOT_TIMEOUT)
        assert bootings(console_since(s, offset)) == [("A", 2, n - 1, 0)]
        assert slot_of_root(s) == ("A", 2)
        booted_slot_good(s, "A")
        yield s
        shutdown(s)


def test_uboot_boot_count_exhaustion_falls_back_to_slot_a(target: BootTarget, arm64_image: TestImage, layer: Layer,
                                                          tmp_path: Path):  # fmt: skip
    """Slot B activated as RAUC's install leaves it (BOOT_ORDER "B A", B with all
    its attempts), its kernel panicking every boot: each boot.scr run takes one of
    B's attempts (read back from the disk after each), after the last one U-Boot
    boots A, which the health gate keeps good, and it stays A."""
    n = attempts(layer)
    disk = panicking_slot(arm64_image.rootfs_ext4, arm64_image.disk, tmp_path)
    state = BootState(layer, tmp_path / "state")
    state.write(disk, {"BOOT_ORDER": "B A", "BOOT_A_LEFT": str(n), "BOOT_B_LEFT": str(n)})
    t = dataclasses.replace(target, disk=disk)
    overlay = tmp_path / "overlay.qcow2"
    log = CONSOLE_DIR / "uboot-exhaustion.log"
    log.unlink(missing_ok=True)
    panicking_b_attempts(t, state, overlay, log, tmp_path, n)
    with falls_back_to_a(t, overlay, log, tmp_path / "fallback", n) as s:
        assert guest_state(s) == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": str(n), "BOOT_B_LEFT": "0"}
        offset = log.stat().st_size
        s.reboot(BOOT_TIMEOUT)
        assert bootings(console_since(s, offset)) == [("A", 2, n - 1, 0)], "A did not stay the booted slot"
        booted_slot_good(s, "A")
    assert state.read(overlay, "qcow2") == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": str(n), "BOOT_B_LEFT": "0"}


@pytest.mark.uboot_full
def test_uboot_no_slot_left_gives_the_slots_new_attempts(target: BootTarget, arm64_image: TestImage, layer: Layer,
                                                         tmp_path: Path):  # fmt: skip
    """Every slot out of attempts (A marked bad by RAUC: out of BOOT_ORDER, 0; B's
    last attempt taken by a panic): boot.scr enters its no-slot-left branch, gives
    each slot with a kernel the attempts again, the old order first (B, then A),
    B panics through them and A boots and is marked good."""
    n = attempts(layer)
    disk = panicking_slot(arm64_image.rootfs_ext4, arm64_image.disk, tmp_path)
    state = BootState(layer, tmp_path / "state")
    state.write(disk, {"BOOT_ORDER": "B", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "0"})
    t = dataclasses.replace(target, disk=disk)
    overlay = tmp_path / "overlay.qcow2"
    log = CONSOLE_DIR / "uboot-no-slot-left.log"
    log.unlink(missing_ok=True)
    first, *later = panicking_b_attempts(t, state, overlay, log, tmp_path, n)
    assert NO_SLOT_LEFT in first, first[-3000:]
    assert f"edgecontainers: BOOT_ORDER=B A A={n} B={n}" in first, first[-3000:]
    assert all(NO_SLOT_LEFT not in console for console in later)
    with falls_back_to_a(t, overlay, log, tmp_path / "fallback", n):
        pass
    assert state.read(overlay, "qcow2") == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": str(n), "BOOT_B_LEFT": "0"}


# ---------------------------------------------------------------- the Raspberry Pi's U-Boot
PI_MACHINE = "raspberrypi4-64"  # rpi_arm64 is the U-Boot of the 64-bit Pi 3, 4 and 5 builds
PI_DTB = "broadcom/bcm2837-rpi-3-b.dtb"  # QEMU emulates the Pi 3 B (raspi3b); the firmware passes its DT
# What the Pi firmware would put into /chosen/bootargs from the layer's cmdline.txt
# (console=serial0 resolved to the Pi 3's mini UART, which it makes ttyS0 with 8250.nr_uarts=1).
PI_FIRMWARE_ARGS = "console=ttyS0,115200 8250.nr_uarts=1"


def sfdisk_partuuids(disk: Path) -> list[str]:
    """PARTUUIDs of an MBR disk as the kernel names them (disk identifier-partition number)."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]  # fmt: skip
    ident = table["id"].removeprefix("0x").lower()
    return [f"{ident}-{n:02x}" for n in range(1, len(table["partitions"]) + 1)]


def rpi_uboot(builder: Builder, work: Path) -> Path:
    """u-boot.bin of Debian's u-boot-rpi (rpi_arm64), downloaded once with apt-get."""
    subprocess.run(["dpkg-deb", "-x", str(builder.deb("u-boot-rpi", "arm64")), str(work / "u-boot-rpi")], check=True)
    return work / "u-boot-rpi/usr/lib/u-boot/rpi_arm64/u-boot.bin"


@pytest.mark.uboot_full
def test_uboot_rpi_runs_boot_scr_from_mmc(arm64_image: TestImage, tmp_path: Path):
    """The Pi's own U-Boot (rpi_arm64) on QEMU's raspi3b, started as the Pi firmware
    starts it (the kernel image, with the board's device tree and the firmware's
    command line), on an SD card with the arm64 image's slots and the boot.scr
    rendered for the Pi (mmc 0): it finds boot.scr on mmc 0:1, chooses slot A,
    takes one attempt, writes the state file to the FAT boot partition, loads A's
    kernel from mmc 0:2 and starts it with the firmware's arguments extended.

    How far the emulated Pi gets (measured, QEMU 7.2, Debian's rpi_arm64 U-Boot):
    U-Boot comes up after relocation (its banner goes out before the mini UART
    is set up, so the console starts at "Core:"), numbers the SD host mmc 0,
    runs boot.scr from mmc 0:1 (bootflow mmc@7e202000.bootdev.part_1), chooses A,
    writes the state file, loads A's Image and initrd from mmc 0:2 and booti
    starts the kernel ("Machine model: Raspberry Pi 3 Model B"), whose command
    line is the firmware's then boot.scr's, and which runs the initrd's /init.
    The root filesystem is not mounted (the test image's initramfs has the virtio
    drivers, not the Pi's SD host driver): the test stops at /init."""
    pi = Layer(PI_MACHINE, "podman", True)  # dev: the kernel is not quiet on the console
    n = attempts(pi)
    assert pi.settings["EDGECONTAINERS_UBOOT_DEVTYPE"] == "mmc" and pi.settings["EDGECONTAINERS_UBOOT_DEVNUM"] == "0"
    uboot_bin = rpi_uboot(Builder(), tmp_path)
    dtbs = sorted(arm64_image.rootfs_dir.glob(f"usr/lib/linux-image-*/{PI_DTB}"))
    assert dtbs, f"no {PI_DTB} in the arm64 image's kernel package"
    sd = tmp_path / "sd.img"
    subprocess.run(["cp", "--sparse=always", str(arm64_image.disk), str(sd)], check=True)
    size = sd.stat().st_size
    subprocess.run(["truncate", "-s", str(1 << (size - 1).bit_length()), str(sd)], check=True)  # SD: a power of 2
    scr = tmp_path / "boot.scr"
    rendered = compile_boot_script(pi, scr).decode()
    assert "load mmc 0:1 " in rendered
    boot = partitions(sd)[0]
    subprocess.run(["mcopy", "-o", "-i", f"{sd}@@{boot.start}", str(scr), "::/boot.scr"], check=True)
    qemu = ["qemu-system-aarch64", "-M", "raspi3b", "-accel", "tcg", "-kernel", str(uboot_bin),
            "-dtb", str(dtbs[-1]), "-append", PI_FIRMWARE_ARGS, "-drive", f"if=sd,format=raw,file={sd}",
            "-display", "none", "-monitor", "none", "-serial", "null", "-serial", "stdio", "-no-reboot"]  # fmt: skip
    log = CONSOLE_DIR / "uboot-rpi-raspi3b.log"
    CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
    child = pexpect.spawn(qemu[0], qemu[1:], encoding="utf-8", codec_errors="replace", timeout=600)
    with log.open("w") as f:
        child.logfile_read = f
        try:
            child.expect(r"MMC:\s+mmc@7e202000: 0", timeout=120)  # the SD host is mmc 0
            child.expect(r"edgecontainers: booting slot [^\r\n]*\r*\n", timeout=300)  # lines end in \r\r\n
            choice = child.after
            child.expect(r"Starting kernel \.\.\.|booting slot A failed", timeout=600)
            started = child.after
            child.expect(r"Machine model: [^\r\n]*\r*\n", timeout=120)
            model = child.after.strip()
            child.expect(r"Kernel command line: [^\r\n]*\r*\n", timeout=120)
            cmdline = child.after.split(": ", 1)[1].split()
            child.expect(r"Run /init as init process", timeout=300)
        finally:
            child.terminate(force=True)
    assert bootings(choice) == [("A", 2, n - 1, 0)], choice
    assert "failed" not in started, log.read_text()[-3000:]
    assert "Raspberry Pi 3 Model B" in model, model
    state = BootState(pi, tmp_path / "state")
    assert state.read(sd) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": str(n - 1), "BOOT_B_LEFT": "0"}
    # the firmware's arguments first, then boot.scr's: root= of partition 2, slot A
    uuid = next(u for u in sfdisk_partuuids(sd) if u.endswith("-02"))
    firmware = PI_FIRMWARE_ARGS.split()
    assert cmdline[: len(firmware)] == firmware, cmdline
    assert cmdline[len(firmware) : len(firmware) + 2] == [f"root=PARTUUID={uuid}", "rauc.slot=A"], cmdline
