"""Unit tests of the OTA test tooling: the bundle server, bundle making and
breaking, debugfs-derived slot images, the layer's bundle settings, guestfwd."""

from __future__ import annotations

import dataclasses
import http.client
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from edgecontainers import pki
from edgecontainers.qemu.vm import GUESTFWD_ADDR, UserNet
from edgecontainers.testimage import bundles
from edgecontainers.testimage.httpserve import BundleServer
from edgecontainers.testimage.layer import Layer

needs_rauc = pytest.mark.skipif(
    not (shutil.which("rauc") and shutil.which("mksquashfs")), reason="needs rauc and squashfs-tools"
)
needs_e2fs = pytest.mark.skipif(not shutil.which("debugfs"), reason="needs e2fsprogs (debugfs)")


# ---------------------------------------------------------------- the server
def _get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read()


def test_server_answers_ranges_and_counts_the_bytes_it_sent(tmp_path: Path):
    data = bytes(range(256)) * 64  # 16 KiB
    (tmp_path / "b.raucb").write_bytes(data)
    with BundleServer(tmp_path) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for start, end in ((0, 99), (16000, 16383), (100, 4195)):  # one connection, keep-alive
            conn.request("GET", "/b.raucb", headers={"Range": f"bytes={start}-{end}"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 206
            assert resp.getheader("Content-Range") == f"bytes {start}-{end}/{len(data)}"
            assert body == data[start : end + 1]
        resp, body = _get(server.port, "/b.raucb", {"Range": "bytes=16300-99999"})
        assert resp.status == 206 and body == data[16300:]
        resp, body = _get(server.port, "/b.raucb", {"Range": "bytes=-10"})
        assert resp.status == 206 and body == data[-10:]
        resp, body = _get(server.port, "/b.raucb", method="HEAD")
        assert resp.status == 200 and resp.getheader("Content-Length") == str(len(data)) and body == b""
        assert server.bytes_sent["b.raucb"] == 100 + 384 + 4096 + 84 + 10
        assert server.requests["b.raucb"] == 6
        server.reset()
        resp, body = _get(server.port, "/b.raucb")
        assert resp.status == 200 and body == data and server.bytes_sent["b.raucb"] == len(data)


def test_server_refuses_what_it_should(tmp_path: Path):
    (tmp_path / "b.raucb").write_bytes(b"x" * 100)
    (tmp_path.parent / "secret").write_text("no")
    with BundleServer(tmp_path) as server:
        assert _get(server.port, "/../secret")[0].status == 404
        assert _get(server.port, "/nothing")[0].status == 404
        assert _get(server.port, "/b.raucb", {"Range": "bytes=200-300"})[0].status == 416
        assert _get(server.port, "/b.raucb", {"Range": "bytes=a-b"})[0].status == 416
        assert server.bytes_sent["b.raucb"] == 0


def test_guestfwd_reaches_only_the_hosts_loopback_through_socat():
    args = UserNet(restrict=True, hostfwd=((2222, 22),), guestfwd=((8000, 41000),)).args()
    netdev = args[args.index("-netdev") + 1]
    assert "restrict=on" in netdev
    assert f"guestfwd=tcp:{GUESTFWD_ADDR}:8000-cmd:socat - TCP:127.0.0.1:41000" in netdev
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in netdev


# ---------------------------------------------------------------- the layer's bundle settings
def test_bundle_settings_come_from_the_layers_bundle_recipe():
    settings = bundles.bundle_settings(Layer("qemux86-64", "podman", False, key_dir="/nonexistent"))
    assert settings.format == "verity"
    assert settings.adaptive == "block-hash-index"
    assert settings.compatible == "edgecontainers-qemux86-64"
    assert settings.slot == "rootfs" and settings.fstype == "ext4"
    manifest = settings.manifest(version="2.0.0", image="rootfs.ext4")
    assert "[bundle]\nformat=verity\n" in manifest
    assert "[image.rootfs]\nfilename=rootfs.ext4\nadaptive=block-hash-index\n" in manifest
    assert "compatible=edgecontainers-qemux86-64\nversion=2.0.0\n" in manifest


def test_breaking_a_bundle(tmp_path: Path):
    payload, signature = b"P" * 5000, b"S" * 300
    bundle = tmp_path / "b.raucb"
    bundle.write_bytes(payload + signature + struct.pack(">Q", len(signature)))
    assert bundles.strip_signature(bundle, tmp_path / "u.raucb").read_bytes() == payload
    where = bundles.tamper(bundle, tmp_path / "t.raucb", offset=64)
    tampered = (tmp_path / "t.raucb").read_bytes()
    assert where == 64 and tampered[64] == ord("P") ^ 0xFF
    assert tampered[:64] + tampered[65:] == bundle.read_bytes()[:64] + bundle.read_bytes()[65:]
    with pytest.raises(Exception, match="outside the payload"):
        bundles.tamper(bundle, tmp_path / "x", offset=5000)
    (tmp_path / "none.raucb").write_bytes(b"\0" * 16)
    with pytest.raises(Exception, match="no signature"):
        bundles.strip_signature(tmp_path / "none.raucb", tmp_path / "x")


# ---------------------------------------------------------------- slot images and real bundles
@needs_e2fs
def test_derive_rootfs_writes_and_removes_files_without_mounting(tmp_path: Path):
    base = bundles.small_ext4(tmp_path / "base.ext4", {"etc/old": b"old\n", "usr/bin/tool": b"#!/bin/sh\n"})
    out = bundles.derive_rootfs(base, tmp_path / "new.ext4", {
        "/usr/lib/edgecontainers/health.d/99-fail": (b"#!/bin/sh\nexit 1\n", 0o755),
        "/etc/old": None,
        "/usr/bin/tool": (b"new\n", 0o700),
    })  # fmt: skip

    def debugfs(cmd: str) -> str:
        return subprocess.run(["debugfs", "-R", cmd, str(out)], capture_output=True, text=True).stdout

    assert debugfs("cat /usr/lib/edgecontainers/health.d/99-fail") == "#!/bin/sh\nexit 1\n"
    assert debugfs("cat /usr/bin/tool") == "new\n"
    assert debugfs("cat /etc/old") == ""
    stat = debugfs("stat /usr/lib/edgecontainers/health.d/99-fail")
    assert "Mode:  0755" in stat and "User:     0" in stat, stat
    assert "Mode:  0700" in debugfs("stat /usr/bin/tool")
    assert subprocess.run(["e2fsck", "-fn", str(out)], capture_output=True).returncode == 0
    # the base image is untouched
    assert subprocess.run(["debugfs", "-R", "cat /etc/old", str(base)], capture_output=True).stdout == b"old\n"


@needs_rauc
@needs_e2fs
def test_bundles_made_here_are_what_rauc_accepts_and_refuses(tmp_path: Path):
    keys, other = tmp_path / "keys", tmp_path / "other"
    pki.init(keys)
    pki.init(other)
    settings = bundles.bundle_settings(Layer("qemux86-64", "podman", False, key_dir=str(keys)))
    filler = bytes(range(256)) * 4096 + __import__("os").urandom(1 << 20)
    image = bundles.small_ext4(tmp_path / "rootfs.ext4", {"filler": filler})
    good = bundles.make_bundle(image, tmp_path / "good.raucb", settings, keys, version="2.0.0")
    wrong = bundles.make_bundle(image, tmp_path / "wrong.raucb", settings, other, version="2.0.0")
    unsigned = bundles.strip_signature(good, tmp_path / "unsigned.raucb")

    def info(bundle: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rauc", "info", f"--keyring={keys / pki.CA_CERT}", "--output-format=json", str(bundle)],
            capture_output=True, text=True,
        )  # fmt: skip

    ok = info(good)
    assert ok.returncode == 0, ok.stderr
    assert '"compatible":"edgecontainers-qemux86-64"' in ok.stdout and '"version":"2.0.0"' in ok.stdout
    assert '"adaptive":["block-hash-index"]' in ok.stdout.replace(" ", "")
    assert info(wrong).returncode != 0
    assert info(unsigned).returncode != 0


@needs_rauc
@needs_e2fs
def test_a_signer_outside_its_validity_is_refused_and_plain_says_so(tmp_path: Path):
    """The dated signers of the OTA kit: issued by the trusted CA, refused by RAUC for
    their dates alone; the plain bundle is genuine and plain."""
    keys = tmp_path / "keys"
    pki.init(keys)
    settings = bundles.bundle_settings(Layer("qemux86-64", "podman", False, key_dir=str(keys)))
    filler = bytes(range(256)) * 4096 + __import__("os").urandom(1 << 20)
    image = bundles.small_ext4(tmp_path / "rootfs.ext4", {"filler": filler})

    def info(bundle: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["rauc", "info", f"--keyring={keys / pki.CA_CERT}", "--output-format=json", str(bundle)],
                              capture_output=True, text=True)  # fmt: skip

    for start, end, why in (("20200101000000Z", "20210101000000Z", "certificate has expired"),
                            ("20990101000000Z", "21000101000000Z", "certificate is not yet valid")):  # fmt: skip
        signer = bundles.dated_signer(keys, tmp_path / start, start, end)
        verify = subprocess.run(["openssl", "verify", "-no_check_time", "-CAfile", str(keys / pki.CA_CERT),
                                 str(signer / pki.SIGNING_CERT)], capture_output=True, text=True)  # fmt: skip
        assert verify.returncode == 0, verify.stderr  # the chain is good: only the dates are wrong
        bundle = bundles.make_bundle(image, tmp_path / f"{start}.raucb", settings, signer, version="9.0.0")
        res = info(bundle)
        assert res.returncode != 0 and why in res.stderr + res.stdout, res.stderr
    plain_settings = dataclasses.replace(settings, format="plain", adaptive="")
    plain = bundles.make_bundle(image, tmp_path / "plain.raucb", plain_settings, keys)
    res = info(plain)
    # a plain bundle's signature covers the squashfs (detached); verity bundles sign the manifest (inline)
    assert res.returncode == 0 and "Verified detached signature" in res.stderr, res.stdout + res.stderr
