"""Build the QEMU test image: Debian packages plus the layer's on-target files.

A Yocto build cannot run on CI machines, so CI boots an image assembled from
Debian (trixie) packages that installs **the layer's own on-target files**,
read from ``meta-edgecontainers/`` by :mod:`.layer`:

1. *Composition*: the image recipe's IMAGE_INSTALL and IMAGE_FEATURES (and the
   RDEPENDS of the layer's recipes) decide which layer recipes are installed
   and which Debian packages stand in for the OE packages
   (:data:`DEBIAN_PACKAGES`).
2. *Base*: ``mmdebstrap --mode=unshare`` (no mounts on the host) builds the
   Debian root filesystem as a tarball, cached by the package list.
3. *Layer*: every EDGE_FILES entry of those recipes, rendered, at its
   destination; EDGE_DIRS created; SYSTEMD_SERVICE units enabled; the image
   recipes' own steps (authorized_keys, the dev SSH policy, the RAUC keyring).
4. *Plumbing*: what Debian needs to behave like the Yocto image, each item in
   :data:`PLUMBING` with its reason.  Nothing else may differ from the Debian
   packages' own files (:mod:`.provenance` checks it).
5. *Preload*: the app's container image is loaded into the engine's store by
   booting the image once (as meta-virtualization does with a helper VM), then
   the layer's ``edgecontainers_relocate_preloaded_images`` runs on it.
6. *Disk*: GPT per the layer's wks file (sizes, labels, names, types read from
   it): ESP (mkfs.vfat + mtools, GRUB EFI binary with an embedded search
   config, the layer's grub.cfg and grubenv), rootfsA (``mkfs.ext4 -d``),
   rootfsB, data; assembled with sfdisk and dd on a sparse file.  No loop
   devices, no mounts.

Results are cached in ``${XDG_CACHE_HOME:-~/.cache}/edgecontainers/testimage``
under a hash of every input.  Building needs root (file ownership in the
root filesystem, chroot for ``systemctl enable`` and ``grub-mkimage``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CommandFailed, ConfigError, EdgeError
from ..tools import require, run
from . import oecore
from .bundling import PRELOAD_DRIVER, PRELOAD_GRAPHROOT, Bundled, parse_bundled
from .layer import OE_PATHS, Layer, Recipe, machine_facts
from .oci import ImageFile, docker_archive, oci_layout

log = logging.getLogger(__name__)

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Bump when the build procedure changes in a way the code hash would not show.
FORMAT = "1"
# Bump when the base (mmdebstrap) step changes in a way its inputs do not show.
BASE_FORMAT = "1"
VARIANTS = ("production", "dev")

# OE package -> Debian packages that stand in for it, and the layer recipes it
# brings along (meta-rauc's rauc RDEPENDS rauc-conf, ...).  An OE package the
# image installs that is not listed here stops the build.
DEBIAN_PACKAGES: dict[str, tuple[str, ...]] = {
    "packagegroup-core-boot": ("systemd", "systemd-sysv", "udev", "dbus", "kmod", "netbase"),
    # the machine's extras (on the Pi: kernel-modules, udev-rules-rpi, firmware);
    # Debian's kernel package carries its modules
    "packagegroup-machine-base": (),
    "kernel-image": ("linux-image-{arch}",),
    "grub-editenv": ("grub-common",),
    "rauc": ("rauc", "rauc-service"),
    "u-boot-env": ("libubootenv-tool",),
    "u-boot-fw-utils": ("libubootenv-tool",),
    "podman": ("podman",),
    "crun": ("crun",),
    # meta-virtualization's netavark RDEPENDS nftables (it runs nft); Debian only recommends it
    "netavark": ("netavark", "nftables"),
    "aardvark-dns": ("aardvark-dns",),
    "conmon": ("conmon",),
    "container-host-config": (),  # Debian's podman brings containers-common; the file is the layer's
    # moby's recipe builds the CLI too; Debian packages it separately
    "docker-moby": ("docker.io", "docker-cli"),
    "docker-compose": ("docker-compose",),
    "coreutils": ("coreutils",),
    "util-linux-logger": ("bsdutils",),
    "e2fsprogs-resize2fs": ("e2fsprogs",),
    "util-linux-blkid": ("util-linux",),
    "util-linux-findmnt": ("util-linux",),
    "util-linux-mount": ("mount",),
    "util-linux-mountpoint": ("util-linux",),
    "util-linux-partx": ("util-linux",),
    "util-linux-sfdisk": ("fdisk",),
    "util-linux": ("util-linux", "fdisk", "mount"),
    "curl": ("curl",),
    "iproute2": ("iproute2",),
    "less": ("less",),
    "procps": ("procps",),
    "busybox": ("busybox",),
}
PULLS_LAYER_RECIPES: dict[str, tuple[str, ...]] = {
    "rauc": ("rauc-conf",),
    "u-boot-env": ("u-boot",),
    "u-boot-fw-utils": ("u-boot",),
    "container-host-config": ("container-host-config",),
}
# IMAGE_FEATURES -> Debian packages; the features that change files are
# applied by the builder (see PLUMBING and _image_recipe_steps).
FEATURE_PACKAGES: dict[str, tuple[str, ...]] = {
    "ssh-server-openssh": ("openssh-server",),
    "tools-debug": ("strace",),
    "read-only-rootfs": (),
    "allow-empty-password": (),
    "empty-root-password": (),
    "allow-root-login": (),
}
# Debian packages the image needs only because it is Debian, with the reason.
PLUMBING_PACKAGES: dict[str, str] = {
    "initramfs-tools": "Debian's kernel has virtio_blk and ext4 as modules: an initramfs loads them",
    "grub-efi-amd64-bin": "GRUB's EFI modules for grub-mkimage (x86-64 only; Yocto deploys bootx64.efi)",
}

# dpkg excludes: a root filesystem that fits the 1 GiB slot and boots fast.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/lintian/*",
    *(
        f"path-exclude=/usr/lib/modules/*/kernel/{tree}/*"
        for tree in (
            "drivers/gpu", "drivers/net/wireless", "drivers/net/ethernet", "drivers/media", "drivers/infiniband",
            "drivers/staging", "drivers/bluetooth", "drivers/iio", "drivers/isdn", "drivers/input/touchscreen",
            "drivers/hwmon", "drivers/scsi/qla2xxx", "drivers/scsi/lpfc", "drivers/net/can", "sound",
            "net/wireless", "net/mac80211", "net/bluetooth",
        )
    ),
)  # fmt: skip
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "ext4", "crc32c_generic")


@dataclass(frozen=True)
class ArchVM:
    """How the test image of one Debian architecture is booted in QEMU: the
    machine and CPU of oe-core's machine configuration (QB_MACHINE, QB_CPU), the
    serial console its kernel talks to and the kernel file for direct boot."""

    qemu_arch: str
    system: str
    machine: str
    cpu: str
    console: str
    direct_kernel: str


ARCH_VM: dict[str, ArchVM] = {
    # oe-core qemux86-64.conf (q35; -cpu max here: the harness, not runqemu's IvyBridge)
    "amd64": ArchVM("x86_64", "qemu-system-x86_64", "q35", "max", "ttyS0,115200", "vmlinux"),
    # oe-core qemuarm64.conf: QB_MACHINE = "-machine virt", QB_CPU = "-cpu cortex-a57"
    "arm64": ArchVM("aarch64", "qemu-system-aarch64", "virt", "cortex-a57", "ttyAMA0,115200", "Image"),
}
# The U-Boot that stands in for oe-core's u-boot (qemu_arm64_defconfig, UBOOT_MACHINE of
# qemuarm64.conf): Debian's u-boot-qemu build of the same configuration.
UBOOT_QEMU_ARM64 = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
# The Debian packages a host needs to build and boot test images of a foreign architecture.
FOREIGN_ARCH_PACKAGES = ("qemu-user-static", "binfmt-support", "arch-test")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU_USER = {"arm64": "aarch64"}

# The GRUB modules oe-core's grub-efi builds into bootx64.efi (GRUB_BUILDIN ?=);
# the distro appends to it (GRUB_BUILDIN:append:x86-64).
OE_GRUB_BUILDIN = "boot linux ext2 fat serial part_msdos part_gpt normal efi_gop iso9660 configfile search loadenv test"
# oe-core grub-efi's embedded configuration: find the ESP holding EFI/BOOT/grub.cfg.
GRUB_EARLY_CFG = "search --no-floppy --set=root --file /EFI/BOOT/grub.cfg\nset prefix=($root)/EFI/BOOT\n"
GPT_LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

# The storage.conf of meta-virtualization's vpdmn helper VM, in which
# container-cross-install imports the podman images (vpdmn-rootfs-image.bb):
# the preload writes its store the same way (bundling.PRELOAD_DRIVER).
VPDMN_STORAGE_CONF = f"""[storage]
driver = "{PRELOAD_DRIVER}"
runroot = "/run/containers/storage"
graphroot = "{PRELOAD_GRAPHROOT}"

