"""OTA scenarios in QEMU (pytest marker ``ota``): signed A/B updates through RAUC
and the layer's GRUB configuration, the health gate's mark-good / mark-bad and
rollback, refused bundles, a power cut in the middle of an install, and
container updates with rollback.

One guest (podman, production image, OVMF -> GRUB -> the layer's grub.cfg) goes
through the scenarios in order; each test checks the state it starts from, so a
failure says where the chain broke.  Bundles come from ``otakit`` (the layer's
bundle settings, the test CA the image trusts), served over HTTP by a server on
the host's loopback that the guest reaches through a QEMU guestfwd rule, or
read from a second disk standing in for a USB stick.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass, field

import pytest
from otachain import chained, ota_guest, scenario_log

from edgecontainers.qemu import ota
from edgecontainers.qemu.session import Session
from edgecontainers.qemu.vm import Drive
from edgecontainers.testimage.builder import ImageSpec
from edgecontainers.testimage.httpserve import BundleServer
from edgecontainers.testimage.otakit import VERSION_MARKER, OtaKit, build_kit

pytestmark = pytest.mark.ota

APP = "edgecontainers-demo"
PROBE = "/data/.edgecontainers-ota-probe"


@dataclass
class Ota:
    session: Session
    kit: OtaKit
    server: BundleServer
    seen: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    # what the scenarios measured on the way (build/test-results/ota-figures.json);
    # benchmarks/ota_benchmark.py is where figures are compared
    figures: dict[str, float | int] = field(default_factory=dict)

    def run(self, command: str, timeout: float = 120) -> str:
        res = self.session.run(command, timeout=timeout)
        assert res.ok, f"'{command}' exited {res.rc}: {res.output.strip()[-800:]}"
        return res.output

    def slots(self) -> ota.Slots:
        return ota.slots(self.session)

    def health_endpoint(self) -> str:
        url = f"http://127.0.0.1:{self.session.app_port}/cgi-bin/health"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=20) as resp:
                    return f"{resp.status} {resp.read().decode().strip()}"
            except OSError as exc:
                if time.monotonic() > deadline:
                    return f"no answer: {exc}"
                time.sleep(3)


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest, builder, build_image, tmp_path_factory):
    if request.config.getoption("image") or request.config.getoption("deploy_dir"):
        pytest.skip("the OTA scenarios install bundles derived from the QEMU test image; "
                    "they do not run against a kas build yet (docs/ota.md)")  # fmt: skip
    image = build_image(ImageSpec(engine="podman", variant="production"))
    kit = build_kit(builder, image)
    server = BundleServer(kit.directory).start()
    figures: dict[str, float | int] = {}
    stick = (Drive(kit.path("stick.img"), readonly=True),)
    guest = ota_guest(image, "ota-podman-production", workdir=tmp_path_factory.mktemp("ota"), figures=figures,
                      guestfwd=((ota.GUEST_HTTP_PORT, server.port),), figures_file="ota-figures.json",
                      extra_drives=stick)  # fmt: skip
    try:
        with guest as session:
            state = Ota(session, kit, server, figures=figures)
            state.seen.add(session.boot_id())
            yield state
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _console_per_test(request: pytest.FixtureRequest, env: Ota):
    with scenario_log(request, env.session, "ota", env.figures):
        yield


@pytest.fixture(autouse=True)
def _chain(request: pytest.FixtureRequest, env: Ota):
    with chained(request, env.failed, "OTA"):
        yield


# ---------------------------------------------------------------- scenario 0: health failure, other slot empty
GATE_CONF = "/run/ec-ota-test-health.conf"
GATE_DROPIN = "/run/systemd/system/edgecontainers-health.service.d/50-ota-test.conf"
NEVER_STARTED = "ec-ota-test-never-started.service"


def test_health_failure_with_the_other_slot_empty_keeps_the_device_booting(env: Ota):
    """A freshly flashed device (slot B never installed) whose health gate fails
    must not mark its only bootable slot bad (RAUC's grub backend would set
    A_OK=0, and the device would have nothing to boot): the gate fails, says why,
    leaves the boot state alone and does not reboot; the next boot is A again.
    The gate is made to fail for this boot only (a drop-in and a setting in
    /run: a critical unit that never runs, a 5 s window), not by changing the
    layer's files."""
    s = env.session
    before = env.slots()
    assert before.booted == "A" and before.boot_status["A"] == "good", before.describe()
    assert before.boot_status.get("B") != "good", f"slot B is not the empty slot of a new device: {before.describe()}"
    grubenv = env.run("cat /boot/firmware/EFI/BOOT/grubenv")
    boot = s.boot_id()
    units = f"data.mount edgecontainers-persist.service {NEVER_STARTED}"
    env.run(f"{{ cat /usr/lib/edgecontainers/health.conf; echo EDGE_HEALTH_TIMEOUT=5; "
            f"echo 'EDGE_HEALTH_UNITS=\"{units}\"'; }} > {GATE_CONF}")  # fmt: skip
    env.run(f"mkdir -p {GATE_DROPIN.rsplit('/', 1)[0]} && printf '[Service]\\nBindReadOnlyPaths=%s:%s\\n' "
            f"{GATE_CONF} /usr/lib/edgecontainers/health.conf > {GATE_DROPIN} && systemctl daemon-reload")  # fmt: skip
    res = s.run("systemctl restart edgecontainers-health.service", timeout=300)
    assert not res.ok, "the health gate passed with a critical unit that never runs"
    assert ota.wait_health_decided(s) == ("failed", "exit-code")
    journal = env.run("journalctl -b -u edgecontainers-health.service -o cat --no-pager")
    assert f"unit {NEVER_STARTED} is inactive, not active" in journal, journal[-2000:]
    assert "not marking slot A bad: no other slot is good" in journal, journal[-2000:]
    time.sleep(10)  # a gate that marked A bad would be rebooting the guest by now
    assert s.boot_id() == boot, "the guest rebooted after the failed health check"
    after = env.slots()
    assert after.booted == "A" and after.boot_status["A"] == "good", after.describe()
    assert env.run("cat /boot/firmware/EFI/BOOT/grubenv") == grubenv, "the bootloader environment changed"
    assert env.health_endpoint() == "200 ok version=1.0"
    # the next boot: A again (the failure was for that boot only), and good
    env.run(f"rm -f {GATE_DROPIN} {GATE_CONF} && systemctl daemon-reload")
    passed = ota.reboot_into(s, "A", seen=env.seen)
    assert passed == ["A"], f"slots booted: {passed}"
    assert ota.wait_health_decided(s) == ("active", "success")
    again = env.slots()
    assert again.booted == "A" and again.boot_status["A"] == "good", again.describe()


