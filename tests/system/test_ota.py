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

from edgecontainers.qemu import diskcheck, ota
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
    # the refused-bundle scenario against the good slot: slot A's hash before it, the bundles refused
    good_slot_sha256: str | None = None
    refused: list[str] = field(default_factory=list)

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


# ---------------------------------------------------------------- scenario 3: a tampered bundle
def _last_error(output: str) -> str:
    return next((line for line in output.splitlines() if line.startswith("LastError:")), output)


def test_tampered_bundle_is_refused_while_writing_and_the_booted_slot_stays(env: Ota):
    """A genuine signature over a changed payload: RAUC checks the signature, starts
    writing the (empty) other slot and dm-verity stops it at the changed block.  The
    other refusals, which must not touch a slot at all, run against a good slot
    after the update (scenario 3b)."""
    before = env.slots()
    assert before.booted == "A" and before.boot_status["A"] == "good", before.describe()
    grubenv = env.run("cat /boot/firmware/EFI/BOOT/grubenv")
    corrupted = "dmesg | grep -c 'verity: .* is corrupted' || true"
    verity_errors = int(env.run(corrupted).strip() or 0)
    res, _ = ota.install(env.session, ota.server_url("bad-tampered.raucb"), timeout=900)
    assert not res.ok, f"the tampered bundle was installed:\n{res.output}"
    error = _last_error(res.output)
    # the payload no longer matches the signed dm-verity root hash
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


# ---------------------------------------------------------------- scenario 3b: refused bundles vs. a good slot
REFUSED = [
    ("bad-unsigned.raucb", "Signature size is 0"),
    ("bad-wrong-signer.raucb", "signature verification failed"),
    ("bad-other-machine.raucb", "Compatible mismatch"),
    # over HTTP RAUC's streaming refuses every plain bundle; from a file only
    # the system.conf's bundle-formats=-plain stands in the way
    ("bad-plain.raucb", "Bundle format 'plain' not supported in streaming mode"),
    ("stick:bad-plain.raucb", "Bundle format 'plain' not allowed"),
    ("bad-expired.raucb", "certificate has expired"),
    ("bad-not-yet-valid.raucb", "certificate is not yet valid"),
]


def _slot_sha256(env: Ota, partlabel: str) -> str:
    return env.run(f"sha256sum /dev/disk/by-partlabel/{partlabel}", timeout=900).split()[0]


REFUSED_IDS = [b.replace("bad-", "").replace(":", "-").removesuffix(".raucb") for b, _ in REFUSED]


@pytest.mark.parametrize(("bundle", "reason"), REFUSED, ids=REFUSED_IDS)
def test_refused_bundle_leaves_the_good_other_slot_untouched(env: Ota, bundle: str, reason: str):
    """After the update slot A holds the good version 1 and is RAUC's target: a
    bundle refused for its signature, signer, compatible or format must not write
    a sector of it nor change any slot or bootloader state."""
    before = env.slots()
    assert before.booted == "B" and before.boot_status == {"A": "good", "B": "good"}, before.describe()
    if env.good_slot_sha256 is None:
        env.good_slot_sha256 = _slot_sha256(env, "rootfsA")
    grubenv = env.run("cat /boot/firmware/EFI/BOOT/grubenv")
    written = _sectors_written(env, "rootfsA")
    if bundle.startswith("stick:"):
        source = f"{ota.mount_stick(env.session)}/{bundle.removeprefix('stick:')}"
    else:
        source = ota.server_url(bundle)
    res, _ = ota.install(env.session, source, timeout=900)
    assert not res.ok, f"{bundle} was installed:\n{res.output}"
    error = _last_error(res.output)
    assert reason in error, error
    assert _sectors_written(env, "rootfsA") == written, "RAUC wrote to slot A for a bundle it refused"
    after = env.slots()
    assert (after.booted, after.primary, after.boot_status) == (before.booted, before.primary, before.boot_status), (
        f"slot states changed: {before.describe()} -> {after.describe()}"
    )
    assert env.run("cat /boot/firmware/EFI/BOOT/grubenv") == grubenv, "the bootloader environment changed"
    env.refused.append(bundle)


def test_the_good_slot_is_byte_for_byte_unchanged_after_the_refused_bundles(env: Ota):
    assert env.refused == [b for b, _ in REFUSED], f"refused so far: {env.refused}"
    assert _slot_sha256(env, "rootfsA") == env.good_slot_sha256, "slot A's content changed"
    assert env.slots().boot_status == {"A": "good", "B": "good"}


