"""Driving RAUC and the health gate on a running guest: the steps of the OTA
tests and the OTA benchmark (install, reboot, wait for a given slot, read the
slot states), written once."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import time
from dataclasses import dataclass

from .console import Result
from .session import BOOT_ID, Session
from .vm import GUESTFWD_ADDR, GuestError, StepTimeout

GUEST_HTTP_PORT = 8000
STICK_DEVICE = "/dev/vdb"
STICK_MOUNT = "/run/edgecontainers-stick"
HEALTH_UNIT = "edgecontainers-health.service"


def server_url(name: str) -> str:
    """URL of a file of the host's BundleServer, as the guest sees it."""
    return f"http://{GUESTFWD_ADDR}:{GUEST_HTTP_PORT}/{name}"


@dataclass(frozen=True)
class Slots:
    """``rauc status`` boiled down: booted slot, primary, and per bootname
    (A, B) the slot's RAUC state and boot status."""

    booted: str
    primary: str
    state: dict[str, str]
    boot_status: dict[str, str]

    def describe(self) -> str:
        parts = [f"{b}: {self.state.get(b)}/{self.boot_status.get(b)}" for b in sorted(self.state)]
        return f"booted {self.booted}, primary {self.primary}; " + ", ".join(parts)


def slots(s: Session) -> Slots:
    res = s.run("rauc status --detailed --output-format=json", timeout=120)
    if not res.ok:
        raise s.fail(f"rauc status failed: {res.output.strip()[-500:]}")
    data = json.loads(res.output[res.output.index("{") :])
    by_name = {name: info for entry in data.get("slots", []) for name, info in entry.items()}
    bootname = {name: info.get("bootname") for name, info in by_name.items() if info.get("bootname")}
    booted = next((bootname[n] for n in bootname if by_name[n].get("state") == "booted"), data.get("booted", ""))
    primary = bootname.get(data.get("boot_primary") or "", "")
    return Slots(
        booted=booted,
        primary=primary,
        state={bootname[n]: by_name[n].get("state", "") for n in bootname},
        boot_status={bootname[n]: by_name[n].get("boot_status", "") for n in bootname},
    )


def booted_slot(s: Session) -> str:
    cmdline = s.run("cat /proc/cmdline", timeout=60).output
    m = re.search(r"\brauc\.slot=(\S+)", cmdline)
    return m.group(1) if m else ""


# RAUC before 1.15 loses a race with udev when it sets up the NBD device for
# streaming: udev opens and closes the new device, which then disconnects, and
# dm-verity sees a device of size 0 (rauc PR #1741, "src/nbd: avoid race with
# udev during setup").  wrynose's meta-rauc ships 1.15.2; Debian trixie, which
# the QEMU test image is made of, ships 1.13.  Only there is such an install
# tried once more.
NBD_UDEV_RACE = "Failed to load dm table: Argument list too long"


def rauc_version(s: Session) -> tuple[int, ...]:
    m = re.search(r"rauc (\d+)\.(\d+)", s.run("rauc --version", timeout=60).output)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def install(s: Session, source: str, timeout: float = 1800) -> tuple[Result, float]:
    """``rauc install SOURCE``; the result and how long it took."""
    t0 = time.monotonic()
    command = f"rauc install {shlex.quote(source)} 2>&1"
    res = s.run(command, timeout=timeout)
    if not res.ok and NBD_UDEV_RACE in res.output and "://" in source and rauc_version(s) < (1, 15):
        s.tee.note("RAUC < 1.15 lost its NBD set-up race with udev (rauc PR #1741); installing once more")
        t0 = time.monotonic()
        res = s.run(command, timeout=timeout)
    return res, time.monotonic() - t0


def mount_stick(s: Session) -> str:
    """Mount the update stick (read-only); its mount point."""
    res = s.run(f"mkdir -p {STICK_MOUNT} && (mountpoint -q {STICK_MOUNT} || "
                f"mount -o ro {STICK_DEVICE} {STICK_MOUNT})", timeout=120)  # fmt: skip
    if not res.ok:
        raise s.fail(f"cannot mount the update stick {STICK_DEVICE}: {res.output.strip()[-300:]}")
    return STICK_MOUNT


