SUMMARY = "edgecontainers development image"
DESCRIPTION = "The production image plus a root login without password on \
the serial console and over SSH, and debugging tools.  Never ship it."

require edgecontainers-image.inc

IMAGE_FEATURES += " \
    ssh-server-openssh \
    tools-debug \
    allow-empty-password \
    empty-root-password \
    allow-root-login \
"

IMAGE_INSTALL += " \
    curl \
    iproute2 \
    less \
    procps \
    util-linux \
"

# Let allow-root-login and allow-empty-password take effect over SSH too:
# drop the production policy lines, keep the persistent host keys.
ROOTFS_POSTPROCESS_COMMAND += "edgecontainers_dev_ssh_policy;"
edgecontainers_dev_ssh_policy() {
    conf=${IMAGE_ROOTFS}${sysconfdir}/ssh/sshd_config.d/50-edgecontainers.conf
    if [ -f $conf ]; then
        sed -i -e '/^PasswordAuthentication/d' -e '/^KbdInteractiveAuthentication/d' \
               -e '/^PermitRootLogin/d' -e '/^PermitEmptyPasswords/d' $conf
    fi
}
