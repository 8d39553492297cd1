SUMMARY = "edgecontainers production image"
DESCRIPTION = "Read-only A/B container host: no root password, no login on serial consoles, SSH with public keys only when EDGECONTAINERS_SSH_AUTHORIZED_KEYS is set (no SSH server otherwise), U-Boot not interruptible."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "images"

require edgecontainers-image.inc
inherit edgecontainers_files

IMAGE_FEATURES += "${@'ssh-server-openssh' if d.getVar('EDGECONTAINERS_SSH_AUTHORIZED_KEYS') else ''}"
IMAGE_INSTALL += "edgecontainers-production"

ROOTFS_POSTPROCESS_COMMAND += "edgecontainers_authorized_keys;"
edgecontainers_authorized_keys[doc] = "Installs EDGECONTAINERS_SSH_AUTHORIZED_KEYS as root's authorized_keys."
edgecontainers_authorized_keys() {
    keys="${EDGECONTAINERS_SSH_AUTHORIZED_KEYS}"
    if [ -n "$keys" ]; then
        if [ ! -r "$keys" ]; then
            bbfatal "EDGECONTAINERS_SSH_AUTHORIZED_KEYS = '$keys' is not a readable file"
        fi
        install -d -m 0700 ${IMAGE_ROOTFS}${ROOT_HOME}/.ssh
        install -m 0600 "$keys" ${IMAGE_ROOTFS}${ROOT_HOME}/.ssh/authorized_keys
    fi
}
do_rootfs[file-checksums] += "${@edge_file_checksums(d, 'EDGECONTAINERS_SSH_AUTHORIZED_KEYS')}"
do_rootfs[vardeps] += "EDGECONTAINERS_SSH_AUTHORIZED_KEYS"
