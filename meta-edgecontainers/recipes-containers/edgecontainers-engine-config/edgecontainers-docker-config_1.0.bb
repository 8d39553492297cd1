SUMMARY = "Docker configuration of the edgecontainers distro"
DESCRIPTION = "Storage on /data seeded from the images preloaded at build time (again for every new slot image), journald logging, no-new-privileges by default, and a systemd unit per docker compose app."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "containers"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit allarch systemd edgecontainers_files

SRC_URI = "\
    file://daemon.json \
    file://edgecontainers-compose-generator \
    file://edgecontainers-compose@.service \
    file://edgecontainers-docker-seed \
    file://edgecontainers-docker-seed.service \
    file://edgecontainers-docker-seed-tags.service \
    file://persist-docker.conf \
"

S = "${UNPACKDIR}"

EDGE_FILES = "\
    daemon.json:${sysconfdir}/docker/daemon.json \
    persist-docker.conf:${nonarch_libdir}/edgecontainers/persist.d/20-docker.conf \
    edgecontainers-docker-seed:${libexecdir}/edgecontainers/docker-seed:0755 \
    edgecontainers-docker-seed.service:${systemd_system_unitdir}/ \
    edgecontainers-docker-seed-tags.service:${systemd_system_unitdir}/ \
    edgecontainers-compose@.service:${systemd_system_unitdir}/ \
    edgecontainers-compose-generator:${systemd_unitdir}/system-generators/:0755 \
"
EDGE_DIRS = "${localstatedir}/lib/docker ${localstatedir}/lib/containerd ${datadir}/edgecontainers/compose"

do_install() {
    for dir in ${EDGE_DIRS}; do
        install -d ${D}${dir}
    done
}

SYSTEMD_SERVICE:${PN} = "edgecontainers-docker-seed.service edgecontainers-docker-seed-tags.service"
FILES:${PN} += "${EDGE_DIRS} ${@edge_files_dests(d)}"
RDEPENDS:${PN} = "edgecontainers-base"
