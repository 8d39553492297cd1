"""The layer's kernel fragments against a real kernel tree (marker ``kernel``):
what oe-core's do_kernel_configcheck would report after a build.

Per architecture: the upstream defconfig, the fragments of
``edgecontainers.scc`` merged last with the kernel's merge_config.sh,
``make olddefconfig``; every option must keep the value its fragment asks for.
The tree is Debian trixie's linux-source-6.12 (wrynose builds 6.18, which
Debian does not package), downloaded once into the test image cache.  The
negative test breaks a copy of the fragments three ways and must see each.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edgecontainers import kconfig
from edgecontainers.errors import EdgeError
from edgecontainers.testimage.builder import cache_root

pytestmark = pytest.mark.kernel

LAYER = Path(__file__).resolve().parents[2] / "meta-edgecontainers"
CACHE = cache_root().parent / "kernel"


@pytest.fixture(scope="module")
def tree() -> Path:
    try:
        for arch in kconfig.ARCHES.values():
            kconfig.cross_compile(arch)
        return kconfig.source_tree(None, CACHE)
    except EdgeError as exc:
        reason = f"no kernel tree to check the fragments against: {exc}"
        if os.environ.get("EDGECONTAINERS_REQUIRE_ALL") == "1":
            pytest.fail(reason + " (scripts/run-tests --allow-skip lets this skip)")
        pytest.skip(reason)


@pytest.mark.parametrize("arch", sorted(kconfig.ARCHES))
def test_every_fragment_option_survives_merge_config_and_olddefconfig(tree: Path, arch: str, tmp_path: Path):
    frags = kconfig.fragments(LAYER)
    problems = kconfig.check(tree, kconfig.ARCHES[arch], frags, tmp_path / "out")
    assert not problems, f"Linux {kconfig.kernel_version(tree)} {arch}:\n" + "\n".join(problems)
    assert len(kconfig.read_fragments(frags)) > 50  # the fragments were read, not an empty list


def test_a_dropped_dependency_a_weakened_one_and_an_unknown_option_fail(tree: Path, tmp_path: Path):
    layer = tmp_path / "meta-edgecontainers"
    shutil.copytree(LAYER / kconfig.FRAGMENT_DIR, layer / kconfig.FRAGMENT_DIR)
    cfg = layer / kconfig.FRAGMENT_DIR / "edgecontainers-containers.cfg"
    text = cfg.read_text()
    for old, new in (("CONFIG_BLK_DEV_DM=y\n", "# CONFIG_BLK_DEV_DM is not set\n"),
                     ("CONFIG_BRIDGE=y\n", "CONFIG_BRIDGE=m\n")):  # fmt: skip
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    cfg.write_text(text + "CONFIG_EDGECONTAINERS_NO_SUCH_OPTION=y\n")
    problems = "\n".join(kconfig.check(tree, kconfig.ARCHES["x86_64"], kconfig.fragments(layer), tmp_path / "out"))
    assert "CONFIG_DM_VERITY=y (edgecontainers-containers.cfg:" in problems and "dropped it" in problems, problems
    assert "CONFIG_BRIDGE_NETFILTER=y" in problems and "made it m" in problems, problems
    assert "CONFIG_EDGECONTAINERS_NO_SUCH_OPTION (edgecontainers-containers.cfg:" in problems, problems
