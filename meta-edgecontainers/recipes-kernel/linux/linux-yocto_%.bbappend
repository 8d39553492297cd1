# edgecontainers: container, RAUC and hardening kernel options.  Only in the
# edgecontainers distro: adding the layer changes nothing else.
FILESEXTRAPATHS:prepend:edgecontainers := "${THISDIR}/files:"

SRC_URI:append:edgecontainers = " \
    file://edgecontainers-containers.cfg \
    file://edgecontainers-hardening.cfg \
"
