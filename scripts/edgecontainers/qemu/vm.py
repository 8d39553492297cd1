"""The QEMU process: command line, start, QMP control, always cleaned up.

The accelerator is always TCG.  On the machines this project runs on,
``/dev/kvm`` may be PVM, which hangs ordinary kernels, so it is never picked
from the presence of ``/dev/kvm`` (docs/testing.md).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, EdgeError
from ..tools import require

log = logging.getLogger(__name__)

# The address in QEMU's user network where guestfwd rules answer (10.0.2.2 is the
# host's gateway address, which restrict=on cuts off).
GUESTFWD_ADDR = "10.0.2.100"
QEMU_BINARY = {"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}
# x86-64 guests: one vCPU by default, and single-threaded TCG whenever a caller
# asks for more (both vCPUs on one host thread).  Under multi-threaded TCG
# (QEMU 7.2, two vCPUs) the guest kernel, patching its own text (static keys,
# when the containers' CPU quota switches CFS bandwidth on), hit a stale int3
# on the other vCPU: an oops, a panic, or a boot that hung without a word.
# benchmarks/tcg_fault_benchmark.py, 20 boots each (docs/testing.md): no fault
# with one vCPU, with two on one thread, or with trixie's QEMU 10; one vCPU
# was the fastest to "demo app healthy" (median 64.9 s against 69.6 s and
# 68.4 s).  With one vCPU no other vCPU can run code being rewritten.
# arm64 guests keep two vCPUs under multi-threaded TCG: no such fault seen.
DEFAULT_ACCEL = {"x86_64": "tcg,thread=single", "aarch64": "tcg"}
DEFAULT_SMP = {"x86_64": 1, "aarch64": 2}
# Host firmware (Debian packages ovmf, qemu-efi-aarch64).
OVMF_CODE_CANDIDATES = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS_CANDIDATES = ("/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd")


class GuestError(EdgeError):
    """The guest did not do what a step expected (timeout, wrong output, died)."""

    def __init__(self, message: str, *, tail: str = "", log_path: Path | None = None) -> None:
        detail = message
        if log_path:
            detail += f" (console log: {log_path})"
        if tail:
            detail += "\n--- last console lines ---\n" + tail
        super().__init__(detail)
        self.short = message
        self.tail = tail
        self.log_path = log_path


class StepTimeout(GuestError):
    """A step's deadline passed."""


class GuestPanicked(GuestError):
    """The guest's kernel panicked while a step waited for it."""


@dataclass(frozen=True)
class Drive:
    path: Path
    format: str = "raw"  # raw or qcow2
    interface: str = "virtio"  # virtio, none (with a -device in extra args)
    snapshot: bool = False
    readonly: bool = False
    id: str | None = None

    def args(self) -> list[str]:
        opts = [f"file={self.path}", f"format={self.format}", f"if={self.interface}"]
        if self.id:
            opts.append(f"id={self.id}")
        if self.snapshot:
            opts.append("snapshot=on")
        if self.readonly:
            opts.append("readonly=on")
        return ["-drive", ",".join(opts)]


@dataclass(frozen=True)
class UserNet:
    """QEMU user networking.  ``restrict`` cuts the guest off from the host and
    the outside world; only the hostfwd ports on 127.0.0.1 reach it."""

    restrict: bool = True
    hostfwd: tuple[tuple[int, int], ...] = ()  # (host port on 127.0.0.1, guest port)
    # (guest port on GUESTFWD_ADDR, host port on 127.0.0.1): the guest reaches a
    # server on the host's loopback, and nothing else (restrict=on keeps these).
    guestfwd: tuple[tuple[int, int], ...] = ()
    model: str = "virtio-net-pci"

    def args(self) -> list[str]:
        opts = ["user", "id=net0", f"restrict={'on' if self.restrict else 'off'}"]
        opts += [f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in self.hostfwd]
        # cmd: runs socat per guest connection; a tcp: target would be one chardev
        # connection for the VM's lifetime, which a second HTTP connection breaks.
        opts += [f"guestfwd=tcp:{GUESTFWD_ADDR}:{g}-cmd:socat - TCP:127.0.0.1:{h}" for g, h in self.guestfwd]
        return ["-netdev", ",".join(opts), "-device", f"{self.model},netdev=net0"]


