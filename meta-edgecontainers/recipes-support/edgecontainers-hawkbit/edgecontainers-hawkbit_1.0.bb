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
EDGECONTAINERS_HAWKBIT_GROUP ??= "rauc-hawkbit"
EDGECONTAINERS_HAWKBIT_GROUP[doc] = "Group of the configuration directory and file: the one rauc-hawkbit-updater runs as (meta-rauc creates the user rauc-hawkbit with its own group; its unit has User= and Group=rauc-hawkbit)."
EDGE_SUBST_VARS:append = " EDGECONTAINERS_HAWKBIT_SERVER EDGECONTAINERS_HAWKBIT_TENANT EDGECONTAINERS_HAWKBIT_GROUP"

# The seed replaces the example configuration rauc-hawkbit-updater installs,
# so it lives in a file of ours and the bind mount makes it the live one.
EDGE_FILES = "\
    config.conf:${datadir}/edgecontainers/hawkbit/config.conf \
    persist-hawkbit.conf:${nonarch_libdir}/edgecontainers/persist.d/30-hawkbit.conf \
"

do_install() {
    :
}

# Seed the (persisted) configuration directory of the updater with ours,
# readable by the updater's group only (the file holds the device's token).
# Runs at rootfs time (read-only rootfs), after rauc-hawkbit-updater's
# useradd preinst: the group name resolves in the image's /etc/group.
pkg_postinst:${PN}() {
    conf_dir=$D${sysconfdir}/rauc-hawkbit-updater
    install -m 0640 -o root -g ${EDGECONTAINERS_HAWKBIT_GROUP} $D${datadir}/edgecontainers/hawkbit/config.conf $conf_dir/config.conf
    chown root:${EDGECONTAINERS_HAWKBIT_GROUP} $conf_dir
    chmod 0750 $conf_dir
}

PACKAGE_ARCH = "${MACHINE_ARCH}"
FILES:${PN} += "${@edge_files_dests(d)}"
RDEPENDS:${PN} = "edgecontainers-base rauc-hawkbit-updater"
