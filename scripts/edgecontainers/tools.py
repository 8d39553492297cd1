"""Running the external programs we drive (kas, bitbake, bmaptool, qemu, rauc, ...).

We always call their command lines; a missing program is a one-line
configuration error naming the package that provides it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import CommandFailed, ToolMissingError

log = logging.getLogger(__name__)

# program -> how to get it (shown when it is missing)
PROVIDERS: dict[str, str] = {
    "kas": "pip install kas (the README's set-up does this)",
    "kas-container": "pip install kas (ships kas-container)",
    "bitbake": "run inside 'kas shell' or source oe-init-build-env",
    "bmaptool": "apt install bmap-tools",
    "rauc": "apt install rauc",
    "openssl": "apt install openssl",
    "qemu-system-x86_64": "apt install qemu-system-x86",
    "qemu-system-aarch64": "apt install qemu-system-arm",
    "mmdebstrap": "apt install mmdebstrap",
    "sfdisk": "apt install fdisk",
    "mkfs.ext4": "apt install e2fsprogs",
    "mkfs.vfat": "apt install dosfstools",
    "mcopy": "apt install mtools",
    "lsblk": "apt install util-linux",
    "mksquashfs": "apt install squashfs-tools",
    "debugfs": "apt install e2fsprogs",
}


def require(program: str) -> str:
    """The full path of ``program``, or a ToolMissingError with an install hint."""
    path = shutil.which(program)
    if not path:
        raise ToolMissingError(program, hint=PROVIDERS.get(program))
    return path


def run(
    cmd: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; the program must exist. Raises CommandFailed on non-zero exit when ``check``."""
    argv = [str(c) for c in cmd]
    argv[0] = require(argv[0]) if "/" not in argv[0] else argv[0]
    log.debug("run: %s", " ".join(argv))
    try:
        proc = subprocess.run(
            argv,
            check=False,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            input=input,
            timeout=timeout,
        )
    except FileNotFoundError as exc:
        raise ToolMissingError(argv[0], hint=PROVIDERS.get(Path(argv[0]).name)) from exc
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, output=proc.stdout or "")
    return proc
