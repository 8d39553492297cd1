"""What a block device is, what uses it, and whether ``edgectl flash`` may write to it.

Everything here reads the kernel's own view (``/sys`` and ``/proc``) and opens
devices read-only at most: :func:`check_target` runs every safety check and
never opens anything for writing, which is what ``flash --dry-run`` relies on.
Mounts are matched by device number (``major:minor``), so ``/dev/root``,
``/dev/mapper/...`` and symlinks under ``/dev/disk/`` are all recognised.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, Refused
from .units import human_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SystemPaths:
    """Where the kernel's view is read from; tests point these at a fake tree."""

    sys: Path = Path("/sys")
    mountinfo: Path = Path("/proc/self/mountinfo")
    swaps: Path = Path("/proc/swaps")


@dataclass(frozen=True)
class Mount:
    devno: str  # "major:minor" of the mounted device
    source: str  # as the kernel shows it, e.g. /dev/sdb1 or /dev/root
    mountpoint: str


@dataclass
class Disk:
    """A whole-disk block device that passed (or is being put through) the checks."""

    given: Path  # what the user typed
    node: Path  # the device node it resolves to
    name: str  # kernel name, e.g. sdb, mmcblk0, loop3
    devno: str
    size: int = 0
    removable: bool = False
    removable_reason: str = ""  # "removable media", "USB", "SD card"
    read_only: bool = False
    model: str = ""
    partitions: list[str] = field(default_factory=list)

    def describe(self) -> str:
        bits = [human_size(self.size)]
        if self.model:
            bits.insert(0, self.model)
        bits.append(self.removable_reason or "not removable")
        return f"{self.node} ({', '.join(bits)})"


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def _unescape_mount(field_text: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as \040 etc."""
    out, i = [], 0
    while i < len(field_text):
        code = field_text[i + 1 : i + 4]
        if field_text[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field_text[i])
            i += 1
    return "".join(out)


class Inspector:
    """Reads block devices, mounts and swaps from sysfs and procfs."""

    def __init__(self, paths: SystemPaths | None = None) -> None:
        self.paths = paths or SystemPaths()

    # -- sysfs -----------------------------------------------------------
    def block_dir(self, name: str) -> Path:
        return self.paths.sys / "class" / "block" / name

    def name_of_devno(self, devno: str) -> str | None:
        link = self.paths.sys / "dev" / "block" / devno
        if not link.exists():
            return None
        return link.resolve().name

    def devno_of_node(self, node: str | Path) -> str | None:
        try:
            st = os.stat(node)
        except OSError:
            return None
        if not stat.S_ISBLK(st.st_mode):
            return None
        return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"

    def is_partition(self, name: str) -> bool:
        return (self.block_dir(name) / "partition").exists()

    def parent_disk(self, name: str) -> str:
        """The whole disk a partition belongs to (the disk itself otherwise)."""
        if not self.is_partition(name):
            return name
        return self.block_dir(name).resolve().parent.name

    def partitions(self, name: str) -> list[str]:
        base = self.block_dir(name)
        try:
            children = sorted(base.resolve().iterdir())
        except OSError:
            return []
        return [c.name for c in children if (c / "partition").exists()]

    def holders(self, name: str) -> list[str]:
        try:
            return sorted(p.name for p in (self.block_dir(name) / "holders").iterdir())
        except OSError:
            return []

    def family(self, name: str) -> dict[str, str]:
        """The device, its partitions and everything stacked on them (device-mapper,
        RAID, ...), recursively: name -> how it relates to ``name``."""
        found: dict[str, str] = {name: "the device itself"}
        stack = [name]
        while stack:
            current = stack.pop()
            for part in self.partitions(current):
                if part not in found:
                    found[part] = f"partition of {current}"
                    stack.append(part)
            for holder in self.holders(current):
                if holder not in found:
                    found[holder] = f"stacked on {current}"
                    stack.append(holder)
        return found

    def removable(self, name: str) -> tuple[bool, str]:
        """Whether a disk is removable media, and why we think so."""
        base = self.block_dir(name)
        if _read(base / "removable") == "1":
            return True, "removable media"
        try:
            real = str(base.resolve())
        except OSError:
            real = ""
        if "/usb" in real:
            return True, "USB"
        # Built-in SD card readers often report removable=0; the card itself says "SD".
        if _read(base / "device" / "type") == "SD":
            return True, "SD card"
        return False, ""

    def model(self, name: str) -> str:
        base = self.block_dir(name)
        backing = _read(base / "loop" / "backing_file")
        if backing:
            return f"loop device over {backing}"
        words = [_read(base / "device" / "vendor"), _read(base / "device" / "model")]
        if not any(words):
            words = [_read(base / "device" / "name")]  # mmc cards
        return " ".join(w for w in words if w)

    def sysfs_size(self, name: str) -> int:
        sectors = _read(self.block_dir(name) / "size", "0")
        return int(sectors) * 512 if sectors.isdigit() else 0

    # -- procfs ----------------------------------------------------------
    def mounts(self) -> list[Mount]:
        result = []
        try:
            lines = self.paths.mountinfo.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.paths.mountinfo}: {exc.strerror}") from exc
        for line in lines:
            left, sep, right = line.partition(" - ")
            fields = left.split()
            if not sep or len(fields) < 5:
                continue
            rfields = right.split()
            source = _unescape_mount(rfields[1]) if len(rfields) > 1 else ""
            result.append(Mount(devno=fields[2], source=source, mountpoint=_unescape_mount(fields[4])))
        return result

    def mounted_names(self) -> dict[str, list[Mount]]:
        """Block device name -> its mounts (by device number, and by source node)."""
        by_name: dict[str, list[Mount]] = {}
        for m in self.mounts():
            names = {self.name_of_devno(m.devno)}
            if m.source.startswith("/dev/"):
                devno = self.devno_of_node(m.source)
                if devno:
                    names.add(self.name_of_devno(devno))
            for n in names - {None}:
                assert n is not None
                by_name.setdefault(n, []).append(m)
        return by_name

    def swap_names(self) -> dict[str, str]:
        """Block device name -> swap path for swap areas on block devices."""
        result: dict[str, str] = {}
        try:
            lines = self.paths.swaps.read_text().splitlines()[1:]
        except OSError:
            return result
        for line in lines:
            fields = line.split()
            if not fields:
                continue
            path = _unescape_mount(fields[0])
            devno = self.devno_of_node(path)
            name = self.name_of_devno(devno) if devno else None
            if name:
                result[name] = path
        return result


def _node(name: str) -> str:
    return f"/dev/{name.replace('!', '/')}"


def check_target(
    device: Path,
    *,
    image_size: int,
    allow_non_removable: bool = False,
    inspector: Inspector | None = None,
) -> Disk:
    """Run every safety check on ``device`` and return what it is; raise Refused
    (one line, nothing written) on the first that fails.  Opens the device
    read-only and exclusively at most, never for writing."""
    ins = inspector or Inspector()
    shown = str(device)

    def refuse(reason: str, hint: str | None = None) -> Refused:
        return Refused(f"refusing to write to {shown}: {reason}", hint=hint)

    try:
        st = os.stat(device)
    except FileNotFoundError as exc:
        raise refuse("it does not exist") from exc
    except OSError as exc:
        raise refuse(f"cannot look at it: {exc.strerror}") from exc
    if not stat.S_ISBLK(st.st_mode):
        kind = (
            "a regular file"
            if stat.S_ISREG(st.st_mode)
            else "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a character device"
            if stat.S_ISCHR(st.st_mode)
            else "not a device"
        )
        raise refuse(
            f"it is not a block device ({kind})", hint="give a whole disk such as /dev/sdX or /dev/mmcblkN"
        )
    node = Path(os.path.realpath(device))
    if str(node) != str(device):
        shown = f"{device} (-> {node})"
    devno = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    name = ins.name_of_devno(devno)
    if name is None:
        raise refuse(f"the kernel does not know block device {devno}")
    disk = Disk(given=device, node=node, name=name, devno=devno)

    family = ins.family(name)
    mounts = ins.mounted_names()
    # 1. the disk that holds the running system
    for member in family:
        for m in mounts.get(member, []):
            if m.mountpoint == "/":
                where = "it" if member == name else _node(member)
                raise refuse(
                    f"{where} holds the root filesystem / of this computer",
                    hint="this is your system disk; check the device name with lsblk",
                )
    # 2. anything mounted on it, a partition of it, or a device stacked on it
    mounted = [(member, m) for member in family for m in mounts.get(member, [])]
    if mounted:
        member, m = mounted[0]
        where = "it" if member == name else _node(member)
        more = (
            f" (and {len(mounted) - 1} more mount{'s' if len(mounted) > 2 else ''})"
            if len(mounted) > 1
            else ""
        )
        raise refuse(
            f"{where} is mounted on {m.mountpoint}{more}", hint=f"unmount it first: umount {m.mountpoint}"
        )
    # 3. swap
    swaps = ins.swap_names()
    for member in family:
        if member in swaps:
            where = "it" if member == name else _node(member)
            raise refuse(f"{where} is in use as swap", hint=f"swapoff {swaps[member]}")
    # 4. device-mapper, RAID, ... on top of it
    stacked = [m for m, how in family.items() if how.startswith("stacked")]
    if stacked:
        raise refuse(
            f"{_node(stacked[0])} (LVM, dm-crypt or RAID) is built on it",
            hint="deactivate it first (vgchange -an, cryptsetup close, mdadm --stop)",
        )
    # 5. a partition, not a whole disk
    if ins.is_partition(name):
        parent = ins.parent_disk(name)
        raise refuse(
            f"it is a partition of {_node(parent)}; an image goes onto the whole disk",
            hint=f"use {_node(parent)}",
        )
    # 6. in use by anyone else (an exclusive read-only open fails with EBUSY) + real size
    disk.size = _probe(node, refuse)
    disk.read_only = _read(ins.block_dir(name) / "ro") == "1"
    disk.removable, disk.removable_reason = ins.removable(name)
    disk.model = ins.model(name)
    disk.partitions = [_node(p) for p in ins.partitions(name)]
    if disk.read_only:
        raise refuse("it is read-only (is the SD card's lock switch on?)")
    if disk.size == 0:
        raise refuse("it has no medium (0 bytes)")
    # 7. removable media only, unless told otherwise
    if not disk.removable and not allow_non_removable:
        raise refuse(
            "it is not a removable device (not USB, not an SD card, no removable flag)",
            hint="if this really is the disk to overwrite, add --allow-non-removable",
        )
    # 8. big enough
    if disk.size < image_size:
        raise refuse(
            f"it is too small: the image needs {human_size(image_size)} ({image_size} bytes), "
            f"the device has {human_size(disk.size)} ({disk.size} bytes)"
        )
    return disk


def _probe(node: Path, refuse) -> int:
    """Open read-only and exclusively (EBUSY if mounted or claimed), return the size."""
    try:
        fd = os.open(node, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise refuse("it is in use by the system (busy: mounted, swap, or claimed by a driver)") from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ConfigError(
                f"permission denied opening {node}",
                hint="run edgectl flash as root (sudo) or as a member of the 'disk' group",
            ) from exc
        if exc.errno in (errno.ENOMEDIUM, errno.ENXIO, errno.ENODEV):
            raise refuse("it has no medium") from exc
        raise refuse(f"cannot open it read-only: {exc.strerror}") from exc
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
