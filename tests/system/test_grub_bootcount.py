"""Boot counting on GRUB, executed: the x86-64 test image booted through OVMF and
GRUB with the layer's grub.cfg, the grubenv set as RAUC's grub backend leaves it,
and read back from the disk with grub-editenv after every boot.

- exhaustion: slot B activated as RAUC's grub backend activates it (ORDER "B A",
  B_OK=1, B_TRY=0) holding a kernel that panics every boot.  Each boot takes one
  of B's attempts; after the last one GRUB boots A, which the health gate keeps
  good.  The same test as the U-Boot one in test_uboot.py.
- no slot may boot: both slots marked bad (x_OK=0, x_TRY=0); grub.cfg gives the
  slots with a kernel (A; B of the fresh image is empty) their attempts back and
  boots A, which the health gate marks good."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
from bootchain import GrubEnv, NoRebootSession, one_attempt, panicking_slot, wait_log
from conftest import CONSOLE_DIR

from edgecontainers.qemu.qemuboot import find_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.testimage.builder import ImageSpec, TestImage
from edgecontainers.testimage.layer import Layer

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 900
BOOTING = re.compile(r"edgecontainers: booting slot (\S+) \(attempt (\d+) of (\d+)\)")
NO_SLOT = "edgecontainers: no slot may boot"
KEYS = ("ORDER", "A_OK", "A_TRY", "B_OK", "B_TRY")


def grub_bootings(console: str) -> list[tuple[str, int, int]]:
    """(slot, attempt, of) of every grub.cfg choice on the console."""
    return [(m[0], int(m[1]), int(m[2])) for m in BOOTING.findall(console)]


@pytest.fixture
def image(build_image, request) -> TestImage:
    if request.config.getoption("image") or request.config.getoption("deploy_dir"):
        pytest.skip("changes the Debian test image's grubenv and slot B; not run against a kas build")
    return build_image(ImageSpec(machine="qemux86-64", engine="podman", variant="production"))


@pytest.fixture
def attempts() -> int:
    return int(Layer("qemux86-64", "podman", False).settings["EDGECONTAINERS_BOOT_ATTEMPTS"])


def state(env: GrubEnv, disk: Path, fmt: str = "qcow2") -> dict[str, str | None]:
    got = env.read(disk, fmt)
    return {k: got.get(k) for k in KEYS}


def boot_a_good(t: BootTarget, log: Path, overlay: Path, work: Path, n: int, *, expect_no_slot: bool) -> str:
    """Boot (not limited to one attempt) until ready: GRUB chooses A, attempt 1 of n,
    the health gate succeeds; the console of that boot."""
    offset = log.stat().st_size if log.exists() else 0
    with Session(t, boot="grub", log_path=log, disk=overlay, workdir=work) as s:
        choice = wait_log(s, offset, BOOTING, 600)
        assert grub_bootings(choice) == [("A", 1, n)], choice[-3000:]
        assert (NO_SLOT in choice) == expect_no_slot, choice[-3000:]
        s.wait_ready(BOOT_TIMEOUT)
        s.tee.flush()
        with log.open("rb") as f:
            f.seek(offset)
            console = f.read().decode(errors="replace")
        assert grub_bootings(console) == [("A", 1, n)], console[-3000:]
        assert "rauc.slot=A" in s.run("cat /proc/cmdline", check=True).output.split()
        props = s.run("systemctl show -p ActiveState -p Result edgecontainers-health.service", check=True).output
        assert dict(line.split("=", 1) for line in props.split()) == {"ActiveState": "active", "Result": "success"}
        s.poweroff(120)
    return console


def test_grub_boot_count_exhaustion_falls_back_to_slot_a(image: TestImage, attempts: int, tmp_path: Path):
    n = attempts
    target = BootTarget.from_qemuboot(find_qemuboot(image.qemuboot))
    disk = panicking_slot(image.rootfs_ext4, image.disk, tmp_path)
    env = GrubEnv(tmp_path / "grubenv")
    # what `rauc status mark-active other` (RAUC's grub backend) leaves after an install of B
    env.write(disk, {"ORDER": "B A", "A_OK": "1", "A_TRY": "0", "B_OK": "1", "B_TRY": "0"})
    t = dataclasses.replace(target, disk=disk)
    overlay = tmp_path / "overlay.qcow2"
    CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
    log = CONSOLE_DIR / "grub-exhaustion.log"
    log.unlink(missing_ok=True)
    for attempt in range(1, n + 1):
        s = NoRebootSession(t, boot="grub", log_path=log, disk=overlay, workdir=tmp_path / f"attempt-{attempt}")
        console = one_attempt(s)
        s.close()
        assert grub_bootings(console) == [("B", attempt, n)], console[-3000:]
        assert "Kernel panic - not syncing" in console, console[-3000:]
        assert state(env, overlay) == {"ORDER": "B A", "A_OK": "1", "A_TRY": "0", "B_OK": "1", "B_TRY": str(attempt)}
    boot_a_good(t, log, overlay, tmp_path / "fallback", n, expect_no_slot=False)
    # A marked good (A_TRY back to 0); B given up with all its attempts used, ORDER untouched
    assert state(env, overlay) == {"ORDER": "B A", "A_OK": "1", "A_TRY": "0", "B_OK": "1", "B_TRY": str(n)}


def test_grub_no_slot_left_gives_the_slots_new_attempts(image: TestImage, attempts: int, tmp_path: Path):
    n = attempts
    target = BootTarget.from_qemuboot(find_qemuboot(image.qemuboot))
    disk = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(image.disk), str(disk)], check=True)
    env = GrubEnv(tmp_path / "grubenv")
    # both slots marked bad (RAUC's grub backend: x_OK=0, x_TRY=0)
    env.write(disk, {"ORDER": "A B", "A_OK": "0", "A_TRY": "0", "B_OK": "0", "B_TRY": "0"})
    t = dataclasses.replace(target, disk=disk)
    CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
    log = CONSOLE_DIR / "grub-no-slot-left.log"
    log.unlink(missing_ok=True)
    overlay = tmp_path / "overlay.qcow2"
    console = boot_a_good(t, log, overlay, tmp_path / "session", n, expect_no_slot=True)
    assert f"{NO_SLOT} (ORDER=A B, A_OK=0 A_TRY=0, B_OK=0 B_TRY=0)" in console, console[-3000:]
    # B of the fresh image has no kernel: it stays out
    assert "edgecontainers: ORDER=A A_OK=1 B_OK=0" in console, console[-3000:]
    assert state(env, overlay) == {"ORDER": "A", "A_OK": "1", "A_TRY": "0", "B_OK": "0", "B_TRY": "0"}
