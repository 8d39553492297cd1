#!/usr/bin/env python3
"""The emulator's int3 fault, by measurement: boots the QEMU test image N times
under each TCG setting and prints, side by side, how many boots saw the fault
(or any kernel panic) and the median and maximum time to "demo app healthy".

Candidates (all TCG; KVM is never used here, docs/testing.md):

  mttcg-2cpu      today's command line: -accel tcg -smp 2 (one host thread per vCPU)
  single-2cpu     -accel tcg,thread=single -smp 2 (both vCPUs on one host thread)
  mttcg-1cpu      -accel tcg -smp 1 (the harness's default for x86-64 guests since)
  trixie-2cpu     Debian trixie's QEMU, -accel tcg -smp 2, run from a trixie tree
                  (mmdebstrap) through that tree's own dynamic loader, the host
                  unchanged (--trixie-qemu DIR; --make-trixie-qemu makes it)

Boots are interleaved (candidate 1, 2, 3, ..., then again), so that a change in
the machine's load falls on every candidate alike.  "Healthy" is the first
HTTP 200 of the demo app's health endpoint, measured from the host through the
published port, counted from QEMU's start.  A fault is a console line
"Oops: int3" (the emulator's fault) or "Kernel panic"; a boot that saw one is
still timed if it became healthy (the kernel's panic=10 restarts it).

    sudo .venv/bin/python benchmarks/tcg_fault_benchmark.py --boots 20
    sudo .venv/bin/python benchmarks/tcg_fault_benchmark.py --boots 5 --only single-2cpu --only mttcg-2cpu

It is a script, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from edgecontainers.qemu.qemuboot import find_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.qemu.vm import GuestError, VMConfig
from edgecontainers.testimage.builder import MIRROR, Builder, ImageSpec

REPO = Path(__file__).resolve().parents[1]
TRIXIE_QEMU = Path("/var/cache/edgecontainers/qemu-trixie")


@dataclass
class Candidate:
    name: str
    accel: str = "tcg"
    smp: int = 2
    binary: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None  # -L (firmware, option ROMs) of another QEMU build

    def apply(self, cfg: VMConfig) -> VMConfig:
        cfg.accel, cfg.smp, cfg.binary = self.accel, self.smp, self.binary
        if self.data_dir:
            cfg.extra += ["-L", self.data_dir]
        return cfg


@dataclass
class Row:
    candidate: Candidate
    seconds: list[float] = field(default_factory=list)
    faulted: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)


def make_trixie_qemu(root: Path) -> None:
    """A trixie tree with qemu-system-x86 (no chroot needed to run it)."""
    root.mkdir(parents=True, exist_ok=True)
    tar = root / "root.tar"
    subprocess.run(
        ["mmdebstrap", "--mode=unshare", "--variant=essential", "--include=qemu-system-x86",
         "trixie", str(tar), MIRROR],
        check=True,
    )  # fmt: skip
    tree = root / "tree"
    tree.mkdir(exist_ok=True)
    subprocess.run(["tar", "-C", str(tree), "-xf", str(tar)], check=True)
    tar.unlink()


def trixie_candidate(root: Path) -> Candidate:
    tree = root / "tree"
    loader = tree / "usr/lib64/ld-linux-x86-64.so.2"
    libs = [tree / "usr/lib/x86_64-linux-gnu", tree / "lib/x86_64-linux-gnu"]
    binary = [str(loader), "--library-path", ":".join(map(str, libs)), str(tree / "usr/bin/qemu-system-x86_64")]
    version = subprocess.run([*binary, "--version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    env = {"QEMU_MODULE_DIR": str(tree / "usr/lib/x86_64-linux-gnu/qemu")}
    return Candidate(f"trixie-2cpu ({version})", binary=binary, env=env, data_dir=str(tree / "usr/share/qemu"))


class BenchSession(Session):
    candidate: Candidate

    def vm_config(self) -> VMConfig:
        return self.candidate.apply(super().vm_config())


def healthy_after(session: Session, started: float, limit: float) -> float | None:
    url = f"http://127.0.0.1:{session.app_port}/cgi-bin/health"
    while time.monotonic() - started < limit:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(1)
    return None


def one_boot(target: BootTarget, cand: Candidate, boot: str, n: int, row: Row, limit: float) -> None:
    log = REPO / "build" / "benchmarks" / f"tcg-{cand.name.split()[0]}-{n}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    old_env = {k: os.environ.get(k) for k in cand.env}
    os.environ.update(cand.env)
    session = BenchSession(target, boot=boot, log_path=log)
    session.candidate = cand
    try:
        session.start()
        started = session.vm.started_at if session.vm and session.vm.started_at else time.monotonic()
        try:
            session.wait_ready(limit)
            seconds = healthy_after(session, started, limit)
        except GuestError as exc:
            seconds = None
            row.notes.append(f"boot {n}: {exc.short}")
        faults = len(session.tee.emulator_faults) + len(session.tee.panics)
        if faults:
            row.faulted += 1
            row.notes.append(f"boot {n}: " + (session.tee.emulator_faults or [p for _, p in session.tee.panics])[0])
        if seconds is None:
            row.failed += 1
        else:
            row.seconds.append(seconds)
        session.poweroff(60)
    finally:
        session.close()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boots", type=int, default=20, help="boots per candidate (default 20)")
    parser.add_argument("--boot", choices=("direct", "grub"), default="direct", help="boot path (default direct)")
    parser.add_argument("--only", action="append", metavar="NAME", help="only these candidates (repeatable)")
    parser.add_argument("--trixie-qemu", type=Path, default=TRIXIE_QEMU, help="trixie QEMU tree (see --make-...)")
    parser.add_argument("--make-trixie-qemu", action="store_true", help="make the trixie QEMU tree first")
    parser.add_argument("--limit", type=float, default=600, help="seconds a boot may take to be healthy")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()

    if args.make_trixie_qemu:
        make_trixie_qemu(args.trixie_qemu)
    candidates = [Candidate("mttcg-2cpu"), Candidate("single-2cpu", accel="tcg,thread=single"),
                  Candidate("mttcg-1cpu", smp=1)]  # fmt: skip
    if (args.trixie_qemu / "tree").is_dir():
        candidates.append(trixie_candidate(args.trixie_qemu))
    if args.only:
        candidates = [c for c in candidates if c.name.split()[0] in args.only]
        if not candidates:
            parser.error("--only matched no candidate")
    image = Builder().build(ImageSpec(engine="podman", variant="production"))
    target = BootTarget.from_qemuboot(find_qemuboot(image.qemuboot))
    rows = [Row(c) for c in candidates]
    load = os.getloadavg()
    t0 = time.monotonic()
    for n in range(1, args.boots + 1):
        for row in rows:
            one_boot(target, row.candidate, args.boot, n, row, args.limit)
            done = row.seconds[-1] if row.seconds else float("nan")
            print(f"  boot {n:2d} {row.candidate.name:<28} healthy {done:6.1f} s  faults so far {row.faulted}",
                  flush=True)  # fmt: skip
    print(f"\nTCG fault benchmark: {image.spec.name}, boot path {args.boot}, {args.boots} boots per candidate, "
          f"{os.cpu_count()} CPUs, load {load[0]:.2f} at start, {time.monotonic() - t0:.0f} s in all")  # fmt: skip
    print(f"  {'candidate':<40} {'boots':>5} {'faulted':>7} {'failed':>6} {'median s':>9} {'max s':>7}")
    figures = {}
    for row in rows:
        med = statistics.median(row.seconds) if row.seconds else float("nan")
        top = max(row.seconds) if row.seconds else float("nan")
        boots = len(row.seconds) + row.failed
        print(f"  {row.candidate.name:<40} {boots:>5} {row.faulted:>7} {row.failed:>6} {med:>9.1f} {top:>7.1f}")
        figures[row.candidate.name] = {"boots": boots, "faulted": row.faulted, "failed": row.failed,
                                       "median_s": med, "max_s": top, "notes": row.notes}  # fmt: skip
    for row in rows:
        for note in row.notes:
            print(f"  {row.candidate.name}: {note}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
