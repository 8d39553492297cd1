SUMMARY = "edgecontainers development image"
DESCRIPTION = "The production image plus a root login without password on the serial console and over SSH, and debugging tools. Never ship it."
HOMEPAGE = "https://github.com/meta-edgecontainers/meta-edgecontainers"
BUGTRACKER = "https://github.com/meta-edgecontainers/meta-edgecontainers/issues"
SECTION = "images"

require edgecontainers-image.inc

# nooelint: oelint.var.badimagefeature.allow-empty-password,oelint.var.badimagefeature.allow-root-login,oelint.var.badimagefeature.empty-root-password,oelint.var.badimagefeature.tools-debug - the development image exists to offer exactly these; the production image has none of them
IMAGE_FEATURES += "\
    ssh-server-openssh \
    tools-debug \
    allow-empty-password \
    empty-root-password \
    allow-root-login \
"

IMAGE_INSTALL += "\
    curl \
    iproute2 \
    less \
    procps \
    util-linux \
"

# Let allow-root-login and allow-empty-password take effect over SSH too:
# drop the production policy lines, keep the persistent host keys.
ROOTFS_POSTPROCESS_COMMAND += "edgecontainers_dev_ssh_policy;"
edgecontainers_dev_ssh_policy[doc] = "Drops the production SSH policy lines so that the dev image's root login works over SSH too."
edgecontainers_dev_ssh_policy() {
    conf=${IMAGE_ROOTFS}${sysconfdir}/ssh/sshd_config.d/50-edgecontainers.conf
    if [ -f $conf ]; then
        sed -i -e '/^PasswordAuthentication/d' -e '/^KbdInteractiveAuthentication/d' \
               -e '/^PermitRootLogin/d' -e '/^PermitEmptyPasswords/d' $conf
    fi
}
