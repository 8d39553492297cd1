"""Development PKI for signing RAUC bundles, made with the openssl command line.

Layout of a key directory (what the layer's EDGECONTAINERS_KEY_DIR expects)::

    ca.cert.pem        the CA certificate: the keyring installed on devices
    ca.key.pem         the CA's private key (only needed to issue more certificates)
    signing.cert.pem   the signing certificate, issued by the CA
    signing.key.pem    its private key: RAUC_KEY_FILE

Every subject says DEVELOPMENT.  The signing certificate has keyUsage
digitalSignature and extendedKeyUsage codeSigning *and* emailProtection: RAUC
checks the OpenSSL purpose "smimesign" unless system.conf sets
``check-purpose=codesign``, and smimesign rejects a codeSigning-only
certificate ("unsuitable certificate purpose"); with both, either setting
accepts it.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import socket
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import tools
from .errors import CommandFailed, ConfigError, EdgeError, Refused, UsageError

ENV_KEY_DIR = "EDGECONTAINERS_KEY_DIR"
CA_CERT = "ca.cert.pem"
CA_KEY = "ca.key.pem"
SIGNING_CERT = "signing.cert.pem"
SIGNING_KEY = "signing.key.pem"
ALL_FILES = (CA_CERT, CA_KEY, SIGNING_CERT, SIGNING_KEY)
# What a build needs (RAUC_KEYRING_FILE, RAUC_CERT_FILE, RAUC_KEY_FILE).
BUILD_FILES = (CA_CERT, SIGNING_CERT, SIGNING_KEY)
KEY_TYPES = ("ec", "rsa")
DEFAULT_DAYS = 3650
CA_CN = "edgecontainers DEVELOPMENT CA"
SIGNING_CN = "edgecontainers DEVELOPMENT signing"

CA_EXTENSIONS = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
SIGNING_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning, emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def default_key_dir() -> Path:
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "edgecontainers" / "keys" / "development"


def resolve_key_dir(explicit: Path | str | None = None) -> Path:
    """--dir, else $EDGECONTAINERS_KEY_DIR, else the per-user default; absolute."""
    if explicit:
        chosen = Path(explicit)
    elif os.environ.get(ENV_KEY_DIR):
        chosen = Path(os.environ[ENV_KEY_DIR])
    else:
        chosen = default_key_dir()
    return Path(os.path.abspath(chosen.expanduser()))


def git_work_tree(path: Path) -> Path | None:
    """The git work tree that contains ``path`` (or would, once created), if any."""
    for p in [path, *path.parents]:
        if (p / ".git").exists():
            return p
    return None


def missing_build_files(key_dir: Path) -> list[str]:
    return [f for f in BUILD_FILES if not (key_dir / f).is_file()]


def require_build_keys(key_dir: Path) -> None:
    """ConfigError unless the three files a signed build needs are there."""
    missing = missing_build_files(key_dir)
    if missing:
        raise ConfigError(
            f"no signing keys in {key_dir} (missing {', '.join(missing)})",
            hint="create development keys with 'edgectl keys init' (or point --key-dir / "
            f"{ENV_KEY_DIR} at your keys)",
        )


def _openssl(args: list[str], *, cwd: Path | None = None) -> str:
    proc = tools.run(["openssl", *args], capture=True, check=False, cwd=cwd)
    if proc.returncode != 0:
        raise CommandFailed(["openssl", *args[:2]], proc.returncode, output=proc.stdout)
    return proc.stdout


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    text = re.sub(r"[^A-Za-z0-9@._-]", "_", f"{user}@{socket.gethostname()}")
    return text[:40]


def _genkey(path: Path, key_type: str) -> None:
    if key_type == "ec":
        args = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    else:
        args = ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"]
    _openssl([*args, "-out", str(path)])


def init(key_dir: Path, *, days: int = DEFAULT_DAYS, key_type: str = "ec") -> list[Path]:
    """Create the CA and the signing certificate; never overwrites anything."""
    if key_type not in KEY_TYPES:
        raise UsageError(f"unknown key type '{key_type}'; valid: {', '.join(KEY_TYPES)}")
    if not 1 <= days <= 36500:
        raise UsageError(f"--days must be between 1 and 36500, not {days}")
    tree = git_work_tree(key_dir)
    if tree is not None:
        raise Refused(
            f"refusing to create private keys in {key_dir}: it is inside the git work tree {tree}, "
            "where they get committed by accident",
            hint=f"use the default directory ({default_key_dir()}) or any path outside a repository",
        )
    existing = [f for f in ALL_FILES if (key_dir / f).exists()]
    if existing:
        raise Refused(
            f"development keys already exist in {key_dir} ({', '.join(existing)}); "
            "refusing to overwrite them",
            hint="see them with 'edgectl keys show'; to start over, move that directory away first",
        )
    tools.require("openssl")
    try:
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(key_dir, 0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create the key directory {key_dir}: {exc.strerror}") from exc
    who = _who()
    old_umask = os.umask(0o077)
    try:
        with tempfile.TemporaryDirectory(prefix=".keys-init-", dir=key_dir) as tmp_s:
            tmp = Path(tmp_s)
            (tmp / "ca.ext").write_text(CA_EXTENSIONS)
            (tmp / "signing.ext").write_text(SIGNING_EXTENSIONS)
            ca_subject = f"/O=edgecontainers/OU={who}/CN={CA_CN}"
            signing_subject = f"/O=edgecontainers/OU={who}/CN={SIGNING_CN}"
            validity = f"-sha256 -days {days} -set_serial 0x{secrets.token_hex(16)}".split()
            # The file names are fixed and relative to tmp: splitting at spaces is safe.
            _genkey(tmp / CA_KEY, key_type)
            _openssl([*f"req -new -key {CA_KEY} -out ca.csr".split(), "-subj", ca_subject], cwd=tmp)
            _openssl(
                [
                    *f"x509 -req -in ca.csr -signkey {CA_KEY} -extfile ca.ext -out {CA_CERT}".split(),
                    *validity,
                ],
                cwd=tmp,
            )
            _genkey(tmp / SIGNING_KEY, key_type)
            _openssl(
                [*f"req -new -key {SIGNING_KEY} -out signing.csr".split(), "-subj", signing_subject], cwd=tmp
            )
            validity[-1] = f"0x{secrets.token_hex(16)}"  # a serial of its own
            issue = f"x509 -req -in signing.csr -CA {CA_CERT} -CAkey {CA_KEY} -extfile signing.ext"
            _openssl([*issue.split(), "-out", SIGNING_CERT, *validity], cwd=tmp)
            for name in (CA_KEY, SIGNING_KEY):
                os.chmod(tmp / name, 0o600)
            for name in (CA_CERT, SIGNING_CERT):
                os.chmod(tmp / name, 0o644)
            created = []
            for name in ALL_FILES:
                # link() fails if the name exists: nothing is overwritten even in a race.
                os.link(tmp / name, key_dir / name)
                created.append(key_dir / name)
    except FileExistsError as exc:
        raise Refused(
            f"refusing to overwrite {exc.filename2 or exc.filename}; another process created it"
        ) from exc
    finally:
        os.umask(old_umask)
    return created


@dataclass(frozen=True)
class CertInfo:
    path: Path
    subject: str
    issuer: str
    serial: str
    sha256: str
    not_before: datetime
    not_after: datetime

    def days_left(self, now: datetime | None = None) -> int:
        return (self.not_after - (now or datetime.now(UTC))).days


def _parse_date(text: str) -> datetime:
    # openssl prints e.g. "Nov 26 14:05:53 2036 GMT"
    return datetime.strptime(" ".join(text.split()), "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)


def cert_info(path: Path) -> CertInfo:
    what = "-noout -nameopt RFC2253 -subject -issuer -serial -startdate -enddate -fingerprint -sha256"
    out = _openssl(["x509", "-in", str(path), *what.split()])
    fields: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    try:
        return CertInfo(
            path=path,
            subject=fields["subject"],
            issuer=fields["issuer"],
            serial=fields["serial"],
            sha256=fields.get("sha256 fingerprint", ""),
            not_before=_parse_date(fields["notbefore"]),
            not_after=_parse_date(fields["notafter"]),
        )
    except (KeyError, ValueError) as exc:
        raise EdgeError(f"cannot read certificate {path}: unexpected openssl output") from exc


def _public_key_of(args: list[str]) -> str:
    return _openssl(args).strip()


@dataclass(frozen=True)
class KeySet:
    directory: Path
    ca: CertInfo
    signing: CertInfo
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def load(key_dir: Path, *, now: datetime | None = None) -> KeySet:
    """Read and check a key directory; problems make it unusable, warnings do not."""
    missing = [f for f in (CA_CERT, SIGNING_CERT, SIGNING_KEY) if not (key_dir / f).is_file()]
    if missing:
        if not key_dir.exists() or not any((key_dir / f).exists() for f in ALL_FILES):
            raise ConfigError(
                f"no development keys in {key_dir}", hint="create them with 'edgectl keys init'"
            )
        raise ConfigError(f"incomplete keys in {key_dir}: missing {', '.join(missing)}")
    tools.require("openssl")
    ca = cert_info(key_dir / CA_CERT)
    signing = cert_info(key_dir / SIGNING_CERT)
    problems: list[str] = []
    warnings: list[str] = []
    for label, info in (("CA", ca), ("signing", signing)):
        left = info.days_left(now)
        if left < 0:
            problems.append(f"the {label} certificate expired on {info.not_after:%Y-%m-%d}")
        elif left < 30:
            warnings.append(f"the {label} certificate expires in {left} days")
    verify = tools.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            str(key_dir / CA_CERT),
            str(key_dir / SIGNING_CERT),
        ],
        capture=True,
        check=False,
    )
    if verify.returncode != 0:
        reason = (verify.stdout.strip().splitlines() or ["openssl verify failed"])[-1]
        problems.append(f"the signing certificate does not verify against the CA as RAUC checks it: {reason}")
    cert_pub = _public_key_of(["x509", "-in", str(key_dir / SIGNING_CERT), "-noout", "-pubkey"])
    key_pub = _public_key_of(["pkey", "-in", str(key_dir / SIGNING_KEY), "-pubout"])
    if cert_pub != key_pub:
        problems.append(f"{SIGNING_KEY} is not the key of {SIGNING_CERT}")
    for name in (SIGNING_KEY, CA_KEY):
        path = key_dir / name
        if path.exists() and path.stat().st_mode & 0o077:
            warnings.append(
                f"{name} is readable by others (mode {path.stat().st_mode & 0o777:o}); chmod 600 it"
            )
    if "DEVELOPMENT" not in ca.subject:
        warnings.append("the CA is not marked DEVELOPMENT: are these production keys?")
    tree = git_work_tree(key_dir)
    if tree is not None:
        warnings.append(f"the keys are inside the git work tree {tree}: do not commit them")
    return KeySet(key_dir, ca, signing, tuple(problems), tuple(warnings))
