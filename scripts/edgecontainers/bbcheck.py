"""Offline BitBake checks of the layer against the real upstream layers.

For one configuration (machine x engine x variant) it runs, through kas and
without any network access:

* ``bitbake -p``: every recipe and bbappend parses (syntax, dangling bbappends,
  layer dependencies and series compatibility, our sanity checks);
* ``bitbake -g <image> <bundle>``: the whole task graph resolves (every
  DEPENDS/RDEPENDS has a provider), and which engine ended up in it;
* ``bitbake -e``: the final values of the variables that make the product
  (distro features, read-only rootfs, wks file, RAUC compatible, volatile
  logs, ...), checked against expectations.

Upstream layers come from local git checkouts (default /var/cache/yocto-layers,
one ``<repo>-wrynose`` directory per upstream repository, as made by
``edgectl check setup``; or $YOCTO_LAYERS_DIR).  kas clones them
through KAS_PREMIRRORS, so the pinned commits of kas/*.lock.yml are used.
BitBake refuses to run as root: as root we run it as an unprivileged user.
Work directories (the project copy, kas clones, BitBake's parse cache) live
outside the checkout, one per configuration, so later runs parse warm.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import tools
from .errors import CommandFailed, ConfigError
from .project import ENGINES, Project

RELEASE = "wrynose"
DEFAULT_LAYERS_DIR = Path("/var/cache/yocto-layers")
DEFAULT_WORK_DIR = Path("/var/cache/edgecontainers/bbcheck")
BUILD_USER = "builder"
VARIANTS = ("production", "dev")

# The upstream repositories of kas/ (directory names of the checkouts).
UPSTREAM_REPOS = (
    "bitbake",
    "openembedded-core",
    "meta-openembedded",
    "meta-virtualization",
    "meta-rauc",
    "meta-raspberrypi",
    "meta-yocto",
)

OFFLINE_CONF = """\
BB_NO_NETWORK = "1"
CONNECTIVITY_CHECK_URIS = ""
SANITY_TESTED_DISTROS = ""
BB_HASHSERVE_UPSTREAM = ""
SSTATE_MIRRORS = ""
PREMIRRORS = ""
MIRRORS = ""
"""

# Debian packages of BitBake's host tools (oe-core's HOSTTOOLS and sanity
# checks) and of the checks themselves; `edgectl check setup` installs the
# missing ones as root, or names them.
HOST_PACKAGES = (
    "git", "rsync", "gawk", "wget", "diffstat", "unzip", "texinfo", "gcc", "build-essential", "chrpath", "cpio",
    "python3", "python3-pip", "python3-venv", "python3-pexpect", "debianutils", "iputils-ping", "python3-git",
    "python3-jinja2", "python3-subunit", "liblz4-tool", "lz4", "file", "locales", "libacl1", "time", "zstd",
    "xz-utils",
)  # fmt: skip

BITBAKE_LOCALE = "en_US.UTF-8"

# Lines of BitBake output worth showing when a step fails.
_INTERESTING = re.compile(r"ERROR|Nothing (R)?PROVIDES|is not supported|No recipes|ParseError|not found|failed")


def _interesting_lines(out: str) -> list[str]:
    """Error lines of BitBake output, with the indented lines that continue them."""
    keep: list[str] = []
    following = False
    for line in out.splitlines():
        if _INTERESTING.search(line):
            keep.append(line)
            following = True
        elif following and line.startswith((" ", "\t")):
            keep.append(line)
        else:
            following = False
    return keep


@dataclass(frozen=True)
class Config:
    machine: str
    engine: str = "podman"
    variant: str = "production"

    @property
    def name(self) -> str:
        return f"{self.machine}-{self.engine}-{self.variant}"

    @property
    def dev(self) -> bool:
        return self.variant == "dev"

    @property
    def image(self) -> str:
        return "edgecontainers-image-dev" if self.dev else "edgecontainers-image"

    @property
    def bundle(self) -> str:
        return "edgecontainers-bundle-dev" if self.dev else "edgecontainers-bundle"


def matrix(project: Project) -> list[Config]:
    """Every machine x engine x variant."""
    return [Config(m, e, v) for m in project.machines() for e in ENGINES for v in VARIANTS]


# What CI checks: both engines, both variants, all three boot paths (GRUB EFI,
# U-Boot on virtio, U-Boot on the Pi via dynamic-layers) in three
# configurations, because a cold parse costs ~7 minutes on 2 cores.  The full
# matrix (16) is `edgectl check bitbake --all`.
CI_SUBSET = (
    Config("qemux86-64", "podman", "production"),
    Config("raspberrypi4-64", "docker", "dev"),
    Config("qemuarm64", "docker", "production"),
)


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    log: Path
    detail: str = ""


@dataclass
class CheckResult:
    config: Config
    steps: list[StepResult] = field(default_factory=list)
    env_failures: list[str] = field(default_factory=list)
    build_list: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and not self.env_failures

    def summary(self) -> str:
        parts = [f"{s.name}:{'ok' if s.ok else 'FAIL'}({s.seconds:.0f}s)" for s in self.steps]
        if self.env_failures:
            parts.append(f"env:{len(self.env_failures)} failed")
        return f"{self.config.name}: {'PASS' if self.ok else 'FAIL'} " + " ".join(parts)


def default_work_dir() -> Path:
    if os.geteuid() == 0:
        return DEFAULT_WORK_DIR
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "edgecontainers" / "bbcheck"


def layers_dir() -> Path:
    return Path(os.environ.get("YOCTO_LAYERS_DIR") or DEFAULT_LAYERS_DIR)


def missing_checkouts(root: Path | None = None) -> list[str]:
    """Upstream repositories without a usable checkout (empty list: all present)."""
    root = root or layers_dir()
    return [r for r in UPSTREAM_REPOS if not (root / f"{r}-{RELEASE}" / ".git").exists()]


def availability() -> str | None:
    """None when the offline check can run here, else the reason it cannot."""
    root = layers_dir()
    missing = missing_checkouts(root)
    if missing:
        return (
            f"upstream layer checkouts missing under {root} ({', '.join(missing)}); "
            "make them with 'edgectl check setup' (see README, 'BitBake checks')"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(BUILD_USER)
        except KeyError:
            return f"running as root and there is no user '{BUILD_USER}' to run BitBake as"
    missing_packages = missing_host_packages() + ([] if has_bitbake_locale() else [f"locale {BITBAKE_LOCALE}"])
    if missing_packages:
        return f"BitBake's host tools are missing ({', '.join(missing_packages)}); 'edgectl check setup' installs them"
    return None


def kas_venv() -> Path:
    """The venv with kas that BitBake's user runs: outside every checkout, so the
    checks work wherever the project is (a checkout under /root or a mode-0700
    directory is not readable by that user)."""
    return default_work_dir().parent / "kas-venv"


def _kas_version() -> str:
    """The kas version the project pins (pyproject.toml), as installed in its venv."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kas")
    except PackageNotFoundError:
        raise ConfigError("kas is not installed", hint="run the README's set-up (it installs kas)") from None


