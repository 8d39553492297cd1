SUMMARY = "OCI image of the edgecontainers demo app"
DESCRIPTION = "busybox and the demo app; preloaded into edgecontainers images \
for an offline first boot."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

require recipes-extended/images/container-app-base.bb

CONTAINER_APP = "edgecontainers-demo-app"
CONTAINER_APP_CMD = "/usr/bin/edgecontainers-demo"
OCI_IMAGE_PORTS = "8080/tcp"
OCI_IMAGE_RUNTIME_UID = "1000"
OCI_IMAGE_TAG = "latest"
