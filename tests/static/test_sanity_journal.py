"""edgecontainers_sanity.bbclass refuses EDGECONTAINERS_JOURNAL_STORAGE =
"persistent" when parsing starts: /var/log is a tmpfs (fs-perms-volatile-log),
so journald's /var/log/journal would be in RAM and the promise of a
persistent journal could not be kept.  The handler runs here on a fake
datastore, compiled from the class text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLASS = ROOT / "meta-edgecontainers/classes/edgecontainers_sanity.bbclass"
DISTRO_CONF = ROOT / "meta-edgecontainers/conf/distro/edgecontainers.conf"


class Fatal(Exception):
    pass


class BB:
    @staticmethod
    def fatal(msg: str) -> None:
        raise Fatal(msg)

    @staticmethod
    def warn(msg: str) -> None:
        pass


class Data(dict):
    def getVar(self, name):
        return self.get(name)

    def expand(self, text: str) -> str:
        return text.replace("${localstatedir}", "/var")


class Event:
    def __init__(self, data: Data) -> None:
        self.data = data


def run_handler(**values: str) -> None:
    body = re.search(r"^python edgecontainers_sanity_check\(\) \{\n(.*?)^\}", CLASS.read_text(), re.M | re.S).group(1)
    ns: dict = {"bb": BB}
    exec(compile("def handler(e):\n" + body, str(CLASS), "exec"), ns)
    data = Data(
        DISTRO="edgecontainers",
        EDGECONTAINERS_ENGINES="podman docker",
        EDGECONTAINERS_ENGINE="podman",
        EDGECONTAINERS_SERIAL_CONSOLE="0",
        EDGECONTAINERS_JOURNAL_STORAGE="volatile",
        EDGECONTAINERS_BOOT_ATTEMPTS="3",
        EDGECONTAINERS_HEALTH_TIMEOUT="300",
        EDGECONTAINERS_MACHINES="qemux86-64",
        MACHINE="qemux86-64",
    )
    data.update(values)
    ns["handler"](Event(data))


def test_the_default_configuration_passes():
    run_handler()


def test_a_persistent_journal_is_refused_with_the_reason():
    with pytest.raises(
        Fatal, match=r'EDGECONTAINERS_JOURNAL_STORAGE = "persistent" is not supported: /var/log is in RAM'
    ):
        run_handler(EDGECONTAINERS_JOURNAL_STORAGE="persistent")


def test_logs_are_volatile_in_the_distro():
    """What makes a persistent journal impossible is still so (else revisit the refusal)."""
    text = DISTRO_CONF.read_text()
    assert re.search(r'^FILESYSTEM_PERMS_TABLES = ".*files/fs-perms-volatile-log.txt', text, re.M)
    assert re.search(r'^EDGECONTAINERS_JOURNAL_STORAGE \?\?= "volatile"$', text, re.M)
