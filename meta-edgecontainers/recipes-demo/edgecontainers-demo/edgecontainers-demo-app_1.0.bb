SUMMARY = "edgecontainers demo app: a tiny HTTP service with a health endpoint"
DESCRIPTION = "busybox httpd serving a page and /cgi-bin/health on port 8080. It is what edgecontainers-demo-container packs into an OCI image."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "demo"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit allarch edgecontainers_files

SRC_URI = "\
    file://edgecontainers-demo \
    file://health \
    file://index.html \
    file://version \
"

S = "${UNPACKDIR}"

EDGE_FILES = "\
    edgecontainers-demo:${bindir}/edgecontainers-demo:0755 \
    index.html:${datadir}/edgecontainers-demo/www/index.html \
    health:${datadir}/edgecontainers-demo/www/cgi-bin/health:0755 \
    version:${datadir}/edgecontainers-demo/version \
"

do_install() {
    :
}

FILES:${PN} += "${@edge_files_dests(d)}"
RDEPENDS:${PN} = "busybox"
