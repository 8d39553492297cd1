"""``edgectl flash``: write an image to an SD card or USB disk, safely."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from .. import flashing, tools
from ..blockdev import Disk, check_target
from ..errors import Refused, ToolMissingError
from ..images import Image, inspect_image
from ..units import human_duration, human_size

NAME = "flash"
HELP = "write an image to an SD card or USB disk, with safety checks"
DESCRIPTION = """\
Write a disk image to a removable device with bmaptool, then read it back and
verify it.

Nothing is written unless every check passes.  edgectl flash refuses, with a
one-line reason, a target that:
  - is not a block device (a regular file, a directory, a typo)
  - holds the root filesystem of this computer
  - is mounted, has a mounted partition, is used as swap, or has LVM,
    dm-crypt or RAID on it
  - is a partition rather than a whole disk
  - is read-only or has no medium
  - is not removable (USB, SD card or removable flag), unless
    --allow-non-removable
  - is smaller than the image (its raw size; from the block map for
    compressed images)
It then shows the device's model, size and partitions and asks you to type
'yes'.  --yes skips the question; with neither a terminal nor --yes it refuses.

Only the blocks that hold data are written when a block map (.bmap) lies next
to the image (x.wic.zst uses x.wic.bmap, as bmaptool does).  Compressed images
(.zst, .gz, .bz2, .xz) are decompressed on the fly.  Afterwards every written
block is read back from the device, bypassing the page cache, and compared
with the block map's checksums (or with the image itself without a block map).

examples:
  sudo edgectl flash edgecontainers-image-raspberrypi4-64.rootfs.wic.zst /dev/sdX
  edgectl flash --dry-run image.wic.zst /dev/disk/by-id/usb-SanDisk_Ultra-0:0
                                     run every check, write nothing
  edgectl flash --yes image.wic.zst /dev/mmcblk0
                                     no question (for scripts)
  edgectl flash --nobmap image.wic /dev/sdX
                                     write every byte, ignore any block map
  edgectl flash --allow-non-removable image.wic /dev/loop3
                                     a loop device or a fixed disk

exit codes: 0 written and verified, 1 refused or failed (nothing written when
refused), 2 bad arguments or a missing tool (bmaptool: apt install bmap-tools).
"""


def setup_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "image", type=Path, help="the image: .wic, .wic.zst, .wic.gz, .wic.bz2, .wic.xz, .img"
    )
    parser.add_argument("device", type=Path, help="the whole-disk device to overwrite, e.g. /dev/sdX")
    bm = parser.add_mutually_exclusive_group()
    bm.add_argument(
        "--bmap", type=Path, metavar="FILE", help="block map to use (default: found next to the image)"
    )
    bm.add_argument(
        "--nobmap", action="store_true", help="write every byte of the image, ignore any block map"
    )
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation (for scripts)")
    parser.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="run every check and show what would be written; write nothing",
    )
    parser.add_argument(
        "--allow-non-removable",
        action="store_true",
        help="also write to a device that is not removable (a fixed disk, a loop device)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the read-back comparison and bmaptool's image checksum check (faster, unsafe)",
    )


def _lsblk(disk: Disk) -> str:
    try:
        proc = tools.run(
            ["lsblk", "-o", "NAME,SIZE,TYPE,FSTYPE,LABEL,MOUNTPOINTS", str(disk.node)],
            capture=True,
            check=False,
        )
    except ToolMissingError:
        return ""
    return proc.stdout.rstrip() if proc.returncode == 0 else ""


def _show(image: Image, disk: Disk) -> None:
    print(f"image:   {image.describe()}")
    given = f"{disk.given} -> " if str(disk.given) != str(disk.node) else ""
    print(f"target:  {given}{disk.describe()}")
    table = _lsblk(disk)
    if table:
        for line in table.splitlines():
            print(f"         {line}")
    elif disk.partitions:
        print(f"         partitions: {', '.join(disk.partitions)}")
    else:
        print("         no partitions")


def _confirm(disk: Disk) -> None:
    if not sys.stdin.isatty():
        raise Refused(
            f"refusing to write to {disk.node}: no terminal to ask for confirmation; nothing written",
            hint="pass --yes to flash from a script",
        )
    print(f"\nEverything on {disk.node} ({human_size(disk.size)}) will be overwritten.", flush=True)
    try:
        answer = input("Type 'yes' to write: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() != "yes":
        raise Refused(f"not confirmed; nothing written to {disk.node}")


class _Progress:
    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        pct = 100 * done // total if total else 100
        sys.stderr.write(f"\r{self.label}: {pct:3d}% ({human_size(done)} of {human_size(total)})\033[K")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    image = inspect_image(args.image, bmap=args.bmap, use_bmap=not args.nobmap)
    tools.require("bmaptool")
    disk = check_target(args.device, image_size=image.size, allow_non_removable=args.allow_non_removable)
    _show(image, disk)
    cmd = flashing.bmaptool_command(image, disk.node, check_image=not args.no_verify)
    if args.dry_run:
        print(f"\ndry run: every check passed; would run: {subprocess.list2cmdline(cmd)}")
        print(f"dry run: nothing was written to {disk.node}")
        return 0
    if not args.yes:
        _confirm(disk)
        # The prompt may have waited a while: an automounter could have mounted it since.
        disk = check_target(args.device, image_size=image.size, allow_non_removable=args.allow_non_removable)

    print(f"\nwriting {human_size(image.bytes_to_write)} to {disk.node} with bmaptool ...", flush=True)
    seconds = flashing.write(image, disk.node, check_image=not args.no_verify)
    rate = image.bytes_to_write / seconds if seconds > 0 else 0.0
    print(
        f"wrote {human_size(image.bytes_to_write)} of {human_size(image.size)} in "
        f"{human_duration(seconds)} ({human_size(rate)}/s)",
        flush=True,
    )
    if args.no_verify:
        print(f"not verified (--no-verify); {disk.node} is synced and can be removed")
        return 0
    start = time.monotonic()
    checked = flashing.verify(image, disk.node, progress=_Progress("verifying"))
    print(
        f"verified: {human_size(checked)} read back from {disk.node} match the image "
        f"({human_duration(time.monotonic() - start)}); it can be removed"
    )
    return 0
