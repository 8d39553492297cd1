"""The layer's systemd units, loaded by systemd itself (``systemd-analyze verify``)
in a temporary root that holds every unit file the layer ships (rendered, at
its destination), systemd's own targets (the host systemd's), and the oe-core
units the layer's refer to: openssh's sshd.socket, sshd@.service and
sshdgenkeys.service (from the upstream checkout, else minimal stand-ins with
the same dependencies) and the volatile-binds units (generated as oe-core's
recipe does, testimage/oecore.py).

verify starts a transaction with every one of them, so an ordering cycle
between the layer's units and oe-core's fails here (as the SSH host-key unit
ordered Before=sshd.socket with default dependencies did: basic.target ->
sockets.target -> sshd.socket -> it -> basic.target), and so does an order the
layer relies on being missing (a probe unit ordered the other way round must
make a cycle)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgecontainers.bbcheck import layers_dir
from edgecontainers.testimage import oecore
from edgecontainers.testimage.layer import Layer

UNIT_SUFFIXES = (".service", ".socket", ".target", ".mount", ".automount", ".slice", ".timer", ".path", ".swap")
UNIT_DIRS = ("/usr/lib/systemd/system/", "/etc/systemd/system/")
OE_CORE = layers_dir() / "openembedded-core-wrynose"
OPENSSH = OE_CORE / "meta/recipes-connectivity/openssh/openssh"
# oe-core openssh's units reduced to what matters for ordering, when the checkout is absent.
OPENSSH_STANDINS = {
    "sshd.socket": "[Unit]\nConflicts=sshd.service\nWants=sshdgenkeys.service\n\n"
    "[Socket]\nListenStream=22\nAccept=yes\n\n[Install]\nWantedBy=sockets.target\n",
    "sshd@.service": "[Unit]\nAfter=sshdgenkeys.service\n\n[Service]\nExecStart=-/usr/sbin/sshd -i\n"
    "StandardInput=socket\n",
    "sshdgenkeys.service": oecore.SSHDGENKEYS_UNIT,
}

# A unit of another recipe (the engine's, RAUC's) that a layer unit requires.
STANDIN_UNIT = {
    ".service": b"[Unit]\nDescription=stand-in\n\n[Service]\nExecStart=/bin/true\n",
    ".socket": b"[Unit]\nDescription=stand-in\n\n[Socket]\nListenStream=/run/standin.sock\n",
    ".target": b"[Unit]\nDescription=stand-in\n",
}

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
HOST_UNITS = next((Path(d) for d in ("/usr/lib/systemd/system", "/lib/systemd/system")
                   if (Path(d) / "basic.target").is_file()), None)  # fmt: skip
pytestmark = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or HOST_UNITS is None, reason="needs systemd-analyze and systemd's units (systemd)"
)


def _exec_paths(text: str) -> list[str]:
    paths = []
    for m in re.finditer(r"^Exec[A-Za-z]+=(.*)$", text, re.M):
        cmd = m.group(1).strip().lstrip("-@:+!")
        if cmd.startswith("/"):
            paths.append(cmd.split()[0])
    return paths


class UnitRoot:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.unitdir = root / "usr/lib/systemd/system"
        self.layer_units: list[str] = []  # unit names the layer ships (templates as an instance)

    def write(self, dest: str, data: bytes, mode: int = 0o644) -> Path:
        path = self.root / dest.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
        return path

    def verify(self, *extra_wants: str, probe: str = "") -> subprocess.CompletedProcess[str]:
        wants = " ".join([*self.layer_units, "sshd.socket", "basic.target", "multi-user.target", *extra_wants])
        self.write("/usr/lib/systemd/system/edgecontainers-verify.target",
                   f"[Unit]\nDescription=everything\nWants={wants}\n".encode())  # fmt: skip
        units = [self.unitdir / "edgecontainers-verify.target"]
        if probe:
            units.append(self.write("/usr/lib/systemd/system/edgecontainers-probe.service", probe.encode()))
        for name in self.layer_units:
            path = self.unitdir / (re.sub(r"@[^.]+\.", "@.", name) if "@" in name else name)
            units.append(path)
        env = {**os.environ, "SYSTEMD_LOG_LEVEL": "notice"}
        return subprocess.run(
            [SYSTEMD_ANALYZE, "verify", f"--root={self.root}", "--man=no", "--generators=no", *map(str, units)],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip


def build_root(root: Path, layer: Layer, drop: str = "", replace: dict[str, bytes] | None = None) -> UnitRoot:
    """The unit root for ``layer``; ``drop``/``replace`` change one layer unit (for the negative checks)."""
    ur = UnitRoot(root)
    assert HOST_UNITS is not None
    for target in sorted(HOST_UNITS.glob("*.target")):
        ur.write(f"/usr/lib/systemd/system/{target.name}", target.read_bytes())
    for name, standin in OPENSSH_STANDINS.items():
        src = OPENSSH / name
        data = src.read_text() if src.is_file() else standin
        data = data.replace("@LIBEXECDIR@", "/usr/libexec/openssh").replace("@SBINDIR@", "/usr/sbin")
        ur.write(f"/usr/lib/systemd/system/{name}", data.replace("@BASE_BINDIR@", "/usr/bin").encode())
    for what, where in oecore.volatile_binds(layer.settings):
        unit = oecore.volatile_bind_service(what)
        ur.write(f"/usr/lib/systemd/system/{unit}", oecore.volatile_bind_unit(what, where).encode())
    for rec in layer.recipes().values():
        for entry in rec.edge_files():
            data = rec.render(entry)
            name = Path(entry.dest).name
            is_unit = entry.dest.startswith(UNIT_DIRS) and name.endswith(UNIT_SUFFIXES)
            if is_unit and name == drop:
                continue
            if is_unit and replace and name in replace:
                data = replace[name]
            ur.write(entry.dest, data, entry.mode)
            if is_unit:
                ur.layer_units.append(name.replace("@.", "@verify.") if "@." in name else name)
    # Units the layer's require that come from elsewhere (the engine, RAUC) and are not
    # above: stand-ins with default dependencies.
    for name in list(ur.layer_units):
        text = (ur.unitdir / re.sub(r"@[^.]+\.", "@.", name)).read_text()
        for m in re.finditer(r"^(?:Requires|BindsTo|Requisite)=(.*)$", text, re.M):
            for dep in m.group(1).split():
                if not (ur.unitdir / dep).exists():
                    ur.write(f"/usr/lib/systemd/system/{dep}", STANDIN_UNIT.get(dep[dep.rfind(".") :], b""))
    # Executables of the layer's units that are not the layer's: stand-ins, so that
    # verify's executable check still finds a wrong path to one of the layer's own.
    for name in ur.layer_units:
        text = (ur.unitdir / re.sub(r"@[^.]+\.", "@.", name)).read_text()
        for exe in _exec_paths(text):
            if not (root / exe.lstrip("/")).exists() and not exe.startswith(("/usr/libexec/edgecontainers/",)):
                ur.write(exe, b"#!/bin/sh\nexit 0\n", 0o755)
    return ur


@pytest.fixture(scope="module")
def layer() -> Layer:
    return Layer("qemux86-64", "podman", False)


def _cycles(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ordering cycle" in ln.lower()]


def test_every_unit_the_layer_ships_loads_and_starts_without_an_ordering_cycle(tmp_path: Path, layer: Layer):
    ur = build_root(tmp_path, layer)
    assert "edgecontainers-persist.service" in ur.layer_units and "data.mount" in ur.layer_units
    proc = ur.verify(*(oecore.volatile_bind_service(w) for w, _ in oecore.volatile_binds(layer.settings)))
    out = (proc.stdout + proc.stderr).strip()
    assert not _cycles(proc), out
    assert proc.returncode == 0, out


def test_an_ordering_cycle_with_oe_core_units_is_caught(tmp_path: Path, layer: Layer):
    """The check above sees a cycle through oe-core's sshd.socket and systemd's targets."""
    cyclic = (b"[Unit]\nDescription=probe\nBefore=sshd.socket\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n\n"
              b"[Install]\nWantedBy=multi-user.target\n")  # fmt: skip
    ur = build_root(tmp_path, layer)
    proc = ur.verify("edgecontainers-probe.service", probe=cyclic.decode())
    assert _cycles(proc), proc.stdout + proc.stderr


@pytest.mark.parametrize("bind", [what for what, _ in oecore.VOLATILE_BINDS_DEFAULT])
def test_persist_runs_after_each_volatile_bind(tmp_path: Path, layer: Layer, bind: str):
    """edgecontainers-persist binds below /var/lib, /var/cache, ...: it must run after
    oe-core's volatile-binds put their overlays there, or its binds are hidden under
    them.  A probe ordered after persist and before the volatile bind makes a cycle
    exactly when systemd orders persist after that bind (directly or through a target)."""
    unit = oecore.volatile_bind_service(bind)
    probe = (f"[Unit]\nDefaultDependencies=no\nAfter=edgecontainers-persist.service\nBefore={unit}\n\n"
             "[Service]\nType=oneshot\nExecStart=/bin/true\n")  # fmt: skip
    ur = build_root(tmp_path, layer)
    proc = ur.verify(unit, "edgecontainers-probe.service", probe=probe)
    assert _cycles(proc), f"edgecontainers-persist.service is not ordered after {unit}:\n{proc.stdout + proc.stderr}"


def test_the_host_key_directory_is_persisted_and_named_by_the_distro(layer: Layer):
    """openssh's sshdgenkeys writes the keys to OPENSSH_HOST_KEY_DIR(_READONLY_CONFIG); the layer
    must set both to a directory its persist.d keeps on /data, and name the keys sshd loads there."""
    key_dir = layer.settings.get("OPENSSH_HOST_KEY_DIR")
    assert key_dir and layer.settings.get("OPENSSH_HOST_KEY_DIR_READONLY_CONFIG") == key_dir
    base = layer.recipe("edgecontainers-base")
    lists = {e.dest: base.render(e).decode() for e in base.edge_files() if "/persist.d/" in e.dest}
    persisted = {line.split()[0] for text in lists.values() for line in text.splitlines()
                 if line.strip() and not line.startswith("#")}  # fmt: skip
    assert key_dir in persisted, f"{key_dir} is not in {sorted(persisted)}"
    conf = next(base.render(e).decode() for e in base.edge_files() if e.dest.startswith("/etc/ssh/sshd_config.d/"))
    keys = re.findall(r"^HostKey\s+(\S+)", conf, re.M)
    assert keys and all(Path(k).parent == Path(key_dir) for k in keys), keys
