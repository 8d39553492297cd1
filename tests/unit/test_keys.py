"""``edgectl keys``: the development PKI, made with the real openssl command line."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes.helpers import edgectl, error_line, run

from edgecontainers import pki

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl (apt install openssl)")


def openssl(*args: str | Path) -> str:
    return run("openssl", *args).stdout


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose default key directory is inside tmp_path."""
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "HOME": str(tmp_path)}
    env[pki.ENV_KEY_DIR] = ""
    return env


def default_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "edgecontainers" / "keys" / "development"


def test_init_creates_a_development_ca_and_signing_certificate(tmp_path, home):
    proc = edgectl("keys", "init", env=home)
    assert proc.returncode == 0, proc.stderr
    key_dir = default_dir(tmp_path)
    assert sorted(p.name for p in key_dir.iterdir()) == sorted(pki.ALL_FILES)
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    for name in (pki.CA_KEY, pki.SIGNING_KEY):
        assert stat.S_IMODE((key_dir / name).stat().st_mode) == 0o600, name
    ca = openssl("x509", "-in", key_dir / pki.CA_CERT, "-noout", "-subject", "-ext", "basicConstraints")
    assert "CN = edgecontainers DEVELOPMENT CA" in ca and "CA:TRUE" in ca
    signing = openssl("x509", "-in", key_dir / pki.SIGNING_CERT, "-noout", "-text")
    assert "CN = edgecontainers DEVELOPMENT signing" in signing
    assert "Issuer: O = edgecontainers" in signing and "CN = edgecontainers DEVELOPMENT CA" in signing
    assert "Digital Signature" in signing
    assert "Code Signing, E-mail Protection" in signing
    assert "CA:FALSE" in signing
    # issued by the CA, accepted for the purpose RAUC checks by default and for codesign
    ok = openssl(
        "verify", "-purpose", "smimesign", "-CAfile", key_dir / pki.CA_CERT, key_dir / pki.SIGNING_CERT
    )
    assert ok.strip().endswith("OK")
    # the key belongs to the certificate
    cert_pub = openssl("x509", "-in", key_dir / pki.SIGNING_CERT, "-noout", "-pubkey")
    assert cert_pub == openssl("pkey", "-in", key_dir / pki.SIGNING_KEY, "-pubout")
    assert str(key_dir) in proc.stdout