[storage.options]
additionalimagestores = []
"""


# ---------------------------------------------------------------- plumbing
@dataclass(frozen=True)
class Plumbing:
    """One adaptation of the Debian root filesystem that is not from the layer."""

    path: str  # absolute path in the root filesystem
    kind: str  # file, symlink, remove, dir, modify, enable
    reason: str
    content: Callable[[BuildContext], str | None] | str = ""
    mode: int = 0o644
    when: Callable[[BuildContext], bool] = lambda ctx: True


def _kernel_link(ctx: BuildContext) -> str:
    return ctx.kernel_file.name


def _initrd_link(ctx: BuildContext) -> str:
    return ctx.initrd_file.name


def _image_link(ctx: BuildContext) -> str:
    # Debian's arm64 vmlinuz is the plain Image (not compressed, not EFI zboot)
    if arm64_image(ctx.kernel_file)[:64] != ctx.kernel_file.read_bytes()[:64]:
        raise EdgeError(f"{ctx.kernel_file} is compressed; booti needs the plain Image (a plumbing change)")
    return ctx.kernel_file.name


def _allow_root_login(text: str) -> str:
    # oe-core rootfs-postcommands ssh_allow_root_login / ssh_allow_empty_password
    text = re.sub(r"^#?PermitRootLogin.*$", "PermitRootLogin yes", text, flags=re.M)
    text = re.sub(r"^#?PermitEmptyPasswords.*$", "PermitEmptyPasswords yes", text, flags=re.M)
    return text


def _openssh_packageconfig(ctx: BuildContext) -> str:
    """openssh's PACKAGECONFIG: oe-core's default and the distro's :append:pn-openssh."""
    distro = ctx.layer.path / "conf/distro/edgecontainers.conf"
    text = distro.read_text() if distro.is_file() else ""
    extra = re.findall(r'^PACKAGECONFIG:append:pn-openssh\s*=\s*"([^"]*)"', text, flags=re.M)
    return " ".join([oecore.OPENSSH_PACKAGECONFIG_DEFAULT, *extra])


def _openssh_config(ctx: BuildContext, key_dir_var: str) -> str:
    key_dir = ctx.layer.settings.get(key_dir_var) or oecore.OPENSSH_HOST_KEY_DIR_DEFAULT[key_dir_var]
    hostkeys = oecore.openssh_hostkeys(_openssh_packageconfig(ctx), key_dir)
    text = oecore.with_hostkeys((ctx.rootfs / "etc/ssh/sshd_config").read_text(), hostkeys)
    return _allow_root_login(text) if ctx.dev else text


def _empty_root_password(ctx: BuildContext) -> str | None:
    path = ctx.rootfs / "etc/shadow"
    lines = path.read_text().splitlines()
    return "\n".join(re.sub(r"^root:[^:]*:", "root::", ln) for ln in lines) + "\n"


# The ONE list of everything in the test image that is neither a Debian
# package's file nor the layer's: each with why the Debian base needs it.
# tests/unit/test_testimage_provenance.py and the system test
# test_image_files_come_from_debian_or_the_layer hold the image to it.
PLUMBING: tuple[Plumbing, ...] = (
    Plumbing("/etc/fstab", "file", "Debian's fstab is a placeholder; oe-core base-files installs its stock fstab "
             "(/dev/root with defaults, /run and /var/volatile tmpfs); read-only-rootfs then makes the root line ro "
             "(an image step, read_only_rootfs_hook)", oecore.BASE_FILES_FSTAB),
    Plumbing("/var/volatile", "dir", "oe-core base-files: mount point of the volatile tmpfs"),
    Plumbing("/var/log", "symlink", "oe-core fs-perms-volatile-log.txt (in the distro's FILESYSTEM_PERMS_TABLES): "
             "/var/log -> volatile/log; Debian has a directory", "volatile/log",
             when=lambda ctx: "/var/log" in oecore.fs_perms_links(ctx.layer.settings)),
    Plumbing("/var/tmp", "symlink", "oe-core fs-perms-volatile-tmp.txt (in the distro's FILESYSTEM_PERMS_TABLES): "
             "/var/tmp -> volatile/tmp; Debian has a directory", "volatile/tmp",
             when=lambda ctx: "/var/tmp" in oecore.fs_perms_links(ctx.layer.settings)),
    Plumbing("/usr/lib/tmpfiles.d/00-create-volatile.conf", "file",
             "oe-core systemd do_install: the volatile log and tmp directories, and the /var/log link when "
             "FILESYSTEM_PERMS_TABLES has fs-perms-volatile-log.txt (Debian's systemd has no such file)",
             lambda ctx: oecore.create_volatile_conf(ctx.layer.settings)),
    Plumbing("/etc/hostname", "file", "oe-core base-files: hostname is MACHINE (mmdebstrap copies the build "
             "host's)", lambda ctx: ctx.machine + "\n"),
    Plumbing("/etc/resolv.conf", "remove", "mmdebstrap copies the build host's resolver configuration"),
    Plumbing("/etc/ssh/ssh_host_*", "remove", "host keys generated by Debian's openssh-server postinst at build "
             "time; oe-core's sshdgenkeys.service creates them in OPENSSH_HOST_KEY_DIR (/var/lib/ssh, on /data) "
             "at first boot"),
    Plumbing("/etc/systemd/system/multi-user.target.wants/systemd-networkd.service", "enable",
             "oe-core enables systemd-networkd (systemd PACKAGECONFIG networkd); Debian does not",
             "systemd-networkd.service"),
    Plumbing("/etc/systemd/system/sockets.target.wants/systemd-networkd.socket", "enable",
             "enabled with systemd-networkd (its socket unit)", "systemd-networkd.service"),
    Plumbing("/etc/systemd/system/sysinit.target.wants/systemd-network-generator.service", "enable",
             "enabled with systemd-networkd", "systemd-networkd.service"),
    Plumbing("/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service", "enable",
             "enabled with systemd-networkd", "systemd-networkd.service"),
    Plumbing("/etc/systemd/system/dbus-org.freedesktop.network1.service", "enable",
             "alias created when systemd-networkd is enabled", "systemd-networkd.service"),
    Plumbing("/etc/initramfs-tools/conf.d/edgecontainers-testimage.conf", "base",
             "small initramfs (MODULES=list) for Debian's modular kernel"),
    Plumbing("/usr/share/initramfs-tools/modules.d/edgecontainers-testimage", "base",
             "the modules the initramfs needs to find the root filesystem (virtio, ext4)"),
    Plumbing("/boot/bzImage", "symlink", "the layer's grub.cfg loads /boot/bzImage (KERNEL_IMAGETYPE) from the "
             "slot; Debian names it vmlinuz-VERSION", _kernel_link,
             when=lambda ctx: ctx.facts.kernel_imagetype == "bzImage"),
    Plumbing("/boot/Image", "symlink", "boot.scr loads /boot/Image (KERNEL_IMAGETYPE, the plain Image that booti "
             "boots) from the slot; Debian names it vmlinuz-VERSION", lambda ctx: _image_link(ctx),
             when=lambda ctx: ctx.facts.kernel_imagetype == "Image"),
    Plumbing("/boot/initrd", "symlink", "the layer's boot configurations load /boot/initrd when present; Debian "
             "names it initrd.img-VERSION", _initrd_link),
    Plumbing("/etc/ssh/sshd_config", "modify", "oe-core openssh do_install: its HostKey lines (PACKAGECONFIG "
             "hostkey-*, the distro's append) in OPENSSH_HOST_KEY_DIR; Debian's lists none.  Dev image: "
             "IMAGE_FEATURES allow-root-login and allow-empty-password (rootfs-postcommands' edits)",
             lambda ctx: _openssh_config(ctx, "OPENSSH_HOST_KEY_DIR"),
             when=lambda ctx: (ctx.rootfs / "etc/ssh/sshd_config").is_file()),
    Plumbing("/etc/ssh/sshd_config_readonly", "file", "oe-core openssh do_install: sshd_config for a read-only "
             "root, its HostKey lines in OPENSSH_HOST_KEY_DIR_READONLY_CONFIG; Debian's openssh-server has none.  "
             "Dev image: the same edits as sshd_config (rootfs-postcommands edits both)",
             lambda ctx: _openssh_config(ctx, "OPENSSH_HOST_KEY_DIR_READONLY_CONFIG"), mode=0o600,
             when=lambda ctx: (ctx.rootfs / "etc/ssh/sshd_config").is_file()),
    Plumbing("/etc/shadow", "modify", "dev image: IMAGE_FEATURES empty-root-password (oe-core "
             "rootfs-postcommands zap_empty_root_password's opposite: root without password)",
             _empty_root_password, mode=0o640, when=lambda ctx: ctx.dev),
    # oe-core volatile-binds (systemd RDEPENDS on it): the units its do_compile generates from
    # VOLATILE_BINDS, enabled as its SYSTEMD_SERVICE, and its mount-copybind (see oecore.py).
    *(
        item
        for what, where in oecore.VOLATILE_BINDS_DEFAULT
        for item in (
            Plumbing(f"/usr/lib/systemd/system/{oecore.volatile_bind_service(what)}", "file",
                     f"oe-core volatile-binds: the unit do_compile generates for VOLATILE_BINDS '{what} {where}'",
                     lambda ctx, what=what, where=where: _volatile_bind_unit(ctx, what, where)),
            Plumbing(f"/etc/systemd/system/local-fs.target.wants/{oecore.volatile_bind_service(what)}", "enable",
                     "oe-core volatile-binds: SYSTEMD_SERVICE (WantedBy=local-fs.target)",
                     oecore.volatile_bind_service(what)),
        )
    ),
    Plumbing(oecore.MOUNT_COPYBIND, "file", "oe-core volatile-binds' mount-copybind (base_sbindir), which its "
             "units run (this project's implementation, oecore.MOUNT_COPYBIND_SCRIPT)",
             oecore.MOUNT_COPYBIND_SCRIPT, mode=0o755),
    Plumbing("/etc/tmpfiles.d/etc.conf", "symlink", "oe-core volatile-binds do_install: masks tmpfiles' etc.conf",
             "/dev/null"),
    Plumbing("/etc/tmpfiles.d/home.conf", "symlink", "oe-core volatile-binds do_install: masks tmpfiles' home.conf",
             "/dev/null"),
    # oe-core openssh: sshdgenkeys.service makes the host keys sshd's configuration names.
    Plumbing("/usr/lib/systemd/system/sshdgenkeys.service", "file", "oe-core openssh's sshdgenkeys.service "
             "(Debian's sshd-keygen.service writes only a writable /etc/ssh)", oecore.SSHDGENKEYS_UNIT,
             when=lambda ctx: (ctx.rootfs / "usr/sbin/sshd").exists()),
    Plumbing(oecore.SSHD_CHECK_KEYS, "file", "oe-core openssh's sshd_check_keys, which sshdgenkeys runs (this "
             "project's implementation, oecore.SSHD_CHECK_KEYS_SCRIPT)", oecore.SSHD_CHECK_KEYS_SCRIPT,
             mode=0o755, when=lambda ctx: (ctx.rootfs / "usr/sbin/sshd").exists()),
    Plumbing("/etc/systemd/system/ssh.service.d/sshdgenkeys.conf", "file", "oe-core's sshd.socket Wants= and "
             "sshd@.service is After= sshdgenkeys.service; Debian's ssh.service gets the same in a drop-in",
             oecore.SSHD_GENKEYS_DROPIN, when=lambda ctx: (ctx.rootfs / "usr/sbin/sshd").exists()),
)  # fmt: skip


