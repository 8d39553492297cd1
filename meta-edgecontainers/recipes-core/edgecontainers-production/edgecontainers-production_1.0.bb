SUMMARY = "Production lock-down of edgecontainers images"
DESCRIPTION = "No login on serial consoles and no magic SysRq. Installed by edgecontainers-image, not by edgecontainers-image-dev."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit allarch edgecontainers_files

SRC_URI = "\
    file://no-serial-login.conf \
    file://sysctl-production.conf \
"

S = "${UNPACKDIR}"

EDGE_FILES = "\
    no-serial-login.conf:${systemd_system_unitdir}/serial-getty@.service.d/60-edgecontainers-production.conf \
    no-serial-login.conf:${systemd_system_unitdir}/console-getty.service.d/60-edgecontainers-production.conf \
    sysctl-production.conf:${nonarch_libdir}/sysctl.d/61-edgecontainers-production.conf \
"

do_install() {
    :
}

FILES:${PN} += "${@edge_files_dests(d)}"
