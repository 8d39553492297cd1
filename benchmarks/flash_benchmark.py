#!/usr/bin/env python3
"""Flash benchmark: ``edgectl flash`` against ``dd bs=4M conv=fsync``, side by side.

Makes a sparse image (default 4 GiB holding ~600 MiB of random data in 24
chunks spread over it) and its block map, then writes it, one run each, onto a
fresh loop device over a new sparse file:

  dd bs=4M conv=fsync          every byte of the image
  edgectl flash                bmaptool with the block map, then read-back verification
  edgectl flash --no-verify    bmaptool with the block map only

For each it reports the wall time and the bytes written: what the loop device
received (sectors written in /sys/block/loopN/stat) and what the target file
ended up allocating.  Page caches are dropped before each run so the image is
read from disk every time.  After each run the device is compared with the
image (cmp, not timed).

Needs root (loop devices, drop_caches), bmaptool, losetup and cmp.  Run it
with the Python that has edgecontainers installed:

    sudo /path/to/venv/bin/python benchmarks/flash_benchmark.py [--size-gib 4] [--data-mib 600]

It is a script, not a test.
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
from dataclasses import asdict, dataclass
from pathlib import Path

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass
class Result:
    method: str
    seconds: float
    device_bytes_written: int
    target_allocated_bytes: int
    identical: bool


def sh(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], check=True, text=True, capture_output=True, **kwargs)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def make_image(path: Path, size: int, data: int, chunks: int = 24) -> None:
    chunk = data // chunks
    stride = size // chunks
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(chunks):
            f.seek(i * stride)
            left = chunk
            while left > 0:
                n = min(left, MiB)
                f.write(os.urandom(n))
                left -= n
    sh("bmaptool", "create", "-o", path.with_name(path.name + ".bmap"), path)


def sectors_written(dev: str) -> int:
    fields = Path(f"/sys/block/{Path(dev).name}/stat").read_text().split()
    return int(fields[6])


def one_run(method: str, cmd: list[str], image: Path, workdir: Path, size: int) -> Result:
    target = workdir / f"target-{method.split()[0]}.img"
    with open(target, "wb") as f:
        f.truncate(size)
    dev = sh("losetup", "--find", "--show", target).stdout.strip()
    try:
        drop_caches()
        before = sectors_written(dev)
        argv = [c.replace("{DEV}", dev) for c in cmd]
        start = time.monotonic()
        proc = subprocess.run(argv, text=True, capture_output=True, check=False)
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            raise SystemExit(f"{method} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        written = (sectors_written(dev) - before) * 512
        identical = (
            subprocess.run(["cmp", "-s", "-n", str(size), str(image), dev], check=False).returncode == 0
        )
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
    allocated = target.stat().st_blocks * 512
    target.unlink()
    return Result(method, seconds, written, allocated, identical)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size-gib", type=float, default=4.0, help="image size in GiB (default: %(default)s)"
    )
    parser.add_argument(
        "--data-mib", type=int, default=600, help="data in the image in MiB (default: %(default)s)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("/var/tmp"), help="where the files go (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("flash_benchmark: needs root (loop devices, drop_caches)", file=sys.stderr)
        return 2
    for tool in ("bmaptool", "losetup", "cmp", "dd"):
        if not shutil.which(tool):
            print(f"flash_benchmark: {tool} is missing", file=sys.stderr)
            return 2

    size = int(args.size_gib * GiB) // 4096 * 4096
    data = args.data_mib * MiB
    with tempfile.TemporaryDirectory(prefix="flash-bench-", dir=args.workdir) as tmp_s:
        tmp = Path(tmp_s)
        image = tmp / "edgecontainers-image-bench.rootfs.wic"
        print(f"making a {human(size)} sparse image with {human(data)} of data in {tmp} ...", flush=True)
        make_image(image, size, data)
        edgectl = [sys.executable, "-m", "edgecontainers", "flash", "--yes", "--allow-non-removable"]
        runs = [
            ("dd bs=4M conv=fsync", ["dd", f"if={image}", "of={DEV}", "bs=4M", "conv=fsync", "status=none"]),
            ("edgectl flash", [*edgectl, str(image), "{DEV}"]),
            ("edgectl flash --no-verify", [*edgectl, "--no-verify", str(image), "{DEV}"]),
        ]
        results = []
        for method, cmd in runs:
            print(f"running {method} ...", flush=True)
            results.append(one_run(method, cmd, image, tmp, size))

    print()
    print(f"image: {human(size)} sparse, {human(data)} of data; target: loop device over a sparse file")
    header = f"{'method':<28}{'wall time':>11}{'written to device':>20}{'target allocated':>19}  identical"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.method:<28}{r.seconds:>10.1f}s{human(r.device_bytes_written):>20}"
            f"{human(r.target_allocated_bytes):>19}  {'yes' if r.identical else 'NO'}"
        )
    dd, ours = results[0], results[1]
    print(
        f"\ndd / edgectl flash: {dd.seconds / ours.seconds:.1f}x the wall time, "
        f"{dd.device_bytes_written / max(ours.device_bytes_written, 1):.1f}x the bytes written"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"size": size, "data": data, "results": [asdict(r) for r in results]}, indent=2)
        )
    return 0 if all(r.identical for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
