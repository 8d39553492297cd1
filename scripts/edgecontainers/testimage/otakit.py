"""Everything the OTA tests and the OTA benchmark install on a test image.

From one built test image (its slot image ``rootfs.ext4``) and the layer:

  update-v2.raucb         the image plus one package (Debian's busybox-static,
                          2 MB, at /usr/bin/busybox) and a version marker: a
                          "one-package change", signed, adaptive
  update-unhealthy.raucb  the image plus a health hook that always fails and a
                          20 s health window: the update the health gate must refuse
  bad-unsigned.raucb      a genuine bundle with its signature cut off
  bad-wrong-signer.raucb  signed by a CA the device does not trust
  bad-tampered.raucb      a genuine bundle (not adaptive) with one byte of its
                          payload changed
  bad-other-machine.raucb signed by our CA, for another machine's compatible
  bad-plain.raucb         signed by our CA, in the 'plain' format the device refuses
                          (also on the stick: from a file, bundle-formats=-plain)
  bad-expired.raucb       signed with a certificate of our CA that expired in 2021
  bad-not-yet-valid.raucb signed with a certificate of our CA valid from 2099
  app-v2.tar              the demo app's image, version 2.0 (same name and tag)
  app-broken.tar          the demo app's image with its page gone: its health
                          endpoint answers 503, so it never becomes healthy
  stick.img               an ext4 disk with the updates and app archives: the
                          USB stick of an offline update

The bad bundles carry a small payload: RAUC must refuse them before it looks
at the payload.  Cached next to the test images, keyed by the image and
every input.

``build_slot_updates`` makes bundles from *other* images' slot images (an
image built from a changed copy of the layer, e.g. with a new app image
preloaded: the docker OTA test), each with the version marker or the failing
health hook of update-unhealthy added the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import pki
from ..errors import EdgeError
from ..tools import run
from .builder import Builder, TestImage, _locked, machine_facts
from .bundles import (
    BundleSettings,
    bundle_settings,
    dated_signer,
    derive_rootfs,
    make_bundle,
    small_ext4,
    stick_image,
    strip_signature,
    tamper,
)

log = logging.getLogger(__name__)

VERSION_MARKER = "/usr/lib/edgecontainers/test-bundle-version"
FAILING_HOOK = "/usr/lib/edgecontainers/health.d/99-test-always-fails"
HEALTH_CONF = "/etc/edgecontainers/health.conf"
UNHEALTHY_TIMEOUT = 20
APP_VERSION_FILE = "/usr/share/edgecontainers-demo/version"
APP_PAGE = "/usr/share/edgecontainers-demo/www/index.html"
OTHER_MACHINE = "raspberrypi4-64"
PACKAGE_ADDED = "/usr/bin/busybox"

NAMES = (
    "update-v2.raucb", "update-unhealthy.raucb", "bad-unsigned.raucb", "bad-wrong-signer.raucb",
    "bad-tampered.raucb", "bad-other-machine.raucb", "bad-plain.raucb", "bad-expired.raucb",
    "bad-not-yet-valid.raucb", "app-v2.tar", "app-broken.tar", "stick.img",
)  # fmt: skip
ON_STICK = ("update-v2.raucb", "update-unhealthy.raucb", "app-v2.tar", "app-broken.tar", "bad-plain.raucb")


@dataclass
class OtaKit:
    directory: Path
    settings: BundleSettings
    image: TestImage

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def info(self) -> dict:
        return json.loads((self.directory / "kit.json").read_text())


def _code_hash() -> str:
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for name in ("otakit.py", "bundles.py"):
        h.update(name.encode() + b"\0" + (pkg / name).read_bytes())
    return h.hexdigest()


def build_kit(builder: Builder, image: TestImage, *, force: bool = False) -> OtaKit:
    """Build (or take from the cache) the OTA kit of ``image``."""
    spec = image.spec
    layer = builder.layer_for(spec)
    settings = bundle_settings(layer)
    key_dir = builder.rauc_key_dir
    h = hashlib.sha256()
    for part in (image.directory.name, json.dumps(settings.__dict__, sort_keys=True), _code_hash(),
                 (key_dir / pki.CA_CERT).read_text()):  # fmt: skip
        h.update(part.encode() + b"\0")
    key = h.hexdigest()[:16]
    final = builder.cache / "ota" / f"{image.directory.name}-{key}"
    with _locked(builder.cache / "locks" / f"ota-{final.name}.lock"):
        if (final / "done").is_file() and not force:
            return OtaKit(final, settings, image)
        for old in final.parent.glob(f"{image.directory.name.rsplit('-', 1)[0]}-*"):
            shutil.rmtree(old, ignore_errors=True)
        work = final.with_name(final.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        info = _build(builder, image, settings, work)
        (work / "kit.json").write_text(json.dumps(info, indent=1))
        (work / "done").write_text(key + "\n")
        work.rename(final)
    return OtaKit(final, settings, image)


def update_v2_files(busybox: bytes) -> dict[str, tuple[bytes, int]]:
    """What update-v2 changes in the image's slot image: one package and the marker."""
    return {PACKAGE_ADDED: (busybox, 0o755), VERSION_MARKER: (b"2\n", 0o644)}


