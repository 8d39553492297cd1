"""The task-graph assertions about the board's packages and the kernel options
(bbcheck.kernel_failures), on values shaped like `bitbake -e` and `bitbake -g`
give them: what the layer had before (no packagegroup-machine-base, fragments
in SRC_URI) fails, what it has now passes."""

from __future__ import annotations

from edgecontainers import bbcheck

PI = bbcheck.Config("raspberrypi4-64", "docker", "dev")
QEMU = bbcheck.Config("qemux86-64", "podman", "production")
PI_RECOMMENDS = "linux-firmware-rpidistro-bcm43455 kernel-modules udev-rules-rpi"
KERNEL_NOW = {
    "EDGECONTAINERS_KERNEL_FEATURES": "edgecontainers.scc",
    "KERNEL_FEATURES": "features/x.scc cfg/docker.scc cfg/lxc.scc edgecontainers.scc",
    "SRC_URI": "git://x;type=kmeta;name=meta file://edgecontainers-kmeta;type=kmeta;destsuffix=edgecontainers-kmeta",
}
IMAGE_NOW = {
    "IMAGE_INSTALL": "packagegroup-core-boot packagegroup-machine-base rauc",
    "MACHINE_EXTRA_RRECOMMENDS": PI_RECOMMENDS,
}
BUILT_NOW = {"linux-raspberrypi", "udev-rules-rpi", "linux-firmware-rpidistro", "packagegroup-base"}


def test_the_layer_as_it_is_passes():
    assert bbcheck.kernel_failures(PI, IMAGE_NOW, KERNEL_NOW, BUILT_NOW) == []
    assert bbcheck.kernel_failures(QEMU, {"IMAGE_INSTALL": "packagegroup-machine-base"}, KERNEL_NOW, set()) == []


def test_an_image_install_without_the_machine_extras_fails():
    image = {**IMAGE_NOW, "IMAGE_INSTALL": "packagegroup-core-boot rauc"}
    built = BUILT_NOW - {"udev-rules-rpi", "linux-firmware-rpidistro"}
    fails = bbcheck.kernel_failures(PI, image, KERNEL_NOW, built)
    assert any("packagegroup-machine-base not in IMAGE_INSTALL" in f for f in fails)
    assert any(f.startswith("udev-rules-rpi ") for f in fails)
    assert any(f.startswith("linux-firmware-rpidistro ") for f in fails)


def test_fragments_in_src_uri_merged_before_meta_virtualization_fail():
    old = {
        "EDGECONTAINERS_KERNEL_FEATURES": "",
        "KERNEL_FEATURES": "features/x.scc cfg/docker.scc cfg/lxc.scc",
        "SRC_URI": "git://x;type=kmeta;name=meta file://edgecontainers-containers.cfg",
    }
    fails = bbcheck.kernel_failures(PI, IMAGE_NOW, old, BUILT_NOW)
    assert any("does not end with ours" in f for f in fails)
    assert any("lacks the edgecontainers-kmeta" in f for f in fails)
    # ours present but not last (another layer appended after us)
    late = {**KERNEL_NOW, "KERNEL_FEATURES": "edgecontainers.scc cfg/docker.scc"}
    assert any("does not end with ours" in f for f in bbcheck.kernel_failures(QEMU, IMAGE_NOW, late, set()))


def test_the_kernel_recipe_per_machine():
    assert bbcheck.kernel_recipe(PI) == "linux-raspberrypi"
    assert bbcheck.kernel_recipe(QEMU) == "linux-yocto"
