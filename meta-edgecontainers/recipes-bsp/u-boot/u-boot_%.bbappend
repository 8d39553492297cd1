# edgecontainers: what the A/B boot script needs from U-Boot, fw_env.config
# pointing at the boot-state file, and no boot interruption in production.
# Only in the edgecontainers distro: adding the layer changes nothing else.
FILESEXTRAPATHS:prepend:edgecontainers := "${THISDIR}/files:"

require ${@'u-boot-edgecontainers.inc' if d.getVar('DISTRO') == 'edgecontainers' else ''}