@dataclass
class VMConfig:
    arch: str = "x86_64"
    machine: str = "q35"
    cpu: str = "max"
    memory_mib: int = 1024
    smp: int | None = None  # None: DEFAULT_SMP of the guest architecture
    # TCG always (see the module's docstring); None: the guest architecture's
    # setting in DEFAULT_ACCEL.  A benchmark may pick other TCG options or run
    # another QEMU build (binary: its argv prefix).
    accel: str | None = None
    binary: list[str] | None = None
    # EFI firmware as two pflash drives (code read-only, a writable copy of the vars)
    pflash_code: Path | None = None
    pflash_vars: Path | None = None
    pflash_format: str = "raw"
    bios: Path | None = None  # -bios (U-Boot on arm64)
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    drives: list[Drive] = field(default_factory=list)
    net: UserNet | None = None
    no_reboot: bool = False
    interactive: bool = False  # serial multiplexed with the monitor (Ctrl-A x quits)
    extra: list[str] = field(default_factory=list)

    def command(self, qmp_socket: Path | None = None) -> list[str]:
        if self.arch not in QEMU_BINARY:
            raise ConfigError(f"unsupported guest architecture '{self.arch}'")
        # Not -nodefaults: with it the Debian kernel's serial console stalls once the
        # 8250 driver takes over (q35, TCG).  The default CD-ROM only costs OVMF a
        # failed boot attempt.
        accel = self.accel or DEFAULT_ACCEL[self.arch]
        argv = [*(self.binary or [QEMU_BINARY[self.arch]]), "-accel", accel, "-machine", self.machine]
        argv += ["-cpu", self.cpu]
        argv += ["-m", str(self.memory_mib), "-smp", str(self.smp or DEFAULT_SMP[self.arch])]
        argv += ["-display", "none", "-serial", "mon:stdio" if self.interactive else "stdio"]
        if not self.interactive:
            argv += ["-monitor", "none"]
        if qmp_socket:
            argv += ["-qmp", f"unix:{qmp_socket},server=on,wait=off"]
        if self.pflash_code:
            argv += ["-drive", f"if=pflash,format={self.pflash_format},unit=0,readonly=on,file={self.pflash_code}"]
            if self.pflash_vars:
                argv += ["-drive", f"if=pflash,format={self.pflash_format},unit=1,file={self.pflash_vars}"]
        if self.bios:
            argv += ["-bios", str(self.bios)]
        if self.kernel:
            argv += ["-kernel", str(self.kernel)]
            if self.initrd:
                argv += ["-initrd", str(self.initrd)]
            if self.append is not None:
                argv += ["-append", self.append]
        for drive in self.drives:
            argv += drive.args()
        argv += self.net.args() if self.net else ["-nic", "none"]
        argv += ["-device", "virtio-rng-pci"]
        if self.no_reboot:
            argv.append("-no-reboot")
        argv += self.extra
        return argv


def host_ovmf() -> tuple[Path, Path]:
    """OVMF code and vars template of the host (apt install ovmf)."""
    for code, vars_ in zip(OVMF_CODE_CANDIDATES, OVMF_VARS_CANDIDATES, strict=True):
        if Path(code).is_file() and Path(vars_).is_file():
            return Path(code), Path(vars_)
    raise ConfigError("no OVMF firmware found (/usr/share/OVMF)", hint="apt install ovmf")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Every VM that was started and not yet stopped; stopped at interpreter exit
# and on SIGTERM, so no QEMU outlives the test run.
_LIVE: weakref.WeakSet[QemuVM] = weakref.WeakSet()


def _stop_all() -> None:
    for vm in list(_LIVE):
        with contextlib.suppress(Exception):
            vm.kill()


atexit.register(_stop_all)


