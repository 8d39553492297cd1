"""Where every file of the test image's root filesystem comes from.

A file is accepted when it is

* the layer's: an EDGE_FILES destination (or a layer image step such as
  authorized_keys) with exactly the content the builder recorded from the layer;
* a Debian package's own file, unmodified (dpkg's file lists and md5sums inside
  the root filesystem); Debian conffiles are compared with dpkg's recorded md5;
* listed in the builder's :data:`~.builder.PLUMBING` (with its reason);
* made by Debian's maintainer scripts or mmdebstrap while installing
  (:data:`GENERATED`, each pattern with its reason).

Anything else is a finding: a file the image installs that does not come from
the layer, or a Debian file something changed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

# Files that Debian's maintainer scripts, dpkg, apt or mmdebstrap create while
# installing packages; they are in no package's file list.
GENERATED: dict[str, str] = {
    "/etc/passwd": "base-passwd/adduser: user database",
    "/etc/passwd-": "backup of the user database (shadow tools)",
    "/etc/group": "base-passwd/adduser: group database",
    "/etc/group-": "backup of the group database",
    "/etc/shadow": "user database (root locked; the dev image empties its password, see PLUMBING)",
    "/etc/shadow-": "backup of the shadow database",
    "/etc/gshadow": "group password database",
    "/etc/gshadow-": "backup of the gshadow database",
    "/etc/subuid": "adduser: subordinate ids for user namespaces",
    "/etc/subgid": "adduser: subordinate ids for user namespaces",
    "/etc/machine-id": "mmdebstrap: empty machine id (systemd makes one at boot; the layer keeps it on /data)",
    "/etc/ld.so.cache": "ldconfig's cache (dpkg trigger)",
    "/etc/alternatives/*": "update-alternatives links",
    "/var/lib/dpkg/*": "dpkg's database",
    "/var/lib/apt/*": "apt's state",
    "/var/cache/*": "caches of apt and debconf",
    "/var/lib/ucf/*": "ucf's registry of managed configuration files",
    "/var/lib/pam/*": "pam-auth-update's state",
    "/var/lib/shells.state": "add-shell's record of /etc/shells",
    "/var/lib/wtmpdb/wtmp.db": "wtmpdb postinst: the login database",
    "/var/lib/systemd/deb-systemd-helper-enabled/*": "deb-systemd-helper's record of enabled units",
    "/var/lib/systemd/deb-systemd-user-helper-enabled/*": "deb-systemd-helper's record of enabled user units",
    "/var/lib/systemd/catalog/database": "journalctl --update-catalog (systemd postinst)",
    "/etc/systemd/system/*.wants/*": "systemctl enable (Debian postinst and the layer's SYSTEMD_SERVICE)",
    "/etc/systemd/system/*.service": "unit aliases made by systemctl enable (e.g. sshd.service -> ssh.service)",
    "/etc/systemd/user/*.wants/*": "systemctl --global enable (Debian postinst)",
    "/etc/rc[0-6S].d/*": "update-rc.d: sysvinit links of Debian's init scripts (unused under systemd)",
    "/usr/lib/modules/*/modules.*": "depmod output",
    "/boot/initrd.img-*": "update-initramfs (the initramfs of the installed kernel)",
    "/vmlinuz": "linux-update-symlinks",
    "/vmlinuz.old": "linux-update-symlinks",
    "/initrd.img": "linux-update-symlinks",
    "/initrd.img.old": "linux-update-symlinks",
    "/etc/apt/sources.list": "mmdebstrap: the mirror it installed from",
    "/etc/apt/apt.conf.d/99mmdebstrap": "mmdebstrap: the apt options of the build",
    "/etc/dpkg/dpkg.cfg.d/99mmdebstrap": "mmdebstrap: the dpkg path excludes of the build (docs, locales, modules)",
    "/etc/dpkg/origins/default": "base-files postinst: link to the vendor (debian)",
    "/etc/hosts": "netbase postinst: localhost entries",
    "/etc/networks": "netbase postinst",
    "/etc/hosts.allow": "libwrap0 postinst",
    "/etc/hosts.deny": "libwrap0 postinst",
    "/etc/inputrc": "readline-common postinst",
    "/etc/modules": "kmod postinst (the obsolete module list, empty)",
    "/etc/vconsole.conf": "systemd postinst: link to default/keyboard",
    "/etc/security/opasswd": "libpam-modules postinst (password history, empty)",
    "/etc/initramfs-tools/modules": "initramfs-tools postinst (the default, empty module list)",
    "/etc/shells": "debianutils postinst (add-shell)",
    "/etc/environment": "libpam-modules postinst (empty)",
    "/etc/.pwd.lock": "lock file of the shadow tools (adduser)",
    "/etc/nsswitch.conf": "libc-bin postinst",
    "/etc/localtime": "tzdata postinst: link to UTC",
    "/etc/default/locale": "systemd postinst: link to ../locale.conf",
    "/etc/mtab": "link to ../proc/self/mounts (util-linux/systemd)",
    "/etc/pam.d/common-*": "pam-auth-update (libpam-runtime postinst)",
    "/usr/share/info/dir": "install-info's index",
    "/usr/lib/udev/hwdb.bin": "systemd-hwdb update (udev postinst)",
    "/usr/local/man": "base-files postinst: link to share/man",
    "/var/spool/mail": "base-files postinst: link to ../mail",
}
# Files base-files' postinst copies from its templates; they must equal them.
BASE_FILES_TEMPLATES = {
    "/etc/profile": "/usr/share/base-files/profile",
    "/etc/motd": "/usr/share/base-files/motd",
    "/root/.bashrc": "/usr/share/base-files/dot.bashrc",
    "/root/.profile": "/usr/share/base-files/dot.profile",
}
PRELOADED_STORES = ("/usr/lib/containers/storage/", "/usr/lib/edgecontainers/docker-seed/")
SKIP_TREES = ("/proc/", "/sys/", "/dev/", "/run/", "/tmp/")


@dataclass(frozen=True)
class Finding:
    path: str
    problem: str


@dataclass
class Report:
    counts: dict[str, int]
    findings: list[Finding]
    where: dict[str, str]  # path -> category (for inspection)


def _dpkg_db(rootfs: Path) -> tuple[dict[str, str], dict[str, str], set[str], dict[str, str]]:
    """(path -> package, path -> md5, conffiles, diversions) from dpkg's database in ``rootfs``."""
    info = rootfs / "var/lib/dpkg/info"
    owner: dict[str, str] = {}
    md5: dict[str, str] = {}
    for lst in info.glob("*.list"):
        pkg = lst.name[: -len(".list")]
        for line in lst.read_text(errors="replace").splitlines():
            if line and line != "/.":
                owner.setdefault(_canonical(rootfs, line), pkg)
    for sums in info.glob("*.md5sums"):
        for line in sums.read_text(errors="replace").splitlines():
            digest, _, rel = line.partition("  ")
            if rel:
                md5[_canonical(rootfs, "/" + rel)] = digest
    conffiles: set[str] = set()
    status = (rootfs / "var/lib/dpkg/status").read_text(errors="replace")
    in_conf = False
    for line in status.splitlines():
        if line.startswith("Conffiles:"):
            in_conf = True
            continue
        if in_conf and line.startswith(" "):
            parts = line.split()
            if len(parts) >= 2 and parts[1] != "newconffile":
                path = _canonical(rootfs, parts[0])
                conffiles.add(path)
                md5[path] = parts[1]
            continue
        in_conf = False
    # Configuration files maintainer scripts install through ucf (e.g. sshd_config):
    # ucf records the md5 of what it installed.
    hashfile = rootfs / "var/lib/ucf/hashfile"
    if hashfile.is_file():
        for line in hashfile.read_text(errors="replace").splitlines():
            digest, _, path = line.partition("  ")
            if path:
                path = _canonical(rootfs, path)
                owner.setdefault(path, "ucf")
                md5[path] = digest
                conffiles.add(path)
    diversions: dict[str, str] = {}
    div = rootfs / "var/lib/dpkg/diversions"
    if div.is_file():
        lines = div.read_text().splitlines()
        for i in range(0, len(lines) - 2, 3):
            diversions[_canonical(rootfs, lines[i + 1])] = _canonical(rootfs, lines[i])
    return owner, md5, conffiles, diversions