def _build(builder: Builder, image: TestImage, settings: BundleSettings, work: Path) -> dict:
    key_dir = builder.rauc_key_dir
    info: dict = {"compatible": settings.compatible, "format": settings.format, "adaptive": settings.adaptive}
    base = image.rootfs_ext4
    busybox = builder.busybox(machine_facts(image.spec.machine).debian_arch)

    log.info("ota kit: update-v2 (one package added)")
    v2 = derive_rootfs(base, work / "rootfs-v2.ext4", update_v2_files(busybox))
    make_bundle(v2, work / "update-v2.raucb", settings, key_dir, version="2.0.0",
                description="OTA test: one package added")  # fmt: skip
    info["package_added_bytes"] = len(busybox)

    log.info("ota kit: update-unhealthy")
    unhealthy = {path: (data, mode) for path, data, mode in unhealthy_files(b"3-unhealthy\n")}
    v3 = derive_rootfs(base, work / "rootfs-unhealthy.ext4", unhealthy)
    make_bundle(v3, work / "update-unhealthy.raucb", settings, key_dir, version="3.0.0",
                description="OTA test: fails its health check")  # fmt: skip
    v2.unlink()
    v3.unlink()

    log.info("ota kit: bad bundles")
    # incompressible filler: RAUC wants a squashfs of more than one block
    filler = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(8192))
    small = small_ext4(work / "small.ext4", {"usr/lib/edgecontainers/test-bundle-version": b"bad\n",
                                             "usr/share/filler": filler})  # fmt: skip
    genuine = make_bundle(small, work / "small.raucb", settings, key_dir, version="9.0.0")
    strip_signature(genuine, work / "bad-unsigned.raucb")
    # A byte in the middle of the payload: dm-verity catches it when RAUC reads
    # that block while writing the slot.  This one bundle is not adaptive, so
    # RAUC starts copying at once instead of first hashing both 1 GiB slots
    # (minutes under TCG); what catches the change is the same either way.
    plain = make_bundle(small, work / "small-plain.raucb", dataclasses.replace(settings, adaptive=""), key_dir,
                        version="9.0.0")  # fmt: skip
    info["tampered_offset"] = tamper(plain, work / "bad-tampered.raucb")
    plain.unlink()
    other_compatible = settings.compatible.replace(image.spec.machine, OTHER_MACHINE)
    if other_compatible == settings.compatible:
        other_compatible += "-other"
    make_bundle(small, work / "bad-other-machine.raucb", settings, key_dir, compatible=other_compatible,
                version="9.0.0")  # fmt: skip
    info["other_compatible"] = other_compatible
    with tempfile.TemporaryDirectory(prefix="edgecontainers-untrusted-pki-") as tmp:
        pki.init(Path(tmp) / "keys")
        make_bundle(small, work / "bad-wrong-signer.raucb", settings, Path(tmp) / "keys", version="9.0.0")
    # plain: no dm-verity, so no adaptive index either
    make_bundle(small, work / "bad-plain.raucb", dataclasses.replace(settings, format="plain", adaptive=""),
                key_dir, version="9.0.0")  # fmt: skip
    for name, start, end in (("bad-expired.raucb", "20200101000000Z", "20210101000000Z"),
                             ("bad-not-yet-valid.raucb", "20990101000000Z", "21000101000000Z")):  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="edgecontainers-dated-signer-") as tmp:
            signer = dated_signer(key_dir, Path(tmp), start, end)
            make_bundle(small, work / name, settings, signer, version="9.0.0")
    genuine.unlink()
    small.unlink()

    log.info("ota kit: app images")
    (work / "app-v2.tar").write_bytes(builder.app_variant(image.spec, {APP_VERSION_FILE: b"2.0\n"}))
    (work / "app-broken.tar").write_bytes(
        builder.app_variant(image.spec, {APP_VERSION_FILE: b"3.0-broken\n", APP_PAGE: None})
    )
    info["app_versions"] = {"app-v2.tar": "2.0", "app-broken.tar": "3.0-broken"}

    log.info("ota kit: stick")
    stick_image(work / "stick.img", {name: work / name for name in ON_STICK})
    info["sizes"] = {name: (work / name).stat().st_size for name in NAMES}
    return info


