"""edgecontainers-hawkbit's seeded configuration: readable by the updater only.

rauc-hawkbit-updater runs as its own user (meta-rauc: ``USERADD_PARAM`` creates
``rauc-hawkbit`` with its own group; its unit has ``User=``/``Group=rauc-hawkbit``).
The configuration holds the device's token, so it is root:rauc-hawkbit 0640 in a
root:rauc-hawkbit 0750 directory: in the image (the recipe's pkg_postinst, run
here as at rootfs time, names resolved in the image's /etc/group as pseudo does)
and in the store on /data the persist script seeds from it at first boot (and
repairs at every boot).  Each is checked by reading the file as that user and
as another one (setpriv)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecontainers.bbcheck import layers_dir
from edgecontainers.testimage.layer import OE_PATHS, Layer

REPO = Path(__file__).resolve().parents[2]
PERSIST = REPO / "meta-edgecontainers/recipes-core/edgecontainers-base/files/persist"
FAKES = Path(__file__).parent / "fakes"
META_RAUC = layers_dir() / "meta-rauc-wrynose/recipes-support/rauc-hawkbit-updater/rauc-hawkbit-updater.inc"
HAWKBIT_ID = 61234  # the image's rauc-hawkbit user and group (not the host's: no host account needed)
OTHER_ID = 61235

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root (chown) and setpriv"
)


@pytest.fixture(scope="module")
def recipe():
    return Layer("qemux86-64", "podman", False).recipe("edgecontainers-hawkbit")


@pytest.fixture
def image(recipe) -> Iterator[Path]:
    """An image root after package installation, before our postinst: rauc-hawkbit-updater's
    files (its example config, as its do_install leaves it) and the user its preinst added."""
    top = Path(tempfile.mkdtemp(prefix="hawkbit-", dir="/tmp"))
    top.chmod(0o755)  # the unprivileged readers must reach the files
    try:
        root = top / "root"
        (root / "etc/rauc-hawkbit-updater").mkdir(parents=True)
        (root / "etc/rauc-hawkbit-updater").chmod(0o755)
        (root / "etc/rauc-hawkbit-updater/config.conf").write_text("[client]\nexample = yes\n")
        group = recipe.get("EDGECONTAINERS_HAWKBIT_GROUP")
        (root / "etc/passwd").write_text(
            f"root:x:0:0::/root:/bin/sh\n{group}:x:{HAWKBIT_ID}:{HAWKBIT_ID}::/:/bin/false\n"
        )
        (root / "etc/group").write_text(f"root:x:0:\n{group}:x:{HAWKBIT_ID}:\n")
        for entry in recipe.edge_files():
            dest = root / entry.dest.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(recipe.render(entry))
            dest.chmod(entry.mode)
        yield root
    finally:
        shutil.rmtree(top)


def _postinst(recipe) -> str:
    """The recipe's pkg_postinst body, its ${VAR}s expanded as BitBake would."""
    text = recipe.bb.read_text()
    m = re.search(r"^pkg_postinst:\$\{PN\}\(\) \{\n(.*?)\n\}", text, re.M | re.S)
    assert m, "edgecontainers-hawkbit has no pkg_postinst"

    def value(v: re.Match[str]) -> str:
        name = v.group(1)
        return OE_PATHS.get(name) or recipe.get(name) or pytest.fail(f"no value for ${{{name}}}")

    return re.sub(r"\$\{([A-Za-z0-9_]+)\}", value, m.group(1))


