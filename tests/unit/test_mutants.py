"""The mutation run's own logic (scripts/edgecontainers/mutants.py): every mutant
applies to the checkout's layer and changes what the image builder installs; an
edit that no longer applies is an error, never a pass; outcomes are read from
pytest's exit code and JUnit XML."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from edgecontainers import mutants
from edgecontainers.commands import test as test_cmd
from edgecontainers.errors import ConfigError, UsageError
from edgecontainers.testimage.builder import compose
from edgecontainers.testimage.layer import Layer, default_layer

PROPERTIES = {
    "read-only root", "logs in RAM (/var/log on tmpfs)", "journald's RAM cap", "the app runs as non-root",
    "no-new-privileges", "the app's memory limit", "the app's tier slice", "/data binding (engine storage on /data)",
    "persisted machine-id", "production: no getty on the serial console", "production: SSH refuses passwords",
    "the health gate marks the slot good", "RAUC compatible", "RAUC keyring (the fleet CA)",
}  # fmt: skip


def test_one_mutant_per_promised_property():
    assert {m.prop for m in mutants.MUTANTS} == PROPERTIES
    assert len({m.name for m in mutants.MUTANTS}) == len(mutants.MUTANTS) >= 12


@pytest.fixture(scope="module")
def checkout_image_files():
    """dest -> rendered content of every layer file the production podman image installs."""
    comp = compose(Layer("qemux86-64", "podman", False))
    return {e.dest: r.render(e) for r in comp.recipes for e in r.edge_files()}, comp


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_each_mutant_changes_what_the_image_gets(mutant, tmp_path, checkout_image_files):
    """The edit applies once and reaches the image: an installed file, the image
    features or the distro settings the builder reads differ from the checkout's."""
    layer = tmp_path / "meta-edgecontainers"
    shutil.copytree(default_layer(), layer)
    mutant.apply(layer)
    files, comp = checkout_image_files
    mcomp = compose(Layer("qemux86-64", "podman", False, path=layer))
    mfiles = {e.dest: r.render(e) for r in mcomp.recipes for e in r.edge_files()}
    changed = {d for d in files.keys() | mfiles.keys() if files.get(d) != mfiles.get(d)}
    settings = {k for k in comp.layer.settings.keys() | mcomp.layer.settings.keys()
                if comp.layer.settings.get(k) != mcomp.layer.settings.get(k)}  # fmt: skip
    assert changed or settings or mcomp.features != comp.features, f"{mutant.name} changes nothing the image gets"


def test_a_mutant_that_no_longer_applies_is_an_error(tmp_path):
    layer = tmp_path / "meta-edgecontainers"
    shutil.copytree(default_layer(), layer)
    stale = mutants.Mutant("stale", "p", mutants.QUADLET, "User=0:0\n", "")
    with pytest.raises(ConfigError, match="update the mutant"):
        stale.apply(layer)


def test_unknown_mutant_names_are_refused():
    with pytest.raises(ConfigError, match="unknown mutant nope"):
        mutants.select(["ssh-passwords", "nope"])
    assert [m.name for m in mutants.select(["ssh-passwords"])] == ["ssh-passwords"]


JUNIT = """<?xml version="1.0"?><testsuites><testsuite name="pytest">
<testcase classname="t" name="test_ok"/>
<testcase classname="t" name="test_root_is_read_only[podman-production-direct]">
<failure message="AssertionError: / is mounted ['rw']&#10;more">...</failure></testcase>
<testcase classname="t" name="test_boots_to_multi_user_with_no_failed_units[podman-production-direct]">
<failure message="AssertionError: system state 'degraded'">...</failure></testcase>
</testsuite></testsuites>"""


