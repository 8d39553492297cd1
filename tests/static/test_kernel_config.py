"""Static checks of the distro's kernel options and of what depends on them:
the fragments reach both kernels as a kernel feature merged last, the options
the engines need are built in (not left to a module the image may lack), and
every sysctl the layer sets exists in a kernel built with those options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "meta-edgecontainers"
KMETA = LAYER / "recipes-kernel/linux/files/edgecontainers-kmeta"
SYSCTL = LAYER / "recipes-core/edgecontainers-base/files/sysctl-hardening.conf"
KERNEL_BBAPPENDS = [
    LAYER / "recipes-kernel/linux/linux-yocto_%.bbappend",
    LAYER / "dynamic-layers/raspberrypi/recipes-kernel/linux/linux-raspberrypi_%.bbappend",
]

# What a sysctl key needs built into the kernel to exist.  Keys of the core
# kernel, ext4/VFS and IPv4 (always built in) need nothing; a key with no
# entry here and no prefix in ALWAYS fails the test, so a new key has to be
# thought about.
NEEDS = {
    "net.ipv6.": "CONFIG_IPV6",
    "kernel.yama.": "CONFIG_SECURITY_YAMA",
    "net.core.bpf_jit_harden": "CONFIG_BPF_JIT",
    "kernel.unprivileged_bpf_disabled": "CONFIG_BPF_SYSCALL",
    "kernel.perf_event_paranoid": "CONFIG_PERF_EVENTS",
    "kernel.kexec_load_disabled": "CONFIG_KEXEC_CORE",
}
ALWAYS = ("kernel.kptr_restrict", "kernel.dmesg_restrict", "kernel.panic", "fs.", "net.ipv4.")


def fragments() -> dict[str, str]:
    """CONFIG_X -> value ('y', 'm', 'n' for "is not set") over our fragments, last one wins."""
    values: dict[str, str] = {}
    for cfg in sorted(KMETA.glob("*.cfg")):
        for line in cfg.read_text().splitlines():
            if m := re.fullmatch(r"(CONFIG_\w+)=(.*)", line):
                values[m.group(1)] = m.group(2)
            elif m := re.fullmatch(r"# (CONFIG_\w+) is not set", line):
                values[m.group(1)] = "n"
    return values


def sysctl_keys(text: str) -> list[str]:
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            keys.append(line.split("=", 1)[0].strip())
    return keys


def missing_sysctls(text: str, config: dict[str, str]) -> list[str]:
    """Keys that a kernel with `config` does not have (a leading '-' opts out: a failure is ignored)."""
    missing = []
    for key in sysctl_keys(text):
        if key.startswith("-"):
            continue
        need = next((opt for prefix, opt in NEEDS.items() if key.startswith(prefix)), None)
        if need is None:
            assert key.startswith(ALWAYS), f"{key}: say in NEEDS which kernel option it needs"
        elif config.get(need) != "y":
            missing.append(f"{key} (needs {need}=y, fragments: {config.get(need, 'unset')})")
    return missing


def test_every_sysctl_exists_in_the_distro_kernels():
    assert not missing_sysctls(SYSCTL.read_text(), fragments())


def test_the_sysctl_check_catches_a_key_the_kernel_lacks():
    config = fragments()
    assert missing_sysctls("kernel.kexec_load_disabled = 1\n", config)
    assert missing_sysctls("net.ipv6.conf.all.accept_redirects = 0\n", {**config, "CONFIG_IPV6": "m"})
    assert not missing_sysctls("-kernel.kexec_load_disabled = 1\n", config)


@pytest.mark.parametrize("option", ["CONFIG_BRIDGE", "CONFIG_IP6_NF_IPTABLES", "CONFIG_IP6_NF_NAT"])
def test_options_that_depend_on_ipv6_can_be_built_in(option):
    """BRIDGE and IP6_NF_* are limited to =m while IPV6=m (the Pi defconfigs): =y needs IPV6=y."""
    config = fragments()
    assert config.get(option) == "y"
    assert config.get("CONFIG_IPV6") == "y"


@pytest.mark.parametrize(
    "option",
    [
        "CONFIG_OVERLAY_FS",
        "CONFIG_VETH",
        "CONFIG_BRIDGE",
        "CONFIG_BRIDGE_NETFILTER",
        "CONFIG_NF_TABLES",
        "CONFIG_NF_TABLES_INET",
        "CONFIG_NFT_NAT",
        "CONFIG_NFT_MASQ",
        "CONFIG_NF_NAT",
        "CONFIG_IP_NF_IPTABLES",
    ],
)
def test_what_the_engines_need_for_their_bridge_is_built_in(option):
    assert fragments().get(option) == "y"


def test_the_feature_names_both_fragments():
    scc = (KMETA / "edgecontainers.scc").read_text()
    named = re.findall(r"^kconf \S+ (\S+)$", scc, re.M)
    assert sorted(named) == sorted(p.name for p in KMETA.glob("*.cfg"))


@pytest.mark.parametrize("bbappend", KERNEL_BBAPPENDS, ids=lambda p: p.name)
def test_kernel_bbappends_add_the_fragments_as_a_feature_merged_last(bbappend):
    """A .cfg in SRC_URI is merged before the BSP and KERNEL_FEATURES (kernel-yocto's
    do_kernel_metadata), so meta-virtualization's =m values would win over it."""
    text = bbappend.read_text()
    assert not re.search(r"file://[^ ;\"]+\.(cfg|scc)\b", text), "a fragment in SRC_URI loses to KERNEL_FEATURES"
    assert "file://edgecontainers-kmeta;type=kmeta;destsuffix=edgecontainers-kmeta" in text
    assert re.search(r"^inherit_defer \$\{@'edgecontainers_kernel' if ", text, re.M)
    filesdir = re.search(r'FILESEXTRAPATHS:prepend:edgecontainers := "\$\{THISDIR\}/([^:"]*):"', text).group(1)
    assert (bbappend.parent / filesdir / "edgecontainers-kmeta" / "edgecontainers.scc").is_file()


def test_the_kernel_class_moves_our_features_last():
    """Run the class's anonymous function on a fake datastore: ours end up last, once."""
    text = (LAYER / "classes/edgecontainers_kernel.bbclass").read_text()
    body = re.search(r"^python \(\) \{\n(.*?)^\}", text, re.M | re.S).group(1)
    ours = re.search(r'^EDGECONTAINERS_KERNEL_FEATURES = "(.*)"$', text, re.M).group(1)

    class Data(dict):
        def getVar(self, name):
            return self.get(name)

        def setVar(self, name, value):
            self[name] = value

    d = Data(EDGECONTAINERS_KERNEL_FEATURES=ours, KERNEL_FEATURES=f"{ours} cfg/docker.scc cfg/lxc.scc")
    exec(compile("def anon(d):\n" + body, "edgecontainers_kernel.bbclass", "exec"), ns := {})
    ns["anon"](d)
    assert d["KERNEL_FEATURES"].split() == ["cfg/docker.scc", "cfg/lxc.scc", *ours.split()]