_MERGED = {"/bin/": "/usr/bin/", "/sbin/": "/usr/sbin/", "/lib/": "/usr/lib/", "/lib64/": "/usr/lib64/"}


def _canonical(rootfs: Path, path: str) -> str:
    """The path with merged-/usr aliases resolved (dpkg may still list /lib/...)."""
    for alias, real in _MERGED.items():
        if path.startswith(alias) and (rootfs / alias.strip("/")).is_symlink():
            return real + path[len(alias) :]
    return path


def _md5(path: Path) -> str:
    h = hashlib.md5()  # dpkg's md5sums
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def classify(rootfs: Path, manifest: dict, plumbing: dict[str, str]) -> Report:
    """Check every non-directory in ``rootfs`` (see the module docstring)."""
    owner, md5, conffiles, diversions = _dpkg_db(rootfs)
    layer: dict[str, dict] = manifest.get("layer", {})
    steps: dict[str, dict] = manifest.get("image_steps", {})
    counts = {"layer": 0, "image-step": 0, "debian": 0, "plumbing": 0, "generated": 0}
    findings: list[Finding] = []
    where: dict[str, str] = {}
    root = str(rootfs)
    for dirpath, dirnames, filenames in os.walk(rootfs):
        rel_dir = dirpath[len(root) :] or "/"
        if any((rel_dir.rstrip("/") + "/").startswith(t) for t in SKIP_TREES):
            dirnames[:] = []
            continue
        names = list(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in names:
            rel = (rel_dir.rstrip("/") + "/" + name) if rel_dir != "/" else "/" + name
            full = Path(dirpath) / name
            category, problem = _one(rootfs, rel, full, layer, steps, owner, md5, conffiles, diversions, plumbing)
            if problem:
                findings.append(Finding(rel, problem))
            else:
                counts[category] += 1
                where[rel] = category
    return Report(counts, findings, where)


def _one(rootfs, rel, full, layer, steps, owner, md5, conffiles, diversions, plumbing) -> tuple[str, str | None]:
    if rel in steps:  # an image step (e.g. the dev SSH policy) may rewrite a layer file
        if full.is_symlink() or _sha256(full) != steps[rel]["sha256"]:
            return "image-step", f"differs from what the image step wrote ({steps[rel]['step']})"
        return "image-step", None
    if rel in layer:
        expected = layer[rel]["sha256"]
        if full.is_symlink() or _sha256(full) != expected:
            return "layer", f"differs from the layer's {layer[rel]['source']}"
        return "layer", None
    if any(fnmatch.fnmatchcase(rel, pattern) for pattern in plumbing):
        return "plumbing", None
    key = diversions.get(rel, rel)
    if key in owner:
        if full.is_symlink() or not full.is_file():
            return "debian", None
        expected = md5.get(key)
        if expected and _md5(full) != expected:
            kind = "conffile" if key in conffiles else "file"
            return "debian", f"modified Debian {kind} of {owner[key]} (not the layer's, not in PLUMBING)"
        return "debian", None
    if rel in BASE_FILES_TEMPLATES:
        template = rootfs / BASE_FILES_TEMPLATES[rel].lstrip("/")
        if template.is_file() and full.is_file() and template.read_bytes() == full.read_bytes():
            return "generated", None
        return "generated", f"differs from base-files' template {BASE_FILES_TEMPLATES[rel]}"
    if full.is_symlink() and os.readlink(full).startswith("/etc/alternatives/"):
        name = os.readlink(full)[len("/etc/alternatives/") :]
        if (rootfs / "etc/alternatives" / name).is_symlink():
            return "generated", None  # a link update-alternatives made (master or slave)
    for pattern in GENERATED:
        if fnmatch.fnmatchcase(rel, pattern):
            return "generated", None
    return "unknown", "not from a Debian package, the layer or the PLUMBING list"
