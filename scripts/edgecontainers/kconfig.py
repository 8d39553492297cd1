"""The layer's kernel configuration fragments against a real kernel tree.

What oe-core's ``do_kernel_configcheck`` reports after a kernel build, checked
without building: for each architecture the upstream defconfig is made, the
layer's fragments (the ``kconf`` lines of ``edgecontainers.scc``) are merged
last with the kernel's own ``scripts/kconfig/merge_config.sh``, ``make
olddefconfig`` resolves the dependencies, and every option of the fragments
must come out with the value the fragment asked for.  An option that the
kernel does not know, or that olddefconfig drops or changes (a dependency the
fragments do not satisfy), is a failure naming the fragment line.

The kernel trees are a directory or tarball the user gives, or by default
two of Debian's ``linux-source`` packages that bracket the series wrynose
builds (6.18, which Debian does not package): trixie's 6.12 and the newest
series in trixie-backports, downloaded once through the test image's apt
cache.  Every option is checked in each tree; an option that one of the two
does not define but the other does (an option of some series only, such as
``NETFILTER_XTABLES_LEGACY`` of 6.17 and later) is a note, not a failure.
Only the Kconfig and build-script files are extracted (about 130 MB a tree);
the extracted trees are cached.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, EdgeError
from .tools import run

# wrynose builds linux-yocto 6.18 (qemux86-64, qemuarm64) and linux-raspberrypi
# 6.18 (raspberrypi4-64, raspberrypi5); Debian packages no 6.18 source, so the
# check runs on trixie's 6.12 and the newest series of trixie-backports.
DEBIAN_SOURCE = "linux-source-6.12"
BACKPORTS_PREFIX = "linux-source-"
WRYNOSE_SERIES = (6, 18)
FRAGMENT_DIR = "recipes-kernel/linux/files/edgecontainers-kmeta"
FRAGMENT_SCC = "edgecontainers.scc"


@dataclass(frozen=True)
class KArch:
    name: str  # the kernel's ARCH
    defconfig: str
    triplet: str  # cross compiler prefix when the host is another machine
    host: str  # platform.machine() of a host that builds it natively


ARCHES = {
    "x86_64": KArch("x86_64", "x86_64_defconfig", "x86_64-linux-gnu", "x86_64"),
    "arm64": KArch("arm64", "defconfig", "aarch64-linux-gnu", "aarch64"),
}


@dataclass(frozen=True)
class Option:
    name: str
    value: str  # "y", "m", a number or string, or "n" for "# CONFIG_X is not set"
    where: str  # fragment:line


_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def _option(line: str) -> tuple[str, str] | None:
    line = line.strip()
    m = _SET.match(line)
    if m:
        return m.group(1), m.group(2)
    m = _UNSET.match(line)
    return (m.group(1), "n") if m else None


def fragments(layer: Path) -> list[Path]:
    """The .cfg files the layer's kernel feature merges, in its order."""
    kmeta = layer / FRAGMENT_DIR
    scc = kmeta / FRAGMENT_SCC
    if not scc.is_file():
        raise ConfigError(f"{scc} is missing: the layer has no kernel feature to check")
    out = []
    for line in scc.read_text().splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "kconf":
            out.append(kmeta / words[2])
    if not out:
        raise ConfigError(f"{scc} has no 'kconf' line")
    return out


def read_fragments(paths: list[Path]) -> list[Option]:
    """Every option, the last value of each (later fragments win, as in merge_config.sh)."""
    found: dict[str, Option] = {}
    for path in paths:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            opt = _option(line)
            if opt:
                found[opt[0]] = Option(opt[0], opt[1], f"{path.name}:{n}")
    return list(found.values())


