"""``edgectl test``: run the QEMU system tests."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, UsageError
from ..project import Project

NAME = "test"
HELP = "run the QEMU system tests (smoke suite) against the test image or a kas build"
DESCRIPTION = """\
Run the QEMU system tests (pytest marker 'qemu') in tests/system.

Without --image/--deploy-dir they build (or take from the cache in
~/.cache/edgecontainers/testimage) the Debian-based test images that carry
the layer's on-target files and boot them: podman production through
OVMF+GRUB, podman dev and docker production by direct kernel boot.  With
--deploy-dir (and optionally --image) they boot a kas-built image instead,
the way its <image>.qemuboot.conf says.  Console logs go to
build/test-results/console/, JUnit XML to build/test-results/junit-system.xml.
Needs root to build test images (see docs/testing.md for the host packages).

Arguments after the options (or after --) go to pytest.

--mutants runs the mutation run instead (docs/testing.md): each mutant of
scripts/edgecontainers/mutants.py breaks one promised property in a copy of
the layer; the smoke suite runs on a test image built from that copy
(podman production, direct boot unless --engine/--variant/--boot say
otherwise) and must fail.  One line per mutant, then "N of M mutants killed";
logs and JUnit XML in build/test-results/mutants/.  --jobs 2 runs two
mutants at a time (each is one image build and one single-threaded guest).

examples:
  edgectl test                                      the whole smoke suite
  edgectl test -- -k journald                       one property
  edgectl test --engine docker                      only the docker boot
  edgectl test --deploy-dir build/tmp/deploy/images/qemux86-64 --variant dev
  edgectl test --mutants --jobs 2                   the mutation run
  edgectl test --mutant ssh-passwords               one mutant
  edgectl test --deploy-dir build/tmp/deploy/images/qemux86-64 --ssh-key ~/.ssh/id_ed25519
                                                    a production kas build (built with
                                                    EDGECONTAINERS_SSH_AUTHORIZED_KEYS)

exit codes: 0 all tests passed (--mutants: every mutant killed), 1 a test
failed (--mutants: a mutant survived or could not run), 2 bad arguments or
pytest could not run (not installed, no tests collected).
"""


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", metavar="PATH|NAME", help="a kas-built image (.qemuboot.conf, disk image or name)")
    parser.add_argument("--deploy-dir", type=Path, metavar="DIR", help="kas deploy directory")
    parser.add_argument("--engine", choices=("podman", "docker"), help="only this engine")
    parser.add_argument("--variant", choices=("production", "dev"), help="only this image variant")
    parser.add_argument("--boot", choices=("grub", "uboot", "direct"), help="only this boot path")
    parser.add_argument("--ssh-key", type=Path, metavar="KEY", help="key the production kas image trusts")
    parser.add_argument(
        "--junitxml", type=Path, metavar="FILE", help="JUnit XML (default: build/test-results/junit-system.xml)"
    )
    parser.add_argument("--mutants", action="store_true", help="the mutation run: every mutant must fail the suite")
    parser.add_argument("--mutant", action="append", metavar="NAME", help="only this mutant (repeatable)")
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="--mutants: N mutants at a time (2 on a 2-core host)"
    )
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="arguments for pytest")


def pytest_argv(args: argparse.Namespace, root: Path) -> list[str]:
    argv = [sys.executable, "-m", "pytest", str(root / "tests" / "system"), "-m", "qemu", "-rs"]
    for opt in ("image", "deploy_dir", "engine", "variant", "boot", "ssh_key"):
        value = getattr(args, opt)
        if value:
            argv += [f"--{opt.replace('_', '-')}", str(value)]
    junit = args.junitxml or root / "build" / "test-results" / "junit-system.xml"
    argv.append(f"--junitxml={junit}")
    extra = list(args.pytest_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    return argv + extra


def mutant_pytest_args(args: argparse.Namespace) -> list[str]:
    """The boot the mutants are tried on: podman production by direct boot unless asked."""
    if args.image or args.deploy_dir:
        raise UsageError("--mutants builds test images from mutated layers; it cannot use --image/--deploy-dir")
    argv = ["--engine", args.engine or "podman", "--variant", args.variant or "production",
            "--boot", args.boot or "direct"]  # fmt: skip
    extra = list(args.pytest_args or [])
    return argv + (extra[1:] if extra[:1] == ["--"] else extra)


def run_mutants(args: argparse.Namespace, root: Path) -> int:
    from .. import mutants
    from ..testimage.builder import cache_root

    chosen = mutants.select(args.mutant)
    images = cache_root() / "images"

    def cleanup(m: mutants.Mutant) -> None:  # a mutant's image is never used again
        for d in images.glob(f"*-mutant-{m.name}-*"):
            shutil.rmtree(d, ignore_errors=True)

    results = root / "build" / "test-results" / "mutants"
    outcomes = mutants.run_all(
        chosen, root, results, mutant_pytest_args(args), echo=print, cleanup=cleanup, jobs=args.jobs
    )
    return EXIT_OK if all(o.status == "killed" for o in outcomes) else EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    root = Project.discover().root
    try:
        import pytest  # noqa: F401
    except ImportError:
        raise ConfigError("pytest is not installed", hint="pip install -e '.[test]'") from None
    if args.mutants or args.mutant:
        return run_mutants(args, root)
    argv = pytest_argv(args, root)
    rc = subprocess.call(argv, cwd=root)
    if rc in (0, 1):
        return rc
    return EXIT_USAGE