def ensure_kas_venv(log: Callable[[str], None] = print) -> Path:
    """kas in :func:`kas_venv`, made with the system Python (readable by every user)."""
    venv = kas_venv()
    kas = venv / "bin" / "kas"
    want = _kas_version()
    if kas.exists():
        have = tools.run([kas, "--version"], check=False, capture=True).stdout or ""
        if want in have.split():
            return kas
    log(f"installing kas {want} into {venv}")
    venv.parent.mkdir(parents=True, exist_ok=True)
    tools.run(["/usr/bin/python3", "-m", "venv", "--clear", venv], capture=True)
    tools.run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", f"kas=={want}"], capture=True)
    tools.run(["chmod", "-R", "a+rX", venv])
    return kas


def _kas_executable() -> str:
    """As root: the shared kas venv (BitBake's user must be able to run it).
    Otherwise kas next to the running Python (the project's venv), else on PATH."""
    if os.geteuid() == 0:
        return str(ensure_kas_venv())
    here = Path(os.sys.executable).parent / "kas"
    if here.exists():
        return str(here)
    found = shutil.which("kas")
    if not found:
        raise ConfigError("kas is not installed", hint="run the README's set-up (it installs kas==5.5)")
    return found


def missing_host_packages() -> list[str]:
    """HOST_PACKAGES that dpkg does not list as installed (none on a host without
    dpkg: there BitBake's own sanity check names what is missing)."""
    if not shutil.which("dpkg-query"):
        return []
    fmt = "${Package} ${db:Status-Status}\n"
    proc = tools.run(["dpkg-query", "-W", "-f", fmt, *HOST_PACKAGES], check=False, capture=True)
    installed = {line.split()[0] for line in proc.stdout.splitlines() if line.endswith(" installed")}
    return [p for p in HOST_PACKAGES if p not in installed]


