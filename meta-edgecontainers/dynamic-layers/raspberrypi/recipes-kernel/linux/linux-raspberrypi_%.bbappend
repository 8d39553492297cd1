# edgecontainers: container, RAUC and hardening kernel options for the Pi
# kernel (it merges fragments with kernel-yocto too), as a kernel feature
# merged after the defconfig and meta-virtualization's features
# (classes/edgecontainers_kernel.bbclass).  Only in the edgecontainers distro.
FILESEXTRAPATHS:prepend:edgecontainers := "${THISDIR}/../../../../recipes-kernel/linux/files:"

SRC_URI:append:edgecontainers = " file://edgecontainers-kmeta;type=kmeta;destsuffix=edgecontainers-kmeta"

inherit_defer ${@'edgecontainers_kernel' if d.getVar('DISTRO') == 'edgecontainers' else ''}
