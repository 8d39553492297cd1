SUMMARY = "A/B GRUB configuration and initial grubenv for EFI machines of edgecontainers"
DESCRIPTION = "grub.cfg chooses rootfs slot A or B by ORDER, x_OK and x_TRY (RAUC's grub backend), counts the attempt and boots the kernel of that slot; grubenv starts with slot A good and slot B empty."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "bootloaders"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit deploy nopackages edgecontainers_files

SRC_URI = "\
    file://grub.cfg.in \
    file://grubenv.vars \
"

S = "${UNPACKDIR}"

INHIBIT_DEFAULT_DEPS = "1"
PACKAGE_ARCH = "${MACHINE_ARCH}"
COMPATIBLE_HOST = "(x86_64|i.86|aarch64).*-linux"

EDGE_SUBST_VARS:append = " EDGECONTAINERS_KERNEL_ARGS"

python do_compile() {
    b = d.getVar('B')
    edge_render_file(d, 'grub.cfg.in', os.path.join(b, 'grub.cfg'))
    # A GRUB environment block is exactly 1024 bytes, padded with '#'.
    with open(os.path.join(d.getVar('UNPACKDIR'), 'grubenv.vars')) as f:
        block = '# GRUB Environment Block\n' + f.read()
    if len(block) > 1024:
        bb.fatal('grubenv.vars does not fit in a 1024-byte GRUB environment block')
    with open(os.path.join(b, 'grubenv'), 'w') as f:
        f.write(block + '#' * (1024 - len(block)))
}
do_compile[vardeps] += "${EDGE_SUBST_VARS}"

do_deploy() {
    install -d ${DEPLOYDIR}
    install -m 0644 ${B}/grub.cfg ${DEPLOYDIR}/edgecontainers-grub.cfg
    install -m 0644 ${B}/grubenv ${DEPLOYDIR}/edgecontainers-grubenv
}
addtask deploy after do_compile before do_build
