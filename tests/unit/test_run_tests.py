"""scripts/run-tests: the OTA lane (the GRUB OTA chain, then the U-Boot chain)
runs alongside the other stages, every stage's
failure fails the command, and --serial runs them one after another.

The script runs from a copy in a temporary directory (it writes its results under
its own checkout) with a fake venv whose python records when each pytest stage
starts and ends."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/bin/bash
# called as: python -m pytest PATHS... --junitxml=.../junit-NAME.xml
for a; do case $a in --junitxml=*) j=${a#--junitxml=} ;; esac; done
name=$(basename "$j" .xml); name=${name#junit-}
echo "$name start $(date +%s.%N)" >> "$FAKE_LOG"
sleep=$FAKE_SLEEP
for kv in $FAKE_SLEEPS; do [ "${kv%%=*}" = "$name" ] && sleep=${kv#*=}; done
sleep "$sleep"
echo "$name end $(date +%s.%N)" >> "$FAKE_LOG"
echo "fake pytest output of $name"
case " $FAKE_FAIL " in *" $name "*) exit 1 ;; esac
exit 0
"""


def _run(
    tmp_path: Path, *args: str, fail: str = "", sleep: float = 1.0, sleeps: str = ""
) -> tuple[subprocess.CompletedProcess, dict]:
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "run-tests", checkout / "scripts" / "run-tests")
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(FAKE_PYTHON)
    (venv / "ruff").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("python", "ruff"):
        (venv / tool).chmod(0o755)
    log = tmp_path / "stages.log"
    env = {
        **os.environ,
        "EDGECONTAINERS_VENV": str(venv.parent),
        "EDGECONTAINERS_SKIP_INSTALL": "1",
        "FAKE_LOG": str(log),
        "FAKE_FAIL": fail,
        "FAKE_SLEEP": str(sleep),
        "FAKE_SLEEPS": sleeps,
    }
    env.pop("EDGECONTAINERS_SERIAL", None)
    proc = subprocess.run(["bash", str(checkout / "scripts" / "run-tests"), *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    times: dict[str, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        name, what, when = line.split()
        times.setdefault(name, {})[what] = float(when)
    return proc, times


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def test_the_ota_lane_runs_alongside_the_other_stages(tmp_path: Path):
    if _cores() < 2:
        pytest.skip("one core: run-tests runs its stages one after another here")
    proc, t = _run(tmp_path, sleeps="ota=4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(t) == {"lint-and-unit", "bitbake", "system", "ota", "uboot"}
    # while the OTA chain runs, the other stages run one after another beside it
    assert t["lint-and-unit"]["end"] <= t["bitbake"]["start"] and t["bitbake"]["end"] <= t["system"]["start"]
    assert t["ota"]["start"] < t["lint-and-unit"]["end"] and t["system"]["end"] < t["ota"]["end"]
    # the U-Boot chain runs in the lane that is free first: here the first, while the OTA chain still runs
    assert t["system"]["end"] <= t["uboot"]["start"] < t["ota"]["end"]
    # the lane's output is printed, and every stage is in the summary
    assert "fake pytest output of ota" in proc.stdout
    summary = (tmp_path / "checkout/build/test-results/summary.txt").read_text()
    for stage in ("ruff: ok", "lint-and-unit: exit 0", "bitbake: exit 0", "system: exit 0", "ota: exit 0",
                  "uboot: exit 0"):  # fmt: skip
        assert stage in summary


def test_a_lane_that_is_done_takes_the_next_stage_not_yet_started(tmp_path: Path):
    """A long BitBake parse (a cold machine): the OTA lane, done first, runs the system suite."""
    if _cores() < 2:
        pytest.skip("one core: run-tests runs its stages one after another here")
    proc, t = _run(tmp_path, sleep=0.3, sleeps="ota=1.5 bitbake=5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(t) == ["bitbake", "lint-and-unit", "ota", "system", "uboot"]  # each stage once
    assert t["ota"]["end"] <= t["system"]["start"] < t["bitbake"]["end"]
    assert "fake pytest output of system" in (tmp_path / "checkout/build/test-results/lane-2.log").read_text()


@pytest.mark.parametrize("failing", ["ota", "bitbake"])
def test_a_failing_stage_in_either_lane_fails_the_command_and_the_rest_still_runs(tmp_path: Path, failing: str):
    proc, t = _run(tmp_path, fail=failing, sleep=0.2)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert set(t) == {"lint-and-unit", "bitbake", "system", "ota", "uboot"}
    assert f"{failing}: exit 1" in (tmp_path / "checkout/build/test-results/summary.txt").read_text()


def test_serial_runs_the_ota_lane_after_the_others(tmp_path: Path):
    proc, t = _run(tmp_path, "--serial", sleep=0.2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert t["system"]["end"] <= t["ota"]["start"] and t["ota"]["end"] <= t["uboot"]["start"]


def test_full_adds_the_long_stages(tmp_path: Path):
    proc, t = _run(tmp_path, "--full", sleep=0.1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(t) == {"lint-and-unit", "bitbake", "system", "ota", "uboot", "uboot-full", "ota-docker"}


def test_an_unknown_argument_is_one_line_and_exit_2(tmp_path: Path):
    checkout = tmp_path / "c" / "scripts"
    checkout.mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "run-tests", checkout / "run-tests")
    proc = subprocess.run(["bash", str(checkout / "run-tests"), "--paralel"], capture_output=True, text=True,
                          env={**os.environ, "EDGECONTAINERS_SKIP_INSTALL": "1"}, timeout=30)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--paralel" in proc.stderr
