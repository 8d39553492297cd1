"""``edgectl flash`` without root: images, block maps, verification, the sysfs view,
and the refusals that need no block device.  The loop-device tests are in
test_flash_devices.py."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
from fakes.helpers import edgectl, error_line, fake_bin, records, run, write_random

from edgecontainers import flashing
from edgecontainers.blockdev import Inspector, SystemPaths, _unescape_mount
from edgecontainers.errors import CommandFailed, Interrupted, UsageError
from edgecontainers.images import find_bmap, inspect_image, parse_bmap

MiB = 1024 * 1024
CHUNKS = [(1 * MiB, 512 * 1024), (9 * MiB + 4096, 300_000), (15 * MiB, MiB)]
needs_bmaptool = pytest.mark.skipif(
    not shutil.which("bmaptool"), reason="needs bmaptool (apt install bmap-tools)"
)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A 16 MiB sparse raw image with three data chunks and its real bmap."""
    img = tmp_path / "disk.wic"
    write_random(img, 16 * MiB, CHUNKS)
    if shutil.which("bmaptool"):
        run("bmaptool", "create", "-o", tmp_path / "disk.wic.bmap", img)
    return img


@pytest.fixture
def fake_bmaptool(tmp_path: Path) -> dict[str, str]:
    bindir = fake_bin(tmp_path / "fakebin", bmaptool="bmaptool")
    return {
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_BMAPTOOL_LOG": str(tmp_path / "bmaptool.log"),
    }


# -- images and block maps ------------------------------------------------------


def test_find_bmap_looks_where_bmaptool_looks(tmp_path):
    img = tmp_path / "x.rootfs.wic.zst"
    img.write_bytes(b"")
    assert find_bmap(img) is None
    (tmp_path / "x.rootfs.wic.bmap").write_text("")
    assert find_bmap(img) == tmp_path / "x.rootfs.wic.bmap"
    (tmp_path / "x.rootfs.wic.zst.bmap").write_text("")
    assert find_bmap(img) == tmp_path / "x.rootfs.wic.zst.bmap"


@needs_bmaptool
def test_parse_bmap_of_a_real_bmap(image):
    bmap = parse_bmap(image.with_name("disk.wic.bmap"))
    assert bmap.image_size == 16 * MiB
    assert bmap.block_size == 4096
    assert bmap.checksum_type == "sha256"
    data = sum(length for _, length in CHUNKS)
    # mapped bytes: the data, rounded out to whole 4 KiB blocks
    assert data <= bmap.mapped_bytes < data + 2 * 4096 * len(CHUNKS)
    assert all(r.checksum and len(r.checksum) == 64 for r in bmap.ranges)


def test_parse_bmap_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.bmap"
    bad.write_text("<html></html>")
    with pytest.raises(UsageError, match="not a block map"):
        parse_bmap(bad)
    bad.write_text("<bmap version='2.0'><ImageSize>x</ImageSize></bmap>")
    with pytest.raises(UsageError, match="ImageSize"):
        parse_bmap(bad)


@needs_bmaptool
def test_compressed_image_size_comes_from_the_bmap(image):
    gz = image.with_name("disk.wic.gz")
    gz.write_bytes(gzip.compress(image.read_bytes()))
    info = inspect_image(gz)
    assert info.compression == "gzip"
    assert info.bmap is not None and info.bmap.path.name == "disk.wic.bmap"
    assert info.size == 16 * MiB
    assert info.file_size == gz.stat().st_size


def test_compressed_image_without_bmap_is_measured(image):
    gz = image.with_name("plain.img.gz")
    gz.write_bytes(gzip.compress(image.read_bytes()))
    info = inspect_image(gz)
    assert info.bmap is None and info.size == 16 * MiB


@needs_bmaptool
def test_a_bmap_of_another_image_is_rejected(image, tmp_path):
    other = tmp_path / "other.wic"
    write_random(other, 8 * MiB, [(0, 4096)])
    with pytest.raises(UsageError, match="belongs to another image"):
        inspect_image(other, bmap=image.with_name("disk.wic.bmap"))


def test_name_and_content_must_agree(image, tmp_path):
    fake_zst = tmp_path / "disk.wic.zst"
    shutil.copy(image, fake_zst)
    with pytest.raises(UsageError, match="the name says zstd but the content is not compressed"):
        inspect_image(fake_zst)
    hidden_gz = tmp_path / "disk.img"
    hidden_gz.write_bytes(gzip.compress(b"x" * 100))
    with pytest.raises(UsageError, match="content is gzip"):
        inspect_image(hidden_gz)


