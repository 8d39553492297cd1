"""Boot an image by one boot path, wait until it is ready, run commands, reboot.

A :class:`BootTarget` says what can be booted (built from a ``qemuboot.conf``:
a kas/Yocto build's or the one the Debian test image writes); a
:class:`Session` is one QEMU process on a qcow2 overlay of its disk:

* ``boot="grub"``: OVMF (pflash) -> GRUB from the ESP -> the layer's grub.cfg
  picks the slot from grubenv (x86-64);
* ``boot="uboot"``: ``-bios u-boot.bin`` -> boot.scr (arm64);
* ``boot="direct"``: ``-kernel``/``-initrd`` with ``root=PARTUUID=<slot>
  rauc.slot=<slot>`` and the layer's kernel arguments (no bootloader, faster).

The overlay keeps the cached image pristine and persists across guest
reboots within a session (and across sessions when ``disk=`` is passed).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..tools import run
from .console import RESTART_MARKERS, Console, Result, _Tee
from .qemuboot import QemuBoot
from .ssh import SSH
from .vm import (
    Drive,
    GuestError,
    GuestPanicked,
    QemuVM,
    StepTimeout,
    UserNet,
    VMConfig,
    free_port,
    host_ovmf,
    qemu_img_overlay,
)

GUEST_APP_PORT = 8080  # the demo app's published port
BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
# The watchdog of wait_ssh.  The layer's kernel command line has panic=10, so a
# guest that panics restarts by itself; one that shows no restart well after
# its panic is hung (seen once under TCG: an "Oops: int3" during text patching
# that hung in panic()).  A reset that the console does not follow with a
# restart within RESET_CONFIRM_SECONDS means QEMU did not carry it out: then
# the harness pulls the plug and powers the guest on again.
PANIC_GRACE_SECONDS = 60.0
RESET_CONFIRM_SECONDS = 120.0
# Direct boot has no EFI firmware, so systemd's gpt-auto-generator would look for
# the ESP itself and automount it at /efi (a failed unit on the read-only root).
# On the device GRUB boots through EFI and it does not; the layer mounts the ESP
# at /boot/firmware with its own units.
DIRECT_BOOT_ARGS = "systemd.gpt_auto=0"


@dataclass
class BootTarget:
    """An image and what the harness needs to know to boot and reach it."""

    name: str
    machine_name: str  # qemux86-64 / qemuarm64
    arch: str
    qemu_machine: str
    cpu: str
    memory_mib: int
    disk: Path
    disk_format: str = "raw"
    variant: str = "production"  # production (SSH only) or dev (serial login)
    engine: str | None = None
    ssh_key: Path | None = None
    ovmf: tuple[Path, Path | None, str] | None = None  # code, vars template, format
    bios: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    kernel_args: str = ""
    rootfs_opt: str = ""
    partuuids: dict[str, str] = field(default_factory=dict)  # partition name -> PARTUUID
    qemuboot: QemuBoot | None = None

    @property
    def boot_paths(self) -> list[str]:
        paths = []
        if self.arch == "x86_64":
            paths.append("grub")
        elif self.bios is not None:
            paths.append("uboot")
        if self.kernel is not None:
            paths.append("direct")
        return paths

    @property
    def console_login(self) -> bool:
        return self.variant == "dev"

    @classmethod
    def from_qemuboot(
        cls, qb: QemuBoot, *, ssh_key: Path | None = None, variant: str | None = None, engine: str | None = None
    ) -> BootTarget:
        from ..testimage.layer import layer_settings

        link = qb.image_link_name or qb.path.name
        variant = variant or qb.get("edge_variant") or ("dev" if "-image-dev" in link else "production")
        engine = engine or qb.get("edge_engine") or None
        disk = qb.disk
        if not disk.is_file():
            raise UsageError(f"{qb.path}: disk image {disk} not found")
        ovmf = None
        if qb.arch == "x86_64":
            ovmf = qb.ovmf()
            if ovmf is None:
                code, vars_ = host_ovmf()
                ovmf = (code, vars_, "raw")
        key = ssh_key or (Path(qb.get("edge_ssh_key")) if qb.get("edge_ssh_key") else None)
        kernel = qb.deploy_dir / qb.get("edge_direct_kernel") if qb.get("edge_direct_kernel") else qb.kernel
        initrd = qb.deploy_dir / qb.get("edge_direct_initrd") if qb.get("edge_direct_initrd") else None
        args = qb.get("edge_kernel_args")
        if not args and qb.machine_name:
            try:
                args = layer_settings(qb.machine_name, engine or "podman", variant == "dev")[
                    "EDGECONTAINERS_KERNEL_ARGS"
                ]
            except Exception:  # a machine this checkout does not know: boot without extra arguments
                args = ""
        partuuids = json.loads(qb.get("edge_partuuids") or "{}") or read_partuuids(disk)
        return cls(
            name=link,
            machine_name=qb.machine_name,
            arch=qb.arch,
            qemu_machine=qb.qemu_machine,
            cpu=qb.cpu,
            memory_mib=qb.memory_mib,
            disk=disk,
            disk_format="qcow2" if disk.suffix == ".qcow2" else "raw",
            variant=variant,
            engine=engine,
            ssh_key=key,
            ovmf=ovmf,
            bios=qb.bios if qb.arch == "aarch64" else None,
            kernel=kernel if kernel and kernel.is_file() else None,
            initrd=initrd if initrd and initrd.is_file() else None,
            kernel_args=args,
            rootfs_opt=qb.rootfs_opt if qb.arch == "aarch64" else "",
            partuuids=partuuids,
            qemuboot=qb,
        )


def read_partuuids(disk: Path) -> dict[str, str]:
    """Partition name -> PARTUUID of a GPT disk image (sfdisk reads image files)."""
    proc = run(["sfdisk", "--json", disk], capture=True, check=False)
    if proc.returncode != 0:
        return {}
    table = json.loads(proc.stdout).get("partitiontable", {})
    return {p["name"]: p["uuid"].lower() for p in table.get("partitions", []) if p.get("name") and p.get("uuid")}


class Session:
    """One boot of a target; use as a context manager."""

    def __init__(
        self,
        target: BootTarget,
        *,
        boot: str | None = None,
        slot: str = "A",
        log_path: Path | None = None,
        disk: Path | None = None,
        grow_bytes: int = 512 * 1024 * 1024,
        network: bool = False,
        extra_append: str = "",
        workdir: Path | None = None,
        guestfwd: tuple[tuple[int, int], ...] = (),
        extra_drives: tuple[Drive, ...] = (),
    ) -> None:
        self.target = target
        self.boot = boot or target.boot_paths[0]
        if self.boot not in target.boot_paths:
            raise UsageError(f"{target.name}: boot path '{self.boot}' not available ({', '.join(target.boot_paths)})")
        self.slot = slot
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="edgecontainers-session-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._own_workdir = workdir is None
        self.log_path = log_path
        self.tee = _Tee(log_path)
        self.disk = disk or self.workdir / "disk.qcow2"
        self.grow_bytes = grow_bytes
        self.network = network
        self.extra_append = extra_append
        self.guestfwd = guestfwd
        self.extra_drives = extra_drives
        self.ssh_port = free_port()
        self.app_port = free_port()
        self.vm: QemuVM | None = None
        self.console: Console | None = None
        self.ssh: SSH | None = None
        self.boot_seconds: float | None = None
        self.watchdog_seconds: float | None = None  # see wait_ssh
        self.watchdog_resets = 0
        self.power_cycles = 0
        # What the harness did to the guest besides the test's own steps (watchdog
        # resets, power cycles, boots waited for after a panic), for the reports:
        # each test says which of these happened while it ran.
        self.events: list[str] = []
        self._events_taken = 0
        self.system_state: str | None = None
        self._drain_stop: threading.Event | None = None
        self._drain_thread: threading.Thread | None = None

    # ------------------------------------------------------------ setup
    def _disk_overlay(self) -> Path:
        if not self.disk.exists():
            size = self.target.disk.stat().st_size if self.target.disk_format == "raw" else None
            qemu_img_overlay(
                self.target.disk,
                self.disk,
                base_format=self.target.disk_format,
                size=(size + self.grow_bytes) if size else None,
            )
        return self.disk

    def vm_config(self) -> VMConfig:
        t = self.target
        cfg = VMConfig(arch=t.arch, machine=t.qemu_machine, cpu=t.cpu, memory_mib=t.memory_mib)
        disk = self._disk_overlay()
        if t.rootfs_opt:
            opt = t.rootfs_opt.replace("@ROOTFS@", str(disk)).replace("format=raw", "format=qcow2")
            cfg.extra += opt.split()
        else:
            cfg.drives.append(Drive(disk, format="qcow2"))
        if self.boot == "grub":
            assert t.ovmf is not None
            code, vars_template, fmt = t.ovmf
            cfg.pflash_code = code
            cfg.pflash_format = fmt
            if vars_template is not None:
                vars_copy = self.workdir / f"ovmf-vars{vars_template.suffix}"
                if not vars_copy.exists():
                    shutil.copyfile(vars_template, vars_copy)
                cfg.pflash_vars = vars_copy
        elif self.boot == "uboot":
            cfg.bios = t.bios
        elif self.boot == "direct":
            cfg.kernel = t.kernel
            cfg.initrd = t.initrd
            cfg.append = " ".join(
                p for p in (self.root_args(), t.kernel_args, DIRECT_BOOT_ARGS, self.extra_append) if p
            )
        hostfwd = [(self.app_port, GUEST_APP_PORT)]
        if t.ssh_key is not None:
            hostfwd.insert(0, (self.ssh_port, 22))
        cfg.net = UserNet(restrict=not self.network, hostfwd=tuple(hostfwd), guestfwd=self.guestfwd)
        cfg.drives += list(self.extra_drives)
        return cfg

    def root_args(self) -> str:
        part = f"rootfs{self.slot}"
        uuid = self.target.partuuids.get(part)
        root = f"root=PARTUUID={uuid}" if uuid else f"root=PARTLABEL={part}"
        return f"{root} rauc.slot={self.slot}"

    # ------------------------------------------------------------ life cycle
    def start(self) -> Session:
        self.tee.note(f"boot {self.target.name} via {self.boot} (slot {self.slot})")
        self.vm = QemuVM(self.vm_config(), workdir=self.workdir)
        self.tee.note("qemu: " + " ".join(self.vm.argv()))
        spawn = self.vm.spawn(logfile=self.tee)
        self.console = Console(spawn, self.tee)
        if self.target.ssh_key is not None:
            self.ssh = SSH(self.ssh_port, self.target.ssh_key, tee=self.tee)
        if not self.target.console_login:
            self._start_drain()
        return self

    # ------------------------------------------------------------ console draining
    # When the harness talks SSH, nobody would read the serial console and QEMU
    # would stall on a full pty; a thread keeps reading it into the log (whose
    # _Tee notes panics and restarts for the watchdog of wait_ssh).
    def _start_drain(self) -> None:
        import pexpect

        assert self.console is not None
        spawn = self.console.spawn
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set():
                try:
                    spawn.expect([pexpect.TIMEOUT, pexpect.EOF], timeout=0.5)
                    if not spawn.isalive():
                        return
                    spawn.buffer = ""
                except Exception as exc:  # QEMU gone, or an error: a reader that stopped would stall the guest
                    try:
                        alive = not stop.is_set() and spawn.isalive()
                    except Exception:  # QEMU reaped meanwhile by the harness
                        alive = False
                    if not alive:
                        return
                    self.tee.note(f"console reader: {type(exc).__name__}: {exc}")
                    time.sleep(0.5)

        self._drain_stop = stop
        self._drain_thread = threading.Thread(target=drain, name="console-drain", daemon=True)
        self._drain_thread.start()

    def _stop_drain(self) -> None:
        if self._drain_stop is not None and self._drain_thread is not None:
            self._drain_stop.set()
            self._drain_thread.join(timeout=10)
        self._drain_stop = self._drain_thread = None

    def console_probe(self, text: str, patterns: list[str], timeout: float) -> str | None:
        """Send ``text`` to the serial console and return what of ``patterns`` it answers
        with within ``timeout`` seconds (None: no answer)."""
        import pexpect

        assert self.console is not None
        draining = self._drain_thread is not None
        self._stop_drain()
        try:
            spawn = self.console.spawn
            spawn.buffer = ""
            self.tee.note(f"console probe: sending {text!r}")
            spawn.send(text)
            try:
                spawn.expect(patterns, timeout=timeout)
                return str(spawn.after)
            except pexpect.TIMEOUT:
                return None
        finally:
            if draining:
                self._start_drain()

    def wait_ready(self, timeout: float = 900, *, not_boot_id: str | None = None) -> str:
        """Until a shell answers and ``systemctl is-system-running --wait`` returns;
        returns the system state (running, degraded, ...).  ``not_boot_id``: wait for
        a boot other than that one (after a reboot).

        A kernel panic during the wait fails it with GuestPanicked, naming the
        panic; with ``watchdog_seconds`` set the harness instead waits for the
        next boot, as a device would after its watchdog or ``panic=10`` restarted
        it, and records that in :attr:`events`."""
        assert self.vm is not None and self.console is not None
        started = self.vm.started_at or time.monotonic()
        deadline = started + timeout
        not_boot_ids = {not_boot_id} if not_boot_id else set()
        while True:
            boot_id = self._wait_shell(deadline, not_boot_ids)
            left = max(10.0, deadline - time.monotonic())
            try:
                res = self.run("systemctl is-system-running --wait", timeout=left)
                break
            except GuestPanicked as exc:
                if not self.watchdog_seconds or time.monotonic() > deadline:
                    raise
                self.event(f"{exc.short}; waiting for the next boot, as a device would")
                if boot_id:
                    not_boot_ids.add(boot_id)
        self.system_state = res.output.strip().splitlines()[-1] if res.output.strip() else ""
        self.boot_seconds = time.monotonic() - started
        self.tee.note(f"ready after {self.boot_seconds:.1f}s: {self.system_state}")
        return self.system_state

    def _wait_shell(self, deadline: float, not_boot_ids: Collection[str]) -> str | None:
        """A shell of a boot not in ``not_boot_ids``: the serial console's login or
        SSH; returns the boot id where SSH told it."""
        assert self.console is not None
        if self.target.console_login:
            self.console.login(timeout=max(1.0, deadline - time.monotonic()))
            self.console.run("dmesg -n 1 2>/dev/null || true", timeout=30)
            return None
        if self.ssh is not None:
            return self.wait_ssh(deadline, not_boot_ids)
        raise UsageError(
            f"{self.target.name}: production image without an SSH key and no serial login; "
            "build it with EDGECONTAINERS_SSH_AUTHORIZED_KEYS and pass --ssh-key"
        )

    def wait_ssh(self, deadline: float, not_boot_ids: Collection[str] = ()) -> str:
        """Until SSH answers from a boot not in ``not_boot_ids`` (monotonic ``deadline``);
        returns that boot's id.

        With ``watchdog_seconds`` set, the harness plays the device's hardware
        watchdog: a guest from which no boot answers for that long, or that
        panicked and did not restart, is reset (QMP ``system_reset``); if the
        console shows no restart after the reset, the guest is powered off and on."""
        assert self.ssh is not None and self.vm is not None
        quiet_since = time.monotonic()
        reset_at: float | None = None
        while True:
            if not self.vm.alive:
                raise self.fail("QEMU exited before SSH answered")
            try:
                res = self.ssh.run(BOOT_ID, timeout=30)
                if res.ok and res.output.strip():
                    if res.output.strip() not in not_boot_ids:
                        return res.output.strip()
                    quiet_since = time.monotonic()  # the old boot still answers
            except GuestError:
                pass
            now = time.monotonic()
            if now > deadline:
                raise self.fail("no SSH login before the deadline", StepTimeout)
            if self.watchdog_seconds:
                if reset_at is not None and self.tee.restarted_at < reset_at and now - reset_at > RESET_CONFIRM_SECONDS:
                    self._power_cycle(f"the console showed no restart {RESET_CONFIRM_SECONDS:.0f}s after the reset")
                    reset_at, quiet_since = None, time.monotonic()
                    continue
                reason = None
                if self.tee.panicked_at is not None and now - self.tee.panicked_at > PANIC_GRACE_SECONDS:
                    reason = f"the kernel panicked and the guest did not restart within {PANIC_GRACE_SECONDS:.0f}s"
                elif now - quiet_since > self.watchdog_seconds:
                    reason = f"no boot answered for {self.watchdog_seconds:.0f}s"
                if reason:
                    reset_at = self._watchdog_reset(reason)
                    quiet_since = time.monotonic()
            time.sleep(3)

    def _watchdog_reset(self, reason: str) -> float | None:
        """Reset the guest as its watchdog would; the reset's time (None: power-cycled)."""
        assert self.vm is not None
        self.event(f"{reason}: resetting the guest, as its watchdog would")
        self.watchdog_resets += 1
        self.tee.panicked_at = None
        at = time.monotonic()
        try:
            self.vm.qmp("system_reset")
        except (GuestError, OSError) as exc:
            self._power_cycle(f"QMP system_reset failed ({exc})")
            return None
        return at

    def _power_cycle(self, reason: str) -> None:
        self.event(f"{reason}: power cycle")
        self.power_cycles += 1
        self.power_cut()
        self.start()

    def event(self, text: str) -> None:
        """Something the harness did to the guest that the running test must report."""
        self.tee.note(text)
        self.events.append(text)

    def take_events(self) -> list[str]:
        """The events not taken yet (each test reports those of its own time)."""
        new = self.events[self._events_taken :]
        self._events_taken = len(self.events)
        return new

    def fail(self, message: str, cls: type[GuestError] = GuestError) -> GuestError:
        self.tee.flush()
        return cls(message, tail=self.tee.tail(), log_path=self.log_path)

    def run(self, command: str, timeout: float = 120, check: bool = False) -> Result:
        """Run a shell command in the guest (SSH when the target has a key, else the console)."""
        if self.ssh is not None and not self.target.console_login:
            since = time.monotonic()
            try:
                result = self.ssh.run(command, timeout=timeout)
            except GuestError as exc:
                panic = self.tee.panic_since(since)
                if panic:
                    message = f"the guest kernel panicked during '{command[:200]}': {panic}"
                    raise self.fail(message, GuestPanicked) from None
                raise self.fail(exc.short, type(exc)) from None
        else:
            assert self.console is not None
            result = self.console.run(command, timeout=timeout)
        if check and not result.ok:
            raise self.fail(f"'{command}' exited {result.rc}: {result.output.strip()[-500:]}")
        return result

    def boot_id(self) -> str:
        return self.run(BOOT_ID, timeout=60, check=True).output.strip()

    def request_reboot(self) -> None:
        """``systemctl reboot`` in the guest; on the serial console, wait until the
        console shows the restart, so that the next login is the new boot's (the
        old shell may still print a prompt before it dies)."""
        assert self.vm is not None and self.console is not None
        self.tee.note("reboot (systemctl reboot)")
        self.vm.started_at = time.monotonic()
        if self.target.console_login:
            self.console.sendline("systemctl reboot")
            self.wait_restart(300)
        else:
            with contextlib.suppress(GuestError):  # the connection drops
                self.run("systemctl reboot", timeout=30)

    def reboot(self, timeout: float = 900) -> str:
        """Reboot the guest (the disk overlay persists) and wait until the new boot is
        ready; returns its system state."""
        old = self.boot_id()
        self.tee.note(f"boot {old} ends")
        self.request_reboot()
        state = self.wait_ready(timeout, not_boot_id=old)
        if self.boot_id() == old:
            raise self.fail("the guest did not reboot")
        return state

    def power_cut(self) -> None:
        """Pull the plug: SIGKILL to QEMU, nothing flushed.  The guest gets no
        shutdown, what it had not written out is lost, and so is what it wrote
        without a flush that QEMU still held (the qcow2 overlay's metadata cache),
        as with a disk's volatile cache.  ``start()`` powers it on again."""
        assert self.vm is not None
        self.tee.note("power cut: SIGKILL to QEMU")
        self._stop_drain()
        self.vm.kill(hard=True)
        self.console = None
        self.ssh = None

    def wait_restart(self, timeout: float = 600) -> None:
        """Wait until the console shows that the guest restarts (a reboot the guest
        decided itself, e.g. after a failed health check, or one just requested)."""
        assert self.console is not None
        draining = self._drain_thread is not None
        self._stop_drain()
        try:
            self.console.expect(RESTART_MARKERS, timeout, "the guest restarting")
        finally:
            self.console.logged_in = False
            if draining:
                self._start_drain()
        self.vm.started_at = time.monotonic()

    def wait_exit(self, timeout: float) -> bool:
        """Wait until QEMU exits on its own (a shutdown the guest was told to do);
        True if it did.  The console reader stops first: only one thread reads the
        console and reaps QEMU."""
        if self.vm is None:
            return True
        self._stop_drain()
        return self.vm.wait_exit(timeout)

    def poweroff(self, timeout: float = 120) -> None:
        """Shut the guest down cleanly (QEMU exits); killed if it does not in time."""
        if self.vm is None or not self.vm.alive:
            return
        self.tee.note("poweroff")
        self._stop_drain()
        with contextlib.suppress(GuestError):
            self.vm.qmp("system_powerdown", timeout=5)
        if not self.vm.wait_exit(timeout):
            self.tee.note("poweroff timed out; killing QEMU")
        self.vm.kill()

    def close(self) -> None:
        self._stop_drain()
        if self.vm is not None:
            self.vm.kill()
        self.tee.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
