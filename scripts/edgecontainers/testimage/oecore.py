"""oe-core's read-only-rootfs plumbing that the Debian test image lacks.

A Yocto image of this distro gets, from oe-core and not from the layer:

* **volatile-binds** (systemd RDEPENDS on it): one oneshot unit per
  ``VOLATILE_BINDS`` line (``WHAT WHERE``), named after WHAT
  (``/var/volatile/lib`` -> ``var-volatile-lib.service``), that puts a
  writable tmpfs overlay (or a copy and bind) from WHAT over WHERE before
  local-fs.target; the recipe's default binds ``/var/lib``, ``/var/cache``,
  ``/var/spool`` and ``/srv``.  ``mount-copybind`` does the mounting.
* **base-files' fstab**, with the root line that **read-only-rootfs**
  (rootfs-postcommands' ``read_only_rootfs_hook``) turns from ``defaults`` into
  ``ro``; the same hook points sshd at ``sshd_config_readonly`` through
  ``/etc/default/ssh``, and ``systemd_handle_machine_id`` leaves an empty
  ``/etc/machine-id``.
* **the fs-perms tables** the distro selects (``FILESYSTEM_PERMS_TABLES``):
  ``/var/log`` and ``/var/tmp`` as links into ``/var/volatile`` only when the
  volatile tables are listed, and systemd's ``00-create-volatile.conf``.
* **openssh's sshdgenkeys.service**: creates, before sshd runs, every host key
  that sshd's configuration names (``sshd -G``), in the distro's
  ``OPENSSH_HOST_KEY_DIR``.  Debian's own sshd-keygen.service only writes
  ``/etc/ssh`` and only when it is writable.

The unit files are generated here as volatile-binds.bb's do_compile generates
them (same directives; tests/unit/test_oecore_standin.py compares them with
oe-core's template when the upstream checkout is present).  The scripts are
this project's own implementations of the same behaviour.
"""

from __future__ import annotations

import re

from ..errors import ConfigError

# base-files' fstab: the entries of oe-core's stock file (meta/recipes-core/base-files/
# base-files/fstab; tests/unit/test_oecore_standin.py compares them when the checkout is present).
BASE_FILES_FSTAB = """\
# oe-core base-files' fstab (test image stand-in)
/dev/root            /                    auto       defaults              1  1
proc                 /proc                proc       defaults              0  0
devpts               /dev/pts             devpts     mode=0620,ptmxmode=0666,gid=5      0  0
tmpfs                /run                 tmpfs      mode=0755,nodev,nosuid,strictatime 0  0
tmpfs                /var/volatile        tmpfs      defaults              0  0
"""

# bitbake.conf: FILESYSTEM_PERMS_TABLES ?= (the tables oe-core knows, with the links
# their entries make).
FS_PERMS_DEFAULT = "files/fs-perms.txt files/fs-perms-volatile-log.txt files/fs-perms-volatile-tmp.txt"
FS_PERMS_LINKS: dict[str, tuple[tuple[str, str], ...]] = {
    "files/fs-perms.txt": (("/var/run", "/run"), ("/var/lock", "/run/lock")),
    "files/fs-perms-volatile-log.txt": (("/var/log", "volatile/log"),),
    "files/fs-perms-volatile-tmp.txt": (("/var/tmp", "volatile/tmp"),),
}
VOLATILE_LOG_TABLE = "files/fs-perms-volatile-log.txt"

# openssh_*.bb: PACKAGECONFIG ??= (the hostkey-* options decide the HostKey lines)
OPENSSH_PACKAGECONFIG_DEFAULT = "systemd-sshd-socket-mode hostkey-ecdsa"
OPENSSH_HOSTKEY_TYPES = ("rsa", "ecdsa", "ed25519")
OPENSSH_HOST_KEY_DIR_DEFAULT = {
    "OPENSSH_HOST_KEY_DIR": "/etc/ssh",
    "OPENSSH_HOST_KEY_DIR_READONLY_CONFIG": "/var/run/ssh",
}

# volatile-binds.bb: VOLATILE_BINDS ?= (the distro and the layer keep it)
VOLATILE_BINDS_DEFAULT: tuple[tuple[str, str], ...] = (
    ("/var/volatile/lib", "/var/lib"),
    ("/var/volatile/cache", "/var/cache"),
    ("/var/volatile/spool", "/var/spool"),
    ("/var/volatile/srv", "/srv"),
)
# volatile-binds.bb installs mount-copybind in ${base_sbindir}; its units call /sbin/mount-copybind.
MOUNT_COPYBIND = "/usr/sbin/mount-copybind"
# openssh: ${libexecdir}/${BPN}/sshd_check_keys
SSHD_CHECK_KEYS = "/usr/libexec/openssh/sshd_check_keys"