def has_bitbake_locale() -> bool:
    """BitBake (bb.utils) refuses to start without the en_US.UTF-8 locale."""
    proc = tools.run(["locale", "-a"], check=False, capture=True)
    names = {n.lower().replace("-", "") for n in proc.stdout.split()}
    return BITBAKE_LOCALE.lower().replace("-", "") in names


def ensure_host_tools(log: Callable[[str], None] = print) -> None:
    """Install BitBake's missing host packages (root with apt-get), or say which they are."""
    missing = missing_host_packages()
    if not missing and has_bitbake_locale():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        what = [*missing] + ([] if has_bitbake_locale() else [f"the locale {BITBAKE_LOCALE}"])
        raise ConfigError(
            f"BitBake's host tools are missing: {', '.join(what)}",
            hint=f"install them (Debian/Ubuntu: sudo apt-get install {' '.join(missing) or 'locales'}; "
            f"the locale with dpkg-reconfigure locales) and run this again",
        )
    if missing:
        log(f"apt-get install {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        tools.run(["apt-get", "update", "-q"], capture=True, env=env)
        tools.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], capture=True, env=env)
    if not has_bitbake_locale():
        # Debian: uncomment it in /etc/locale.gen, then generate
        log(f"generating the locale {BITBAKE_LOCALE} (BitBake refuses to start without it)")
        gen = Path("/etc/locale.gen")
        text = gen.read_text() if gen.exists() else ""
        line = f"{BITBAKE_LOCALE} UTF-8"
        if not re.search(rf"^{re.escape(line)}$", text, re.M):
            text = re.sub(rf"^#\s*{re.escape(line)}$", line, text, flags=re.M)
            if line not in text.splitlines():
                text += f"{line}\n"
            gen.write_text(text)
        tools.run(["locale-gen"], capture=True)


