SUMMARY = "edgecontainers development update bundle"
DESCRIPTION = "Signed RAUC bundle (verity, adaptive) with the rootfs of edgecontainers-image-dev."

require edgecontainers-bundle.inc

RAUC_SLOT_rootfs = "edgecontainers-image-dev"
