"""``edgectl flash`` on real loop devices (root): the bytes written, and every
refusal tried for real.  Refusal tests put a fake bmaptool first on PATH, so
even a missed refusal could not write; they also check the device is unchanged.
The root disk is only ever tried with --dry-run."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.helpers import Loops, edgectl, error_line, fake_bin, needs_root, records, run, write_random

pytestmark = [
    *needs_root,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("bmaptool", "losetup", "mkfs.ext4", "sfdisk", "partx")),
        reason="needs bmap-tools, util-linux, e2fsprogs and fdisk",
    ),
]

MiB = 1024 * 1024
IMAGE_SIZE = 48 * MiB
CHUNKS = [(0, 64 * 1024), (5 * MiB, 3 * MiB + 1234), (30 * MiB, 2 * MiB), (IMAGE_SIZE - 8192, 8192)]
ALLOW = "--allow-non-removable"  # loop devices are not removable


@pytest.fixture
def loops():
    manager = Loops()
    yield manager
    manager.cleanup()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "edgecontainers-image-test.rootfs.wic"
    write_random(img, IMAGE_SIZE, CHUNKS)
    run("bmaptool", "create", "-o", tmp_path / "edgecontainers-image-test.rootfs.wic.bmap", img)
    return img


@pytest.fixture
def fake_bmaptool(tmp_path: Path) -> dict[str, str]:
    bindir = fake_bin(tmp_path / "fakebin", bmaptool="bmaptool")
    return {
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_BMAPTOOL_LOG": str(tmp_path / "bmaptool.log"),
    }


def backing(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def digest(dev: str | Path) -> str:
    with open(dev, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def device_bytes(dev: str, n: int) -> bytes:
    with open(dev, "rb") as f:
        return f.read(n)


def assert_refused(proc, fake_env, dev, before, needle):
    """Refused with the expected one-line reason; bmaptool (edgectl's only writer) never
    ran; and the device is unchanged.  ``before=None`` for a mounted file system, which
    the kernel itself writes to (journal, lazy init), so its bytes prove nothing."""
    line = error_line(proc, 1)
    assert line.startswith("edgectl: error: refusing to write to") or "nothing written" in line, line
    assert needle in line, line
    assert records(Path(fake_env["FAKE_BMAPTOOL_LOG"])) == []
    if before is not None:
        assert digest(dev) == before
    return line


def mkfs(dev: str) -> None:
    run("mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev)


# -- writing ---------------------------------------------------------------------


def test_flash_writes_the_image_and_verifies(image, loops, tmp_path):
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB))
    proc = edgectl("flash", "--yes", ALLOW, image, dev)
    assert proc.returncode == 0, proc.stderr
    assert device_bytes(dev, IMAGE_SIZE) == image.read_bytes()
    assert "using bmap file" in proc.stderr  # bmaptool used the block map
    assert "verified: " in proc.stdout and f"read back from {dev} match the image" in proc.stdout


@pytest.mark.skipif(not shutil.which("zstd"), reason="needs zstd")
def test_flash_zstd_image_with_bmap(image, loops, tmp_path):
    zst = image.with_name(image.name + ".zst")
    run("zstd", "-q", "-3", image, "-o", zst)
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB))
    proc = edgectl("flash", "--yes", ALLOW, zst, dev)
    assert proc.returncode == 0, proc.stderr
    assert "using bmap file 'edgecontainers-image-test.rootfs.wic.bmap'" in proc.stderr
    assert device_bytes(dev, IMAGE_SIZE) == image.read_bytes()


def test_flash_gzip_image_without_bmap(image, loops, tmp_path):
    gz = tmp_path / "plain.img.gz"
    gz.write_bytes(gzip.compress(image.read_bytes(), compresslevel=1))
    target = backing(tmp_path, "target", 64 * MiB)
    with open(target, "r+b") as f:  # old content everywhere: without a bmap all of it is overwritten
        f.write(b"\xaa" * 64 * MiB)
    dev = loops.attach(target)
    proc = edgectl("flash", "--yes", ALLOW, "--nobmap", gz, dev)
    assert proc.returncode == 0, proc.stderr
    assert device_bytes(dev, IMAGE_SIZE) == image.read_bytes()
    assert f"verified: 48.0 MiB read back from {dev}" in proc.stdout


def test_a_write_that_did_not_happen_fails_verification(image, loops, tmp_path, fake_bmaptool):
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB))
    proc = edgectl("flash", "--yes", ALLOW, image, dev, env=fake_bmaptool)  # the fake writes nothing
    line = error_line(proc, 1)
    assert "verification failed" in line and "sha256 mismatch" in line


def test_confirmation_on_a_terminal(image, loops, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB))
    before = digest(dev)
    argv = ["-m", "edgecontainers", "flash", ALLOW, str(image), dev]
    child = pexpect.spawn(sys.executable, argv, encoding="utf-8", timeout=120)
    child.expect("Type 'yes' to write: ")
    shown = child.before
    assert "loop device over" in shown and "64.0 MiB" in shown and "NAME" in shown  # model, size, lsblk
    child.sendline("no")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "not confirmed; nothing written" in child.before
    assert digest(dev) == before

    child = pexpect.spawn(sys.executable, argv, encoding="utf-8", timeout=120)
    child.expect("Type 'yes' to write: ")
    child.sendline("yes")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "% copied" in child.before  # bmaptool's progress on the terminal
    assert "verifying: 100%" in child.before  # ours
    assert device_bytes(dev, IMAGE_SIZE) == image.read_bytes()


def test_dry_run_checks_everything_and_writes_nothing(image, loops, tmp_path, fake_bmaptool):
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB))
    before = digest(dev)
    proc = edgectl("flash", "--dry-run", ALLOW, image, dev, env=fake_bmaptool)
    assert proc.returncode == 0, proc.stderr
    assert "dry run: every check passed; would run: bmaptool copy --bmap" in proc.stdout
    assert f"dry run: nothing was written to {dev}" in proc.stdout
    assert records(Path(fake_bmaptool["FAKE_BMAPTOOL_LOG"])) == []
    assert digest(dev) == before


# -- refusals, each for real -----------------------------------------------------


def test_refuses_a_mounted_device(image, loops, tmp_path, fake_bmaptool):
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB))
    mkfs(dev)
    loops.mount(dev, tmp_path / "mnt")
    proc = edgectl("flash", "--yes", ALLOW, image, dev, env=fake_bmaptool)
    assert_refused(proc, fake_bmaptool, dev, None, f"it is mounted on {tmp_path / 'mnt'}")


def test_refuses_a_device_with_a_mounted_partition(image, loops, tmp_path, fake_bmaptool):
    target = backing(tmp_path, "target", 64 * MiB)
    run("sfdisk", "-q", target, input="label: dos\n,16M,L\n,,L\n")
    dev = loops.attach(target)
    loops.add_partitions(dev)
    mkfs(f"{dev}p2")
    loops.mount(f"{dev}p2", tmp_path / "mnt")
    before = digest(f"{dev}p1")  # p1 is not mounted: its bytes must not change
    proc = edgectl("flash", "--yes", ALLOW, image, dev, env=fake_bmaptool)
    assert_refused(proc, fake_bmaptool, f"{dev}p1", before, f"{dev}p2 is mounted on {tmp_path / 'mnt'}")


def test_refuses_a_partition_as_target(image, loops, tmp_path, fake_bmaptool):
    target = backing(tmp_path, "target", 128 * MiB)
    run("sfdisk", "-q", target, input="label: dos\n,16M,L\n,,L\n")
    dev = loops.attach(target)
    loops.add_partitions(dev)
    before = digest(f"{dev}p2")
    proc = edgectl("flash", "--yes", ALLOW, image, f"{dev}p2", env=fake_bmaptool)
    assert_refused(proc, fake_bmaptool, f"{dev}p2", before, f"it is a partition of {dev}")


def test_refuses_a_device_used_as_swap(image, loops, tmp_path, fake_bmaptool):
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB))
    run("mkswap", "-q", dev)
    try:
        loops.swapon(dev)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"swapon does not work here: {exc.stderr.strip()}")
    before = digest(dev)
    proc = edgectl("flash", "--yes", ALLOW, image, dev, env=fake_bmaptool)
    assert_refused(proc, fake_bmaptool, dev, before, "it is in use as swap")


def test_refuses_a_device_smaller_than_the_image(image, loops, tmp_path, fake_bmaptool):
    dev = loops.attach(backing(tmp_path, "small", 32 * MiB))
    before = digest(dev)
    proc = edgectl("flash", "--yes", ALLOW, image, dev, env=fake_bmaptool)
    line = assert_refused(proc, fake_bmaptool, dev, before, "it is too small")
    assert f"needs 48.0 MiB ({IMAGE_SIZE} bytes)" in line and f"has 32.0 MiB ({32 * MiB} bytes)" in line


@pytest.mark.skipif(not shutil.which("zstd"), reason="needs zstd")
def test_size_of_a_compressed_image_is_its_raw_size(image, loops, tmp_path, fake_bmaptool):
    zst = image.with_name(image.name + ".zst")
    run("zstd", "-q", image, "-o", zst)
    assert zst.stat().st_size < 16 * MiB  # the compressed file would fit ...
    dev = loops.attach(backing(tmp_path, "small", 32 * MiB))
    before = digest(dev)
    proc = edgectl("flash", "--yes", ALLOW, zst, dev, env=fake_bmaptool)
    assert_refused(proc, fake_bmaptool, dev, before, "it is too small")  # ... the image does not


def test_refuses_a_non_removable_device_without_the_flag(image, loops, tmp_path, fake_bmaptool):
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB))
    before = digest(dev)
    proc = edgectl("flash", "--yes", image, dev, env=fake_bmaptool)
    assert_refused(proc, fake_bmaptool, dev, before, "it is not a removable device")
    assert "--allow-non-removable" in proc.stderr


def test_refuses_a_read_only_device(image, loops, tmp_path, fake_bmaptool):
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB), read_only=True)
    before = digest(dev)
    proc = edgectl("flash", "--yes", ALLOW, image, dev, env=fake_bmaptool)
    assert_refused(proc, fake_bmaptool, dev, before, "it is read-only")


def test_refuses_a_device_held_open_exclusively(image, loops, tmp_path, fake_bmaptool):
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB))
    before = digest(dev)
    fd = os.open(dev, os.O_RDONLY | os.O_EXCL)
    try:
        proc = edgectl("flash", "--yes", ALLOW, image, dev, env=fake_bmaptool)
    finally:
        os.close(fd)
    assert_refused(proc, fake_bmaptool, dev, before, "it is in use by the system")


def test_refuses_without_a_terminal_and_without_yes(image, loops, tmp_path, fake_bmaptool):
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB))
    before = digest(dev)
    proc = edgectl("flash", ALLOW, image, dev, env=fake_bmaptool)  # stdin is /dev/null
    line = assert_refused(proc, fake_bmaptool, dev, before, "no terminal to ask for confirmation")
    assert "nothing written" in line and "--yes" in proc.stderr


def test_a_symlink_to_a_device_is_resolved_and_checked(image, loops, tmp_path, fake_bmaptool):
    dev = loops.attach(backing(tmp_path, "target", 64 * MiB))
    mkfs(dev)
    loops.mount(dev, tmp_path / "mnt")
    link = tmp_path / "by-id-usb-stick"
    link.symlink_to(dev)
    proc = edgectl("flash", "--yes", ALLOW, image, link, env=fake_bmaptool)
    line = assert_refused(proc, fake_bmaptool, dev, None, "it is mounted on")
    assert f"{link} (-> {dev})" in line


def _root_disk() -> tuple[str, str | None]:
    """The device of / and, when it is a partition, its disk; found with findmnt and lsblk."""
    source = run("findmnt", "-n", "-o", "SOURCE", "/").stdout.strip()
    if not source.startswith("/dev/") or not Path(source).is_block_device():
        pytest.skip(f"/ is not on a block device here ({source})")
    parent = run("lsblk", "-n", "-o", "PKNAME", source).stdout.strip()
    return source, (f"/dev/{parent}" if parent else None)


def test_refuses_the_root_disk_in_dry_run(image, fake_bmaptool):
    source, parent = _root_disk()
    for target in filter(None, (parent, source)):
        proc = edgectl("flash", "--dry-run", "--yes", ALLOW, image, target, env=fake_bmaptool)
        line = error_line(proc, 1)
        assert f"refusing to write to {target}:" in line
        assert "holds the root filesystem / of this computer" in line
        assert records(Path(fake_bmaptool["FAKE_BMAPTOOL_LOG"])) == []
