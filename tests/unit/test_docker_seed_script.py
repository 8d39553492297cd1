"""Unit tests of edgecontainers-docker-seed, the on-target script (POSIX sh)
that brings the images preloaded in a slot's rootfs into docker's store on
/data: on the first boot (a whole copy) and on the first boot of every other
slot image (an OS update with new app images: the store gets the layers and
images it lacks, the names point at the slot's images).

The seed and the store are real directory trees in the overlay2 layout
docker's graphdriver store uses (layerdb, imagedb, repositories.json,
overlay2/<cache-id> with its short link); "tags" runs against the fake docker
of tests/unit/fakes/app_update/engine.py, whose images are read from the store
the way dockerd would load them when it starts.  The script runs from a copy
with its two paths (SEED, STORE) rewritten."""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.helpers import REPO

FILES = REPO / "meta-edgecontainers/recipes-containers/edgecontainers-engine-config/files"
SCRIPT = FILES / "edgecontainers-docker-seed"
ENGINE_DIR = Path(__file__).resolve().parent / "fakes" / "app_update"
TOOLS = ("cksum", "awk", "cat", "cp", "mv", "rm", "mkdir", "sync", "grep", "sed")
O2 = "image/overlay2"

if missing := [tool for tool in TOOLS if shutil.which(tool) is None]:
    pytest.skip(f"needs {', '.join(missing)} to run the script", allow_module_level=True)


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def add_layer(root: Path, name: str) -> str:
    """A layer of the store: its files, short link and layerdb record; returns its chain id."""
    chain, cache, link = h(f"chain-{name}"), h(f"cache-{name}"), h(f"link-{name}")[:26].upper()
    (root / "overlay2" / cache / "diff").mkdir(parents=True)
    (root / "overlay2" / cache / "diff" / name).write_text(f"content of {name}\n")
    (root / "overlay2" / cache / "link").write_text(link)
    (root / "overlay2/l").mkdir(parents=True, exist_ok=True)
    (root / "overlay2/l" / link).symlink_to(f"../{cache}/diff")
    record = root / O2 / "layerdb/sha256" / chain
    record.mkdir(parents=True)
    (record / "cache-id").write_text(cache)
    (record / "diff").write_text(f"sha256:{h(name)}")
    return chain


def add_image(root: Path, name: str, layers: list[str], tags: list[str]) -> str:
    """An image (config in imagedb) over `layers`, named `tags`; returns its id (sha256:...)."""
    for layer in layers:
        if not (root / O2 / "layerdb/sha256" / h(f"chain-{layer}")).exists():
            add_layer(root, layer)
    image_id = h(f"image-{name}")
    (root / O2 / "imagedb/content/sha256").mkdir(parents=True, exist_ok=True)
    (root / O2 / "imagedb/content/sha256" / image_id).write_text(json.dumps({"rootfs": layers}))
    (root / O2 / "imagedb/metadata/sha256" / image_id).mkdir(parents=True)
    (root / O2 / "imagedb/metadata/sha256" / image_id / "lastUpdated").write_text("2025")
    repos_file = root / O2 / "repositories.json"
    repos = json.loads(repos_file.read_text()) if repos_file.exists() else {"Repositories": {}}
    for tag in tags:
        repo = tag.rsplit(":", 1)[0]
        repos["Repositories"].setdefault(repo, {})[tag] = f"sha256:{image_id}"
        repos["Repositories"][repo][f"{repo}@sha256:{h('digest-' + name)}"] = f"sha256:{image_id}"
    repos_file.write_text(json.dumps(repos, separators=(",", ":")))
    return f"sha256:{image_id}"


