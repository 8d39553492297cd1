"""Disk images as ``edgectl flash`` sees them: compression, block map, real size.

The block map (``.bmap``) is read as the XML file it is; bmaptool itself is
only ever run through its command line (it is GPL).
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .errors import CommandFailed, ToolMissingError, UsageError
from .units import human_size as human

log = logging.getLogger(__name__)

# extension -> (compression name, magic bytes at offset 0)
COMPRESSIONS: dict[str, tuple[str, bytes]] = {
    ".zst": ("zstd", b"\x28\xb5\x2f\xfd"),
    ".gz": ("gzip", b"\x1f\x8b"),
    ".bz2": ("bzip2", b"BZh"),
    ".xz": ("xz", b"\xfd7zXZ\x00"),
}
UNSUPPORTED_SUFFIXES = (".zip", ".tar", ".tgz", ".lz4", ".lzo", ".lzma", ".7z")
CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class BmapRange:
    first: int  # first block, inclusive
    last: int  # last block, inclusive
    checksum: str | None

    @property
    def blocks(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Bmap:
    path: Path
    version: str
    image_size: int
    block_size: int
    blocks_count: int
    mapped_blocks: int
    checksum_type: str | None
    ranges: tuple[BmapRange, ...] = field(repr=False)

    @property
    def mapped_bytes(self) -> int:
        """Bytes bmaptool writes: the mapped blocks, the last one cut at the image end."""
        total = 0
        for r in self.ranges:
            start = r.first * self.block_size
            end = min((r.last + 1) * self.block_size, self.image_size)
            total += max(0, end - start)
        return total


def parse_bmap(path: Path) -> Bmap:
    """Read a bmap file (format 1.x or 2.x); a broken one is a UsageError."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise UsageError(f"cannot read block map {path}: {exc}") from exc
    if root.tag != "bmap":
        raise UsageError(f"{path} is not a block map (root element <{root.tag}>)")

    def number(tag: str) -> int:
        node = root.find(tag)
        if node is None or not (node.text or "").strip().isdigit():
            raise UsageError(f"block map {path} has no valid <{tag}>")
        return int((node.text or "").strip())

    version = root.get("version", "1.0")
    ctype_node = root.find("ChecksumType")
    ctype = (ctype_node.text or "").strip().lower() if ctype_node is not None else None
    if ctype is None and version.startswith("1."):
        ctype = "sha1"  # format 1.x had SHA1 in a "sha1" attribute
    ranges = []
    for node in root.iterfind("BlockMap/Range"):
        text = (node.text or "").strip()
        first_s, _, last_s = text.partition("-")
        try:
            first = int(first_s)
            last = int(last_s) if last_s else first
        except ValueError as exc:
            raise UsageError(f"block map {path} has a bad range '{text}'") from exc
        checksum = node.get("chksum") or node.get("sha1")
        ranges.append(BmapRange(first, last, checksum))
    bmap = Bmap(
        path=path,
        version=version,
        image_size=number("ImageSize"),
        block_size=number("BlockSize"),
        blocks_count=number("BlocksCount"),
        mapped_blocks=number("MappedBlocksCount"),
        checksum_type=ctype or None,
        ranges=tuple(ranges),
    )
    if sum(r.blocks for r in ranges) != bmap.mapped_blocks:
        raise UsageError(f"block map {path} is inconsistent: its ranges do not add up to MappedBlocksCount")
    return bmap


def compression_of(path: Path) -> str | None:
    """The compression bmaptool will assume from the file name (None: raw image)."""
    name = path.name.lower()
    for suffix in UNSUPPORTED_SUFFIXES:
        if name.endswith(suffix) or f"{suffix}." in name:
            raise UsageError(
                f"{path.name}: archives and {suffix} images are not supported; "
                "use a raw image or one compressed with zstd, gzip, bzip2 or xz"
            )
    for suffix, (kind, _magic) in COMPRESSIONS.items():
        if name.endswith(suffix):
            return kind
    return None


def sniff_compression(path: Path) -> str | None:
    """The compression the file's first bytes show (None: none we know)."""
    with open(path, "rb") as f:
        head = f.read(8)
    for kind, magic in COMPRESSIONS.values():
        if head.startswith(magic):
            return kind
    return None


