SUMMARY = "Podman configuration of the edgecontainers distro"
DESCRIPTION = "Storage on /data with the build-time preloaded images as a read-only additional image store, journald logging, crun."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "containers"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit allarch edgecontainers_files

SRC_URI = "\
    file://containers-edgecontainers.conf \
    file://persist-podman.conf \
"

S = "${UNPACKDIR}"

# storage.conf replaces the one of container-host-config (see its bbappend).
EDGE_FILES = "\
    containers-edgecontainers.conf:${datadir}/containers/containers.conf.d/60-edgecontainers.conf \
    persist-podman.conf:${nonarch_libdir}/edgecontainers/persist.d/20-podman.conf \
"
EDGE_DIRS = "${localstatedir}/lib/containers ${nonarch_libdir}/containers/storage"

do_install() {
    for dir in ${EDGE_DIRS}; do
        install -d ${D}${dir}
    done
}

FILES:${PN} += "${EDGE_DIRS} ${@edge_files_dests(d)}"
RDEPENDS:${PN} = "container-host-config edgecontainers-base"