# ---------------------------------------------------------------- scenario 3: refused bundles
@pytest.mark.parametrize(
    ("bundle", "reason"),
    [
        ("bad-unsigned.raucb", "Signature size is 0"),
        ("bad-wrong-signer.raucb", "signature verification failed"),
        ("bad-tampered.raucb", None),
        ("bad-other-machine.raucb", "Compatible mismatch"),
    ],
    ids=["unsigned", "wrong-signer", "tampered", "other-machine"],
)
def test_bad_bundle_is_refused_and_nothing_changes(env: Ota, bundle: str, reason: str | None):
    before = env.slots()
    assert before.booted == "A" and before.boot_status["A"] == "good", before.describe()
    grubenv = env.run("cat /boot/firmware/EFI/BOOT/grubenv")
    corrupted = "dmesg | grep -c 'verity: .* is corrupted' || true"
    verity_errors = int(env.run(corrupted).strip() or 0)
    res, _ = ota.install(env.session, ota.server_url(bundle), timeout=900)
    assert not res.ok, f"{bundle} was installed:\n{res.output}"
    error = next((line for line in res.output.splitlines() if line.startswith("LastError:")), res.output)
    if reason:
        assert reason in error, error
    else:  # tampered: the payload no longer matches the signed dm-verity root hash
        assert "Input/output error" in error, error
        assert int(env.run(corrupted).strip() or 0) > verity_errors, "dm-verity did not report the corruption"
        # RAUC had started writing the target slot: it stays unbootable
    after = env.slots()
    assert (after.booted, after.primary, after.boot_status) == (before.booted, before.primary, before.boot_status), (
        f"slot states changed: {before.describe()} -> {after.describe()}"
    )
    assert env.run("cat /boot/firmware/EFI/BOOT/grubenv") == grubenv, "the bootloader environment changed"