@pytest.mark.parametrize(
    ("rc", "junit", "status"),
    [(1, JUNIT, "killed"), (0, None, "survived"), (2, None, "error"), (1, None, "error")],
)
def test_outcome_from_pytests_exit_code_and_junit(monkeypatch, tmp_path, rc, junit, status):
    root = tmp_path / "src"
    shutil.copytree(default_layer(), root / "meta-edgecontainers")
    results = tmp_path / "results"
    results.mkdir()
    seen = {}

    def fake_run(argv, **kwargs):
        seen["argv"] = argv
        if junit:
            Path(next(a for a in argv if a.startswith("--junitxml=")).split("=", 1)[1]).write_text(junit)
        return argparse.Namespace(returncode=rc, stdout="== 1 failed in 9s ==\n")

    monkeypatch.setattr(mutants, "run", fake_run)
    outcome = mutants.run_one(mutants.select(["no-read-only-rootfs"])[0], root, results, ["--boot", "direct"])
    assert outcome.status == status
    if status == "killed":
        assert outcome.detail.startswith("2 failed: test_root_is_read_only"), outcome.detail
        assert (
            "mounted ['rw']" in outcome.detail and "; test_boots_to_multi_user_with_no_failed_units[" in outcome.detail
        )
    argv = seen["argv"]
    layer = Path(argv[argv.index("--layer") + 1])
    assert (
        'IMAGE_FEATURES += "read-only-rootfs"'
        not in (layer / "recipes-core/images/edgecontainers-image.inc").read_text()
    )
    assert argv[argv.index("--layer-tag") + 1] == "mutant-no-read-only-rootfs" and "-x" not in argv


def test_run_all_ends_with_the_count(monkeypatch, tmp_path):
    lines = []
    results = {"ssh-passwords": "killed", "serial-getty": "survived"}

    def fake_one(m, root, res, args):
        return mutants.Outcome(m, results[m.name], "x", 1.0)

    monkeypatch.setattr(mutants, "run_one", fake_one)
    chosen = mutants.select(list(results))
    outcomes = mutants.run_all(chosen, tmp_path, tmp_path / "r", [], echo=lines.append)
    assert [o.status for o in outcomes] == ["killed", "survived"]
    assert lines[-1].startswith("1 of 2 mutants killed")
    assert lines[0].startswith("killed") and "ssh-passwords" in lines[0]


def test_jobs_run_mutants_side_by_side_and_keep_their_order(monkeypatch, tmp_path):
    import threading

    both = threading.Barrier(2, timeout=10)  # breaks (an error) unless two run at once
    lines = []

    def fake_one(m, root, res, args):
        both.wait()
        return mutants.Outcome(m, "killed", "x", 1.0)

    monkeypatch.setattr(mutants, "run_one", fake_one)
    chosen = mutants.select(["ssh-passwords", "serial-getty"])
    outcomes = mutants.run_all(chosen, tmp_path, tmp_path / "r", [], echo=lines.append, jobs=2)
    assert [o.mutant.name for o in outcomes] == ["ssh-passwords", "serial-getty"]
    assert lines[-1].startswith("2 of 2 mutants killed")
    with pytest.raises(ConfigError, match="at least 1"):
        mutants.run_all(chosen, tmp_path, tmp_path / "r", [], echo=lines.append, jobs=0)


def test_mutants_boot_podman_production_directly_unless_told():
    ns = argparse.Namespace(image=None, deploy_dir=None, engine=None, variant=None, boot=None, pytest_args=["--", "-v"])
    assert test_cmd.mutant_pytest_args(ns) == [
        "--engine",
        "podman",
        "--variant",
        "production",
        "--boot",
        "direct",
        "-v",
    ]
    ns.deploy_dir = Path("x")
    with pytest.raises(UsageError):
        test_cmd.mutant_pytest_args(ns)


def test_a_mutant_that_needs_a_bootloader_boots_through_it(monkeypatch, tmp_path):
    """The health gate's mark-good is visible only where a bootloader counts the boot:
    that mutant runs with --boot grub whatever the run's boot path is."""
    root = tmp_path / "src"
    shutil.copytree(default_layer(), root / "meta-edgecontainers")
    seen = {}

    def fake_run(argv, **kwargs):
        seen["argv"] = argv
        return argparse.Namespace(returncode=0, stdout="")

    monkeypatch.setattr(mutants, "run", fake_run)
    gate = mutants.select(["health-gate-never-marks"])[0]
    assert gate.boot == "grub"
    mutants.run_one(gate, root, tmp_path / "r", ["--engine", "podman", "--boot", "direct", "-v"])
    argv = seen["argv"]
    assert argv.count("--boot") == 1 and argv[argv.index("--boot") + 1] == "grub", argv
    assert argv[-1] == "grub" and "-v" in argv and "podman" in argv