def volatile_binds(settings: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The (WHAT, WHERE) pairs of VOLATILE_BINDS as the layer's configuration leaves them."""
    value = settings.get("VOLATILE_BINDS")
    if value is None:
        return VOLATILE_BINDS_DEFAULT
    pairs = []
    for line in value.replace("\\n", "\n").splitlines():
        words = line.split()
        if not words:
            continue
        if len(words) != 2:
            raise ConfigError(f"VOLATILE_BINDS line {line.strip()!r} is not 'WHAT WHERE'")
        pairs.append((words[0], words[1]))
    return tuple(pairs)


def fs_perms_tables(settings: dict[str, str]) -> list[str]:
    """The fs-perms tables of the distro (bitbake.conf's default when it sets none)."""
    tables = (settings.get("FILESYSTEM_PERMS_TABLES") or FS_PERMS_DEFAULT).split()
    unknown = [t for t in tables if t not in FS_PERMS_LINKS]
    if unknown:
        raise ConfigError(
            f"FILESYSTEM_PERMS_TABLES lists {' '.join(unknown)}, which the test image does not know "
            f"(it knows oe-core's {', '.join(FS_PERMS_LINKS)})"
        )
    return tables


def fs_perms_links(settings: dict[str, str]) -> dict[str, str]:
    """path -> link target of every ``link`` entry of the selected tables."""
    return {path: target for table in fs_perms_tables(settings) for path, target in FS_PERMS_LINKS[table]}


def create_volatile_conf(settings: dict[str, str]) -> str:
    """systemd's 00-create-volatile.conf as oe-core's systemd recipe installs it: the
    volatile log and tmp directories, /var/tmp's link, and /var/log's link when the
    volatile-log table is selected (do_install appends that line)."""
    text = (
        "# oe-core systemd: the volatile directories (test image stand-in)\n"
        "d\t\t/run/lock\t\t1777\t-\t-\t-\n"
        "d\t\t/var/volatile/log\t\t-\t-\t-\t-\n"
        "d\t\t/var/volatile/tmp\t\t1777\t-\t-\n"
        "L\t\t/var/tmp\t\t-\t-\t-\t-\t/var/volatile/tmp\n"
    )
    if VOLATILE_LOG_TABLE in fs_perms_tables(settings):
        text += "L\t\t/var/log\t\t-\t-\t-\t-\t/var/volatile/log\n"
    return text


def read_only_fstab(text: str) -> str:
    """read_only_rootfs_hook on fstab: the /dev/root line's ``defaults`` becomes ``ro``
    and its fsck pass number 0."""
    out = []
    for line in text.splitlines(keepends=True):
        if re.match(r"^[#\s]*/dev/root", line):
            line = line.replace("defaults", "ro", 1)
            line = re.sub(r"(\s*\d)(\s*)\d(\s*)$", r"\g<1>\g<2>0\g<3>", line)
        out.append(line)
    return "".join(out)


def read_only_ssh_default(text: str, pregenerated_rsa_key: bool) -> str:
    """read_only_rootfs_hook on /etc/default/ssh: with no pre-generated host keys,
    sshd reads sshd_config_readonly."""
    if text and not text.endswith("\n"):
        text += "\n"
    if pregenerated_rsa_key:
        return text + "SYSCONFDIR=${SYSCONFDIR:-/etc/ssh}\nSSHD_OPTS=\n"
    return text + "SYSCONFDIR=${SYSCONFDIR:-/var/run/ssh}\nSSHD_OPTS='-f /etc/ssh/sshd_config_readonly'\n"


def openssh_hostkeys(packageconfig: str, key_dir: str) -> list[str]:
    """The HostKey lines openssh's do_install writes for its PACKAGECONFIG."""
    options = packageconfig.split()
    return [f"HostKey {key_dir}/ssh_host_{t}_key" for t in OPENSSH_HOSTKEY_TYPES if f"hostkey-{t}" in options]


def with_hostkeys(sshd_config: str, hostkeys: list[str]) -> str:
    """openssh do_install: every HostKey line dropped (sed '/HostKey/d'), its own appended."""
    kept = [ln for ln in sshd_config.splitlines() if "HostKey" not in ln]
    return "\n".join(kept + hostkeys) + "\n"


def volatile_bind_service(what: str) -> str:
    """volatile-binds.bb: the unit of one bind is named after WHAT."""
    return what.lstrip("/").replace("/", "-") + ".service"


def volatile_bind_unit(what: str, where: str, avoid_overlayfs: str = "0") -> str:
    """The unit volatile-binds.bb's do_compile makes for ``WHAT WHERE``."""
    what_parent, where_parent = what.rsplit("/", 1)[0], where.rsplit("/", 1)[0]
    before, wanted_by = "local-fs.target", "local-fs.target"
    if where == "/var/lib":
        # do_compile: the random seed lives under /var/lib
        before += " systemd-random-seed.service"
        wanted_by += " systemd-random-seed.service"
    return (
        "[Unit]\n"
        f"Description=Bind mount volatile {where}\n"
        "DefaultDependencies=no\n"
        f"Before={before}\n"
        f"RequiresMountsFor={what_parent} {where_parent}\n"
        f"ConditionPathIsReadWrite=|{what_parent}\n"
        f"ConditionPathExists=|!{what_parent}\n"
        f"ConditionPathExists={where}\n"
        f"ConditionPathIsReadWrite=!{where}\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=Yes\n"
        f"Environment=MOUNT_COPYBIND_AVOID_OVERLAYFS={avoid_overlayfs}\n"
        f"ExecStart=/sbin/mount-copybind {what} {where}\n"
        f"ExecStop=/bin/umount {where}\n"
        "\n"
        "[Install]\n"
        f"WantedBy={wanted_by}\n"
    )


# This project's mount-copybind: what oe-core's does, without the SELinux steps
# (the image has no SELinux).  An overlay with WHAT as the writable upper layer
# over the directory WHERE; without overlayfs a copy of WHERE in WHAT bound on
# it.  A file WHERE is copied once and bound.
MOUNT_COPYBIND_SCRIPT = """\
#!/bin/sh
# Test image stand-in for oe-core volatile-binds' mount-copybind: WHAT over WHERE.
set -u
[ $# -ge 2 ] || { echo "usage: $0 WHAT WHERE [OPTIONS]" >&2; exit 1; }
what=$1 where=$2 opts=${3:+,$3}
mkdir -p "${what%/*}"
if [ -d "$where" ]; then
    fresh=no
    [ -d "$what" ] || { mkdir "$what"; fresh=yes; }
    work="${what%/*}/.${what##*/}-work"
    if [ "${MOUNT_COPYBIND_AVOID_OVERLAYFS:-0}" != 1 ] && mkdir -p "$work" &&
        mount -t overlay overlay -o "lowerdir=$where,upperdir=$what,workdir=$work" "$where" 2>/dev/null; then
        exit 0
    fi
    rm -rf "$work"
    [ "$fresh" = no ] || cp -aPR "$where/." "$what/"
    exec mount -o "bind$opts" "$what" "$where"
elif [ -f "$where" ]; then
    [ -f "$what" ] || cp -aP "$where" "$what"
    exec mount -o "bind$opts" "$what" "$where"
fi
"""

# openssh's sshdgenkeys.service, with its dependencies (sshd.socket Wants= it,
# sshd@.service is After= it; the test image's drop-in does that for Debian's ssh.service).
SSHDGENKEYS_UNIT = f"""\
[Unit]
Description=SSH host key generation (test image stand-in for oe-core openssh's sshdgenkeys)
RequiresMountsFor=/var /run

[Service]
ExecStart={SSHD_CHECK_KEYS}
Type=oneshot
RemainAfterExit=yes
Nice=10
"""

SSHD_GENKEYS_DROPIN = """\
# Test image: oe-core's sshd units pull in sshdgenkeys.service; Debian's ssh.service does not.
[Unit]
Wants=sshdgenkeys.service
After=sshdgenkeys.service
"""

# This project's sshd_check_keys: every HostKey of sshd's effective
# configuration (SSHD_OPTS from /etc/default/ssh may name it with -f) that is
# missing is generated, private key renamed into place last.
SSHD_CHECK_KEYS_SCRIPT = """\
#!/bin/sh
# Test image stand-in for oe-core openssh's sshd_check_keys.
set -eu
SSHD_OPTS=
# shellcheck source=/dev/null
if [ -f /etc/default/ssh ]; then . /etc/default/ssh; fi
config=/etc/ssh/sshd_config
# shellcheck disable=SC2086
set -- $SSHD_OPTS
while [ $# -gt 0 ]; do
    case "$1" in
        -f) config=$2; shift 2 ;;
        -f*) config=${1#-f}; shift ;;
        *) shift ;;
    esac
done
for key in $(sshd -G -f "$config" | sed -n 's/^hostkey //p'); do
    [ -f "$key" ] && continue
    case "$key" in
        *_rsa_key) type=rsa ;;
        *_ecdsa_key) type=ecdsa ;;
        *_ed25519_key) type=ed25519 ;;
        *) continue ;;
    esac
    echo "generating SSH host key $key"
    mkdir -p "$(dirname "$key")"
    rm -f "$key.tmp" "$key.tmp.pub"
    ssh-keygen -q -t "$type" -N '' -f "$key.tmp"
    mv -f "$key.tmp.pub" "$key.pub"
    sync
    mv "$key.tmp" "$key"
    sync
done
"""
