"""The arm64 (qemuarm64, U-Boot) parts of the test image builder: the MBR disk
of edgecontainers-ab-uboot.wks, boot.scr made as the recipe makes it, the
kernel booti boots, and the host set-up for arm64 binaries."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import struct
import subprocess
import types
from pathlib import Path

import pytest

from edgecontainers.errors import ConfigError
from edgecontainers.testimage import builder as b
from edgecontainers.testimage.layer import Layer, default_layer

needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("mkimage", "sfdisk", "mkfs.vfat", "mkfs.ext4", "mcopy")),
    reason="needs mkimage (u-boot-tools), sfdisk, mkfs.vfat, mkfs.ext4, mtools",
)


def test_uboot_wks_partitions_are_named_by_their_role():
    wks = Layer("qemuarm64").wks()
    assert wks.ptable == "msdos"
    assert wks.names() == ["boot", "rootfsA", "rootfsB", "data"]
    assert wks.slot("rootfsB").source is None and wks.slot("rootfsA").source == "rootfs"
    # GPT: the part names
    assert Layer("qemux86-64").wks().names() == ["boot", "rootfsA", "rootfsB", "data"]


def test_the_uboot_boot_files_are_boot_scr():
    assert Layer("qemuarm64").settings["IMAGE_BOOT_FILES"] == "boot.scr"


@needs_tools
@pytest.mark.parametrize(("machine", "device"), [("qemuarm64", "virtio 0"), ("raspberrypi4-64", "mmc 0")])
def test_boot_scr_is_compiled_by_the_recipes_mkimage_command(tmp_path: Path, machine: str, device: str):
    scr = tmp_path / "boot.scr"
    rendered = b.compile_boot_script(Layer(machine), scr).decode()
    assert f"load {device}:1 " in rendered and not re.search(r"@(?:EDGECONTAINERS|KERNEL)_[A-Z0-9_]+@", rendered)
    info = subprocess.run(["mkimage", "-l", str(scr)], capture_output=True, text=True, check=True).stdout
    assert "edgecontainers A/B boot" in info and "AArch64" in info and "Script" in info, info
    # the payload is the rendered script (after the 64-byte header and the 8-byte length table)
    assert scr.read_bytes()[72:].rstrip(b"\0") == rendered.encode().rstrip(b"\0")


@needs_tools
def test_boot_scr_of_a_modified_copy(tmp_path: Path):
    layer = Layer("qemuarm64")
    copy = tmp_path / "boot.cmd.in"
    copy.write_text("echo @EDGECONTAINERS_UBOOT_DEVTYPE@ changed\n")
    assert b.compile_boot_script(layer, tmp_path / "boot.scr", source=copy) == b"echo virtio changed\n"


def test_a_recipe_that_compiles_otherwise_is_refused(tmp_path: Path):
    layer_dir = tmp_path / "meta-edgecontainers"
    shutil.copytree(default_layer(), layer_dir)
    bb = layer_dir / "recipes-bsp/edgecontainers-boot/edgecontainers-uboot-script_1.0.bb"
    bb.write_text(bb.read_text().replace("    mkimage -A", "    other-tool -A"))
    with pytest.raises(ConfigError, match="not one mkimage command"):
        b.compile_boot_script(Layer("qemuarm64", path=layer_dir), tmp_path / "boot.scr")


def _image(size: int = 4096) -> bytes:
    data = bytearray(size)
    data[0:2] = b"MZ"
    data[0x38:0x3C] = b"ARM\x64"
    data[0x40:0x48] = b"payload!"
    return bytes(data)


def test_arm64_image_plain_gzip_and_zboot(tmp_path: Path):
    plain = _image()
    (tmp_path / "plain").write_bytes(plain)
    assert b.arm64_image(tmp_path / "plain") == plain
    (tmp_path / "gz").write_bytes(gzip.compress(plain))
    assert b.arm64_image(tmp_path / "gz") == plain
    # EFI zboot: "MZ", "zimg", payload offset and size, the compression's name at 0x18
    payload = gzip.compress(plain)
    head = bytearray(0x100)
    head[0:2] = b"MZ"
    head[4:8] = b"zimg"
    struct.pack_into("<II", head, 8, len(head), len(payload))
    head[0x18:0x1C] = b"gzip"
    (tmp_path / "zboot").write_bytes(bytes(head) + payload + b"\0" * 64)
    assert b.arm64_image(tmp_path / "zboot") == plain
    (tmp_path / "other").write_bytes(b"\0" * 4096)
    with pytest.raises(b.EdgeError, match="not an arm64 Image"):
        b.arm64_image(tmp_path / "other")


@needs_tools
def test_uboot_disk_is_mbr_with_the_wks_layout(tmp_path: Path):
    """_disk for edgecontainers-ab-uboot.wks: four primary partitions at the wks
    offsets and sizes, the boot partition active vfat with boot.scr, PARTUUIDs
    from the disk signature; the slots' ext4 in place."""
    layer = Layer("qemuarm64")
    wks = layer.wks()
    rootfs = tmp_path / "rootfs.ext4"
    subprocess.run(["truncate", "-s", f"{wks.slot('rootfsA').size_mib}M", str(rootfs)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", str(rootfs)], check=True)
    ctx = types.SimpleNamespace(layer=layer, workdir=tmp_path, machine="qemuarm64")
    partuuids = b.Builder(cache=tmp_path / "cache")._disk(ctx, "0123456789abcdef", tmp_path)  # type: ignore[arg-type]
    table = json.loads(subprocess.run(["sfdisk", "--json", str(tmp_path / "disk.img")], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]  # fmt: skip
    assert table["label"] == "dos"
    parts = table["partitions"]
    assert [p["type"] for p in parts] == ["c", "83", "83", "83"]
    assert [p.get("bootable", False) for p in parts] == [True, False, False, False]
    assert [p["size"] * 512 // (1 << 20) for p in parts] == [p.size_mib for p in wks.parts]
    assert all(p["start"] * 512 % (4096 * 1024) == 0 for p in parts)  # --align 4096
    signature = table["id"].removeprefix("0x")
    assert partuuids == {name: f"{signature}-{n:02x}" for n, name in enumerate(wks.names(), 1)}
    boot = tmp_path / "boot.img"
    subprocess.run(["dd", f"if={tmp_path / 'disk.img'}", f"of={boot}", "bs=512", f"skip={parts[0]['start']}",
                    f"count={parts[0]['size']}", "status=none"], check=True)  # fmt: skip
    listing = subprocess.run(["mdir", "-b", "-i", str(boot), "::/"], capture_output=True, text=True, check=True)
    assert [Path(x).name for x in listing.stdout.split()] == ["boot.scr"]
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(boot)], capture_output=True, text=True)
    assert label.stdout.strip() == "boot"


def test_check_host_names_what_arm64_images_need(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(b.shutil, "which", lambda name: None if name in ("mkimage", "update-binfmts") else name)
    monkeypatch.setattr(b, "UBOOT_QEMU_ARM64", Path("/nonexistent/u-boot.bin"))
    missing = b.check_host("qemuarm64")
    assert "mkimage" in missing and "update-binfmts" in missing
    assert any("u-boot-qemu" in m for m in missing)
    assert not any(m in ("mkimage", "update-binfmts") for m in b.check_host("qemux86-64"))


def test_foreign_arch_needs_the_f_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "register").write_text("")
    entry = tmp_path / "qemu-aarch64"
    monkeypatch.setattr(b, "BINFMT_DIR", tmp_path)
    calls: list[list[str]] = []
    monkeypatch.setattr(b, "run", lambda argv, **kw: calls.append([str(a) for a in argv]))
    monkeypatch.setattr(b, "require", lambda name: name)
    entry.write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n")
    b.ensure_foreign_arch("arm64")
    assert calls == []
    entry.write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: P\n")
    with pytest.raises(ConfigError) as err:
        b.ensure_foreign_arch("arm64")
    assert "qemu-user-static" in (err.value.hint or "")
    entry.write_text("disabled\nflags: PF\n")
    with pytest.raises(ConfigError):
        b.ensure_foreign_arch("arm64")
    assert calls == [["update-binfmts", "--enable", "qemu-aarch64"]]