# ---------------------------------------------------------------- scenarios 5 and 6: container updates
def _app(env: Ota) -> tuple[str, str, str]:
    return ota.app_state(env.session, APP)


def test_container_update_to_a_broken_image_rolls_back(env: Ota):
    assert env.health_endpoint() == "200 ok version=1.0"
    status, health, image = _app(env)
    assert (status, health) == ("running", "healthy"), (status, health)
    stick = ota.mount_stick(env.session)
    res = env.session.run(f"edgecontainers-app-update --archive {stick}/app-broken.tar {APP}", timeout=900)
    assert res.rc == 1, f"exit {res.rc} (want 1: updated failed, rolled back):\n{res.output}"
    assert "rolled back" in res.output, res.output
    after = _app(env)
    assert after == ("running", "healthy", image), f"after the rollback: {after}, before: {image}"
    assert env.health_endpoint() == "200 ok version=1.0"


def test_container_update_to_a_good_image_runs_it(env: Ota):
    _, _, old_image = _app(env)
    stick = ota.mount_stick(env.session)
    res = env.session.run(f"edgecontainers-app-update --archive {stick}/app-v2.tar {APP}", timeout=900)
    assert res.rc == 0, f"exit {res.rc}:\n{res.output}"
    status, health, image = _app(env)
    assert (status, health) == ("running", "healthy") and image != old_image, (status, health, image, old_image)
    assert env.health_endpoint() == "200 ok version=2.0"


# ---------------------------------------------------------------- scenario 1: update, reboot, marked good
def test_update_installs_boots_the_other_slot_and_is_marked_good(env: Ota):
    s = env.session
    assert env.slots().booted == "A"
    machine_id = env.run("cat /etc/machine-id").strip()
    host_key = env.run("cat /var/lib/ssh/ssh_host_ed25519_key.pub").strip()
    env.run(f"echo 'written before the update' > {PROBE} && sync")
    env.server.reset()
    res, seconds = ota.install(s, ota.server_url("update-v2.raucb"))  # streaming, adaptive
    assert res.ok, res.output
    streamed = env.server.bytes_sent["update-v2.raucb"]
    size = env.kit.path("update-v2.raucb").stat().st_size
    env.figures.update(bundle_bytes=size, streamed_bytes=streamed, install_s=round(seconds, 1))
    assert 0 < streamed < size, f"streamed {streamed} of {size} bytes"
    pending = env.slots()
    assert pending.primary == "B", pending.describe()

    t = time.monotonic()
    passed = ota.reboot_into(s, "B", seen=env.seen)
    assert passed == ["B"], f"slots booted: {passed}"
    assert ota.wait_health_decided(s) == ("active", "success")
    env.figures["reboot_to_marked_good_s"] = round(time.monotonic() - t, 1)
    after = env.slots()
    assert after.booted == "B" and after.boot_status["B"] == "good", after.describe()
    assert env.run(f"cat {VERSION_MARKER}").strip() == "2"
    assert "marked slot B good" in env.run("cat /data/edgecontainers/health.log")
    # everything on /data is intact
    assert env.run(f"cat {PROBE}").strip() == "written before the update"
    assert env.run("cat /etc/machine-id").strip() == machine_id
    assert env.run("cat /var/lib/ssh/ssh_host_ed25519_key.pub").strip() == host_key
    assert env.health_endpoint() == "200 ok version=2.0", "the updated container image did not survive"


