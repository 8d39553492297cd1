# The edgecontainers kernel options, for kernels that merge configuration
# fragments with kernel-yocto (linux-yocto, linux-raspberrypi); inherited by
# the layer's kernel bbappends in the edgecontainers distro only.
#
# kernel-yocto merges, in this order: the defconfig, the BSP description, the
# .cfg/.scc files of SRC_URI, then KERNEL_FEATURES; the last value of an
# option wins.  meta-virtualization appends its container features (which
# set many options =m) to KERNEL_FEATURES, and the BSP may set others, so a
# fragment in SRC_URI would lose to both.  Ours are a kernel feature
# (files/edgecontainers-kmeta, a kmeta directory of the bbappends' SRC_URI)
# that this class puts at the very end of KERNEL_FEATURES once every layer's
# :append has been applied, whatever the order of the layers.

EDGECONTAINERS_KERNEL_FEATURES = "edgecontainers.scc"
EDGECONTAINERS_KERNEL_FEATURES[doc] = "Kernel features (in files/edgecontainers-kmeta) that go last in KERNEL_FEATURES, so that their options win over the BSP's and meta-virtualization's."

# nooelint: oelint.task.noanonpython - the order can only be fixed once all appends are in
python () {
    ours = (d.getVar('EDGECONTAINERS_KERNEL_FEATURES') or '').split()
    others = [f for f in (d.getVar('KERNEL_FEATURES') or '').split() if f not in ours]
    d.setVar('KERNEL_FEATURES', ' '.join(others + ours))
}
