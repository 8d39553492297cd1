"""``edgectl qemu``: boot an image in QEMU on this terminal."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..errors import UsageError
from ..qemu.qemuboot import find_qemuboot
from ..qemu.session import BootTarget, Session
from ..qemu.vm import run_interactive

NAME = "qemu"
HELP = "boot a kas-built image or the QEMU test image with its serial console on this terminal"
DESCRIPTION = """\
Boot an image in QEMU with the serial console on this terminal (Ctrl-A x
quits).  The QEMU command line is the one the system tests use: always
TCG (-accel tcg; /dev/kvm is never used), OVMF for EFI disks on x86-64,
u-boot.bin as -bios on arm64, a qcow2 overlay so the image stays untouched,
and QEMU user networking cut off from everything (restrict=on) except the
forwarded ports on 127.0.0.1 (SSH and the demo app's port 8080).

The image is a kas build, found by its <image>.qemuboot.conf in the deploy
directory (--deploy-dir, optionally with --image NAME), or --image PATH (a
.qemuboot.conf or the disk image next to one), or --testimage for the
Debian-based test image of the system tests (built and cached if needed).

boot paths (--boot):
  grub     OVMF -> GRUB -> the layer's grub.cfg picks the slot (x86-64, default)
  uboot    U-Boot -> boot.scr (arm64, default there)
  direct   -kernel/-initrd with root=PARTUUID=<slot> rauc.slot=<slot>

examples:
  edgectl qemu --deploy-dir build/tmp/deploy/images/qemux86-64
  edgectl qemu --deploy-dir build/tmp/deploy/images/qemux86-64 --image edgecontainers-image-dev
  edgectl qemu --image build/tmp/deploy/images/qemuarm64/edgecontainers-image-qemuarm64.rootfs.wic
  edgectl qemu --testimage --variant dev --boot direct
  edgectl qemu --testimage --print          show the QEMU command, boot nothing

exit codes: 0 QEMU exited normally, 1 QEMU failed or the test image build
failed, 2 bad arguments, no image found, or QEMU/OVMF missing.
"""


def setup_parser(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("image")
    src.add_argument(
        "--image", metavar="PATH|NAME", help="a .qemuboot.conf, a disk image, or an image name in --deploy-dir"
    )
    src.add_argument("--deploy-dir", type=Path, metavar="DIR", help="kas deploy directory (tmp/deploy/images/MACHINE)")
    src.add_argument("--testimage", action="store_true", help="the Debian-based QEMU test image (docs/testing.md)")
    src.add_argument(
        "--engine", choices=("podman", "docker"), default="podman", help="test image engine (default: %(default)s)"
    )
    src.add_argument("--variant", choices=("production", "dev"), default="dev",
                     help="test image variant (default: %(default)s, which has a serial login)")  # fmt: skip
    parser.add_argument(
        "--boot", choices=("grub", "uboot", "direct"), help="boot path (default: the image's bootloader)"
    )
    parser.add_argument("--slot", choices=("A", "B"), default="A", help="slot for --boot direct (default: %(default)s)")
    parser.add_argument("--network", action="store_true", help="give the guest outbound network (default: cut off)")
    parser.add_argument("--print", action="store_true", help="print the QEMU command line and exit")


def _target(args: argparse.Namespace) -> BootTarget:
    if args.testimage:
        if args.image or args.deploy_dir:
            raise UsageError("--testimage boots the test image; do not combine it with --image/--deploy-dir")
        from ..testimage.builder import Builder, ImageSpec

        image = Builder().build(ImageSpec(engine=args.engine, variant=args.variant))
        return BootTarget.from_qemuboot(find_qemuboot(image.qemuboot))
    if not args.image and not args.deploy_dir:
        raise UsageError("give --deploy-dir DIR, --image PATH or --testimage")
    return BootTarget.from_qemuboot(find_qemuboot(args.image, args.deploy_dir))


def run(args: argparse.Namespace) -> int:
    target = _target(args)
    session = Session(target, boot=args.boot, slot=args.slot, network=args.network)
    try:
        config = session.vm_config()
        config.interactive = True
        if args.print:
            print(shlex.join(config.command()))
            return 0
        print(f"booting {target.name} via {session.boot}; Ctrl-A x quits")
        if target.ssh_key is not None:
            print(f"ssh: ssh -i {target.ssh_key} -p {session.ssh_port} -o StrictHostKeyChecking=no root@127.0.0.1")
        print(f"demo app: http://127.0.0.1:{session.app_port}/cgi-bin/health")
        rc = run_interactive(config)
        return 0 if rc == 0 else 1
    finally:
        session.close()
