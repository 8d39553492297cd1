# edgecontainers: container, RAUC and hardening kernel options, as a kernel
# feature merged after every other one (classes/edgecontainers_kernel.bbclass).
# Only in the edgecontainers distro: adding the layer changes nothing else.
FILESEXTRAPATHS:prepend:edgecontainers := "${THISDIR}/files:"

SRC_URI:append:edgecontainers = " file://edgecontainers-kmeta;type=kmeta;destsuffix=edgecontainers-kmeta"

inherit_defer ${@'edgecontainers_kernel' if d.getVar('DISTRO') == 'edgecontainers' else ''}
