"""The mutation run: each promised property of the layer, broken in a copy of the
layer, must make at least one QEMU smoke test fail.

A mutant is one small edit of one layer file (the setting that delivers one
property).  The run copies the layer, applies the edit, builds the Debian test
image from the copy (``--layer``), boots it and runs the smoke suite with what
the *checkout's* layer declares as the expectation.  The mutant is killed when
a test fails; it survived when the suite passes (the tests do not see that
property); an edit that no longer applies (the layer changed) is an error,
never a pass.
"""

from __future__ import annotations

import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .tools import run

QUADLET = "recipes-demo/edgecontainers-demo/files/edgecontainers-demo.container"
SYSTEM_CONF = "recipes-core/rauc/files/qemux86-64/system.conf"


@dataclass(frozen=True)
class Mutant:
    name: str
    prop: str  # the property the edit breaks
    path: str  # layer file, relative to meta-edgecontainers/
    old: str  # text that must occur exactly once
    new: str
    # the boot path the property needs (the run's --boot otherwise): mark-good is
    # only visible where a bootloader counts the boot
    boot: str | None = None

    def apply(self, layer: Path) -> None:
        target = layer / self.path
        text = target.read_text() if target.is_file() else ""
        if text.count(self.old) != 1:
            raise ConfigError(
                f"mutant {self.name}: {self.path} does not contain {self.old!r} exactly once; update the mutant "
                "(scripts/edgecontainers/mutants.py)"
            )
        target.write_text(text.replace(self.old, self.new))


MUTANTS: tuple[Mutant, ...] = (
    Mutant("no-read-only-rootfs", "read-only root", "recipes-core/images/edgecontainers-image.inc",
           'IMAGE_FEATURES += "read-only-rootfs"\n', ""),
    Mutant("persistent-log", "logs in RAM (/var/log on tmpfs)", "conf/distro/edgecontainers.conf",
           " files/fs-perms-volatile-log.txt", ""),
    Mutant("no-journal-cap", "journald's RAM cap", "recipes-core/edgecontainers-base/files/journald.conf",
           "RuntimeMaxUse=@EDGECONTAINERS_JOURNAL_MAX@\n", ""),
    # Not just "User= removed": the image's OCI_IMAGE_RUNTIME_UID (1000) would still
    # apply and the app stay non-root, an equivalent mutant (it survived, rightly).
    Mutant("app-as-root", "the app runs as non-root", QUADLET, "User=1000:1000\n", "User=0:0\n"),
    Mutant("new-privileges", "no-new-privileges", QUADLET, "NoNewPrivileges=true\n", ""),
    Mutant("no-memory-limit", "the app's memory limit", QUADLET, "MemoryMax=64M\n", ""),
    Mutant("wrong-tier", "the app's tier slice", QUADLET, "Slice=apps-critical.slice", "Slice=apps-besteffort.slice"),
    Mutant("storage-in-ram", "/data binding (engine storage on /data)",
           "recipes-containers/edgecontainers-engine-config/files/persist-podman.conf",
           "/var/lib/containers        dir   0711\n", ""),
    Mutant("volatile-machine-id", "persisted machine-id", "recipes-core/edgecontainers-base/files/persist-base.conf",
           "/etc/machine-id            file  0444\n", ""),
    Mutant("serial-getty", "production: no getty on the serial console",
           "recipes-core/edgecontainers-production/files/no-serial-login.conf",
           "ConditionPathExists=/run/edgecontainers/serial-login-is-disabled-in-production\n", ""),
    Mutant("ssh-passwords", "production: SSH refuses passwords",
           "recipes-core/edgecontainers-base/files/sshd-edgecontainers.conf",
           "PasswordAuthentication no\n", "PasswordAuthentication yes\n"),
    Mutant("health-gate-never-marks", "the health gate marks the slot good",
           "recipes-core/edgecontainers-health/files/health-gate",
           "if rauc_do status mark-good booted; then", "if true; then", boot="grub"),
    Mutant("rauc-compatible", "RAUC compatible", SYSTEM_CONF,
           "compatible=@EDGECONTAINERS_RAUC_COMPATIBLE@\n", "compatible=@EDGECONTAINERS_RAUC_COMPATIBLE@-other\n"),
    Mutant("rauc-keyring", "RAUC keyring (the fleet CA)", SYSTEM_CONF, "path=ca.cert.pem\n",
           "path=ca-other.cert.pem\n"),
)  # fmt: skip