def _volatile_bind_unit(ctx: BuildContext, what: str, where: str) -> str:
    binds = oecore.volatile_binds(ctx.layer.settings)
    if binds != oecore.VOLATILE_BINDS_DEFAULT:
        raise ConfigError(
            f"the layer sets VOLATILE_BINDS to {binds}; the test image's plumbing has oe-core's default "
            f"{oecore.VOLATILE_BINDS_DEFAULT} (builder.PLUMBING)"
        )
    return oecore.volatile_bind_unit(what, where)


# ---------------------------------------------------------------- spec
def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgecontainers" / "testimage"


@dataclass(frozen=True)
class ImageSpec:
    """What to build.  ``layer`` defaults to the checkout's meta-edgecontainers;
    OTA tests pass a modified copy of the layer (e.g. another demo version) to get
    a second image whose rootfs can go into an update bundle."""

    machine: str = "qemux86-64"
    engine: str = "podman"
    variant: str = "production"
    layer: Path | None = None
    tag: str = ""  # a name for variants built from a modified layer ("v2", "broken-journald", ...)

    @property
    def dev(self) -> bool:
        return self.variant == "dev"

    @property
    def name(self) -> str:
        image = "edgecontainers-image-dev" if self.dev else "edgecontainers-image"
        parts = [image, self.machine, self.engine]
        if self.tag:
            parts.append(self.tag)
        return "-".join(parts)


@dataclass
class Composition:
    layer: Layer
    recipes: list[Recipe]
    debian: list[str]
    features: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class BuildContext:
    spec: ImageSpec
    layer: Layer
    rootfs: Path
    workdir: Path
    kernel_file: Path = Path()
    initrd_file: Path = Path()

    @property
    def machine(self) -> str:
        return self.spec.machine

    @property
    def dev(self) -> bool:
        return self.spec.dev

    @property
    def facts(self):
        return machine_facts(self.spec.machine)


@dataclass
class TestImage:
    """A built (cached) test image."""

    __test__ = False  # not a pytest class

    directory: Path
    spec: ImageSpec

    @property
    def disk(self) -> Path:
        return self.directory / "disk.img"

    @property
    def qemuboot(self) -> Path:
        return self.directory / f"{self.spec.name}.qemuboot.conf"

    @property
    def rootfs_dir(self) -> Path:
        return self.directory / "rootfs"

    @property
    def rootfs_ext4(self) -> Path:
        return self.directory / "rootfs.ext4"

    @property
    def manifest(self) -> dict:
        return json.loads((self.directory / "manifest.json").read_text())

    @property
    def metadata(self) -> dict:
        return json.loads((self.directory / "metadata.json").read_text())


# ---------------------------------------------------------------- composition
def compose(layer: Layer) -> Composition:
    """Layer recipes and Debian packages of the image, from the image recipe."""
    image = layer.image_recipe()
    arch = machine_facts(layer.machine).debian_arch
    notes = []
    queue = []
    for word in image.words("IMAGE_INSTALL"):
        if "${" in word:
            notes.append(f"IMAGE_INSTALL: {word} is defined outside the layer (empty by default); skipped")
            continue
        queue.append(word)
    features = [f for f in image.words("IMAGE_FEATURES") if "${" not in f]
    recipes: dict[str, Recipe] = {}
    debian: list[str] = []
    seen: set[str] = set()
    for feature in features:
        if feature not in FEATURE_PACKAGES:
            raise ConfigError(f"IMAGE_FEATURES '{feature}' has no Debian counterpart in builder.FEATURE_PACKAGES")
        debian += FEATURE_PACKAGES[feature]
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        known = layer.recipes().get(name)
        if known is not None and known.bb is not None:
            recipes[name] = known
            queue += known.rdepends()
            continue
        if name not in DEBIAN_PACKAGES:
            raise ConfigError(
                f"the image installs '{name}', which has no Debian counterpart in builder.DEBIAN_PACKAGES",
                hint="add it there (with the Debian package names that stand in for it)",
            )
        debian += [p.format(arch=arch) for p in DEBIAN_PACKAGES[name]]
        for rec in PULLS_LAYER_RECIPES.get(name, ()):
            recipes[rec] = layer.recipe(rec)
    plumbing = ["initramfs-tools"]
    if layer.settings.get("EDGECONTAINERS_BOOTLOADER") == "grub":
        plumbing.append("grub-efi-amd64-bin")
    debian = sorted(set(debian) | set(plumbing))
    return Composition(layer, list(recipes.values()), debian, features, notes)


