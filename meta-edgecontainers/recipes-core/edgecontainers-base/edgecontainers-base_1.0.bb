SUMMARY = "Base system of the edgecontainers distro"
DESCRIPTION = "Mounts /data and makes the listed state persistent on it, grows /data on first boot, keeps logs in RAM, hardens sysctl and SSH, and defines the slices container apps run in."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit allarch systemd features_check edgecontainers_files

REQUIRED_DISTRO_FEATURES = "systemd usrmerge"

SRC_URI = "\
    file://80-edgecontainers-wired.network \
    file://apps-besteffort.slice \
    file://apps-critical.slice \
    file://apps.slice \
    file://boot-firmware.automount \
    file://boot-firmware.mount \
    file://data.mount \
    file://edgecontainers-growdata.service \
    file://edgecontainers-persist.service \
    file://growdata \
    file://journald.conf \
    file://persist \
    file://persist-base.conf \
    file://sshd-edgecontainers.conf \
    file://sysctl-hardening.conf \
    file://tmpfiles-edgecontainers.conf \
"

S = "${UNPACKDIR}"

EDGE_FILES = "\
    data.mount:${systemd_system_unitdir}/ \
    boot-firmware.mount:${systemd_system_unitdir}/ \
    boot-firmware.automount:${systemd_system_unitdir}/ \
    edgecontainers-growdata.service:${systemd_system_unitdir}/ \
    growdata:${libexecdir}/edgecontainers/growdata:0755 \
    edgecontainers-persist.service:${systemd_system_unitdir}/ \
    persist:${libexecdir}/edgecontainers/persist:0755 \
    persist-base.conf:${nonarch_libdir}/edgecontainers/persist.d/10-base.conf \
    tmpfiles-edgecontainers.conf:${nonarch_libdir}/tmpfiles.d/edgecontainers.conf \
    journald.conf:${systemd_unitdir}/journald.conf.d/60-edgecontainers.conf \
    sysctl-hardening.conf:${nonarch_libdir}/sysctl.d/60-edgecontainers-hardening.conf \
    80-edgecontainers-wired.network:${systemd_unitdir}/network/ \
    apps.slice:${systemd_system_unitdir}/ \
    apps-critical.slice:${systemd_system_unitdir}/ \
    apps-besteffort.slice:${systemd_system_unitdir}/ \
    sshd-edgecontainers.conf:${sysconfdir}/ssh/sshd_config.d/50-edgecontainers.conf:0600 \
"
# Mount points and bind targets that must exist on the read-only rootfs.
# The SSH host keys are made by openssh's own sshdgenkeys.service, in
# OPENSSH_HOST_KEY_DIR (the distro sets it to /var/lib/ssh, bound from /data).
EDGE_DIRS = "/data /boot/firmware ${localstatedir}/lib/ssh ${sysconfdir}/edgecontainers/persist.d"

do_install() {
    for dir in ${EDGE_DIRS}; do
        install -d ${D}${dir}
    done
}

SYSTEMD_SERVICE:${PN} = "\
    data.mount \
    boot-firmware.automount \
    edgecontainers-growdata.service \
    edgecontainers-persist.service \
"

FILES:${PN} += "${EDGE_DIRS} ${@edge_files_dests(d)}"

RDEPENDS:${PN} = "\
    e2fsprogs-resize2fs \
    util-linux-blkid \
    util-linux-findmnt \
    util-linux-mount \
    util-linux-mountpoint \
    util-linux-partx \
    util-linux-sfdisk \
"