def tree(root: Path) -> dict[str, str]:
    """Every file and link under root with its content or target."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_text()
    return out


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.seed = tmp_path / "seed"
        self.store = tmp_path / "store"
        self.seed.mkdir()
        self.store.mkdir()
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for tool in TOOLS:
            (self.bin / tool).symlink_to(shutil.which(tool))
        launcher = self.bin / "docker"
        launcher.write_text(
            f"#!{sys.executable} -IS\nimport sys\nsys.path.insert(0, {str(ENGINE_DIR)!r})\n"
            "from engine import main\nmain('docker')\n"
        )
        launcher.chmod(0o755)
        self.state_file = tmp_path / "state.marshal"
        self.calls_file = tmp_path / "calls.marshal"
        text = SCRIPT.read_text()
        for old, new in (
            ("\nSEED=/usr/lib/edgecontainers/docker-seed\n", f"\nSEED={self.seed}\n"),
            ("\nSTORE=/var/lib/docker\n", f"\nSTORE={self.store}\n"),
        ):
            assert text.count(old) == 1
            text = text.replace(old, new)
        self.script = tmp_path / "edgecontainers-docker-seed"
        self.script.write_text(text)
        self.script.chmod(0o755)

    def run(self, mode: str) -> subprocess.CompletedProcess:
        env = {
            "PATH": str(self.bin),
            "APP_UPDATE_STATE": str(self.state_file),
            "APP_UPDATE_CALLS": str(self.calls_file),
        }
        return subprocess.run(["/bin/sh", str(self.script), mode], env=env, capture_output=True, text=True)

    def docker_starts(self, broken_tag: bool = False) -> None:
        """The fake docker's images: what dockerd loads from the store (imagedb + repositories.json)."""
        names: dict[str, list[str]] = {}
        repos = json.loads((self.store / O2 / "repositories.json").read_text())["Repositories"]
        for refs in repos.values():
            for ref, image_id in refs.items():
                if "@" not in ref:
                    names.setdefault(image_id, []).append(ref)
        images = [
            {"id": f"sha256:{p.name}", "names": names.get(f"sha256:{p.name}", []), "healthy": True}
            for p in sorted((self.store / O2 / "imagedb/content/sha256").iterdir())
        ]
        if broken_tag:  # docker would not find the image: tag fails
            images = [i for i in images if i["names"]]
        self.state_file.write_bytes(marshal.dumps({"docker": {"images": images, "containers": [], "registry": {}}}))
        self.calls_file.write_bytes(b"")

    def docker_names(self) -> dict[str, list[str]]:
        state = marshal.loads(self.state_file.read_bytes())
        return {img["id"]: sorted(img["names"]) for img in state["docker"]["images"]}

    def docker_calls(self) -> list[list[str]]:
        calls, data = [], self.calls_file.read_bytes()
        while data:
            call = marshal.loads(data)
            calls.append(call["argv"])
            data = data[len(marshal.dumps(call)) :]
        return calls


APP, USER = "edgecontainers-demo:latest", "acme/tool:2"


def slot_v1(root: Path) -> str:
    return add_image(root, "app-v1", ["base", "app1"], [APP])


def slot_v2(root: Path) -> str:
    return add_image(root, "app-v2", ["base", "app2"], [APP])


def test_an_empty_store_gets_a_whole_copy(tmp_path):
    rig = Rig(tmp_path)
    app = slot_v1(rig.seed)
    (rig.seed / "volumes").mkdir()
    (rig.seed / "volumes/metadata.db").write_text("db")
    files = rig.run("files")
    assert files.returncode == 0, files.stdout + files.stderr
    assert tree(rig.store) == tree(rig.seed)
    rig.docker_starts()
    tags = rig.run("tags")
    assert tags.returncode == 0, tags.stdout + tags.stderr
    assert [c for c in rig.docker_calls() if c[0] == "tag"] == []
    assert rig.docker_names()[app] == [APP]
    assert (rig.store / ".edgecontainers-seed").is_file()