def select(names: list[str] | None) -> list[Mutant]:
    if not names:
        return list(MUTANTS)
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown mutant {', '.join(unknown)}", hint="known: " + " ".join(known))
    return [known[n] for n in names]


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, survived, error
    detail: str
    seconds: float

    def line(self) -> str:
        return f"{self.status:8} {self.mutant.name:24} {self.seconds:5.0f}s  {self.mutant.prop}: {self.detail}"


def _failures(junit: Path) -> list[str]:
    """The tests that failed or errored, from pytest's JUnit XML."""
    if not junit.is_file():
        return []
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or "").splitlines()[0][:160] if node.get("message") else ""
                out.append(f"{case.get('name')} ({kind}: {message})" if message else f"{case.get('name')} ({kind})")
    return out


def run_one(mutant: Mutant, root: Path, results: Path, pytest_args: list[str]) -> Outcome:
    """Copy the layer, apply the mutant, run the smoke suite on an image of the copy."""
    started = time.monotonic()
    work = results / "layers" / mutant.name
    shutil.rmtree(work, ignore_errors=True)
    layer = work / "meta-edgecontainers"
    shutil.copytree(root / "meta-edgecontainers", layer, symlinks=True)
    try:
        mutant.apply(layer)
    except ConfigError as exc:
        return Outcome(mutant, "error", str(exc), time.monotonic() - started)
    if mutant.boot:
        args = list(pytest_args)
        if "--boot" in args:
            at = args.index("--boot")
            del args[at : at + 2]
        pytest_args = [*args, "--boot", mutant.boot]
    junit = results / f"{mutant.name}.xml"
    junit.unlink(missing_ok=True)
    # the whole suite, not -x: the line names every test the mutant fails, so a
    # reader sees that the property's own check is among them
    argv = [sys.executable, "-m", "pytest", str(root / "tests/system/test_smoke.py"), "-m", "qemu",
            "-p", "no:cacheprovider", "--layer", str(layer), "--layer-tag", f"mutant-{mutant.name}",
            f"--junitxml={junit}", *pytest_args]  # fmt: skip
    proc = run(argv, check=False, capture=True, cwd=root)
    (results / f"{mutant.name}.log").write_text(proc.stdout or "")
    seconds = time.monotonic() - started
    failed = _failures(junit)
    if proc.returncode == 1 and failed:
        others = [f.split(" (", 1)[0] for f in failed[1:]]
        detail = f"{len(failed)} failed: {failed[0]}" + "".join(f"; {o}" for o in others)
        return Outcome(mutant, "killed", detail, seconds)
    if proc.returncode == 0:
        return Outcome(mutant, "survived", "every smoke test passed", seconds)
    tail = (proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
    return Outcome(mutant, "error", f"pytest exited {proc.returncode}: {tail[0][:200]}", seconds)


def run_all(
    mutants: list[Mutant],
    root: Path,
    results: Path,
    pytest_args: list[str],
    echo: Callable[[str], None] = print,
    cleanup: Callable[[Mutant], None] | None = None,
    jobs: int = 1,
) -> list[Outcome]:
    """Run every mutant, ``jobs`` at a time (each is one image build and one guest:
    an x86-64 guest is one TCG thread, so two fit a 2-core host).  Lines are printed
    as mutants finish; the outcomes come back in the given order."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, not {jobs}")
    results.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def one(mutant: Mutant) -> Outcome:
        outcome = run_one(mutant, root, results, pytest_args)
        if cleanup is not None:
            cleanup(mutant)
        return outcome

    done: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, m) for m in mutants]
        for future in as_completed(futures):
            outcome = future.result()
            done[outcome.mutant.name] = outcome
            echo(outcome.line())
    outcomes = [done[m.name] for m in mutants]
    killed = sum(o.status == "killed" for o in outcomes)
    echo(f"{killed} of {len(outcomes)} mutants killed ({time.monotonic() - started:.0f}s)")
    return outcomes
