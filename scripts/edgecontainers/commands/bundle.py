"""``edgectl bundle``: inspect RAUC update bundles."""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
from pathlib import Path

from .. import pki, tools
from ..errors import ConfigError, EdgeError, UsageError

log = logging.getLogger(__name__)

NAME = "bundle"
HELP = "check the signature of an update bundle and show its manifest"
DESCRIPTION = f"""\
Inspect RAUC update bundles (.raucb) with 'rauc info'.

info  verify the bundle's signature against our keyring (the CA certificate
      from 'edgectl keys', or --keyring) and print its manifest: compatible,
      version, format, images and the certificate chain.  A bundle that is
      unsigned, tampered with, or signed by a certificate outside the keyring
      fails with exit code 1 and one line saying why.

The keyring is {pki.CA_CERT} in the key directory: --dir, else
${pki.ENV_KEY_DIR}, else
{pki.default_key_dir()}.

examples:
  edgectl bundle info build/tmp/deploy/images/qemux86-64/edgecontainers-bundle-qemux86-64.raucb
  edgectl bundle info --json update.raucb | jq .version
  edgectl bundle info --keyring /etc/edgecontainers/release-ca.pem update.raucb

exit codes: 0 verified, 1 not verified, 2 bad arguments, no keyring, or rauc
missing (apt install rauc).
"""

_SIGNED_BY = re.compile(r"Verified (?:inline |detached )?signature by '(.*)'")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NOT_OURS = "it was not signed by a certificate issued by this keyring's CA"
_HINTS = {
    "unable to get local issuer certificate": _NOT_OURS,
    "self-signed certificate": _NOT_OURS,
    "unsuitable certificate purpose": "the signing certificate lacks the purpose RAUC checks "
    "(codeSigning + emailProtection, as 'edgectl keys init' makes them)",
    "certificate has expired": "a certificate in the chain has expired; --no-check-time ignores expiry",
    "certificate is not yet valid": "a certificate is not valid yet: is this computer's clock right?",
    "no valid cms": "the signature part of the file is damaged",
    "cms routines": "the signature does not match the bundle: it was modified after signing",
    "decode error": "the signature part of the file is damaged",
    "asn1": "the signature part of the file is damaged",
}


def _hidden_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def setup_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = sub.add_parser(
        "info",
        help="verify the signature and print the manifest",
        description="Verify a bundle's signature against the keyring and print its manifest\n"
        "(rauc info).  Exit 0 verified, 1 not verified, 2 bad arguments or no keyring.\n\n"
        "examples:\n"
        "  edgectl bundle info edgecontainers-bundle-raspberrypi4-64.raucb\n"
        "  edgectl bundle info --json update.raucb\n"
        "  edgectl bundle info --keyring release-ca.pem update.raucb\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("bundle", type=Path, help="the .raucb file")
    info.add_argument(
        "--keyring",
        type=Path,
        metavar="PEM",
        help=f"CA certificate(s) to trust (default: {pki.CA_CERT} in the key directory)",
    )
    info.add_argument("--dir", type=Path, metavar="DIR", help="key directory holding the keyring")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON (rauc's json-pretty)")
    info.add_argument(
        "--no-check-time", action="store_true", help="accept certificates outside their validity period"
    )
    _hidden_debug(info)


def _reason(stderr: str) -> str:
    lines = [
        _ANSI.sub("", line).strip()
        for line in stderr.splitlines()
        if line.strip() and not line.lstrip().startswith(("rauc-Message", "rauc-Debug", "rauc-Info"))
    ]
    return lines[-1] if lines else "rauc info failed"


def _hint(reason: str) -> str | None:
    low = reason.lower()
    for needle, hint in _HINTS.items():
        if needle in low:
            return hint
    return None


def run(args: argparse.Namespace) -> int:
    bundle: Path = args.bundle
    if not bundle.is_file():
        raise UsageError(
            f"bundle {bundle} does not exist" if not bundle.exists() else f"{bundle} is not a file"
        )
    if args.keyring:
        keyring = args.keyring
        if not keyring.is_file():
            raise UsageError(f"keyring {keyring} does not exist")
    else:
        key_dir = pki.resolve_key_dir(args.dir)
        keyring = key_dir / pki.CA_CERT
        if not keyring.is_file():
            raise ConfigError(
                f"no keyring: {keyring} does not exist",
                hint="create development keys with 'edgectl keys init', or pass --keyring PEM",
            )
    cmd = [tools.require("rauc"), "info", f"--keyring={keyring}"]
    if args.json:
        cmd.append("--output-format=json-pretty")
    if args.no_check_time:
        cmd.append("--no-check-time")
    cmd.append(str(bundle))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log.debug("rauc info exited %d; its messages:\n%s", proc.returncode, proc.stderr.rstrip())
    if proc.returncode != 0:
        reason = _reason(proc.stderr or proc.stdout)
        raise EdgeError(f"{bundle}: not verified: {reason}", hint=_hint(reason))
    match = _SIGNED_BY.search(proc.stderr)
    signer = match.group(1) if match else "a certificate in the keyring"
    status = f"signature: verified against {keyring}, signed by '{signer}'"
    out = proc.stdout if sys.stdout.isatty() else _ANSI.sub("", proc.stdout)
    if args.json:
        print(status, file=sys.stderr)
        sys.stdout.write(out)
    else:
        print(status)
        print()
        sys.stdout.write(out)
    return 0
