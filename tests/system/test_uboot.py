"""The U-Boot A/B boot chain, executed: the arm64 test image (qemuarm64: Debian
trixie arm64 packages plus the layer's files, the layout of
edgecontainers-ab-uboot.wks) booted through a real U-Boot (Debian's u-boot-qemu,
qemu_arm64, ``-bios u-boot.bin``) that runs the layer's boot.scr from the boot
partition, and the Raspberry Pi's own U-Boot (Debian's u-boot-rpi, rpi_arm64)
on QEMU's raspi3b with the boot.scr rendered for the Pi.

Every boot here goes through U-Boot; no test passes a kernel to QEMU.  The
state file is read back from the disk after the boots with fw_printenv and
the layer's fw_env.config (uboot.py).

Slow: the arm64 image is built under user-mode emulation and every boot runs
under TCG (docs/testing.md has the measured times).  Run with
``-m uboot`` (scripts/run-tests does not run them by default)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from bootchain import (
    BOOTING,
    BootState,
    bootings,
    shutdown,
    wait_log,
)
from conftest import CONSOLE_DIR, host_cannot

from edgecontainers.qemu.qemuboot import find_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.testimage.builder import Builder, ImageSpec, TestImage, check_host
from edgecontainers.testimage.layer import Layer

pytestmark = [pytest.mark.qemu, pytest.mark.uboot]

MACHINE = "qemuarm64"
BOOT_TIMEOUT = 1500
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def arm64_image(request: pytest.FixtureRequest) -> TestImage:
    if request.config.getoption("image") or request.config.getoption("deploy_dir"):
        pytest.skip("builds the arm64 Debian test image; not run against a kas build")
    missing = check_host(MACHINE)
    if missing:
        host_cannot(f"cannot build the {MACHINE} test image here: missing " + ", ".join(missing))
    return Builder().build(ImageSpec(machine=MACHINE, engine="podman", variant="production"))


@pytest.fixture(scope="module")
def layer() -> Layer:
    return Layer(MACHINE, "podman", False)


@pytest.fixture(scope="module")
def target(arm64_image: TestImage) -> BootTarget:
    t = BootTarget.from_qemuboot(find_qemuboot(arm64_image.qemuboot))
    assert "uboot" in t.boot_paths and t.bios is not None, t
    return t


def attempts(layer: Layer) -> int:
    return int(layer.settings["EDGECONTAINERS_BOOT_ATTEMPTS"])


def console_since(session: Session, offset: int) -> str:
    session.tee.flush()
    assert session.log_path is not None
    with session.log_path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def slot_of_root(s: Session) -> tuple[str, int]:
    """(rauc.slot=, partition number of root=PARTUUID=) of the running kernel."""
    cmdline = s.run("cat /proc/cmdline", check=True).output.split()
    slot = next(w.split("=", 1)[1] for w in cmdline if w.startswith("rauc.slot="))
    root = next(w for w in cmdline if w.startswith("root="))
    assert root.startswith("root=PARTUUID="), f"boot.scr should pass the slot by PARTUUID: {root}"
    dev = s.run(f"readlink -f /dev/disk/by-partuuid/{root.split('=', 2)[2]}", check=True).output.strip()
    m = re.fullmatch(r"/dev/vda(\d+)", dev)
    assert m, f"{root} is {dev}"
    return slot, int(m.group(1))


def booted_slot_good(s: Session, slot: str) -> None:
    props = s.run("systemctl show -p ActiveState -p Result edgecontainers-health.service", check=True).output
    assert dict(line.split("=", 1) for line in props.split()) == {"ActiveState": "active", "Result": "success"}, props
    status = json.loads(s.run("rauc status --detailed --output-format=json", check=True).output)
    assert status.get("booted") == slot, status
    slots = {name: info for entry in status["slots"] for name, info in entry.items()}
    info = next(i for i in slots.values() if i.get("bootname") == slot)
    assert info.get("boot_status") == "good", info


def guest_state(s: Session) -> dict[str, str]:
    """The state file as RAUC's uboot backend reads it on the device (fw_printenv, /etc/fw_env.config)."""
    out = s.run("fw_printenv BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT", check=True).output
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


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


def test_uboot_boots_slot_a_from_boot_scr(target: BootTarget, layer: Layer, tmp_path: Path):
    CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
    assert_uboot_boots_slot_a(target, layer, tmp_path, CONSOLE_DIR / "uboot-slot-a.log")