def test_show_prints_directory_fingerprints_and_expiry(tmp_path, home):
    assert edgectl("keys", "init", "--days", "400", env=home).returncode == 0
    key_dir = default_dir(tmp_path)
    proc = edgectl("keys", "show", env=home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"development signing keys in {key_dir}"
    for name in (pki.CA_CERT, pki.SIGNING_CERT):
        fp = (
            openssl("x509", "-in", key_dir / name, "-noout", "-fingerprint", "-sha256")
            .strip()
            .split("=", 1)[1]
        )
        assert fp in proc.stdout
        end = openssl("x509", "-in", key_dir / name, "-noout", "-enddate").strip().split("=", 1)[1]
        expiry = datetime.strptime(" ".join(end.split()), "%b %d %H:%M:%S %Y %Z")
        assert f"to {expiry:%Y-%m-%d %H:%M} UTC" in proc.stdout
    assert "(399 days left)" in proc.stdout or "(400 days left)" in proc.stdout
    assert f"export EDGECONTAINERS_KEY_DIR={key_dir}" in proc.stdout
    path = edgectl("keys", "show", "--path", env=home)
    assert path.stdout == f"{key_dir}\n"


def test_init_never_overwrites(tmp_path, home):
    assert edgectl("keys", "init", env=home).returncode == 0
    key_dir = default_dir(tmp_path)
    before = {p.name: p.read_bytes() for p in key_dir.iterdir()}
    line = error_line(edgectl("keys", "init", env=home), 1)
    assert "already exist" in line and "refusing to overwrite" in line
    assert {p.name: p.read_bytes() for p in key_dir.iterdir()} == before


def test_init_refuses_when_any_single_key_file_exists(tmp_path, home):
    key_dir = tmp_path / "partial"
    key_dir.mkdir()
    (key_dir / pki.SIGNING_KEY).write_text("someone's key\n")
    line = error_line(edgectl("keys", "init", "--dir", key_dir, env=home), 1)
    assert pki.SIGNING_KEY in line
    assert sorted(p.name for p in key_dir.iterdir()) == [pki.SIGNING_KEY]
    assert (key_dir / pki.SIGNING_KEY).read_text() == "someone's key\n"


def test_init_refuses_a_directory_inside_a_git_work_tree(tmp_path, home):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    line = error_line(edgectl("keys", "init", "--dir", repo / "keys" / "dev", env=home), 1)
    assert "inside the git work tree" in line
    assert not (repo / "keys").exists()


def test_key_directory_precedence(tmp_path, home, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(pki.ENV_KEY_DIR, raising=False)
    assert pki.resolve_key_dir() == tmp_path / "xdg" / "edgecontainers" / "keys" / "development"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert (
        pki.resolve_key_dir()
        == tmp_path / "h" / ".local" / "share" / "edgecontainers" / "keys" / "development"
    )
    monkeypatch.setenv(pki.ENV_KEY_DIR, str(tmp_path / "env"))
    assert pki.resolve_key_dir() == tmp_path / "env"
    assert pki.resolve_key_dir(tmp_path / "flag") == tmp_path / "flag"


def test_env_variable_selects_the_directory(tmp_path, home):
    env = {**home, pki.ENV_KEY_DIR: str(tmp_path / "from-env")}
    assert edgectl("keys", "init", env=env).returncode == 0
    assert (tmp_path / "from-env" / pki.SIGNING_KEY).is_file()
    assert edgectl("keys", "show", "--path", env=env).stdout.strip() == str(tmp_path / "from-env")


def test_show_without_keys_is_a_configuration_error(tmp_path, home):
    line = error_line(edgectl("keys", "show", env=home), 2)
    assert "no development keys" in line


def test_show_detects_a_key_that_does_not_match_the_certificate(tmp_path, home):
    key_dir = tmp_path / "k"
    assert edgectl("keys", "init", "--dir", key_dir, env=home).returncode == 0
    os.unlink(key_dir / pki.SIGNING_KEY)
    openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        key_dir / pki.SIGNING_KEY,
    )
    proc = edgectl("keys", "show", "--dir", key_dir, env=home)
    line = error_line(proc, 1)
    assert "unusable" in line and "is not the key of" in line
    assert "PROBLEM:" in proc.stdout


def test_show_detects_a_certificate_from_another_ca(tmp_path, home):
    mine, other = tmp_path / "mine", tmp_path / "other"
    for d in (mine, other):
        assert edgectl("keys", "init", "--dir", d, env=home).returncode == 0
    shutil.copy(other / pki.CA_CERT, mine / pki.CA_CERT)
    line = error_line(edgectl("keys", "show", "--dir", mine, env=home), 1)
    assert "does not verify against the CA" in line


def test_expired_and_expiring_certificates(tmp_path):
    key_dir = tmp_path / "k"
    pki.init(key_dir, days=10)
    assert any("expires in" in w for w in pki.load(key_dir).warnings)
    later = datetime.now(UTC) + timedelta(days=11)
    problems = pki.load(key_dir, now=later).problems
    assert any("expired" in p for p in problems)


def test_rsa_keys(tmp_path, home):
    key_dir = tmp_path / "rsa"
    assert edgectl("keys", "init", "--dir", key_dir, "--key-type", "rsa", env=home).returncode == 0
    text = openssl("x509", "-in", key_dir / pki.SIGNING_CERT, "-noout", "-text")
    assert "Public-Key: (4096 bit)" in text
    assert edgectl("keys", "show", "--dir", key_dir, env=home).returncode == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["keys"], "the following arguments are required: ACTION"),
        (["keys", "rotate"], "invalid choice: 'rotate'"),
        (["keys", "init", "--days", "0"], "--days must be between 1 and 36500"),
        (["keys", "init", "--key-type", "dsa"], "invalid choice: 'dsa'"),
    ],
)
def test_bad_arguments_are_exit_2(tmp_path, home, argv, needle):
    proc = edgectl(*argv, env=home)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()
