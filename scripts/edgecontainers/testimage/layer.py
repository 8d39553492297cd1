"""What meta-edgecontainers puts on a device, read from the layer itself.

The layer declares every on-target file of its recipes in ``EDGE_FILES``
(see ``classes/edgecontainers-files.bbclass``), the directories it creates in
``EDGE_DIRS`` and the units it enables in ``SYSTEMD_SERVICE:${PN}``.  This
module reads those from the recipe text, resolves each source the way
BitBake's FILESPATH does (``files/``, machine subdirectories,
``FILESEXTRAPATHS`` of bbappends) and renders the ``@NAME@`` placeholders,
so the QEMU test image installs exactly what the layer ships.

Settings come from the distro configuration (``conf/distro/edgecontainers.conf``
and its includes) through :func:`layer_settings`, the one place that knows
the values BitBake would compute with inline Python.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import ConfigError
from .bbparse import BBData, Unresolved, parse_into

# OE path variables with usrmerge (bitbake.conf).
OE_PATHS: dict[str, str] = {
    "prefix": "/usr",
    "exec_prefix": "/usr",
    "base_prefix": "",
    "root_prefix": "/usr",
    "sysconfdir": "/etc",
    "localstatedir": "/var",
    "bindir": "/usr/bin",
    "sbindir": "/usr/sbin",
    "base_bindir": "/usr/bin",
    "base_sbindir": "/usr/sbin",
    "libdir": "/usr/lib",
    "base_libdir": "/usr/lib",
    "nonarch_libdir": "/usr/lib",
    "nonarch_base_libdir": "/usr/lib",
    "libexecdir": "/usr/libexec",
    "datadir": "/usr/share",
    "includedir": "/usr/include",
    "systemd_unitdir": "/usr/lib/systemd",
    "systemd_system_unitdir": "/usr/lib/systemd/system",
    "systemd_user_unitdir": "/usr/lib/systemd/user",
    "ROOT_HOME": "/root",
}


@dataclass(frozen=True)
class MachineFacts:
    """What the machine configurations outside this layer (oe-core, meta-raspberrypi) say."""

    name: str
    arch: str  # TRANSLATED_TARGET_ARCH override
    machine_overrides: tuple[str, ...]  # MACHINEOVERRIDES, lowest priority first
    kernel_imagetype: str
    debian_arch: str


MACHINES: dict[str, MachineFacts] = {
    # oe-core conf/machine/qemux86-64.conf (KERNEL_IMAGETYPE from qemu.inc: bzImage)
    "qemux86-64": MachineFacts("qemux86-64", "x86-64", ("qemuall", "qemux86-64"), "bzImage", "amd64"),
    # oe-core conf/machine/qemuarm64.conf: KERNEL_IMAGETYPE = "Image"
    "qemuarm64": MachineFacts("qemuarm64", "aarch64", ("qemuall", "qemuarm64"), "Image", "arm64"),
    # meta-raspberrypi: 64-bit U-Boot boots the plain Image
    "raspberrypi4-64": MachineFacts("raspberrypi4-64", "aarch64", ("rpi", "raspberrypi4-64"), "Image", "arm64"),
    "raspberrypi5": MachineFacts("raspberrypi5", "aarch64", ("rpi", "raspberrypi5"), "Image", "arm64"),
}

DISTRO = "edgecontainers"
_LEFTOVER = re.compile(rb"@(?:EDGECONTAINERS|KERNEL)_[A-Z0-9_]+@")

# Files in the layer's recipe files/ directories that do not go into the root
# filesystem through EDGE_FILES, and where they go instead.
NOT_ON_TARGET: dict[str, str] = {
    "recipes-kernel/linux/files/edgecontainers-kmeta/edgecontainers-containers.cfg": "kernel fragment (built in)",
    "recipes-kernel/linux/files/edgecontainers-kmeta/edgecontainers-hardening.cfg": "kernel fragment (built in)",
    "recipes-kernel/linux/files/edgecontainers-kmeta/edgecontainers.scc": "kernel feature (built in)",
    "recipes-bsp/u-boot/files/edgecontainers-ab.cfg": "U-Boot config fragment (built into u-boot.bin)",
    "recipes-bsp/u-boot/files/edgecontainers-production.cfg": "U-Boot config fragment (built into u-boot.bin)",
    "recipes-core/busybox/files/edgecontainers-httpd.cfg": "busybox config fragment (httpd for the demo image)",
    "recipes-bsp/edgecontainers-boot/files/grub.cfg.in": "rendered to EFI/BOOT/grub.cfg on the ESP",
    "recipes-bsp/edgecontainers-boot/files/grubenv.vars": "initial EFI/BOOT/grubenv block on the ESP",
    "recipes-bsp/edgecontainers-boot/files/boot.cmd.in": "rendered to boot.scr on the U-Boot boot partition",
    "recipes-demo/edgecontainers-demo/files/edgecontainers-demo": "in the demo app's OCI image (-demo-app)",
    "recipes-demo/edgecontainers-demo/files/health": "in the demo app's OCI image (edgecontainers-demo-app)",
    "recipes-demo/edgecontainers-demo/files/index.html": "in the demo app's OCI image (edgecontainers-demo-app)",
    "recipes-demo/edgecontainers-demo/files/version": "in the demo app's OCI image (edgecontainers-demo-app)",
}


def machine_facts(machine: str) -> MachineFacts:
    try:
        return MACHINES[machine]
    except KeyError:
        raise ConfigError(f"unknown machine '{machine}'; known: {', '.join(MACHINES)}") from None


def overrides_for(machine: str, pn: str | None = None) -> list[str]:
    """OVERRIDES of bitbake.conf for this machine, lowest priority first."""
    facts = machine_facts(machine)
    result = ["linux", facts.arch]
    if pn:
        result.append(f"pn-{pn}")
    result += [*facts.machine_overrides, DISTRO, "class-target", "libc-glibc", "forcevariable"]
    return result


def files_overrides(machine: str) -> list[str]:
    """FILESOVERRIDES (TRANSLATED_TARGET_ARCH:MACHINEOVERRIDES:DISTROOVERRIDES)."""
    facts = machine_facts(machine)
    return [facts.arch, *facts.machine_overrides, DISTRO]


def default_layer() -> Path:
    from ..project import Project

    return Project.discover().layer


# ---------------------------------------------------------------- settings
# The inline-Python expressions of the distro configuration, each computed
# explicitly.  If the layer changes one of them, layer_settings() refuses
# (ConfigError) instead of silently computing something else.
def _kernel_args_quiet(d: BBData) -> str:
    return "" if d.get("EDGECONTAINERS_SERIAL_CONSOLE") == "1" else " quiet loglevel=3"


def _key_file(name: str):
    def compute(d: BBData) -> str:
        key_dir = d.get("EDGECONTAINERS_KEY_DIR") or ""
        return f"{key_dir}/{name}" if key_dir else ""

    return compute


_DISTRO_PYTHON = {
    "'' if d.getVar('EDGECONTAINERS_SERIAL_CONSOLE') == '1' else ' quiet loglevel=3'": _kernel_args_quiet,
    "'${EDGECONTAINERS_KEY_DIR}/signing.key.pem' if d.getVar('EDGECONTAINERS_KEY_DIR') else ''": _key_file(
        "signing.key.pem"
    ),
    "'${EDGECONTAINERS_KEY_DIR}/signing.cert.pem' if d.getVar('EDGECONTAINERS_KEY_DIR') else ''": _key_file(
        "signing.cert.pem"
    ),
    "'${EDGECONTAINERS_KEY_DIR}/ca.cert.pem' if d.getVar('EDGECONTAINERS_KEY_DIR') else ''": _key_file("ca.cert.pem"),
}
# Variables whose value needs one of the expressions above; layer_settings
# must produce them (the lead's BitBake check compares them with bitbake -e).
EXPLICIT_VARIABLES = (
    "EDGECONTAINERS_KERNEL_ARGS",
    "RAUC_KEY_FILE",
    "RAUC_CERT_FILE",
    "RAUC_KEYRING_FILE",
)


def _distro_python(expr: str, d: BBData) -> str:
    compute = _DISTRO_PYTHON.get(" ".join(expr.split()))
    if compute is None:
        raise Unresolved(expr)
    return compute(d)


def layer_settings(
    machine: str,
    engine: str,
    dev: bool,
    *,
    layer: Path | None = None,
    key_dir: str = "",
    ssh_authorized_keys: str = "",
) -> dict[str, str]:
    """The distro settings BitBake would see for ``machine``, ``engine`` and the
    dev (``kas/opt/dev.yml``) or production image.

    * ``EDGECONTAINERS_ENGINE = engine`` and, for ``dev``,
      ``EDGECONTAINERS_SERIAL_CONSOLE = "1"`` are set first, as local.conf does
      (kas/opt/docker.yml, kas/opt/dev.yml); ``EDGECONTAINERS_KEY_DIR`` and
      ``EDGECONTAINERS_SSH_AUTHORIZED_KEYS`` come from the environment in kas
      (kas/base.yml ``env``), here from the keyword arguments.
    * Then ``conf/distro/edgecontainers.conf`` and its includes are read with
      the machine's OVERRIDES.
    * Inline Python: ``EDGECONTAINERS_KERNEL_ARGS`` appends `` quiet loglevel=3``
      unless ``EDGECONTAINERS_SERIAL_CONSOLE`` is "1"; ``RAUC_KEY_FILE``,
      ``RAUC_CERT_FILE`` and ``RAUC_KEYRING_FILE`` are
      ``$EDGECONTAINERS_KEY_DIR/{signing.key,signing.cert,ca.cert}.pem`` when
      the key directory is set, else empty.  Any other inline Python in the
      distro configuration leaves its variable out of the result.
    * From outside the layer: ``KERNEL_IMAGETYPE`` (the machine configuration,
      :data:`MACHINES`), ``KERNEL_BOOTCMD`` (the ``??=`` default of
      edgecontainers-uboot-script.bb), the OE path variables (:data:`OE_PATHS`).

    Covers every variable in EDGE_SUBST_VARS of every recipe.
    """
    layer = layer or default_layer()
    facts = machine_facts(machine)
    d = BBData(overrides=overrides_for(machine), python=_distro_python)
    for name, value in OE_PATHS.items():
        d.set(name, value)
    d.set("MACHINE", machine)
    d.set("TRANSLATED_TARGET_ARCH", facts.arch)
    d.set("KERNEL_IMAGETYPE", facts.kernel_imagetype)
    d.set("EDGECONTAINERS_ENGINE", engine)
    if dev:
        d.set("EDGECONTAINERS_SERIAL_CONSOLE", "1")
    d.set("EDGECONTAINERS_KEY_DIR", key_dir)
    d.set("EDGECONTAINERS_SSH_AUTHORIZED_KEYS", ssh_authorized_keys)
    conf = layer / "conf" / "distro" / f"{DISTRO}.conf"
    if not conf.is_file():
        raise ConfigError(f"{conf} not found: not a meta-edgecontainers layer")
    parse_into(d, conf, search=[layer])
    engines = (d.get("EDGECONTAINERS_ENGINES") or "").split()
    if engine not in engines:
        raise ConfigError(f"unknown engine '{engine}'; the distro supports: {', '.join(engines)}")

    settings: dict[str, str] = {}
    for var in d.variables():
        if var in ("THISDIR", "FILE"):
            continue
        try:
            value = d.get(var)
        except Unresolved:
            continue
        if value is not None:
            settings[var] = value
    missing = [v for v in EXPLICIT_VARIABLES if v not in settings]
    if missing:
        raise ConfigError(
            f"the distro configuration computes {', '.join(missing)} with inline Python that "
            "layer_settings() does not know; update edgecontainers/testimage/layer.py"
        )
    # Variables of EDGE_SUBST_VARS the distro does not set get the default of the
    # recipe that uses them: KERNEL_BOOTCMD (edgecontainers-uboot-script: the
    # machine does not set it), the hawkBit server of edgecontainers-hawkbit, ...
    for recipe in sorted([*layer.glob("recipes-*/*/*.bb"), *layer.glob("recipes-*/*/*.bbappend")]):
        text = recipe.read_text()
        if "EDGE_SUBST_VARS" not in text:
            continue
        pn = recipe.stem.partition("_")[0]
        rd = BBData(overrides=overrides_for(machine, pn), python=_recipe_python)
        for var, value in settings.items():
            rd.set(var, value)
        rd.set("PN", pn)
        rd.set("DISTRO", DISTRO)
        rd.set("CLASSOVERRIDE", "class-target")
        parse_into(rd, recipe, search=[layer], class_dirs=[layer / "classes"])
        try:
            names = (rd.get("EDGE_SUBST_VARS") or "").split()
        except Unresolved:
            continue
        for name in names:
            if name not in settings:
                try:
                    value = rd.get(name)
                except Unresolved:
                    continue
                if value is not None:
                    settings[name] = value
    return settings


# ---------------------------------------------------------------- recipes
_SAFE_BUILTINS = {
    name: getattr(builtins, name)
    for name in ("len", "str", "int", "sorted", "set", "list", "any", "all", "bool", "min", "max")
}


def _recipe_python(expr: str, d: BBData) -> str:
    """Inline Python in recipes (``require ${@'x.inc' if d.getVar('DISTRO') == ...}``,
    conditional SRC_URI entries, the app list of the image recipe): evaluated with
    a ``d`` that only offers getVar over the recipe's variables.  Anything that
    needs BitBake's modules (bb, oe) or class functions is left unresolved."""
    code = d.expand(expr) if "${" in expr else expr
    try:
        value = eval(code, {"__builtins__": _SAFE_BUILTINS, "d": d}, {})  # our own layer's metadata
    except (NameError, AttributeError, TypeError) as exc:
        raise Unresolved(expr) from exc
    return "" if value is None else str(value)