class Checker:
    """Runs the checks of configurations, reusing one work dir per configuration."""

    def __init__(
        self,
        project: Project,
        *,
        work_dir: Path | None = None,
        source: Path | None = None,
        log: Callable[[str], None] = print,
        timeout: int = 3600,
    ) -> None:
        self.project = project
        self.source = source or project.root
        self.work_dir = Path(os.environ.get("EDGECONTAINERS_BBCHECK_DIR") or work_dir or default_work_dir())
        self.log = log
        self.timeout = timeout
        self.as_root = os.geteuid() == 0
        self.user = pwd.getpwnam(BUILD_USER) if self.as_root else pwd.getpwuid(os.geteuid())
        self.kas = _kas_executable()

    # ------------------------------------------------------------ set-up
    def _config_dir(self, config: Config, tag: str = "") -> Path:
        return self.work_dir / (config.name + (f"-{tag}" if tag else ""))

    def prepare(self, config: Config, tag: str = "", extra_conf: str = "") -> Path:
        """Copy the project (keeping mtimes, so the parse cache stays valid) and
        write the offline override; returns the configuration's work dir."""
        cdir = self._config_dir(config, tag)
        src = cdir / "src"
        src.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "rsync",
                "-a",
                "--delete",
                "--exclude",
                "/.venv",
                "--exclude",
                "/build",
                "--exclude",
                "/.bbcheck",
                f"{self.source}/",
                f"{src}/",
            ],
            check=True,
        )
        # kas wants the kas files' repository to be a git repository.
        if not (src / ".git" / "HEAD").exists():
            subprocess.run(["git", "init", "-q", str(src)], check=True)
        # kas wants every file of the configuration in one repository.
        override = src / ".bbcheck" / "offline.yml"
        override.parent.mkdir(exist_ok=True)
        # One PERSISTENT_DIR for every configuration: BitBake's code-parser and
        # file-checksum caches there are keyed by content, so a configuration's
        # first parse reuses what the others' parses already analysed.
        shared = f'PERSISTENT_DIR = "{self.work_dir / "persistent"}"\n'
        body = "".join(f"    {line}\n" for line in (OFFLINE_CONF + shared + extra_conf).splitlines())
        override.write_text(f"header:\n  version: 16\nlocal_conf_header:\n  zz-offline-check: |\n{body}")
        (cdir / "gitconfig").write_text(
            "[safe]\n\tdirectory = *\n[user]\n\tname = bbcheck\n\temail = bbcheck@localhost\n"
            "[init]\n\tdefaultBranch = main\n"
        )
        (cdir / "kas-work").mkdir(exist_ok=True)
        if self.as_root:
            owner = f"{self.user.pw_uid}:{self.user.pw_gid}"
            (self.work_dir / "persistent").mkdir(exist_ok=True)
            subprocess.run(
                [
                    "chown",
                    owner,
                    str(self.work_dir),
                    str(self.work_dir / "persistent"),
                    str(cdir),
                    str(cdir / "kas-work"),
                    str(cdir / "gitconfig"),
                ],
                check=True,
            )
            subprocess.run(["chown", "-R", owner, str(src)], check=True)
            if (cdir / "build").exists():
                subprocess.run(["chown", owner, str(cdir / "build")], check=True)
            self._check_access(cdir)
        return cdir

    def _check_access(self, cdir: Path) -> None:
        """As root: can BitBake's user run kas and write the work dir?  Else one
        line that says which and what to do (BitBake would only say 'Permission denied')."""
        probe = f"test -x {shlex.quote(self.kas)} || exit 3; test -w {shlex.quote(str(cdir))} || exit 4"
        try:
            tools.run(["runuser", "-u", self.user.pw_name, "--", "sh", "-c", probe], capture=True)
        except CommandFailed as exc:
            what = {3: f"run {self.kas}", 4: f"write to {cdir}"}.get(exc.returncode, f"use {cdir}")
            raise ConfigError(
                f"the build user '{self.user.pw_name}' cannot {what}",
                hint="keep EDGECONTAINERS_BBCHECK_DIR (and its parents) where that user can enter it; "
                "'edgectl check setup' makes the shared kas venv",
            ) from None

    def _premirrors(self) -> str:
        root = layers_dir()
        lines = []
        for repo in UPSTREAM_REPOS:
            path = root / f"{repo}-{RELEASE}"
            lines.append(rf"^.*[/:](git/)?{re.escape(repo)}(\.git)?/?$ {path}")
        return "\n".join(lines)

    def kas_config(self, config: Config, cdir: Path) -> str:
        rel = self.project.kas_config(config.machine, config.engine, ["dev"] if config.dev else [])
        return ":".join([str(cdir / "src" / p) for p in rel.split(":")] + [str(cdir / "src/.bbcheck/offline.yml")])

    # ------------------------------------------------------------ running
    def run_bitbake(self, config: Config, cdir: Path, label: str, commands: str) -> StepResult:
        env = {
            "HOME": self.user.pw_dir,
            "USER": self.user.pw_name,
            "LOGNAME": self.user.pw_name,
            "PATH": f"{Path(self.kas).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "KAS_WORK_DIR": str(cdir / "kas-work"),
            "KAS_BUILD_DIR": str(cdir / "build"),
            "KAS_PREMIRRORS": self._premirrors(),
            "GITCONFIG_FILE": str(cdir / "gitconfig"),
        }
        cmd = [self.kas, "shell", self.kas_config(config, cdir), "-c", commands]
        if self.as_root:
            cmd = [
                "runuser",
                "-u",
                self.user.pw_name,
                "--",
                "env",
                "-i",
                *[f"{k}={v}" for k, v in env.items()],
                *cmd,
            ]
            run_env = None
        else:
            run_env = env
        logf = cdir / f"log-{label}.txt"
        self.log(f"[{config.name}] {commands}")
        start = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                env=run_env,
                cwd=cdir / "kas-work",
                timeout=self.timeout,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            out, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
            rc = 124
            out += f"\n[bbcheck] timed out after {self.timeout}s\n"
        seconds = time.monotonic() - start
        logf.write_text(out)
        # the error lines and, when the step failed, the log's last lines (kas or
        # the shell may have failed before BitBake said anything worth a pattern)
        shown = _interesting_lines(out)
        if rc != 0:
            shown += ["--- last lines of the log ---", *out.splitlines()[-12:]]
        detail = "\n".join(shown)[-3000:]
        # Warnings fail the step too: they are how BitBake reports most
        # configuration mistakes that still let it go on.
        warnings = [line for line in out.splitlines() if line.startswith("WARNING:")]
        if warnings and rc == 0:
            rc = 1
            detail = "\n".join(warnings)[-3000:]
        result = StepResult(label, rc == 0, seconds, logf, detail)
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        self.log(f"[{config.name}] {label}: {status} in {seconds:.0f}s ({logf})")
        if rc != 0 and detail:
            for line in detail.splitlines()[-15:]:
                self.log(f"    {line}")
        return result

    def check(
        self, config: Config, *, env_checks: bool = True, graph: bool = True, tag: str = "", extra_conf: str = ""
    ) -> CheckResult:
        """Parse, graph and (unless disabled) env assertions of one configuration.
        ``extra_conf`` is appended to local.conf (for negative tests)."""
        result = CheckResult(config)
        cdir = self.prepare(config, tag, extra_conf)
        parse = self.run_bitbake(config, cdir, "parse", "bitbake -p")
        result.steps.append(parse)
        if not parse.ok or not graph:
            return result
        graph_step = self.run_bitbake(
            config,
            cdir,
            "graph",
            f"cd {shlex.quote(str(cdir / 'build'))} && bitbake -g {config.image} {config.bundle}",
        )
        result.steps.append(graph_step)
        buildlist = cdir / "build" / "pn-buildlist"
        if graph_step.ok and buildlist.exists():
            result.build_list = set(buildlist.read_text().split())
        if not graph_step.ok or not env_checks:
            return result
        targets = [
            config.image,
            config.bundle,
            "edgecontainers-base",
            "edgecontainers-grub-cfg" if config.machine.startswith("qemux86") else "edgecontainers-uboot-script",
            kernel_recipe(config),
        ]
        if config.machine.startswith("raspberrypi"):
            targets.append("rpi-cmdline")  # cmdline.txt, which boot.scr extends
        script = " && ".join(f"bitbake -e {t} > {shlex.quote(str(cdir / f'env-{t}.txt'))}" for t in targets)
        env_step = self.run_bitbake(config, cdir, "env", script)
        result.steps.append(env_step)
        if env_step.ok:
            values = {t: parse_env(cdir / f"env-{t}.txt") for t in targets}
            result.env_failures = expectations_failures(config, values, result.build_list)
        for failure in result.env_failures:
            self.log(f"[{config.name}] env: {failure}")
        return result

    def env_values(self, config: Config, target: str, tag: str = "") -> dict[str, str]:
        """The final variable values of a target after check() ran (bitbake -e output)."""
        path = self._config_dir(config, tag) / f"env-{target}.txt"
        return parse_env(path) if path.exists() else {}


