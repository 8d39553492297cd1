"""The smoke checks, one function per property, shared by the smoke suite and the
negative proof (which runs a check against a deliberately broken image and
expects it to fail).

Each check takes a booted :class:`~edgecontainers.qemu.session.Session` and
the :class:`Expected` values, which come from the checkout's layer (never
hard-coded here), and raises AssertionError saying what the guest showed.
Commands use only what a production image has (no procps, no curl).
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.request
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from edgecontainers.qemu.session import Session
from edgecontainers.testimage.layer import Layer

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def to_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)i?B?\s*", text, re.I)
    assert m, f"not a size: {text!r}"
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


@dataclass
class Expected:
    """What the layer declares, for one machine, engine and variant (from the checkout)."""

    layer: Layer

    @property
    def settings(self) -> dict[str, str]:
        return self.layer.settings

    @property
    def engine(self) -> str:
        return self.layer.engine

    @property
    def production(self) -> bool:
        return not self.layer.dev

    @cached_property
    def recipes(self):
        """The layer recipes the image installs (the image recipe's composition)."""
        from edgecontainers.testimage.builder import compose

        return compose(self.layer).recipes

    def installed(self, dest: str) -> bytes:
        """The rendered content of the layer file installed at ``dest``."""
        for rec in self.recipes:
            for entry in rec.edge_files():
                if entry.dest == dest:
                    return rec.render(entry)
        raise AssertionError(f"the image installs no layer file at {dest}")

    @cached_property
    def sysctl(self) -> dict[str, str]:
        """Every key = value of the layer's sysctl.d files in this image."""
        names = ["edgecontainers-base"] + (["edgecontainers-production"] if self.production else [])
        values: dict[str, str] = {}
        for name in names:
            rec = self.layer.recipe(name)
            for entry in sorted(rec.edge_files(), key=lambda e: e.dest):
                if "/sysctl.d/" not in entry.dest:
                    continue
                for line in rec.render(entry).decode().splitlines():
                    line = line.strip()
                    if line and not line.startswith(("#", ";")) and "=" in line:
                        key, _, value = line.partition("=")
                        values[key.strip()] = value.strip()
        return values

    @cached_property
    def quadlet(self) -> dict[str, dict[str, str]]:
        rec = self.layer.recipe("edgecontainers-demo-quadlet")
        entry = next(e for e in rec.edge_files() if e.dest.endswith(".container"))
        sections: dict[str, dict[str, str]] = {}
        current = ""
        for line in rec.render(entry).decode().splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                current = line[1:-1]
                sections.setdefault(current, {})
            elif "=" in line and not line.startswith("#"):
                k, _, v = line.partition("=")
                sections[current][k.strip()] = v.strip()
        return sections

    @cached_property
    def compose(self) -> dict:
        rec = self.layer.recipe("edgecontainers-demo-compose")
        entry = next(e for e in rec.edge_files() if e.dest.endswith("compose.yaml"))
        return yaml.safe_load(rec.render(entry))

    @property
    def app_version(self) -> str:
        rec = self.layer.recipe("edgecontainers-demo-app")
        entry = next(e for e in rec.edge_files() if e.dest.endswith("/version"))
        return rec.render(entry).decode().strip()

    @property
    def limits(self) -> tuple[str, int, int]:
        """(slice, CPU quota in µs per 100 ms period, memory max in bytes) declared for the demo app."""
        if self.engine == "podman":
            svc = self.quadlet["Service"]
            quota = int(svc["CPUQuota"].rstrip("%")) * 1000
            return svc["Slice"], quota, to_bytes(svc["MemoryMax"])
        svc = next(iter(self.compose["services"].values()))
        return svc["cgroup_parent"], int(float(svc["cpus"]) * 100000), to_bytes(str(svc["mem_limit"]))

    @property
    def app_user(self) -> str:
        if self.engine == "podman":
            return self.quadlet["Container"]["User"]
        return str(next(iter(self.compose["services"].values()))["user"])

    @property
    def confinement(self) -> tuple[bool, bool, bool]:
        """(no-new-privileges, read-only root, every capability dropped) as the app's
        declaration says."""
        if self.engine == "podman":
            c = self.quadlet["Container"]
            drop = c.get("DropCapability", "").split()
            return (c.get("NoNewPrivileges") == "true", c.get("ReadOnly") == "true",
                    "ALL" in drop and not c.get("AddCapability"))  # fmt: skip
        svc = next(iter(self.compose["services"].values()))
        nnp = any(o.replace("=", ":") in ("no-new-privileges:true", "no-new-privileges")
                  for o in svc.get("security_opt", []))  # fmt: skip
        return nnp, bool(svc.get("read_only")), "ALL" in svc.get("cap_drop", []) and not svc.get("cap_add")

    @property
    def app_name(self) -> str:
        if self.engine == "podman":
            return self.quadlet["Container"]["ContainerName"]
        return next(iter(self.compose["services"].values()))["container_name"]

    @property
    def app_image(self) -> str:
        if self.engine == "podman":
            return self.quadlet["Container"]["Image"]
        return next(iter(self.compose["services"].values()))["image"]

    @property
    def preloaded_image(self) -> str:
        """The name the build's preloading gives the app image in the engine's store
        (meta-virtualization's BUNDLED_CONTAINERS import, read from the recipes)."""
        from edgecontainers.testimage.bundling import parse_bundled

        entry = parse_bundled(self.layer.image_recipe().get("BUNDLED_CONTAINERS"), self.engine)[0]
        tag = self.layer.recipe(entry.container).get("OCI_IMAGE_TAG") or "latest"
        return entry.stored_name(tag)

    @property
    def storage_conf(self):
        from edgecontainers.testimage.bundling import parse_storage_conf

        return parse_storage_conf(self.installed("/etc/containers/storage.conf").decode())

    @property
    def app_unit(self) -> str:
        if self.engine == "podman":
            rec = self.layer.recipe("edgecontainers-demo-quadlet")
            entry = next(e for e in rec.edge_files() if e.dest.endswith(".container"))
            return Path(entry.dest).stem + ".service"
        return "edgecontainers-compose@" + self.compose["name"] + ".service"

    @property
    def persist_paths(self) -> list[str]:
        """Every path of the persist.d lists the image installs."""
        paths = []
        for rec in self.recipes:
            for entry in rec.edge_files():
                if "/persist.d/" in entry.dest:
                    for line in rec.render(entry).decode().splitlines():
                        words = line.split()
                        if words and not words[0].startswith("#"):
                            paths.append(words[0])
        return sorted(set(paths))


def sh(s: Session, command: str, timeout: float = 120) -> str:
    """Run a command that must succeed; its output."""
    res = s.run(command, timeout=timeout)
    assert res.rc == 0, f"'{command}' exited {res.rc}: {res.output.strip()[-800:]}"
    return res.output


# ---------------------------------------------------------------- boot
def system_running(s: Session) -> None:
    state = s.system_state or sh(s, "systemctl is-system-running || true").strip()
    failed = s.run("systemctl list-units --failed --plain --no-legend --no-pager").output.strip()
    jobs = s.run("systemctl list-jobs --no-legend --no-pager").output.strip()
    assert state == "running" and not failed, f"system state {state!r}; failed units:\n{failed}\njobs:\n{jobs}"
    assert sh(s, "systemctl is-active multi-user.target").strip() == "active"


def kernel_command_line(s: Session, expected: Expected, slot: str = "A") -> None:
    cmdline = sh(s, "cat /proc/cmdline").split()
    for word in expected.settings["EDGECONTAINERS_KERNEL_ARGS"].split():
        assert word in cmdline, f"{word} (EDGECONTAINERS_KERNEL_ARGS) missing from /proc/cmdline: {cmdline}"
    assert f"rauc.slot={slot}" in cmdline, cmdline
    root = next((w for w in cmdline if w.startswith("root=")), "")
    assert root.startswith("root=PARTUUID="), f"the bootloader should pass the slot by PARTUUID: {root}"
    uuid = root.split("=", 2)[2]
    label = sh(s, f"blkid -t PARTUUID={uuid} -o value -s PARTLABEL || lsblk -no PARTLABEL /dev/disk/by-partuuid/{uuid}")
    assert label.strip() == f"rootfs{slot}", f"root=PARTUUID={uuid} is {label.strip()!r}, not rootfs{slot}"


# ---------------------------------------------------------------- read-only root, logs
def root_read_only(s: Session) -> None:
    opts = sh(s, "findmnt -n -o OPTIONS /").strip().split(",")
    assert "ro" in opts, f"/ is mounted {opts}"
    for path in ("/.edgecontainers-probe", "/usr/.edgecontainers-probe", "/etc/.edgecontainers-probe"):
        res = s.run(f"touch {path} 2>&1")
        assert res.rc != 0, f"writing {path} succeeded on the read-only root"
        assert "Read-only file system" in res.output, res.output


def var_log_tmpfs(s: Session) -> None:
    fstype = sh(s, "stat -f -c %T /var/log/").strip()
    assert fstype == "tmpfs", f"/var/log is on {fstype}"
    sh(s, "touch /var/log/.edgecontainers-probe && rm /var/log/.edgecontainers-probe")


def journald_volatile(s: Session, expected: Expected) -> None:
    """journald keeps the journal in RAM (/run/log/journal) with the declared cap."""
    cap = to_bytes(expected.settings["EDGECONTAINERS_JOURNAL_MAX"])
    # Ask journald to move the journal to persistent storage, as
    # systemd-journal-flush.service does at boot: a volatile journald stays in RAM.
    sh(s, "journalctl --flush")
    msgs = sh(s, "journalctl -b -u systemd-journald -o cat --no-pager | grep -E '(Runtime|System) Journal' || true")
    runtime = [m for m in re.finditer(r"Runtime Journal \((\S+)\) is .*?, max ([\d.]+[KMGT]?)", msgs)]
    system = re.findall(r"System Journal \((\S+)\)", msgs)
    persistent = s.run("ls /var/log/journal/*/system.journal 2>/dev/null").output.strip()
    assert not system and not persistent, (
        f"journald writes a persistent journal: {system or persistent} (journald said: {msgs.strip()})"
    )
    assert runtime, f"journald did not report a runtime journal: {msgs.strip()!r}"
    where, limit = runtime[-1].group(1), runtime[-1].group(2)
    assert where.startswith("/run/log/journal"), where
    assert to_bytes(limit) == cap, (
        f"runtime journal max {limit}, declared {expected.settings['EDGECONTAINERS_JOURNAL_MAX']}"
    )
    fstype = sh(s, "stat -f -c %T /run/log/journal").strip()
    assert fstype == "tmpfs", fstype


# ---------------------------------------------------------------- /data
def _mount(s: Session, path: str) -> tuple[str, str, str]:
    """(source device, fsroot, options) of the mount holding ``path``."""
    out = sh(s, f"findmnt -n -o SOURCE,FSROOT,OPTIONS -T {shlex.quote(path)} | tail -n 1").split()
    source = re.sub(r"\[.*\]$", "", out[0])
    return source, out[1], out[2]


def data_partition(s: Session, expected: Expected) -> None:
    source, fsroot, opts = _mount(s, "/data")
    assert fsroot == "/" and "rw" in opts.split(","), f"/data: {source} {fsroot} {opts}"
    assert sh(s, "findmnt -n -o TARGET -T /data").strip() == "/data", "/data is not a mount point"
    label = sh(s, f"blkid -o value -s LABEL {source}").strip()
    assert label == expected.settings["EDGECONTAINERS_DATA_LABEL"], f"/data is {source} labelled {label!r}"
    sh(s, "touch /data/.edgecontainers-probe && rm /data/.edgecontainers-probe")


def _on_data(s: Session, path: str) -> str:
    data_source = _mount(s, "/data")[0]
    source, fsroot, opts = _mount(s, path)
    assert source == data_source and fsroot.startswith("/persist"), (
        f"{path} is not on /data: {source} [{fsroot}] (data is {data_source})"
    )
    assert "rw" in opts.split(","), f"{path} mounted {opts}"
    return fsroot


def data_holds_state(s: Session, expected: Expected) -> None:
    """Engine storage, RAUC status, machine-id and SSH host keys live on /data."""
    for path in expected.persist_paths:
        if s.run(f"test -e {path}").ok:
            _on_data(s, path)
    store = "/var/lib/containers/storage" if expected.engine == "podman" else "/var/lib/docker"
    _on_data(s, store)
    if expected.engine == "podman":
        root = sh(s, "podman info --format '{{.Store.GraphRoot}}'").strip()
    else:
        root = sh(s, "docker info --format '{{.DockerRootDir}}'").strip()
    assert root == store, f"{expected.engine} stores in {root}"
    assert sh(s, f"ls -A {store} | wc -l").strip() != "0", f"{store} is empty"
    # RAUC: data-directory=/data/rauc holds the status file
    conf = expected.installed("/usr/lib/rauc/system.conf").decode()
    data_dir = re.search(r"^data-directory=(\S+)", conf, re.M)
    assert data_dir, "system.conf has no data-directory"
    listing = sh(s, f"ls -A {data_dir.group(1)}")
    assert "central.raucs" in listing.split(), f"no RAUC status in {data_dir.group(1)}: {listing!r}"
    # machine-id
    _on_data(s, "/etc/machine-id")
    mid = sh(s, "cat /etc/machine-id").strip()
    assert re.fullmatch(r"[0-9a-f]{32}", mid), mid
    # SSH host keys (when the image has an SSH server)
    if s.run("test -x /usr/sbin/sshd").ok:
        _on_data(s, "/var/lib/ssh")
        keys = sh(s, "ls /var/lib/ssh").split()
        assert "ssh_host_ed25519_key" in keys, f"host keys on /data: {keys}"


def data_grown(s: Session, expected: Expected) -> None:
    """edgecontainers-growdata grew /data to the end of the (bigger) disk."""
    wks_mib = expected.layer.wks().part("data").size_mib
    source = _mount(s, "/data")[0]
    size = int(sh(s, f"cat /sys/class/block/$(basename $(readlink -f {source}))/size")) * 512
    assert size > (wks_mib + 256) * 1024 * 1024, (
        f"/data is {size} bytes; the wks says {wks_mib} MiB and the disk is bigger"
    )
    fs_blocks = sh(s, "stat -f -c '%b %S' /data").split()
    assert int(fs_blocks[0]) * int(fs_blocks[1]) > wks_mib * 1024 * 1024, "filesystem not resized"


def persisted_above_volatile_binds(s: Session, expected: Expected) -> None:
    """oe-core's volatile-binds put tmpfs overlays on /var/lib, /var/cache, ... before
    local-fs.target; edgecontainers-persist must bind the persisted paths after them, on
    top: every persisted path, looked up through the overlays, is a mount from /data (a
    bind made first is hidden under the overlay and the state goes to RAM)."""
    units = sh(s, "grep -l '^ExecStart=/sbin/mount-copybind ' /usr/lib/systemd/system/*.service || true").split()
    assert units, "the image has no volatile-binds units (oe-core's volatile-binds)"
    assert sh(s, "findmnt -n -o FSTYPE /var/lib").strip() == "overlay", "var-volatile-lib put no overlay on /var/lib"
    deps = "systemctl list-dependencies --after --plain --no-legend --no-pager edgecontainers-persist.service"
    after = set(sh(s, deps).split())
    for unit in (Path(u).name for u in units):
        assert unit in after, f"edgecontainers-persist.service is not ordered after {unit}"
    for path in expected.persist_paths:
        if not s.run(f"test -e {path}").ok:
            continue
        # the last line is the mount on top (/etc/machine-id: under the bind, systemd's own)
        target = sh(s, f"findmnt -n -o TARGET -T {shlex.quote(path)} | tail -n 1").strip()
        assert target == path, f"{path} is seen through the mount on {target}, not the bind from /data"
        _on_data(s, path)


def no_ordering_cycles(s: Session, expected: Expected) -> None:
    """No ordering cycle at boot (systemd breaks one by dropping a job: a unit silently not
    started), and systemd-analyze verify accepts the layer's units on the image."""
    cycles = s.run("journalctl -b -o cat --no-pager | grep -i 'ordering cycle'").output.strip()
    assert not cycles, f"ordering cycles at boot:\n{cycles}"
    if not s.run("command -v systemd-analyze").ok:
        return  # not in a production Yocto image (systemd-analyze is its own package)
    units = sorted(
        entry.dest
        for rec in expected.recipes
        for entry in rec.edge_files()
        if entry.dest.startswith("/usr/lib/systemd/system/") and "." in Path(entry.dest).name
        and not entry.dest.endswith(".conf")
    )  # fmt: skip
    res = s.run(f"systemd-analyze verify --man=no {' '.join(units)} 2>&1")
    assert res.rc == 0 and "ordering cycle" not in res.output.lower(), res.output.strip()[-1500:]


# ---------------------------------------------------------------- the app
def _app_pid(s: Session, expected: Expected) -> int:
    engine = expected.engine
    out = sh(s, f"{engine} inspect --format '{{{{.State.Pid}}}}' {expected.app_name}").strip()
    return int(out)


def app_running_offline(s: Session, expected: Expected) -> None:
    """The preloaded demo app runs, healthy, with no network: the image was not pulled."""
    engine = expected.engine
    state = sh(s, f"systemctl is-active {expected.app_unit} || true").strip()
    assert state == "active", f"{expected.app_unit} is {state}"
    fmt = "{{.State.Status}} {{.State.Health.Status}}" if engine == "podman" else \
        "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"  # fmt: skip
    status = sh(s, f"{engine} inspect --format '{fmt}' {expected.app_name}").split()
    assert status == ["running", "healthy"], f"{expected.app_name}: {status}"
    image = sh(s, f"{engine} inspect --format '{{{{.ImageName}}}}' {expected.app_name}" if engine == "podman"
               else f"{engine} inspect --format '{{{{.Config.Image}}}}' {expected.app_name}").strip()  # fmt: skip
    assert image == expected.app_image, image
    # The network is cut (QEMU user networking with restrict=on): nothing outside answers.
    cut = s.run("timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.2.2/80' 2>&1; echo rc=$?", timeout=30).output
    assert "rc=0" not in cut, "the guest can reach the outside: the offline boot proves nothing"
    if engine == "podman":
        ro = sh(s, "podman images --format '{{.Repository}}:{{.Tag}} {{.ReadOnly}}'")
        assert f"{expected.app_image} true" in ro, f"not from the read-only preloaded store: {ro}"


def preloaded_store(s: Session, expected: Expected) -> None:
    """podman reads the preloaded store with the image's storage.conf: the store is on
    the read-only root, written with the driver podman reads it with (its lock files
    in place: nothing can create them there), and holds the app image under the name
    the bundling gives it, which is the one the app runs with Pull=never."""
    from edgecontainers.testimage.bundling import parse_storage_conf, store_layout

    live = parse_storage_conf(sh(s, "cat /etc/containers/storage.conf"))
    (store,) = live.additional_image_stores
    opts = sh(s, f"findmnt -no OPTIONS --target {store}").strip().split(",")
    assert "ro" in opts, f"the preloaded store {store} is writable: {opts}"
    layout = " ".join(store_layout(live.driver))
    missing = sh(s, f"cd {store} && for p in {layout}; do test -e $p || echo $p; done").split()
    assert not missing, (
        f"the preloaded store has no {missing} for the {live.driver} driver of storage.conf: "
        f"{sh(s, f'ls {store}').split()}"
    )
    listed = sh(s, "podman images --format '{{.Repository}}:{{.Tag}} {{.ReadOnly}} {{.ID}}'")
    ro = [line.split() for line in listed.splitlines() if line.startswith(expected.preloaded_image + " ")]
    assert ro and ro[0][1] == "true", f"{expected.preloaded_image} not listed from the read-only store: {listed}"
    image_id = sh(s, f"podman image inspect --format '{{{{.Id}}}}' {expected.preloaded_image}").strip()
    assert image_id.startswith(ro[0][2]), f"{image_id} is not the read-only image {ro[0][2]}"
    running = sh(s, f"podman inspect --format '{{{{.ImageName}}}} {{{{.Image}}}}' {expected.app_name}").split()
    assert running == [expected.preloaded_image, image_id], f"the app runs {running}, preloaded: {image_id}"
    driver = sh(s, "podman info --format '{{.Store.GraphDriverName}}'").strip()
    declared = expected.storage_conf.driver
    assert driver == live.driver == declared, f"podman uses {driver}, storage.conf {live.driver}, the layer {declared}"


def app_health_endpoint(s: Session, expected: Expected) -> None:
    """The app answers on its health endpoint (through the published port)."""
    url = f"http://127.0.0.1:{s.app_port}/cgi-bin/health"
    with urllib.request.urlopen(url, timeout=20) as resp:
        body = resp.read().decode()
        assert resp.status == 200, resp.status
    assert body.strip() == f"ok version={expected.app_version}", body


def app_non_root(s: Session, expected: Expected) -> None:
    pid = _app_pid(s, expected)
    status = sh(s, f"cat /proc/{pid}/status")
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
    gids = re.search(r"^Gid:\s+(.*)$", status, re.M)
    assert uids and gids, status
    uid, gid = expected.app_user.split(":") if ":" in expected.app_user else (expected.app_user, None)
    assert set(uids.group(1).split()) == {uid}, f"app runs as uid {uids.group(1)}"
    assert uid != "0"
    if gid is not None:
        assert set(gids.group(1).split()) == {gid}, f"app runs as gid {gids.group(1)}"


def app_confined(s: Session, expected: Expected) -> None:
    """The app's process as the kernel sees it: no new privileges, a seccomp filter
    (the engines' default profile), no effective capabilities, a read-only root, as
    the declaration asks."""
    nnp, read_only, drop_all = expected.confinement
    pid = _app_pid(s, expected)
    status = dict(
        (k.strip(), v.strip())
        for k, _, v in (ln.partition(":") for ln in sh(s, f"cat /proc/{pid}/status").splitlines())
    )
    assert status.get("NoNewPrivs") == ("1" if nnp else "0"), (
        f"NoNewPrivs {status.get('NoNewPrivs')} (declared no-new-privileges: {nnp})"
    )
    assert status.get("Seccomp") == "2", f"Seccomp {status.get('Seccomp')}: no seccomp filter on the app"
    if drop_all:
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, (
            f"capabilities CapEff {status['CapEff']} CapPrm {status['CapPrm']}; the declaration drops ALL"
        )
    # mountinfo: field 5 is the mount point, field 6 its per-mount options
    root_opts = sh(s, f"awk '$5 == \"/\" {{print $6}}' /proc/{pid}/mountinfo | tail -n 1").strip().split(",")
    assert ("ro" in root_opts) == read_only, f"the app's root is mounted {root_opts} (declared read-only: {read_only})"


def app_limits(s: Session, expected: Expected) -> None:
    """The declared CPU and memory limits and slice are in the cgroup tree."""
    slice_, quota, memory = expected.limits
    pid = _app_pid(s, expected)
    cgroup = sh(s, f"cat /proc/{pid}/cgroup").strip().split("::", 1)[-1]
    assert f"/{slice_}/" in cgroup, f"app cgroup {cgroup} is not in {slice_}"
    # Walk up from the app's cgroup to the unit that carries the limits.
    parts = cgroup.strip("/").split("/")
    found = []
    for i in range(len(parts), 0, -1):
        path = "/sys/fs/cgroup/" + "/".join(parts[:i])
        cpu_max = sh(s, f"cat {path}/cpu.max").strip()
        mem_max = sh(s, f"cat {path}/memory.max").strip()
        found.append((path, cpu_max, mem_max))
        if cpu_max != "max 100000" or mem_max != "max":
            break
    path, cpu_max, mem_max = found[-1]
    assert cpu_max == f"{quota} 100000", f"cpu.max of {path}: {cpu_max} (declared {quota}/100000); walked {found}"
    assert mem_max == str(memory), f"memory.max of {path}: {mem_max} (declared {memory}); walked {found}"
    assert f"/{slice_}/" in path + "/", path


# ---------------------------------------------------------------- RAUC
def rauc_status(s: Session, expected: Expected, slot: str = "A") -> None:
    status = json.loads(sh(s, "rauc status --output-format=json"))
    assert status["compatible"] == expected.settings["EDGECONTAINERS_RAUC_COMPATIBLE"], status["compatible"]
    assert status["booted"] == slot, status
    slots = {name: info for entry in status["slots"] for name, info in entry.items()}
    bootnames = {info.get("bootname"): name for name, info in slots.items()}
    assert {"A", "B"} <= set(bootnames), f"slots: {slots}"
    booted = slots[bootnames[slot]]
    assert booted["state"] == "booted", booted
    other = slots[bootnames["B" if slot == "A" else "A"]]
    assert other["state"] == "inactive", other
    text = sh(s, "rauc status")
    assert f"Booted from: {bootnames[slot]} ({slot})" in text, text


def health_gate_marked_good(s: Session, slot: str = "A") -> None:
    props = dict(
        line.split("=", 1)
        for line in sh(s, "systemctl show -p ActiveState -p Result edgecontainers-health.service").split()
    )
    assert props == {"ActiveState": "active", "Result": "success"}, props
    status = json.loads(sh(s, "rauc status --detailed --output-format=json"))
    slots = {name: info for entry in status["slots"] for name, info in entry.items()}
    booted = next(info for info in slots.values() if info.get("bootname") == slot)
    assert booted.get("boot_status") == "good", booted
    log = sh(s, "cat /data/edgecontainers/health.log")
    assert f"marked slot {slot} good" in log, log


def rauc_keyring(s: Session, ca_pem: bytes | None) -> None:
    """RAUC's keyring, where the running system.conf points it, is the CA the image
    was built to trust (``ca_pem``; with a kas build only that it is a certificate)."""
    conf = sh(s, "cat /etc/rauc/system.conf 2>/dev/null || cat /usr/lib/rauc/system.conf")
    section = re.search(r"^\[keyring\]\s*$(.*?)(?=^\[|\Z)", conf, re.M | re.S)
    assert section, f"system.conf has no [keyring]:\n{conf}"
    path = re.search(r"^path=(\S+)", section.group(1), re.M)
    assert path, f"[keyring] has no path: {section.group(1)}"
    keyring = path.group(1)
    if not keyring.startswith("/"):
        base = "/etc/rauc" if s.run("test -f /etc/rauc/system.conf").ok else "/usr/lib/rauc"
        keyring = f"{base}/{keyring}"
    res = s.run(f"cat {shlex.quote(keyring)}")
    assert res.ok and "BEGIN CERTIFICATE" in res.output, f"RAUC's keyring {keyring}: {res.output.strip()[:200]}"
    if ca_pem is not None:

        def certs(text: str) -> list[str]:
            return ["".join(b.split()) for b in re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END", text, re.S)]

        assert certs(res.output) == certs(ca_pem.decode()), f"RAUC's keyring {keyring} is not the fleet CA"


# ---------------------------------------------------------------- production lock-down
def no_serial_getty(s: Session) -> None:
    # (getty@tty1 on the virtual terminal is not the serial console)
    units = sh(s, "systemctl list-units --all --plain --no-legend 'serial-getty@*' 'console-getty.service' "
                  "| awk '{print $1, $3}'")  # fmt: skip
    active = [ln for ln in units.splitlines() if ln.split()[1:2] == ["active"]]
    assert not active, f"getty running: {active}"
    props = dict(
        line.split("=", 1)
        for line in sh(s, "systemctl show -p ActiveState -p ConditionResult serial-getty@ttyS0.service").split()
    )
    assert props["ActiveState"] == "inactive", props
    # Type at the serial console: nothing may answer (no login prompt, no shell).
    seen = s.console_probe("\r", ["login: ", "[Pp]assword: ", r"[#$] $"], timeout=10)
    assert seen is None, f"the serial console answered: {seen!r}"


def root_login_refused(s: Session, expected: Expected) -> None:
    shadow = sh(s, "awk -F: '$1 == \"root\" {print $2}' /etc/shadow").strip()
    assert shadow and shadow[0] in "*!", f"root has a usable password hash: {shadow[:3]}..."
    assert s.ssh is not None
    proc = s.ssh.try_password_login()
    assert proc.returncode != 0, "password login succeeded"
    assert "Permission denied (publickey)" in proc.stderr, proc.stderr


def sshd_config_in_use(s: Session) -> str:
    """The configuration file of the sshd that serves: the listener's ``-f`` (its
    process title keeps its arguments), or, socket-activated (oe-core's
    systemd-sshd-socket-mode), sshd@.service's $SSHD_OPTS from /etc/default/ssh."""
    args: list[str] = []
    for unit in ("ssh.service", "sshd.service"):
        pid = s.run(f"systemctl show -p MainPID --value {unit}").output.strip()
        if pid.isdigit() and pid != "0":
            args = sh(s, f"tr '\\0' ' ' < /proc/{pid}/cmdline").split()
            break
    else:
        assert s.run("systemctl is-active sshd.socket").ok, "no sshd runs (no ssh.service, sshd.service or sshd.socket)"
        args = sh(s, "SSHD_OPTS=; [ -f /etc/default/ssh ] && . /etc/default/ssh; echo $SSHD_OPTS").split()
    return args[args.index("-f") + 1] if "-f" in args[:-1] else "/etc/ssh/sshd_config"


def ssh_refuses_passwords(s: Session, expected: Expected) -> None:
    """``sshd -T`` of the configuration the running sshd reads: no passwords, and host
    keys that exist, in the directory the distro keeps on /data."""
    config = sshd_config_in_use(s)
    full = sh(s, f"sshd -T -f {shlex.quote(config)} 2>/dev/null")
    wanted = ("passwordauthentication", "kbdinteractiveauthentication", "permitemptypasswords", "permitrootlogin")
    settings = {
        k.lower(): v.strip().lower() for k, _, v in (ln.partition(" ") for ln in full.splitlines()) if k in wanted
    }
    key_dir = expected.settings.get("OPENSSH_HOST_KEY_DIR_READONLY_CONFIG") or "/var/run/ssh"
    hostkeys = [ln.split(None, 1)[1] for ln in full.splitlines() if ln.startswith("hostkey ")]
    assert hostkeys, f"{config}: sshd names no host key"
    for key in hostkeys:
        assert str(Path(key).parent) in (key_dir, expected.settings.get("OPENSSH_HOST_KEY_DIR")), (
            f"{config}: host key {key} is not in {key_dir} (OPENSSH_HOST_KEY_DIR*)"
        )
        assert s.run(f"test -s {shlex.quote(key)}").ok, f"{config}: host key {key} does not exist"
    assert settings.get("passwordauthentication") == "no", settings
    assert settings.get("kbdinteractiveauthentication") == "no", settings
    assert settings.get("permitemptypasswords") == "no", settings
    assert settings.get("permitrootlogin") in ("prohibit-password", "without-password", "no"), settings


def sysctl_values(s: Session, expected: Expected) -> None:
    wrong = {}
    for key, value in expected.sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        res = s.run(f"cat {path}")
        actual = res.output.strip() if res.ok else f"<missing: {res.output.strip()}>"
        if " ".join(actual.split()) != " ".join(value.split()):
            wrong[key] = (value, actual)
    assert not wrong, f"sysctl differs from the layer (declared, actual): {wrong}"


# ---------------------------------------------------------------- dev
def serial_login_works(s: Session) -> None:
    assert s.console is not None and s.console.logged_in, "no login on the serial console"
    res = s.console.run("id -u; tty")
    assert res.ok and res.output.split()[0] == "0", res.output
    assert "/dev/ttyS0" in res.output or "/dev/console" in res.output, res.output


# ---------------------------------------------------------------- engine configuration
def engine_config(s: Session, expected: Expected) -> None:
    if expected.engine == "podman":
        info = json.loads(sh(s, "podman info --format json"))
        host = info["host"]
        assert host["cgroupManager"] == "systemd", host["cgroupManager"]
        assert host["ociRuntime"]["name"] == "crun", host["ociRuntime"]["name"]
        assert host["eventLogger"] == "journald", host["eventLogger"]
        assert "/usr/lib/containers/storage" in json.dumps(info["store"]), info["store"]
    else:
        info = json.loads(sh(s, "docker info --format '{{json .}}'"))
        daemon = json.loads(expected.installed("/etc/docker/daemon.json"))
        assert info["DockerRootDir"] == daemon["data-root"], info["DockerRootDir"]
        assert info["Driver"] == daemon["storage-driver"], info["Driver"]
        assert info["LoggingDriver"] == daemon["log-driver"], info["LoggingDriver"]
        assert info["CgroupDriver"] == "systemd", info["CgroupDriver"]
        assert info["LiveRestoreEnabled"] is daemon["live-restore"], info["LiveRestoreEnabled"]