def read_config(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        opt = _option(line)
        if opt:
            out[opt[0]] = opt[1]
    return out


def kconfig_symbols(tree: Path) -> set[str]:
    """Every symbol some Kconfig file of the tree defines (``config X`` / ``menuconfig X``)."""
    pattern = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$", re.M)
    symbols: set[str] = set()
    for path in tree.rglob("Kconfig*"):
        if path.is_file():
            symbols.update("CONFIG_" + s for s in pattern.findall(path.read_text(errors="replace")))
    return symbols


@dataclass(frozen=True)
class Problem:
    option: Option
    kind: str  # unknown, dropped, changed, forced
    text: str

    def __str__(self) -> str:
        return self.text


def compare(options: list[Option], config: dict[str, str], symbols: set[str]) -> list[Problem]:
    """The fragment options the final .config does not hold as asked."""
    problems = []
    for opt in options:
        have = config.get(opt.name)
        if opt.name not in symbols:
            problems.append(Problem(opt, "unknown", f"{opt.name} ({opt.where}): no such option in this kernel"))
        elif opt.value == "n":
            if have not in (None, "n"):
                text = f"{opt.name} ({opt.where}): asked 'not set', olddefconfig made it {have}"
                problems.append(Problem(opt, "forced", text))
        elif have != opt.value:
            dropped = have in (None, "n")
            got = "dropped it (its dependencies are not met)" if dropped else f"made it {have}"
            text = f"{opt.name}={opt.value} ({opt.where}): olddefconfig {got}"
            problems.append(Problem(opt, "dropped" if dropped else "changed", text))
    return problems


@dataclass
class TreeResult:
    version: str
    arch: str
    options: int
    problems: list[Problem]
    symbols: set[str]


def verdict(results: list[TreeResult]) -> tuple[list[str], list[str]]:
    """(failures, notes) over the trees: an option one tree does not define is only a
    note when another tree defines it (it belongs to some series only)."""
    failures, notes = [], []
    for r in results:
        for p in r.problems:
            others = [o.version for o in results if o is not r and p.option.name in o.symbols]
            if p.kind == "unknown" and others:
                notes.append(f"{r.arch}: {p.option.name} ({p.option.where}): not in Linux {r.version}, "
                             f"in Linux {', '.join(sorted(set(others)))}")  # fmt: skip
            else:
                failures.append(f"{r.arch} Linux {r.version}: {p}")
    return failures, notes


# ------------------------------------------------------------------ the kernel tree
_EXTRACT = ("*Kconfig*", "*Makefile*", "*Kbuild*", "*/scripts/*", "*/arch/*/configs/*", "*/arch/*/tools/*",
            "*/kernel/configs/*", "*/tools/*")  # fmt: skip


def _tree_of(root: Path) -> Path:
    """The kernel tree inside an extraction folder (its one top directory, or itself)."""
    if (root / "Makefile").is_file() and (root / "Kconfig").is_file():
        return root
    subs = [p for p in root.iterdir() if p.is_dir() and (p / "Kconfig").is_file()]
    if len(subs) != 1:
        raise ConfigError(f"{root} holds no kernel tree (a Makefile and a Kconfig at its top)")
    return subs[0]


def extract(tarball: Path, cache: Path) -> Path:
    """The Kconfig part of a kernel source tarball, extracted once into ``cache``."""
    st = tarball.stat()
    key = hashlib.sha256(f"{tarball.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = cache / f"{tarball.name.split('.tar')[0]}-{key}"
    if (dest / ".complete").is_file():
        return _tree_of(dest)
    shutil.rmtree(dest, ignore_errors=True)
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    run(["tar", "-xf", tarball, "-C", part, "--wildcards", *_EXTRACT], capture=True)
    (part / ".complete").write_text(str(tarball) + "\n")
    part.rename(dest)
    return _tree_of(dest)


def _series(name: str) -> tuple[int, int] | None:
    m = re.fullmatch(rf"{BACKPORTS_PREFIX}(\d+)\.(\d+)", name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def debian_packages(builder_cache: Path | None = None) -> list[str]:
    """trixie's 6.12 source and, when Debian has one, the newest series above wrynose's."""
    from .testimage.builder import Builder

    names = Builder(builder_cache).package_names(BACKPORTS_PREFIX, "amd64")
    newer = [n for n in names if (_series(n) or (0, 0)) >= WRYNOSE_SERIES]
    return [DEBIAN_SOURCE, *sorted(newer, key=lambda n: _series(n) or (0, 0))[-1:]]


def debian_source(package: str, cache: Path, builder_cache: Path | None = None) -> Path:
    """The source tarball (``/usr/src/linux-source-*.tar.xz``) of one of Debian's
    linux-source packages, from the test image builder's apt cache, kept in ``cache/src``."""
    from .testimage.builder import Builder

    deb = Builder(builder_cache).deb(package, "amd64")
    out = cache / "src" / deb.stem
    found = sorted(out.glob("linux-source-*.tar.*")) if out.is_dir() else []
    if found:
        return found[-1]
    part = out.with_name(out.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    run(["dpkg-deb", "-x", deb, part], capture=True)
    found = sorted((part / "usr/src").glob("linux-source-*.tar.*"))
    if not found:
        raise EdgeError(f"{deb} has no /usr/src/linux-source-*.tar.*")
    out.mkdir(parents=True, exist_ok=True)
    tarball = out / found[-1].name
    found[-1].rename(tarball)
    shutil.rmtree(part, ignore_errors=True)
    return tarball


def source_trees(source: Path | None, cache: Path, builder_cache: Path | None = None) -> list[Path]:
    """The kernel trees to check against: ``source`` (a tree or a tarball), else Debian's."""
    if source is None:
        pkgs = debian_packages(builder_cache)
        return [extract(debian_source(p, cache, builder_cache), cache / "trees") for p in pkgs]
    if source.is_dir():
        return [_tree_of(source)]
    if source.is_file() and ".tar" in source.name:
        return [extract(source, cache / "trees")]
    raise ConfigError(f"--source {source}: not a kernel tree or a tarball of one")


def kernel_version(tree: Path) -> str:
    text = (tree / "Makefile").read_text(errors="replace")
    parts = [re.search(rf"^{k}\s*=\s*(\S*)", text, re.M) for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL")]
    return ".".join(m.group(1) for m in parts if m and m.group(1)) or "unknown"


def cross_compile(arch: KArch) -> str:
    if platform.machine() == arch.host:
        return ""
    if not shutil.which(f"{arch.triplet}-gcc"):
        raise ConfigError(
            f"{arch.triplet}-gcc is not installed: Kconfig asks the {arch.name} compiler what it supports",
            hint=f"apt install gcc-{arch.triplet}",
        )
    return f"{arch.triplet}-"


def check(tree: Path, arch: KArch, frags: list[Path], work: Path) -> TreeResult:
    """defconfig, the fragments merged last, olddefconfig; the options not as asked."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "ARCH": arch.name, "CROSS_COMPILE": cross_compile(arch)}
    make = ["make", "-s", f"O={work}", f"ARCH={arch.name}", f"CROSS_COMPILE={env['CROSS_COMPILE']}"]
    run([*make, arch.defconfig], cwd=tree, env=env, capture=True)
    run([tree / "scripts/kconfig/merge_config.sh", "-m", "-O", work, work / ".config", *frags],
        cwd=tree, env=env, capture=True)  # fmt: skip
    run([*make, "olddefconfig"], cwd=tree, env=env, capture=True)
    options = read_fragments(frags)
    symbols = kconfig_symbols(tree)
    problems = compare(options, read_config(work / ".config"), symbols)
    return TreeResult(kernel_version(tree), arch.name, len(options), problems, symbols)