_ENV_LINE = re.compile(r'^(?:export )?([A-Za-z0-9_${}.:/+-]+)="(.*)"$')


def parse_env(path: Path) -> dict[str, str]:
    """Variable values from `bitbake -e` output (last assignment wins)."""
    values: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _ENV_LINE.match(line)
        if m:
            values[m.group(1)] = m.group(2).replace('\\"', '"')
    return values


def _words(value: str | None) -> set[str]:
    return set((value or "").split())


def kernel_recipe(config: Config) -> str:
    """The kernel recipe of the machine (both merge fragments with kernel-yocto)."""
    return "linux-raspberrypi" if config.machine.startswith("raspberrypi") else "linux-yocto"


def kernel_failures(config: Config, image: dict[str, str], kernel: dict[str, str], built: set[str]) -> list[str]:
    """The board's packages reach the image and our kernel options win over everyone else's."""
    fails: list[str] = []
    need_install = "packagegroup-machine-base"
    if need_install not in _words(image.get("IMAGE_INSTALL")):
        fails.append(f"{need_install} not in IMAGE_INSTALL: the machine's MACHINE_EXTRA_RRECOMMENDS are dropped")
    if config.machine.startswith("raspberrypi"):
        recommended = _words(image.get("MACHINE_EXTRA_RRECOMMENDS"))
        for pkg in ("kernel-modules", "udev-rules-rpi"):
            if pkg not in recommended:
                fails.append(f"meta-raspberrypi no longer recommends {pkg} (MACHINE_EXTRA_RRECOMMENDS)")
        for recipe in ("udev-rules-rpi", "linux-firmware-rpidistro"):
            if recipe not in built:
                fails.append(f"{recipe} (a Pi board recommendation) is not in the task graph")
    ours = (kernel.get("EDGECONTAINERS_KERNEL_FEATURES") or "").split()
    features = (kernel.get("KERNEL_FEATURES") or "").split()
    if not ours or features[-len(ours) :] != ours:
        fails.append(f"{kernel_recipe(config)}: KERNEL_FEATURES does not end with ours ({ours}): {features}")
    if "edgecontainers-kmeta;type=kmeta" not in (kernel.get("SRC_URI") or ""):
        fails.append(f"{kernel_recipe(config)}: SRC_URI lacks the edgecontainers-kmeta kernel feature directory")
    if not any(f.endswith("cfg/docker.scc") for f in features):
        fails.append(f"{kernel_recipe(config)}: meta-virtualization's cfg/docker.scc is not in KERNEL_FEATURES")
    return fails