@dataclass(frozen=True)
class FileEntry:
    """One EDGE_FILES entry: SOURCE:DESTINATION[:MODE], resolved."""

    recipe: str
    source: str
    path: Path  # the file in the layer FILESPATH found
    dest: str  # absolute path on the target
    mode: int


@dataclass
class Recipe:
    name: str
    layer: Path
    machine: str
    bb: Path | None
    appends: list[Path]
    settings: dict[str, str]
    version: str = ""
    _data: BBData | None = field(default=None, repr=False)

    @property
    def data(self) -> BBData:
        if self._data is None:
            d = BBData(overrides=overrides_for(self.machine, self.name), python=_recipe_python)
            for var, value in self.settings.items():
                d.set(var, value)
            d.set("DISTRO", DISTRO)
            d.set("CLASSOVERRIDE", "class-target")
            d.set("PN", self.name)
            d.set("BPN", self.name)
            d.set("PV", self.version or "1.0")
            d.set("BP", "${BPN}-${PV}")
            classes = [self.layer / "classes"]
            for path in ([self.bb] if self.bb else []) + self.appends:
                d.set("FILE_DIRNAME", str(path.parent))
                parse_into(d, path, search=[self.layer], class_dirs=classes)
            self._data = d
        return self._data

    def get(self, var: str) -> str:
        try:
            return self.data.get(var) or ""
        except Unresolved:
            return ""

    def words(self, var: str) -> list[str]:
        return self.get(var).split()

    @property
    def files_dirs(self) -> list[Path]:
        """The base directories of FILESPATH (FILESEXTRAPATHS first, then the recipe's own)."""
        bases: list[Path] = []
        for part in self.get("FILESEXTRAPATHS").split(":"):
            part = part.strip()
            if part and part != "__default" and "${" not in part:
                bases.append(Path(part))
        if self.bb is not None:
            pv = self.version or "1.0"
            for sub in (f"{self.name}-{pv}", self.name, "files"):
                bases.append(self.bb.parent / sub)
        return bases

    @property
    def filespath(self) -> list[Path]:
        """FILESPATH: each base with its override subdirectories, most specific first."""
        result: list[Path] = []
        for base in self.files_dirs:
            for ovr in reversed(files_overrides(self.machine)):
                result.append(base / ovr)
            result.append(base)
        return result

    def find(self, source: str) -> Path:
        for d in self.filespath:
            cand = d / source
            if cand.is_file():
                return cand
        raise ConfigError(
            f"{self.name}: EDGE_FILES source '{source}' not found in FILESPATH "
            f"({', '.join(str(p) for p in self.files_dirs)})"
        )

    @cached_property
    def inherits(self) -> list[str]:
        return list(self.data.inherits)

    def src_uri_files(self) -> list[str]:
        return [u[len("file://") :].split(";")[0] for u in self.words("SRC_URI") if u.startswith("file://")]

    def edge_files(self) -> list[FileEntry]:
        entries = []
        for entry in self.words("EDGE_FILES"):
            parts = entry.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
                raise ConfigError(f'{self.name}: EDGE_FILES entry "{entry}" is not SOURCE:/DESTINATION[:MODE]')
            dest = parts[1]
            if dest.endswith("/"):
                dest += Path(parts[0]).name
            mode = int(parts[2], 8) if len(parts) == 3 else 0o644
            entries.append(FileEntry(self.name, parts[0], self.find(parts[0]), dest, mode))
        return entries

    def edge_dirs(self) -> list[str]:
        dirs = self.words("EDGE_DIRS")
        for d in dirs:
            if not d.startswith("/"):
                raise ConfigError(f"{self.name}: EDGE_DIRS entry '{d}' is not an absolute path")
        return dirs

    def systemd_services(self) -> list[str]:
        if "systemd" not in self.inherits:
            return []
        return self.words(f"SYSTEMD_SERVICE:{self.name}")

    def rdepends(self) -> list[str]:
        return [w for w in self.words(f"RDEPENDS:{self.name}") if not w.startswith("(")]

    def subst_vars(self) -> list[str]:
        return self.words("EDGE_SUBST_VARS")

    def render(self, entry: FileEntry | Path) -> bytes:
        """The installed copy: @NAME@ replaced for NAME in EDGE_SUBST_VARS (as edge_render_file)."""
        path = entry.path if isinstance(entry, FileEntry) else entry
        data = path.read_bytes()
        for name in self.subst_vars():
            data = data.replace(f"@{name}@".encode(), self.get(name).encode())
        left = _LEFTOVER.findall(data)
        if left:
            raise ConfigError(f"{path}: no value for {left[0].decode()} (add it to EDGE_SUBST_VARS)")
        return data


