"""``edgectl bundle info`` with real RAUC bundles signed by keys from ``edgectl keys init``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fakes.helpers import edgectl, error_line, run

from edgecontainers import pki

pytestmark = pytest.mark.skipif(
    not (shutil.which("rauc") and shutil.which("mksquashfs") and shutil.which("openssl")),
    reason="needs rauc, squashfs-tools and openssl (apt install rauc squashfs-tools openssl)",
)

COMPATIBLE = "edgecontainers-unittest"


def make_bundle(out: Path, cert: Path, key: Path, work: Path) -> Path:
    """A real verity bundle with one 20 kB image (rauc needs a squashfs > 4 KiB)."""
    content = work / f"content-{out.stem}"
    content.mkdir(parents=True)
    (content / "rootfs.ext4").write_bytes(os.urandom(20000))
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={COMPATIBLE}\nversion=1.2.3\n\n[bundle]\nformat=verity\n\n"
        "[image.rootfs]\nfilename=rootfs.ext4\n"
    )
    run("rauc", "bundle", f"--cert={cert}", f"--key={key}", content, out)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("bundles")
    ours, theirs = tmp / "ours", tmp / "theirs"
    pki.init(ours)
    pki.init(theirs)
    good = make_bundle(tmp / "good.raucb", ours / pki.SIGNING_CERT, ours / pki.SIGNING_KEY, tmp)
    foreign = make_bundle(tmp / "foreign.raucb", theirs / pki.SIGNING_CERT, theirs / pki.SIGNING_KEY, tmp)
    return {"tmp": tmp, "ours": ours, "theirs": theirs, "good": good, "foreign": foreign}


@pytest.fixture
def env(world) -> dict[str, str]:
    return {pki.ENV_KEY_DIR: str(world["ours"])}


def test_info_verifies_and_prints_the_manifest(world, env):
    proc = edgectl("bundle", "info", world["good"], env=env)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith(f"signature: verified against {world['ours'] / pki.CA_CERT}")
    assert "CN = edgecontainers DEVELOPMENT signing" in first
    assert f"Compatible: \t'{COMPATIBLE}'" in proc.stdout
    assert "'1.2.3'" in proc.stdout
    assert "rootfs.ext4" in proc.stdout
    assert "\x1b[" not in proc.stdout  # no colour codes when not on a terminal


def test_info_json(world, env):
    proc = edgectl("bundle", "info", "--json", world["good"], env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["compatible"] == COMPATIBLE and data["version"] == "1.2.3"
    assert "signature: verified" in proc.stderr


def test_bundle_signed_by_another_ca_is_not_verified(world, env):
    line = error_line(edgectl("bundle", "info", world["foreign"], env=env), 1)
    assert "not verified" in line and "unable to get local issuer certificate" in line
    # ... and with that CA as keyring, it is
    assert (
        edgectl("bundle", "info", "--keyring", world["theirs"] / pki.CA_CERT, world["foreign"]).returncode
        == 0
    )


@pytest.mark.parametrize("offset_from_end", [300, 700, 900])
def test_tampered_signature_is_not_verified(world, env, tmp_path, offset_from_end):
    data = bytearray(world["good"].read_bytes())
    data[len(data) - offset_from_end] ^= 0x55
    tampered = tmp_path / "tampered.raucb"
    tampered.write_bytes(bytes(data))
    line = error_line(edgectl("bundle", "info", tampered, env=env), 1)
    assert "not verified" in line


def test_codesigning_only_certificate_is_rejected_by_raucs_default_purpose(world, env, tmp_path):
    """Why 'keys init' adds emailProtection: without it RAUC's default check fails."""
    ours = world["ours"]
    run(
        "openssl",
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        tmp_path / "k.pem",
    )
    run(
        "openssl",
        "req",
        "-new",
        "-key",
        tmp_path / "k.pem",
        "-subj",
        "/CN=codesign only",
        "-out",
        tmp_path / "r",
    )
    (tmp_path / "ext").write_text("keyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n")
    ca = ["-CA", ours / pki.CA_CERT, "-CAkey", ours / pki.CA_KEY, "-set_serial", "7", "-days", "30"]
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        tmp_path / "r",
        *ca,
        "-extfile",
        tmp_path / "ext",
        "-out",
        tmp_path / "c.pem",
    )
    bundle = make_bundle(tmp_path / "cs.raucb", tmp_path / "c.pem", tmp_path / "k.pem", tmp_path)
    proc = edgectl("bundle", "info", bundle, env=env)
    line = error_line(proc, 1)
    assert "unsuitable certificate purpose" in line
    assert "emailProtection" in proc.stderr  # the hint explains


def test_not_a_bundle(world, env, tmp_path):
    junk = tmp_path / "junk.raucb"
    junk.write_bytes(b"not a bundle")
    assert "not verified" in error_line(edgectl("bundle", "info", junk, env=env), 1)


def test_missing_keyring_is_a_configuration_error(world, tmp_path):
    proc = edgectl("bundle", "info", world["good"], env={pki.ENV_KEY_DIR: str(tmp_path / "none")})
    line = error_line(proc, 2)
    assert "no keyring" in line
    assert "edgectl keys init" in proc.stderr


def test_missing_bundle_is_a_usage_error(env, tmp_path):
    assert "does not exist" in error_line(edgectl("bundle", "info", tmp_path / "nope.raucb", env=env), 2)


def test_missing_action_is_a_usage_error(env):
    proc = edgectl("bundle", env=env)
    assert proc.returncode == 2 and "required: ACTION" in proc.stderr
