SUMMARY = "Health gate that marks the booted RAUC slot good or bad"
DESCRIPTION = "After boot, waits for the critical units and containers, a writable /data and user hooks; then marks the slot good, or bad and reboots so that the bootloader falls back to the other slot."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit systemd edgecontainers_files

SRC_URI = "\
    file://edgecontainers-health.service \
    file://health-gate \
    file://health.conf \
"

S = "${UNPACKDIR}"

EDGE_FILES = "\
    health-gate:${libexecdir}/edgecontainers/health-gate:0755 \
    health.conf:${nonarch_libdir}/edgecontainers/health.conf \
    edgecontainers-health.service:${systemd_system_unitdir}/ \
"
EDGE_DIRS = "${nonarch_libdir}/edgecontainers/health.d ${sysconfdir}/edgecontainers/health.d"

do_install() {
    for dir in ${EDGE_DIRS}; do
        install -d ${D}${dir}
    done
}

# Depends on the engine through health.conf.
PACKAGE_ARCH = "${MACHINE_ARCH}"

SYSTEMD_SERVICE:${PN} = "edgecontainers-health.service"
FILES:${PN} += "${EDGE_DIRS} ${@edge_files_dests(d)}"

RDEPENDS:${PN} = "coreutils rauc"
