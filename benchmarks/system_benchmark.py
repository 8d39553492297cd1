#!/usr/bin/env python3
"""System test benchmark: test image build time, boot-to-ready per boot path,
and the time of the whole QEMU suite.

Measures, each once, on this machine:

  image build, cold     empty cache (a temporary XDG_CACHE_HOME): mmdebstrap,
                        layer files, preload boot, disk assembly   (--cold)
  image build, warm     the cache holds the image: the cache lookup
  image rebuild         the layer changed (a copy with one file edited), the
                        Debian base is cached: layer files, preload boot, disk
  boot to ready         spawn of QEMU until SSH answers and
                        'systemctl is-system-running --wait' returns, per boot
                        path: OVMF+GRUB and direct kernel
  whole suite           'pytest tests/system -m "qemu and not ota"' as
                        scripts/run-tests runs it                  (--suite)

Needs what the system tests need (root, mmdebstrap, qemu, ...; see
docs/testing.md).  Run it with the Python that has edgecontainers installed:

    sudo .venv/bin/python benchmarks/system_benchmark.py [--cold] [--suite]

It is a script, not a test.  All QEMU runs use TCG (-accel tcg).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgecontainers.qemu.qemuboot import find_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.testimage.builder import Builder, ImageSpec, cache_root
from edgecontainers.testimage.layer import default_layer

REPO = Path(__file__).resolve().parents[1]


def timed(fn, *args, **kwargs):
    t = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - t


def cold_build(spec: ImageSpec) -> float:
    with tempfile.TemporaryDirectory(prefix="edgecontainers-cold-") as tmp:
        env_before = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = tmp
        try:
            _, seconds = timed(Builder(Path(tmp) / "edgecontainers" / "testimage").build, spec)
        finally:
            if env_before is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = env_before
    return seconds


def rebuild_after_layer_change(builder: Builder, spec: ImageSpec) -> float:
    with tempfile.TemporaryDirectory(prefix="edgecontainers-layer-") as tmp:
        layer = Path(tmp) / "meta-edgecontainers"
        shutil.copytree(default_layer(), layer)
        version = layer / "recipes-demo/edgecontainers-demo/files/version"
        version.write_text(f"bench-{time.time():.0f}\n")  # a new key every run
        changed = ImageSpec(spec.machine, spec.engine, spec.variant, layer=layer, tag="benchmark")
        image, seconds = timed(builder.build, changed)
        shutil.rmtree(image.directory, ignore_errors=True)
    return seconds


def boot_to_ready(image, boot: str) -> tuple[float, str]:
    target = BootTarget.from_qemuboot(find_qemuboot(image.qemuboot))
    log = REPO / "build" / "test-results" / "console" / f"benchmark-{boot}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with Session(target, boot=boot, log_path=log) as session:
        state = session.wait_ready(900)
        seconds = session.boot_seconds or 0.0
        session.poweroff(90)
    return seconds, state


def whole_suite() -> tuple[float, int]:
    cmd = [sys.executable, "-m", "pytest", "tests/system", "-m", "qemu and not ota", "-q", "-p", "no:cacheprovider"]
    t = time.monotonic()
    rc = subprocess.call(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.monotonic() - t, rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="also build once with an empty cache (minutes)")
    parser.add_argument("--suite", action="store_true", help="also time the whole system suite (many minutes)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()

    spec = ImageSpec(engine="podman", variant="production")
    builder = Builder()
    rows: list[tuple[str, str]] = []
    figures: dict[str, float | str] = {}

    load = os.getloadavg()
    rows.append(("host", f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start"))
    if args.cold:
        seconds = cold_build(spec)
        figures["build_cold_s"] = seconds
        rows.append(("image build, cold (empty cache)", f"{seconds:7.1f} s"))
    image, seconds = timed(builder.build, spec)  # makes sure the image is cached
    image, seconds = timed(builder.build, spec)
    figures["build_warm_s"] = seconds
    rows.append(("image build, warm (cached)", f"{seconds:7.1f} s"))
    seconds = rebuild_after_layer_change(builder, spec)
    figures["rebuild_layer_changed_s"] = seconds
    rows.append(("image rebuild, layer changed (base cached)", f"{seconds:7.1f} s"))
    for boot in ("grub", "direct"):
        seconds, state = boot_to_ready(image, boot)
        figures[f"boot_{boot}_s"] = seconds
        figures[f"boot_{boot}_state"] = state
        label = "OVMF+GRUB" if boot == "grub" else "direct kernel"
        rows.append((f"boot to ready, {label}", f"{seconds:7.1f} s ({state})"))
    if args.suite:
        seconds, rc = whole_suite()
        figures["suite_s"] = seconds
        figures["suite_rc"] = rc
        rows.append(("whole system suite (qemu and not ota)", f"{seconds:7.1f} s (pytest exit {rc})"))

    width = max(len(r[0]) for r in rows)
    print(f"system benchmark ({image.spec.name}; cache {cache_root()})")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
