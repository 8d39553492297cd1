"""The demo app's container image, assembled on the host in pure Python.

meta-edgecontainers builds ``edgecontainers-demo-container`` (busybox plus the
files of ``edgecontainers-demo-app``, run as uid 1000, port 8080).  The test
image builds the same thing from Debian's busybox-static and the layer's app
files (their EDGE_FILES destinations): as an OCI image layout, which the
preload imports with skopeo as meta-virtualization does, and as a ``docker
save`` archive that both ``podman load`` and ``docker load`` read (the docker
preload, app updates): one layer tar, an OCI-compatible image config, a
manifest with the name.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

EPOCH = 0  # reproducible mtimes


@dataclass(frozen=True)
class ImageFile:
    path: str  # absolute path in the image
    data: bytes
    mode: int = 0o644


def _add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o755,
         kind: bytes = tarfile.DIRTYPE, link: str = "", uid: int = 0) -> None:  # fmt: skip
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type = kind
    info.mode = mode
    info.mtime = EPOCH
    info.uid = info.gid = uid
    info.uname = info.gname = "root" if uid == 0 else ""
    if kind == tarfile.SYMTYPE:
        info.linkname = link
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def layer_tar(busybox: bytes, files: Iterable[ImageFile]) -> bytes:
    """The root filesystem of the image: busybox with applet links in /bin, /etc/passwd
    with the app user, /tmp, and the app files."""
    buf = io.BytesIO()
    applets = ("sh", "cat", "id", "wget", "httpd", "ls", "echo", "printf", "sleep", "env")
    dirs = {"/bin", "/etc", "/tmp", "/usr", "/usr/bin", "/usr/share", "/var", "/var/www"}
    files = list(files)
    for f in files:
        parent = Path(f.path).parent
        while str(parent) != "/":
            dirs.add(str(parent))
            parent = parent.parent
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            _add(tar, d, mode=0o1777 if d == "/tmp" else 0o755)
        _add(tar, "/bin/busybox", data=busybox, mode=0o755, kind=tarfile.REGTYPE)
        for applet in applets:
            _add(tar, f"/bin/{applet}", kind=tarfile.SYMTYPE, link="busybox", mode=0o777)
        passwd = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n"
        group = b"root:x:0:\napp:x:1000:\n"
        _add(tar, "/etc/passwd", data=passwd, mode=0o644, kind=tarfile.REGTYPE)
        _add(tar, "/etc/group", data=group, mode=0o644, kind=tarfile.REGTYPE)
        for f in sorted(files, key=lambda f: f.path):
            _add(tar, f.path, data=f.data, mode=f.mode, kind=tarfile.REGTYPE)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _image(
    busybox: bytes, files: Iterable[ImageFile], cmd: list[str], user: str, ports: Iterable[str], architecture: str
) -> tuple[bytes, bytes]:
    """The layer tar and the image config (OCI/docker format) of the app image."""
    layer = layer_tar(busybox, files)
    diff_id = "sha256:" + _sha(layer)
    config = {
        "architecture": architecture,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": user,
            "Cmd": cmd,
            "Env": ["PATH=/usr/bin:/bin"],
            "ExposedPorts": {p: {} for p in ports},
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "edgecontainers testimage"}],
    }
    return layer, json.dumps(config, sort_keys=True).encode()


def docker_archive(
    *,
    tag: str,
    busybox: bytes,
    files: Iterable[ImageFile],
    cmd: list[str],
    user: str = "1000",
    ports: Iterable[str] = (),
    architecture: str = "amd64",
) -> bytes:
    """A ``docker save`` style archive (manifest.json, config, layer) of the image ``tag``."""
    layer, config_bytes = _image(busybox, files, cmd, user, ports, architecture)
    config_name = _sha(config_bytes) + ".json"
    layer_name = _sha(layer) + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, _sha(layer), mode=0o755)
        _add(tar, layer_name, data=layer, mode=0o644, kind=tarfile.REGTYPE)
        _add(tar, config_name, data=config_bytes, mode=0o644, kind=tarfile.REGTYPE)
        _add(tar, "manifest.json", data=json.dumps(manifest).encode(), mode=0o644, kind=tarfile.REGTYPE)
        repos = {tag.rsplit(":", 1)[0]: {tag.rsplit(":", 1)[1]: _sha(layer)}}
        _add(tar, "repositories", data=json.dumps(repos).encode(), mode=0o644, kind=tarfile.REGTYPE)
    return out.getvalue()


def oci_layout(
    *,
    ref_name: str,
    busybox: bytes,
    files: Iterable[ImageFile],
    cmd: list[str],
    user: str = "1000",
    ports: Iterable[str] = (),
    architecture: str = "amd64",
) -> dict[str, bytes]:
    """The same image as an OCI image layout directory (path -> content), as image-oci
    deploys it (``<recipe>-latest-oci``): one manifest, tagged ``ref_name`` in index.json."""
    layer, config_bytes = _image(busybox, files, cmd, user, ports, architecture)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + _sha(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + _sha(layer), "size": len(layer)}],
    }  # fmt: skip
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": manifest["mediaType"], "digest": "sha256:" + _sha(manifest_bytes),
                       "size": len(manifest_bytes),
                       "annotations": {"org.opencontainers.image.ref.name": ref_name}}],
    }  # fmt: skip
    blobs = {f"blobs/sha256/{_sha(b)}": b for b in (layer, config_bytes, manifest_bytes)}
    return {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
        **blobs,
    }


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
