"""RAUC bundles for the OTA tests, made the way the layer's bundle recipe makes them.

``edgecontainers-bundle.bb`` (through meta-rauc's ``bundle`` class) puts the
image's ext4 root filesystem into a signed bundle: format, compatible string,
version, the slot's ``fstype`` and ``adaptive`` method and any ``BUNDLE_ARGS``
are read from the recipe here, and the bundle is made with the host's
``rauc bundle`` and the test PKI whose CA the test image trusts.

The update payloads are derived from the test image's own slot image
(``rootfs.ext4``) with ``debugfs``: no mounts, no loop devices.  Bad bundles
(unsigned, signed by an unknown CA, tampered with, for another machine) are
made from genuine ones, the way they would arrive in the field.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import pki
from ..errors import ConfigError, EdgeError
from ..tools import require, run
from .layer import Layer


@dataclass(frozen=True)
class BundleSettings:
    """What edgecontainers-bundle.bb says about its bundles."""

    format: str
    compatible: str
    version: str
    slot: str
    fstype: str
    adaptive: str
    mksquashfs_args: str

    def manifest(self, *, compatible: str | None = None, version: str | None = None,
                 image: str = "rootfs.ext4", description: str = "") -> str:  # fmt: skip
        lines = [
            "[update]",
            f"compatible={compatible or self.compatible}",
            f"version={version or self.version}",
        ]
        if description:
            lines.append(f"description={description}")
        lines += ["", "[bundle]", f"format={self.format}", "", f"[image.{self.slot}]", f"filename={image}"]
        if self.adaptive:
            lines.append(f"adaptive={self.adaptive}")
        return "\n".join(lines) + "\n"


def bundle_settings(layer: Layer, recipe: str = "edgecontainers-bundle") -> BundleSettings:
    d = layer.recipe(recipe).data
    slots = (d.get("RAUC_BUNDLE_SLOTS") or "").split()
    if len(slots) != 1:
        raise ConfigError(f"{recipe}: the OTA tests handle bundles with one slot class, not {slots}")
    slot = slots[0]
    args = shlex.split(d.get("BUNDLE_ARGS") or "")
    squashfs = next((a.split("=", 1)[1] for a in args if a.startswith("--mksquashfs-args=")), "")
    return BundleSettings(
        format=d.get("RAUC_BUNDLE_FORMAT") or "plain",
        compatible=d.get("RAUC_BUNDLE_COMPATIBLE") or "",
        version=d.get("RAUC_BUNDLE_VERSION") or "",
        slot=slot,
        fstype=d.getVarFlag(f"RAUC_SLOT_{slot}", "fstype") or "ext4",
        adaptive=d.getVarFlag(f"RAUC_SLOT_{slot}", "adaptive") or "",
        mksquashfs_args=squashfs,
    )


def make_bundle(image: Path, out: Path, settings: BundleSettings, key_dir: Path, *,
                compatible: str | None = None, version: str | None = None, description: str = "",
                mksquashfs_args: str | None = None) -> Path:  # fmt: skip
    """``rauc bundle`` of one slot image, signed with the key pair in ``key_dir``."""
    require("rauc")
    require("mksquashfs")
    with tempfile.TemporaryDirectory(prefix="edgecontainers-bundle-", dir=out.parent) as tmp:
        content = Path(tmp) / "content"
        content.mkdir()
        name = f"{settings.slot}.{settings.fstype}"
        # a hard link when the filesystems allow it: rootfs images are large
        try:
            (content / name).hardlink_to(image)
        except OSError:
            shutil.copyfile(image, content / name)
        (content / "manifest.raucm").write_text(
            settings.manifest(compatible=compatible, version=version, image=name, description=description)
        )
        out.unlink(missing_ok=True)
        argv = ["rauc", "bundle", f"--cert={key_dir / pki.SIGNING_CERT}", f"--key={key_dir / pki.SIGNING_KEY}"]
        squash = settings.mksquashfs_args if mksquashfs_args is None else mksquashfs_args
        if squash:
            argv.append(f"--mksquashfs-args={squash}")
        run([*argv, str(content), str(out)], capture=True)
    return out


# ---------------------------------------------------------------- bad bundles
_DATED_CA_CONF = (
    """\
