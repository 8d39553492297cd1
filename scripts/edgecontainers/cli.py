"""``edgectl``: the command-line entry point.

Every subcommand is a small module in :mod:`edgecontainers.commands` with
``NAME``, ``HELP``, ``DESCRIPTION`` (with examples), ``setup_parser(parser)``
and ``run(args) -> int``.  This module is the only place that turns errors into
exit codes (see :mod:`edgecontainers.errors`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from . import __version__
from .errors import EXIT_FAILED, EXIT_USAGE, EdgeError, Interrupted

# Order is the order shown in --help.  Each name is a module in commands/.
COMMANDS: tuple[str, ...] = ("build", "flash", "keys", "bundle", "check", "qemu", "test")

EPILOG = """\
examples:
  edgectl build raspberrypi4-64              build the production image and bundle
  edgectl build qemux86-64 --engine docker --dev
  edgectl keys init                          create development signing keys
  edgectl flash build/tmp/deploy/images/raspberrypi4-64/edgecontainers-image-raspberrypi4-64.rootfs.wic.zst /dev/sdX
  edgectl qemu --machine qemux86-64          boot the latest qemux86-64 build
  edgectl test                               run the QEMU system suite
  edgectl check bitbake --all                offline BitBake parse/graph matrix

exit codes: 0 success, 1 the job failed, 2 usage or configuration error.
Run 'edgectl COMMAND --help' for the options of one command.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors through our exit code (2) with one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise _UsageExit(f"{self.prog}: error: {message}")


class _UsageExit(Exception):
    pass


def _load(name: str):
    return importlib.import_module(f"edgecontainers.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgectl",
        description="Build, flash, test and update meta-edgecontainers devices.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgectl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        mod = _load(name)
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        mod.setup_parser(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(levelname)s: %(message)s" if debug else "%(message)s",
    )
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args._run(args) or 0)
    except _UsageExit as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err = Interrupted("interrupted")
        print(f"edgectl: {err}", file=sys.stderr)
        return err.exit_code
    except EdgeError as exc:
        if debug:
            traceback.print_exc()
        print(f"edgectl: error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"edgectl: hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except Exception:  # a bug: still one line unless --debug
        if debug:
            traceback.print_exc()
        else:
            etype, evalue, _ = sys.exc_info()
            print(
                f"edgectl: internal error: {etype.__name__ if etype else 'Exception'}: {evalue} "
                "(run with --debug for the traceback; please report it)",
                file=sys.stderr,
            )
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
