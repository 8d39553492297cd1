"""The test image builder's decisions that need no Debian mirror or QEMU:
what the image is composed of, the app image, file provenance, plumbing."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from edgecontainers.errors import ConfigError
from edgecontainers.testimage import builder
from edgecontainers.testimage.builder import PLUMBING, _shell_function, compose
from edgecontainers.testimage.layer import Layer, default_layer
from edgecontainers.testimage.oci import ImageFile, docker_archive
from edgecontainers.testimage.provenance import classify


def _names(comp):
    return {r.name for r in comp.recipes}


def test_production_podman_image_composition():
    comp = compose(Layer("qemux86-64", "podman", False, ssh_authorized_keys="/k/authorized_keys"))
    names = _names(comp)
    assert {"edgecontainers-base", "edgecontainers-health", "edgecontainers-podman-config", "rauc-conf",
            "container-host-config", "edgecontainers-demo-quadlet", "edgecontainers-production"} <= names  # fmt: skip
    assert not names & {"edgecontainers-docker-config", "edgecontainers-demo-compose", "u-boot"}
    assert {"podman", "crun", "netavark", "nftables", "rauc", "rauc-service", "grub-common", "linux-image-amd64",
            "openssh-server", "initramfs-tools", "grub-efi-amd64-bin"} <= set(comp.debian)  # fmt: skip
    assert "docker.io" not in comp.debian and "curl" not in comp.debian


def test_production_without_ssh_keys_has_no_ssh_server():
    comp = compose(Layer("qemux86-64", "podman", False))
    assert "openssh-server" not in comp.debian


def test_dev_docker_image_composition():
    comp = compose(Layer("qemux86-64", "docker", True))
    names = _names(comp)
    assert {"edgecontainers-docker-config", "edgecontainers-demo-compose"} <= names
    assert "edgecontainers-production" not in names and "edgecontainers-podman-config" not in names
    assert {"docker.io", "docker-compose", "curl", "less", "openssh-server"} <= set(comp.debian)
    assert "podman" not in comp.debian


def test_an_oe_package_without_debian_counterpart_stops_the_build(tmp_path):
    layer = tmp_path / "meta-edgecontainers"
    shutil.copytree(default_layer(), layer)
    inc = layer / "recipes-core/images/edgecontainers-image.inc"
    inc.write_text(inc.read_text() + '\nIMAGE_INSTALL += "some-oe-only-package"\n')
    with pytest.raises(ConfigError, match="some-oe-only-package"):
        compose(Layer("qemux86-64", "podman", False, path=layer))


def test_plumbing_items_all_say_why():
    paths = [p.path for p in PLUMBING]
    assert len(paths) == len(set(paths))
    for item in PLUMBING:
        assert item.path.startswith("/") and len(item.reason) > 20, item
        assert item.kind in ("file", "symlink", "remove", "dir", "modify", "enable", "base"), item


def test_the_layers_relocation_step_is_read_from_the_image_recipe():
    text = (default_layer() / "recipes-core/images/edgecontainers-image.inc").read_text()
    body = _shell_function(text, "edgecontainers_relocate_preloaded_images")
    assert "/containers/storage" in body and "docker-seed" in body


def test_demo_app_archive_holds_busybox_and_the_layers_app_files():
    layer = Layer("qemux86-64", "podman", False)
    app = layer.recipe("edgecontainers-demo-app")
    files = [ImageFile(e.dest, app.render(e), e.mode) for e in app.edge_files()]
    data = docker_archive(tag="localhost/x:latest", busybox=b"\x7fELF-busybox", files=files,
                          cmd=["/usr/bin/edgecontainers-demo"], user="1000", ports=["8080/tcp"])  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == ["localhost/x:latest"]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        assert config["config"]["User"] == "1000"
        assert config["config"]["Cmd"] == ["/usr/bin/edgecontainers-demo"]
        assert "8080/tcp" in config["config"]["ExposedPorts"]
        layer_bytes = tar.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
        assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as rootfs:
        members = {m.name: m for m in rootfs.getmembers()}
        assert members["bin/busybox"].mode == 0o755
        assert members["bin/sh"].issym()
        for e in app.edge_files():
            m = members[e.dest.lstrip("/")]
            assert m.mode == e.mode
            assert rootfs.extractfile(m).read() == app.render(e)  # type: ignore[union-attr]


# ---------------------------------------------------------------- provenance on a synthetic root filesystem
def _rootfs(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "rootfs"
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc/ssh").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"tool\n")
    (root / "etc/tool.conf").write_bytes(b"conf\n")
    (root / "etc/ssh/layer.conf").write_bytes(b"from the layer\n")
    (info / "tool.list").write_text("/.\n/usr\n/usr/bin\n/usr/bin/tool\n/etc/tool.conf\n")
    md5 = hashlib.md5(b"tool\n").hexdigest()
    (info / "tool.md5sums").write_text(f"{md5}  usr/bin/tool\n")
    conf_md5 = hashlib.md5(b"conf\n").hexdigest()
    (root / "var/lib/dpkg/status").write_text(f"Package: tool\nConffiles:\n /etc/tool.conf {conf_md5}\n\n")
    entry = {"sha256": hashlib.sha256(b"from the layer\n").hexdigest(), "source": "recipes-core/x/files/layer.conf"}
    manifest = {"layer": {"/etc/ssh/layer.conf": entry}, "image_steps": {}}
    return root, manifest


def test_provenance_accepts_debian_layer_and_plumbing_files(tmp_path):
    root, manifest = _rootfs(tmp_path)
    (root / "etc/hostname").write_text("qemux86-64\n")
    report = classify(root, manifest, {"/etc/hostname": "plumbing"})
    assert not report.findings, report.findings
    assert report.where["/usr/bin/tool"] == "debian"
    assert report.where["/etc/ssh/layer.conf"] == "layer"
    assert report.where["/etc/hostname"] == "plumbing"


def test_provenance_finds_unknown_and_modified_files(tmp_path):
    root, manifest = _rootfs(tmp_path)
    (root / "etc/sneaky.conf").write_text("not from anywhere\n")
    (root / "usr/bin/tool").write_bytes(b"patched\n")
    (root / "etc/tool.conf").write_bytes(b"edited\n")
    (root / "etc/ssh/layer.conf").write_bytes(b"changed after install\n")
    problems = {f.path: f.problem for f in classify(root, manifest, {}).findings}
    assert "not from a Debian package" in problems["/etc/sneaky.conf"]
    assert "modified Debian file of tool" in problems["/usr/bin/tool"]
    assert "modified Debian conffile of tool" in problems["/etc/tool.conf"]
    assert "differs from the layer's" in problems["/etc/ssh/layer.conf"]


def test_image_key_changes_with_any_layer_input():
    layer = Layer("qemux86-64", "podman", False)
    comp = compose(layer)
    spec = builder.ImageSpec()
    base = builder.image_key(comp, spec, {"a": b"1"})
    assert builder.image_key(comp, spec, {"a": b"2"}) != base
    assert builder.image_key(comp, builder.ImageSpec(variant="dev"), {"a": b"1"}) != base
    assert builder.image_key(comp, spec, {"a": b"1"}) == base


@pytest.mark.parametrize("read_only", [True, False])
def test_read_only_rootfs_is_applied_as_oe_cores_hook_only_when_the_image_has_it(tmp_path, read_only):
    """IMAGE_FEATURES read-only-rootfs -> the fstab root line ro and sshd on the
    read-only configuration; without it the root stays 'defaults' (systemd-remount-fs
    then makes it writable, as on a Yocto image).  The machine-id is empty either way."""
    from edgecontainers.testimage import oecore
    from edgecontainers.testimage.builder import BuildContext, Builder, Composition, ImageSpec

    root = tmp_path / "rootfs"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/default").mkdir()
    (root / "etc/fstab").write_text(oecore.BASE_FILES_FSTAB)
    (root / "etc/default/ssh").write_text("SSHD_OPTS=\n")
    (root / "etc/machine-id").write_text("uninitialized\n")
    layer = Layer("qemux86-64", "podman", False)
    features = ["read-only-rootfs"] if read_only else []
    ctx = BuildContext(ImageSpec(), layer, root, tmp_path)
    manifest: dict = {"image_steps": {}}
    Builder._image_feature_steps(Builder.__new__(Builder), ctx, Composition(layer, [], [], features), manifest)
    fstab = [ln.split() for ln in (root / "etc/fstab").read_text().splitlines() if ln.startswith("/dev/root")]
    assert fstab == [["/dev/root", "/", "auto", "ro" if read_only else "defaults", "1", "0" if read_only else "1"]]
    readonly = "SSHD_OPTS='-f /etc/ssh/sshd_config_readonly'" in (root / "etc/default/ssh").read_text()
    assert readonly == read_only
    assert (root / "etc/machine-id").read_bytes() == b""
    assert ("/etc/fstab" in manifest["image_steps"]) == read_only