[ca]
default_ca = dated
[dated]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
copy_extensions = none
[any]
commonName = supplied
[signing]
"""
    + pki.SIGNING_EXTENSIONS
)


def dated_signer(ca_dir: Path, out_dir: Path, not_before: str, not_after: str) -> Path:
    """A key directory whose signing certificate is issued by the CA in ``ca_dir``
    but valid only from ``not_before`` to ``not_after`` (``YYYYMMDDHHMMSSZ``): an
    expired or a not yet valid signer.  ``openssl ca`` because OpenSSL 3.0's x509
    command cannot set the start date."""
    require("openssl")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ca.cnf").write_text(_DATED_CA_CONF)
    (out_dir / "index.txt").write_text("")
    (out_dir / "serial").write_text("01\n")
    key = out_dir / pki.SIGNING_KEY
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)], capture=True)
    run(["openssl", "req", "-new", "-key", str(key), "-subj", f"/O=edgecontainers/CN=test signer {not_before}",
         "-out", str(out_dir / "signing.csr")], capture=True)  # fmt: skip
    run(["openssl", "ca", "-batch", "-notext", "-config", "ca.cnf", "-extensions", "signing",
         "-cert", str(ca_dir / pki.CA_CERT), "-keyfile", str(ca_dir / pki.CA_KEY),
         "-startdate", not_before, "-enddate", not_after, "-in", "signing.csr", "-out", pki.SIGNING_CERT],
        capture=True, cwd=out_dir)  # fmt: skip
    return out_dir


def strip_signature(bundle: Path, out: Path) -> Path:
    """The bundle without its CMS signature (and the size field after it)."""
    data = bundle.read_bytes()
    (size,) = struct.unpack(">Q", data[-8:])
    if size <= 0 or size + 8 > len(data):
        raise EdgeError(f"{bundle}: no signature trailer")
    out.write_bytes(data[: len(data) - 8 - size])
    return out


def tamper(bundle: Path, out: Path, *, offset: int | None = None) -> int:
    """A copy of the bundle with one byte of its payload changed (by default in the
    middle of the squashfs image, before the signature); returns the offset."""
    data = bytearray(bundle.read_bytes())
    (size,) = struct.unpack(">Q", bytes(data[-8:]))
    payload = len(data) - 8 - size
    where = payload // 2 if offset is None else offset
    if not 0 <= where < payload:
        raise EdgeError(f"offset {where} is outside the payload of {bundle}")
    data[where] ^= 0xFF
    out.write_bytes(bytes(data))
    return where


# ---------------------------------------------------------------- payloads
def derive_rootfs(base: Path, out: Path, files: Mapping[str, tuple[bytes, int] | None]) -> Path:
    """A copy of the ext4 slot image ``base`` with ``files`` (path -> (content, mode),
    or None to remove it) changed, written with debugfs; every change is read back."""
    require("debugfs")
    run(["cp", "--sparse=always", str(base), str(out)])
    with tempfile.TemporaryDirectory(prefix="edgecontainers-rootfs-") as tmp:
        cmds: list[str] = []
        made: set[str] = set()
        for n, (path, spec) in enumerate(sorted(files.items())):
            if not path.startswith("/") or any(c in path for c in " \n\"'"):
                raise ConfigError(f"cannot write {path!r} with debugfs")
            cmds.append(f"rm {path}")
            if spec is None:
                continue
            parent = Path(path).parent
            chain = []
            while str(parent) != "/" and str(parent) not in made:
                chain.append(str(parent))
                parent = parent.parent
            for d in reversed(chain):
                cmds.append(f"mkdir {d}")
                made.add(d)
            data, mode = spec
            src = Path(tmp) / f"f{n}"
            src.write_bytes(data)
            cmds += [f"write {src} {path}", f"sif {path} mode 0{0o100000 | mode:o}",
                     f"sif {path} uid 0", f"sif {path} gid 0"]  # fmt: skip
        script = Path(tmp) / "cmds"
        script.write_text("\n".join(cmds) + "\n")
        # debugfs reports errors (an absent file to remove, an existing directory) and
        # goes on; what counts is the read-back below.
        subprocess.run(["debugfs", "-w", "-f", str(script), str(out)], capture_output=True, check=False)
    for path, spec in files.items():
        proc = subprocess.run(["debugfs", "-R", f"cat {path}", str(out)], capture_output=True, check=False)
        if spec is None:
            if proc.stdout:
                raise EdgeError(f"debugfs did not remove {path} from {out}")
        elif proc.stdout != spec[0]:
            raise EdgeError(f"debugfs did not write {path} into {out}")
    proc = subprocess.run(["e2fsck", "-fy", str(out)], capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1):
        raise EdgeError(f"e2fsck on {out} exited {proc.returncode}: {proc.stdout[-500:]}")
    return out


def small_ext4(out: Path, files: Mapping[str, bytes], size_mib: int = 8) -> Path:
    """A small ext4 image with ``files`` (relative path -> content)."""
    with tempfile.TemporaryDirectory(prefix="edgecontainers-ext4-") as tmp:
        for rel, data in files.items():
            p = Path(tmp) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        out.unlink(missing_ok=True)
        run(["truncate", "-s", f"{size_mib}M", str(out)])
        run(["mkfs.ext4", "-q", "-F", "-d", tmp, str(out)], capture=True)
    return out


def stick_image(out: Path, files: Mapping[str, Path], label: str = "EDGESTICK") -> Path:
    """An ext4 disk image holding ``files`` (name -> host file), standing in for
    the USB stick an offline update arrives on."""
    total = sum(p.stat().st_size for p in files.values())
    size_mib = total // (1 << 20) + 64 + total // (1 << 20) // 20
    with tempfile.TemporaryDirectory(prefix="edgecontainers-stick-", dir=out.parent) as tmp:
        for name, src in files.items():
            try:
                (Path(tmp) / name).hardlink_to(src)
            except OSError:
                shutil.copyfile(src, Path(tmp) / name)
        out.unlink(missing_ok=True)
        run(["truncate", "-s", f"{size_mib}M", str(out)])
        run(["mkfs.ext4", "-q", "-F", "-L", label, "-d", tmp, str(out)], capture=True)
    return out


# ---------------------------------------------------------------- block statistics
def block_hashes(image: Path, block: int = 4096) -> set[bytes]:
    """SHA-256 of every block of ``image`` (what RAUC's block-hash-index holds)."""
    hashes: set[bytes] = set()
    with image.open("rb") as f:
        while chunk := f.read(block * 256):
            for i in range(0, len(chunk), block):
                hashes.add(hashlib.sha256(chunk[i : i + block]).digest())
    return hashes


def new_blocks(old: Path, new: Path, block: int = 4096) -> tuple[int, int]:
    """(blocks of ``new`` whose content is nowhere in ``old``, blocks of ``new``)."""
    have = block_hashes(old, block)
    missing = total = 0
    with new.open("rb") as f:
        while chunk := f.read(block * 256):
            for i in range(0, len(chunk), block):
                total += 1
                if hashlib.sha256(chunk[i : i + block]).digest() not in have:
                    missing += 1
    return missing, total
