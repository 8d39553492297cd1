"""The Debian test image installs the layer's on-target files and nothing else
that is not Debian's: every file in its root filesystem is a Debian package's
own (unmodified) file, the layer's (with the layer's content), made by Debian's
maintainer scripts, or in the builder's PLUMBING list.  No boot needed."""

from __future__ import annotations

import pytest
from conftest import DEFAULT_PLANS

from edgecontainers.testimage.builder import PLUMBING, ImageSpec
from edgecontainers.testimage.provenance import PRELOADED_STORES, classify

pytestmark = pytest.mark.qemu

SPECS = sorted({(p.engine, p.variant) for p in DEFAULT_PLANS})


@pytest.fixture(params=SPECS, ids=[f"{e}-{v}" for e, v in SPECS])
def image(request, build_image):
    if request.config.getoption("image") or request.config.getoption("deploy_dir"):
        pytest.skip("checks the Debian test image's root filesystem, not a kas build's")
    engine, variant = request.param
    return build_image(ImageSpec(machine=request.config.getoption("machine"), engine=engine, variant=variant))


def test_every_file_comes_from_debian_the_layer_or_the_plumbing_list(image):
    applied = image.manifest["plumbing"]  # the items of PLUMBING this image needed
    plumbing = {item.path: item.reason for item in PLUMBING if item.path in applied}
    assert set(applied) <= {item.path for item in PLUMBING}, "the image applied plumbing that is not in the list"
    report = classify(image.rootfs_dir, image.manifest, plumbing)
    shown = "\n".join(f"  {f.path}: {f.problem}" for f in report.findings[:50])
    assert not report.findings, f"{len(report.findings)} files of unknown origin or modified:\n{shown}"
    # It really saw the image: Debian's files and every layer file.
    assert report.counts["debian"] > 5000, report.counts
    rewritten = set(image.manifest["layer"]) & set(image.manifest["image_steps"])  # e.g. the dev SSH policy
    assert report.counts["layer"] == len(image.manifest["layer"]) - len(rewritten), report.counts


def test_every_layer_file_is_installed_with_the_layers_content(image):
    """Re-render every EDGE_FILES entry from the checkout and compare with the image."""
    import hashlib

    from edgecontainers.testimage.builder import Builder, compose

    layer = Builder().layer_for(image.spec)
    comp = compose(layer)
    expected = {}
    for rec in comp.recipes:
        for entry in rec.edge_files():
            expected[entry.dest] = (rec.render(entry), entry.mode)
    assert expected, "the image recipe selects no layer files"
    for dest, (data, mode) in expected.items():
        path = image.rootfs_dir / dest.lstrip("/")
        assert path.is_file(), f"{dest} is not in the image"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest() or (
            dest in image.manifest["image_steps"]
        ), f"{dest} differs from the layer's"
        assert path.stat().st_mode & 0o7777 == mode or dest in image.manifest["image_steps"], (
            f"{dest}: mode {path.stat().st_mode & 0o7777:o}, the layer says {mode:o}"
        )


def test_preloading_changed_only_the_image_stores(image):
    changed = image.manifest["preload_changes"]
    assert changed, "the preload step recorded nothing: it did not run"
    outside = [p for p in changed if not (p + "/").startswith(PRELOADED_STORES)]
    assert not outside, f"booting the image to preload the app changed files outside the stores: {outside}"
