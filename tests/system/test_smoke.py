"""Smoke suite: what the layer puts on the device works on a real kernel,
bootloader, RAUC and container engine.  One test per property; each runs on
every planned boot it applies to (see conftest.py), the guest is shared."""

from __future__ import annotations

from pathlib import Path

import checks
import pytest

pytestmark = pytest.mark.qemu


# ---------------------------------------------------------------- boot
def test_boots_to_multi_user_with_no_failed_units(booted):
    checks.system_running(booted.session)


@pytest.mark.bootpath("grub")
def test_grub_boots_slot_a_from_grubenv(booted):
    """OVMF -> GRUB -> the layer's grub.cfg: slot A by grubenv, kernel from the slot."""
    s = booted.session
    assert checks.sh(s, "test -d /sys/firmware/efi && echo efi").strip() == "efi"
    cmdline = checks.sh(s, "cat /proc/cmdline")
    assert "BOOT_IMAGE=(hd0,gpt2)/boot/" in cmdline, cmdline
    checks.kernel_command_line(s, booted.expected, slot="A")
    # GRUB counted the boot in grubenv; the health gate (rauc mark-good) reset it.
    env = checks.sh(s, "grub-editenv /boot/firmware/EFI/BOOT/grubenv list")
    values = dict(line.split("=", 1) for line in env.splitlines() if "=" in line)
    assert values.get("ORDER", "").split()[:1] == ["A"], env
    assert values.get("A_OK") == "1" and values.get("A_TRY") == "0", env


# ---------------------------------------------------------------- read-only root, logs in RAM
def test_root_is_read_only(booted):
    checks.root_read_only(booted.session)


def test_var_log_is_tmpfs(booted):
    checks.var_log_tmpfs(booted.session)


def test_journald_is_volatile_with_the_declared_cap(booted):
    checks.journald_volatile(booted.session, booted.expected)


# ---------------------------------------------------------------- /data
def test_data_is_mounted_read_write(booted):
    checks.data_partition(booted.session, booted.expected)


def test_data_holds_engine_storage_rauc_status_machine_id_and_ssh_keys(booted):
    checks.data_holds_state(booted.session, booted.expected)


def test_data_grows_to_the_end_of_the_disk(booted):
    checks.data_grown(booted.session, booted.expected)


def test_persisted_state_is_bound_from_data_above_the_volatile_binds(booted):
    checks.persisted_above_volatile_binds(booted.session, booted.expected)


def test_no_ordering_cycles_and_the_layers_units_verify(booted):
    checks.no_ordering_cycles(booted.session, booted.expected)


# ---------------------------------------------------------------- the app, offline
def test_preloaded_app_runs_with_the_network_cut(booted):
    checks.app_running_offline(booted.session, booted.expected)


@pytest.mark.engine("podman")
def test_preloaded_image_is_read_from_the_read_only_store_under_the_bundled_name(booted):
    checks.preloaded_store(booted.session, booted.expected)


def test_app_answers_on_its_health_endpoint(booted):
    checks.app_health_endpoint(booted.session, booted.expected)


def test_app_runs_as_non_root(booted):
    checks.app_non_root(booted.session, booted.expected)


def test_app_runs_confined_as_declared(booted):
    checks.app_confined(booted.session, booted.expected)


def test_app_limits_and_slice_are_in_the_cgroup_tree(booted):
    checks.app_limits(booted.session, booted.expected)


def test_engine_uses_the_layers_configuration(booted):
    checks.engine_config(booted.session, booted.expected)


# ---------------------------------------------------------------- RAUC and the health gate
def test_rauc_status_shows_both_slots_and_the_booted_one(booted):
    checks.rauc_status(booted.session, booted.expected, slot="A")


def test_rauc_trusts_the_fleet_ca(booted):
    """The keyring RAUC verifies bundles with is the CA the image was built with
    (the test image's; a kas build's is only checked to be a certificate)."""
    ca = None
    if booted.image is not None:
        ca = (Path(booted.image.metadata["rauc_key_dir"]) / "ca.cert.pem").read_bytes()
    checks.rauc_keyring(booted.session, ca)


def test_health_gate_marks_the_booted_slot_good(booted):
    checks.health_gate_marked_good(booted.session, slot="A")


# ---------------------------------------------------------------- production lock-down
@pytest.mark.variant("production")
def test_production_has_no_getty_on_the_serial_console(booted):
    checks.no_serial_getty(booted.session)


@pytest.mark.variant("production")
def test_production_refuses_root_login(booted):
    checks.root_login_refused(booted.session, booted.expected)


@pytest.mark.variant("production")
def test_production_ssh_refuses_passwords(booted):
    checks.ssh_refuses_passwords(booted.session, booted.expected)


@pytest.mark.variant("production")
def test_production_sysctl_values_are_the_declared_ones(booted):
    checks.sysctl_values(booted.session, booted.expected)


@pytest.mark.variant("dev")
def test_dev_sysctl_values_are_the_declared_ones(booted):
    checks.sysctl_values(booted.session, booted.expected)


@pytest.mark.variant("dev")
def test_dev_serial_login_works(booted):
    checks.serial_login_works(booted.session)


# ---------------------------------------------------------------- last: a reboot (changes the shared guest)
@pytest.mark.variant("dev")
def test_state_on_data_survives_a_reboot(booted):
    """/data keeps what was written and the machine id across a reboot (the disk overlay persists)."""
    s = booted.session
    checks.sh(s, "echo survives > /data/.edgecontainers-reboot-probe && sync")
    machine_id = checks.sh(s, "cat /etc/machine-id").strip()
    host_key = checks.sh(s, "cat /var/lib/ssh/ssh_host_ed25519_key.pub").strip()
    old_boot = s.boot_id()
    state = s.reboot()
    assert s.boot_id() != old_boot
    assert state == "running", state
    assert checks.sh(s, "cat /data/.edgecontainers-reboot-probe").strip() == "survives"
    assert checks.sh(s, "cat /etc/machine-id").strip() == machine_id
    assert checks.sh(s, "cat /var/lib/ssh/ssh_host_ed25519_key.pub").strip() == host_key
    checks.root_read_only(s)