# ---------------------------------------------------------------- scenario 4: power cut during an install
def _sectors_written(env: Ota, partlabel: str) -> int:
    dev = env.run(f"basename $(readlink -f /dev/disk/by-partlabel/{partlabel})").strip()
    return int(env.run(f"cat /sys/class/block/{dev}/stat").split()[6])


def test_power_cut_during_install_boots_the_old_slot(env: Ota):
    s = env.session
    before = env.slots()
    assert before.booted == "B" and before.boot_status == {"A": "good", "B": "good"}, before.describe()
    env.run(f"echo 'written before the power cut' > {PROBE}.2 && sync")
    stick = ota.mount_stick(s)
    written = _sectors_written(env, "rootfsA")
    env.run(f"systemd-run --unit=ota-test-install rauc install {stick}/update-v2.raucb")
    # Cut the power as soon as RAUC is writing slot A.  An adaptive install
    # writes little (here the old content of A is mostly what v2 needs) and
    # can finish within seconds of its first write, so the guest itself
    # watches the slot's write counter (every 0.1 s) and the harness cuts the
    # moment the first MiB has reached the partition.  Polling from the host
    # (a few SSH round trips, ~10 s) once let the install finish and activate
    # slot A before the cut.
    dev = env.run("basename $(readlink -f /dev/disk/by-partlabel/rootfsA)").strip()
    pid = env.run("systemctl show -p MainPID --value ota-test-install.service").strip()
    watch = (f"while :; do w=$(awk '{{print $7}}' /sys/class/block/{dev}/stat); "
             f"[ $((w - {written})) -ge 2048 ] && echo reached && exit 0; "
             f"[ -d /proc/{pid} ] || {{ echo ended; exit 1; }}; sleep 0.1; done")  # fmt: skip
    res = s.run(watch, timeout=900)
    if "reached" not in res.output:
        progress = s.run("busctl get-property de.pengutronix.rauc / de.pengutronix.rauc.Installer Progress",
                         timeout=60).output.strip()  # fmt: skip
        pytest.fail(f"the install ended before 1 MiB reached the slot (rc {res.rc}: {res.output.strip()}): {progress}")
    s.power_cut()
    progress = "1 MiB written to slot A"
    s.start()
    passed = ota.wait_for_slot(s, "B", seen=env.seen)
    assert passed == ["B"], f"slots booted after the power cut (at {progress}): {passed}"
    assert ota.wait_health_decided(s) == ("active", "success")
    after = env.slots()
    assert after.booted == "B" and after.boot_status["B"] == "good", after.describe()
    assert after.boot_status["A"] == "bad", f"the half-written slot A may boot: {after.describe()}"
    assert env.run(f"cat {PROBE}").strip() == "written before the update"
    assert env.run(f"cat {PROBE}.2").strip() == "written before the power cut"
    assert env.health_endpoint() == "200 ok version=2.0"


# ---------------------------------------------------------------- scenario 2: unhealthy update rolls back
def test_unhealthy_update_is_marked_bad_and_the_old_slot_boots(env: Ota):
    s = env.session
    assert env.slots().booted == "B"  # A: the slot half-written in the power cut
    stick = ota.mount_stick(s)
    res, _ = ota.install(s, f"{stick}/update-unhealthy.raucb")  # from a file (the stick)
    assert res.ok, res.output
    assert env.slots().primary == "A"

    t = time.monotonic()
    passed = ota.reboot_into(s, "B", seen=env.seen)
    assert passed == ["A", "B"], f"slots booted: {passed} (want the new slot A, then B again)"
    assert ota.wait_health_decided(s) == ("active", "success")
    env.figures["rollback_s"] = round(time.monotonic() - t, 1)
    after = env.slots()
    assert after.booted == "B" and after.boot_status["B"] == "good", after.describe()
    assert after.boot_status["A"] == "bad", after.describe()
    log = env.run("cat /data/edgecontainers/health.log")
    assert "slot=A" in log and "99-test-always-fails failed" in log and "marked slot A bad" in log, log
    assert env.run(f"cat {PROBE}").strip() == "written before the update"
