"""The A/B boot scripts, run by real bootloaders in QEMU.

U-Boot: the boot script (recipes-bsp/edgecontainers-boot/files/boot.cmd.in),
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

GRUB: grub.cfg.in as edgecontainers-grub-cfg renders it, checked with
grub-script-check, and run by GRUB EFI (grub-mkimage with the modules of
oe-core's grub-efi plus GRUB_BUILDIN, as the test image builder makes it)
under OVMF on a GPT disk like edgecontainers-ab-grub.wks; grubenv is read back
with mtools.

Needs mkimage (u-boot-tools) for the compile test; qemu-system-aarch64,
/usr/lib/u-boot/qemu_arm64/u-boot.bin (u-boot-qemu), sfdisk, mkfs.vfat,
mkfs.ext4 and mtools for the U-Boot runs (about 1 s each); OVMF (ovmf),
grub-efi-amd64-bin and qemu-system-x86_64 for the GRUB runs (about 5 s each).
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


# ---------------------------------------------------------------- GRUB
@pytest.mark.skipif(shutil.which("grub-script-check") is None, reason="needs grub-script-check (grub-common)")
def test_grub_cfg_renders_and_parses(tmp_path: Path):
    """The GRUB side of the same A/B rules (grub.cfg.in), as edgecontainers-grub-cfg renders it."""
    rec = Layer("qemux86-64", "podman", False).recipe("edgecontainers-grub-cfg")
    text = rec.render(rec.layer / "recipes-bsp/edgecontainers-boot/files/grub.cfg.in").decode()
    assert not re.search(r"@(?:EDGECONTAINERS|KERNEL)_[A-Z0-9_]+@", text)
    (tmp_path / "grub.cfg").write_text(text)
    proc = subprocess.run(["grub-script-check", str(tmp_path / "grub.cfg")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the no-slot-left branch gives slots with a kernel their attempts back, and saves it
    branch = text[text.index("no slot may boot") : text.index("# One more attempt")]
    assert 'save_env --file "${ec_env}" ORDER A_OK A_TRY B_OK B_TRY' in branch
    assert '[ -f "(${ec_disk},gpt2)/boot/bzImage" ]' in branch and '[ -f "(${ec_disk},gpt3)/boot/bzImage" ]' in branch


# ---------------------------------------------------------------- GRUB in QEMU (OVMF)
OVMF = (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd"))
GRUB_TOOLS = ("qemu-system-x86_64", "grub-mkimage", "sfdisk", "mkfs.vfat", "mkfs.ext4", "mcopy")
needs_qemu_grub = pytest.mark.skipif(
    not all(p.is_file() for p in OVMF)
    or not Path("/usr/lib/grub/x86_64-efi").is_dir()
    or any(shutil.which(t) is None for t in GRUB_TOOLS),
    reason="needs OVMF (ovmf), GRUB's EFI modules (grub-efi-amd64-bin) and " + ", ".join(GRUB_TOOLS),
)
GPT_PARTS = ((1, 16, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), (17, 8, "L"), (25, 8, "L"), (33, 4, "L"))
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def grubenv(**values: str) -> bytes:
    block = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in values.items())
    return (block + "#" * (1024 - len(block))).encode()


def parse_grubenv(blob: bytes) -> dict[str, str]:
    assert len(blob) == 1024 and blob.startswith(b"# GRUB Environment Block\n"), blob[:64]
    lines = blob.decode().rstrip("#").splitlines()[1:]
    return dict(line.split("=", 1) for line in lines if line)


def make_grub_disk(tmp: Path, env: bytes, kernels: tuple[str, ...]) -> Path:
    from edgecontainers.testimage.builder import GRUB_EARLY_CFG, OE_GRUB_BUILDIN

    layer = Layer("qemux86-64", "podman", False)
    rec = layer.recipe("edgecontainers-grub-cfg")
    (tmp / "grub.cfg").write_bytes(rec.render(rec.layer / "recipes-bsp/edgecontainers-boot/files/grub.cfg.in"))
    (tmp / "grubenv").write_bytes(env)
    (tmp / "early.cfg").write_text(GRUB_EARLY_CFG)
    modules = OE_GRUB_BUILDIN.split() + (layer.settings.get("GRUB_BUILDIN") or "").split()
    subprocess.run(
        ["grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/BOOT", "-c", str(tmp / "early.cfg"),
         "-o", str(tmp / "bootx64.efi"), *modules],
        check=True, capture_output=True,
    )  # fmt: skip
    disk = tmp / "grub-disk.img"
    with disk.open("wb") as f:
        f.truncate((GPT_PARTS[-1][0] + GPT_PARTS[-1][1] + 1) * MiB)
    table = "label: gpt\n" + "".join(
        f"start={start * MiB // 512}, size={size * MiB // 512}, type={ptype}\n" for start, size, ptype in GPT_PARTS
    )
    subprocess.run(["sfdisk", "-q", str(disk)], input=table, text=True, check=True, capture_output=True)
    for n, (start, size, _) in enumerate(GPT_PARTS, 1):
        part = tmp / f"gpt{n}.img"
        with part.open("wb") as f:
            f.truncate(size * MiB)
        if n == 1:
            subprocess.run(["mkfs.vfat", "-n", "boot", str(part)], check=True, capture_output=True)
            i = ["-i", str(part)]
            subprocess.run(["mmd", *i, "::EFI", "::EFI/BOOT"], check=True)
            for name in ("bootx64.efi", "grub.cfg", "grubenv"):
                subprocess.run(["mcopy", *i, str(tmp / name), f"::EFI/BOOT/{name}"], check=True)
        else:
            root = tmp / f"groot{n}"
            (root / "boot").mkdir(parents=True)
            if {2: "A", 3: "B"}.get(n) in kernels:
                (root / "boot/bzImage").write_bytes(b"not a kernel")
            subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(part)], check=True, capture_output=True)
        with disk.open("r+b") as f:
            f.seek(start * MiB)
            f.write(part.read_bytes())
    return disk


def grub_boot(tmp: Path, env: bytes, kernels: tuple[str, ...], timeout: float = 120) -> tuple[str, dict[str, str]]:
    """One boot through OVMF and GRUB: the console up to the kernel hand-off
    (which fails on the fake kernel) and grubenv afterwards."""
    disk = make_grub_disk(tmp, env, kernels)
    vars_copy = tmp / "ovmf-vars.fd"
    shutil.copy(OVMF[1], vars_copy)
    argv = [
        "qemu-system-x86_64", "-M", "q35", "-m", "256", "-display", "none", "-serial", "stdio", "-monitor", "none",
        "-nic", "none", "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF[0]}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
        "-drive", f"if=virtio,format=raw,file={disk}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while b"edgecontainers: booting slot" not in out or b"error" not in out.split(b"booting slot", 1)[1]:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(
                    f"GRUB did not boot a slot; console:\n{ANSI.sub(b'', out).decode(errors='replace')}"
                )
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                out += os.read(proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
    finally:
        proc.terminate()
        proc.wait(10)
    esp = f"{disk}@@{GPT_PARTS[0][0] * MiB}"
    subprocess.run(["mcopy", "-n", "-i", esp, "::EFI/BOOT/grubenv", str(tmp / "grubenv.out")], check=True)
    return ANSI.sub(b"", out).decode(errors="replace"), parse_grubenv((tmp / "grubenv.out").read_bytes())


@needs_qemu_grub
def test_grub_counts_the_boot_of_a_good_slot(tmp_path: Path):
    console, env = grub_boot(tmp_path, grubenv(ORDER="A B", A_OK="1", A_TRY="0", B_OK="0", B_TRY="0"), ("A",))
    assert "edgecontainers: booting slot A (attempt 1 of 3)" in console, console
    assert env == {"ORDER": "A B", "A_OK": "1", "A_TRY": "1", "B_OK": "0", "B_TRY": "0"}


@needs_qemu_grub
def test_grub_with_no_slot_left_and_the_other_slot_empty_boots_the_slot_with_a_kernel(tmp_path: Path):
    """What the old health gate's mark-bad of A left when B was never
    installed: every x_OK=0.  GRUB used to reset the x_TRY counters and reboot,
    forever; now A (the one slot with a kernel) may boot again."""
    console, env = grub_boot(tmp_path, grubenv(ORDER="A B", A_OK="0", A_TRY="0", B_OK="0", B_TRY="0"), ("A",))
    assert "no slot may boot (ORDER=A B, A_OK=0 A_TRY=0, B_OK=0 B_TRY=0)" in console, console
    assert "edgecontainers: booting slot A (attempt 1 of 3)" in console, console
    assert env == {"ORDER": "A", "A_OK": "1", "A_TRY": "1", "B_OK": "0", "B_TRY": "0"}
