"""edgectl check: offline BitBake checks of the layer against the upstream layers,
and its kernel fragments against a kernel tree."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import bbcheck, kconfig
from ..errors import EXIT_FAILED, EXIT_OK, ConfigError, UsageError
from ..project import ENGINES, Project

NAME = "check"
HELP = "parse the layer and resolve its task graph against the real upstream layers, offline; kernel fragments"
DESCRIPTION = """\
Run BitBake against the real wrynose layers without building anything and
without network access: 'bitbake -p' (every recipe parses), 'bitbake -g' of
the image and bundle (every dependency has a provider) and 'bitbake -e'
assertions (distro features, read-only rootfs, engine, wks file, RAUC
compatible, volatile logs) for each configuration.

The upstream layers come from local git checkouts in $YOCTO_LAYERS_DIR
(default /var/cache/yocto-layers, one <repo>-wrynose directory each; make
them with 'edgectl check setup').  BitBake's parse cache is kept per
configuration in /var/cache/edgecontainers/bbcheck (as root) or
~/.cache/edgecontainers/bbcheck: a cold parse takes about 5 minutes on 2
cores, a warm one seconds.  As root, BitBake runs as the user 'builder',
with kas from a venv of its own in /var/cache/edgecontainers/kas-venv, so
the checkout may be anywhere (under /root, in a mode-0700 directory).
'edgectl check setup' installs BitBake's missing host tools as root
(Debian/Ubuntu), and names them otherwise.

Without --machine/--engine/--variant/--all it checks a subset that covers
both engines, both variants and every boot path (what CI runs).

'edgectl check kernel' checks the layer's kernel configuration fragments
(recipes-kernel/linux/files/edgecontainers-kmeta) against a kernel tree, as
oe-core's do_kernel_configcheck would after a build: per architecture the
upstream defconfig, the fragments merged last with the kernel's
merge_config.sh, 'make olddefconfig'; every option must keep the value its
fragment asks for (an unknown option, or one whose dependencies are not met,
fails naming the fragment line).  The tree is --source (a directory or a
tarball), by default two of Debian's that bracket wrynose's 6.18 (which
Debian does not package): trixie's linux-source-6.12 and the newest series
in trixie-backports, downloaded once into the test image cache; an option
only one of the two defines is a note.
Needs make, gcc, flex, bison, and gcc-aarch64-linux-gnu for arm64 on x86-64.

examples:
  edgectl check setup                          clone the upstream layers (network)
  edgectl check setup --from-mirror /srv/snapshots    ... or from local snapshots
  edgectl check setup --tools-only             only BitBake's host tools and kas for the build user
  edgectl check bitbake                        the CI subset (3 configurations)
  edgectl check bitbake --all                  all machines x engines x variants
  edgectl check bitbake --machine qemuarm64 --engine docker --variant dev
  edgectl check kernel                         the fragments, x86_64 and arm64, Debian's trees
  edgectl check kernel --arch arm64 --source ~/src/linux-yocto

exit codes: 0 all checks passed, 1 a check failed, 2 usage error or the
upstream layer checkouts are missing.
"""


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "what",
        choices=["bitbake", "kernel", "setup"],
        help="'bitbake': run the checks; 'kernel': the kernel fragments; 'setup': make the layer checkouts",
    )
    parser.add_argument(
        "--from-mirror", type=Path, metavar="DIR", help="setup: clone from snapshots DIR/<owner>+<repo>/repo"
    )
    parser.add_argument(
        "--tools-only",
        action="store_true",
        help="setup: only BitBake's host tools (installed as root, else named) and the build user's kas venv",
    )
    parser.add_argument("--machine", action="append", metavar="MACHINE", help="machine to check (repeatable)")
    parser.add_argument("--engine", action="append", choices=ENGINES, help="engine to check (repeatable)")
    parser.add_argument("--variant", action="append", choices=bbcheck.VARIANTS, help="image variant (repeatable)")
    parser.add_argument("--all", action="store_true", help="the full matrix of machines, engines and variants")
    parser.add_argument("--no-env", action="store_true", help="skip the 'bitbake -e' assertions")
    parser.add_argument("--keep-going", action="store_true", help="check the other configurations after a failure")
    parser.add_argument(
        "--arch",
        action="append",
        choices=sorted(kconfig.ARCHES),
        help="kernel: architecture (repeatable)",
    )
    parser.add_argument("--source", type=Path, metavar="PATH", help="kernel: a kernel tree or tarball")


def select(project: Project, args: argparse.Namespace) -> list[bbcheck.Config]:
    if args.all and (args.machine or args.engine or args.variant):
        raise UsageError("--all cannot be combined with --machine, --engine or --variant")
    if args.all:
        return bbcheck.matrix(project)
    if not (args.machine or args.engine or args.variant):
        return list(bbcheck.CI_SUBSET)
    for machine in args.machine or []:
        project.machine_kas(machine)  # unknown machine -> UsageError listing the valid ones
    machines = args.machine or project.machines()
    engines = args.engine or ["podman"]
    variants = args.variant or ["production"]
    return [bbcheck.Config(m, e, v) for m in machines for e in engines for v in variants]


def run(args: argparse.Namespace) -> int:
    project = Project.discover()
    if args.what == "setup":
        if args.from_mirror and not args.from_mirror.is_dir():
            raise UsageError(f"--from-mirror {args.from_mirror}: no such directory")
        if args.tools_only:
            bbcheck.ensure_host_tools()
            if os.geteuid() == 0:
                bbcheck.ensure_kas_venv()
            print("BitBake's host tools are installed")
            return EXIT_OK
        bbcheck.setup_checkouts(project, mirror_root=args.from_mirror)
        reason = bbcheck.availability()
        if reason:
            raise ConfigError(reason)
        print(f"upstream layer checkouts ready in {bbcheck.layers_dir()}")
        return EXIT_OK
    if args.what == "kernel":
        return run_kernel(project, args)
    configs = select(project, args)
    reason = bbcheck.availability()
    if reason:
        raise ConfigError(f"cannot run the BitBake checks: {reason}")
    checker = bbcheck.Checker(project)
    results = []
    for config in configs:
        result = checker.check(config, env_checks=not args.no_env)
        results.append(result)
        if not result.ok and not args.keep_going:
            break
    print()
    for result in results:
        print(result.summary())
    skipped = len(configs) - len(results)
    if skipped:
        print(f"{skipped} configuration(s) not checked after the failure (use --keep-going)")
    return EXIT_OK if all(r.ok for r in results) and not skipped else EXIT_FAILED


def run_kernel(project: Project, args: argparse.Namespace) -> int:
    from ..testimage.builder import cache_root

    frags = kconfig.fragments(project.layer)
    cache = cache_root().parent / "kernel"
    trees = kconfig.source_trees(args.source, cache)
    results = []
    for name in args.arch or sorted(kconfig.ARCHES, reverse=True):
        for tree in trees:
            version = kconfig.kernel_version(tree)
            results.append(kconfig.check(tree, kconfig.ARCHES[name], frags, cache / "out" / f"{version}-{name}"))
    failures, notes = kconfig.verdict(results)
    for line in notes:
        print(f"note: {line}")
    for line in failures:
        print(line)
    for r in results:
        bad = sum(1 for f in failures if f.startswith(f"{r.arch} Linux {r.version}: "))
        print(f"{'FAIL' if bad else 'PASS'} {r.arch} Linux {r.version}: {r.options - bad} of {r.options} options "
              "as the fragments ask")  # fmt: skip
    return EXIT_FAILED if failures else EXIT_OK
