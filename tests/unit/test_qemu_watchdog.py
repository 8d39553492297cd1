"""The harness's watchdog (Session.wait_ssh, used by the OTA scenarios) against
a fake QEMU that prints a guest's console and answers QMP: a guest that panics
and hangs is reset soon after the panic (not after the long silence limit), a
reset that QEMU does not carry out is followed by a power cycle, and without a
watchdog nothing is reset.  Also: the console log survives its reader thread
writing while the harness switches per-test logs, and tells the emulator's
int3 fault apart from other kernel oopses."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from edgecontainers.qemu import session as session_mod
from edgecontainers.qemu.console import Result, _Tee
from edgecontainers.qemu.qemuboot import find_qemuboot, write_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.qemu.vm import GuestError, GuestPanicked, StepTimeout

FAKE_QEMU = Path(__file__).parent / "fakes" / "qemu"


def _target(tmp_path: Path) -> BootTarget:
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    name = "edgecontainers-image-qemux86-64.rootfs"
    (deploy / f"{name}.wic").write_bytes(b"\0" * 65536)
    (deploy / "bzImage").write_bytes(b"kernel")
    values = {
        "deploy_dir_image": str(deploy),
        "image_link_name": name,
        "machine": "qemux86-64",
        "qb_system_name": "qemu-system-x86_64",
        "qb_machine": "-machine q35",
        "qb_cpu": "-cpu max",
        "qb_mem": "-m 512",
        "qb_default_fstype": "wic",
        "qb_default_kernel": "bzImage",
    }
    write_qemuboot(deploy / f"{name}.qemuboot.conf", values)
    return BootTarget.from_qemuboot(find_qemuboot(deploy_dir=deploy), ssh_key=tmp_path / "key")


@pytest.fixture
def guest(tmp_path, monkeypatch):
    """start(scenario) -> (session, state directory of the fake QEMU)."""
    state = tmp_path / "state"

    class FakeSSH:
        """Answers with a boot id once the fake guest has booted."""

        def __init__(self, port: int, key: Path, **_: object) -> None:
            pass

        def run(self, command: str, timeout: float = 120, check: bool = False) -> Result:
            booted = state / "booted"
            if booted.exists() and command.startswith("systemctl is-system-running"):
                if booted.read_text() == "1" and os.environ["FAKE_QEMU_SCENARIO"] == "panic-during-wait":
                    (state / "panic-now").touch()  # the kernel panics while systemd is still starting
                    while not (state / "panicked").exists():
                        time.sleep(0.05)
                    time.sleep(1.5)  # the console reader takes the panic lines into the log
                    raise GuestError("ssh: Connection reset by peer")
                return Result(command, 0, "running\n")
            if booted.exists():
                return Result(command, 0, f"boot-{booted.read_text()}\n")
            raise GuestError("ssh: Connection timed out during banner exchange")

    monkeypatch.setenv("PATH", f"{FAKE_QEMU}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_QEMU_STATE", str(state))
    monkeypatch.setattr(session_mod, "SSH", FakeSSH)
    monkeypatch.setattr(session_mod, "PANIC_GRACE_SECONDS", 1.0)
    monkeypatch.setattr(session_mod, "RESET_CONFIRM_SECONDS", 4.0)
    sessions: list[Session] = []

    def start(scenario: str, watchdog: float | None = 600) -> tuple[Session, Path]:
        monkeypatch.setenv("FAKE_QEMU_SCENARIO", scenario)
        s = Session(_target(tmp_path), boot="direct", workdir=tmp_path / "s", log_path=tmp_path / "console.log")
        sessions.append(s)
        s.watchdog_seconds = watchdog
        s.start()
        return s, state

    yield start
    for s in sessions:
        s.close()  # stops the console reader, then QEMU


def _count(state: Path, prefix: str) -> int:
    return len(list(state.glob(f"{prefix}-*")))


def test_a_guest_hung_in_a_kernel_panic_is_reset_soon_after_the_panic(guest):
    s, state = guest("panic-hang")
    t = time.monotonic()
    s.wait_ssh(t + 120, {"boot-before"})
    assert time.monotonic() - t < 60  # the panic, not the 600 s of silence
    assert (s.watchdog_resets, s.power_cycles) == (1, 0)
    assert (_count(state, "reset"), _count(state, "start")) == (1, 1)
    s.tee.flush()
    log = s.log_path.read_text()
    assert "Kernel panic - not syncing" in log
    assert "the kernel panicked and the guest did not restart within 1s: resetting the guest" in log


def test_a_reset_that_qemu_does_not_carry_out_is_followed_by_a_power_cycle(guest):
    s, state = guest("reset-ignored")
    s.wait_ssh(time.monotonic() + 120, {"boot-before"})
    assert (s.watchdog_resets, s.power_cycles) == (1, 1)
    assert (_count(state, "reset"), _count(state, "start")) == (1, 2)
    s.tee.flush()
    assert "the console showed no restart 4s after the reset: power cycle" in s.log_path.read_text()


def test_without_a_watchdog_a_hung_guest_is_left_alone(guest):
    s, state = guest("panic-hang", watchdog=None)
    with pytest.raises(StepTimeout, match="no SSH login before the deadline"):
        s.wait_ssh(time.monotonic() + 8, {"boot-before"})
    assert (s.watchdog_resets, _count(state, "reset")) == (0, 0)


def test_a_panic_during_is_system_running_is_named_without_a_watchdog(guest):
    s, state = guest("panic-during-wait", watchdog=None)
    with pytest.raises(GuestPanicked, match="the guest kernel panicked during 'systemctl is-system-running --wait'"):
        s.wait_ready(120)
    assert (s.watchdog_resets, _count(state, "reset")) == (0, 0)


def test_a_panic_during_is_system_running_is_recovered_by_the_watchdog_and_reported(guest):
    s, state = guest("panic-during-wait")
    t = time.monotonic()
    assert s.wait_ready(120) == "running"
    assert time.monotonic() - t < 60
    assert (s.watchdog_resets, _count(state, "reset"), _count(state, "boot")) == (1, 1, 2)
    assert len(s.events) == 2, s.events
    assert s.events[0].startswith("the guest kernel panicked during 'systemctl is-system-running --wait'")
    assert "Kernel panic - not syncing: Fatal exception in interrupt" in s.events[0]
    assert s.events[1].startswith("the kernel panicked and the guest did not restart within 1s: resetting the guest")


def test_console_log_while_the_reader_writes_and_tests_switch_logs(tmp_path):
    tee = _Tee(tmp_path / "console.log")
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            n = 0
            while not stop.is_set():
                tee.write(f"line {n}\n")
                n += 1
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that a race shows
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(3000):
            tee.attach(tmp_path / f"test-{i % 3}.log")
            tee.note(f"test {i}")
            tee.tail()
            tee.detach()
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    tee.close()
    assert errors == []
    assert "line 0" in (tmp_path / "console.log").read_text()


def test_the_emulators_int3_fault_is_told_apart_from_other_console_lines(tmp_path):
    tee = _Tee(tmp_path / "console.log")
    tee.write("[   68.910333] Oops: in")  # a line may arrive in pieces
    tee.write("t3: 0000 [#1] PREEMPT SMP NOPTI\r\n[   68.91] RIP: 0010:can_migrate_task+0x3c/0x500\r\n")
    tee.write("[   70.1] Oops: general protection fault: 0000 [#2]\r\n")
    tee.close()
    assert tee.emulator_faults == ["[   68.910333] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"]