def expectations_failures(config: Config, env: dict[str, dict[str, str]], build_list: Iterable[str]) -> list[str]:
    """What the product promises, checked against BitBake's final values."""
    fails: list[str] = []
    image = env.get(config.image, {})
    bundle = env.get(config.bundle, {})
    base = env.get("edgecontainers-base", {})

    def need(cond: bool, what: str) -> None:
        if not cond:
            fails.append(what)

    distro_features = _words(image.get("DISTRO_FEATURES"))
    for feature in ("systemd", "usrmerge", "virtualization", "seccomp", "rauc", "vcontainer"):
        need(feature in distro_features, f"DISTRO_FEATURES lacks {feature}")
    need(not distro_features & {"sysvinit", "x11", "wayland"}, "DISTRO_FEATURES has sysvinit/x11/wayland")
    need(image.get("DISTRO") == "edgecontainers", f"DISTRO is {image.get('DISTRO')!r}")

    features = _words(image.get("IMAGE_FEATURES"))
    need("read-only-rootfs" in features, "IMAGE_FEATURES lacks read-only-rootfs")
    need("debug-tweaks" not in features, "IMAGE_FEATURES has debug-tweaks")
    dev_only = {"empty-root-password", "allow-root-login", "allow-empty-password"}
    if config.dev:
        need(dev_only <= features, f"dev image lacks {sorted(dev_only - features)}")
        need(image.get("EDGECONTAINERS_SERIAL_CONSOLE") == "1", "dev build has no serial console")
    else:
        need(not features & dev_only, f"production image has {sorted(features & dev_only)}")
        need(image.get("EDGECONTAINERS_SERIAL_CONSOLE") == "0", "production build has a serial console")
        need(
            "edgecontainers-production" in _words(image.get("IMAGE_INSTALL")),
            "production lock-down not installed",
        )

    expected_engine = {"podman": "podman", "docker": "docker-moby"}[config.engine]
    other_engine = {"podman": "docker-moby", "docker": "podman"}[config.engine]
    need(
        image.get("EDGECONTAINERS_ENGINE") == config.engine,
        f"EDGECONTAINERS_ENGINE is {image.get('EDGECONTAINERS_ENGINE')!r}",
    )
    need(
        image.get("VIRTUAL-RUNTIME_container_engine") == expected_engine,
        f"VIRTUAL-RUNTIME_container_engine is {image.get('VIRTUAL-RUNTIME_container_engine')!r}",
    )
    need(expected_engine in _words(image.get("IMAGE_INSTALL")), f"{expected_engine} not in IMAGE_INSTALL")
    built = set(build_list)
    need(expected_engine in built, f"{expected_engine} not in the task graph")
    need(other_engine not in built, f"{other_engine} is in the task graph")
    need(
        f"edgecontainers-demo-container:{config.engine}" in _words(image.get("BUNDLED_CONTAINERS")),
        f"demo app not preloaded (BUNDLED_CONTAINERS={image.get('BUNDLED_CONTAINERS')!r})",
    )

    bootloader = "grub" if config.machine.startswith("qemux86") else "uboot"
    need(
        image.get("WKS_FILE") == f"edgecontainers-ab-{bootloader}.wks",
        f"WKS_FILE is {image.get('WKS_FILE')!r}",
    )
    fstypes = _words(image.get("IMAGE_FSTYPES"))
    need({"ext4", "wic.zst", "wic.bmap"} <= fstypes, f"IMAGE_FSTYPES is {image.get('IMAGE_FSTYPES')!r}")

    compatible = f"edgecontainers-{config.machine}"
    need(
        bundle.get("RAUC_BUNDLE_COMPATIBLE") == compatible,
        f"RAUC_BUNDLE_COMPATIBLE is {bundle.get('RAUC_BUNDLE_COMPATIBLE')!r}, expected {compatible!r}",
    )
    need(
        bundle.get("RAUC_BUNDLE_FORMAT") == "verity",
        f"RAUC_BUNDLE_FORMAT is {bundle.get('RAUC_BUNDLE_FORMAT')!r}",
    )
    need(bundle.get("RAUC_SLOT_rootfs") == config.image, f"bundle carries {bundle.get('RAUC_SLOT_rootfs')!r}")

    if config.machine.startswith("raspberrypi"):
        fails.extend(_raspberrypi_failures(config, env))

    need(base.get("EDGECONTAINERS_JOURNAL_STORAGE") == "volatile", "journal is not volatile")
    need(bool(base.get("EDGECONTAINERS_JOURNAL_MAX")), "journal has no size cap")
    fails += kernel_failures(config, image, env.get(kernel_recipe(config), {}), built)
    need(
        "files/fs-perms-volatile-log.txt" in _words(image.get("FILESYSTEM_PERMS_TABLES")),
        "/var/log is not volatile",
    )
    # openssh's sshdgenkeys writes the host keys where sshd_config(_readonly) says: on /data
    # (/var/lib/ssh is in persist-base.conf), not in RAM (read-only-rootfs' /var/run/ssh).
    for var in ("OPENSSH_HOST_KEY_DIR", "OPENSSH_HOST_KEY_DIR_READONLY_CONFIG"):
        need(image.get(var) == "/var/lib/ssh", f"{var} is {image.get(var)!r}, not the persisted /var/lib/ssh")
    return fails


