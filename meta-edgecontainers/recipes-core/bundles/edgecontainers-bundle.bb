# nooelint: oelint.file.underscores,oelint.var.mandatoryvar.SRC_URI - a bundle recipe: unversioned, its inputs are images, not sources
SUMMARY = "edgecontainers production update bundle"
DESCRIPTION = "Signed RAUC bundle (verity, adaptive) with the rootfs of edgecontainers-image."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "bundles"

require edgecontainers-bundle.inc

RAUC_SLOT_rootfs = "edgecontainers-image"
