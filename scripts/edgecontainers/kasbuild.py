"""Composing and running a kas build, and collecting what it deployed.

kas and kas-container are run through their command lines.  The kas files
come from :class:`~edgecontainers.project.Project`; the signing keys from
:mod:`edgecontainers.pki` reach BitBake as EDGECONTAINERS_KEY_DIR (forwarded
by kas/base.yml's ``env`` section).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import pki, tools
from .errors import CommandFailed, ConfigError, EdgeError, UsageError
from .images import parse_bmap
from .project import DEFAULT_ENGINE, Project

log = logging.getLogger(__name__)

MIN_FREE_BYTES = 100 * 10**9  # a full build with sstate of both images and the bundle
IMAGE_TARGET = "edgecontainers-image"
BUNDLE_TARGET = "edgecontainers-bundle"
CONTAINER_KEY_DIR = "/edgecontainers/keys"
CONTAINER_SSH_KEYS = "/edgecontainers/ssh/authorized_keys"
MANIFEST_SCHEMA = 1
EXPECTED_KINDS = ("image", "bmap", "bundle", "sbom")


@dataclass
class BuildPlan:
    machine: str
    engine: str
    dev: bool
    options: list[str]
    container: bool
    kas_config: str
    argv: list[str]
    env: dict[str, str]  # added to the environment of kas
    cwd: Path
    build_dir: Path
    key_dir: Path
    manifest: Path
    targets: tuple[str, str]  # image recipe, bundle recipe

    @property
    def variant(self) -> str:
        return "development" if self.dev else "production"


def build_dir_for(root: Path, environ: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """Where kas puts the build: $KAS_BUILD_DIR, else $KAS_WORK_DIR/build, else <checkout>/build."""
    env = os.environ if environ is None else environ
    if env.get("KAS_BUILD_DIR"):
        return Path(os.path.abspath(env["KAS_BUILD_DIR"]))
    work = Path(os.path.abspath(env["KAS_WORK_DIR"])) if env.get("KAS_WORK_DIR") else root
    return work / "build"


def _no_space(what: str, value: str) -> None:
    if re.search(r"\s", value):
        raise ConfigError(f"--container cannot pass {what} '{value}': kas-container splits it at whitespace")


def plan_build(
    project: Project,
    machine: str,
    *,
    engine: str = DEFAULT_ENGINE,
    dev: bool = False,
    options: list[str] | None = None,
    sstate_mirror: str | None = None,
    hashserve: str | None = None,
    container: bool = False,
    key_dir: Path | None = None,
    authorized_keys: Path | None = None,
    manifest: Path | None = None,
) -> BuildPlan:
    """Everything about a build that can be decided without running anything."""
    opts = list(options or [])
    if dev and "dev" not in opts:
        opts.append("dev")
    for url, flag in ((sstate_mirror, "--sstate-mirror"), (hashserve, "--hashserve")):
        if url is not None and not re.match(r"^[a-z][a-z0-9+.-]*://\S+$", url):
            raise UsageError(f"{flag} wants a URL such as https://sstate.example.com/wrynose, not '{url}'")
    if (sstate_mirror or hashserve) and "sstate-mirror" not in opts:
        opts.append("sstate-mirror")
    kas_config = project.kas_config(machine, engine, opts)
    keys = pki.resolve_key_dir(key_dir)
    env = {pki.ENV_KEY_DIR: str(keys)}
    if sstate_mirror:
        env["SSTATE_MIRROR_URL"] = sstate_mirror.rstrip("/")
    if hashserve:
        env["HASHSERVE_UPSTREAM"] = hashserve
    if authorized_keys is not None:
        authorized_keys = Path(os.path.abspath(authorized_keys))
        if not authorized_keys.is_file():
            raise UsageError(f"--authorized-keys {authorized_keys} is not a file")
        env["EDGECONTAINERS_SSH_AUTHORIZED_KEYS"] = str(authorized_keys)

    if container:
        runtime = [f"-v {keys}:{CONTAINER_KEY_DIR}:ro", f"-e {pki.ENV_KEY_DIR}={CONTAINER_KEY_DIR}"]
        _no_space("the key directory", str(keys))
        for name in ("SSTATE_MIRROR_URL", "HASHSERVE_UPSTREAM"):
            if name in env:
                _no_space(name, env[name])
                runtime.append(f"-e {name}={env[name]}")
        if authorized_keys is not None:
            _no_space("the authorized_keys path", str(authorized_keys))
            runtime.append(f"-v {authorized_keys}:{CONTAINER_SSH_KEYS}:ro")
            runtime.append(f"-e EDGECONTAINERS_SSH_AUTHORIZED_KEYS={CONTAINER_SSH_KEYS}")
        argv = ["kas-container", "--runtime-args", " ".join(runtime), "build", kas_config]
    else:
        argv = ["kas", "build", kas_config]

    build_dir = build_dir_for(project.root)
    suffix = "-dev" if dev else ""
    targets = (f"{IMAGE_TARGET}{suffix}", f"{BUNDLE_TARGET}{suffix}")
    return BuildPlan(
        machine=machine,
        engine=engine,
        dev=dev,
        options=opts,
        container=container,
        kas_config=kas_config,
        argv=argv,
        env=env,
        cwd=project.root,
        build_dir=build_dir,
        key_dir=keys,
        manifest=Path(os.path.abspath(manifest))
        if manifest
        else build_dir / f"edgectl-manifest-{machine}{suffix}.json",
        targets=targets,
    )


def free_space(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or would, once created)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_prerequisites(plan: BuildPlan) -> list[str]:
    """Raise on what stops a build; return warnings for what merely endangers it."""
    if not plan.container and os.geteuid() == 0:
        raise UsageError(
            "refusing to run kas as root: BitBake does not build as root",
            hint="run 'edgectl build' as a normal user, or add --container to build in kas-container",
        )
    tools.require(plan.argv[0])
    pki.require_build_keys(plan.key_dir)
    warnings = []
    free = free_space(plan.build_dir)
    if free < MIN_FREE_BYTES:
        warnings.append(
            f"only {free / 10**9:.0f} GB free for {plan.build_dir}; a full build needs about "
            f"{MIN_FREE_BYTES // 10**9} GB (it may fail when the disk fills up)"
        )
    return warnings


def run_kas(plan: BuildPlan) -> float:
    """Run kas with its output going straight to the terminal; returns seconds taken."""
    start = time.monotonic()
    try:
        tools.run(plan.argv, env={**os.environ, **plan.env}, cwd=plan.cwd)
    except CommandFailed as exc:
        exc.hint = f"the BitBake output above says why; logs: {plan.build_dir}/tmp/log/cooker/{plan.machine}/"
        raise
    return time.monotonic() - start


@dataclass
class Artifact:
    kind: str  # image, image-raw, bmap, bundle, sbom
    path: str  # as deployed (usually the stable symlink)
    file: str  # the file it resolves to
    size: int
    sha256: str
    details: dict[str, int] = field(default_factory=dict)


def _kind(name: str) -> str | None:
    if re.search(r"\.wic\.(zst|gz|bz2|xz)$", name):
        return "image"
    if name.endswith(".wic"):
        return "image-raw"
    if name.endswith(".wic.bmap"):
        return "bmap"
    if name.endswith(".raucb"):
        return "bundle"
    if ".spdx" in name:
        return "sbom"
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def deploy_dirs(build_dir: Path, machine: str) -> list[Path]:
    return sorted(p for p in build_dir.glob(f"tmp*/deploy/images/{machine}") if p.is_dir())


def find_artifacts(build_dir: Path, machine: str, targets: tuple[str, ...]) -> list[Artifact]:
    """The image, block map, bundle and SBOM files of ``targets`` for ``machine``.

    Deploy directories hold timestamped files plus stable symlinks to the newest;
    the symlinks are reported (resolved for size and checksum), or the newest
    file of a kind when there is no symlink."""
    prefixes = tuple(f"{t}-{machine}" for t in targets)
    by_kind: dict[str, list[Path]] = {}
    for deploy in deploy_dirs(build_dir, machine):
        for p in sorted(deploy.iterdir()):
            rest = next((p.name[len(pre) :] for pre in prefixes if p.name.startswith(pre)), None)
            if rest is None or rest[:1] not in (".", "-"):
                continue
            kind = _kind(p.name)
            if kind and p.exists() and p.resolve().is_file():
                by_kind.setdefault(kind, []).append(p)
    artifacts = []
    for kind, paths in by_kind.items():
        links = [p for p in paths if p.is_symlink()]
        chosen = links or [max(paths, key=lambda p: p.stat().st_mtime)]
        for p in chosen:
            real = p.resolve()
            art = Artifact(
                kind=kind, path=str(p), file=str(real), size=real.stat().st_size, sha256=sha256_of(real)
            )
            if kind == "bmap":
                try:
                    bmap = parse_bmap(real)
                    art.details = {"image_size": bmap.image_size, "mapped_bytes": bmap.mapped_bytes}
                except UsageError as exc:
                    log.warning("edgectl: warning: %s", exc)
            artifacts.append(art)
    order = {k: i for i, k in enumerate(("image", "image-raw", "bmap", "bundle", "sbom"))}
    artifacts.sort(key=lambda a: (order.get(a.kind, 99), a.path))
    return artifacts


def missing_kinds(artifacts: list[Artifact]) -> list[str]:
    have = {a.kind for a in artifacts}
    return [k for k in EXPECTED_KINDS if k not in have]


def collect(plan: BuildPlan) -> list[Artifact]:
    artifacts = find_artifacts(plan.build_dir, plan.machine, plan.targets)
    if not artifacts:
        where = deploy_dirs(plan.build_dir, plan.machine)
        shown = ", ".join(map(str, where)) or f"{plan.build_dir}/tmp*/deploy/images/{plan.machine}"
        raise EdgeError(f"kas finished but no artifacts of {', '.join(plan.targets)} are in {shown}")
    return artifacts


def write_manifest(plan: BuildPlan, artifacts: list[Artifact], seconds: float) -> Path:
    data = {
        "schema": MANIFEST_SCHEMA,
        "tool": "edgectl build",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": plan.machine,
        "engine": plan.engine,
        "variant": plan.variant,
        "kas_config": plan.kas_config,
        "command": subprocess.list2cmdline(plan.argv),
        "build_dir": str(plan.build_dir),
        "key_dir": str(plan.key_dir),
        "duration_seconds": round(seconds, 1),
        "artifacts": [asdict(a) for a in artifacts],
        "missing": missing_kinds(artifacts),
    }
    plan.manifest.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.manifest.with_name(plan.manifest.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, plan.manifest)
    return plan.manifest
