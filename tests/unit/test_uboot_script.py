"""The U-Boot A/B boot script (recipes-bsp/edgecontainers-boot/files/boot.cmd.in),
rendered as edgecontainers-uboot-script renders it, compiled with ``mkimage -T
script`` as its do_compile does, and run by a real U-Boot: Debian's
u-boot-qemu build for QEMU's arm64 ``virt`` machine (the same U-Boot
configuration family as the layer's qemuarm64 target), on a disk laid out like
edgecontainers-ab-uboot.wks (MBR: 1 boot vfat with boot.scr and the state file,
2 rootfsA, 3 rootfsB, 4 data).

What runs is the layer's script with one change: the final ``booti`` (and
the reset after it) is replaced by an ``echo`` of what it would boot, so that one U-Boot
session can play several boots in a row (each one reads and writes the state
file) and no kernel is needed.  The state file is read back with mtools and
parsed as fw_printenv does (CRC32 of the data, then NUL-separated NAME=VALUE).

Needs mkimage (u-boot-tools) for the compile test; qemu-system-aarch64,
/usr/lib/u-boot/qemu_arm64/u-boot.bin (u-boot-qemu), sfdisk, mkfs.vfat,
mkfs.ext4 and mtools for the QEMU tests (each about 5 s).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgecontainers.testimage.layer import Layer

UBOOT_BIN = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
STATE_FILE = "edgeboot.env"
STATE_SIZE = 0x4000
BOOT_LINE = "echo EC-TEST-BOOTI ${kernel_addr_r} ${ec_initrd} ${fdt_addr}\nprintenv bootargs\n"
MiB = 1024 * 1024
# partition offsets of the test disk (MiB): boot, rootfsA, rootfsB, data
PARTS = ((1, 16, "0c"), (17, 8, "83"), (25, 8, "83"), (33, 4, "83"))
DISK_SIGNATURE = "0x5eedb007"


def _render(machine: str = "qemuarm64") -> str:
    rec = Layer(machine, "podman", False).recipe("edgecontainers-uboot-script")
    return rec.render(rec.layer / "recipes-bsp/edgecontainers-boot/files/boot.cmd.in").decode()


def _mkimage(cmd: Path, scr: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-n", "edgecontainers A/B boot", "-d", cmd, scr],
        capture_output=True,
        text=True,
        check=False,
    )


needs_mkimage = pytest.mark.skipif(shutil.which("mkimage") is None, reason="needs mkimage (u-boot-tools)")


@needs_mkimage
@pytest.mark.parametrize("machine", ["qemuarm64", "raspberrypi4-64", "raspberrypi5"])
def test_boot_script_renders_and_compiles(tmp_path: Path, machine: str):
    text = _render(machine)
    assert not re.search(r"@(?:EDGECONTAINERS|KERNEL)_[A-Z0-9_]+@", text)
    (tmp_path / "boot.cmd").write_text(text)
    proc = _mkimage(tmp_path / "boot.cmd", tmp_path / "boot.scr")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Script" in proc.stdout


# ---------------------------------------------------------------- U-Boot in QEMU
TOOLS = ("qemu-system-aarch64", "mkimage", "sfdisk", "mkfs.vfat", "mkfs.ext4", "mcopy")
needs_qemu_uboot = pytest.mark.skipif(
    not UBOOT_BIN.is_file() or any(shutil.which(t) is None for t in TOOLS),
    reason=f"needs {UBOOT_BIN} (u-boot-qemu) and {', '.join(TOOLS)}",
)


def state_blob(**values: str) -> bytes:
    """An environment blob as fw_setenv (non-redundant) writes it."""
    data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in values.items()) + b"\0"
    data = data.ljust(STATE_SIZE - 4, b"\0")
    return struct.pack("<I", zlib.crc32(data)) + data


def parse_state(blob: bytes) -> dict[str, str]:
    """fw_printenv's reading: CRC32 over the data, then NAME=VALUE\\0 ... \\0\\0."""
    assert len(blob) == STATE_SIZE, f"state file of {len(blob)} bytes, want {STATE_SIZE}"
    (crc,) = struct.unpack("<I", blob[:4])
    data = blob[4:]
    assert zlib.crc32(data) == crc, "bad CRC: fw_printenv would refuse the state file"
    values = {}
    for item in data.split(b"\0\0", 1)[0].split(b"\0"):
        if item:
            name, _, value = item.decode().partition("=")
            values[name] = value
    return values


