"""Files outside SRC_URI that a task reads (signing keys, the keyring,
authorized_keys) must be in its file-checksums as "PATH:True": BitBake skips
"PATH:False" entries (bb.checksum: "does not exist"), so a key changed at the
same path would not rerun the task and the old key would stay in the image."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "meta-edgecontainers"
CLASS = LAYER / "classes/edgecontainers_files.bbclass"


def edge_file_checksums():
    """The class's helper, compiled from the class text."""
    src = re.search(r"^def edge_file_checksums\(.*?(?=^\S|\Z)", CLASS.read_text(), re.M | re.S).group(0)
    ns: dict = {"os": os}
    exec(compile(src, str(CLASS), "exec"), ns)
    return ns["edge_file_checksums"]


class Data(dict):
    def getVar(self, name):
        return self.get(name)


def test_an_existing_file_is_checksummed(tmp_path):
    key = tmp_path / "ca.cert.pem"
    key.write_text("x")
    got = edge_file_checksums()(Data(A=str(key), B=str(tmp_path / "none"), C=""), "A", "B", "C")
    assert got == f"{key}:True {tmp_path / 'none'}:False"


def test_no_file_checksums_entry_is_marked_absent_by_hand():
    """A literal ':False' is what made a changed key not rebuild."""
    for path in LAYER.rglob("*"):
        if path.suffix not in (".bb", ".bbappend", ".inc", ".bbclass"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "[file-checksums]" in line and not line.lstrip().startswith("#"):
                assert ":False" not in line, f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                assert "edge_file_checksums(d, " in line, f"{path.relative_to(ROOT)}:{n}: use edge_file_checksums"


def test_every_key_variable_is_checksummed_where_it_is_read():
    expected = {
        "recipes-core/rauc/rauc-conf-edgecontainers.inc": ("do_install", "RAUC_KEYRING_FILE"),
        "recipes-core/images/edgecontainers-image.bb": ("do_rootfs", "EDGECONTAINERS_SSH_AUTHORIZED_KEYS"),
        "recipes-core/bundles/edgecontainers-bundle.inc": ("do_bundle", "RAUC_KEY_FILE', 'RAUC_CERT_FILE"),
    }
    for rel, (task, names) in expected.items():
        text = (LAYER / rel).read_text()
        assert f"{task}[file-checksums] += \"${{@edge_file_checksums(d, '{names}')}}\"" in text, rel
        assert re.search(r"^inherit .*edgecontainers_files", text, re.M), f"{rel} must inherit edgecontainers_files"