def find_bmap(image: Path) -> Path | None:
    """The block map next to an image, looked for the way bmaptool does:
    ``x.wic.zst.bmap``, then ``x.wic.bmap``, then ``x.bmap``."""
    candidates = [image.with_name(image.name + ".bmap")]
    stem = image.name
    while "." in stem:
        stem = stem.rsplit(".", 1)[0]
        candidates.append(image.with_name(stem + ".bmap"))
    for cand in candidates:
        if cand.is_file():
            return cand
    return None


@contextmanager
def open_decompressed(path: Path, compression: str | None) -> Iterator[BinaryIO]:
    """A readable binary stream of the image's raw bytes."""
    if compression is None:
        with open(path, "rb") as f:
            yield f
    elif compression == "gzip":
        with gzip.open(path, "rb") as f:
            yield f  # type: ignore[misc]
    elif compression == "bzip2":
        with bz2.open(path, "rb") as f:
            yield f  # type: ignore[misc]
    elif compression == "xz":
        with lzma.open(path, "rb") as f:
            yield f  # type: ignore[misc]
    elif compression == "zstd":
        zstd = shutil.which("zstd")
        if not zstd:
            raise ToolMissingError("zstd", hint="apt install zstd")
        proc = subprocess.Popen([zstd, "-dcq", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            yield proc.stdout  # type: ignore[misc]
        finally:
            proc.stdout.close()
            _, err = proc.communicate()
            # -13 (SIGPIPE) when we stopped reading early on purpose
            if proc.returncode not in (0, -13):
                raise CommandFailed(
                    [zstd, "-dcq", str(path)], proc.returncode, output=err.decode(errors="replace")
                )
    else:  # pragma: no cover - compression_of() returns only the kinds above
        raise UsageError(f"unsupported compression {compression}")


def stream_size(path: Path, compression: str | None) -> int:
    """The decompressed size, by decompressing (no block map to tell it)."""
    total = 0
    try:
        with open_decompressed(path, compression) as stream:
            while chunk := stream.read(CHUNK):
                total += len(chunk)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise UsageError(f"{path.name} is not a valid {compression} file: {exc}") from exc
    return total


@dataclass(frozen=True)
class Image:
    path: Path
    compression: str | None
    file_size: int  # bytes on disk (compressed size for compressed images)
    size: int  # bytes of the raw image, what ends up on the device
    bmap: Bmap | None

    @property
    def bytes_to_write(self) -> int:
        return self.bmap.mapped_bytes if self.bmap else self.size

    def describe(self) -> str:
        parts = [human(self.size) + " raw"]
        if self.compression:
            parts.insert(0, f"{self.compression}, {human(self.file_size)}")
        if self.bmap:
            parts.append(f"{human(self.bmap.mapped_bytes)} of data per {self.bmap.path.name}")
        else:
            parts.append("no block map: every byte is written")
        return f"{self.path} ({', '.join(parts)})"


def inspect_image(path: Path, *, bmap: Path | None = None, use_bmap: bool = True) -> Image:
    """Everything ``flash`` needs to know about an image before touching a device."""
    if not path.exists():
        raise UsageError(f"image {path} does not exist")
    if not path.is_file():
        raise UsageError(f"image {path} is not a regular file")
    try:
        file_size = path.stat().st_size
        sniffed = sniff_compression(path)
    except OSError as exc:
        raise UsageError(f"cannot read image {path}: {exc.strerror}") from exc
    if file_size == 0:
        raise UsageError(f"image {path} is empty")
    compression = compression_of(path)
    if sniffed != compression:
        shown = sniffed or "not compressed"
        raise UsageError(
            f"{path.name}: the name says {compression or 'raw image'} but the content is {shown}; "
            "bmaptool goes by the name, rename the file to match"
        )
    bmap_path = None
    if use_bmap:
        bmap_path = bmap if bmap is not None else find_bmap(path)
        if bmap is not None and not bmap.is_file():
            raise UsageError(f"block map {bmap} does not exist")
    parsed = parse_bmap(bmap_path) if bmap_path else None
    if parsed is not None:
        if compression is None and parsed.image_size != file_size:
            raise UsageError(
                f"block map {parsed.path.name} is for a {parsed.image_size}-byte image but "
                f"{path.name} has {file_size} bytes; it belongs to another image"
            )
        size = parsed.image_size
    elif compression is None:
        size = file_size
    else:
        log.info("measuring the raw size of %s (no block map) ...", path.name)
        size = stream_size(path, compression)
    return Image(path=path, compression=compression, file_size=file_size, size=size, bmap=parsed)