@dataclass
class Disk:
    path: Path
    tmp: Path

    def _offset(self, part: int) -> str:
        return f"{self.path}@@{PARTS[part - 1][0] * MiB}"

    def put_state(self, blob: bytes) -> None:
        src = self.tmp / "state.in"
        src.write_bytes(blob)
        subprocess.run(["mcopy", "-o", "-i", self._offset(1), str(src), f"::{STATE_FILE}"], check=True)

    def state(self) -> dict[str, str]:
        out = self.tmp / "state.out"
        out.unlink(missing_ok=True)
        subprocess.run(["mcopy", "-n", "-i", self._offset(1), f"::{STATE_FILE}", str(out)], check=True)
        return parse_state(out.read_bytes())


def make_disk(tmp: Path, script: str, *, kernels: tuple[str, ...] = ("A",), state: bytes | None = None) -> Disk:
    """The test disk: boot.scr (and the state file, if given) on the boot
    partition, /boot/Image in the slots named in ``kernels``."""
    disk = tmp / "disk.img"
    with disk.open("wb") as f:
        f.truncate((PARTS[-1][0] + PARTS[-1][1] + 1) * MiB)
    table = f"label: dos\nlabel-id: {DISK_SIGNATURE}\n" + "".join(
        f"start={start * MiB // 512}, size={size * MiB // 512}, type={ptype}{', bootable' if n == 0 else ''}\n"
        for n, (start, size, ptype) in enumerate(PARTS)
    )
    subprocess.run(["sfdisk", "-q", str(disk)], input=table, text=True, check=True, capture_output=True)
    (tmp / "boot.cmd").write_text(script)
    proc = _mkimage(tmp / "boot.cmd", tmp / "boot.scr")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for n, (start, size, _) in enumerate(PARTS, 1):
        part = tmp / f"part{n}.img"
        with part.open("wb") as f:
            f.truncate(size * MiB)
        if n == 1:
            subprocess.run(["mkfs.vfat", "-n", "boot", str(part)], check=True, capture_output=True)
            subprocess.run(["mcopy", "-i", str(part), str(tmp / "boot.scr"), "::boot.scr"], check=True)
        else:
            root = tmp / f"root{n}"
            (root / "boot").mkdir(parents=True)
            slot = {2: "A", 3: "B"}.get(n)
            if slot in kernels:
                (root / "boot/Image").write_bytes(b"not a kernel, slot " + slot.encode())
            subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(part)], check=True, capture_output=True)
        with disk.open("r+b") as f:
            f.seek(start * MiB)
            f.write(part.read_bytes())
    result = Disk(disk, tmp)
    if state is not None:
        result.put_state(state)
    return result


