SUMMARY = "edgecontainers demo app declared for docker (compose)"
DESCRIPTION = "Runs the preloaded demo image as a non-root user, read-only, without new privileges, limited to half a CPU and 64 MiB, in the critical tier."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "demo"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit allarch edgecontainers_files

SRC_URI = "\
    file://compose.yaml \
    file://tier \
"

S = "${UNPACKDIR}"

EDGE_FILES = "\
    compose.yaml:${datadir}/edgecontainers/compose/edgecontainers-demo/compose.yaml \
    tier:${datadir}/edgecontainers/compose/edgecontainers-demo/tier \
"

do_install() {
    :
}

FILES:${PN} += "${@edge_files_dests(d)}"
RDEPENDS:${PN} = "docker-compose docker-moby edgecontainers-docker-config"
