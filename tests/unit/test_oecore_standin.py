"""The test image's stand-ins for oe-core's read-only-rootfs plumbing
(testimage/oecore.py): the volatile-binds units are the ones oe-core's recipe
generates (compared with its template and do_compile, when the upstream
checkout is present), and sshd_check_keys makes the keys sshd's configuration
names, as oe-core's does."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from edgecontainers.bbcheck import layers_dir
from edgecontainers.testimage import oecore

VOLATILE_BINDS = layers_dir() / "openembedded-core-wrynose/meta/recipes-core/volatile-binds"


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, in order; comments and Description= left out."""
    out, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if key != "Description":
            out.append((section, key, " ".join(value.split())))
    return out


def _oe_core_unit(what: str, where: str, var_lib: bool) -> str:
    """volatile-binds.bb do_compile's sed over volatile-binds.service.in, in Python."""
    text = (VOLATILE_BINDS / "files/volatile-binds.service.in").read_text()
    for key, value in (("@what@", what), ("@where@", where), ("@whatparent@", what.rsplit("/", 1)[0]),
                       ("@whereparent@", where.rsplit("/", 1)[0]), ("@avoid_overlayfs@", "0")):  # fmt: skip
        text = text.replace(key, value)
    if var_lib:
        text = re.sub(r"^(Before=.*)$", r"\1 systemd-random-seed.service", text, flags=re.M)
        text = re.sub(r"^(WantedBy=.*)$", r"\1 systemd-random-seed.service", text, flags=re.M)
    return text


@pytest.mark.skipif(not VOLATILE_BINDS.is_dir(), reason=f"no oe-core checkout at {VOLATILE_BINDS}")
def test_volatile_binds_units_are_oe_cores():
    recipe = (VOLATILE_BINDS / "volatile-binds.bb").read_text()
    default = re.search(r'^VOLATILE_BINDS \?= "(.*?)"$', recipe, re.M | re.S)
    assert default, "volatile-binds.bb has no VOLATILE_BINDS ?= any more"
    pairs = [tuple(line.replace("\\n", "").replace("\\", "").split()) for line in default.group(1).splitlines()]
    pairs = [tuple(p.replace("${localstatedir}", "/var") for p in pair) for pair in pairs if pair]
    assert tuple(pairs) == oecore.VOLATILE_BINDS_DEFAULT
    assert 'what[1:].replace("/", "-")' in recipe  # the unit name rule volatile_bind_service follows
    for what, where in oecore.VOLATILE_BINDS_DEFAULT:
        ours = oecore.volatile_bind_unit(what, where)
        assert _directives(ours) == _directives(_oe_core_unit(what, where, where == "/var/lib")), what
        assert oecore.volatile_bind_service(what) == what[1:].replace("/", "-") + ".service"


def test_the_layer_keeps_oe_cores_volatile_binds():
    from edgecontainers.testimage.layer import Layer

    assert oecore.volatile_binds(Layer("qemux86-64", "podman", False).settings) == oecore.VOLATILE_BINDS_DEFAULT


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_sshd_check_keys_creates_the_configured_host_keys_once(tmp_path: Path):
    keys = tmp_path / "var/lib/ssh"
    fake = tmp_path / "bin"
    fake.mkdir()
    # sshd -G prints the effective configuration; this one names two host keys.
    (fake / "sshd").write_text(f"#!/bin/sh\nprintf 'port 22\\nhostkey {keys}/ssh_host_ed25519_key\\n"
                               f"hostkey {keys}/ssh_host_ecdsa_key\\n'\n")  # fmt: skip
    (fake / "sshd").chmod(0o755)
    script = tmp_path / "sshd_check_keys"
    script.write_text(oecore.SSHD_CHECK_KEYS_SCRIPT.replace("/etc/default/ssh", str(tmp_path / "default-ssh")))
    env = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True, timeout=120)
    assert sorted(p.name for p in keys.iterdir()) == [
        "ssh_host_ecdsa_key", "ssh_host_ecdsa_key.pub", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub",
    ]  # fmt: skip
    assert stat.S_IMODE((keys / "ssh_host_ed25519_key").stat().st_mode) == 0o600
    before = (keys / "ssh_host_ed25519_key").read_bytes()
    subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True, timeout=120)
    assert (keys / "ssh_host_ed25519_key").read_bytes() == before, "an existing key was replaced"
