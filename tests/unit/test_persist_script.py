"""The layer's persist script (recipes-core/edgecontainers-base/files/persist),
which binds the state listed in persist.d from /data: seeding on first use,
all or nothing, so that a first boot cut short never leaves a half-written or
empty copy (an empty /etc/machine-id bound over the real one breaks networkd
and every later boot).  findmnt and mount are fakes (tests/unit/fakes/persist);
cp, mv, sync... are the host's."""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "meta-edgecontainers/recipes-core/edgecontainers-base/files/persist"
FAKES = Path(__file__).parent / "fakes" / "persist"


@dataclass
class Device:
    root: Path  # stands for the read-only image's /
    data: Path  # the data partition's mount point
    script: Path
    binds: Path

    @property
    def store(self) -> Path:
        return self.data / "persist"

    def src(self, path: Path) -> Path:
        return Path(f"{self.store}{path}")

    def run(self) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{FAKES}{os.pathsep}/usr/bin:/bin", "FAKE_DATA": str(self.data), "FAKE_BINDS": str(self.binds)}
        return subprocess.run(
            ["sh", str(self.script), str(self.store)], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    def bound(self) -> list[tuple[str, str]]:
        if not self.binds.exists():
            return []
        return [tuple(line.split()) for line in self.binds.read_text().splitlines()]  # type: ignore[misc]


@pytest.fixture
def dev(tmp_path: Path) -> Device:
    root, data, lists = tmp_path / "root", tmp_path / "data", tmp_path / "persist.d"
    for d in (root / "etc", root / "var/lib/ssh", data, lists):
        d.mkdir(parents=True)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/ssh/ssh_host_ed25519_key").write_text("image key\n")
    (lists / "base.conf").write_text(
        "# PATH  dir|file  [MODE]\n"
        f"{root}/etc/machine-id   file  0444\n"
        f"{root}/var/lib/ssh      dir   0700\n"
    )  # fmt: skip
    script = tmp_path / "persist"
    text = SCRIPT.read_text()
    assert "/usr/lib/edgecontainers/persist.d/*.conf" in text
    script.write_text(
        text.replace("/usr/lib/edgecontainers/persist.d/*.conf", f"{lists}/*.conf").replace(
            "/etc/edgecontainers/persist.d/*.conf", f"{tmp_path}/none.d/*.conf"
        )
    )
    return Device(root, data, script, tmp_path / "binds")


def _leftovers(dev: Device) -> list[Path]:
    return sorted(dev.store.rglob("*.seeding"))


def test_first_boot_seeds_the_store_from_the_image_and_binds_it(dev: Device):
    proc = dev.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mid, ssh = dev.root / "etc/machine-id", dev.root / "var/lib/ssh"
    assert dev.src(mid).read_text() == "0123456789abcdef0123456789abcdef\n"
    assert stat.S_IMODE(dev.src(mid).stat().st_mode) == 0o444
    assert (dev.src(ssh) / "ssh_host_ed25519_key").read_text() == "image key\n"
    assert stat.S_IMODE(dev.src(ssh).stat().st_mode) == 0o700
    assert dev.bound() == [(str(dev.src(mid)), str(mid)), (str(dev.src(ssh)), str(ssh))]
    assert f"persist: {mid} from {dev.src(mid)}" in proc.stdout
    assert _leftovers(dev) == []


def test_a_restart_binds_nothing_twice(dev: Device):
    assert dev.run().returncode == 0
    again = dev.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(dev.bound()) == 2


def test_what_the_store_holds_wins_over_the_image(dev: Device):
    mid = dev.root / "etc/machine-id"
    dev.src(mid).parent.mkdir(parents=True)
    dev.src(mid).write_text("fedcba9876543210fedcba9876543210\n")
    assert dev.run().returncode == 0
    assert dev.src(mid).read_text() == "fedcba9876543210fedcba9876543210\n"


def test_an_empty_copy_left_by_an_interrupted_first_boot_is_seeded_again(dev: Device):
    mid = dev.root / "etc/machine-id"
    dev.src(mid).parent.mkdir(parents=True)
    dev.src(mid).write_text("")  # what a crash after cp, before the data reached the disk, left behind
    proc = dev.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dev.src(mid).read_text() == "0123456789abcdef0123456789abcdef\n"
    assert f"<4>persist: {dev.src(mid)} is empty (a first boot cut short?)" in proc.stdout
    assert (str(dev.src(mid)), str(mid)) in dev.bound()


def test_a_half_written_seed_is_never_bound(dev: Device):
    ssh = dev.root / "var/lib/ssh"
    half = Path(f"{dev.src(ssh)}.seeding")
    half.mkdir(parents=True)
    (half / "ssh_host_ed25519_key").write_text("ima")  # the copy a power cut interrupted
    assert dev.run().returncode == 0
    assert (dev.src(ssh) / "ssh_host_ed25519_key").read_text() == "image key\n"
    assert _leftovers(dev) == []


def test_an_entry_missing_from_the_image_is_skipped_with_a_warning(dev: Device):
    lists = dev.script.parent / "persist.d"
    (lists / "extra.conf").write_text(f"{dev.root}/etc/nonexistent file\n")
    proc = dev.run()
    assert proc.returncode == 0
    assert f"<4>persist: {dev.root}/etc/nonexistent does not exist in the image, skipped" in proc.stdout
    assert len(dev.bound()) == 2
