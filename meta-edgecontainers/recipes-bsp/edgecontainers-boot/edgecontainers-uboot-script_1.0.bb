SUMMARY = "A/B boot script (boot.scr) for U-Boot machines of edgecontainers"
DESCRIPTION = "Chooses rootfs slot A or B by BOOT_ORDER and the attempts left, counts the attempt in a state file on the boot partition that RAUC's uboot backend edits, and boots the kernel of that slot."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "bootloaders"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit kernel-arch deploy nopackages edgecontainers_files

DEPENDS += "u-boot-mkimage-native"
# meta-raspberrypi's u-boot depends on whatever provides this.
PROVIDES += "u-boot-default-script"

SRC_URI = "file://boot.cmd.in"

S = "${UNPACKDIR}"

INHIBIT_DEFAULT_DEPS = "1"
PACKAGE_ARCH = "${MACHINE_ARCH}"

EDGE_SUBST_VARS:append = " \
    EDGECONTAINERS_KERNEL_ARGS \
    EDGECONTAINERS_UBOOT_DEVNUM \
    EDGECONTAINERS_UBOOT_DEVTYPE \
    KERNEL_BOOTCMD \
    KERNEL_IMAGETYPE \
"
KERNEL_BOOTCMD ??= "booti"

python do_render() {
    edge_render_file(d, 'boot.cmd.in', os.path.join(d.getVar('B'), 'boot.cmd'))
}
do_render[doc] = "Fills the @NAME@ placeholders of boot.cmd.in."
do_render[vardeps] += "${EDGE_SUBST_VARS}"
addtask render after do_unpack before do_compile

do_compile() {
    mkimage -A ${UBOOT_ARCH} -T script -C none -n "edgecontainers A/B boot" -d ${B}/boot.cmd ${B}/boot.scr
}

do_deploy() {
    install -d ${DEPLOYDIR}
    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr
}
addtask deploy after do_compile before do_build
