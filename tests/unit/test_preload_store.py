"""The preloaded podman store and its reader agree: driver, place and image name.

meta-virtualization's container-cross-install fills the preloaded store in its
vpdmn helper VM (vfs driver, skopeo into containers-storage with a short name);
the target's podman reads it with the layer's storage.conf and runs the app
under the Quadlet's Image=.  Facts of the upstream checkout (when it is there)
are read from it, so a change of the pinned meta-virtualization shows here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from edgecontainers.bbcheck import layers_dir
from edgecontainers.errors import ConfigError
from edgecontainers.testimage.builder import VPDMN_STORAGE_CONF, _shell_function
from edgecontainers.testimage.bundling import (
    PRELOAD_DRIVER,
    PRELOAD_GRAPHROOT,
    Bundled,
    normalize_reference,
    parse_bundled,
    parse_storage_conf,
    store_layout,
)
from edgecontainers.testimage.layer import OE_PATHS, Layer

VIRT = layers_dir() / "meta-virtualization-wrynose"
needs_virt = pytest.mark.skipif(not (VIRT / "classes").is_dir(), reason=f"no meta-virtualization checkout at {VIRT}")


def _storage_conf(layer: Layer) -> str:
    rec = layer.recipe("container-host-config")
    entry = next(e for e in rec.edge_files() if e.dest == "/etc/containers/storage.conf")
    return rec.render(entry).decode()


def _relocation(layer_path: Path) -> tuple[str, str]:
    """(from, to) of the podman store in the layer's edgecontainers_relocate_preloaded_images."""
    text = (layer_path / "recipes-core/images/edgecontainers-image.inc").read_text()
    body = _shell_function(text, "edgecontainers_relocate_preloaded_images")
    body = re.sub(r"\$\{([A-Za-z_]+)\}", lambda m: {**OE_PATHS, "IMAGE_ROOTFS": ""}.get(m.group(1), m.group(0)), body)
    m = re.search(r"^\s*mv (\S+containers/storage) (\S+)$", body, re.M)
    assert m, body
    return m.group(1), m.group(2)


def _quadlet(layer: Layer) -> dict[str, str]:
    rec = layer.recipe("edgecontainers-demo-quadlet")
    entry = next(e for e in rec.edge_files() if e.dest.endswith(".container"))
    values = {}
    for line in rec.render(entry).decode().splitlines():
        key, eq, value = line.partition("=")
        if eq and not line.startswith("#"):
            values[key.strip()] = value.strip()
    return values


# ---------------------------------------------------------------- driver and place
def test_storage_conf_reads_the_preloaded_store_with_the_driver_it_was_written_with():
    layer = Layer("qemux86-64", "podman", False)
    conf = parse_storage_conf(_storage_conf(layer))
    # containers/storage opens additional image stores with the main store's driver
    # (<driver>-images, <driver>-layers): the two must be the same.
    assert conf.driver == PRELOAD_DRIVER, (
        f"storage.conf says driver = {conf.driver!r}, the preloaded store is a {PRELOAD_DRIVER} store: "
        f"podman would look for {store_layout(conf.driver)[0]} and find no preloaded image"
    )
    source, dest = _relocation(layer.path)
    assert source == PRELOAD_GRAPHROOT, "the relocation does not take the store container-cross-install writes"
    assert dest in conf.additional_image_stores, f"the store is moved to {dest}, storage.conf reads {conf}"
    # the writable store is not the preloaded one (that lives in the read-only rootfs)
    assert conf.graphroot != dest


def test_the_old_overlay_storage_conf_is_caught():
    old = _storage_conf(Layer("qemux86-64", "podman", False)).replace(
        f'driver = "{PRELOAD_DRIVER}"', 'driver = "overlay"'
    )
    assert parse_storage_conf(old).driver != PRELOAD_DRIVER


def test_the_stand_ins_import_uses_the_vpdmn_driver_and_place():
    conf = parse_storage_conf(VPDMN_STORAGE_CONF)
    assert (conf.driver, conf.graphroot, conf.additional_image_stores) == (PRELOAD_DRIVER, PRELOAD_GRAPHROOT, ())


def test_store_layout_names_the_lock_files_a_read_only_store_must_carry():
    assert store_layout("vfs") == (
        "vfs-images/images.json", "vfs-images/images.lock", "vfs-layers/layers.json", "vfs-layers/layers.lock",
    )  # fmt: skip


@needs_virt
def test_upstream_vpdmn_store_is_written_with_the_driver_we_read_it_with():
    text = (VIRT / "recipes-containers/vcontainer/vpdmn-rootfs-image.bb").read_text()
    m = re.search(r"cat > \$\{IMAGE_ROOTFS\}/etc/containers/storage\.conf << 'EOF'\n(.*?)\nEOF", text, re.S)
    assert m, "vpdmn-rootfs-image.bb no longer writes its storage.conf as a here-document; re-check the driver"
    upstream = parse_storage_conf(m.group(1))
    assert upstream.driver == PRELOAD_DRIVER, f"vpdmn now imports with {upstream.driver}: change storage.conf"
    assert upstream.graphroot == PRELOAD_GRAPHROOT
    cross = (VIRT / "classes/container-cross-install.bbclass").read_text()
    assert 'PODMAN_OUTPUT_DIR="${IMAGE_ROOTFS}/var/lib/containers/storage"' in cross
    assert re.search(r'tar -xf "\$\{PODMAN_STORAGE_TAR\}" -C "\$\{PODMAN_OUTPUT_DIR\}" --no-same-owner', cross)
    init = (VIRT / "recipes-containers/vcontainer/files/vpdmn-init.sh").read_text()
    assert "tar -cf /tmp/storage.tar ." in init  # the whole store, lock files included


