# edgecontainers: our storage.conf (store on /data, preloaded images as a
# read-only additional store).  Only for the target package of the
# edgecontainers distro: adding the layer changes nothing else.
FILESEXTRAPATHS:prepend:edgecontainers:class-target := "${THISDIR}/files:"

require ${@'container-host-config-edgecontainers.inc' if d.getVar('DISTRO') == 'edgecontainers' and d.getVar('CLASSOVERRIDE') == 'class-target' else ''}
