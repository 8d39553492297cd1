"""bbcheck's set-up around BitBake (no BitBake run): as root it runs BitBake as
the build user, so nothing that user runs may live in the checkout, which can
be anywhere (under /root, in a mode-0700 directory as CI's clone is); when
that user cannot run kas or write the work dir it says so in one line; a step
that fails before BitBake prints anything shows the log's last lines."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from edgecontainers import bbcheck
from edgecontainers.errors import ConfigError
from edgecontainers.project import Project

ROOT = Path(__file__).resolve().parents[2]


def _has_build_user() -> bool:
    try:
        pwd.getpwnam(bbcheck.BUILD_USER)
    except KeyError:
        return False
    return True


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not _has_build_user(), reason="needs root and the user 'builder'"),
    pytest.mark.skipif(not shutil.which("runuser"), reason="needs runuser (util-linux)"),
]


@pytest.fixture
def shared_dir():
    """A directory every user can enter (pytest's tmp_path is mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="bbcheck-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _private_venv(tmp_path: Path) -> Path:
    """A stand-in for a project venv in a private checkout: bin/python and bin/kas."""
    bindir = tmp_path / "private" / ".venv" / "bin"
    bindir.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    for name in ("python", "kas"):
        (bindir / name).write_text("#!/bin/sh\nexit 0\n")
        (bindir / name).chmod(0o755)
    return bindir


def test_as_root_kas_comes_from_a_venv_the_build_user_can_run(tmp_path, monkeypatch):
    bindir = _private_venv(tmp_path)
    monkeypatch.setattr(bbcheck.os.sys, "executable", str(bindir / "python"))
    kas = bbcheck._kas_executable()
    assert not kas.startswith(str(tmp_path)), kas
    assert kas == str(bbcheck.kas_venv() / "bin" / "kas")
    proc = bbcheck.tools.run(["runuser", "-u", bbcheck.BUILD_USER, "--", kas, "--version"], capture=True)
    assert bbcheck._kas_version() in proc.stdout


def test_a_kas_the_build_user_cannot_run_is_one_clear_line(tmp_path, shared_dir):
    checker = bbcheck.Checker(Project(ROOT), work_dir=shared_dir / "work", log=lambda _: None)
    checker.kas = str(_private_venv(tmp_path) / "kas")
    with pytest.raises(ConfigError, match=rf"the build user '{bbcheck.BUILD_USER}' cannot run {checker.kas}$"):
        checker._check_access(shared_dir)


def test_a_work_dir_the_build_user_cannot_write_is_one_clear_line(tmp_path, shared_dir):
    checker = bbcheck.Checker(Project(ROOT), work_dir=shared_dir / "work", log=lambda _: None)
    with pytest.raises(ConfigError, match=rf"cannot write to {tmp_path}$"):
        checker._check_access(tmp_path)


def test_a_step_that_fails_before_bitbake_runs_shows_the_logs_last_lines(shared_dir):
    checker = bbcheck.Checker(Project(ROOT), work_dir=shared_dir / "work", log=lambda _: None)
    fake = shared_dir / "kas"
    fake.write_text("#!/bin/sh\necho \"env: '/root/x/.venv/bin/kas': Permission denied\" >&2\nexit 126\n")
    fake.chmod(0o755)
    checker.kas = str(fake)
    config = bbcheck.CI_SUBSET[0]
    cdir = shared_dir / "work" / config.name
    (cdir / "kas-work").mkdir(parents=True)
    os.chown(cdir / "kas-work", pwd.getpwnam(bbcheck.BUILD_USER).pw_uid, -1)
    step = checker.run_bitbake(config, cdir, "parse", "bitbake -p")
    assert not step.ok
    assert "Permission denied" in step.detail
