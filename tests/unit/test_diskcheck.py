"""qemu.diskcheck: the after-the-cut fsck of a guest disk, on a small GPT disk made here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edgecontainers.qemu import diskcheck

pytestmark = pytest.mark.skipif(
    not all(shutil.which(p) for p in ("sfdisk", "mkfs.ext4", "e2fsck", "debugfs", "qemu-img")),
    reason="needs sfdisk, e2fsprogs and qemu-img",
)
MIB = 1 << 20


def _disk(tmp_path: Path, break_data: bool) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = tmp_path / "disk.img"
    with raw.open("wb") as f:
        f.truncate(40 * MIB)
    layout = "label: gpt\nstart=2048, size=16384, name=rootfsB\nstart=18432, size=40960, name=data\n"
    subprocess.run(["sfdisk", "--quiet", str(raw)], input=layout, text=True, check=True, capture_output=True)
    for name, start, size in (("rootfsB", 1 * MIB, 8 * MIB), ("data", 9 * MIB, 20 * MIB)):
        fs = tmp_path / f"{name}.fs"
        with fs.open("wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", name, str(fs)], check=True, capture_output=True)
        (tmp_path / "f").write_text(f"a file on {name}\n")
        subprocess.run(["debugfs", "-w", "-R", f"write {tmp_path / 'f'} f", str(fs)], check=True, capture_output=True)
        if break_data and name == "data":  # a link count e2fsck must correct
            subprocess.run(["debugfs", "-w", "-R", "sif f links_count 7", str(fs)], check=True, capture_output=True)
        subprocess.run(["dd", f"if={fs}", f"of={raw}", "bs=1M", f"seek={start // MIB}", "conv=notrunc",
                        "status=none"], check=True)  # fmt: skip
    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow)], check=True)
    return qcow


def test_clean_filesystems_are_clean_and_a_broken_one_is_named(tmp_path: Path):
    clean = diskcheck.fsck_partitions(_disk(tmp_path / "a", False), ["data", "rootfsB"], tmp_path / "wa")
    assert [(r.partition, r.clean) for r in clean] == [("data", True), ("rootfsB", True)], clean
    broken = diskcheck.fsck_partitions(_disk(tmp_path / "b", True), ["data", "rootfsB"], tmp_path / "wb")
    assert [(r.partition, r.clean) for r in broken] == [("data", False), ("rootfsB", True)]
    assert broken[0].rc == 4 and "ref count is 7, should be 1" in broken[0].output, broken[0].output
    assert not list((tmp_path / "wb").iterdir()), "the copies are removed"


def test_a_partition_the_disk_does_not_have_is_an_error(tmp_path: Path):
    with pytest.raises(diskcheck.EdgeError, match="no partition named rootfsC"):
        diskcheck.fsck_partitions(_disk(tmp_path, False), ["rootfsC"], tmp_path / "w")
