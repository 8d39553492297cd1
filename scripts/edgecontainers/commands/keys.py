"""``edgectl keys``: development keys for signing RAUC bundles."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import pki
from ..errors import EdgeError

NAME = "keys"
HELP = "create and show development keys for signing update bundles"
DESCRIPTION = f"""\
Manage the development PKI that signs RAUC update bundles: a CA (its
certificate is the keyring built into the image) and a signing certificate
and key issued by it.  Every subject says DEVELOPMENT: never ship these keys.

The keys live outside the checkout, in a per-user directory (never in a git
work tree, where they would get committed by accident):
  --dir DIR, else ${pki.ENV_KEY_DIR}, else
  $XDG_DATA_HOME/edgecontainers/keys/development
  (~/.local/share/edgecontainers/keys/development)
It holds {", ".join(pki.ALL_FILES)}.
'edgectl build' passes that directory to the build as {pki.ENV_KEY_DIR}.

actions:
  init    create the CA and the signing certificate; refuses if any key exists
  show    print the directory, fingerprints and expiry, and check the keys

examples:
  edgectl keys init                       create keys in the default directory
  edgectl keys init --key-type rsa --days 365
  edgectl keys show                       fingerprints and expiry
  export {pki.ENV_KEY_DIR}=$(edgectl keys show --path)
                                          for a plain 'kas build'

exit codes: 0 done, 1 refused (keys exist, git work tree) or unusable keys,
2 bad arguments, no keys, or openssl missing.
"""


def _hidden_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help=f"key directory (default: ${pki.ENV_KEY_DIR} or {pki.default_key_dir()})",
    )


def setup_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = sub.add_parser(
        "init",
        help="create a development CA and signing certificate",
        description="Create a development CA and a signing certificate issued by it.\n"
        "Refuses (exit 1) if any of the key files already exists or the directory\n"
        "is inside a git work tree.  Private keys are created mode 0600 in a 0700\n"
        "directory.\n\n"
        "examples:\n"
        "  edgectl keys init\n"
        "  edgectl keys init --dir ~/keys/edge-dev --key-type rsa\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _dir_option(init)
    init.add_argument(
        "--key-type",
        choices=pki.KEY_TYPES,
        default="ec",
        help="ec: NIST P-256, rsa: RSA 4096 (default: %(default)s)",
    )
    init.add_argument(
        "--days",
        type=int,
        default=pki.DEFAULT_DAYS,
        metavar="N",
        help="validity of both certificates in days (default: %(default)s)",
    )
    _hidden_debug(init)
    show = sub.add_parser(
        "show",
        help="print the key directory, fingerprints and expiry",
        description="Print where the keys are, their SHA-256 fingerprints and expiry, and\n"
        "check them: the signing certificate must verify against the CA with the\n"
        "purpose RAUC checks, and the key must match it.  Exit 1 if they are\n"
        "unusable (expired, mismatched), 2 if there are none.\n\n"
        "examples:\n"
        "  edgectl keys show\n"
        f"  export {pki.ENV_KEY_DIR}=$(edgectl keys show --path)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _dir_option(show)
    show.add_argument("--path", action="store_true", help="print only the directory (for scripts)")
    _hidden_debug(show)


def _print_cert(label: str, files: str, info: pki.CertInfo, *, issuer: bool) -> None:
    print(f"  {label}: {files}")
    print(f"    subject   {info.subject}")
    if issuer:
        print(f"    issuer    {info.issuer}")
    print(f"    sha256    {info.sha256}")
    left = info.days_left()
    state = f"{left} days left" if left >= 0 else "EXPIRED"
    print(f"    valid     {info.not_before:%Y-%m-%d} to {info.not_after:%Y-%m-%d %H:%M} UTC ({state})")


def _show(keys: pki.KeySet) -> None:
    print(f"development signing keys in {keys.directory}")
    _print_cert("CA certificate, the keyring devices trust", pki.CA_CERT, keys.ca, issuer=False)
    _print_cert(
        "signing certificate and key", f"{pki.SIGNING_CERT}, {pki.SIGNING_KEY}", keys.signing, issuer=True
    )
    if not keys.problems:
        print("  checks: the signing certificate verifies against the CA with RAUC's purpose check;")
        print("          the key matches the certificate")
    for warning in keys.warnings:
        print(f"  warning: {warning}")
    for problem in keys.problems:
        print(f"  PROBLEM: {problem}")
    print()
    print("'edgectl build' uses them; for a plain kas build:")
    print(f"  export {pki.ENV_KEY_DIR}={keys.directory}")


def run(args: argparse.Namespace) -> int:
    key_dir = pki.resolve_key_dir(args.dir)
    if args.action == "init":
        created = pki.init(key_dir, days=args.days, key_type=args.key_type)
        print(f"created development keys ({args.key_type}, valid {args.days} days):")
        for path in created:
            print(f"  {path}")
        print("They are marked DEVELOPMENT and are for development only: never ship them.\n")
        _show(pki.load(key_dir))
        return 0
    keys = pki.load(key_dir)
    if args.path:
        if keys.problems:
            raise EdgeError(f"the keys in {key_dir} are unusable: {keys.problems[0]}")
        print(keys.directory)
        return 0
    _show(keys)
    if keys.problems:
        raise EdgeError(f"the keys in {key_dir} are unusable: {keys.problems[0]}")
    return 0
