# edgecontainers: per-machine system.conf and the keyring from
# RAUC_KEYRING_FILE (set through EDGECONTAINERS_KEY_DIR).  Only in the
# edgecontainers distro: adding the layer changes nothing else.
FILESEXTRAPATHS:prepend:edgecontainers := "${THISDIR}/files:"

require ${@'rauc-conf-edgecontainers.inc' if d.getVar('DISTRO') == 'edgecontainers' else ''}