# ---------------------------------------------------------------- updates made from other images
@dataclass(frozen=True)
class SlotUpdate:
    """An OS update whose slot image is another test image's own ``rootfs.ext4``
    (a build of a changed layer: e.g. a new app image preloaded), with ``files``
    changed as :func:`derive_rootfs` changes them (the version marker at least)."""

    name: str  # the bundle's file name
    image: TestImage
    files: tuple[tuple[str, bytes, int], ...]  # (path, content, mode)
    version: str
    description: str


def unhealthy_files(marker: bytes) -> tuple[tuple[str, bytes, int], ...]:
    """What makes a slot image fail its health gate quickly, as update-unhealthy does."""
    hook = b"#!/bin/sh\necho 'OTA test bundle: this slot is deliberately unhealthy'\nexit 1\n"
    conf = f"# OTA test bundle: decide quickly\nEDGE_HEALTH_TIMEOUT={UNHEALTHY_TIMEOUT}\n".encode()
    return ((FAILING_HOOK, hook, 0o755), (HEALTH_CONF, conf, 0o644), (VERSION_MARKER, marker, 0o644))


def build_slot_updates(builder: Builder, name: str, updates: tuple[SlotUpdate, ...]) -> Path:
    """The bundles of ``updates``, in one directory (what a BundleServer serves):
    each signed with the test CA, with the bundle settings of its own image's
    layer.  Cached as ``ota/<name>-<key>``, keyed by the images and every input."""
    h = hashlib.sha256()
    h.update(_code_hash().encode() + (builder.rauc_key_dir / pki.CA_CERT).read_bytes())
    settings = {}
    for u in updates:
        settings[u.name] = bundle_settings(builder.layer_for(u.image.spec))
        h.update(json.dumps([u.name, u.image.directory.name, u.version, u.description,
                             settings[u.name].__dict__], sort_keys=True).encode())  # fmt: skip
        for path, data, mode in u.files:
            h.update(f"{path}:{mode:o}:".encode() + hashlib.sha256(data).digest())
    key = h.hexdigest()[:16]
    final = builder.cache / "ota" / f"{name}-{key}"
    with _locked(builder.cache / "locks" / f"ota-{final.name}.lock"):
        if (final / "done").is_file():
            return final
        for old in final.parent.glob(f"{name}-*"):
            if old.name.removesuffix(".partial").rsplit("-", 1)[0] == name:
                shutil.rmtree(old, ignore_errors=True)
        work = final.with_name(final.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for u in updates:
            log.info("ota updates: %s from %s", u.name, u.image.directory.name)
            rootfs = derive_rootfs(u.image.rootfs_ext4, work / f"{u.name}.ext4",
                                   {path: (data, mode) for path, data, mode in u.files})  # fmt: skip
            make_bundle(rootfs, work / u.name, settings[u.name], builder.rauc_key_dir, version=u.version,
                        description=u.description)  # fmt: skip
            rootfs.unlink()
        (work / "done").write_text(key + "\n")
        work.rename(final)
    return final


DOCKER_SEED_REPOSITORIES = "/usr/lib/edgecontainers/docker-seed/image/overlay2/repositories.json"


def docker_seed_images(image: TestImage) -> dict[str, str]:
    """name:tag -> image id of the docker seed preloaded in ``image``'s slot image
    (its repositories.json, read with debugfs)."""
    out = run(["debugfs", "-R", f"cat {DOCKER_SEED_REPOSITORIES}", image.rootfs_ext4], capture=True).stdout
    start, end = out.find("{"), out.rfind("}")
    if start < 0:
        raise EdgeError(f"{image.rootfs_ext4} has no {DOCKER_SEED_REPOSITORIES}: {out.strip()[-300:]}")
    repositories = json.loads(out[start : end + 1]).get("Repositories", {})
    return {ref: image_id for refs in repositories.values() for ref, image_id in refs.items() if "@" not in ref}