# ---------------------------------------------------------------- name
@pytest.mark.parametrize(
    ("ref", "normalized"),
    [
        ("edgecontainers-demo-container:latest", "docker.io/library/edgecontainers-demo-container:latest"),
        ("busybox", "docker.io/library/busybox:latest"),
        ("vendor/app:1.0", "docker.io/vendor/app:1.0"),
        ("localhost/app:latest", "localhost/app:latest"),
        ("registry.example.com:5000/a/b", "registry.example.com:5000/a/b:latest"),
        ("quay.io/x/y:v2", "quay.io/x/y:v2"),
    ],
)
def test_short_names_are_normalised_as_the_containers_storage_transport_does(ref, normalized):
    assert normalize_reference(ref) == normalized


def test_an_invalid_reference_is_refused():
    with pytest.raises(ConfigError):
        normalize_reference("Upper/Case:1")


def test_bundled_containers_entries():
    got = parse_bundled("a-container:podman b:docker:autostart c-latest-oci:podman:external d", "docker")
    assert got == [Bundled("a-container", "podman"), Bundled("b", "docker"),
                   Bundled("c-latest-oci", "podman"), Bundled("d", "docker")]  # fmt: skip
    with pytest.raises(ConfigError):
        parse_bundled("a:containerd")


@pytest.mark.parametrize(
    ("container", "oci_tag", "ref"),
    [
        ("edgecontainers-demo-container", "latest", "edgecontainers-demo-container:latest"),
        ("app-container-multilayer", "latest", "app-container-multilayer:latest"),
        ("myapp-1.2-oci", "latest", "myapp:1.2"),
        ("tool-oci", "latest", "tool:latest"),
    ],
)
def test_the_import_name_comes_from_the_oci_directory_name(container, oci_tag, ref):
    assert Bundled(container, "podman").import_ref(oci_tag) == ref


def test_a_recipe_with_another_oci_tag_is_not_found_by_the_bundling():
    with pytest.raises(ConfigError, match=r"myapp-1\.0-oci"):
        Bundled("myapp", "podman").import_ref("1.0")


@needs_virt
@pytest.mark.parametrize("oci_dir", ["edgecontainers-demo-container-latest-oci", "myapp-1.2-oci", "tool-oci",
                                     "app-v2.0-oci", "x-7-oci"])  # fmt: skip
def test_the_import_name_is_what_upstreams_extract_container_info_makes(oci_dir):
    """Runs the class's own shell function on the directory name."""
    text = (VIRT / "classes/container-cross-install.bbclass").read_text()
    m = re.search(r"^( *)extract_container_info\(\) \{\n.*?\n\1\}\n", text, re.M | re.S)
    assert m, "extract_container_info() is gone from container-cross-install.bbclass; re-check the naming"
    script = f'{m.group(0)}extract_container_info "/deploy/{oci_dir}"\n' \
             'echo "$CONTAINER_IMAGE_NAME:$CONTAINER_IMAGE_TAG"\n'  # fmt: skip
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert Bundled(oci_dir, "podman").import_ref("latest") == out


@needs_virt
def test_upstream_imports_podman_images_into_containers_storage_under_the_short_name():
    vrunner = (VIRT / "recipes-containers/vcontainer/files/vrunner.sh").read_text()
    assert "skopeo copy oci:/mnt/input/$i containers-storage:$img" in vrunner
    cross = (VIRT / "classes/container-cross-install.bbclass").read_text()
    assert 'BATCH_ENTRY="${oci_dir}:${CONTAINER_IMAGE_NAME}:${CONTAINER_IMAGE_TAG}"' in cross


@pytest.mark.parametrize("engine", ["podman", "docker"])
def test_the_app_declaration_names_the_image_the_bundling_preloads(engine):
    layer = Layer("qemux86-64", engine, False)
    bundled = parse_bundled(layer.image_recipe().get("BUNDLED_CONTAINERS"), engine)
    assert [b.runtime for b in bundled] == [engine]
    container = layer.recipe(bundled[0].container)
    preloaded = bundled[0].stored_name(container.get("OCI_IMAGE_TAG") or "latest")
    if engine == "podman":
        image = _quadlet(layer)["Image"]
        # Pull=never: the name must be the preloaded one exactly, nothing resolves it
        assert _quadlet(layer)["Pull"] == "never"
        assert image == preloaded, f"the Quadlet runs {image}, the preloaded image is {preloaded}"
    else:
        import yaml

        rec = layer.recipe("edgecontainers-demo-compose")
        entry = next(e for e in rec.edge_files() if e.dest.endswith("compose.yaml"))
        service = next(iter(yaml.safe_load(rec.render(entry))["services"].values()))
        assert normalize_reference(service["image"]) == preloaded


def test_the_old_localhost_name_is_caught():
    assert normalize_reference("localhost/edgecontainers-demo-container:latest") != \
        Bundled("edgecontainers-demo-container", "podman").stored_name("latest")  # fmt: skip