def _run_postinst(recipe, root: Path) -> None:
    env = {"PATH": f"{FAKES / 'pseudo'}{os.pathsep}/usr/bin:/bin", "D": str(root), "FAKE_ROOT": str(root)}
    proc = subprocess.run(["sh", "-e", "-c", _postinst(recipe)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _run_persist(root: Path, store: Path, recipe) -> subprocess.CompletedProcess[str]:
    lists = root.parent / "persist.d"
    lists.mkdir(exist_ok=True)
    entry = next(e for e in recipe.edge_files() if "/persist.d/" in e.dest)
    (lists / "30-hawkbit.conf").write_text(
        "".join(f"{root}{line}\n" if line.startswith("/") else line + "\n"
                for line in recipe.render(entry).decode().splitlines())
    )  # fmt: skip
    script = root.parent / "persist"
    script.write_text(
        PERSIST.read_text()
        .replace("/usr/lib/edgecontainers/persist.d/*.conf", f"{lists}/*.conf")
        .replace("/etc/edgecontainers/persist.d/*.conf", f"{root.parent}/none.d/*.conf")
    )
    path = os.pathsep.join([str(FAKES / "pseudo"), str(FAKES / "persist"), "/usr/bin", "/bin"])
    env = {"PATH": path, "FAKE_ROOT": str(root), "FAKE_DATA": str(store.parent), "FAKE_BINDS": str(root.parent / "b")}
    return subprocess.run(["sh", str(script), str(store)], env=env, capture_output=True, text=True, timeout=60)


def _readable_by(path: Path, uid: int, gid: int) -> bool:
    proc = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "cat", str(path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return proc.returncode == 0


def _owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_the_seeded_config_is_readable_by_the_updater_only(recipe, image: Path):
    _run_postinst(recipe, image)
    conf_dir = image / "etc/rauc-hawkbit-updater"
    assert _owner_mode(conf_dir) == (0, HAWKBIT_ID, 0o750)
    assert _owner_mode(conf_dir / "config.conf") == (0, HAWKBIT_ID, 0o640)
    assert "hawkbit_server" in (conf_dir / "config.conf").read_text(), "not our configuration"
    assert _readable_by(conf_dir / "config.conf", HAWKBIT_ID, HAWKBIT_ID)
    assert not _readable_by(conf_dir / "config.conf", OTHER_ID, OTHER_ID)


def test_the_store_on_data_keeps_the_updaters_group(recipe, image: Path):
    _run_postinst(recipe, image)
    store = image.parent / "data/persist"
    store.parent.mkdir()
    proc = _run_persist(image, store, recipe)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seeded = Path(f"{store}{image}/etc/rauc-hawkbit-updater")
    assert _owner_mode(seeded) == (0, HAWKBIT_ID, 0o750)
    assert _owner_mode(seeded / "config.conf") == (0, HAWKBIT_ID, 0o640)
    assert _readable_by(seeded / "config.conf", HAWKBIT_ID, HAWKBIT_ID)
    assert not _readable_by(seeded / "config.conf", OTHER_ID, OTHER_ID)


def test_a_store_seeded_root_only_gets_the_updaters_group_at_the_next_boot(recipe, image: Path):
    """Devices whose store an earlier version seeded root:root 0750 are repaired."""
    _run_postinst(recipe, image)
    store = image.parent / "data/persist"
    seeded = Path(f"{store}{image}/etc/rauc-hawkbit-updater")
    seeded.mkdir(parents=True)
    shutil.copy2(image / "etc/rauc-hawkbit-updater/config.conf", seeded / "config.conf")
    os.chown(seeded / "config.conf", 0, HAWKBIT_ID)
    os.chown(seeded, 0, 0)
    seeded.chmod(0o750)
    proc = _run_persist(image, store, recipe)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _owner_mode(seeded) == (0, HAWKBIT_ID, 0o750)
    assert _readable_by(seeded / "config.conf", HAWKBIT_ID, HAWKBIT_ID)


@pytest.mark.skipif(not META_RAUC.is_file(), reason=f"no meta-rauc checkout at {META_RAUC}")
def test_the_group_is_the_user_meta_rauc_creates(recipe):
    """useradd without --user-group still makes the user's own group (oe-core's login.defs
    has USERGROUPS_ENAB yes); the updater's unit runs with that user and group."""
    param = re.search(r'^USERADD_PARAM:\$\{PN\} = "(.*)"$', META_RAUC.read_text(), re.M)
    assert param, "rauc-hawkbit-updater.inc has no USERADD_PARAM any more"
    assert param.group(1).split()[-1] == recipe.get("EDGECONTAINERS_HAWKBIT_GROUP")
    assert "--no-user-group" not in param.group(1) and "-N" not in param.group(1).split()
