SUMMARY = "edgecontainers production update bundle"
DESCRIPTION = "Signed RAUC bundle (verity, adaptive) with the rootfs of edgecontainers-image."

require edgecontainers-bundle.inc

RAUC_SLOT_rootfs = "edgecontainers-image"
