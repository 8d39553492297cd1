"""What meta-virtualization's container bundling puts into an image, restated.

An edgecontainers image preloads its apps with ``BUNDLED_CONTAINERS``
(meta-virtualization's ``container-cross-install.bbclass``).  For podman the
class imports every OCI image in a helper VM (``vpdmn``) with
``skopeo copy oci:DIR containers-storage:NAME:TAG`` and copies that VM's whole
store into the rootfs at ``/var/lib/containers/storage``;
``edgecontainers_relocate_preloaded_images`` then moves it to the read-only
additional image store.  Two facts of that import decide whether the target's
podman can use the preloaded images, and both are restated here so the tests
can hold the layer to them (and the test image can preload the same way):

* the storage **driver** of the helper's store: vpdmn-rootfs-image writes a
  storage.conf with ``driver = "vfs"``.  containers/storage opens an additional
  image store with the driver of its own store (``<driver>-images``,
  ``<driver>-layers``), so the target's storage.conf must say ``vfs`` too;
* the **name** the image gets: NAME and TAG come from the name of the OCI
  directory in DEPLOY_DIR_IMAGE (``<recipe>-latest-oci``, image-oci's link for
  ``OCI_IMAGE_TAG = "latest"``), and the containers-storage transport
  normalises a short name as the docker transport does
  (``docker.io/library/NAME:TAG``).  A Quadlet must name the image that way.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

from ..errors import ConfigError

# vpdmn-rootfs-image.bb (install_vpdmn_init) writes the helper VM's storage.conf
# with this driver; the store it fills is copied into the rootfs as it is.
PRELOAD_DRIVER = "vfs"
# Where container-cross-install extracts the helper's store in the rootfs.
PRELOAD_GRAPHROOT = "/var/lib/containers/storage"

# container-cross-install's extract_container_info: the last hyphen-separated
# part of the OCI directory name is the tag when it looks like one.
_TAG_PART = re.compile(r"^(latest|v?[0-9]+\.[0-9]+(\.[0-9]+)?|[0-9]+)$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


@dataclass(frozen=True)
class Bundled:
    """One BUNDLED_CONTAINERS entry: ``name:runtime[:autostart][:external]``."""

    container: str  # a container image recipe, or an OCI directory name (ends in -oci)
    runtime: str  # docker or podman

    def oci_dir(self, oci_image_tag: str) -> str:
        """The directory of DEPLOY_DIR_IMAGE the class imports (its resolve_oci_dir).

        For a recipe it takes ``<recipe>-latest-oci``, else ``<recipe>-oci``;
        image-oci links ``<recipe>-<OCI_IMAGE_TAG>-oci`` (and no ``<recipe>-oci``),
        so a recipe is only found when its OCI_IMAGE_TAG is ``latest``."""
        if self.container.endswith("-oci"):
            return self.container
        if oci_image_tag != "latest":
            raise ConfigError(
                f"BUNDLED_CONTAINERS entry {self.container}: container-cross-install looks for "
                f"{self.container}-latest-oci, but the recipe deploys "
                f"{self.container}-{oci_image_tag}-oci (OCI_IMAGE_TAG = {oci_image_tag!r})"
            )
        return f"{self.container}-latest-oci"

    def import_ref(self, oci_image_tag: str) -> str:
        """``NAME:TAG`` as the class hands it to vrunner --batch-import (its extract_container_info)."""
        base = self.oci_dir(oci_image_tag).removesuffix("-oci")
        last = base.rsplit("-", 1)[-1]
        if "-" in base and _TAG_PART.match(last):
            return f"{base[: -len(last) - 1]}:{last}"
        return f"{base}:latest"

    def stored_name(self, oci_image_tag: str) -> str:
        """The name the image has in the engine's store after the import: skopeo's
        containers-storage: (podman) and docker-daemon: (docker) destinations both
        normalise the short name."""
        return normalize_reference(self.import_ref(oci_image_tag))


def parse_bundled(value: str, default_runtime: str = "podman") -> list[Bundled]:
    """The entries of a BUNDLED_CONTAINERS value."""
    out = []
    for word in value.split():
        parts = [p for p in word.split(":") if p != "external"]
        runtime = parts[1] if len(parts) > 1 else default_runtime
        if runtime not in ("docker", "podman"):
            raise ConfigError(f"BUNDLED_CONTAINERS entry {word}: unknown runtime {runtime!r}")
        out.append(Bundled(parts[0], runtime))
    return out


def normalize_reference(ref: str) -> str:
    """A docker reference as containers/image's ParseNormalizedNamed + TagNameOnly
    make it: ``busybox`` -> ``docker.io/library/busybox:latest``; a first component
    with a dot or a port, or ``localhost``, is a registry and stays."""
    name, at, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain == "index.docker.io":
        domain = "docker.io"
    repo, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    if domain == "docker.io" and "/" not in repo:
        repo = "library/" + repo
    if not _REPO.match(repo):
        raise ConfigError(f"{ref!r} is not a valid image reference (repository {repo!r})")
    if not colon and not at:
        tag, colon = "latest", ":"
    return f"{domain}/{repo}{colon}{tag}{at}{digest}"


@dataclass(frozen=True)
class StorageConf:
    driver: str
    graphroot: str
    additional_image_stores: tuple[str, ...]


def parse_storage_conf(text: str) -> StorageConf:
    """The parts of a containers-storage.conf that decide which stores podman reads."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"storage.conf is not valid TOML: {e}") from e
    storage = data.get("storage", {})
    options = storage.get("options", {})
    return StorageConf(
        driver=storage.get("driver", ""),
        graphroot=storage.get("graphroot", ""),
        additional_image_stores=tuple(options.get("additionalimagestores", ())),
    )


def store_layout(driver: str) -> tuple[str, ...]:
    """What a containers/storage store of ``driver`` holds for its images and layers,
    and the lock files a reader must find there when the store is read-only (it
    cannot create them: the image store of a missing lock is skipped, a missing
    layer lock is an error)."""
    return (
        f"{driver}-images/images.json",
        f"{driver}-images/images.lock",
        f"{driver}-layers/layers.json",
        f"{driver}-layers/layers.lock",
    )
