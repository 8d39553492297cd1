"""The QEMU harness without QEMU: command lines, qemuboot.conf, the console
driver (against a real shell under pexpect) and the failure output."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pexpect
import pytest

from edgecontainers.errors import UsageError
from edgecontainers.qemu.console import PROMPT, Console, _Tee
from edgecontainers.qemu.qemuboot import find_qemuboot, read_qemuboot, write_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.qemu.vm import Drive, GuestError, QemuVM, StepTimeout, UserNet, VMConfig

# ---------------------------------------------------------------- the QEMU process


def test_a_qemu_reaped_by_another_reader_is_gone_not_an_error(tmp_path):
    """A session's console reader may reap QEMU while the harness waits for it to
    exit (the U-Boot exhaustion test failed with pexpect's "Did someone else call
    waitpid()"): the VM then reports it gone."""
    vm = QemuVM(VMConfig(), workdir=tmp_path)
    vm.process = pexpect.spawn("/bin/sh", ["-c", "exit 0"], encoding="utf-8")
    os.waitpid(vm.process.pid, 0)  # the other reader
    assert not vm.alive
    assert vm.wait_exit(1)
    vm.kill()


# ---------------------------------------------------------------- command line


def test_command_line_is_always_tcg_and_never_kvm():
    for arch in ("x86_64", "aarch64"):
        argv = VMConfig(arch=arch, machine="virt" if arch == "aarch64" else "q35").command()
        assert argv[argv.index("-accel") + 1].split(",")[0] == "tcg"
        assert not any("kvm" in a for a in argv)


def test_x86_guests_run_one_vcpu_and_never_multi_threaded_tcg():
    """Multi-threaded TCG let the x86-64 guest kernel hit stale int3s while it
    patched its text (docs/testing.md): x86-64 guests get one vCPU (the
    benchmark's fastest fault-free setting), and more only on one host thread."""
    argv = VMConfig().command()
    assert argv[argv.index("-smp") + 1] == "1"
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"
    argv = VMConfig(smp=2).command()  # the image builder's preload VM asks for two
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"
    assert argv[argv.index("-smp") + 1] == "2"
    argv = VMConfig(arch="aarch64", machine="virt").command()
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-smp") + 1] == "2"
    argv = VMConfig(accel="tcg").command()  # a benchmark's explicit choice wins
    assert argv[argv.index("-accel") + 1] == "tcg"


def test_command_line_with_pflash_disk_and_restricted_network(tmp_path):
    cfg = VMConfig(
        pflash_code=Path("/fw/code.fd"),
        pflash_vars=tmp_path / "vars.fd",
        drives=[Drive(tmp_path / "disk.qcow2", format="qcow2")],
        net=UserNet(hostfwd=((2222, 22), (8081, 8080))),
    )
    line = shlex.join(cfg.command())
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/code.fd" in line
    assert f"if=pflash,format=raw,unit=1,file={tmp_path}/vars.fd" in line
    assert f"file={tmp_path}/disk.qcow2,format=qcow2,if=virtio" in line
    assert "restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8081-:8080" in line


def test_no_network_unless_asked():
    assert VMConfig().command()[-4:-2] == ["-nic", "none"]


# ---------------------------------------------------------------- qemuboot.conf
def _deploy(tmp_path: Path, machine: str = "qemux86-64", **extra: str) -> Path:
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    name = f"edgecontainers-image-{machine}.rootfs"
    (deploy / f"{name}.wic").write_bytes(b"\0" * 4096)
    (deploy / "bzImage").write_bytes(b"kernel")
    values = {
        "deploy_dir_image": "/elsewhere/on/the/build/host",
        "image_link_name": name,
        "machine": machine,
        "qb_system_name": "qemu-system-x86_64" if machine == "qemux86-64" else "qemu-system-aarch64",
        "qb_machine": "-machine q35,i8042=off" if machine == "qemux86-64" else "-machine virt",
        "qb_cpu": "-cpu IvyBridge" if machine == "qemux86-64" else "-cpu cortex-a57",
        "qb_mem": "-m 1024",
        "qb_default_fstype": "wic",
        "qb_default_kernel": "bzImage",
        **extra,
    }
    write_qemuboot(deploy / f"{name}.qemuboot.conf", values)
    return deploy


def test_qemuboot_conf_of_a_kas_build(tmp_path):
    deploy = _deploy(tmp_path)
    qb = find_qemuboot(deploy_dir=deploy)
    assert qb.arch == "x86_64"
    assert qb.qemu_machine == "q35,i8042=off"
    assert qb.cpu == "IvyBridge"
    assert qb.memory_mib == 1024
    assert qb.deploy_dir == deploy  # not the build host's path
    assert qb.disk == deploy / "edgecontainers-image-qemux86-64.rootfs.wic"
    assert find_qemuboot("edgecontainers-image", deploy).path == qb.path
    assert find_qemuboot(deploy / "edgecontainers-image-qemux86-64.rootfs.wic").path == qb.path


def test_ovmf_from_the_deploy_dir_wins(tmp_path):
    deploy = _deploy(tmp_path)
    (deploy / "ovmf.code.qcow2").write_bytes(b"c")
    (deploy / "ovmf.vars.qcow2").write_bytes(b"v")
    target = BootTarget.from_qemuboot(find_qemuboot(deploy_dir=deploy))
    assert target.ovmf == (deploy / "ovmf.code.qcow2", deploy / "ovmf.vars.qcow2", "qcow2")
    assert target.variant == "production"
    assert target.boot_paths == ["grub", "direct"]


def test_arm64_boots_u_boot_with_the_rootfs_option(tmp_path):
    deploy = _deploy(
        tmp_path,
        "qemuarm64",
        qb_default_bios="u-boot.bin",
        qb_rootfs_opt="-drive id=disk0,file=@ROOTFS@,if=none,format=raw -device virtio-blk-pci,drive=disk0",
    )
    (deploy / "u-boot.bin").write_bytes(b"u")
    target = BootTarget.from_qemuboot(find_qemuboot(deploy_dir=deploy))
    assert target.boot_paths[0] == "uboot"
    session = Session(target, boot="uboot", workdir=tmp_path / "s")
    try:
        argv = session.vm_config().command()
    finally:
        session.close()
    assert argv[argv.index("-bios") + 1] == str(deploy / "u-boot.bin")
    assert f"id=disk0,file={tmp_path}/s/disk.qcow2,if=none,format=qcow2" in argv


def test_direct_boot_passes_the_slot_by_partuuid(tmp_path):
    deploy = _deploy(tmp_path, edge_kernel_args="ro quiet", edge_partuuids='{"rootfsB": "b-uuid"}')
    target = BootTarget.from_qemuboot(find_qemuboot(deploy_dir=deploy))
    session = Session(target, boot="direct", slot="B", workdir=tmp_path / "s")
    try:
        cfg = session.vm_config()
    finally:
        session.close()
    assert cfg.append == "root=PARTUUID=b-uuid rauc.slot=B ro quiet systemd.gpt_auto=0"
    assert cfg.kernel == deploy / "bzImage"


def test_unknown_boot_path_is_a_usage_error(tmp_path):
    target = BootTarget.from_qemuboot(find_qemuboot(deploy_dir=_deploy(tmp_path)))
    with pytest.raises(UsageError, match="uboot"):
        Session(target, boot="uboot", workdir=tmp_path / "s")


def test_bad_qemuboot_conf(tmp_path):
    bad = tmp_path / "x.qemuboot.conf"
    bad.write_text("[other]\na = b\n")
    with pytest.raises(UsageError, match="config_bsp"):
        read_qemuboot(bad)
    with pytest.raises(UsageError, match=r"no \*\.qemuboot\.conf"):
        find_qemuboot(deploy_dir=_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


# ---------------------------------------------------------------- console driver on a real shell
@pytest.fixture
def shell(tmp_path):
    tee = _Tee(tmp_path / "console.log")
    spawn = pexpect.spawn("/bin/sh", encoding="utf-8", echo=True, env={"PS1": "$ ", "PATH": "/usr/bin:/bin"})
    spawn.logfile_read = tee
    console = Console(spawn, tee)
    yield console
    spawn.close(force=True)
    tee.close()


def test_console_reads_exit_codes_and_output_through_markers(shell):
    shell.expect([r"\$ $"], 10, "first prompt")
    shell.setup_shell()
    ok = shell.run("echo hello; echo world")
    assert (ok.rc, ok.output.split()) == (0, ["hello", "world"])
    bad = shell.run("sh -c 'echo oops >&2; exit 3'")
    assert bad.rc == 3 and "oops" in bad.output
    # output that looks like a marker does not fool it
    tricky = shell.run("echo __RC1=0__; false")
    assert tricky.rc == 1


def test_console_timeout_names_the_step_and_shows_the_last_lines(shell, tmp_path):
    shell.expect([r"\$ $"], 10, "first prompt")
    shell.setup_shell()
    shell.run("for i in $(seq 1 80); do echo line$i; done")
    with pytest.raises(StepTimeout) as err:
        shell.run("sleep 5", timeout=1)
    msg = str(err.value)
    assert "command 'sleep 5'" in msg and "within 1s" in msg
    assert "line80" in msg and "line20" not in msg  # the last 50 lines only
    assert str(tmp_path / "console.log") in msg
    assert "run: sleep 5" in (tmp_path / "console.log").read_text()


def test_console_check_raises_with_the_output(shell):
    shell.expect([r"\$ $"], 10, "first prompt")
    shell.setup_shell()
    with pytest.raises(GuestError, match="exited 2"):
        shell.run("ls /does-not-exist", check=True)


def test_console_eof_is_reported(shell):
    shell.expect([r"\$ $"], 10, "first prompt")
    shell.sendline("exit")
    with pytest.raises(GuestError, match="QEMU exited"):
        shell.expect([re.escape(PROMPT)], 10, "after exit")


# ---------------------------------------------------------------- edgectl qemu / edgectl test
def test_edgectl_qemu_prints_the_command_line_of_a_kas_build(tmp_path):
    from fakes.helpers import edgectl

    deploy = _deploy(tmp_path)
    proc = edgectl("qemu", "--deploy-dir", deploy, "--print")
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout)
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg,thread=single"]
    assert "mon:stdio" in argv  # interactive: Ctrl-A x quits
    assert any(a.startswith("if=pflash") for a in argv)
    assert any(a.endswith("disk.qcow2,format=qcow2,if=virtio") for a in argv)  # an overlay, not the image


def test_edgectl_qemu_without_an_image_is_a_usage_error(tmp_path):
    from fakes.helpers import edgectl, error_line

    line = error_line(edgectl("qemu", "--print"), 2)
    assert "--deploy-dir" in line


def test_edgectl_test_passes_options_to_pytest(tmp_path):
    import argparse

    from edgecontainers.commands import test as cmd

    parser = argparse.ArgumentParser()
    cmd.setup_parser(parser)
    args = parser.parse_args(["--deploy-dir", "/d", "--variant", "dev", "--", "-k", "journald"])
    argv = cmd.pytest_argv(args, Path("/repo"))
    assert argv[1:6] == ["-m", "pytest", "/repo/tests/system", "-m", "qemu"]
    assert argv[argv.index("--deploy-dir") + 1] == "/d" and argv[argv.index("--variant") + 1] == "dev"
    assert "--junitxml=/repo/build/test-results/junit-system.xml" in argv
    assert argv[-2:] == ["-k", "journald"]