@pytest.mark.parametrize("name", ["disk.tar.gz", "disk.zip", "disk.wic.lz4"])
def test_archives_are_rejected(tmp_path, name):
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(UsageError, match="not supported"):
        inspect_image(tmp_path / name)


# -- the command line, with targets that are not block devices -----------------


@needs_bmaptool
@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("file", "it is not a block device (a regular file)"),
        ("dir", "it is not a block device (a directory)"),
        ("missing", "it does not exist"),
        ("/dev/null", "it is not a block device (a character device)"),
    ],
)
def test_targets_that_are_not_block_devices_are_refused(image, tmp_path, fake_bmaptool, target, reason):
    paths = {"file": tmp_path / "target.img", "dir": tmp_path, "missing": tmp_path / "sdz"}
    dest = paths.get(target, Path(target))
    if target == "file":
        dest.write_bytes(b"\0" * 1024)
    line = error_line(edgectl("flash", "--yes", image, dest, env=fake_bmaptool), 1)
    assert line == f"edgectl: error: refusing to write to {dest}: {reason}"
    assert records(Path(fake_bmaptool["FAKE_BMAPTOOL_LOG"])) == []
    if target == "file":
        assert dest.read_bytes() == b"\0" * 1024


def test_missing_image_is_a_usage_error(tmp_path):
    line = error_line(edgectl("flash", tmp_path / "nope.wic.zst", "/dev/sdz"), 2)
    assert "does not exist" in line


