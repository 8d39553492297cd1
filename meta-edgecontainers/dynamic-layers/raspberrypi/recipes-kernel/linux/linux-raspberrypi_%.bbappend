# edgecontainers: container, RAUC and hardening kernel options for the Pi
# kernel.  Only in the edgecontainers distro.
FILESEXTRAPATHS:prepend:edgecontainers := "${THISDIR}/../../../../recipes-kernel/linux/files:"

SRC_URI:append:edgecontainers = " \
    file://edgecontainers-containers.cfg \
    file://edgecontainers-hardening.cfg \
"