def _health_props(s: Session) -> dict[str, str]:
    out = s.run(f"systemctl show -p ActiveState -p Result -p ConditionResult -p ConditionTimestampMonotonic "
                f"{HEALTH_UNIT}", timeout=60).output  # fmt: skip
    return dict(line.split("=", 1) for line in out.split() if "=" in line)


def wait_health_decided(s: Session, timeout: float = 600) -> tuple[str, str]:
    """Until the health gate has finished (or its condition kept it from running);
    its (ActiveState, Result)."""
    deadline = time.monotonic() + timeout
    while True:
        props = _health_props(s)
        state = props.get("ActiveState", ""), props.get("Result", "")
        skipped = props.get("ConditionResult") == "no" and props.get("ConditionTimestampMonotonic", "0") != "0"
        if state[0] in ("active", "failed") or (state[0] == "inactive" and (state[1] != "success" or skipped)):
            return state
        if time.monotonic() > deadline:
            raise s.fail(f"the health gate did not decide within {timeout:.0f}s ({state})", StepTimeout)
        time.sleep(5)


# A device resets itself through its hardware watchdog when a boot hangs, and
# the bootloader's boot counter takes it from there; in the OTA scenarios the
# harness plays that watchdog (Session.wait_ssh; it also resets a guest hung in
# a kernel panic, and power-cycles one that a reset did not restart).  Under
# TCG an OVMF -> GRUB -> kernel hand-off was seen to hang once in a few dozen
# boots, and a kernel to oops and hang in panic() once; the next attempt of the
# same slot booted.
WATCHDOG_SECONDS = 600.0


def wait_for_slot(s: Session, slot: str, *, seen: set[str], timeout: float = 1800) -> list[str]:
    """Wait for a boot, other than the boots in ``seen``, that runs from ``slot`` and
    stays up until the health gate has decided; boots of other slots on the way
    (a slot that fails and reboots by itself) are recorded and waited out.  Returns
    the slots booted on the way, in order.  Works over SSH and on the serial console."""
    deadline = time.monotonic() + timeout
    passed: list[str] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise s.fail(f"no boot of slot {slot} within {timeout:.0f}s (boots seen: {passed})", StepTimeout)
        try:
            if s.ssh is not None and not s.target.console_login:
                s.wait_ssh(deadline, seen)
            else:
                s.wait_ready(left)
            boot = s.run(BOOT_ID, timeout=60).output.strip()
            if boot in seen:
                if s.target.console_login:
                    s.wait_restart(max(10.0, deadline - time.monotonic()))
                continue
            seen.add(boot)
            current = booted_slot(s)
            passed.append(current)
            if current == slot:
                with contextlib.suppress(GuestError):
                    s.run("systemctl is-system-running --wait", timeout=max(10.0, deadline - time.monotonic()))
                return passed
            # another slot: it should roll back by itself; wait for its restart
            if s.target.console_login:
                s.wait_restart(max(10.0, deadline - time.monotonic()))
        except GuestError:
            if s.vm is None or not s.vm.alive:
                raise
            time.sleep(3)


def reboot_into(s: Session, slot: str, *, seen: set[str], timeout: float = 1800) -> list[str]:
    """Reboot (as the update procedure does after an install) and wait for ``slot``."""
    seen.add(s.boot_id())
    s.request_reboot()
    return wait_for_slot(s, slot, seen=seen, timeout=timeout)


def app_state(s: Session, container: str, engine: str = "podman") -> tuple[str, str, str]:
    """(status, health, image id) of a container."""
    # no health check: podman 5 and docker leave State.Health out
    fmt = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.Image}}"
    out = s.run(f"{engine} inspect --format '{fmt}' {container}", timeout=120).output.strip().split()
    status, health, image = [*out, "", "", ""][:3]
    return status, health, image