def test_bmap_and_nobmap_exclude_each_other(image):
    proc = edgectl("flash", "--bmap", "x.bmap", "--nobmap", image, "/dev/sdz")
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_missing_bmaptool_is_a_configuration_error(image, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = edgectl("flash", image, tmp_path / "t", env={"PATH": str(empty)})
    line = error_line(proc, 2)
    assert "'bmaptool' is not installed" in line
    assert "apt install bmap-tools" in proc.stderr


# -- writing and verifying (regular files stand in for the device) -------------


@needs_bmaptool
def test_bmaptool_command_uses_the_bmap_or_nobmap(image, tmp_path):
    with_bmap = inspect_image(image)
    assert flashing.bmaptool_command(with_bmap, Path("/dev/sdz")) == [
        "bmaptool", "copy", "--bmap", str(image.with_name("disk.wic.bmap")), str(image), "/dev/sdz",
    ]  # fmt: skip
    without = inspect_image(image, use_bmap=False)
    assert flashing.bmaptool_command(without, Path("/dev/sdz"), check_image=False) == [
        "bmaptool", "copy", "--nobmap", "--no-verify", str(image), "/dev/sdz",
    ]  # fmt: skip


def test_write_runs_bmaptool_and_a_failure_says_the_device_is_partly_written(
    image, fake_bmaptool, monkeypatch
):
    for key, value in fake_bmaptool.items():
        monkeypatch.setenv(key, value)
    info = inspect_image(image, use_bmap=False)
    flashing.write(info, Path("/dev/sdz"))
    assert records(Path(fake_bmaptool["FAKE_BMAPTOOL_LOG"])) == [
        {"argv": ["copy", "--nobmap", str(image), "/dev/sdz"]}
    ]
    monkeypatch.setenv("FAKE_BMAPTOOL_EXIT", "1")
    with pytest.raises(CommandFailed) as exc:
        flashing.write(info, Path("/dev/sdz"))
    assert "partly written" in (exc.value.hint or "")


def test_ctrl_c_while_writing_says_the_device_is_partly_written(image, fake_bmaptool, monkeypatch):
    for key, value in fake_bmaptool.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FAKE_BMAPTOOL_SLEEP", "30")
    info = inspect_image(image, use_bmap=False)
    # Ctrl-C as in a terminal: a runner started in the background (sh's "cmd &")
    # passes SIGINT on ignored, and Python then installs no handler for it
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(Interrupted, match="/dev/sdz is only partly written") as exc:
            flashing.write(info, Path("/dev/sdz"))
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert exc.value.exit_code == 130


def _copy_to(src: Path, dest: Path, size: int) -> None:
    dest.write_bytes(src.read_bytes()[:size])
    with open(dest, "r+b") as f:
        f.truncate(size + 4 * MiB)  # the "device" is bigger than the image


@needs_bmaptool
def test_verify_with_bmap_checksums_reads_back_and_catches_a_changed_byte(image, tmp_path):
    info = inspect_image(image)
    dev = tmp_path / "device"
    _copy_to(image, dev, info.size)
    assert flashing.verify(info, dev) == info.bmap.mapped_bytes
    # a byte outside the mapped blocks does not matter: bmaptool never writes there
    with open(dev, "r+b") as f:
        f.seek(12 * MiB)
        f.write(b"\xff")
    assert flashing.verify(info, dev) == info.bmap.mapped_bytes
    # a byte inside the data does
    with open(dev, "r+b") as f:
        f.seek(9 * MiB + 4096 + 1000)
        f.write(b"\xff")
    with pytest.raises(flashing.VerifyFailed, match="sha256 mismatch"):
        flashing.verify(info, dev)


def test_verify_without_bmap_compares_every_byte_of_a_compressed_image(image, tmp_path):
    gz = tmp_path / "full.img.gz"
    gz.write_bytes(gzip.compress(image.read_bytes()))
    info = inspect_image(gz)
    dev = tmp_path / "device"
    _copy_to(image, dev, info.size)
    progress: list[tuple[int, int]] = []
    assert flashing.verify(info, dev, progress=lambda d, t: progress.append((d, t))) == 16 * MiB
    assert progress[-1] == (16 * MiB, 16 * MiB)
    with open(dev, "r+b") as f:
        f.seek(12 * MiB + 7)  # a hole in the image: without a bmap it is written, so it counts
        f.write(b"\x01")
    with pytest.raises(flashing.VerifyFailed, match=f"differs from the image at byte {12 * MiB + 7}"):
        flashing.verify(info, dev)


# -- the kernel's view, from a fake sysfs ---------------------------------------


def _fake_sys(tmp_path: Path) -> SystemPaths:
    """sda: USB stick with sda1 mounted; mmcblk0: SD card (removable=0, type SD);
    sdb: SATA disk with LVM on sdb1; sr0: removable flag."""
    sys_root = tmp_path / "sys"
    devices = sys_root / "devices"
    layout = {
        "sda": ("pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sda", "8:0", "0"),
        "mmcblk0": ("platform/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0", "179:0", "0"),
        "sdb": ("pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sdb", "8:16", "0"),
        "sr0": ("pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0/block/sr0", "11:0", "1"),
        "dm-0": ("virtual/block/dm-0", "254:0", "0"),
    }
    (sys_root / "class" / "block").mkdir(parents=True)
    (sys_root / "dev" / "block").mkdir(parents=True)
    for name, (path, devno, removable) in layout.items():
        d = devices / path
        (d / "holders").mkdir(parents=True)
        (d / "removable").write_text(removable + "\n")
        (d / "size").write_text("1000\n")
        (sys_root / "class" / "block" / name).symlink_to(d)
        (sys_root / "dev" / "block" / devno).symlink_to(d)
    (devices / layout["mmcblk0"][0]).joinpath("device").mkdir()
    (devices / layout["mmcblk0"][0] / "device" / "type").write_text("SD\n")
    for disk, part, devno in (("sda", "sda1", "8:1"), ("sdb", "sdb1", "8:17")):
        d = devices / layout[disk][0] / part
        (d / "holders").mkdir(parents=True)
        (d / "partition").write_text("1\n")
        (sys_root / "class" / "block" / part).symlink_to(d)
        (sys_root / "dev" / "block" / devno).symlink_to(d)
    (devices / layout["sdb"][0] / "sdb1" / "holders" / "dm-0").symlink_to(devices / layout["dm-0"][0])
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/root rw\n"
        "40 22 8:1 / /media/me/BOOT\\040DISK rw shared:2 - vfat /dev/sda1 rw\n"
    )
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n")
    return SystemPaths(sys=sys_root, mountinfo=mountinfo, swaps=swaps)


def test_removable_detection(tmp_path):
    ins = Inspector(_fake_sys(tmp_path))
    assert ins.removable("sda") == (True, "USB")
    assert ins.removable("mmcblk0") == (True, "SD card")
    assert ins.removable("sr0") == (True, "removable media")
    assert ins.removable("sdb") == (False, "")


def test_family_mounts_and_partitions(tmp_path):
    ins = Inspector(_fake_sys(tmp_path))
    assert ins.partitions("sda") == ["sda1"]
    assert ins.is_partition("sda1") and ins.parent_disk("sda1") == "sda"
    assert set(ins.family("sdb")) == {"sdb", "sdb1", "dm-0"}
    mounted = ins.mounted_names()
    assert [m.mountpoint for m in mounted["sda1"]] == ["/media/me/BOOT DISK"]
    assert "sdb" not in mounted


def test_mountinfo_unescaping():
    assert _unescape_mount("/media/a\\040b\\011c\\134d") == "/media/a b\tc\\d"
    assert _unescape_mount("trailing\\04") == "trailing\\04"
