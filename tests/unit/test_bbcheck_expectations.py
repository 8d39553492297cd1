"""bbcheck's `bitbake -e` assertions on the Raspberry Pi's UART and kernel
command line (no BitBake run: the values are what `bitbake -e` printed for a
configuration, given by hand).  The real values are checked by
tests/bitbake (`edgectl check bitbake`)."""

from __future__ import annotations

import pytest

from edgecontainers.bbcheck import Config, expectations_failures

# what bitbake -e gives with the layer as it is (rpi-cmdline's CMDLINE with
# ENABLE_UART = "1" and CMDLINE_ROOTFS = "")
GOOD_CMDLINE = "dwc_otg.lpm_enable=0 console=serial0,115200 net.ifnames=0"
GOOD_ARGS = "rootwait rootfstype=ext4 ro panic=10  quiet loglevel=3 "


def _env(config: Config, *, uart: str = "1", cmdline: str = GOOD_CMDLINE, args: str = GOOD_ARGS):
    return {
        config.image: {"ENABLE_UART": uart, "RPI_USE_U_BOOT": "1"},
        "rpi-cmdline": {"CMDLINE": cmdline},
        "edgecontainers-uboot-script": {"EDGECONTAINERS_KERNEL_ARGS": args},
    }


def _pi_failures(config: Config, env) -> list[str]:
    ours = ("ENABLE_UART", "RPI_USE_U_BOOT", "cmdline.txt", "boot.scr passes")
    return [f for f in expectations_failures(config, env, []) if f.startswith(ours)]


@pytest.mark.parametrize("variant", ["production", "dev"])
@pytest.mark.parametrize("machine", ["raspberrypi4-64", "raspberrypi5"])
def test_the_layers_pi_settings_pass(machine: str, variant: str):
    config = Config(machine, "podman", variant)
    assert _pi_failures(config, _env(config)) == []


@pytest.mark.parametrize("variant", ["production", "dev"])
def test_uart_off_or_unset_fails_in_both_variants(variant: str):
    config = Config("raspberrypi4-64", "docker", variant)
    for value in ("0", ""):
        (failure,) = _pi_failures(config, _env(config, uart=value))
        assert failure == f"ENABLE_UART is {value!r} in the {variant} build, want '1' (U-Boot)"


def test_boot_script_naming_serial0_fails():
    """What the layer had: console=serial0 in boot.scr's own arguments, which
    replaced the firmware's command line; the kernel does not resolve serial0."""
    config = Config("raspberrypi4-64")
    old_args = "rootwait rootfstype=ext4 ro panic=10 console=serial0,115200 quiet loglevel=3 "
    assert _pi_failures(config, _env(config, args=old_args)) == [
        "boot.scr passes console=serial*, which only the Pi firmware resolves (cmdline.txt)"
    ]


def test_cmdline_txt_with_a_root_or_without_a_console_fails():
    config = Config("raspberrypi5", "podman", "dev")
    upstream = "dwc_otg.lpm_enable=0 console=serial0,115200 root=/dev/mmcblk0p2 rootfstype=ext4 rootwait net.ifnames=0"
    (failure,) = _pi_failures(config, _env(config, cmdline=upstream))
    assert failure.startswith("cmdline.txt names a root")
    (failure,) = _pi_failures(config, _env(config, cmdline="dwc_otg.lpm_enable=0 net.ifnames=0"))
    assert failure.startswith("cmdline.txt names no serial console")


def test_other_machines_are_not_asked_about_the_pi():
    config = Config("qemuarm64")
    assert _pi_failures(config, {}) == []


@pytest.mark.parametrize("dev", [False, True], ids=["production", "dev"])
@pytest.mark.parametrize("machine", ["raspberrypi4-64", "raspberrypi5"])
def test_the_layers_own_values_pass(machine: str, dev: bool):
    """The kernel arguments the distro configuration computes for boot.scr
    (edgecontainers.testimage's reader of it, as bitbake -e would see them).
    That reader leaves out variables set only with an override (ENABLE_UART:rpi,
    CMDLINE_ROOTFS:rpi): their real values are bitbake -e's (tests/bitbake)."""
    from edgecontainers.testimage.layer import layer_settings

    settings = layer_settings(machine, "podman", dev)
    config = Config(machine, "podman", "dev" if dev else "production")
    env = _env(config, args=settings["EDGECONTAINERS_KERNEL_ARGS"])
    assert _pi_failures(config, env) == []
