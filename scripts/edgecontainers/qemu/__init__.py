"""Boot images in QEMU and drive them: the harness of the system tests.

* :mod:`.vm` builds the QEMU command line (always ``-accel tcg``) and owns the
  process: QMP control, always cleaned up;
* :mod:`.console` drives the serial console with pexpect (expect-lists, one
  deadline per step, exit codes through markers, full log, last lines on
  failure);
* :mod:`.ssh` runs commands over SSH through QEMU's user-mode hostfwd;
* :mod:`.qemuboot` reads ``<image>.qemuboot.conf`` of a kas/Yocto build;
* :mod:`.session` puts them together: boot an image by one boot path, wait
  until it is ready, run commands, reboot, power off.

See docs/testing.md.
"""
