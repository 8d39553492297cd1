"""OTA with docker (markers ``ota`` and ``ota_docker``): an OS update that brings
a new app image.

docker keeps its image store on /data; a slot image carries the images
preloaded at build time as a seed (/usr/lib/edgecontainers/docker-seed).  On
the first boot of every slot image edgecontainers-docker-seed adds the layers
and images of that seed the store lacks (``files``, before docker) and points
the seed's names at the seed's images (``tags``, before the compose apps,
which start with ``--pull never``).  The update here is a second test image,
built from a copy of the layer whose demo app's ``version`` file says 2.0: the
same name (``edgecontainers-demo-container:latest``, the only name the layer's
bundling gives a preloaded image), new content.

One guest (docker production image, OVMF -> GRUB -> the layer's grub.cfg) goes
through the scenarios in order:

1. the update from the host over HTTP into B, reboot: B runs the app 2.0 from
   its seed, the health gate marks B good, /data (a file, machine-id, SSH host
   key, a name the user gave the old image) survives;
2. an update made from the first image (app 1.0) plus update-unhealthy's
   failing health hook, into A: A boots (its seed points the name back at 1.0),
   the gate marks A bad, B boots again and its seed points the name at 2.0.

``EDGECONTAINERS_OTA_DOCKER_LAYER=<a copy of meta-edgecontainers>`` builds
every image of the module from that layer instead of the checkout's: the
negative proof (a layer whose seed unit still ran only into an empty store
fails scenario 1: B is marked good but runs the app 1.0).
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from otachain import chained, ota_guest, scenario_log

from edgecontainers.qemu import ota
from edgecontainers.qemu.session import Session
from edgecontainers.testimage.builder import ImageSpec
from edgecontainers.testimage.httpserve import BundleServer
from edgecontainers.testimage.layer import default_layer
from edgecontainers.testimage.otakit import (
    DOCKER_SEED_REPOSITORIES,
    VERSION_MARKER,
    SlotUpdate,
    build_slot_updates,
    docker_seed_images,
    unhealthy_files,
)

pytestmark = [pytest.mark.ota, pytest.mark.ota_docker]

LAYER_ENV = "EDGECONTAINERS_OTA_DOCKER_LAYER"
APP = "edgecontainers-demo"
APP_VERSION_SOURCE = "recipes-demo/edgecontainers-demo/files/version"
UPDATE_APP_V2 = "update-docker-app-v2.raucb"
UPDATE_UNHEALTHY = "update-docker-unhealthy.raucb"
MARKER_APP_V2 = "docker-app-2.0"
PROBE = "/data/.edgecontainers-ota-probe"
KEPT = "edgecontainers-ota-test/kept:before-update"  # a name the user gave the preloaded image
STAMP = "/var/lib/docker/.edgecontainers-seed"


@dataclass
class DockerOta:
    session: Session
    server: BundleServer
    app_ref: str  # the preloaded name, in both seeds
    old_id: str  # its image in the first image's seed (app 1.0)
    new_id: str  # in the update's seed (app 2.0)
    seen: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    figures: dict[str, float | int] = field(default_factory=dict)

    def run(self, command: str, timeout: float = 120) -> str:
        res = self.session.run(command, timeout=timeout)
        assert res.ok, f"'{command}' exited {res.rc}: {res.output.strip()[-800:]}"
        return res.output

    def slots(self) -> ota.Slots:
        return ota.slots(self.session)

    def app(self) -> tuple[str, str, str]:
        return ota.app_state(self.session, APP, engine="docker")

    def image_id(self, ref: str) -> str:
        return self.run(f"docker image inspect --format '{{{{.Id}}}}' {ref}").strip()

    def health_endpoint(self) -> str:
        url = f"http://127.0.0.1:{self.session.app_port}/cgi-bin/health"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=20) as resp:
                    return f"{resp.status} {resp.read().decode().strip()}"
            except OSError as exc:
                if time.monotonic() > deadline:
                    return f"no answer: {exc}"
                time.sleep(3)

    def seed_journal(self) -> str:
        return self.run("journalctl -b -o cat -u edgecontainers-docker-seed.service "
                        "-u edgecontainers-docker-seed-tags.service")  # fmt: skip

    def stamp_matches_this_slot(self) -> bool:
        want = self.run(f"cksum < {DOCKER_SEED_REPOSITORIES} | awk '{{ print $1 \"-\" $2 }}'").strip()
        return self.session.run(f"cat {STAMP}").output.strip() == want


def _app_layer(base: Path, dest: Path, version: str) -> Path:
    """A copy of the layer whose demo app says ``version``."""
    shutil.copytree(base, dest)
    path = dest / APP_VERSION_SOURCE
    assert path.read_text().strip() == "1.0", f"{APP_VERSION_SOURCE} changed; update this test"
    path.write_text(f"{version}\n")
    return dest


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest, builder, build_image, tmp_path_factory):
    if request.config.getoption("image") or request.config.getoption("deploy_dir"):
        pytest.skip("the docker OTA scenarios install bundles made from QEMU test images; "
                    "they do not run against a kas build yet (docs/ota.md)")  # fmt: skip
    other = os.environ.get(LAYER_ENV)
    base_layer = Path(other).resolve() if other else default_layer()
    suffix = "-other-layer" if other else ""
    v1 = build_image(ImageSpec(engine="docker", variant="production", layer=Path(other) if other else None,
                               tag=suffix.lstrip("-")))  # fmt: skip
    layer_v2 = _app_layer(base_layer, tmp_path_factory.mktemp("layer-app-v2") / "meta-edgecontainers", "2.0")
    v2 = build_image(ImageSpec(engine="docker", variant="production", layer=layer_v2, tag=f"app-v2{suffix}"))
    old, new = docker_seed_images(v1), docker_seed_images(v2)
    assert len(new) == 1 and set(new) == set(old), f"seeds: {old} / {new}"
    (app_ref,) = new
    assert old[app_ref] != new[app_ref], f"the update's seed has the same image as the first one: {new}"
    directory = build_slot_updates(builder, f"docker-updates{suffix}", (
        SlotUpdate(UPDATE_APP_V2, v2, ((VERSION_MARKER, f"{MARKER_APP_V2}\n".encode(), 0o644),), "2.0.0",
                   "OTA test (docker): the demo app 2.0 preloaded"),
        SlotUpdate(UPDATE_UNHEALTHY, v1, unhealthy_files(b"docker-unhealthy\n"), "3.0.0",
                   "OTA test (docker): the demo app 1.0, fails its health check"),
    ))  # fmt: skip
    server = BundleServer(directory).start()
    figures: dict[str, float | int] = {}
    guest = ota_guest(v1, "ota-docker-production", workdir=tmp_path_factory.mktemp("ota-docker"), figures=figures,
                      guestfwd=((ota.GUEST_HTTP_PORT, server.port),),
                      figures_file="ota-docker-figures.json")  # fmt: skip
    try:
        with guest as session:
            state = DockerOta(session, server, app_ref, old[app_ref], new[app_ref], figures=figures)
            state.seen.add(session.boot_id())
            yield state
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _console_per_test(request: pytest.FixtureRequest, env: DockerOta):
    with scenario_log(request, env.session, "ota-docker", env.figures):
        yield


@pytest.fixture(autouse=True)
def _chain(request: pytest.FixtureRequest, env: DockerOta):
    with chained(request, env.failed, "docker OTA"):
        yield


# ---------------------------------------------------------------- scenario 1: the update's app image runs
def test_docker_update_runs_the_new_app_image_of_its_slot_and_is_marked_good(env: DockerOta):
    s = env.session
    before = env.slots()
    assert before.booted == "A" and before.boot_status["A"] == "good", before.describe()
    assert env.health_endpoint() == "200 ok version=1.0"
    assert env.app() == ("running", "healthy", env.old_id)
    machine_id = env.run("cat /etc/machine-id").strip()
    host_key = env.run("cat /var/lib/ssh/ssh_host_ed25519_key.pub").strip()
    env.run(f"echo 'written before the docker update' > {PROBE} && docker tag {env.app_ref} {KEPT} && sync")

    res, seconds = ota.install(s, ota.server_url(UPDATE_APP_V2))  # streaming, adaptive
    assert res.ok, res.output
    env.figures["install_s"] = round(seconds, 1)
    assert env.slots().primary == "B", env.slots().describe()

    t = time.monotonic()
    passed = ota.reboot_into(s, "B", seen=env.seen)
    assert passed == ["B"], f"slots booted: {passed}"
    assert ota.wait_health_decided(s) == ("active", "success")
    env.figures["reboot_to_marked_good_s"] = round(time.monotonic() - t, 1)
    after = env.slots()
    assert after.booted == "B" and after.boot_status["B"] == "good", after.describe()
    assert env.run(f"cat {VERSION_MARKER}").strip() == MARKER_APP_V2
    journal = env.seed_journal()
    images = env.run("docker images --all --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}'")
    # the update's app: the endpoint, the container's image, the name
    assert env.health_endpoint() == "200 ok version=2.0", (
        f"slot B runs another app image than its own ({env.new_id}); store:\n{images}\nseed units:\n{journal}"
    )
    assert env.app() == ("running", "healthy", env.new_id), images
    assert env.image_id(env.app_ref) == env.new_id, images
    # what the seed did: layers added to the store, the name pointed at the new image, the stamp
    added = [line for line in journal.splitlines() if "layer(s) of this slot's preloaded images" in line]
    assert added and not added[-1].split("added ", 1)[-1].startswith("0 "), journal
    assert f"{env.app_ref} is now this slot's preloaded image {env.new_id.removeprefix('sha256:')}" in journal, journal
    assert env.stamp_matches_this_slot(), env.run(f"cat {STAMP}; ls -la /var/lib/docker")
    # everything on /data is intact, the old image and the user's name for it too
    assert env.image_id(KEPT) == env.old_id, images
    assert env.run(f"cat {PROBE}").strip() == "written before the docker update"
    assert env.run("cat /etc/machine-id").strip() == machine_id
    assert env.run("cat /var/lib/ssh/ssh_host_ed25519_key.pub").strip() == host_key
    assert "marked slot B good" in env.run("cat /data/edgecontainers/health.log")


# ---------------------------------------------------------------- scenario 2: the fallback's app image
def test_docker_rollback_to_the_previous_slot_image_runs_its_app_image_again(env: DockerOta):
    s = env.session
    before = env.slots()
    assert before.booted == "B" and before.boot_status["B"] == "good", before.describe()
    assert env.app() == ("running", "healthy", env.new_id)
    res, _ = ota.install(s, ota.server_url(UPDATE_UNHEALTHY))  # app 1.0 and a failing health hook
    assert res.ok, res.output
    assert env.slots().primary == "A", env.slots().describe()

    t = time.monotonic()
    passed = ota.reboot_into(s, "B", seen=env.seen)
    assert passed == ["A", "B"], f"slots booted: {passed} (want the new slot A, then B again)"
    assert ota.wait_health_decided(s) == ("active", "success")
    env.figures["rollback_s"] = round(time.monotonic() - t, 1)
    after = env.slots()
    assert after.booted == "B" and after.boot_status["B"] == "good", after.describe()
    assert after.boot_status["A"] == "bad", after.describe()
    log = env.run("cat /data/edgecontainers/health.log")
    assert "slot=A" in log and "99-test-always-fails failed" in log and "marked slot A bad" in log, log
    # A's seed had pointed the name at its image (1.0); B's first boot after A points it back
    journal = env.seed_journal()
    images = env.run("docker images --all --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}'")
    assert f"{env.app_ref} is now this slot's preloaded image {env.new_id.removeprefix('sha256:')}" in journal, (
        f"B's seed did not point {env.app_ref} back at its image this boot:\n{journal}\nstore:\n{images}"
    )
    assert env.stamp_matches_this_slot(), env.run(f"cat {STAMP}")
    assert env.health_endpoint() == "200 ok version=2.0", images
    assert env.app() == ("running", "healthy", env.new_id), images
    assert env.image_id(KEPT) == env.old_id, images
    assert env.run(f"cat {PROBE}").strip() == "written before the docker update"
