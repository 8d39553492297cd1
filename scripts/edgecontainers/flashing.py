"""Writing an image with bmaptool and reading it back to verify.

bmaptool is driven through its command line only.  Verification reads the
device back with O_DIRECT (past the page cache, so it sees what reached the
medium) and compares the block map's checksums, or the image bytes when there
is no block map or it has no checksums.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import tools
from .errors import CommandFailed, EdgeError, Interrupted
from .images import CHUNK, Image, open_decompressed

Progress = Callable[[int, int], None]


def bmaptool_command(image: Image, device: Path, *, check_image: bool = True) -> list[str]:
    cmd = ["bmaptool", "copy"]
    if image.bmap is not None:
        cmd += ["--bmap", str(image.bmap.path)]
    else:
        cmd.append("--nobmap")
    if not check_image:
        cmd.append("--no-verify")
    cmd += [str(image.path), str(device)]
    return cmd


def write(image: Image, device: Path, *, check_image: bool = True) -> float:
    """Run bmaptool (its progress goes straight to the terminal); returns seconds taken."""
    cmd = bmaptool_command(image, device, check_image=check_image)
    start = time.monotonic()
    try:
        tools.run(cmd)
    except CommandFailed as exc:
        exc.hint = "the device is only partly written; flash it again before using it"
        raise
    except KeyboardInterrupt as exc:
        raise Interrupted(
            f"interrupted while writing: {device} is only partly written",
            hint="flash it again before using it",
        ) from exc
    return time.monotonic() - start


class VerifyFailed(EdgeError):
    """The device does not hold what the image says (exit code 1)."""


class DeviceReader:
    """Aligned O_DIRECT reads of a block device (buffered + fadvise as a fallback)."""

    def __init__(self, node: Path) -> None:
        self.node = node
        self.align = 4096
        try:
            self.fd = os.open(node, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
            self.direct = True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
            self.direct = False
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        self.buf = mmap.mmap(-1, CHUNK + 2 * self.align)

    def close(self) -> None:
        self.buf.close()
        os.close(self.fd)

    def __enter__(self) -> DeviceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, offset: int, length: int) -> bytes:
        """``length`` (at most CHUNK) bytes from ``offset``; fewer only at the device end."""
        start = offset - offset % self.align
        end = -(-(offset + length) // self.align) * self.align
        view = memoryview(self.buf)
        got = 0
        try:
            while got < end - start:
                n = os.preadv(self.fd, [view[got : end - start]], start + got)
                if n <= 0:
                    break
                got += n
        finally:
            view.release()
        skip = offset - start
        return self.buf[skip : min(got, skip + length)]


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


@dataclass(frozen=True)
class Region:
    offset: int
    length: int
    checksum: str | None = None


def _regions(image: Image) -> list[Region]:
    if image.bmap is None:
        return [Region(0, image.size)]
    bs = image.bmap.block_size
    out = []
    for r in image.bmap.ranges:
        start = r.first * bs
        end = min((r.last + 1) * bs, image.size)
        if end > start:
            out.append(Region(start, end - start, r.checksum))
    return out


def _pieces(region: Region) -> Iterator[tuple[int, int]]:
    pos = region.offset
    end = region.offset + region.length
    while pos < end:
        n = min(CHUNK, end - pos)
        yield pos, n
        pos += n


def verify(image: Image, node: Path, progress: Progress | None = None) -> int:
    """Read the written bytes back from ``node`` and compare; returns bytes compared."""
    regions = _regions(image)
    total = sum(r.length for r in regions)
    done = 0
    bmap = image.bmap
    use_checksums = (
        bmap is not None
        and bmap.checksum_type in hashlib.algorithms_available
        and all(r.checksum for r in regions)
    )
    with DeviceReader(node) as dev:
        if use_checksums:
            assert bmap is not None and bmap.checksum_type is not None
            for region in regions:
                digest = hashlib.new(bmap.checksum_type)
                for pos, n in _pieces(region):
                    data = dev.read(pos, n)
                    if len(data) != n:
                        raise VerifyFailed(f"verification failed: {node} ends at byte {pos + len(data)}")
                    digest.update(data)
                    done += n
                    if progress:
                        progress(done, total)
                if digest.hexdigest() != region.checksum:
                    raise VerifyFailed(
                        f"verification failed: {node} differs from the image in bytes {region.offset}-"
                        f"{region.offset + region.length - 1} ({bmap.checksum_type} mismatch)",
                        hint="the medium may be failing or counterfeit; try another card",
                    )
        else:
            with open_decompressed(image.path, image.compression) as stream:
                pos_in_stream = 0
                for region in regions:
                    while pos_in_stream < region.offset:  # skip unmapped bytes
                        skipped = len(_read_exact(stream, min(CHUNK, region.offset - pos_in_stream)))
                        if not skipped:
                            raise VerifyFailed(f"verification failed: {image.path.name} ended early")
                        pos_in_stream += skipped
                    for pos, n in _pieces(region):
                        want = _read_exact(stream, n)
                        pos_in_stream += len(want)
                        got = dev.read(pos, n)
                        if got != want:
                            at = pos + next(
                                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                                min(len(got), len(want)),
                            )
                            raise VerifyFailed(
                                f"verification failed: {node} differs from the image at byte {at}",
                                hint="the medium may be failing or counterfeit; try another card",
                            )
                        done += n
                        if progress:
                            progress(done, total)
    return done