class Layer:
    """meta-edgecontainers for one machine, engine and image flavour."""

    def __init__(
        self,
        machine: str = "qemux86-64",
        engine: str = "podman",
        dev: bool = False,
        *,
        path: Path | None = None,
        ssh_authorized_keys: str = "",
        key_dir: str = "",
    ) -> None:
        self.path = (path or default_layer()).resolve()
        self.machine = machine
        self.engine = engine
        self.dev = dev
        self.settings = layer_settings(
            machine, engine, dev, layer=self.path, key_dir=key_dir, ssh_authorized_keys=ssh_authorized_keys
        )
        self._recipes: dict[str, Recipe] | None = None

    def recipes(self) -> dict[str, Recipe]:
        if self._recipes is None:
            found: dict[str, Recipe] = {}
            for bb in sorted(self.path.glob("recipes-*/*/*.bb")):
                name, _, version = bb.stem.partition("_")
                found[name] = Recipe(name, self.path, self.machine, bb, [], self.settings, version)
            for app in sorted(self.path.glob("recipes-*/*/*.bbappend")):
                name = app.stem.partition("_")[0]
                rec = found.setdefault(name, Recipe(name, self.path, self.machine, None, [], self.settings))
                rec.appends.append(app)
            self._recipes = found
        return self._recipes

    def recipe(self, name: str) -> Recipe:
        try:
            return self.recipes()[name]
        except KeyError:
            raise ConfigError(f"no recipe or bbappend '{name}' in {self.path}") from None

    def image_recipe(self) -> Recipe:
        return self.recipe("edgecontainers-image-dev" if self.dev else "edgecontainers-image")

    def wks(self, bootloader: str | None = None) -> Wks:
        bootloader = bootloader or self.settings["EDGECONTAINERS_BOOTLOADER"]
        path = self.path / "files" / "wic" / f"edgecontainers-ab-{bootloader}.wks"
        return parse_wks(path)


