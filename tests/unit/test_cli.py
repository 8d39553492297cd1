"""The edgectl command line as a whole: help texts, usage errors, exit codes, --debug."""

from __future__ import annotations

import pytest
from fakes.helpers import edgectl

from edgecontainers import cli

MINE = ("build", "flash", "keys", "bundle")
NESTED = (("keys", "init"), ("keys", "show"), ("bundle", "info"))


def test_my_commands_are_registered_in_order():
    present = [c for c in cli.COMMANDS if c in MINE]
    assert present == list(MINE)


def test_top_level_help_lists_every_command():
    proc = edgectl("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: edgectl ")
    for name in MINE:
        line = next((ln for ln in proc.stdout.splitlines() if ln.strip().startswith(name + " ")), None)
        assert line is not None, name
        assert len(line.split()) > 3, line  # with a one-line description
    assert "exit codes: 0 success, 1 the job failed, 2 usage or configuration error." in proc.stdout


@pytest.mark.parametrize("argv", [(c,) for c in MINE] + list(NESTED), ids=" ".join)
def test_every_subcommand_has_help_with_examples(argv):
    proc = edgectl(*argv, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: edgectl {' '.join(argv)} ")
    assert "\nexamples:\n" in proc.stdout
    examples = proc.stdout.split("\nexamples:\n", 1)[1]
    assert f"edgectl {argv[0]}" in examples
    assert proc.stderr == ""


@pytest.mark.parametrize("name", MINE)
def test_top_level_commands_document_exit_codes(name):
    assert "exit codes:" in edgectl(name, "--help").stdout


def test_no_command_prints_help_and_exits_2():
    proc = edgectl()
    assert proc.returncode == 2
    assert "usage: edgectl" in proc.stderr


def test_unknown_command_is_one_usage_line():
    proc = edgectl("frobnicate")
    assert proc.returncode == 2
    assert "edgectl: error: argument COMMAND: invalid choice: 'frobnicate'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    plain = edgectl("keys", "show", "--dir", tmp_path / "none")
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr
    assert plain.stderr.splitlines()[0] == f"edgectl: error: no development keys in {tmp_path / 'none'}"
    for argv in (("--debug", "keys", "show"), ("keys", "show", "--debug")):
        debug = edgectl(*argv, "--dir", tmp_path / "none")
        assert debug.returncode == 2
        assert "Traceback (most recent call last)" in debug.stderr
        assert "ConfigError" in debug.stderr


def test_version():
    proc = edgectl("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("edgectl ")