def _die_with_parent() -> None:
    """In the QEMU child: get SIGKILL when the harness process dies (even by SIGKILL
    or SIGTERM, where atexit does not run), so no QEMU outlives a killed test run."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class QemuVM:
    """One QEMU process.  Use as a context manager (or call :meth:`kill`)."""

    def __init__(self, config: VMConfig, *, workdir: Path | None = None) -> None:
        self.config = config
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="edgecontainers-qemu-"))
        # A short path: unix socket paths must stay under 108 bytes.
        self._qmp_dir = Path(tempfile.mkdtemp(prefix="ec-qmp-"))
        self.qmp_path = self._qmp_dir / "qmp.sock"
        self.process = None  # a pexpect.spawn (see console.py)
        self.started_at: float | None = None

    def argv(self) -> list[str]:
        return self.config.command(self.qmp_path)

    def spawn(self, logfile=None):
        """Start QEMU under pexpect and return the spawn object."""
        import pexpect

        argv = self.argv()
        require(argv[0])
        log.debug("qemu: %s", " ".join(argv))
        self.started_at = time.monotonic()
        self.process = pexpect.spawn(
            argv[0],
            argv[1:],
            encoding="utf-8",
            codec_errors="replace",
            timeout=None,
            echo=False,
            dimensions=(50, 500),
            maxread=65536,
            env={**os.environ, "TERM": "dumb"},
            preexec_fn=_die_with_parent,
        )
        if logfile is not None:
            self.process.logfile_read = logfile
        _LIVE.add(self)
        return self.process

    @property
    def alive(self) -> bool:
        return self._isalive()

    def _isalive(self) -> bool:
        """Whether QEMU runs.  Another thread reading the console (a session's drain)
        may reap QEMU between pexpect's checks: ptyprocess then finds no child
        (ECHILD) and raises; that child is gone, so it is not alive."""
        import pexpect

        if self.process is None:
            return False
        try:
            return bool(self.process.isalive())
        except pexpect.ExceptionPexpect:
            return False

    def qmp(self, command: str, arguments: dict | None = None, timeout: float = 10) -> dict:
        """One QMP command; returns the reply (raises GuestError if QMP does not answer)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(max(0.5, deadline - time.monotonic()))
                sock.connect(str(self.qmp_path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise GuestError(f"QMP socket {self.qmp_path} not available: {exc}") from exc
                time.sleep(0.2)
        with sock, sock.makefile("rw") as f:
            json.loads(f.readline())  # greeting
            f.write(json.dumps({"execute": "qmp_capabilities"}) + "\n")
            f.flush()
            json.loads(f.readline())
            msg: dict = {"execute": command}
            if arguments:
                msg["arguments"] = arguments
            f.write(json.dumps(msg) + "\n")
            f.flush()
            while True:
                line = f.readline()
                if not line:
                    return {}
                reply = json.loads(line)
                if "return" in reply or "error" in reply:
                    return reply

    def wait_exit(self, timeout: float) -> bool:
        """Wait for QEMU to exit on its own; True if it did."""
        import pexpect

        if self.process is None:
            return True
        deadline = time.monotonic() + timeout
        while self._isalive() and time.monotonic() < deadline:
            with contextlib.suppress(pexpect.TIMEOUT, pexpect.EOF):
                self.process.expect(pexpect.EOF, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        return not self._isalive()

    def kill(self, *, hard: bool = False) -> None:
        """Stop QEMU now (QMP quit, then SIGTERM, then SIGKILL) and clean up.

        ``hard``: SIGKILL at once.  QMP quit and SIGTERM let QEMU close its block
        devices, which flushes what it still holds (the qcow2 overlay's metadata
        cache: where the guest's unflushed writes since its last flush went); a
        SIGKILL loses it as a power cut loses a disk's volatile write cache."""
        proc = self.process
        if proc is not None and hard and self._isalive():
            with contextlib.suppress(Exception):
                proc.kill(signal.SIGKILL)
            self.wait_exit(3)
        if proc is not None and self._isalive():
            with contextlib.suppress(Exception):
                self.qmp("quit", timeout=2)
            if not self.wait_exit(3):
                with contextlib.suppress(Exception):
                    proc.kill(signal.SIGTERM)
                if not self.wait_exit(3):
                    with contextlib.suppress(Exception):
                        proc.kill(signal.SIGKILL)
                    self.wait_exit(3)
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.close(force=True)
        _LIVE.discard(self)
        shutil.rmtree(self._qmp_dir, ignore_errors=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> QemuVM:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def run_interactive(config: VMConfig) -> int:
    """QEMU in the foreground on this terminal (``edgectl qemu``)."""
    config.interactive = True
    argv = config.command()
    require(argv[0])
    return subprocess.call(argv)


def qemu_img_overlay(base: Path, overlay: Path, *, base_format: str = "raw", size: int | None = None) -> Path:
    """A qcow2 overlay on ``base`` (the base stays pristine); ``size`` in bytes may grow the disk."""
    from ..tools import run

    cmd: list[str | Path] = [
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base.resolve(),
        "-F",
        base_format,
        overlay,
    ]
    if size:
        cmd.append(str(size))
    run(cmd, capture=True)
    return overlay


def needs(programs: Sequence[str]) -> list[str]:
    """The programs of ``programs`` that are not installed."""
    return [p for p in programs if not shutil.which(p)]
