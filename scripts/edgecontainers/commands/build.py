"""``edgectl build``: build an image and its update bundle with kas."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .. import kasbuild, pki
from ..errors import ConfigError
from ..project import DEFAULT_ENGINE, ENGINES, Project
from ..units import human_duration, human_size

NAME = "build"
HELP = "build the image, its block map, update bundle and SBOM with kas"


def _machines() -> str:
    try:
        return ", ".join(Project.discover().machines())
    except ConfigError:
        return "see kas/*.yml"


DESCRIPTION = f"""\
Build a machine's SD-card/disk image and its signed RAUC update bundle.

edgectl composes the kas files (kas/MACHINE.yml plus kas/opt/*.yml for the
engine and options), checks the prerequisites (kas installed, not running as
root, signing keys present, free disk space: a warning under 100 GB), runs
'kas build' (or kas-container with --container) with its live output, and then
lists the artifacts (image, block map, bundle, SBOM) with their sizes and
writes them, with SHA-256 checksums, to a JSON manifest.

Bundles are signed with the keys from 'edgectl keys init', passed to BitBake
as {pki.ENV_KEY_DIR}.  The build directory is $KAS_BUILD_DIR, else
$KAS_WORK_DIR/build, else build/ in the checkout.

machines: {_machines()}

examples:
  edgectl build raspberrypi4-64            production image and bundle, podman
  edgectl build qemux86-64 --engine docker --dev
                                           development image with docker
  edgectl build raspberrypi5 --sstate-mirror https://sstate.example.com/wrynose
  edgectl build qemuarm64 --container      build inside kas-container
  edgectl build raspberrypi4-64 --option shared-cache --dry-run
                                           show the kas command, run nothing

exit codes: 0 built, 1 kas failed or deployed nothing, 2 bad arguments, kas
or signing keys missing, or running as root without --container.
"""


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("machine", help="machine to build for (a kas/MACHINE.yml file)")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULT_ENGINE,
        help="container engine in the image (default: %(default)s)",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development image and bundle: root console, debug tools (kas/opt/dev.yml); never ship it",
    )
    parser.add_argument(
        "--sstate-mirror",
        metavar="URL",
        help="fetch shared state from this mirror (kas/opt/sstate-mirror.yml, SSTATE_MIRROR_URL)",
    )
    parser.add_argument(
        "--hashserve",
        metavar="URL",
        help="upstream hash-equivalence server, e.g. wss://hashserv.example.com/ws (HASHSERVE_UPSTREAM)",
    )
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="NAME",
        help="add kas/opt/NAME.yml, e.g. shared-cache (repeatable)",
    )
    parser.add_argument(
        "--container",
        action="store_true",
        help="run the build in kas-container (docker or podman; set KAS_CONTAINER_ENGINE to choose)",
    )
    parser.add_argument(
        "--key-dir",
        type=Path,
        metavar="DIR",
        help=f"signing keys (default: ${pki.ENV_KEY_DIR} or {pki.default_key_dir()})",
    )
    parser.add_argument(
        "--authorized-keys",
        type=Path,
        metavar="FILE",
        help="authorized_keys for root: gives production images an SSH server (public keys only)",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help="where to write the JSON manifest (default: BUILD_DIR/edgectl-manifest-MACHINE[-dev].json)",
    )
    parser.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="check prerequisites and show the kas command; run nothing",
    )


def _rel(path: str | Path) -> str:
    """Relative to the current directory when below it, absolute otherwise."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _print_summary(plan: kasbuild.BuildPlan, artifacts: list[kasbuild.Artifact], seconds: float) -> None:
    print(f"\nbuild finished in {human_duration(seconds)}: {plan.machine}, {plan.engine}, {plan.variant}")
    width = max(len(Path(a.path).name) for a in artifacts)
    dirs = sorted({str(Path(a.path).parent) for a in artifacts})
    print(f"artifacts in {', '.join(_rel(d) for d in dirs)}:")
    for a in artifacts:
        extra = ""
        if a.kind == "bmap" and a.details:
            extra = (
                f"  (image {human_size(a.details['image_size'])} raw, "
                f"{human_size(a.details['mapped_bytes'])} of data)"
            )
        print(f"  {a.kind:<10} {Path(a.path).name:<{width}}  {human_size(a.size):>10}{extra}")
    for kind in kasbuild.missing_kinds(artifacts):
        print(f"  {kind:<10} (not found)")
    print(f"manifest: {_rel(plan.manifest)}")
    image = next((a for a in artifacts if a.kind == "image"), None)
    bundle = next((a for a in artifacts if a.kind == "bundle"), None)
    if image or bundle:
        print("next:")
    if image:
        print(f"  edgectl flash {_rel(image.path)} /dev/sdX")
    if bundle:
        print(f"  edgectl bundle info {_rel(bundle.path)}")


def run(args: argparse.Namespace) -> int:
    project = Project.discover()
    plan = kasbuild.plan_build(
        project,
        args.machine,
        engine=args.engine,
        dev=args.dev,
        options=args.option,
        sstate_mirror=args.sstate_mirror,
        hashserve=args.hashserve,
        container=args.container,
        key_dir=args.key_dir,
        authorized_keys=args.authorized_keys,
        manifest=args.manifest,
    )
    for warning in kasbuild.check_prerequisites(plan):
        print(f"edgectl: warning: {warning}", file=sys.stderr)
    env_shown = " ".join(f"{k}={v}" for k, v in plan.env.items())
    command = subprocess.list2cmdline(plan.argv)
    if args.dry_run:
        print(f"would run in {plan.cwd}:")
        print(f"  {env_shown} {command}")
        print(f"build directory: {plan.build_dir}")
        print(f"manifest: {plan.manifest}")
        return 0
    print(f"building {plan.machine} ({plan.engine}, {plan.variant}) in {plan.build_dir}", flush=True)
    print(f"running: {env_shown} {command}", flush=True)
    seconds = kasbuild.run_kas(plan)
    artifacts = kasbuild.collect(plan)
    kasbuild.write_manifest(plan, artifacts, seconds)
    _print_summary(plan, artifacts, seconds)
    return 0