@dataclass
class UBoot:
    """A U-Boot session in QEMU on the serial console (stdin/stdout)."""

    disk: Disk
    proc: subprocess.Popen[bytes] = field(init=False)
    out: bytes = b""

    def __post_init__(self) -> None:
        machine = ["-M", "virt", "-cpu", "cortex-a57", "-m", "512"]
        qemu = ["qemu-system-aarch64", *machine, "-nographic", "-monitor", "none", "-nic", "none"]
        drive = f"if=none,id=d0,format=raw,file={self.disk.path}"
        self.proc = subprocess.Popen(
            [*qemu, "-bios", str(UBOOT_BIN), "-drive", drive, "-device", "virtio-blk-device,drive=d0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.expect("Hit any key to stop autoboot")
        self.send("")
        self.expect("=> ")

    def expect(self, text: str, timeout: float = 30) -> str:
        """Read the console until ``text``; what came before it (since the last expect)."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"U-Boot did not print {text!r}; console:\n{self.out.decode(errors='replace')}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if ready:
                self.out += os.read(self.proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
        before, _, self.out = self.out.partition(text.encode())
        return before.decode(errors="replace")

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def command(self, line: str, timeout: float = 30) -> str:
        self.send(line)
        self.expect(line)
        return self.expect("=> ", timeout)

    def boot(self) -> str:
        """One boot: what distro boot does with boot.scr on virtio 0:1."""
        return self.command("load virtio 0:1 ${scriptaddr} boot.scr && source ${scriptaddr}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _script() -> str:
    text = _render("qemuarm64")
    boot = re.findall(r"^booti .*$", text, flags=re.M)
    assert boot == ["booti ${kernel_addr_r} ${ec_initrd} ${fdt_addr}"], boot
    return text[: text.index(boot[0])] + BOOT_LINE


def _booted(console: str) -> tuple[str, str]:
    """(slot, bootargs) of the boot the console shows."""
    assert "EC-TEST-BOOTI" in console, f"the script did not reach booti:\n{console}"
    m = re.search(r"edgecontainers: booting slot (\S+) \(", console)
    assert m, console
    args = re.search(r"^bootargs=(.*?)\r?$", console, flags=re.M)
    assert args, console
    return m.group(1), args.group(1)


@needs_qemu_uboot
def test_first_boot_counts_an_attempt_of_slot_a_in_the_state_file(tmp_path: Path):
    session = UBoot(make_disk(tmp_path, _script()))  # no state file yet, as after flashing
    try:
        slot, args = _booted(session.boot())
        assert slot == "A"
        assert session.disk.state() == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}
        assert re.fullmatch(rf"root=PARTUUID={DISK_SIGNATURE[2:]}-02 rauc\.slot=A rootwait .*", args.strip()), args
        assert "console=ttyAMA0,115200" in args
        slot, _ = _booted(session.boot())
        assert slot == "A" and session.disk.state()["BOOT_A_LEFT"] == "1"
    finally:
        session.close()


@needs_qemu_uboot
def test_a_slot_out_of_attempts_falls_back_to_the_other(tmp_path: Path):
    state = state_blob(BOOT_ORDER="B A", BOOT_A_LEFT="3", BOOT_B_LEFT="1")
    session = UBoot(make_disk(tmp_path, _script(), kernels=("A", "B"), state=state))
    try:
        assert _booted(session.boot())[0] == "B"
        assert session.disk.state() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
        slot, args = _booted(session.boot())
        assert slot == "A" and "root=PARTUUID=5eedb007-02 rauc.slot=A" in args
        assert session.disk.state() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}
    finally:
        session.close()


@needs_qemu_uboot
def test_no_slot_left_with_the_other_slot_empty_boots_the_slot_with_a_kernel(tmp_path: Path):
    """What RAUC's mark-bad of A leaves when B was never installed: BOOT_ORDER
    "B", no attempts anywhere.  The script must not give the empty slot B
    attempts and loop on it: A (the one slot with a kernel) is back."""
    state = state_blob(BOOT_ORDER="B", BOOT_A_LEFT="0", BOOT_B_LEFT="0")
    session = UBoot(make_disk(tmp_path, _script(), kernels=("A",), state=state))
    try:
        console = session.boot()
        assert "no slot has boot attempts left (BOOT_ORDER=B, A=0, B=0)" in console, console
        assert _booted(console)[0] == "A"
        assert session.disk.state() == {"BOOT_ORDER": "A", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}
        for left in ("1", "0"):
            assert _booted(session.boot())[0] == "A"
            assert session.disk.state()["BOOT_A_LEFT"] == left
        assert _booted(session.boot())[0] == "A", "A got no new attempts when it ran out again"
    finally:
        session.close()


@needs_qemu_uboot
def test_no_slot_left_keeps_the_old_order_of_the_slots_with_a_kernel(tmp_path: Path):
    state = state_blob(BOOT_ORDER="", BOOT_A_LEFT="0", BOOT_B_LEFT="0")  # both marked bad
    session = UBoot(make_disk(tmp_path, _script(), kernels=("A", "B"), state=state))
    try:
        assert _booted(session.boot())[0] == "A"  # empty BOOT_ORDER reads as "A B"
        assert session.disk.state() == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "3"}
    finally:
        session.close()
    state = state_blob(BOOT_ORDER="B A", BOOT_A_LEFT="0", BOOT_B_LEFT="0")
    (tmp_path / "again").mkdir()
    session = UBoot(make_disk(tmp_path / "again", _script(), kernels=("A", "B"), state=state))
    try:
        assert _booted(session.boot())[0] == "B"
        assert session.disk.state() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2"}
    finally:
        session.close()


@needs_qemu_uboot
def test_bootargs_extend_the_firmware_command_line(tmp_path: Path):
    """The Raspberry Pi firmware hands U-Boot a device tree whose
    /chosen/bootargs holds cmdline.txt (serial0 resolved) and its own
    arguments (8250.nr_uarts=1 enables the Pi 4's mini UART).  They must reach
    the kernel, before ours.  Here the firmware's part is put into QEMU's
    device tree by hand."""
    firmware = "coherent_pool=1M 8250.nr_uarts=1 console=ttyS0,115200 net.ifnames=0"
    session = UBoot(make_disk(tmp_path, _script()))
    try:
        session.command("fdt addr ${fdt_addr} && fdt resize 1024")
        session.command(f'fdt set /chosen bootargs "{firmware}"')
        slot, args = _booted(session.boot())
        assert slot == "A"
        assert args.startswith(f"{firmware} root=PARTUUID={DISK_SIGNATURE[2:]}-02 rauc.slot=A "), args
    finally:
        session.close()


@needs_qemu_uboot
def test_a_corrupt_state_file_counts_as_a_first_boot(tmp_path: Path):
    blob = bytearray(state_blob(BOOT_ORDER="B A", BOOT_A_LEFT="3", BOOT_B_LEFT="3"))
    blob[10] ^= 0xFF  # what a write cut short leaves: the checksum no longer matches
    session = UBoot(make_disk(tmp_path, _script(), kernels=("A", "B"), state=bytes(blob)))
    try:
        assert _booted(session.boot())[0] == "A"
        assert session.disk.state() == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0"}
    finally:
        session.close()
