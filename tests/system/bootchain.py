"""Helpers of the boot-chain system tests (test_uboot.py, test_grub_bootcount.py):
the boot partition of a disk and the bootloader's state on it (the U-Boot state
file, grubenv), boots that end at the guest's first reset, and a slot image
whose kernel panics.

The state file is read back the way RAUC's uboot backend reads it on the
device: fw_printenv (libubootenv-tool) with the layer's own fw_env.config,
only its /boot/firmware directory pointed at a copy of the boot partition's
file taken out of the disk (``qemu-img dd`` for the partition, mtools for the
file)."""

from __future__ import annotations

import contextlib
import json
import re
import struct
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from edgecontainers.qemu.session import Session
from edgecontainers.qemu.vm import GuestError
from edgecontainers.testimage.layer import Layer

BOOTING = re.compile(r"edgecontainers: booting slot (\S+) \(partition (\d+); attempts left A=(\d+) B=(\d+)\)")
NO_SLOT_LEFT = "edgecontainers: no slot has boot attempts left"


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes


def partitions(disk: Path, fmt: str = "raw") -> list[Partition]:
    """The partition table of a disk image (a qcow2 one through qemu-img dd of its first
    MiB, in a sparse file of the disk's size: sfdisk takes a GPT only where it fits)."""
    if fmt != "raw":
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)], capture_output=True,
                                         text=True, check=True).stdout)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            head = Path(tmp) / "head.img"
            subprocess.run(["qemu-img", "dd", "-f", fmt, "-O", "raw", "bs=1M", "count=1", f"if={disk}",
                            f"of={head}"], check=True, capture_output=True)  # fmt: skip
            with head.open("r+b") as f:
                f.truncate(info["virtual-size"])
            return partitions(head)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]  # fmt: skip
    sector = table.get("sectorsize", 512)
    return [Partition(n, p["start"] * sector, p["size"] * sector) for n, p in enumerate(table["partitions"], 1)]


class BootState:
    """The boot partition's state file of one disk, through the layer's fw_env.config."""

    def __init__(self, layer: Layer, work: Path) -> None:
        self.layer = layer
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        rec = layer.recipe("u-boot")
        (entry,) = [e for e in rec.edge_files() if e.dest == "/etc/fw_env.config"]
        self.fw_env_config = rec.render(entry).decode()
        self.name = layer.settings["EDGECONTAINERS_UBOOT_STATE_FILE"]
        firmware = self.work / "firmware"
        firmware.mkdir(exist_ok=True)
        # the layer's configuration, its /boot/firmware being our copy of the boot partition's file
        if "/boot/firmware/" not in self.fw_env_config:
            raise AssertionError(f"fw_env.config no longer names /boot/firmware:\n{self.fw_env_config}")
        self.config = self.work / "fw_env.config"
        self.config.write_text(self.fw_env_config.replace("/boot/firmware/", f"{firmware}/"))
        self.local = firmware / self.name

    def _boot_partition(self, disk: Path, fmt: str) -> tuple[Path, Partition]:
        part = partitions(disk, fmt)[0]
        img = self.work / "boot-partition.img"
        img.unlink(missing_ok=True)
        mib = 1024 * 1024
        assert part.start % mib == 0 and part.size % mib == 0, part
        subprocess.run(["qemu-img", "dd", "-f", fmt, "-O", "raw", "bs=1M", f"skip={part.start // mib}",
                        f"count={part.size // mib}", f"if={disk}", f"of={img}"], check=True,
                       capture_output=True)  # fmt: skip
        return img, part

    def files(self, disk: Path, fmt: str = "raw") -> list[str]:
        img, _ = self._boot_partition(disk, fmt)
        out = subprocess.run(["mdir", "-b", "-i", str(img), "::/"], capture_output=True, text=True, check=True)
        return sorted(Path(line.strip()).name for line in out.stdout.splitlines() if line.strip())

    def read(self, disk: Path, fmt: str = "raw") -> dict[str, str]:
        """fw_printenv's view of the state file on the disk ({} when there is none)."""
        img, _ = self._boot_partition(disk, fmt)
        self.local.unlink(missing_ok=True)
        got = subprocess.run(["mcopy", "-n", "-i", str(img), f"::/{self.name}", str(self.local)],
                             capture_output=True, text=True, check=False)  # fmt: skip
        if got.returncode != 0:
            return {}
        size = int(self.fw_env_config.split()[-1], 0)
        assert self.local.stat().st_size == size, f"{self.name} is {self.local.stat().st_size} bytes, not {size}"
        proc = subprocess.run(["fw_printenv", "-c", str(self.config)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"fw_printenv refuses {self.name}: {proc.stderr}"
        assert "Bad CRC" not in proc.stderr, f"fw_printenv: {proc.stderr}"
        return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)

    def write(self, disk: Path, values: dict[str, str]) -> None:
        """Replace the state file of a raw disk with one holding ``values``, written by
        fw_setenv through the layer's fw_env.config (as RAUC's uboot backend writes it)."""
        self.local.unlink(missing_ok=True)
        size = int(self.fw_env_config.split()[-1], 0)
        # an empty environment (CRC32 of the data, then no variables) for fw_setenv to add to:
        # on a file with a bad CRC it would need a default environment file
        empty = b"\0" * (size - 4)
        self.local.write_bytes(struct.pack("<I", zlib.crc32(empty)) + empty)
        for name, value in values.items():
            proc = subprocess.run(["fw_setenv", "-c", str(self.config), name, value], capture_output=True,
                                  text=True, check=False)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
        part = partitions(disk)[0]
        subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{part.start}", str(self.local), f"::/{self.name}"],
                       check=True, capture_output=True)  # fmt: skip
        assert self.read(disk) == values


