"""The layer contract the QEMU test image relies on: every on-target file is
declared in EDGE_FILES, found where BitBake's FILESPATH would find it, and
renders with no placeholder left; and the reader of that contract
(edgecontainers.testimage.layer / bbparse) reads BitBake metadata correctly."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from edgecontainers.errors import ConfigError
from edgecontainers.testimage.bbparse import BBData, parse_into
from edgecontainers.testimage.layer import (
    EXPLICIT_VARIABLES,
    MACHINES,
    NOT_ON_TARGET,
    Layer,
    default_layer,
    layer_settings,
    parse_wks,
)

LAYER = default_layer()
COMBOS = list(itertools.product(MACHINES, ("podman", "docker"), (False, True)))
COMBO_IDS = [f"{m}-{e}-{'dev' if d else 'prod'}" for m, e, d in COMBOS]


@pytest.fixture(scope="module", params=COMBOS, ids=COMBO_IDS)
def layer(request) -> Layer:
    machine, engine, dev = request.param
    return Layer(machine, engine, dev, key_dir="/keys", ssh_authorized_keys="/keys/authorized_keys")


def _file_recipes(layer: Layer):
    return [r for r in layer.recipes().values() if r.words("EDGE_FILES")]


def test_every_edge_files_source_exists(layer):
    entries = [e for r in _file_recipes(layer) for e in r.edge_files()]
    assert len(entries) > 30, "the parser found too few EDGE_FILES entries"
    for e in entries:
        assert e.path.is_file(), e
        assert e.dest.startswith("/") and "${" not in e.dest, e
        assert LAYER in e.path.parents


def test_edge_files_sources_are_in_src_uri(layer):
    """edge_install_files reads from UNPACKDIR: a source missing from SRC_URI breaks the build.
    (bbappends of upstream recipes rely on the upstream SRC_URI, so only our .bb recipes.)"""
    for rec in _file_recipes(layer):
        if rec.bb is None:
            continue
        fetched = set(rec.src_uri_files())
        for e in rec.edge_files():
            assert e.source in fetched, f"{rec.name}: {e.source} is in EDGE_FILES but not in SRC_URI"


def test_no_placeholder_left_after_rendering(layer):
    for rec in _file_recipes(layer):
        for e in rec.edge_files():
            data = rec.render(e)
            left = re.findall(rb"@[A-Z][A-Z0-9_]+@", data)
            assert not left, f"{rec.name}: {e.source} keeps {left}"


def test_machine_specific_sources_win(layer):
    """rauc-conf's system.conf comes from files/<machine>/ (FILESOVERRIDES)."""
    rec = layer.recipe("rauc-conf")
    (entry,) = rec.edge_files()
    assert entry.path.parent.name == layer.machine
    assert entry.dest == "/usr/lib/rauc/system.conf"
    assert f"compatible=edgecontainers-{layer.machine}" in rec.render(entry).decode()


def test_every_file_in_the_recipe_files_dirs_is_installed_or_listed_as_not_on_target():
    installed: set[Path] = set()
    for machine, engine, dev in COMBOS:
        lay = Layer(machine, engine, dev, key_dir="/k", ssh_authorized_keys="/k/a")
        for rec in _file_recipes(lay):
            installed.update(e.path for e in rec.edge_files())
    present = {p for p in LAYER.glob("recipes-*/**/files/**/*") if p.is_file()}
    present |= {p for p in LAYER.glob("dynamic-layers/**/files/**/*") if p.is_file()}
    assert present, "no files/ directories found"
    unaccounted = sorted(
        str(p.relative_to(LAYER))
        for p in present
        if p not in installed and str(p.relative_to(LAYER)) not in NOT_ON_TARGET
    )
    assert not unaccounted, f"not installed by any EDGE_FILES and not listed in layer.NOT_ON_TARGET: {unaccounted}"
    for rel, reason in NOT_ON_TARGET.items():
        assert (LAYER / rel).is_file(), f"NOT_ON_TARGET lists {rel}, which does not exist"
        assert len(reason) > 10


def test_layer_settings_cover_every_substituted_variable():
    for machine, engine, dev in COMBOS:
        settings = layer_settings(machine, engine, dev)
        lay = Layer(machine, engine, dev)
        for rec in lay.recipes().values():
            for name in rec.subst_vars():
                assert name in settings, f"{machine}: {rec.name} substitutes {name}, layer_settings has no value"
        for name in EXPLICIT_VARIABLES:
            assert name in settings
    arm = layer_settings("qemuarm64", "podman", False)
    assert arm["KERNEL_IMAGETYPE"] == "Image"
    assert arm["KERNEL_BOOTCMD"] == "booti"
    assert arm["EDGECONTAINERS_UBOOT_DEVTYPE"] == "virtio"


def test_layer_settings_explicit_python_values():
    prod = layer_settings("qemux86-64", "podman", False, key_dir="/k")
    dev = layer_settings("qemux86-64", "podman", True)
    assert prod["EDGECONTAINERS_KERNEL_ARGS"].split()[-3:] == ["console=ttyS0,115200", "quiet", "loglevel=3"]
    assert "quiet" not in dev["EDGECONTAINERS_KERNEL_ARGS"].split()
    assert prod["RAUC_KEY_FILE"] == "/k/signing.key.pem"
    assert prod["RAUC_KEYRING_FILE"] == "/k/ca.cert.pem"
    assert dev["RAUC_CERT_FILE"] == ""
    assert prod["EDGECONTAINERS_BOOTLOADER"] == "grub"
    assert layer_settings("raspberrypi5", "docker", False)["EDGECONTAINERS_BOOTLOADER"] == "uboot"
    assert layer_settings("qemux86-64", "docker", False)["EDGECONTAINERS_ENGINE_PACKAGES"].split()[0] == "docker-moby"


