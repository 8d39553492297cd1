"""``<image>.qemuboot.conf``: how runqemu boots a Yocto image, read for the harness.

BitBake's qemuboot class writes the QB_* settings of the image (lower case) into
an INI file next to the image in the deploy directory, e.g.::

    [config_bsp]
    deploy_dir_image = .../tmp/deploy/images/qemux86-64
    image_link_name = edgecontainers-image-qemux86-64.rootfs
    machine = qemux86-64
    qb_system_name = qemu-system-x86_64
    qb_machine = -machine q35,i8042=off
    qb_cpu = -cpu IvyBridge
    qb_mem = -m 1024
    qb_default_fstype = wic
    qb_default_kernel = bzImage
    qb_default_bios = u-boot.bin        (qemuarm64)
    qb_rootfs_opt = -drive id=disk0,file=@ROOTFS@,if=none,format=raw -device virtio-blk-pci,drive=disk0

The QEMU test image of this project writes the same file, so both are booted
by the same code (:mod:`.session`).
"""

from __future__ import annotations

import configparser
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

ARCH_OF_SYSTEM = {"qemu-system-x86_64": "x86_64", "qemu-system-aarch64": "aarch64"}


@dataclass
class QemuBoot:
    path: Path
    values: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def deploy_dir(self) -> Path:
        """The deploy directory: the conf's own directory (deploy_dir_image may be another machine's path)."""
        own = self.path.parent
        recorded = Path(self.get("deploy_dir_image") or own)
        return own if own.is_dir() else recorded

    @property
    def machine_name(self) -> str:
        return self.get("machine")

    @property
    def system(self) -> str:
        return self.get("qb_system_name", "qemu-system-x86_64")

    @property
    def arch(self) -> str:
        try:
            return ARCH_OF_SYSTEM[self.system]
        except KeyError:
            raise UsageError(f"{self.path}: unsupported qb_system_name '{self.system}'") from None

    def _option(self, key: str, flag: str) -> str | None:
        words = shlex.split(self.get(key))
        for i, w in enumerate(words):
            if w == flag and i + 1 < len(words):
                return words[i + 1]
        return None

    @property
    def qemu_machine(self) -> str:
        return (
            self._option("qb_machine", "-machine")
            or self._option("qb_cpu", "-machine")
            or ("virt" if self.arch == "aarch64" else "q35")
        )

    @property
    def cpu(self) -> str:
        return self._option("qb_cpu", "-cpu") or ("cortex-a57" if self.arch == "aarch64" else "max")

    @property
    def memory_mib(self) -> int:
        mem = self._option("qb_mem", "-m") or "1024"
        return int(mem.rstrip("M"))

    @property
    def fstype(self) -> str:
        return self.get("qb_default_fstype", "wic")

    @property
    def image_link_name(self) -> str:
        return self.get("image_link_name")

    @property
    def disk(self) -> Path:
        name = self.get("disk_image") or f"{self.image_link_name}.{self.fstype}"
        return self.deploy_dir / name

    @property
    def kernel(self) -> Path | None:
        name = self.get("qb_default_kernel")
        return self.deploy_dir / name if name else None

    @property
    def bios(self) -> Path | None:
        name = self.get("qb_default_bios")
        if not name:
            return None
        p = Path(name)
        return p if p.is_absolute() else self.deploy_dir / name

    @property
    def rootfs_opt(self) -> str:
        return self.get("qb_rootfs_opt")

    def ovmf(self) -> tuple[Path, Path | None, str] | None:
        """OVMF from the deploy directory: (code, vars or None, format)."""
        d = self.deploy_dir
        if (d / "ovmf.code.qcow2").is_file() and (d / "ovmf.vars.qcow2").is_file():
            return d / "ovmf.code.qcow2", d / "ovmf.vars.qcow2", "qcow2"
        if (d / "ovmf.qcow2").is_file():
            return d / "ovmf.qcow2", None, "qcow2"
        return None


def read_qemuboot(path: Path) -> QemuBoot:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(path.read_text())
    except (OSError, configparser.Error) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    if not parser.has_section("config_bsp"):
        raise UsageError(f"{path} has no [config_bsp] section: not a qemuboot.conf")
    return QemuBoot(path, {k.lower(): v for k, v in parser.items("config_bsp")})


def find_qemuboot(image: Path | str | None = None, deploy_dir: Path | None = None) -> QemuBoot:
    """The qemuboot.conf for ``--image`` (a .qemuboot.conf, a disk image next to one,
    or an image name in ``--deploy-dir``) or the only/newest one in ``--deploy-dir``."""
    if image is not None:
        p = Path(image)
        if p.name.endswith(".qemuboot.conf") and p.is_file():
            return read_qemuboot(p)
        if p.is_file():
            stem = p.name
            for suffix in (".wic", ".img", ".qcow2", ".ext4"):
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
            conf = p.parent / f"{stem}.qemuboot.conf"
            if conf.is_file():
                qb = read_qemuboot(conf)
                qb.values["disk_image"] = p.name
                return qb
            raise UsageError(f"no {conf.name} next to {p}")
        if deploy_dir is None:
            raise UsageError(f"--image {image}: no such file (give --deploy-dir to look an image name up)")
        matches = sorted(deploy_dir.glob(f"{image}*.qemuboot.conf"))
        if not matches:
            raise UsageError(f"no {image}*.qemuboot.conf in {deploy_dir}")
        return read_qemuboot(_newest(matches))
    if deploy_dir is None:
        raise UsageError("give --image or --deploy-dir")
    if not deploy_dir.is_dir():
        raise UsageError(f"--deploy-dir {deploy_dir}: not a directory")
    confs = sorted(deploy_dir.glob("*.qemuboot.conf"))
    if not confs:
        raise UsageError(f"no *.qemuboot.conf in {deploy_dir} (build a qemu machine with kas first)")
    return read_qemuboot(_newest(confs))


def _newest(paths: list[Path]) -> Path:
    # Prefer the link names (no timestamp), newest first.
    return max(paths, key=lambda p: (p.is_symlink(), p.stat().st_mtime))


def write_qemuboot(path: Path, values: dict[str, str]) -> Path:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser["config_bsp"] = values
    with path.open("w") as f:
        parser.write(f)
    return path