# the kernel file names the Pi firmware loads in 64-bit mode (Pi 4, Pi 5)
PI_64BIT_KERNELS = ("kernel8.img", "kernel_2712.img")


def _raspberrypi_failures(config: Config, env: dict[str, dict[str, str]]) -> list[str]:
    """The Pi's UART and kernel command line (firmware -> U-Boot -> boot.scr)."""
    fails: list[str] = []
    image = env.get(config.image, {})
    # Decided per variant, the same in both: U-Boot needs the UART
    # (meta-raspberrypi's rpi-config refuses ENABLE_UART = "0" with
    # RPI_USE_U_BOOT), production closes its inputs (checked above through
    # EDGECONTAINERS_SERIAL_CONSOLE and the production lock-down).
    if image.get("RPI_USE_U_BOOT") != "1":
        fails.append(f"RPI_USE_U_BOOT is {image.get('RPI_USE_U_BOOT')!r}: the Pi does not boot through boot.scr")
    if image.get("ENABLE_UART") != "1":
        fails.append(f"ENABLE_UART is {image.get('ENABLE_UART')!r} in the {config.variant} build, want '1' (U-Boot)")
    # The firmware starts U-Boot as the 64-bit kernel (u-boot.bin under the
    # kernel's file name: kernel8.img on the Pi 4, kernel_2712.img on the Pi 5,
    # both loaded in 64-bit mode) and boot.scr is on the boot partition; the
    # state file is not: boot.scr writes it on the first boot.
    kernel = image.get("SDIMG_KERNELIMAGE", "")
    if kernel not in PI_64BIT_KERNELS:
        fails.append(f"SDIMG_KERNELIMAGE is {kernel!r}, not a 64-bit kernel name ({', '.join(PI_64BIT_KERNELS)})")
    if image.get("UBOOT_MACHINE") != "rpi_arm64_config":
        fails.append(f"UBOOT_MACHINE is {image.get('UBOOT_MACHINE')!r}, want 'rpi_arm64_config' (64-bit U-Boot)")
    boot_files = _words(image.get("IMAGE_BOOT_FILES"))
    for want in (f"u-boot.bin;{kernel}", "boot.scr"):
        if want not in boot_files:
            fails.append(f"IMAGE_BOOT_FILES has no {want!r}: the boot partition would not boot through boot.scr")
    # boot.scr extends the firmware's command line (cmdline.txt with serial0
    # resolved, plus 8250.nr_uarts=1); the console comes from there.
    cmdline = _words(env.get("rpi-cmdline", {}).get("CMDLINE"))
    if "console=serial0,115200" not in cmdline:
        fails.append(f"cmdline.txt names no serial console (CMDLINE={sorted(cmdline)})")
    if any(w.startswith("root=") for w in cmdline):
        fails.append(f"cmdline.txt names a root, which is not the booted slot's (CMDLINE={sorted(cmdline)})")
    kernel_args = _words(env.get("edgecontainers-uboot-script", {}).get("EDGECONTAINERS_KERNEL_ARGS"))
    if any(w.startswith("console=serial") for w in kernel_args):
        fails.append("boot.scr passes console=serial*, which only the Pi firmware resolves (cmdline.txt)")
    return fails


