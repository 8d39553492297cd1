"""The health gate (recipes-core/edgecontainers-health/files/health-gate) when
the booted slot is unhealthy: it may mark the slot bad and reboot only when
another slot is good.  Marking the only bootable slot bad bricks the device:
RAUC's uboot backend takes the slot out of BOOT_ORDER (src/bootloaders/uboot.c,
r_uboot_set_state), its grub backend sets x_OK=0, and the bootloader is left
with nothing that boots.

The script runs for real under /bin/sh against a fake ``rauc`` and a fake
``systemctl`` (tests/unit/fakes/health) that record every call; the failure
comes from a health hook that exits 1.  It runs from a copy in tmp_path with
its hard-coded paths (/proc/cmdline, /proc/uptime, the configuration files,
the /data probe) pointed into tmp_path; the script itself is never changed."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes.helpers import REPO

SCRIPT = REPO / "meta-edgecontainers/recipes-core/edgecontainers-health/files/health-gate"
FAKES = Path(__file__).parent / "fakes" / "health"

# the paths of the script that the tests point elsewhere
PATHS = {
    "/proc/cmdline": "cmdline",
    "/proc/uptime": "uptime",
    "CONF=/usr/lib/edgecontainers/health.conf": "CONF={tmp}/health.conf",
    "/etc/edgecontainers/health.conf": "{tmp}/etc-health.conf",
    "probe=/data/.edgecontainers-health": "probe={tmp}/data/.edgecontainers-health",
}


@dataclass
class Gate:
    tmp: Path

    def slots(self, booted: str, **status: str) -> None:
        """The slots RAUC knows (bootname=boot status) and the booted one; an
        appfs slot without bootname too, as a real system.conf may have."""
        slots = {f"rootfs.{i}": {"bootname": b, "status": s} for i, (b, s) in enumerate(status.items())}
        slots["appfs.0"] = {}
        (self.tmp / "slots.json").write_text(json.dumps({"booted": booted, "slots": slots}))
        (self.tmp / "cmdline").write_text(f"root=PARTUUID=x rauc.slot={booted} rootwait ro quiet\n")

    def status(self) -> dict[str, str]:
        state = json.loads((self.tmp / "slots.json").read_text())
        return {s["bootname"]: s["status"] for s in state["slots"].values() if s.get("bootname")}

    def rauc_fails(self) -> None:
        state = json.loads((self.tmp / "slots.json").read_text())
        state["fail_status"] = True
        (self.tmp / "slots.json").write_text(json.dumps(state))

    def healthy(self, ok: bool) -> None:
        hook = self.tmp / "health.d" / "50-check"
        hook.write_text("#!/bin/sh\necho 'the app is broken' >&2\nexit 1\n" if not ok else "#!/bin/sh\nexit 0\n")
        hook.chmod(0o755)

    def run(self) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{FAKES}{os.pathsep}/usr/bin:/bin", "FAKE_HEALTH": str(self.tmp)}
        return subprocess.run(
            ["sh", str(self.tmp / "health-gate")], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    def calls(self) -> list[str]:
        path = self.tmp / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def record(self) -> str:
        path = self.tmp / "data/edgecontainers/health.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    text = SCRIPT.read_text()
    for old, new in PATHS.items():
        assert old in text, f"the script no longer has {old!r}"
        text = text.replace(old, new.format(tmp=tmp_path) if "{tmp}" in new else str(tmp_path / new))
    (tmp_path / "health-gate").write_text(text)
    (tmp_path / "uptime").write_text("42.17 80.00\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "health.d").mkdir()
    (tmp_path / "health.conf").write_text(
        "EDGE_HEALTH_TIMEOUT=0\nEDGE_HEALTH_INTERVAL=1\nEDGE_HEALTH_ENGINE=podman\n"
        'EDGE_HEALTH_UNITS="data.mount"\n'
        f'EDGE_HEALTH_HOOK_DIRS="{tmp_path}/health.d"\n'
        f"EDGE_HEALTH_RECORD={tmp_path}/data/edgecontainers/health.log\n"
    )
    return Gate(tmp_path)


def _rauc_marks(gate: Gate) -> list[str]:
    return [c for c in gate.calls() if c.startswith("rauc status mark")]


def test_healthy_slot_is_marked_good(gate: Gate):
    gate.slots("A", A="good", B="bad")
    gate.healthy(True)
    proc = gate.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _rauc_marks(gate) == ["rauc status mark-good booted"]
    assert "systemctl reboot" not in gate.calls()


def test_unhealthy_slot_with_a_good_other_slot_is_marked_bad_and_reboots(gate: Gate):
    gate.slots("B", A="good", B="good")
    gate.healthy(False)
    proc = gate.run()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _rauc_marks(gate) == ["rauc status mark-bad booted"]
    assert gate.status() == {"A": "good", "B": "bad"}
    calls = gate.calls()
    assert calls[-1] == "systemctl reboot", calls
    assert calls.index("rauc status mark-bad booted") < calls.index("systemctl reboot")
    assert "marked slot B bad; rebooting into the other slot (A=good)" in proc.stdout
    assert "slot=B" in gate.record() and "50-check failed: the app is broken" in gate.record()


@pytest.mark.parametrize(
    ("others", "listed"),
    [({"B": "bad"}, "B=bad"), ({}, "no other slot")],
    ids=["other-slot-empty-or-bad", "no-other-slot"],
)
def test_unhealthy_only_bootable_slot_is_never_marked_bad(gate: Gate, others: dict[str, str], listed: str):
    """A first boot with slot B never installed (RAUC: B bad), or a system
    without a second slot: marking A bad would leave nothing to boot."""
    gate.slots("A", A="good", **others)
    gate.healthy(False)
    proc = gate.run()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _rauc_marks(gate) == [], gate.calls()
    assert "systemctl reboot" not in gate.calls()
    assert gate.status()["A"] == "good"
    why = f"not marking slot A bad: no other slot is good ({listed}), slot A is the only bootable one; staying up"
    assert f"<3>{why}" in proc.stdout, proc.stdout
    assert why in gate.record(), gate.record()


def test_unhealthy_slot_stays_unmarked_when_rauc_cannot_tell_the_other_slots(gate: Gate):
    gate.slots("A", A="good", B="good")
    gate.rauc_fails()
    gate.healthy(False)
    proc = gate.run()
    assert proc.returncode == 1
    assert _rauc_marks(gate) == [] and "systemctl reboot" not in gate.calls(), gate.calls()
    assert "cannot tell whether another slot is good (rauc status failed: rauc-ERROR: Failed to obtain status" in (
        proc.stdout
    )
