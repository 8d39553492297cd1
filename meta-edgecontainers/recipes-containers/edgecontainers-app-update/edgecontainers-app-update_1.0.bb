SUMMARY = "Update container apps with rollback to the previous image"
DESCRIPTION = "edgecontainers-app-update loads new images from an archive or pulls them, restarts the app and rolls back when it does not come up healthy (podman Quadlets with Notify=healthy, also with images in the read-only preloaded store, or docker compose with a rollback tag); a daily timer runs it for every app."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "containers"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit allarch systemd edgecontainers_files

SRC_URI = "\
    file://80-edgecontainers.preset \
    file://edgecontainers-app-update \
    file://edgecontainers-app-update.service \
    file://edgecontainers-app-update.timer \
"

S = "${UNPACKDIR}"

EDGE_FILES = "\
    edgecontainers-app-update:${sbindir}/edgecontainers-app-update:0755 \
    80-edgecontainers.preset:${systemd_unitdir}/system-preset/ \
    edgecontainers-app-update.service:${systemd_system_unitdir}/ \
    edgecontainers-app-update.timer:${systemd_system_unitdir}/ \
"

SYSTEMD_SERVICE:${PN} = "edgecontainers-app-update.timer"

do_install() {
    :
}

FILES:${PN} += "${@edge_files_dests(d)}"
RDEPENDS:${PN} = "util-linux-logger"
