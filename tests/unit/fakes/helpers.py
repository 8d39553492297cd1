"""Helpers shared by edgectl's unit tests: fake programs on PATH, running
edgectl as a user would, and loop devices that are always cleaned up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FAKES_DIR = Path(__file__).resolve().parent
REPO = FAKES_DIR.parents[2]
IS_ROOT = os.geteuid() == 0

# For tests that need loop devices and mounts; CI runs as root.
needs_root = [
    pytest.mark.root,
    pytest.mark.skipif(not IS_ROOT, reason="needs root for loop devices and mounts (CI runs as root)"),
]


def fake_bin(directory: Path, **programs: str) -> Path:
    """A directory of symlinks name -> fake implementation (e.g. kas_container="kas")."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, impl in programs.items():
        (directory / name.replace("_", "-")).symlink_to(FAKES_DIR / impl)
    return directory


def records(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def edgectl(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run edgectl the way a user does (a new process, no terminal on stdin)."""
    return subprocess.run(
        [sys.executable, "-m", "edgecontainers", *map(str, args)],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_line(proc: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """Assert edgectl failed with ``exit_code`` and one error line (plus at most a hint)
    and no traceback; return the error line."""
    assert proc.returncode == exit_code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("edgectl: error:")]
    assert len(lines) == 1, proc.stderr
    others = [
        line
        for line in proc.stderr.splitlines()
        if line.startswith("edgectl:") and not line.startswith(("edgectl: error:", "edgectl: hint:"))
    ]
    assert not others, proc.stderr
    return lines[0]


def run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kwargs)


def write_random(path: Path, size: int, chunks: list[tuple[int, int]]) -> None:
    """A sparse file of ``size`` bytes with random data at (offset, length) chunks."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in chunks:
            f.seek(offset)
            f.write(os.urandom(length))


class Loops:
    """Loop devices, partitions, mounts and swap that are undone in reverse order."""

    def __init__(self) -> None:
        self._undo: list[list[str]] = []

    def attach(self, backing: Path, *, read_only: bool = False) -> str:
        cmd = ["losetup", "--find", "--show"] + (["--read-only"] if read_only else []) + [str(backing)]
        dev = run(*cmd).stdout.strip()
        self._undo.append(["losetup", "-d", dev])
        return dev

    def add_partitions(self, dev: str) -> None:
        run("partx", "-a", dev)
        self._undo.append(["partx", "-d", dev])

    def mount(self, dev: str, mountpoint: Path) -> None:
        mountpoint.mkdir(parents=True, exist_ok=True)
        run("mount", dev, mountpoint)
        self._undo.append(["umount", str(mountpoint)])

    def swapon(self, dev: str) -> None:
        run("swapon", dev)
        self._undo.append(["swapoff", dev])

    def cleanup(self) -> None:
        while self._undo:
            subprocess.run(self._undo.pop(), check=False, capture_output=True)
