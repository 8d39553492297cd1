# Install the on-target files of a recipe from one declarative list.
#
#   inherit edgecontainers_files
#   SRC_URI = "file://journald.conf file://health.sh"
#   EDGE_FILES = "journald.conf:${systemd_unitdir}/journald.conf.d/60-edgecontainers.conf \
#                 health.sh:${libexecdir}/edgecontainers/health:0755"
#
# Each entry is SOURCE:DESTINATION[:MODE], SOURCE relative to UNPACKDIR,
# MODE octal (default 0644).  A DESTINATION ending in "/" keeps the source's
# name.  In the installed copy, @NAME@ is replaced by the value of the
# BitBake variable NAME for every NAME in EDGE_SUBST_VARS.
#
# The list is the single source of truth for where the files go: the QEMU
# test image (scripts/edgecontainers/testimage) reads the same list from the
# recipe, so what the tests boot is what the layer installs.  Keep the
# entries literal (no inline Python) for that reason.

EDGE_FILES ??= ""
EDGE_FILES[doc] = "On-target files of the recipe: SOURCE:DESTINATION[:MODE] entries, installed by edge_install_files."
EDGE_SUBST_VARS ??= "EDGECONTAINERS_ENGINE EDGECONTAINERS_JOURNAL_STORAGE EDGECONTAINERS_JOURNAL_MAX \
                     EDGECONTAINERS_BOOT_ATTEMPTS EDGECONTAINERS_HEALTH_TIMEOUT EDGECONTAINERS_RAUC_COMPATIBLE \
                     EDGECONTAINERS_DATA_LABEL EDGECONTAINERS_UBOOT_STATE_FILE EDGECONTAINERS_UBOOT_STATE_SIZE"
EDGE_SUBST_VARS[doc] = "Variables whose @NAME@ placeholders edge_install_files replaces."

def edge_files_entries(d):
    entries = []
    for entry in (d.getVar('EDGE_FILES') or '').split():
        parts = entry.split(':')
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith('/'):
            bb.fatal('EDGE_FILES entry "%s" is not SOURCE:/DESTINATION[:MODE]' % entry)
        dest = parts[1]
        if dest.endswith('/'):
            dest += os.path.basename(parts[0])
        entries.append((parts[0], dest, int(parts[2], 8) if len(parts) == 3 else 0o644))
    return entries

def edge_files_dests(d):
    return ' '.join(dest for _, dest, _ in edge_files_entries(d))

def edge_render_file(d, src, dest, mode=0o644):
    """Copy UNPACKDIR/src to dest, replacing @NAME@ for NAME in EDGE_SUBST_VARS."""
    import re
    srcpath = os.path.join(d.getVar('UNPACKDIR'), src)
    if not os.path.isfile(srcpath):
        bb.fatal('%s is not in UNPACKDIR (missing from SRC_URI?)' % src)
    with open(srcpath, 'rb') as f:
        data = f.read()
    for name in (d.getVar('EDGE_SUBST_VARS') or '').split():
        data = data.replace(('@%s@' % name).encode(), (d.getVar(name) or '').encode())
    left = re.findall(rb'@(?:EDGECONTAINERS|KERNEL)_[A-Z0-9_]+@', data)
    if left:
        bb.fatal('%s: no value for %s (add it to EDGE_SUBST_VARS)' % (src, left[0].decode()))
    bb.utils.mkdirhier(os.path.dirname(dest))
    with open(dest, 'wb') as f:
        f.write(data)
    os.chmod(dest, mode)

python edge_install_files() {
    for src, dest, mode in edge_files_entries(d):
        edge_render_file(d, src, d.getVar('D') + dest, mode)
}
edge_install_files[doc] = "Installs the files listed in EDGE_FILES into D, with @NAME@ placeholders filled in."
edge_install_files[vardeps] += "EDGE_FILES ${EDGE_SUBST_VARS}"
do_install[postfuncs] += "edge_install_files"

# file-checksums entries for files outside SRC_URI (keys, authorized_keys):
# "PATH:True" when the file exists.  BitBake checksums only the entries that
# end in ":True" ("PATH:False" means "does not exist": skipped, so a key
# changed at the same path would not rerun the task) and reparses the recipe
# when a file appears or disappears.
def edge_file_checksums(d, *varnames):
    paths = [d.getVar(v) for v in varnames]
    return ' '.join('%s:%s' % (p, os.path.exists(p)) for p in paths if p)