class GrubEnv:
    """grubenv on the ESP of a disk, read and written with grub-editenv (the tool
    RAUC's grub backend runs)."""

    PATH = "EFI/BOOT/grubenv"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.local = work / "grubenv"

    def read(self, disk: Path, fmt: str = "raw") -> dict[str, str]:
        part = partitions(disk, fmt)[0]
        img = self.work / "esp.img"
        img.unlink(missing_ok=True)
        mib = 1024 * 1024
        subprocess.run(["qemu-img", "dd", "-f", fmt, "-O", "raw", "bs=1M", f"skip={part.start // mib}",
                        f"count={part.size // mib}", f"if={disk}", f"of={img}"], check=True,
                       capture_output=True)  # fmt: skip
        self.local.unlink(missing_ok=True)
        subprocess.run(["mcopy", "-n", "-i", str(img), f"::/{self.PATH}", str(self.local)], check=True)
        assert self.local.stat().st_size == 1024, "grubenv is not a 1024-byte block"
        out = subprocess.run(["grub-editenv", str(self.local), "list"], capture_output=True, text=True, check=True)
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    def write(self, disk: Path, values: dict[str, str]) -> None:
        """Set ``values`` in the raw disk's grubenv (the other variables stay)."""
        self.read(disk)
        subprocess.run(["grub-editenv", str(self.local), "set", *(f"{k}={v}" for k, v in values.items())],
                       check=True)  # fmt: skip
        part = partitions(disk)[0]
        subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{part.start}", str(self.local), f"::/{self.PATH}"],
                       check=True, capture_output=True)  # fmt: skip
        got = self.read(disk)
        assert {k: got.get(k) for k in values} == values, got


