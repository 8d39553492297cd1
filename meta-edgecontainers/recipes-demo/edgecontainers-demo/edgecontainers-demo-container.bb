# nooelint: oelint.file.underscores,oelint.var.mandatoryvar.SRC_URI - an image recipe: unversioned and nothing to fetch, like container-base
SUMMARY = "OCI image of the edgecontainers demo app"
DESCRIPTION = "busybox and the demo app; preloaded into edgecontainers images for an offline first boot."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "demo"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# nooelint: oelint.file.requirenotfound - the file is in meta-virtualization (a LAYERDEPENDS), which the linter does not see
require recipes-extended/images/container-app-base.bb

CONTAINER_APP = "edgecontainers-demo-app"
CONTAINER_APP_CMD = "${bindir}/edgecontainers-demo"
OCI_IMAGE_PORTS = "8080/tcp"
OCI_IMAGE_RUNTIME_UID = "1000"
OCI_IMAGE_TAG = "latest"
