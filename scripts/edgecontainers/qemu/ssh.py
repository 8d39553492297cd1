"""Commands over SSH, through QEMU user networking's hostfwd on 127.0.0.1.

Production images have no login on the serial console; the harness reaches
them with a throwaway key that the test image installs as root's
authorized_keys (the layer's EDGECONTAINERS_SSH_AUTHORIZED_KEYS mechanism).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from ..tools import require, run
from .console import Result, _Tee
from .vm import GuestError, StepTimeout

BASE_OPTIONS = (
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=10",
    "-o", "ServerAliveInterval=10",
    "-o", "ServerAliveCountMax=6",
)  # fmt: skip


def make_key(path: Path) -> Path:
    """An ed25519 key pair at ``path`` (private, mode 0600) and ``path``.pub; kept if present."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgecontainers-test", "-f", path], capture=True)
    return path


class SSH:
    def __init__(self, port: int, key: Path, *, user: str = "root", host: str = "127.0.0.1", tee: _Tee | None = None):
        self.port = port
        self.key = key
        self.user = user
        self.host = host
        self.tee = tee

    def argv(self, *extra: str) -> list[str]:
        return [require("ssh"), *BASE_OPTIONS, "-p", str(self.port), *extra, f"{self.user}@{self.host}"]

    def run(self, command: str, timeout: float = 120, check: bool = False) -> Result:
        argv = [*self.argv("-i", str(self.key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"), "--", command]
        if self.tee:
            self.tee.note(f"ssh: {command}")
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise StepTimeout(f"ssh command '{command[:200]}' did not finish within {timeout:.0f}s") from None
        output = proc.stdout + proc.stderr
        if self.tee:
            self.tee.note(f"ssh rc={proc.returncode}:\n{output.rstrip()}")
        if proc.returncode == 255:
            raise GuestError(f"ssh to {self.host}:{self.port} failed: {proc.stderr.strip()[-300:]}")
        result = Result(command, proc.returncode, proc.stdout)
        if check:
            result.check()
        return result

    def try_password_login(self, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A login that offers only password authentication (no key); returns ssh's result."""
        argv = [
            *self.argv(
                "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
                "-o", "PreferredAuthentications=password,keyboard-interactive",
                "-o", "NumberOfPasswordPrompts=0",
            ),
            "--", "true",
        ]  # fmt: skip
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def wait(self, deadline: float, step: str = "SSH to answer") -> None:
        """Retry until a command succeeds or ``deadline`` (time.monotonic) passes."""
        last = ""
        while time.monotonic() < deadline:
            try:
                if self.run("true", timeout=30).ok:
                    return
            except GuestError as exc:
                last = exc.short
            time.sleep(3)
        raise StepTimeout(f"{step}: no SSH login on port {self.port} ({last})")