def test_a_new_slot_image_brings_its_images_and_keeps_the_users(tmp_path):
    rig = Rig(tmp_path)
    old_app = slot_v1(rig.seed)
    assert rig.run("files").returncode == 0
    rig.docker_starts()
    assert rig.run("tags").returncode == 0
    # the user's own image and a container since then
    user = add_image(rig.store, "tool", ["base", "tool"], [USER])
    (rig.store / "containers/c1").mkdir(parents=True)
    (rig.store / "containers/c1/config.v2.json").write_text("{}")
    before = tree(rig.store)
    # the OS update: a new slot whose seed has a new app image
    shutil.rmtree(rig.seed)
    rig.seed.mkdir()
    new_app = slot_v2(rig.seed)

    files = rig.run("files")
    assert files.returncode == 0, files.stdout + files.stderr
    after = tree(rig.store)
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed == set(), f"existing store entries changed: {changed}"
    added = set(after) - set(before)
    cache2 = h("cache-app2")
    assert f"overlay2/{cache2}/diff/app2" in added
    assert f"overlay2/l/{h('link-app2')[:26].upper()}" in added
    assert f"{O2}/layerdb/sha256/{h('chain-app2')}/cache-id" in added
    assert f"{O2}/imagedb/content/sha256/{new_app.removeprefix('sha256:')}" in added
    assert not any(h("cache-base") in k for k in added), "a layer the store has was copied again"
    assert not (rig.store / ".edgecontainers-seeding").exists()

    rig.docker_starts()
    tags = rig.run("tags")
    assert tags.returncode == 0, tags.stdout + tags.stderr
    names = rig.docker_names()
    assert names[new_app] == [APP]
    assert names[old_app] == []  # still there, untagged
    assert names[user] == [USER]
    assert ["tag", new_app, APP] in rig.docker_calls()

    # the next boot of the same slot image does nothing, docker is not asked
    rig.calls_file.write_bytes(b"")
    assert rig.run("files").returncode == 0
    assert rig.run("tags").returncode == 0
    assert rig.docker_calls() == []
    assert tree(rig.store) == {**after, **{k: v for k, v in tree(rig.store).items() if k == ".edgecontainers-seed"}}


def test_falling_back_to_the_old_slot_points_the_name_back(tmp_path):
    rig = Rig(tmp_path)
    old_app = slot_v1(rig.seed)
    rig.run("files")
    rig.docker_starts()
    rig.run("tags")
    v1_seed = tmp_path / "seed-v1"
    shutil.copytree(rig.seed, v1_seed, symlinks=True)
    shutil.rmtree(rig.seed)
    rig.seed.mkdir()
    new_app = slot_v2(rig.seed)
    rig.run("files")
    rig.docker_starts()
    rig.run("tags")
    # the new slot fails its health gate: the bootloader boots the old one
    shutil.rmtree(rig.seed)
    shutil.copytree(v1_seed, rig.seed, symlinks=True)
    assert rig.run("files").returncode == 0
    # docker keeps the names across restarts: state as the tags step left it
    tags = rig.run("tags")
    assert tags.returncode == 0, tags.stdout + tags.stderr
    assert rig.docker_names()[old_app] == [APP]
    assert rig.docker_names()[new_app] == []


def test_a_failed_tag_is_tried_again_at_the_next_boot(tmp_path):
    rig = Rig(tmp_path)
    slot_v1(rig.seed)
    rig.run("files")
    rig.docker_starts()
    rig.run("tags")
    shutil.rmtree(rig.seed)
    rig.seed.mkdir()
    new_app = slot_v2(rig.seed)
    rig.run("files")
    rig.docker_starts(broken_tag=True)
    tags = rig.run("tags")
    assert tags.returncode == 1
    assert f"cannot tag {new_app} as {APP}" in tags.stdout
    stamp = (rig.store / ".edgecontainers-seed").read_text()
    rig.docker_starts()
    assert rig.run("tags").returncode == 0
    assert (rig.store / ".edgecontainers-seed").read_text() != stamp
    assert rig.docker_names()[new_app] == [APP]


def test_no_seed_nothing_to_do_and_usage(tmp_path):
    rig = Rig(tmp_path)
    assert rig.run("files").returncode == 0
    assert rig.run("tags").returncode == 0
    assert list(rig.store.iterdir()) == []
    assert rig.run("bogus").returncode == 2


def test_the_units_run_it_on_every_boot_before_docker_and_before_the_apps():
    """The old unit ran only while the store had no image/ (ConditionPathExists=!): never after an update."""
    seed = (FILES / "edgecontainers-docker-seed.service").read_text()
    assert "ConditionPathExists=!" not in seed
    assert "ExecStart=/usr/libexec/edgecontainers/docker-seed files" in seed
    assert "Before=docker.service" in seed
    tags = (FILES / "edgecontainers-docker-seed-tags.service").read_text()
    assert "ExecStart=/usr/libexec/edgecontainers/docker-seed tags" in tags
    assert "After=docker.service edgecontainers-docker-seed.service" in tags
    compose = (FILES / "edgecontainers-compose@.service").read_text()
    assert "edgecontainers-docker-seed-tags.service" in compose.split("After=", 1)[1].splitlines()[0]