def upstream_repos(project: Project) -> dict[str, tuple[str, str]]:
    """{checkout name: (url, branch)} of every upstream repository in kas/."""
    import yaml

    repos: dict[str, tuple[str, str]] = {}
    for path in sorted(project.kas_dir.rglob("*.yml")):
        if path.name.endswith(".lock.yml"):
            continue
        for name, spec in (yaml.safe_load(path.read_text()).get("repos") or {}).items():
            if spec and spec.get("url"):
                repos[name] = (spec["url"], str(spec.get("branch", RELEASE)))
    return repos


def setup_checkouts(
    project: Project, *, mirror_root: Path | None = None, log: Callable[[str], None] = print
) -> list[Path]:
    """Clone (or update) every upstream repository to <layers dir>/<name>-wrynose.

    From the network by default, or from bare snapshots laid out as
    <mirror_root>/<owner>+<name>/repo (what an offline machine has).  Every
    branch of the source becomes a local branch, so that kas can check out the
    pinned commit of any of them."""
    ensure_host_tools(log)
    root = layers_dir()
    root.mkdir(parents=True, exist_ok=True)
    made = []
    for name, (url, branch) in upstream_repos(project).items():
        if mirror_root:
            candidates = sorted(mirror_root.glob(f"*+{name}/repo"))
            if not candidates:
                raise ConfigError(f"no snapshot of {name} under {mirror_root} (looked for */{'{owner}'}+{name}/repo)")
            source = str(candidates[0])
        else:
            source = url
        dest = root / f"{name}-{RELEASE}"
        if (dest / ".git").exists():
            subprocess.run(
                ["git", "-C", str(dest), "fetch", "-q", source, "+refs/heads/*:refs/remotes/origin/*"], check=True
            )
        else:
            subprocess.run(["git", "clone", "-q", "--no-checkout", source, str(dest)], check=True)
        subprocess.run(["git", "-C", str(dest), "checkout", "-q", "-B", branch, f"origin/{branch}"], check=True)
        branches = subprocess.run(
            ["git", "-C", str(dest), "for-each-ref", "--format=%(refname:lstrip=3)", "refs/remotes/origin/"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for other in branches:
            if other not in ("HEAD", branch):
                subprocess.run(["git", "-C", str(dest), "branch", "-q", "-f", other, f"origin/{other}"], check=False)
        head = subprocess.run(["git", "-C", str(dest), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        log(f"{dest}: {branch} @ {head.stdout.strip()}")
        made.append(dest)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(BUILD_USER)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", BUILD_USER], check=True)
            log(f"created the user '{BUILD_USER}' to run BitBake as (BitBake refuses to run as root)")
        ensure_kas_venv(log)
    return made