def panicking_slot(rootfs_ext4: Path, disk: Path, work: Path) -> Path:
    """A raw copy of ``disk`` whose partition 3 (slot B) holds ``rootfs_ext4`` with a
    /boot/initrd that makes the kernel panic every boot (before the root is mounted,
    so the health gate is never reached)."""
    from edgecontainers.testimage.bundles import derive_rootfs

    work.mkdir(parents=True, exist_ok=True)
    out = work / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(disk), str(out)], check=True)
    slot_b = derive_rootfs(rootfs_ext4, work / "rootfsB.ext4", {"/boot/initrd": (PANICKING_INITRD, 0o644)})
    part = partitions(out)[2]
    assert slot_b.stat().st_size <= part.size
    mib = 1024 * 1024
    subprocess.run(["dd", f"if={slot_b}", f"of={out}", "bs=1M", f"seek={part.start // mib}", "conv=notrunc,sparse",
                    "status=none"], check=True)  # fmt: skip
    slot_b.unlink()
    return out


class NoRebootSession(Session):
    """A boot that ends at the guest's first reset (QEMU -no-reboot): one boot attempt."""

    def vm_config(self):
        cfg = super().vm_config()
        cfg.no_reboot = True
        return cfg


def shutdown(session: Session, timeout: float = 180) -> None:
    """``systemctl poweroff`` in the guest and wait until QEMU exits.  (Session.poweroff's
    ACPI power button does not reach the arm64 guest booted with a device tree: QEMU
    was killed after its 120 s.)"""
    assert session.vm is not None
    session.tee.note("poweroff (systemctl poweroff)")
    with contextlib.suppress(GuestError):
        session.run("systemctl poweroff", timeout=30)
    if not session.wait_exit(timeout):
        session.tee.note(f"the guest did not power off within {timeout:.0f}s")
    session.poweroff(10)


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


def log_offset(session: Session) -> int:
    assert session.log_path is not None
    session.tee.flush()
    return session.log_path.stat().st_size if session.log_path.exists() else 0


def wait_log(session: Session, offset: int, pattern: re.Pattern[str], timeout: float) -> str:
    """The session's console log from ``offset`` once it shows ``pattern`` (the log is
    written by the console reader while the harness waits)."""
    assert session.log_path is not None
    deadline = time.monotonic() + timeout
    while True:
        session.tee.flush()
        with session.log_path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        if pattern.search(text):
            return text
        if time.monotonic() > deadline or session.vm is None or not session.vm.alive:
            raise AssertionError(f"the console did not show {pattern.pattern!r} in {timeout:.0f}s:\n{text[-3000:]}")
        time.sleep(1)


def one_attempt(session: NoRebootSession, timeout: float = 600) -> str:
    """Start the session and wait until QEMU exits at the guest's reset; the console of that attempt."""
    log = session.log_path
    assert log is not None
    offset = log.stat().st_size if log.exists() else 0
    session.start()
    assert session.vm is not None
    started = time.monotonic()
    if not session.wait_exit(timeout):
        session.close()
        raise AssertionError(f"the boot attempt did not end in a reset within {timeout:.0f}s:\n{session.tee.tail(40)}")
    session.tee.note(f"attempt ended after {time.monotonic() - started:.1f}s")
    session.tee.flush()
    with log.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def bootings(console: str) -> list[tuple[str, int, int, int]]:
    """(slot, partition, attempts left A, B) of every boot.scr choice on the console."""
    return [(m[0], int(m[1]), int(m[2]), int(m[3])) for m in BOOTING.findall(console)]


def cpio_newc(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An initramfs (cpio newc) holding ``files`` (path -> (content, mode))."""
    out = b""
    for n, (name, (data, mode)) in enumerate([*files.items(), ("TRAILER!!!", (b"", 0))], 1):
        encoded = name.encode() + b"\0"
        fields = [n if data or mode else 0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        out += header + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return out


# An initramfs whose /init cannot run and which has no other init: the kernel
# panics ("No working init found") before the root filesystem is mounted, every
# boot, as a broken update's kernel or initramfs would.
PANICKING_INITRD = cpio_newc({"init": (b"#!/nonexistent/interpreter\n", 0o100755)})
