SUMMARY = "Eclipse hawkBit fleet updates for edgecontainers devices"
DESCRIPTION = "rauc-hawkbit-updater with a configuration seeded from EDGECONTAINERS_HAWKBIT_SERVER and kept on /data for the per-device target name and token. Added by kas/opt/hawkbit.yml."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit edgecontainers_files

SRC_URI = "\
    file://config.conf \
    file://persist-hawkbit.conf \
"

S = "${UNPACKDIR}"

EDGECONTAINERS_HAWKBIT_SERVER ??= "hawkbit.example.com:443"
EDGECONTAINERS_HAWKBIT_SERVER[doc] = "host:port of the hawkBit server the devices poll (kas/opt/hawkbit.yml sets it from HAWKBIT_SERVER)."
EDGECONTAINERS_HAWKBIT_TENANT ??= "DEFAULT"
EDGECONTAINERS_HAWKBIT_TENANT[doc] = "hawkBit tenant of the devices."
EDGE_SUBST_VARS:append = " EDGECONTAINERS_HAWKBIT_SERVER EDGECONTAINERS_HAWKBIT_TENANT"

# The seed replaces the example configuration rauc-hawkbit-updater installs,
# so it lives in a file of ours and the bind mount makes it the live one.
EDGE_FILES = "\
    config.conf:${datadir}/edgecontainers/hawkbit/config.conf \
    persist-hawkbit.conf:${nonarch_libdir}/edgecontainers/persist.d/30-hawkbit.conf \
"

do_install() {
    :
}

pkg_postinst:${PN}() {
    # Seed the (persisted) configuration directory of the updater with ours.
    install -m 0640 $D${datadir}/edgecontainers/hawkbit/config.conf $D${sysconfdir}/rauc-hawkbit-updater/config.conf
}

PACKAGE_ARCH = "${MACHINE_ARCH}"
FILES:${PN} += "${@edge_files_dests(d)}"
RDEPENDS:${PN} = "edgecontainers-base rauc-hawkbit-updater"