# ---------------------------------------------------------------- scenario 4: power cut during an install
def _sectors_written(env: Ota, partlabel: str) -> int:
    dev = env.run(f"basename $(readlink -f /dev/disk/by-partlabel/{partlabel})").strip()
    return int(env.run(f"cat /sys/class/block/{dev}/stat").split()[6])


WRITER_LOG = "/data/.edgecontainers-ota-writer"
WRITER_ACKED = "/run/ota-test-writer.acked"
RECORD = "{:08d} written and synced before the power cut"


def _writer_records(text: str) -> tuple[int, str]:
    """How many whole records, in order, start the writer's file; and what follows
    them if that is not a record (empty, or the start of the next record)."""
    lines = text.split("\n")
    whole = 0
    for line in lines[:-1]:
        if line != RECORD.format(whole + 1):
            break
        whole += 1
    rest = "\n".join(lines[whole:])
    return whole, rest


def test_power_cut_during_install_boots_the_old_slot(env: Ota):
    """The plug pulled (SIGKILL to QEMU: nothing flushed) while RAUC writes slot A
    and while a writer appends fsync'ed records to /data.  Before power-on, the
    filesystems of /data and of slot B are checked from the host (journal replayed
    as at mount, then ``e2fsck -fn``); then B boots and is good, A is bad, and every
    record the writer had synced before the cut is there."""
    s = env.session
    before = env.slots()
    assert before.booted == "B" and before.boot_status == {"A": "good", "B": "good"}, before.describe()
    env.run(f"echo 'written before the power cut' > {PROBE}.2 && sync")
    # records appended and fsync'ed (coreutils' sync FILE) one by one; the count
    # of synced ones goes to /run after each fsync
    record = RECORD.replace("{:08d}", "%08d")
    env.run(f"rm -f {WRITER_LOG} {WRITER_ACKED} && systemd-run --unit=ota-test-writer sh -c "
            f"'i=0; while :; do i=$((i+1)); printf \"{record}\\n\" $i >> {WRITER_LOG}; "
            f"sync {WRITER_LOG}; echo $i > {WRITER_ACKED}; done'")  # fmt: skip
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
             f"[ $((w - {written})) -ge 2048 ] && echo reached acked=$(cat {WRITER_ACKED}) && exit 0; "
             f"[ -d /proc/{pid} ] || {{ echo ended; exit 1; }}; sleep 0.1; done")  # fmt: skip
    res = s.run(watch, timeout=900)
    if "reached" not in res.output:
        progress = s.run("busctl get-property de.pengutronix.rauc / de.pengutronix.rauc.Installer Progress",
                         timeout=60).output.strip()  # fmt: skip
        pytest.fail(f"the install ended before 1 MiB reached the slot (rc {res.rc}: {res.output.strip()}): {progress}")
    s.power_cut()
    acked = int(res.output.split("acked=", 1)[1].split()[0])
    assert acked > 0, f"the writer had synced nothing: {res.output}"
    checked = diskcheck.fsck_partitions(s.disk, ["data", "rootfsB"], s.workdir / "fsck")
    env.figures["writer_records_synced_before_cut"] = acked
    for fsck in checked:
        assert fsck.clean, (f"{fsck.partition} after the power cut: journal replay exit {fsck.replay_rc}, "
                            f"e2fsck -fn exit {fsck.rc}:\n{fsck.output[-1500:]}")  # fmt: skip
    s.start()
    passed = ota.wait_for_slot(s, "B", seen=env.seen)
    assert passed == ["B"], f"slots booted after the power cut (at 1 MiB written to slot A): {passed}"
    assert ota.wait_health_decided(s) == ("active", "success")
    after = env.slots()
    assert after.booted == "B" and after.boot_status["B"] == "good", after.describe()
    assert after.boot_status["A"] == "bad", f"the half-written slot A may boot: {after.describe()}"
    assert env.run(f"cat {PROBE}").strip() == "written before the update"
    assert env.run(f"cat {PROBE}.2").strip() == "written before the power cut"
    whole, rest = _writer_records(env.run(f"cat {WRITER_LOG}"))
    assert whole >= acked, f"{acked} records were synced before the cut, {whole} survived it"
    assert RECORD.format(whole + 1).startswith(rest) or rest == "", f"after record {whole}: {rest[:200]!r}"
    env.figures["writer_records_after_cut"] = whole
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
