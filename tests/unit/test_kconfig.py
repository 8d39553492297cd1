"""kconfig.py's own logic, without a kernel tree: which fragments the layer's
kernel feature merges, the last value of an option wins, and what counts as
an option not held as asked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgecontainers import kconfig
from edgecontainers.errors import ConfigError

LAYER = Path(__file__).resolve().parents[2] / "meta-edgecontainers"


def test_the_fragments_are_the_kconf_lines_of_the_feature_in_order():
    names = [p.name for p in kconfig.fragments(LAYER)]
    assert names == ["edgecontainers-containers.cfg", "edgecontainers-hardening.cfg"]


def test_a_layer_without_the_feature_is_one_line(tmp_path: Path):
    with pytest.raises(ConfigError, match="no kernel feature"):
        kconfig.fragments(tmp_path)


def test_the_last_value_of_an_option_wins(tmp_path: Path):
    a, b = tmp_path / "a.cfg", tmp_path / "b.cfg"
    a.write_text("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n")
    b.write_text("# a comment\nCONFIG_A=m\nCONFIG_B=y\n")
    got = {o.name: (o.value, o.where) for o in kconfig.read_fragments([a, b])}
    assert got == {"CONFIG_A": ("m", "b.cfg:2"), "CONFIG_B": ("y", "b.cfg:3"), "CONFIG_C": ("m", "a.cfg:3")}


def test_compare_names_unknown_dropped_and_changed_options():
    asked = [("CONFIG_OK", "y"), ("CONFIG_GONE", "y"), ("CONFIG_DROPPED", "y"), ("CONFIG_WEAK", "y"),
             ("CONFIG_OFF", "n"), ("CONFIG_OFF_ABSENT", "n"), ("CONFIG_FORCED_ON", "n"),
             ("CONFIG_NUM", "10")]  # fmt: skip
    opts = [kconfig.Option(n, v, f"f.cfg:{i}") for i, (n, v) in enumerate(asked, 1)]
    config = {"CONFIG_OK": "y", "CONFIG_DROPPED": "n", "CONFIG_WEAK": "m", "CONFIG_OFF": "n",
              "CONFIG_FORCED_ON": "y", "CONFIG_NUM": "0"}  # fmt: skip
    symbols = {o.name for o in opts} - {"CONFIG_GONE"}
    problems = [str(p) for p in kconfig.compare(opts, config, symbols)]
    assert problems == [
        "CONFIG_GONE (f.cfg:2): no such option in this kernel",
        "CONFIG_DROPPED=y (f.cfg:3): olddefconfig dropped it (its dependencies are not met)",
        "CONFIG_WEAK=y (f.cfg:4): olddefconfig made it m",
        "CONFIG_FORCED_ON (f.cfg:7): asked 'not set', olddefconfig made it y",
        "CONFIG_NUM=10 (f.cfg:8): olddefconfig made it 0",
    ]


def test_a_bad_source_is_one_line_and_exit_2(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "edgecontainers", "check", "kernel", "--source", str(tmp_path / "x")],
                          capture_output=True, text=True, cwd=LAYER.parent)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") <= 1 and "not a kernel tree or a tarball" in proc.stderr, proc.stderr


def test_an_option_of_one_series_only_is_a_note_and_the_rest_still_fails():
    opt = kconfig.Option("CONFIG_NEW", "y", "f.cfg:1")
    old_opt = kconfig.Option("CONFIG_OLD", "y", "f.cfg:2")
    older = kconfig.TreeResult("6.12.1", "x86_64", 2, [kconfig.Problem(opt, "unknown", "CONFIG_NEW: no such option")],
                               {"CONFIG_OLD"})  # fmt: skip
    newer = kconfig.TreeResult("7.3.1", "x86_64", 2, [kconfig.Problem(old_opt, "unknown", "CONFIG_OLD: no such")],
                               {"CONFIG_NEW"})  # fmt: skip
    failures, notes = kconfig.verdict([older, newer])
    assert failures == [] and len(notes) == 2 and "not in Linux 6.12.1, in Linux 7.3.1" in notes[0]
    alone = kconfig.TreeResult("7.3.1", "x86_64", 1, [kconfig.Problem(opt, "unknown", "CONFIG_NEW: no such")], set())
    assert kconfig.verdict([alone])[0] == ["x86_64 Linux 7.3.1: CONFIG_NEW: no such"]
    dropped = kconfig.Problem(opt, "dropped", "CONFIG_NEW=y: olddefconfig dropped it")
    both = [kconfig.TreeResult("6.12.1", "x86_64", 1, [dropped], {"CONFIG_NEW"}), newer]
    assert kconfig.verdict(both)[0][0] == "x86_64 Linux 6.12.1: CONFIG_NEW=y: olddefconfig dropped it"
