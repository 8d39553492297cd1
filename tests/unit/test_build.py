"""``edgectl build`` against a fake kas that records its arguments and deploys fake artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from fakes.helpers import REPO, fake_bin, records

from edgecontainers import cli, kasbuild, pki

MIRROR = "https://sstate.example.com/wrynose"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key_dir = tmp_path_factory.mktemp("keys") / "development"
    pki.init(key_dir)
    return key_dir


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: Path):
    """A normal user with the fake kas first on PATH, keys, and a build dir in tmp."""
    bindir = fake_bin(tmp_path / "bin", kas="kas", kas_container="kas")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KAS_LOG", str(tmp_path / "kas.log"))
    monkeypatch.setenv("KAS_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv(pki.ENV_KEY_DIR, str(keys))
    unset = ("FAKE_KAS_EXIT", "FAKE_KAS_NO_ARTIFACTS", "FAKE_KAS_SKIP", "KAS_WORK_DIR", "EDGECONTAINERS_ROOT")
    for var in unset:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.chdir(tmp_path)
    Env = namedtuple("Env", "tmp log build keys")
    return Env(tmp_path, tmp_path / "kas.log", tmp_path / "build", keys)


def test_build_composes_kas_files_and_passes_keys_and_mirror(env, capfd):
    rc = cli.main(["build", "qemux86-64", "--engine", "docker", "--dev", "--sstate-mirror", MIRROR])
    out, err = capfd.readouterr()
    assert rc == 0, err
    (call,) = records(env.log)
    assert call["prog"] == "kas"
    config = "kas/qemux86-64.yml:kas/opt/docker.yml:kas/opt/dev.yml:kas/opt/sstate-mirror.yml"
    assert call["argv"] == ["build", config]
    assert call["cwd"] == str(REPO)
    assert call["env"]["EDGECONTAINERS_KEY_DIR"] == str(env.keys)
    assert call["env"]["SSTATE_MIRROR_URL"] == MIRROR
    # kas's own output is passed through, before edgectl's summary
    assert out.index("NOTE: Executing Tasks") < out.index("build finished")


def test_build_summary_and_manifest_list_only_this_builds_newest_artifacts(env, capfd):
    assert cli.main(["build", "raspberrypi4-64"]) == 0
    out, _ = capfd.readouterr()
    (call,) = records(env.log)
    assert call["argv"] == ["build", "kas/raspberrypi4-64.yml"]

    manifest = json.loads((env.build / "edgectl-manifest-raspberrypi4-64.json").read_text())
    assert manifest["machine"] == "raspberrypi4-64"
    assert manifest["variant"] == "production"
    assert manifest["engine"] == "podman"
    assert manifest["kas_config"] == "kas/raspberrypi4-64.yml"
    assert manifest["missing"] == []
    arts = {a["kind"]: a for a in manifest["artifacts"]}
    assert sorted(arts) == ["bmap", "bundle", "image", "sbom"]
    deploy = env.build / "tmp" / "deploy" / "images" / "raspberrypi4-64"
    expected = {
        "image": "edgecontainers-image-raspberrypi4-64.rootfs-20261129120000.wic.zst",
        "bmap": "edgecontainers-image-raspberrypi4-64.rootfs-20261129120000.wic.bmap",
        "bundle": "edgecontainers-bundle-raspberrypi4-64-20261129120000.raucb",
        "sbom": "edgecontainers-image-raspberrypi4-64.rootfs-20261129120000.spdx.json",
    }
    for kind, name in expected.items():
        real = deploy / name
        art = arts[kind]
        assert art["file"] == str(real), kind  # the newest, not the 2026-01-01 build nor the dev image
        assert art["size"] == real.stat().st_size
        assert art["sha256"] == hashlib.sha256(real.read_bytes()).hexdigest()
        assert Path(art["path"]).is_symlink()
    assert arts["bmap"]["details"] == {"image_size": 64 * 1024 * 1024, "mapped_bytes": 256 * 4096}
    # the summary names each artifact with its size
    for kind in expected:
        link = Path(arts[kind]["path"]).name
        line = next(line for line in out.splitlines() if link in line)
        assert line.split()[0] == kind
    assert "edgectl flash " in out and "/dev/sdX" in out
    assert "manifest: " in out


def test_dev_build_reports_dev_artifacts_and_its_own_manifest(env, capfd):
    assert cli.main(["build", "qemuarm64", "--dev"]) == 0
    manifest = json.loads((env.build / "edgectl-manifest-qemuarm64-dev.json").read_text())
    assert manifest["variant"] == "development"
    names = [Path(a["file"]).name for a in manifest["artifacts"]]
    assert len(names) == 4
    assert all(n.startswith(("edgecontainers-image-dev-", "edgecontainers-bundle-dev-")) for n in names)


def test_missing_artifact_kinds_are_shown_and_recorded(env, capfd, monkeypatch):
    monkeypatch.setenv("FAKE_KAS_SKIP", "sbom,bundle")
    assert cli.main(["build", "qemux86-64", "--manifest", str(env.tmp / "m.json")]) == 0
    out, _ = capfd.readouterr()
    manifest = json.loads((env.tmp / "m.json").read_text())
    assert manifest["missing"] == ["bundle", "sbom"]
    assert "bundle     (not found)" in out and "sbom       (not found)" in out


def test_kas_failure_is_exit_1_with_one_line_and_no_manifest(env, capfd, monkeypatch):
    monkeypatch.setenv("FAKE_KAS_EXIT", "3")
    rc = cli.main(["build", "qemux86-64"])
    out, err = capfd.readouterr()
    assert rc == 1
    assert "ERROR: Task do_rootfs failed (fake)" in out  # kas's output was shown live
    errors = [line for line in err.splitlines() if line.startswith("edgectl: error:")]
    assert len(errors) == 1 and "exit code 3" in errors[0]
    assert "Traceback" not in err
    assert not list(env.build.glob("edgectl-manifest-*.json"))


def test_no_artifacts_after_a_successful_kas_is_a_failure(env, capfd, monkeypatch):
    monkeypatch.setenv("FAKE_KAS_NO_ARTIFACTS", "1")
    assert cli.main(["build", "qemux86-64"]) == 1
    assert "no artifacts" in capfd.readouterr().err


def test_missing_keys_is_a_configuration_error_and_kas_does_not_run(env, capfd, tmp_path):
    rc = cli.main(["build", "qemux86-64", "--key-dir", str(tmp_path / "nokeys")])
    err = capfd.readouterr().err
    assert rc == 2
    assert "no signing keys" in err and "edgectl keys init" in err
    assert records(env.log) == []


def test_root_is_refused_without_container(env, capfd, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    rc = cli.main(["build", "qemux86-64"])
    err = capfd.readouterr().err
    assert rc == 2
    assert "refusing to run kas as root" in err and "--container" in err
    assert records(env.log) == []


def test_container_build_mounts_keys_and_forwards_variables(env, capfd, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # kas-container may be started by root
    auth = tmp_path / "authorized_keys"
    auth.write_text("ssh-ed25519 AAAA test\n")
    rc = cli.main(
        ["build", "raspberrypi5", "--container", "--sstate-mirror", MIRROR, "--authorized-keys", str(auth)]
    )
    assert rc == 0, capfd.readouterr().err
    (call,) = records(env.log)
    assert call["prog"] == "kas-container"
    assert call["argv"][0] == "--runtime-args"
    runtime = call["argv"][1].split()
    pairs = list(zip(runtime[::2], runtime[1::2], strict=True))
    assert ("-v", f"{env.keys}:/edgecontainers/keys:ro") in pairs
    assert ("-e", "EDGECONTAINERS_KEY_DIR=/edgecontainers/keys") in pairs
    assert ("-e", f"SSTATE_MIRROR_URL={MIRROR}") in pairs
    assert ("-v", f"{auth}:/edgecontainers/ssh/authorized_keys:ro") in pairs
    assert ("-e", "EDGECONTAINERS_SSH_AUTHORIZED_KEYS=/edgecontainers/ssh/authorized_keys") in pairs
    assert call["argv"][2:] == ["build", "kas/raspberrypi5.yml:kas/opt/sstate-mirror.yml"]


def test_extra_options_and_hashserve(env, capfd):
    rc = cli.main(["build", "qemux86-64", "-o", "shared-cache", "--hashserve", "wss://hash.example.com/ws"])
    assert rc == 0
    (call,) = records(env.log)
    assert call["argv"][1] == "kas/qemux86-64.yml:kas/opt/shared-cache.yml:kas/opt/sstate-mirror.yml"
    assert call["env"]["HASHSERVE_UPSTREAM"] == "wss://hash.example.com/ws"
    assert call["env"]["SSTATE_MIRROR_URL"] is None


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["build", "no-such-board"], "unknown machine 'no-such-board'; valid machines: "),
        (["build", "qemux86-64", "-o", "turbo"], "unknown option 'turbo'"),
        (["build", "qemux86-64", "-o", "docker"], "select it with --engine docker"),
        (["build", "qemux86-64", "--engine", "lxc"], "invalid choice: 'lxc'"),
        (["build", "qemux86-64", "--sstate-mirror", "sstate.example.com"], "--sstate-mirror wants a URL"),
        (["build", "qemux86-64", "--authorized-keys", "/nonexistent/keys"], "is not a file"),
    ],
)
def test_bad_input_is_exit_2_with_one_line(env, capfd, argv, needle):
    rc = cli.main(argv)
    err = capfd.readouterr().err
    assert rc == 2
    assert needle in err
    assert "Traceback" not in err
    assert records(env.log) == []


def test_kas_not_installed_is_exit_2_with_install_hint(env, capfd, monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert cli.main(["build", "qemux86-64"]) == 2
    err = capfd.readouterr().err
    assert "'kas' is not installed" in err and "pip install kas" in err


def test_low_disk_space_warns_but_builds(env, capfd, monkeypatch):
    usage = namedtuple("usage", "total used free")
    free = 42 * 10**9
    monkeypatch.setattr(kasbuild.shutil, "disk_usage", lambda p: usage(10**12, 10**12 - free, free))
    assert cli.main(["build", "qemux86-64"]) == 0
    err = capfd.readouterr().err
    assert "warning: only 42 GB free" in err and "100 GB" in err
    assert len(records(env.log)) == 1


def test_enough_disk_space_does_not_warn(env, capfd, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(kasbuild.shutil, "disk_usage", lambda p: usage(10**13, 0, 500 * 10**9))
    assert cli.main(["build", "qemux86-64"]) == 0
    assert "warning" not in capfd.readouterr().err


def test_dry_run_shows_the_command_and_runs_nothing(env, capfd):
    assert cli.main(["build", "raspberrypi4-64", "--dev", "--dry-run"]) == 0
    out = capfd.readouterr().out
    assert f"EDGECONTAINERS_KEY_DIR={env.keys} kas build kas/raspberrypi4-64.yml:kas/opt/dev.yml" in out
    assert records(env.log) == []


def test_build_dir_follows_kas_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("KAS_BUILD_DIR", raising=False)
    monkeypatch.delenv("KAS_WORK_DIR", raising=False)
    assert kasbuild.build_dir_for(REPO) == REPO / "build"
    monkeypatch.setenv("KAS_WORK_DIR", str(tmp_path / "work"))
    assert kasbuild.build_dir_for(REPO) == tmp_path / "work" / "build"
    monkeypatch.setenv("KAS_BUILD_DIR", str(tmp_path / "b"))
    assert kasbuild.build_dir_for(REPO) == tmp_path / "b"


def test_fake_kas_is_what_runs(env):
    # Guard against a real kas being picked up instead of the fake.
    assert shutil.which("kas") == str(env.tmp / "bin" / "kas")
