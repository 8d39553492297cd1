#!/usr/bin/env python3
"""OTA benchmark: what an update costs on the wire and in time, side by side.

One QEMU guest (the podman production test image, OVMF -> GRUB, TCG), one run:

  full bundle size        update-v2.raucb: the image plus one package (Debian's
                          busybox-static, 2 MB) and a version marker
  ideal delta             4 KiB blocks of the new slot image found nowhere in
                          the old one (computed on the host: the floor for any
                          block-based delta)
  adaptive streaming      `rauc install http://...` of that bundle
                          (block-hash-index): bytes the HTTP server sent, time
  full streaming          the same slot image in a bundle without the adaptive
                          method: bytes sent, time
  install -> marked good  adaptive install time + reboot until the health gate
                          has marked the new slot good
  rollback                an update whose health check fails: from the reboot
                          into it until the old slot runs again, marked good

Needs what the OTA tests need (docs/testing.md); run as root with the Python
that has edgecontainers installed:

    sudo .venv/bin/python benchmarks/ota_benchmark.py [--json FILE]

It is a script, not a test.  Figures are from this machine under TCG; on
hardware, hashing and copying are many times faster, the byte counts are not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from edgecontainers.qemu import ota
from edgecontainers.qemu.qemuboot import find_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.qemu.vm import Drive
from edgecontainers.testimage import bundles
from edgecontainers.testimage.builder import Builder, ImageSpec, machine_facts
from edgecontainers.testimage.httpserve import BundleServer
from edgecontainers.testimage.otakit import build_kit, update_v2_files

MIB = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--log", type=Path, default=Path("build/benchmarks/ota-console.log"))
    args = parser.parse_args()
    figures: dict[str, float | int | str] = {}

    builder = Builder()
    image = builder.build(ImageSpec(engine="podman", variant="production"))
    kit = build_kit(builder, image)
    full_bundle = kit.path("update-v2.raucb")
    figures["bundle_bytes"] = full_bundle.stat().st_size

    with tempfile.TemporaryDirectory(prefix="edgecontainers-ota-bench-", dir=kit.directory.parent) as tmp:
        work = Path(tmp)
        # the same slot image as update-v2, in a bundle without the adaptive method
        busybox = builder.busybox(machine_facts(image.spec.machine).debian_arch)
        v2 = bundles.derive_rootfs(image.rootfs_ext4, work / "rootfs-v2.ext4", update_v2_files(busybox))
        missing, total = bundles.new_blocks(image.rootfs_ext4, v2)
        figures["ideal_delta_bytes"] = missing * 4096
        figures["slot_image_bytes"] = total * 4096
        plain = dataclasses.replace(kit.settings, adaptive="")
        serve = work / "serve"
        serve.mkdir()
        bundles.make_bundle(v2, serve / "update-v2-full.raucb", plain, builder.rauc_key_dir, version="2.0.0")
        (serve / "update-v2.raucb").hardlink_to(full_bundle)
        (serve / "update-unhealthy.raucb").hardlink_to(kit.path("update-unhealthy.raucb"))
        v2.unlink()

        args.log.parent.mkdir(parents=True, exist_ok=True)
        with BundleServer(serve) as server:
            target = BootTarget.from_qemuboot(find_qemuboot(image.qemuboot))
            session = Session(target, boot="grub", log_path=args.log, workdir=work / "vm",
                              guestfwd=((ota.GUEST_HTTP_PORT, server.port),),
                              extra_drives=(Drive(kit.path("stick.img"), readonly=True),))  # fmt: skip
            session.watchdog_seconds = ota.WATCHDOG_SECONDS
            with session:
                t = time.monotonic()
                session.wait_ready(900)
                figures["boot_to_ready_s"] = round(time.monotonic() - t, 1)
                seen = {session.boot_id()}

                for name, key in (("update-v2.raucb", "adaptive"), ("update-v2-full.raucb", "full")):
                    server.reset()
                    res, seconds = ota.install(session, ota.server_url(name))
                    if not res.ok:
                        raise SystemExit(f"install of {name} failed:\n{res.output}")
                    figures[f"{key}_download_bytes"] = server.bytes_sent[name]
                    figures[f"{key}_requests"] = server.requests[name]
                    figures[f"{key}_install_s"] = round(seconds, 1)

                t = time.monotonic()
                passed = ota.reboot_into(session, "B", seen=seen)
                decided = ota.wait_health_decided(session)
                figures["reboot_to_marked_good_s"] = round(time.monotonic() - t, 1)
                if passed != ["B"] or decided != ("active", "success") or ota.slots(session).boot_status["B"] != "good":
                    raise SystemExit(f"the update did not get marked good: {passed} {decided}")
                figures["install_to_marked_good_s"] = round(
                    figures["adaptive_install_s"] + figures["reboot_to_marked_good_s"], 1  # type: ignore[operator]
                )

                res, seconds = ota.install(session, ota.server_url("update-unhealthy.raucb"))
                if not res.ok:
                    raise SystemExit(f"install of the unhealthy update failed:\n{res.output}")
                figures["unhealthy_install_s"] = round(seconds, 1)
                t = time.monotonic()
                passed = ota.reboot_into(session, "B", seen=seen)
                ota.wait_health_decided(session)
                figures["rollback_s"] = round(time.monotonic() - t, 1)
                final = ota.slots(session)
                if passed != ["A", "B"] or final.boot_status.get("A") != "bad":
                    raise SystemExit(f"no rollback: slots booted {passed}; {final.describe()}")
                session.poweroff(90)

    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


def report(f: dict) -> None:
    full = f["bundle_bytes"]

    def row(label: str, value: str, note: str = "") -> None:
        print(f"  {label:<34} {value:>16}  {note}")

    print("OTA benchmark (qemux86-64 test image, podman, production; QEMU TCG on this machine)")
    row("full bundle (update-v2.raucb)", f"{full / MIB:.1f} MiB", f"slot image {f['slot_image_bytes'] / MIB:.0f} MiB")
    row("ideal block delta", f"{f['ideal_delta_bytes'] / MIB:.2f} MiB",
        f"{100 * f['ideal_delta_bytes'] / full:.1f} % of the bundle")  # fmt: skip
    print()
    print(f"  {'':<34} {'adaptive':>16}  {'full (no adaptive)':>18}")
    print(f"  {'downloaded':<34} {f['adaptive_download_bytes'] / MIB:>12.2f} MiB  "
          f"{f['full_download_bytes'] / MIB:>14.2f} MiB")  # fmt: skip
    print(f"  {'share of the bundle':<34} {100 * f['adaptive_download_bytes'] / full:>14.1f} %  "
          f"{100 * f['full_download_bytes'] / full:>16.1f} %")  # fmt: skip
    print(f"  {'HTTP range requests':<34} {f['adaptive_requests']:>16}  {f['full_requests']:>18}")
    print(f"  {'install time':<34} {f['adaptive_install_s']:>14.1f} s  {f['full_install_s']:>16.1f} s")
    print()
    row("boot to ready (OVMF+GRUB)", f"{f['boot_to_ready_s']:.1f} s")
    row("reboot -> marked good", f"{f['reboot_to_marked_good_s']:.1f} s")
    row("install start -> marked good", f"{f['install_to_marked_good_s']:.1f} s", "adaptive install + reboot")
    row("rollback", f"{f['rollback_s']:.1f} s", "reboot into the failing update -> old slot good again")


if __name__ == "__main__":
    sys.exit(main())
