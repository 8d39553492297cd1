"""oe-core's read-only-rootfs plumbing that the Debian test image lacks.

A Yocto image of this distro gets, from oe-core and not from the layer:

* **volatile-binds** (systemd RDEPENDS on it): one oneshot unit per
  ``VOLATILE_BINDS`` line (``WHAT WHERE``), named after WHAT
  (``/var/volatile/lib`` -> ``var-volatile-lib.service``), that puts a
  writable tmpfs overlay (or a copy and bind) from WHAT over WHERE before
  local-fs.target; the recipe's default binds ``/var/lib``, ``/var/cache``,
  ``/var/spool`` and ``/srv``.  ``mount-copybind`` does the mounting.
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

from ..errors import ConfigError

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
