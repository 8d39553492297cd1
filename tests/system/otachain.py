"""What the OTA modules share: one guest that goes through a chain of scenarios
(booted with the harness's watchdog on, its figures written when it is done),
a console log per scenario that also reports what the harness did to the
guest, and the chain rule (after a failure the later scenarios say so)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bootchain import shutdown
from conftest import CONSOLE_DIR, RESULTS, report_harness_events

from edgecontainers.qemu import ota
from edgecontainers.qemu.qemuboot import find_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.qemu.vm import Drive
from edgecontainers.testimage.builder import TestImage


@contextlib.contextmanager
def ota_guest(image: TestImage, name: str, *, workdir: Path, guestfwd: tuple[tuple[int, int], ...],
              figures: dict[str, float | int], figures_file: str,
              extra_drives: tuple[Drive, ...] = (), boot: str = "grub") -> Iterator[Session]:  # fmt: skip
    """The guest of an OTA module (console log boot-<name>-<boot>.log), booted through
    its bootloader (OVMF and GRUB, or U-Boot and boot.scr) and ready; afterwards its
    figures go to build/test-results/<figures_file>."""
    target = BootTarget.from_qemuboot(find_qemuboot(image.qemuboot))
    CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
    log = CONSOLE_DIR / f"boot-{name}-{boot}.log"
    log.unlink(missing_ok=True)  # this module's boots only (the tests read it from the start)
    session = Session(target, boot=boot, log_path=log, workdir=workdir,
                      guestfwd=guestfwd, extra_drives=extra_drives)  # fmt: skip
    session.watchdog_seconds = ota.WATCHDOG_SECONDS
    started = time.monotonic()
    try:
        session.start()
        session.wait_ready(900)
        figures["boot_to_ready_s"] = round(time.monotonic() - started, 1)
        yield session
    finally:
        figures["watchdog_resets"] = session.watchdog_resets
        figures["power_cycles"] = session.power_cycles
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / figures_file).write_text(json.dumps(figures, indent=1) + "\n")
        if boot == "uboot" and session.vm is not None and session.vm.alive:
            shutdown(session)  # no ACPI power button on the arm64 guest
        else:
            session.poweroff(90)
        session.close()


@contextlib.contextmanager
def scenario_log(request: pytest.FixtureRequest, session: Session, prefix: str,
                 figures: dict[str, float | int]) -> Iterator[None]:  # fmt: skip
    """The scenario's console log; what the harness did to the guest meanwhile is
    reported by the test (conftest.report_harness_events) and counted in the
    figures (``<test>:watchdog``: resets and power cycles)."""
    path = CONSOLE_DIR / f"{prefix}-{request.node.name}.log"
    path.unlink(missing_ok=True)
    session.tee.attach(path)
    resets = session.watchdog_resets + session.power_cycles
    try:
        yield
    finally:
        session.tee.detach()
        report_harness_events(request.node, session)
        figures[f"{request.node.name}:watchdog"] = session.watchdog_resets + session.power_cycles - resets


@contextlib.contextmanager
def chained(request: pytest.FixtureRequest, failed: list[str], what: str) -> Iterator[None]:
    """The scenarios build on each other: after a failure the later ones say so."""
    if failed:
        pytest.fail(f"an earlier {what} scenario failed ({', '.join(failed)}); the guest's state is unknown")
    yield
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        failed.append(request.node.name)
