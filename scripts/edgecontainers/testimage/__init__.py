"""The QEMU test image: the layer's on-target files on a Debian base.

* :mod:`.layer` reads what the layer installs (EDGE_FILES, EDGE_DIRS,
  SYSTEMD_SERVICE, the distro settings, the wks layout) from
  ``meta-edgecontainers/`` itself;
* :mod:`.builder` assembles a bootable A/B disk from Debian packages plus
  those files, without loop devices or mounts, cached by a hash of its inputs;
* :mod:`.oci` packs the demo app's container image on the host.

See docs/testing.md.
"""
