"""The layer's kernel fragments against a real kernel tree (marker ``kernel``):
what oe-core's do_kernel_configcheck would report after a build.

Per architecture: the upstream defconfig, the fragments of
``edgecontainers.scc`` merged last with the kernel's merge_config.sh,
``make olddefconfig``; every option must keep the value its fragment asks for.
The trees are two of Debian's that bracket wrynose's 6.18 (which Debian does
not package): trixie's linux-source-6.12 and the newest series of
trixie-backports, downloaded once into the test image cache; an option that
only one of them defines is a note.  The negative test breaks a copy of the
fragments three ways and must see each in every tree.
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
def trees() -> list[Path]:
    try:
        for arch in kconfig.ARCHES.values():
            kconfig.cross_compile(arch)
        return kconfig.source_trees(None, CACHE)
    except EdgeError as exc:
        reason = f"no kernel tree to check the fragments against: {exc}"
        if os.environ.get("EDGECONTAINERS_REQUIRE_ALL") == "1":
            pytest.fail(reason + " (scripts/run-tests --allow-skip lets this skip)")
        pytest.skip(reason)


def _check(trees: list[Path], arch: str, layer: Path, work: Path) -> tuple[list[str], list[str]]:
    frags = kconfig.fragments(layer)
    results = [kconfig.check(t, kconfig.ARCHES[arch], frags, work / str(i)) for i, t in enumerate(trees)]
    return kconfig.verdict(results)


def test_the_trees_bracket_the_series_wrynose_builds(trees: list[Path]):
    versions = [tuple(int(x) for x in kconfig.kernel_version(t).split(".")[:2]) for t in trees]
    assert versions[0] < kconfig.WRYNOSE_SERIES, versions
    assert len(versions) == 2 and versions[1] >= kconfig.WRYNOSE_SERIES, (
        f"Debian has no kernel source of {kconfig.WRYNOSE_SERIES} or newer in trixie-backports: {versions}"
    )


@pytest.mark.parametrize("arch", sorted(kconfig.ARCHES))
def test_every_fragment_option_survives_merge_config_and_olddefconfig(trees: list[Path], arch: str, tmp_path: Path):
    failures, notes = _check(trees, arch, LAYER, tmp_path)
    assert not failures, "\n".join(failures + notes)
    assert len(kconfig.read_fragments(kconfig.fragments(LAYER))) > 50  # the fragments were read


def test_a_dropped_dependency_a_weakened_one_and_an_unknown_option_fail(trees: list[Path], tmp_path: Path):
    layer = tmp_path / "meta-edgecontainers"
    shutil.copytree(LAYER / kconfig.FRAGMENT_DIR, layer / kconfig.FRAGMENT_DIR)
    cfg = layer / kconfig.FRAGMENT_DIR / "edgecontainers-containers.cfg"
    text = cfg.read_text()
    for old, new in (("CONFIG_BLK_DEV_DM=y\n", "# CONFIG_BLK_DEV_DM is not set\n"),
                     ("CONFIG_BRIDGE=y\n", "CONFIG_BRIDGE=m\n")):  # fmt: skip
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    cfg.write_text(text + "CONFIG_EDGECONTAINERS_NO_SUCH_OPTION=y\n")
    failures, _ = _check(trees, "x86_64", layer, tmp_path / "out")
    for tree in trees:
        mine = "\n".join(f for f in failures if f.startswith(f"x86_64 Linux {kconfig.kernel_version(tree)}: "))
        assert "CONFIG_DM_VERITY=y (edgecontainers-containers.cfg:" in mine and "dropped it" in mine, failures
        assert "CONFIG_BRIDGE_NETFILTER=y" in mine and "made it m" in mine, failures
        assert "CONFIG_EDGECONTAINERS_NO_SUCH_OPTION (edgecontainers-containers.cfg:" in mine, failures


def test_the_legacy_iptables_gate_of_newer_kernels_is_needed(trees: list[Path], tmp_path: Path):
    """Linux 6.17+ drops IP_NF_FILTER and the other tables without NETFILTER_XTABLES_LEGACY:
    the fragments without that line fail in the newer tree (the 6.18 bug this check found)."""
    layer = tmp_path / "meta-edgecontainers"
    shutil.copytree(LAYER / kconfig.FRAGMENT_DIR, layer / kconfig.FRAGMENT_DIR)
    cfg = layer / kconfig.FRAGMENT_DIR / "edgecontainers-containers.cfg"
    text = cfg.read_text()
    assert text.count("CONFIG_NETFILTER_XTABLES_LEGACY=y\n") == 1
    cfg.write_text(text.replace("CONFIG_NETFILTER_XTABLES_LEGACY=y\n", ""))
    failures, _ = _check(trees[-1:], "x86_64", layer, tmp_path / "out")
    assert any("CONFIG_IP_NF_FILTER=y" in f and "dropped it" in f for f in failures), failures