# ---------------------------------------------------------------- hashing
def _code_hash() -> str:
    """The code that decides the image's content (not the harness, not the checks)."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for name in ("builder.py", "layer.py", "bbparse.py", "oci.py"):
        h.update(name.encode() + b"\0" + (pkg / name).read_bytes())
    return h.hexdigest()


def base_key(debian: list[str], arch: str) -> str:
    h = hashlib.sha256()
    for part in (
        BASE_FORMAT,
        SUITE,
        MIRROR,
        arch,
        " ".join(debian),
        "\n".join(DPKG_EXCLUDES),
        " ".join(INITRAMFS_MODULES),
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def image_key(comp: Composition, spec: ImageSpec, inputs: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    h.update(_code_hash().encode())
    h.update(json.dumps([spec.machine, spec.engine, spec.variant, spec.tag, comp.debian]).encode())
    for name in sorted(inputs):
        h.update(name.encode() + b"\0" + hashlib.sha256(inputs[name]).digest())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- helpers
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _step(name: str):
    class _Timer:
        def __enter__(self):
            self.t = time.monotonic()
            log.info("testimage: %s ...", name)
            return self

        def __exit__(self, *exc):
            if not exc[0]:
                log.info("testimage: %s done in %.1fs", name, time.monotonic() - self.t)

    return _Timer()


def _uuid(key: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"edgecontainers-testimage:{key}:{name}"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_host(machine: str = "qemux86-64") -> list[str]:
    """What is missing on this host to build and boot test images of ``machine``
    (empty: all there)."""
    arch = machine_facts(machine).debian_arch
    programs = ["mmdebstrap", "mkfs.ext4", "e2fsck", "mkfs.vfat", "mcopy", "mmd", "sfdisk", "qemu-img",
                "qemu-system-x86_64", "zstd", "ssh", "ssh-keygen", "apt-get", "dpkg-deb"]  # fmt: skip
    if arch != "amd64":
        # the preload boot and the U-Boot boots; boot.scr is compiled by mkimage (u-boot-tools)
        # arch-test: mmdebstrap's check that the host runs the architecture's binaries
        programs += [ARCH_VM[arch].system, "mkimage", "update-binfmts", f"qemu-{QEMU_USER[arch]}-static", "arch-test"]
    missing = [p for p in programs if not shutil.which(p)]
    if arch == "arm64" and not UBOOT_QEMU_ARM64.is_file():
        missing.append(f"{UBOOT_QEMU_ARM64} (Debian package u-boot-qemu)")
    if os.geteuid() != 0:
        missing.append("root (file ownership in the image, chroot)")
    if not Path(KEYRING).is_file():
        missing.append(KEYRING)
    return missing


def ensure_foreign_arch(arch: str) -> None:
    """Make this host run ``arch`` binaries (the maintainer scripts mmdebstrap runs,
    the chroots of the build): binfmt_misc mounted and Debian's qemu-user-static
    interpreter enabled.  binfmt-support registers it with the F flag (the kernel
    opens the interpreter at registration), so it also works inside mmdebstrap's
    unshare namespaces.  Needs root; a no-op when it is already set up."""
    if arch == "amd64":
        return
    name = f"qemu-{QEMU_USER[arch]}"
    if not (BINFMT_DIR / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR], capture=True)
    entry = BINFMT_DIR / name
    if not entry.is_file() or not entry.read_text().startswith("enabled"):
        run([require("update-binfmts"), "--enable", name], capture=True)
    text = entry.read_text() if entry.is_file() else ""
    flags = re.search(r"^flags: *(\S*)", text, re.M)
    if not text.startswith("enabled") or not flags or "F" not in flags.group(1):
        raise ConfigError(
            f"{entry}: {arch} binaries cannot run here ({text.splitlines()[:1] or 'not registered'})",
            hint=f"apt install {' '.join(FOREIGN_ARCH_PACKAGES)}; update-binfmts --enable {name}",
        )


# ---------------------------------------------------------------- builder
class Builder:
    def __init__(self, cache: Path | None = None) -> None:
        self.cache = cache or cache_root()

    # ---- keys the image trusts (generated once into the cache, never in the checkout;
    # under a lock: the test command's stages run side by side and share the cache)
    @property
    def ssh_key(self) -> Path:
        from ..qemu.ssh import make_key

        with _locked(self.cache / "locks" / "keys.lock"):
            return make_key(self.cache / "keys" / "ssh" / "id_ed25519")

    @property
    def rauc_key_dir(self) -> Path:
        from .. import pki

        key_dir = self.cache / "keys" / "rauc"
        with _locked(self.cache / "locks" / "keys.lock"):
            if not (key_dir / pki.CA_CERT).is_file():
                pki.init(key_dir)
        return key_dir

    def layer_for(self, spec: ImageSpec) -> Layer:
        return Layer(
            spec.machine,
            spec.engine,
            spec.dev,
            path=spec.layer,
            ssh_authorized_keys="" if spec.dev else str(self.ssh_key.with_suffix(".pub")),
            key_dir=str(self.rauc_key_dir),
        )

    # ---- the public entry point
    def build(self, spec: ImageSpec, *, force: bool = False) -> TestImage:
        if spec.variant not in VARIANTS:
            raise ConfigError(f"unknown variant '{spec.variant}'; valid: {', '.join(VARIANTS)}")
        missing = check_host(spec.machine)
        if missing:
            raise ConfigError(
                "cannot build the test image here; missing: " + ", ".join(missing),
                hint="see docs/testing.md for the packages to install",
            )
        layer = self.layer_for(spec)
        comp = compose(layer)
        inputs = self._inputs(comp, spec)
        key = image_key(comp, spec, inputs)
        final = self.cache / "images" / f"{spec.name}-{key}"
        with _locked(self.cache / "locks" / f"{final.name}.lock"):
            if (final / "done").is_file() and not force:
                log.info("testimage: using cached %s", final)
                return TestImage(final, spec)
            if final.exists():
                shutil.rmtree(final)
            work = final.with_name(final.name + ".partial")
            if work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True)
            started = time.monotonic()
            try:
                self._build(comp, spec, key, work)
            except BaseException:
                log.error("testimage: build failed; the partial result stays in %s", work)
                raise
            (work / "build-seconds").write_text(f"{time.monotonic() - started:.1f}\n")
            (work / "done").write_text(key + "\n")
            work.rename(final)
        self._prune(final)
        return TestImage(final, spec)

    def _prune(self, keep: Path) -> None:
        """Drop older builds of the same image (other keys); they are never used again."""
        name = keep.name.rsplit("-", 1)[0]
        for old in keep.parent.glob(f"{name}-*"):
            if old != keep and old.name.rsplit("-", 1)[0] == name and not old.name.endswith(".partial"):
                shutil.rmtree(old, ignore_errors=True)

    def _inputs(self, comp: Composition, spec: ImageSpec) -> dict[str, bytes]:
        """Every layer input of the image, by a stable name (for the cache key)."""
        layer = comp.layer
        inputs: dict[str, bytes] = {}
        for rec in comp.recipes:
            for entry in rec.edge_files():
                inputs[f"{rec.name}:{entry.dest}:{entry.mode:o}"] = rec.render(entry)
            inputs[f"{rec.name}:dirs"] = " ".join(rec.edge_dirs()).encode()
            inputs[f"{rec.name}:services"] = " ".join(rec.systemd_services()).encode()
        for path in sorted(layer.path.rglob("*")):
            if path.is_file() and (path.suffix in (".bb", ".bbappend", ".inc", ".conf", ".bbclass", ".wks")
                                   or "files" in path.parts):  # fmt: skip
                inputs[f"layer:{path.relative_to(layer.path)}"] = path.read_bytes()
        inputs["ssh.pub"] = self.ssh_key.with_suffix(".pub").read_bytes()
        inputs["rauc-ca"] = (self.rauc_key_dir / "ca.cert.pem").read_bytes()
        return inputs

    def _build(self, comp: Composition, spec: ImageSpec, key: str, work: Path) -> None:
        layer = comp.layer
        facts = machine_facts(spec.machine)
        ensure_foreign_arch(facts.debian_arch)
        base = self.base_tarball(comp.debian, facts.debian_arch)
        rootfs = work / "rootfs"
        with _step("unpacking the Debian base"):
            rootfs.mkdir()
            run(["tar", "--numeric-owner", "-xpf", base, "-C", rootfs], capture=True)
        ctx = BuildContext(spec, layer, rootfs, work)
        boot = rootfs / "boot"
        ctx.kernel_file = next(iter(sorted(boot.glob("vmlinuz-*"))))
        ctx.initrd_file = next(iter(sorted(boot.glob("initrd.img-*"))))
        manifest: dict = {"layer": {}, "layer_dirs": {}, "image_steps": {}, "plumbing": {}, "notes": comp.notes}
        with _step("installing the layer's on-target files"):
            self._install_layer(ctx, comp, manifest)
        with _step("plumbing"):
            self._plumbing(ctx, manifest)
        with _step("image features (oe-core rootfs-postcommands)"):
            self._image_feature_steps(ctx, comp, manifest)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        artifacts = work
        with _step("kernel for direct boot"):
            shutil.copyfile(ctx.initrd_file, artifacts / "initrd.img")
            if facts.debian_arch == "amd64":
                extract_vmlinux(ctx.kernel_file, artifacts / "vmlinux")
            else:
                (artifacts / ARCH_VM[facts.debian_arch].direct_kernel).write_bytes(arm64_image(ctx.kernel_file))
        bootloader = layer.settings.get("EDGECONTAINERS_BOOTLOADER")
        if bootloader == "grub":
            with _step("GRUB EFI binary"):
                self._grub_efi(ctx, artifacts / "bootx64.efi")
        elif bootloader == "uboot":
            # oe-core's u-boot do_deploy (qemuarm64: QB_DEFAULT_BIOS = "u-boot.bin")
            shutil.copyfile(UBOOT_QEMU_ARM64, artifacts / "u-boot.bin")
        wks = layer.wks()
        slot = wks.slot("rootfsA")
        with _step("rootfsA ext4"):
            ext4 = artifacts / "rootfs.ext4"
            run(["truncate", "-s", f"{slot.size_mib}M", ext4])
            run(["mkfs.ext4", "-q", "-F", "-L", slot.label or "rootfs", "-U", _uuid(key, "fs-rootfsA"),
                 "-E", f"hash_seed={_uuid(key, 'hash')}", "-d", rootfs, ext4], capture=True)  # fmt: skip
        with _step("preloading the app's container image"):
            changes = self._preload(ctx, comp, artifacts)
        manifest["preload_changes"] = changes
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        with _step("disk image"):
            partuuids = self._disk(ctx, key, artifacts)
        self._write_metadata(ctx, comp, key, artifacts, partuuids)

    # ---------------------------------------------------------------- base
    def base_tarball(self, debian: list[str], arch: str) -> Path:
        key = base_key(debian, arch)
        out = self.cache / "base" / f"{SUITE}-{arch}-{key}.tar"
        with _locked(self.cache / "locks" / f"base-{key}.lock"):
            if out.is_file():
                return out
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".partial.tar")
            overlay = out.with_suffix(".overlay")
            shutil.rmtree(overlay, ignore_errors=True)
            (overlay / "etc/initramfs-tools/conf.d").mkdir(parents=True)
            (overlay / "usr/share/initramfs-tools/modules.d").mkdir(parents=True)
            (overlay / "etc/initramfs-tools/conf.d/edgecontainers-testimage.conf").write_text(
                "# edgecontainers test image: only what finds the root filesystem\nMODULES=list\nCOMPRESS=gzip\n"
            )
            (overlay / "usr/share/initramfs-tools/modules.d/edgecontainers-testimage").write_text(
                "\n".join(INITRAMFS_MODULES) + "\n"
            )
            dpkg_cfg = out.with_suffix(".dpkg.cfg")
            dpkg_cfg.write_text("\n".join(DPKG_EXCLUDES) + "\n")
            cmd = [
                require("mmdebstrap"), "--mode=unshare", "--variant=minbase", f"--architectures={arch}",
                f"--keyring={KEYRING}", f"--dpkgopt={dpkg_cfg}", "--aptopt=Acquire::Retries \"3\"",
                f"--include={','.join(debian)}",
                f"--setup-hook=sync-in {overlay} /",
                "--customize-hook=rm -rf \"$1\"/var/cache/apt/* \"$1\"/var/lib/apt/lists/*",
                SUITE, str(tmp), MIRROR,
            ]  # fmt: skip
            with _step(f"mmdebstrap {SUITE} ({len(debian)} packages)"):
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                (out.with_suffix(".log")).write_text(proc.stdout + proc.stderr)
                if proc.returncode != 0:
                    raise CommandFailed(cmd, proc.returncode, output=proc.stdout + proc.stderr)
            tmp.rename(out)
            shutil.rmtree(overlay, ignore_errors=True)
            return out

    # ---------------------------------------------------------------- layer
    def _install_layer(self, ctx: BuildContext, comp: Composition, manifest: dict) -> None:
        root = ctx.rootfs
        services: list[str] = []
        for rec in comp.recipes:
            for d in rec.edge_dirs():
                (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
                manifest["layer_dirs"][d] = rec.name
            for entry in rec.edge_files():
                data = rec.render(entry)
                dest = root / entry.dest.lstrip("/")
                _write(dest, data, entry.mode)
                manifest["layer"][entry.dest] = {
                    "recipe": rec.name,
                    "source": str(entry.path.relative_to(ctx.layer.path)),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "mode": f"{entry.mode:04o}",
                }
            services += rec.systemd_services()
        self._image_recipe_steps(ctx, manifest)
        if services:
            _chroot(root, "systemctl", "enable", *services)
        manifest["services"] = services
        # The layer's preset files: oe-core applies presets (systemctl preset-all) when it
        # creates the rootfs.  Debian's units are enabled by their postinst instead, so
        # only the layer's own preset lines are applied here.
        presets: list[str] = []
        for dest in sorted(manifest["layer"]):
            if dest.startswith("/usr/lib/systemd/system-preset/") and dest.endswith(".preset"):
                for line in (root / dest.lstrip("/")).read_text().splitlines():
                    words = line.split()
                    if len(words) == 2 and words[0] in ("enable", "disable"):
                        # preset-all only touches installed units (no podman timer with docker)
                        if not any(
                            (root / d / words[1]).exists() for d in ("usr/lib/systemd/system", "etc/systemd/system")
                        ):
                            continue
                        _chroot(root, "systemctl", words[0], words[1])
                        presets.append(line.strip())
        manifest["presets"] = presets

    def _image_recipe_steps(self, ctx: BuildContext, manifest: dict) -> None:
        """The shell steps of the layer's image and rauc-conf recipes, done here."""
        root = ctx.rootfs
        layer = ctx.layer
        steps = manifest["image_steps"]
        # rauc-conf-edgecontainers.inc do_install: the keyring from RAUC_KEYRING_FILE
        keyring = layer.settings.get("RAUC_KEYRING_FILE") or ""
        if keyring:
            data = Path(keyring).read_bytes()
            _write(root / "usr/lib/rauc/ca.cert.pem", data, 0o644)
            steps["/usr/lib/rauc/ca.cert.pem"] = {
                "step": "rauc-conf-edgecontainers.inc do_install (RAUC_KEYRING_FILE, a test CA)",
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        image = layer.image_recipe()
        text = image.bb.read_text() if image.bb else ""
        if ctx.dev:
            # edgecontainers-image-dev.bb edgecontainers_dev_ssh_policy: drop the production policy lines
            body = _shell_function(text, "edgecontainers_dev_ssh_policy")
            patterns = re.findall(r"-e '/\^([A-Za-z]+)/d'", body)
            if not patterns:
                raise ConfigError("edgecontainers_dev_ssh_policy: cannot read its sed expressions")
            conf = root / "etc/ssh/sshd_config.d/50-edgecontainers.conf"
            if conf.is_file():
                kept = [ln for ln in conf.read_text().splitlines(keepends=True)
                        if not any(ln.startswith(p) for p in patterns)]  # fmt: skip
                data = "".join(kept).encode()
                _write(conf, data, 0o600)
                steps["/etc/ssh/sshd_config.d/50-edgecontainers.conf"] = {
                    "step": f"edgecontainers_dev_ssh_policy (drops {', '.join(patterns)})",
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
        else:
            # edgecontainers-image.bb edgecontainers_authorized_keys
            if "edgecontainers_authorized_keys" not in text:
                raise ConfigError("edgecontainers-image.bb has no edgecontainers_authorized_keys step any more")
            keys = layer.settings.get("EDGECONTAINERS_SSH_AUTHORIZED_KEYS") or ""
            if keys:
                (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
                data = Path(keys).read_bytes()
                _write(root / "root/.ssh/authorized_keys", data, 0o600)
                steps["/root/.ssh/authorized_keys"] = {
                    "step": "edgecontainers_authorized_keys (EDGECONTAINERS_SSH_AUTHORIZED_KEYS = the harness's "
                    "throwaway key)",
                    "sha256": hashlib.sha256(data).hexdigest(),
                }

    # ---------------------------------------------------------------- plumbing
    def _plumbing(self, ctx: BuildContext, manifest: dict) -> None:
        root = ctx.rootfs
        enable: set[str] = set()
        for item in PLUMBING:
            if not item.when(ctx):
                continue
            target = root / item.path.lstrip("/")
            content = item.content(ctx) if callable(item.content) else item.content
            if item.kind in ("file", "modify"):
                if content is None:
                    continue
                _write(target, content.encode(), item.mode if item.kind == "file" else target.stat().st_mode & 0o7777)
            elif item.kind == "symlink":
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(str(content))
            elif item.kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
            elif item.kind == "remove":
                for p in target.parent.glob(target.name):
                    p.unlink()
            elif item.kind == "enable":
                enable.add(str(content))
            elif item.kind == "base" and not target.is_file():
                raise EdgeError(f"plumbing {item.path} missing from the base root filesystem")
            manifest["plumbing"][item.path] = item.reason
        if enable:
            _chroot(root, "systemctl", "enable", *sorted(enable))
        # the fs-perms links the plumbing does not make must be Debian's already
        made = {item.path for item in PLUMBING if item.kind == "symlink" and item.path in manifest["plumbing"]}
        for path, target in oecore.fs_perms_links(ctx.layer.settings).items():
            link = root / path.lstrip("/")
            have = os.readlink(link).rstrip("/") if link.is_symlink() else None
            if path not in made and have != target:
                raise ConfigError(
                    f"FILESYSTEM_PERMS_TABLES links {path} -> {target}; the Debian base has "
                    f"{have or 'no such link'} (builder.PLUMBING)"
                )

    def _image_feature_steps(self, ctx: BuildContext, comp: Composition, manifest: dict) -> None:
        """oe-core rootfs-postcommands' steps for the image's IMAGE_FEATURES (after the
        packages and the plumbing, as ROOTFS_POSTPROCESS_COMMAND runs after do_rootfs
        installed them)."""
        root = ctx.rootfs
        steps = manifest["image_steps"]

        def write(rel: str, data: bytes, mode: int, step: str) -> None:
            _write(root / rel.lstrip("/"), data, mode)
            steps[rel] = {"step": step, "sha256": hashlib.sha256(data).hexdigest()}

        if "read-only-rootfs" in comp.features:
            hook = "oe-core read_only_rootfs_hook (IMAGE_FEATURES read-only-rootfs)"
            fstab = root / "etc/fstab"
            if fstab.is_file():
                write("/etc/fstab", oecore.read_only_fstab(fstab.read_text()).encode(), 0o644, hook)
            if (root / "etc/ssh").is_dir():
                default = root / "etc/default/ssh"
                text = default.read_text() if default.is_file() else ""
                rsa = (root / "etc/ssh/ssh_host_rsa_key").exists()
                write("/etc/default/ssh", oecore.read_only_ssh_default(text, rsa).encode(), 0o644, hook)
        # systemd_handle_machine_id: an empty machine-id (read-only-rootfs, and for presets)
        write("/etc/machine-id", b"", 0o444, "oe-core systemd_handle_machine_id (an empty /etc/machine-id)")

    # ---------------------------------------------------------------- GRUB
    def _grub_efi(self, ctx: BuildContext, out: Path) -> None:
        modules = OE_GRUB_BUILDIN.split() + (ctx.layer.settings.get("GRUB_BUILDIN") or "").split()
        tmp = ctx.rootfs / "tmp"
        (tmp / "edgecontainers-early.cfg").write_text(GRUB_EARLY_CFG)
        try:
            _chroot(ctx.rootfs, "grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/BOOT",
                    "-c", "/tmp/edgecontainers-early.cfg", "-o", "/tmp/bootx64.efi", *modules)  # fmt: skip
            shutil.move(tmp / "bootx64.efi", out)
        finally:
            (tmp / "edgecontainers-early.cfg").unlink(missing_ok=True)
            (tmp / "bootx64.efi").unlink(missing_ok=True)

    # ---------------------------------------------------------------- preload
    def app_variant(self, spec: ImageSpec, replace: dict[str, bytes | None]) -> bytes:
        """The demo app's image with some of its files replaced (None: removed), under
        the same name and tag: what a container update of the app would bring."""
        import types

        ctx = types.SimpleNamespace(layer=self.layer_for(spec), spec=spec, facts=machine_facts(spec.machine))
        return self.app_archive(ctx, replace)  # type: ignore[arg-type]

    def app_archive(self, ctx: BuildContext, replace: dict[str, bytes | None] | None = None) -> bytes:
        """The demo app's OCI image as a docker archive (see oci.py), under the name the
        preloading gives it in the engine's store (an update must bring that name)."""
        entry, oci_tag, image = self._app_image(ctx, replace)
        name = entry.stored_name(oci_tag) if ctx.spec.engine == "podman" else entry.import_ref(oci_tag)
        return docker_archive(tag=name, **image)

    def _app_image(
        self, ctx: BuildContext, replace: dict[str, bytes | None] | None = None
    ) -> tuple[Bundled, str, dict]:
        """The one app of the image recipe's BUNDLED_CONTAINERS: its entry, the container
        recipe's OCI_IMAGE_TAG and the image's content (keyword arguments of oci.py)."""
        layer = ctx.layer
        bundled = parse_bundled(layer.image_recipe().get("BUNDLED_CONTAINERS"), ctx.spec.engine)
        if len(bundled) != 1:
            raise ConfigError(f"the test image supports exactly one bundled container ({bundled})")
        entry = bundled[0]
        if entry.runtime != ctx.spec.engine:
            raise ConfigError(f"BUNDLED_CONTAINERS imports {entry.container} for {entry.runtime}, "
                              f"the image's engine is {ctx.spec.engine}")  # fmt: skip
        container = layer.recipe(entry.container)
        app_recipe = layer.recipe(container.get("CONTAINER_APP"))
        files = [ImageFile(e.dest, app_recipe.render(e), e.mode) for e in app_recipe.edge_files()]
        if replace:
            unknown = set(replace) - {f.path for f in files}
            if unknown:
                raise ConfigError(f"{app_recipe.name} installs no {', '.join(sorted(unknown))}")
            files = [ImageFile(f.path, replace[f.path], f.mode) if f.path in replace else f  # type: ignore[arg-type]
                     for f in files if not (f.path in replace and replace[f.path] is None)]  # fmt: skip
        image = {
            "busybox": self.busybox(ctx.facts.debian_arch),
            "files": files,
            "cmd": container.get("CONTAINER_APP_CMD").split(),
            "user": container.get("OCI_IMAGE_RUNTIME_UID") or "0",
            "ports": container.words("OCI_IMAGE_PORTS"),
            "architecture": ctx.facts.debian_arch,
        }
        return entry, container.get("OCI_IMAGE_TAG") or "latest", image

    def busybox(self, arch: str) -> bytes:
        """/bin/busybox of Debian's busybox-static (downloaded once with apt-get)."""
        return self._deb_program("busybox-static", "busybox", arch)

    def deb(self, package: str, arch: str) -> Path:
        """The cached .deb of a Debian package, downloaded once with apt-get (under a
        lock: two downloads into one apt directory would fight over its lists)."""
        debs = self.cache / "debs"

        def cached() -> list[Path]:  # an Architecture: all package is named _all
            return sorted(debs.glob(f"{package}_*_{arch}.deb")) + sorted(debs.glob(f"{package}_*_all.deb"))

        with _locked(self.cache / "locks" / "apt.lock"):
            found = cached()
            if not found:
                self._apt_download([package], debs, arch)
                found = cached()
        if not found:
            raise EdgeError(f"apt-get download of {package} ({arch}) left no .deb in {debs}")
        return found[-1]

    def _deb_program(self, package: str, program: str, arch: str) -> bytes:
        """/usr/bin/PROGRAM (or /bin/PROGRAM) of a Debian package, downloaded once with apt-get."""
        deb = self.deb(package, arch)
        proc = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
        import io

        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
            for member in tar.getmembers():
                if member.name.lstrip("./") in (f"bin/{program}", f"usr/bin/{program}") and member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    return f.read()
        raise EdgeError(f"{deb} has no bin/{program}")

    def _apt_env(self, arch: str) -> dict[str, str]:
        """apt's configuration for the cache's own lists: trixie and trixie-backports
        (backports' priority is 100, so a package in both comes from trixie)."""
        apt = self.cache / "apt"
        for sub in ("lists/partial", "cache/archives/partial", "etc"):
            (apt / sub).mkdir(parents=True, exist_ok=True)
        (apt / "etc/sources.list").write_text(
            f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n"
            f"deb [signed-by={KEYRING}] {MIRROR} {SUITE}-backports main\n"
        )
        conf = apt / "apt.conf"
        conf.write_text(
            f'Dir::Etc::SourceList "{apt}/etc/sources.list";\nDir::Etc::SourceParts "/nonexistent";\n'
            f'Dir::State::Lists "{apt}/lists";\nDir::Cache "{apt}/cache";\nDir::State::status "/dev/null";\n'
            f'APT::Architecture "{arch}";\nAPT::Architectures "{arch}";\n'
        )
        return {**os.environ, "APT_CONFIG": str(conf)}

    def _apt_download(self, packages: list[str], dest: Path, arch: str) -> None:
        env = self._apt_env(arch)
        run(["apt-get", "-q", "update"], env=env, capture=True)
        dest.mkdir(parents=True, exist_ok=True)
        run(["apt-get", "-q", "download", *packages], env=env, cwd=dest, capture=True)

    def package_names(self, prefix: str, arch: str) -> list[str]:
        """The names of the Debian packages (trixie and its backports) that start with
        ``prefix``, from freshly updated lists."""
        with _locked(self.cache / "locks" / "apt.lock"):
            env = self._apt_env(arch)
            run(["apt-get", "-q", "update"], env=env, capture=True)
            proc = run(["apt-cache", "pkgnames", prefix], env=env, capture=True)
        return sorted(proc.stdout.split())

    def _preload(self, ctx: BuildContext, comp: Composition, artifacts: Path) -> list[str]:
        """Boot the new rootfs once (init=/bin/sh, read-write) and put the app image into
        the engine's store, then run the layer's relocation step; returns the paths the
        boot changed (only the stores may change).

        podman as meta-virtualization's container-cross-install does it: skopeo (from
        Debian's package, only for this boot: the image has none) copies the OCI image
        layout into containers-storage under the name the bundling gives it, with the
        vpdmn helper's storage.conf (vfs, on a tmpfs); that store is archived and
        unpacked into /var/lib/containers/storage with --no-same-owner, as the class
        extracts the helper's store.  docker: ``docker load`` into dockerd's store."""
        from ..qemu.console import Console, _Tee
        from ..qemu.vm import Drive, QemuVM, VMConfig

        image_inc = next(iter(sorted(ctx.layer.path.glob("recipes-core/images/edgecontainers-image.inc"))))
        body = _shell_function(image_inc.read_text(), "edgecontainers_relocate_preloaded_images")
        values = {**OE_PATHS, "IMAGE_ROOTFS": ""}
        script = re.sub(r"\$\{([A-Za-z_]+)\}", lambda m: values.get(m.group(1), m.group(0)), body)
        if "${" in script:
            raise ConfigError(f"edgecontainers_relocate_preloaded_images uses unknown variables: {script}")
        payload = artifacts / "preload.tar"
        import io

        engine = ctx.spec.engine
        files: dict[str, bytes] = {"relocate.sh": ("set -e\n" + script + "\n").encode()}
        executable = {"skopeo"}
        if engine == "podman":
            entry, oci_tag, image = self._app_image(ctx)
            import_ref = entry.import_ref(oci_tag)
            for path, data in oci_layout(ref_name=oci_tag, **image).items():
                files[f"{entry.oci_dir(oci_tag)}/{path}"] = data
            files["skopeo"] = self._deb_program("skopeo", "skopeo", ctx.facts.debian_arch)
            files["vpdmn/storage.conf"] = VPDMN_STORAGE_CONF.encode()
            files["vpdmn/policy.json"] = b'{"default":[{"type":"insecureAcceptAnything"}]}\n'
        else:
            files["app.tar"] = self.app_archive(ctx)
        with tarfile.open(payload, "w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o755 if name in executable else 0o644
                tar.addfile(info, io.BytesIO(data))
        vm = ARCH_VM[ctx.facts.debian_arch]
        cfg = VMConfig(
            arch=vm.qemu_arch, machine=vm.machine, cpu=vm.cpu, memory_mib=1024, smp=2,
            kernel=artifacts / vm.direct_kernel, initrd=artifacts / "initrd.img",
            append=f"root=/dev/vda rw rootfstype=ext4 console={vm.console} init=/bin/sh panic=-1 quiet",
            drives=[Drive(artifacts / "rootfs.ext4"), Drive(payload, readonly=True)], no_reboot=True,
        )  # fmt: skip
        tee = _Tee(artifacts / "preload-console.log")
        with QemuVM(cfg, workdir=artifacts / "preload-vm") as qemu:
            console = Console(qemu.spawn(logfile=tee), tee)
            console.expect([r"[#$] $"], 300, "preload: shell of init=/bin/sh")
            console.setup_shell()
            for cmd in (
                "export HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t tmpfs tmpfs /run",
                "mount -t tmpfs tmpfs /tmp; mount -t cgroup2 cgroup2 /sys/fs/cgroup",
                "mkdir -p /dev/shm /dev/pts; mount -t tmpfs tmpfs /dev/shm; mount -t devpts devpts /dev/pts",
                "mount -t tmpfs tmpfs /var/volatile; mkdir -p /var/volatile/tmp /var/volatile/log",
                "touch /tmp/.stamp; sleep 1; tar -xf /dev/vdb -C /tmp",
            ):
                console.run(cmd, timeout=60, check=True)
            if engine == "podman":
                store = PRELOAD_GRAPHROOT
                vpdmn = "CONTAINERS_STORAGE_CONF=/tmp/vpdmn/storage.conf"
                for cmd in (
                    # the helper VM's store: a tmpfs over /var/lib/containers (vpdmn-init.sh)
                    f"mkdir -p {Path(store).parent}; mount -t tmpfs tmpfs {Path(store).parent}; mkdir -p {store}",
                    f"{vpdmn} /tmp/skopeo --policy /tmp/vpdmn/policy.json copy --quiet "
                    f"oci:/tmp/{entry.oci_dir(oci_tag)} containers-storage:{import_ref}",
                ):
                    console.run(cmd, timeout=600, check=True)
                images = console.run(f"{vpdmn} podman images --format '{{{{.Repository}}}}:{{{{.Tag}}}}'",
                                     timeout=120, check=True)  # fmt: skip
                for cmd in (
                    f"tar -C {store} -cf /tmp/storage.tar .; umount {Path(store).parent}",
                    f"mkdir -p {store}; tar -xf /tmp/storage.tar -C {store} --no-same-owner",
                ):
                    console.run(cmd, timeout=600, check=True)
            else:
                console.run("(dockerd --iptables=false --ip6tables=false --bridge=none >/tmp/dockerd.log 2>&1 &)",
                            timeout=30, check=True)  # fmt: skip
                console.run("for i in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 1; done; "
                            "docker info >/dev/null || { tail -20 /tmp/dockerd.log; false; }", timeout=180,
                            check=True)  # fmt: skip
                console.run("docker load -i /tmp/app.tar", timeout=600, check=True)
                images = console.run("docker images --format '{{.Repository}}:{{.Tag}}'", timeout=120, check=True)
                console.run("kill $(cat /run/docker.pid); for i in $(seq 60); do [ -e /run/docker.pid ] || break; "
                            "sleep 1; done; sleep 2", timeout=120, check=True)  # fmt: skip
            (artifacts / "preloaded-images.txt").write_text(images.output)
            # Only the store goes into the image (meta-virtualization copies just the store
            # out of its helper VM); podman's blob-info cache is a by-product of loading.
            console.run("rm -rf /var/lib/containers/cache", timeout=60, check=True)
            console.run("sh /tmp/relocate.sh", timeout=300, check=True)
            changed = console.run("find / -xdev -newer /tmp/.stamp ! -type d | sort", timeout=300, check=True).output
            console.run("sync; mount -o remount,ro / || true; sync", timeout=120)
            console.sendline("echo o > /proc/sysrq-trigger")
            if not qemu.wait_exit(120):
                raise EdgeError("preload VM did not power off")
        tee.close()
        shutil.rmtree(artifacts / "preload-vm", ignore_errors=True)
        payload.unlink()
        proc = run(["e2fsck", "-fy", artifacts / "rootfs.ext4"], check=False, capture=True)
        if proc.returncode not in (0, 1):
            raise CommandFailed(["e2fsck", "-fy", "rootfs.ext4"], proc.returncode, output=proc.stdout)
        return [p for p in changed.splitlines() if p.strip()]

    # ---------------------------------------------------------------- disk
    def _disk(self, ctx: BuildContext, key: str, artifacts: Path) -> dict[str, str]:
        """The disk per the layer's wks: GPT (grub) or MBR (uboot: four primary
        partitions, the boot partition active); returns partition name -> PARTUUID."""
        wks = ctx.layer.wks()
        if wks.ptable not in ("gpt", "msdos"):
            raise ConfigError(f"{wks.path.name}: partition table '{wks.ptable}' is not built here")
        names = wks.names()
        parts = []
        for name, part in zip(names, wks.parts, strict=True):
            img = artifacts / f"part-{name}.img"
            if part.source == "rootfs":
                img = artifacts / "rootfs.ext4"
            elif part.fstype == "vfat" and wks.ptable == "gpt":
                self._esp(ctx, part, img)
            elif part.fstype == "vfat":
                self._uboot_boot_partition(ctx, part, img)
            elif part.fstype == "ext4":
                run(["truncate", "-s", f"{part.size_mib}M", img])
                run(["mkfs.ext4", "-q", "-F", "-L", part.label or "", "-U", _uuid(key, f"fs-{name}"), img],
                    capture=True)  # fmt: skip
            else:
                raise ConfigError(f"{wks.path.name}: unsupported fstype '{part.fstype}'")
            parts.append((name, part, img))
        if wks.ptable == "msdos" and len(parts) > 4:
            raise ConfigError(f"{wks.path.name}: more than four partitions on an MBR disk are not built here")
        disk = artifacts / "disk.img"
        # wic: a GPT disk identifier is a UUID, an MBR one 32 bits
        signature = int(_uuid(key, "disk").replace("-", "")[:8], 16) or 1
        if wks.ptable == "gpt":
            lines = ["label: gpt", f"label-id: {_uuid(key, 'disk')}", "unit: sectors", ""]
        else:
            lines = ["label: dos", f"label-id: 0x{signature:08x}", "unit: sectors", ""]
        offsets = []
        start_kib = 0
        for name, part, img in parts:
            align = max(part.align_kib, 1)
            start_kib = -(-max(start_kib, 1024) // align) * align
            size_kib = part.size_mib * 1024
            if img.stat().st_size > size_kib * 1024:
                raise EdgeError(f"{img.name} is bigger than its partition ({part.size_mib} MiB)")
            if wks.ptable == "gpt":
                ptype = part.part_type or GPT_LINUX_FS
                attrs = ', attrs="LegacyBIOSBootable"' if part.active else ""
                puuid = _uuid(key, f"part-{name}")
                lines.append(f'start={start_kib * 2}, size={size_kib * 2}, type={ptype}, uuid={puuid}, '
                             f'name="{name}"{attrs}')  # fmt: skip
            else:
                # wic's MBR system ids: 0x0c for a vfat partition, 0x83 for Linux ones
                ptype = part.part_type or ("0c" if part.fstype == "vfat" else "83")
                lines.append(f"start={start_kib * 2}, size={size_kib * 2}, type={ptype}"
                             f"{', bootable' if part.active else ''}")  # fmt: skip
            offsets.append((img, start_kib))
            start_kib += size_kib
        total = (start_kib + 1024) * 1024
        run(["truncate", "-s", str(total), disk])
        run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", disk], input="\n".join(lines) + "\n", capture=True)
        for img, start in offsets:
            run(["dd", f"if={img}", f"of={disk}", "bs=1M", f"seek={start // 1024}", "conv=notrunc,sparse",
                 "status=none"])  # fmt: skip
            if img.name.startswith("part-"):
                img.unlink()
        from ..qemu.session import read_partuuids

        if wks.ptable == "gpt":
            return read_partuuids(disk)
        # an MBR partition's PARTUUID: the disk signature and the partition number
        return {name: f"{signature:08x}-{n:02x}" for n, name in enumerate(names, 1)}

    def _uboot_boot_partition(self, ctx: BuildContext, part, img: Path) -> None:
        """The U-Boot boot partition (wic's bootimg_partition with IMAGE_BOOT_FILES):
        boot.scr as edgecontainers-uboot-script makes it (boot.cmd.in rendered, then
        ``mkimage -T script``).  No state file: boot.scr writes it on the first boot."""
        boot_files = (ctx.layer.settings.get("IMAGE_BOOT_FILES") or "").split()
        if boot_files != ["boot.scr"]:
            raise ConfigError(f"IMAGE_BOOT_FILES of {ctx.machine} is {boot_files}; the test image makes boot.scr only")
        scr = ctx.workdir / "boot.scr"
        compile_boot_script(ctx.layer, scr)
        run(["mkfs.vfat", "-C", "-n", part.label or "", img, str(part.size_mib * 1024)], capture=True)
        run(["mcopy", "-i", img, scr, "::/boot.scr"])
        (ctx.workdir / "boot-files.json").write_text(
            json.dumps({"boot.scr": hashlib.sha256(scr.read_bytes()).hexdigest()}, indent=1)
        )

    def _esp(self, ctx: BuildContext, part, img: Path) -> None:
        grub = ctx.layer.recipe("edgecontainers-grub-cfg")
        grub_cfg = grub.render(grub.find("grub.cfg.in"))
        # edgecontainers-grub-cfg do_compile: a 1024-byte environment block padded with '#'
        block = "# GRUB Environment Block\n" + grub.find("grubenv.vars").read_text()
        if len(block) > 1024:
            raise ConfigError("grubenv.vars does not fit in a 1024-byte GRUB environment block")
        grubenv = (block + "#" * (1024 - len(block))).encode()
        run(["mkfs.vfat", "-C", "-n", part.label or "", img, str(part.size_mib * 1024)], capture=True)
        files = {
            "EFI/BOOT/bootx64.efi": (ctx.workdir / "bootx64.efi").read_bytes(),
            "EFI/BOOT/grub.cfg": grub_cfg,
            "EFI/BOOT/grubenv": grubenv,
        }
        run(["mmd", "-i", img, "::/EFI", "::/EFI/BOOT"])
        staging = ctx.workdir / "esp"
        staging.mkdir(exist_ok=True)
        for name, data in files.items():
            local = staging / Path(name).name
            local.write_bytes(data)
            run(["mcopy", "-i", img, local, f"::/{name}"])
        (ctx.workdir / "esp-files.json").write_text(
            json.dumps({name: hashlib.sha256(data).hexdigest() for name, data in files.items()}, indent=1)
        )
        shutil.rmtree(staging)

    # ---------------------------------------------------------------- metadata
    def _write_metadata(self, ctx: BuildContext, comp: Composition, key: str, artifacts: Path,
                        partuuids: dict[str, str]) -> None:  # fmt: skip
        from ..qemu.qemuboot import write_qemuboot

        spec = ctx.spec
        settings = ctx.layer.settings
        meta = {
            "key": key,
            "name": spec.name,
            "machine": spec.machine,
            "engine": spec.engine,
            "variant": spec.variant,
            "tag": spec.tag,
            "layer": str(ctx.layer.path),
            "suite": SUITE,
            "debian_packages": comp.debian,
            "recipes": [r.name for r in comp.recipes],
            "features": comp.features,
            "partuuids": partuuids,
            "kernel": ctx.kernel_file.name,
            "kernel_args": settings["EDGECONTAINERS_KERNEL_ARGS"],
            "ssh_key": "" if spec.dev else str(self.ssh_key),
            "rauc_key_dir": str(self.rauc_key_dir),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (artifacts / "metadata.json").write_text(json.dumps(meta, indent=1))
        final_dir = self.cache / "images" / artifacts.name.removesuffix(".partial")
        vm = ARCH_VM[ctx.facts.debian_arch]
        image = ctx.layer.image_recipe()
        values = {
            "deploy_dir_image": str(final_dir),
            "image_link_name": spec.name,
            "machine": spec.machine,
            "qb_system_name": vm.system,
            "qb_machine": f"-machine {vm.machine}",
            "qb_cpu": f"-cpu {vm.cpu}",
            "qb_mem": image.get("QB_MEM") or "-m 1024",
            "qb_default_fstype": "img",
            "disk_image": "disk.img",
            # not runqemu's: what the harness needs to know about the Debian test image
            "edge_variant": spec.variant,
            "edge_engine": spec.engine,
            "edge_ssh_key": meta["ssh_key"],
            "edge_direct_kernel": vm.direct_kernel,
            "edge_direct_initrd": "initrd.img",
            "edge_kernel_args": meta["kernel_args"],
            "edge_partuuids": json.dumps(partuuids),
        }
        # the image recipe's QB_DEFAULT_BIOS (u-boot.bin, copied next to the disk as
        # oe-core's u-boot deploys it) and QB_ROOTFS_OPT (the disk as virtio-blk-pci)
        for var in ("QB_DEFAULT_BIOS", "QB_ROOTFS_OPT"):
            value = image.get(var)
            if value:
                values[var.lower()] = value
        bios = values.get("qb_default_bios")
        if bios and not (artifacts / bios).is_file():
            raise EdgeError(f"QB_DEFAULT_BIOS is {bios}, which the test image does not have")
        write_qemuboot(artifacts / f"{spec.name}.qemuboot.conf", values)


# ---------------------------------------------------------------- small helpers
def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_bytes(data)
    os.chown(path, 0, 0)
    path.chmod(mode)


def _chroot(root: Path, *cmd: str) -> None:
    run(["chroot", root, *cmd], capture=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})


def _shell_function(text: str, name: str) -> str:
    m = re.search(rf"^{re.escape(name)}\(\)\s*\{{\n(.*?)\n\}}", text, re.M | re.S)
    if not m:
        raise ConfigError(f"shell function {name}() not found in the layer")
    return m.group(1)


# oe-core kernel-arch.bbclass map_uboot_arch: TARGET_ARCH -> UBOOT_ARCH
UBOOT_ARCH = {"aarch64": "arm64", "x86-64": "x86"}


def compile_boot_script(layer: Layer, out: Path, *, source: Path | None = None) -> bytes:
    """boot.scr as edgecontainers-uboot-script makes it: boot.cmd.in (or ``source``,
    a modified copy) rendered with the recipe's EDGE_SUBST_VARS (do_render), then the
    mkimage command of the recipe's do_compile, run with its ${UBOOT_ARCH} and ${B}.
    Returns the rendered boot.cmd."""
    rec = layer.recipe("edgecontainers-uboot-script")
    if rec.bb is None:
        raise ConfigError("edgecontainers-uboot-script has no recipe")
    rendered = rec.render(source or rec.find("boot.cmd.in"))
    body = _shell_function(rec.bb.read_text(), "do_compile")
    with tempfile.TemporaryDirectory(prefix="edgecontainers-bootscr-") as tmp:
        (Path(tmp) / "boot.cmd").write_bytes(rendered)
        values = {"UBOOT_ARCH": UBOOT_ARCH[machine_facts(layer.machine).arch], "B": tmp}
        command = re.sub(r"\$\{([A-Za-z_]+)\}", lambda m: values.get(m.group(1), m.group(0)), body)
        argv = shlex.split(command)
        if "${" in command or not argv or argv[0] != "mkimage":
            raise ConfigError(f"edgecontainers-uboot-script do_compile is not one mkimage command: {body}")
        run([require("mkimage"), *argv[1:]], capture=True)
        shutil.copyfile(Path(tmp) / "boot.scr", out)
    return rendered


def arm64_image(vmlinuz: Path) -> bytes:
    """The plain arm64 ``Image`` (what booti and oe-core's KERNEL_IMAGETYPE "Image"
    are) of Debian's vmlinuz: itself when it is one, else the payload of its
    EFI zboot or gzip wrapper, decompressed."""
    data = vmlinuz.read_bytes()

    def plain(blob: bytes) -> bool:
        return blob[0x38:0x3C] == b"ARM\x64"

    if plain(data):
        return data
    tools = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dc"], "xz": ["xz", "-dc"], "lzma": ["xz", "-dc"]}
    if data[4:8] == b"zimg":  # EFI zboot: payload offset and size, then the compression's name
        offset, size = struct.unpack_from("<II", data, 8)
        kind = data[0x18:0x38].split(b"\0")[0].decode()
        payload, cmd = data[offset : offset + size], tools.get(kind)
    elif data[:3] == b"\x1f\x8b\x08":
        payload, cmd = data, tools["gzip"]
    else:
        payload, cmd = b"", None
    if cmd is not None:
        proc = subprocess.run(cmd, input=payload, capture_output=True, check=False)
        if plain(proc.stdout):
            return proc.stdout
    raise EdgeError(f"{vmlinuz} is not an arm64 Image, nor a compressed one this builder knows")


def extract_vmlinux(vmlinuz: Path, out: Path) -> None:
    """The uncompressed kernel (ELF with a PVH entry) out of a compressed bzImage:
    direct boot skips the decompressor, which is slow under TCG."""
    data = vmlinuz.read_bytes()
    magics = {b"\x28\xb5\x2f\xfd": ["zstd", "-dc"], b"\xfd7zXZ\x00": ["xz", "-dc"], b"\x1f\x8b\x08": ["gzip", "-dc"]}
    for magic, cmd in magics.items():
        offset = data.find(magic)
        while offset >= 0:
            proc = subprocess.run(cmd, input=data[offset:], capture_output=True, check=False)
            if proc.stdout[:4] == b"\x7fELF":
                out.write_bytes(proc.stdout)
                return
            offset = data.find(magic, offset + 1)
    raise EdgeError(f"cannot find the compressed kernel inside {vmlinuz}")