# ---------------------------------------------------------------- wks
_SIZE = re.compile(r"^(\d+)([KMG]?)$")


def _size_mib(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise ConfigError(f"cannot read wks size '{text}'")
    n = int(m.group(1))
    return {"K": n // 1024, "M": n, "G": n * 1024, "": n // 1024}[m.group(2)]


@dataclass(frozen=True)
class WksPart:
    mountpoint: str | None
    fstype: str
    label: str | None
    part_name: str | None
    part_type: str | None
    source: str | None
    align_kib: int
    size_mib: int
    fixed: bool
    active: bool


@dataclass(frozen=True)
class Wks:
    path: Path
    ptable: str
    parts: tuple[WksPart, ...]

    def part(self, part_name: str) -> WksPart:
        for p in self.parts:
            if p.part_name == part_name:
                return p
        raise ConfigError(f"{self.path.name} has no partition named {part_name}")

    def names(self) -> list[str]:
        """A name per partition, in order: its --part-name (GPT), or on an MBR disk
        (no names) its role in the A/B layout: the partition with ``--source rootfs``
        is rootfsA, the next one with the same label and no mount point rootfsB, the
        others by their label (boot, data)."""
        names: list[str] = []
        slot_a: WksPart | None = None
        for p in self.parts:
            if p.part_name:
                names.append(p.part_name)
            elif p.source == "rootfs":
                slot_a = p
                names.append("rootfsA")
            elif slot_a is not None and p.mountpoint is None and p.label == slot_a.label and "rootfsB" not in names:
                names.append("rootfsB")
            elif p.label:
                names.append(p.label)
            else:
                raise ConfigError(f"{self.path.name}: cannot tell the role of partition {len(names) + 1}")
        return names

    def slot(self, name: str) -> WksPart:
        """The partition of ``name`` (see :meth:`names`)."""
        names = self.names()
        if name not in names:
            raise ConfigError(f"{self.path.name} has no partition {name} (partitions: {', '.join(names)})")
        return self.parts[names.index(name)]


def parse_wks(path: Path) -> Wks:
    """The partitions of a wic kickstart file (the options our wks files use)."""
    if not path.is_file():
        raise ConfigError(f"{path} not found")
    ptable = "msdos"
    parts: list[WksPart] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "bootloader":
            if "--ptable" in words:
                ptable = words[words.index("--ptable") + 1]
            continue
        if words[0] != "part":
            raise ConfigError(f"{path.name}: unsupported line: {line}")
        mountpoint = None
        opts: dict[str, str | bool] = {}
        i = 1
        if i < len(words) and not words[i].startswith("--"):
            mountpoint = words[i]
            i += 1
        while i < len(words):
            key = words[i]
            if not key.startswith("--"):
                raise ConfigError(f"{path.name}: unexpected '{key}' in: {line}")
            if "=" in key:
                name, _, value = key.partition("=")
                opts[name[2:]] = value
                i += 1
            elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                opts[key[2:]] = words[i + 1]
                i += 2
            else:
                opts[key[2:]] = True
                i += 1
        size = opts.get("fixed-size") or opts.get("size")
        if not isinstance(size, str):
            raise ConfigError(f"{path.name}: partition without --size/--fixed-size: {line}")
        parts.append(
            WksPart(
                mountpoint=mountpoint,
                fstype=str(opts.get("fstype", "")),
                label=opts.get("label") if isinstance(opts.get("label"), str) else None,  # type: ignore[arg-type]
                part_name=opts.get("part-name") if isinstance(opts.get("part-name"), str) else None,  # type: ignore[arg-type]
                part_type=opts.get("part-type") if isinstance(opts.get("part-type"), str) else None,  # type: ignore[arg-type]
                source=opts.get("source") if isinstance(opts.get("source"), str) else None,  # type: ignore[arg-type]
                align_kib=int(opts.get("align", 1)),  # type: ignore[arg-type]
                size_mib=_size_mib(size),
                fixed="fixed-size" in opts,
                active=bool(opts.get("active")),
            )
        )
    return Wks(path, ptable, tuple(parts))
