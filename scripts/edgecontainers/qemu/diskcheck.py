"""The guest's filesystems checked from the host while QEMU is off (after a power
cut): the disk overlay is copied to a raw file, each named GPT partition is cut
out of it, its journal replayed the way the kernel replays it at mount
(``e2fsck -E journal_only``), then ``e2fsck -fn`` must find nothing.

The copy is checked, not the overlay: the next boot sees the disk as the cut
left it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgeError
from ..tools import run


@dataclass(frozen=True)
class Fsck:
    partition: str
    replay_rc: int  # e2fsck -E journal_only: 0 nothing to do, 1 replayed
    rc: int  # e2fsck -fn: 0 clean
    output: str

    @property
    def clean(self) -> bool:
        return self.replay_rc in (0, 1) and self.rc == 0


def partitions(raw: Path) -> dict[str, tuple[int, int]]:
    """GPT partition name -> (offset, size) in bytes, from ``sfdisk --json``."""
    proc = run(["sfdisk", "--json", raw], capture=True, check=False)
    if proc.returncode != 0:
        raise EdgeError(f"{raw}: no partition table sfdisk can read: {proc.stdout.strip()[-200:]}")
    table = json.loads(proc.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    return {
        p["name"]: (int(p["start"]) * sector, int(p["size"]) * sector)
        for p in table.get("partitions", [])
        if p.get("name")
    }


def fsck_partitions(disk: Path, names: Sequence[str], work: Path, *, disk_format: str = "qcow2") -> list[Fsck]:
    """Check the ext4 partitions ``names`` of ``disk`` (QEMU must not be running)."""
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "disk.raw"
    run(["qemu-img", "convert", "-f", disk_format, "-O", "raw", disk, raw], capture=True)
    try:
        table = partitions(raw)
        missing = [n for n in names if n not in table]
        if missing:
            raise EdgeError(f"{disk}: no partition named {', '.join(missing)} (has {', '.join(table)})")
        results = []
        for name in names:
            offset, size = table[name]
            part = work / f"{name}.ext4"
            run(["dd", f"if={raw}", f"of={part}", "bs=4M", "iflag=skip_bytes,count_bytes", f"skip={offset}",
                 f"count={size}", "conv=sparse", "status=none"], capture=True)  # fmt: skip
            replay = run(["e2fsck", "-E", "journal_only", "-y", part], capture=True, check=False)
            check = run(["e2fsck", "-fn", part], capture=True, check=False)
            results.append(
                Fsck(name, replay.returncode, check.returncode, (replay.stdout or "") + (check.stdout or ""))
            )
            part.unlink()
        return results
    finally:
        raw.unlink(missing_ok=True)
