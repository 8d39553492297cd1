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


KERNEL = {"raspberrypi4-64": "kernel8.img", "raspberrypi5": "kernel_2712.img"}


def _boot_files(kernel: str) -> str:
    # meta-raspberrypi's IMAGE_BOOT_FILES with our RPI_EXTRA_IMAGE_BOOT_FILES:rpi
    dtbs = "bcm2711-rpi-4-b.dtb overlays/vc4-kms-v3d.dtbo;overlays/vc4-kms-v3d.dtbo"
    return f"bcm2711-bootfiles/* {dtbs}  u-boot.bin;{kernel} boot.scr "


def _env(config: Config, *, uart: str = "1", cmdline: str = GOOD_CMDLINE, args: str = GOOD_ARGS, **image: str):
    kernel = KERNEL.get(config.machine, "")
    values = {"ENABLE_UART": uart, "RPI_USE_U_BOOT": "1", "SDIMG_KERNELIMAGE": kernel,
              "UBOOT_MACHINE": "rpi_arm64_config", "IMAGE_BOOT_FILES": _boot_files(kernel)}  # fmt: skip
    return {
        config.image: {**values, **image},
        "rpi-cmdline": {"CMDLINE": cmdline},
        "edgecontainers-uboot-script": {"EDGECONTAINERS_KERNEL_ARGS": args},
    }


def _pi_failures(config: Config, env) -> list[str]:
    ours = (
        "ENABLE_UART",
        "RPI_USE_U_BOOT",
        "cmdline.txt",
        "boot.scr passes",
        "SDIMG_KERNELIMAGE",
        "UBOOT_MACHINE",
        "IMAGE_BOOT_FILES",
    )
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


@pytest.mark.parametrize("machine", ["raspberrypi4-64", "raspberrypi5"])
def test_u_boot_as_the_64bit_kernel_and_boot_scr_on_the_boot_partition(machine: str):
    config = Config(machine, "podman", "production")
    kernel = KERNEL[machine]
    # meta-raspberrypi's default without U-Boot: the kernel itself under the firmware's name
    (failure,) = _pi_failures(config, _env(config, IMAGE_BOOT_FILES=f"bootfiles/* Image;{kernel} boot.scr"))
    assert (
        failure == f"IMAGE_BOOT_FILES has no 'u-boot.bin;{kernel}': the boot partition would not boot through boot.scr"
    )
    (failure,) = _pi_failures(config, _env(config, IMAGE_BOOT_FILES=f"bootfiles/* u-boot.bin;{kernel}"))
    assert failure == "IMAGE_BOOT_FILES has no 'boot.scr': the boot partition would not boot through boot.scr"
    failures = _pi_failures(config, _env(config, SDIMG_KERNELIMAGE="kernel7l.img", UBOOT_MACHINE="rpi_4_32b_config",
                                         IMAGE_BOOT_FILES=_boot_files("kernel7l.img")))  # fmt: skip
    assert failures == [
        "SDIMG_KERNELIMAGE is 'kernel7l.img', not a 64-bit kernel name (kernel8.img, kernel_2712.img)",
        "UBOOT_MACHINE is 'rpi_4_32b_config', want 'rpi_arm64_config' (64-bit U-Boot)",
    ]