def test_layer_settings_refuse_unknown_inline_python(tmp_path):
    layer = tmp_path / "meta-edgecontainers"
    (layer / "conf/distro").mkdir(parents=True)
    (layer / "conf/distro/edgecontainers.conf").write_text(
        "EDGECONTAINERS_ENGINES = \"podman\"\nEDGECONTAINERS_KERNEL_ARGS = \"ro ${@d.getVar('X') or 'quiet'}\"\n"
    )
    with pytest.raises(ConfigError, match="EDGECONTAINERS_KERNEL_ARGS"):
        layer_settings("qemux86-64", "podman", False, layer=layer)


def test_unknown_engine_is_refused():
    with pytest.raises(ConfigError, match="unknown engine"):
        layer_settings("qemux86-64", "lxc", False)


def test_wks_is_read_from_the_layer():
    wks = parse_wks(LAYER / "files/wic/edgecontainers-ab-grub.wks")
    assert wks.ptable == "gpt"
    assert [p.part_name for p in wks.parts] == ["boot", "rootfsA", "rootfsB", "data"]
    text = (LAYER / "files/wic/edgecontainers-ab-grub.wks").read_text()
    for p in wks.parts:
        line = next(ln for ln in text.splitlines() if f"--part-name {p.part_name} " in ln)
        size = re.search(r"--(?:fixed-)?size (\d+)M", line)
        assert size and int(size.group(1)) == p.size_mib
        assert f"--label {p.label}" in line
    assert wks.part("boot").fstype == "vfat" and wks.part("boot").part_type
    assert wks.part("rootfsA").source == "rootfs"


# ---------------------------------------------------------------- the BitBake reader itself
def _parse(tmp_path: Path, text: str, overrides=("linux", "x86-64", "qemuall", "qemux86-64", "edgecontainers")):
    f = tmp_path / "x.bb"
    f.write_text(text)
    d = BBData(overrides=list(overrides))
    parse_into(d, f, search=[tmp_path])
    return d


def test_reader_operators_and_overrides(tmp_path):
    d = _parse(
        tmp_path,
        'A ??= "weak"\n'
        'B ??= "weak"\nB ?= "soft"\nB = "hard"\n'
        'C = "base"\nC:qemux86-64 = "machine"\nC:qemuarm64 = "other"\n'
        'D = "x"\nD:append = " y"\nD:append:qemuarm64 = " no"\nD:prepend:x86-64 = "p "\nD += "z"\n'
        'E = "a b c"\nE:remove = "b"\n'
        'F = "1 \\\n    2 \\\n    3"\n'
        'G = "${C}-${A}"\nH := "${G}"\nG = "changed"\n'
        'I ??= "weak"\nI:append = " more"\n'
        'J = "${UNDEFINED}"\n'
        'K:qemuall = "family"\nK:qemux86-64 = "machine"\n'
        "# comment\n"
        'do_install() {\n    echo "X = y"\n}\n'
        "def f(d):\n    return 1\n\n"
        'L[doc] = "ignored"\nL = "l"\n',
    )
    assert d.get("A") == "weak"
    assert d.get("B") == "hard"
    assert d.get("C") == "machine"
    assert d.get("D") == "p x z y"
    assert d.get("E") == "a c"
    assert d.get("F").split() == ["1", "2", "3"]
    assert d.get("H") == "machine-weak"
    assert d.get("G") == "changed"
    assert d.get("I") == "weak more"
    assert d.get("J") == "${UNDEFINED}"
    assert d.get("K") == "machine"
    assert d.get("L") == "l"
    assert "X" not in d


def test_reader_package_variables_and_require(tmp_path):
    (tmp_path / "part.inc").write_text('FROM_INC = "yes"\n')
    d = BBData(overrides=["edgecontainers"], python=lambda expr, d: "part.inc" if "DISTRO" in expr else "")
    d.set("PN", "foo")
    d.set("DISTRO", "edgecontainers")
    f = tmp_path / "foo.bb"
    f.write_text(
        "require ${@'part.inc' if d.getVar('DISTRO') == 'edgecontainers' else ''}\n"
        'SYSTEMD_SERVICE:${PN} = "a.service"\nSYSTEMD_SERVICE:${PN}:append = " b.service"\n'
        'FILESEXTRAPATHS:prepend:edgecontainers := "${THISDIR}/files:"\n'
    )
    parse_into(d, f, search=[tmp_path])
    assert d.get("FROM_INC") == "yes"
    assert d.get("SYSTEMD_SERVICE:foo") == "a.service b.service"
    assert d.get("FILESEXTRAPATHS") == f"{tmp_path}/files:"


def test_reader_rejects_what_it_cannot_read(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        _parse(tmp_path, "this is not bitbake\n")


def test_filespath_prefers_machine_then_distro_directories(tmp_path):
    """FILESPATH: for each base dir, the most specific override directory first."""
    lay = Layer("qemux86-64", "podman", False)
    rec = lay.recipe("rauc-conf")
    order = [p.name for p in rec.filespath[:5]]
    assert order == ["edgecontainers", "qemux86-64", "qemuall", "x86-64", "files"]
