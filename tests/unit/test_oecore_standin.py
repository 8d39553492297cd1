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
from edgecontainers.errors import ConfigError
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


# ---------------------------------------------------------------- read-only-rootfs, fs-perms
OE_CORE = layers_dir() / "openembedded-core-wrynose/meta"
needs_oe_core = pytest.mark.skipif(not OE_CORE.is_dir(), reason=f"no oe-core checkout at {OE_CORE}")


def _entries(text: str) -> list[list[str]]:
    return [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


@needs_oe_core
def test_the_fstab_is_base_files_and_read_only_rootfs_edits_it_as_oe_cores_hook(tmp_path: Path):
    upstream = (OE_CORE / "recipes-core/base-files/base-files/fstab").read_text()
    assert _entries(oecore.BASE_FILES_FSTAB) == _entries(upstream)
    # read_only_rootfs_hook's own sed expression, run on the stand-in's fstab
    hook = (OE_CORE / "classes-recipe/rootfs-postcommands.bbclass").read_text()
    expr = re.search(r"read_only_rootfs_hook \(\) \{.*?sed -i -e '([^']+)' \$\{IMAGE_ROOTFS\}/etc/fstab", hook, re.S)
    assert expr, "read_only_rootfs_hook no longer edits fstab with one sed expression"
    fstab = tmp_path / "fstab"
    fstab.write_text(oecore.BASE_FILES_FSTAB)
    subprocess.run(["sed", "-i", "-e", expr.group(1), str(fstab)], check=True)
    assert oecore.read_only_fstab(oecore.BASE_FILES_FSTAB) == fstab.read_text()
    root = [e for e in _entries(fstab.read_text()) if e[1] == "/"]
    assert root == [["/dev/root", "/", "auto", "ro", "1", "0"]]


@needs_oe_core
def test_the_hooks_ssh_default_and_machine_id_steps_are_oe_cores():
    hook = (OE_CORE / "classes-recipe/rootfs-postcommands.bbclass").read_text()
    assert "SSHD_OPTS='-f /etc/ssh/sshd_config_readonly'" in hook
    assert 'echo "SYSCONFDIR=\\${SYSCONFDIR:-/var/run/ssh}"' in hook
    text = oecore.read_only_ssh_default("# Debian's\n", pregenerated_rsa_key=False)
    assert text.endswith("SYSCONFDIR=${SYSCONFDIR:-/var/run/ssh}\nSSHD_OPTS='-f /etc/ssh/sshd_config_readonly'\n")
    assert "touch ${IMAGE_ROOTFS}${sysconfdir}/machine-id" in hook


@needs_oe_core
def test_fs_perms_links_and_create_volatile_are_oe_cores():
    for table, links in oecore.FS_PERMS_LINKS.items():
        text = (OE_CORE / table).read_text()
        upstream = {
            e[0].replace("${localstatedir}", "/var"): e[2] for e in _entries(text) if len(e) >= 3 and e[1] == "link"
        }
        assert upstream == dict(links), table
    bitbake_conf = (OE_CORE / "conf/bitbake.conf").read_text()
    default = re.search(r'^FILESYSTEM_PERMS_TABLES \?=\s*"([^"]*)"', bitbake_conf, re.M)
    assert default and default.group(1).replace("\\", " ").split() == oecore.FS_PERMS_DEFAULT.split()
    systemd = next((OE_CORE / "recipes-core/systemd").glob("systemd_*.bb")).read_text()
    upstream = _entries((OE_CORE / "recipes-core/systemd/systemd/00-create-volatile.conf").read_text())
    assert "files/fs-perms-volatile-log.txt" in systemd and "%s/volatile/log" in systemd
    upstream.append(["L", "/var/log", "-", "-", "-", "-", "/var/volatile/log"])
    assert _entries(oecore.create_volatile_conf({})) == upstream
    persistent = {"FILESYSTEM_PERMS_TABLES": "files/fs-perms.txt files/fs-perms-volatile-tmp.txt"}
    assert _entries(oecore.create_volatile_conf(persistent)) == upstream[:-1]
    assert "/var/log" not in oecore.fs_perms_links(persistent)
    assert oecore.fs_perms_links(persistent)["/var/tmp"] == "volatile/tmp"


def test_an_fs_perms_table_the_stand_in_does_not_know_stops_the_build():
    with pytest.raises(ConfigError, match=r"fs-perms-mine\.txt"):
        oecore.fs_perms_links({"FILESYSTEM_PERMS_TABLES": "files/fs-perms.txt files/fs-perms-mine.txt"})


@needs_oe_core
def test_openssh_hostkeys_follow_oe_cores_packageconfig_and_do_install():
    recipe = next((OE_CORE / "recipes-connectivity/openssh").glob("openssh_*.bb")).read_text()
    default = re.search(r'^PACKAGECONFIG \?\?= "([^"]*)"', recipe, re.M)
    assert default and default.group(1) == oecore.OPENSSH_PACKAGECONFIG_DEFAULT
    assert "sed -i '/HostKey/d' ${D}${sysconfdir}/ssh/sshd_config_readonly" in recipe
    keys = oecore.openssh_hostkeys(oecore.OPENSSH_PACKAGECONFIG_DEFAULT + " hostkey-ed25519", "/var/lib/ssh")
    assert keys == ["HostKey /var/lib/ssh/ssh_host_ecdsa_key", "HostKey /var/lib/ssh/ssh_host_ed25519_key"]
    text = oecore.with_hostkeys("Include /etc/ssh/sshd_config.d/*.conf\n#HostKey /etc/ssh/ssh_host_rsa_key\n", keys)
    assert text == "Include /etc/ssh/sshd_config.d/*.conf\n" + "\n".join(keys) + "\n"
