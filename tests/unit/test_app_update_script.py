"""Unit tests of edgecontainers-app-update, the on-target script (POSIX sh) that
updates a container app and rolls it back to the previous image when the new
one does not come up healthy.

The script runs for real, under /bin/sh (and, for a few key paths, busybox sh and
bash --posix too), against fake ``podman``, ``docker`` and ``systemctl``
(tests/unit/fakes/app_update/engine.py) that keep a model of the images,
containers and units in a state file and record every call, and a fake
``logger`` that records its arguments.  PATH holds only the fakes and the few
real tools the script uses (sed, sort, head, awk, ls), so a docker or podman
installed on the machine is never reached.  (busybox sh runs its own applets
before PATH: there, logger, sed, awk... are busybox's, as on a busybox image.)

The script runs from a copy in tmp_path with two hard-coded paths rewritten
(the script itself is never changed): COMPOSE_DIR (the docker compose apps),
and /run/edgecontainers-app-update.APP (the docker path's list of the images
to roll back to), which would otherwise be written into the real /run.
"""

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
from fakes.app_update.engine import DOCKER_HEALTH, Store
from fakes.helpers import REPO

SCRIPT = REPO / "meta-edgecontainers/recipes-containers/edgecontainers-app-update/files/edgecontainers-app-update"
ENGINE_DIR = Path(__file__).resolve().parent / "fakes" / "app_update"
TOOLS = ("sed", "sort", "head", "awk", "ls")
PROG = "edgecontainers-app-update"
USAGE = f"usage: {PROG} [--archive FILE] [--timeout SECONDS] APP | --all\n"
RUN_FILE = "/run/edgecontainers-app-update."

if shutil.which("sh") is None or not os.path.exists("/bin/sh"):
    pytest.skip("needs a POSIX sh (/bin/sh) to run the script", allow_module_level=True)
if missing := [tool for tool in TOOLS if shutil.which(tool) is None]:
    pytest.skip(f"needs {', '.join(missing)} to run the script", allow_module_level=True)


def _shell(label: str, shebang: str | None, exe: str | None) -> object:
    return pytest.param(
        shebang, id=label, marks=pytest.mark.skipif(exe is not None and not shutil.which(exe), reason=f"no {exe}")
    )


# The script's own #!/bin/sh, plus the shells an image may have as /bin/sh.
SHELLS = [
    _shell("sh", None, None),
    _shell("busybox", f"{shutil.which('busybox')} sh", "busybox"),
    _shell("bash", f"{shutil.which('bash')} --posix", "bash"),
]


def iid(tag: str) -> str:
    """A podman image id (64 hex digits)."""
    return hashlib.sha256(tag.encode()).hexdigest()


def did(tag: str) -> str:
    """A docker image id."""
    return "sha256:" + iid(tag)


# podman images and names
WEB = "localhost/web:latest"
API = "quay.io/acme/api:stable"
BASE, V1, V2, BROKEN = iid("web-base"), iid("web-1"), iid("web-2"), iid("web-broken")
API1, API_BROKEN = iid("api-1"), iid("api-broken")
# docker images and names
SHOP_WEB, PG = "acme/shop-web:1.0", "postgres:16"
D1, D2, D_BROKEN, D_PG = did("shop-1"), did("shop-2"), did("shop-broken"), did("postgres-16")


class Rig:
    """The script's copy, the fakes on PATH, their state and their record of calls."""

    def __init__(self, tmp_path: Path, *, shebang: str | None = None, engines=("podman", "docker")) -> None:
        self.tmp = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.compose_dir = tmp_path / "compose"
        self.run_dir = tmp_path / "run"
        self.run_dir.mkdir()
        self.state_file = tmp_path / "state.marshal"  # the fakes' formats: see engine.py
        self.calls_file = tmp_path / "calls.marshal"
        self.logger_file = tmp_path / "logger.log"
        self.state: dict = {
            "podman": {"images": [], "containers": [], "registry": {}, "units": {}},
            "docker": {"images": [], "containers": [], "registry": {}},
        }
        for tool in TOOLS:
            (self.bin / tool).symlink_to(shutil.which(tool))
        for prog in (*engines, "systemctl"):
            launcher = self.bin / prog
            launcher.write_text(
                f"#!{sys.executable} -IS\nimport sys\nsys.path.insert(0, {str(ENGINE_DIR)!r})\n"
                f"from engine import main\nmain({prog!r})\n"
            )
            launcher.chmod(0o755)
        logger = self.bin / "logger"  # one line per call, the arguments separated by \x1f
        logger.write_text(f"#!/bin/sh\nprintf '%s\\037' \"$@\" >> '{self.logger_file}'\necho >> '{self.logger_file}'\n")
        logger.chmod(0o755)

        text = SCRIPT.read_text()
        assert text.count("\nCOMPOSE_DIR=/usr/share/edgecontainers/compose\n") == 1
        assert text.count(RUN_FILE) == 3
        text = text.replace("\nCOMPOSE_DIR=/usr/share/edgecontainers/compose\n", f"\nCOMPOSE_DIR={self.compose_dir}\n")
        text = text.replace(RUN_FILE, f"{self.run_dir}/edgecontainers-app-update.")
        if shebang:
            assert text.startswith("#!/bin/sh\n")
            text = f"#!{shebang}\n" + text.removeprefix("#!/bin/sh\n")
        self.script = tmp_path / PROG
        self.script.write_text(text)
        self.script.chmod(0o755)

    # ------------------------------------------------------------ running
    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        self.state_file.write_bytes(marshal.dumps(self.state))
        proc = subprocess.run(
            [str(self.script), *map(str, args)],
            env={
                "PATH": str(self.bin),
                "APP_UPDATE_STATE": str(self.state_file),
                "APP_UPDATE_CALLS": str(self.calls_file),
                "HOME": str(self.tmp),
                "LC_ALL": "C",
            },
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.state = marshal.loads(self.state_file.read_bytes())
        return proc

    def records(self) -> list[dict]:
        found: list[dict] = []
        if self.calls_file.exists():
            with open(self.calls_file, "rb") as f:
                while f.peek(1):
                    found.append(marshal.load(f))
        return found

    def calls(self, prog: str) -> list[list[str]]:
        return [r["argv"] for r in self.records() if r["prog"] == prog]

    def logged(self) -> list[str]:
        """The messages given to logger (checking its other arguments)."""
        if not self.logger_file.exists():
            return []
        messages = []
        for line in self.logger_file.read_text().splitlines():
            args = line.split("\x1f")[:-1]
            assert args[:3] == ["-t", PROG, "--"] and len(args) == 4, args
            messages.append(args[3])
        return messages

    # ------------------------------------------------------------ podman model
    def podman_image(self, image_id: str, *names: str, readonly: bool = False, healthy: bool | None = True) -> None:
        self.state["podman"]["images"].append(
            {"id": image_id, "names": list(names), "readonly": readonly, "healthy": healthy}
        )

    def podman_app(
        self, app: str, image_id: str, name: str = WEB, *, policy: str | None = "local", notify_healthy: bool = True
    ) -> None:
        """A Quadlet app: unit APP.service and its running, healthy container systemd-APP."""
        labels = {"PODMAN_SYSTEMD_UNIT": f"{app}.service"}
        if policy is not None:
            labels["io.containers.autoupdate"] = policy
        self.podman_container(f"systemd-{app}", image_id, name, labels)
        self.state["podman"]["units"][f"{app}.service"] = {"notify_healthy": notify_healthy}

    def podman_container(self, ctr: str, image_id: str, name: str, labels: dict[str, str]) -> None:
        self.state["podman"]["containers"].append(
            {
                "name": ctr,
                "image": image_id,
                "image_name": name,
                "labels": labels,
                "status": "running",
                "health": "healthy",
            }
        )

    def podman_points_to(self, name: str) -> str | None:
        img = Store(self.state["podman"]["images"], "").resolve(name)
        return img and img["id"]

    def podman_ids(self) -> set[str]:
        return {img["id"] for img in self.state["podman"]["images"]}

    def container(self, ctr: str) -> tuple[str, str, str]:
        """(image id, status, health) of a podman container."""
        c = next(c for c in self.state["podman"]["containers"] if c["name"] == ctr)
        return c["image"], c["status"], c["health"]

    # ------------------------------------------------------------ docker model
    def docker_image(self, image_id: str, *names: str, healthy: bool | None = True) -> None:
        self.state["docker"]["images"].append({"id": image_id, "names": list(names), "healthy": healthy})

    def compose_app(self, app: str, services: dict[str, str]) -> None:
        """A compose app whose services run (healthy) on the images their names point to now."""
        (self.compose_dir / app).mkdir(parents=True)
        yaml = "services:\n" + "".join(f"  {svc}:\n    image: {image}\n" for svc, image in services.items())
        (self.compose_dir / app / "compose.yaml").write_text(yaml)
        store = Store(self.state["docker"]["images"], "sha256:")
        for svc, image in services.items():
            img = store.resolve(image)
            assert img, image
            self.state["docker"]["containers"].append(
                {
                    "id": f"{app}-{svc}-1",
                    "project": app,
                    "service": svc,
                    "image": img["id"],
                    "status": "running",
                    "health": "none" if img["healthy"] is None else "healthy",
                }
            )

    def docker_points_to(self, name: str) -> str | None:
        img = Store(self.state["docker"]["images"], "sha256:").resolve(name)
        return img and img["id"]

    def docker_container(self, cid: str) -> tuple[str, str, str]:
        c = next(c for c in self.state["docker"]["containers"] if c["id"] == cid)
        return c["image"], c["status"], c["health"]

    def compose_calls(self, app: str) -> list[list[str]]:
        """The docker compose subcommands run for APP, with their options."""
        prefix = ["compose", "--project-directory", str(self.compose_dir / app), "--project-name", app]
        calls = [c for c in self.calls("docker") if c[0] == "compose"]
        assert all(c[: len(prefix)] == prefix for c in calls), calls
        return [c[len(prefix) :] for c in calls]

    # ------------------------------------------------------------ archives
    def archive(self, filename: str, *images: tuple[str, list[str], bool | None]) -> Path:
        """An image archive (for the fakes: a JSON list of the images it holds)."""
        path = self.tmp / filename
        path.write_text(json.dumps([{"id": i, "names": n, "healthy": h} for i, n, h in images]))
        return path


def messages(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The script's log lines on stdout, without the program name (the engines' own
    output, e.g. load's "Loaded image: NAME", is left out)."""
    prefix = f"{PROG}: "
    return [line.removeprefix(prefix) for line in proc.stdout.splitlines() if line.startswith(prefix)]


def exits(proc: subprocess.CompletedProcess[str], code: int) -> None:
    assert proc.returncode == code, f"exit {proc.returncode}, want {code}\n{proc.stdout}{proc.stderr}"


def restarts(rig: Rig) -> list[list[str]]:
    return [c for c in rig.calls("systemctl") if c[0] == "restart"]


def short(image_id: str) -> str:
    return image_id[:12]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


# ---------------------------------------------------------------- podman
def test_podman_good_update_from_an_archive(rig: Rig):
    rig.podman_image(V1, WEB, readonly=True)
    rig.podman_app("web", V1)
    stick = rig.archive("app-v2.tar", (V2, [WEB], True))

    proc = rig.run("--archive", stick, "web")

    exits(proc, 0)
    assert messages(proc) == [f"loading {stick}", f"restarting web on {short(V2)} (was {short(V1)})", "web updated"]
    assert rig.logged() == messages(proc)
    assert proc.stderr == ""
    assert rig.podman_points_to(WEB) == V2
    assert rig.container("systemd-web") == (V2, "running", "healthy")
    podman = rig.calls("podman")
    assert ["ps", "--all", "--filter", "label=PODMAN_SYSTEMD_UNIT=web.service", "--format", "{{.Names}}"] in podman
    assert ["load", "--quiet", "--input", str(stick)] in podman
    assert not [c for c in podman if c[0] in ("pull", "tag", "untag", "rmi")]
    assert rig.calls("systemctl") == [["cat", "web.service"], ["restart", "web.service"]]
    assert rig.calls("docker") == []


@pytest.mark.parametrize("shebang", SHELLS)
def test_podman_broken_update_with_the_old_image_read_only_untags_the_new_one(tmp_path: Path, shebang: str | None):
    """The preloaded image is in the read-only store: it cannot be tagged, so the
    name is taken off the new image and falls back to the read-only one."""
    rig = Rig(tmp_path, shebang=shebang)
    rig.podman_image(V1, WEB, readonly=True)
    rig.podman_app("web", V1)
    stick = rig.archive("app-broken.tar", (BROKEN, [WEB], False))

    proc = rig.run("--archive", stick, "web")

    exits(proc, 1)
    assert messages(proc) == [
        f"loading {stick}",
        f"restarting web on {short(BROKEN)} (was {short(V1)})",
        "web: the new image is not healthy; rolling back",
        "web rolled back to the previous image",
    ]
    podman = rig.calls("podman")
    assert ["images", "--no-trunc", "--format", "{{.ID}} {{.ReadOnly}}"] in podman
    assert ["untag", BROKEN, WEB] in podman
    assert not [c for c in podman if c[0] == "tag"]
    assert ["rmi", BROKEN] in podman
    assert restarts(rig) == [["restart", "web.service"]] * 2
    assert rig.podman_points_to(WEB) == V1
    assert rig.container("systemd-web") == (V1, "running", "healthy")
    assert rig.podman_ids() == {V1}, "the broken image is removed"


def test_podman_broken_update_with_the_old_image_writable_tags_it_back(rig: Rig):
    """A previous update put V1 in the writable store; the read-only store still
    has the first image under the same name, so untagging would be wrong here."""
    rig.podman_image(BASE, WEB, readonly=True)
    rig.podman_image(V1, WEB)
    rig.podman_app("web", V1)
    stick = rig.archive("app-broken.tar", (BROKEN, [WEB], False))

    proc = rig.run("--archive", stick, "web")

    exits(proc, 1)
    assert "web rolled back to the previous image" in messages(proc)
    podman = rig.calls("podman")
    assert ["tag", V1, WEB] in podman
    assert not [c for c in podman if c[0] == "untag"]
    assert rig.podman_points_to(WEB) == V1
    assert rig.container("systemd-web") == (V1, "running", "healthy")
    assert rig.podman_ids() == {BASE, V1}


def test_podman_container_unhealthy_after_a_successful_restart_is_rolled_back(rig: Rig):
    """Without Notify=healthy the restart succeeds; the script's own health check catches it."""
    rig.podman_image(V1, WEB, readonly=True)
    rig.podman_app("web", V1, notify_healthy=False)
    stick = rig.archive("app-broken.tar", (BROKEN, [WEB], False))

    proc = rig.run("--archive", stick, "web")

    exits(proc, 1)
    health = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
    assert ["inspect", "--format", health, "systemd-web"] in rig.calls("podman")
    assert ["untag", BROKEN, WEB] in rig.calls("podman")
    assert rig.container("systemd-web") == (V1, "running", "healthy")


def test_podman_image_without_health_check_counts_as_healthy(rig: Rig):
    """The fake answers "running none" (no State.Health, as podman 5) for a container without health check."""
    rig.podman_image(V1, WEB, readonly=True, healthy=None)
    rig.podman_app("web", V1, notify_healthy=False)
    stick = rig.archive("app-v2.tar", (V2, [WEB], None))

    proc = rig.run("--archive", stick, "web")

    exits(proc, 0)
    assert rig.container("systemd-web") == (V2, "running", "")


def test_podman_rollback_that_is_not_healthy_either_exits_3(rig: Rig):
    rig.podman_image(V1, WEB, readonly=True, healthy=False)  # ran fine until now, fails on a restart
    rig.podman_app("web", V1)
    stick = rig.archive("app-broken.tar", (BROKEN, [WEB], False))

    proc = rig.run("--archive", stick, "web")

    exits(proc, 3)
    assert messages(proc)[-2:] == [
        "web: the new image is not healthy; rolling back",
        "web: the rollback is not healthy either",
    ]
    assert ["untag", BROKEN, WEB] in rig.calls("podman")
    assert restarts(rig) == [["restart", "web.service"]] * 2
    assert not [c for c in rig.calls("podman") if c[0] == "rmi"]
    assert rig.podman_ids() == {V1, BROKEN}


def test_podman_archive_with_the_same_image_is_up_to_date(rig: Rig):
    rig.podman_image(V1, WEB, readonly=True)
    rig.podman_app("web", V1)
    stick = rig.archive("app-v1.tar", (V1, [WEB], True))

    proc = rig.run("--archive", stick, "web")

    exits(proc, 0)
    assert messages(proc) == [f"loading {stick}", "web is up to date"]
    assert restarts(rig) == []
    assert rig.container("systemd-web") == (V1, "running", "healthy")


def test_podman_local_policy_without_archive_is_up_to_date(rig: Rig):
    rig.podman_image(V1, WEB, readonly=True)
    rig.podman_app("web", V1, policy="local")

    proc = rig.run("web")

    exits(proc, 0)
    assert messages(proc) == ["web is up to date"]
    assert not [c for c in rig.calls("podman") if c[0] in ("load", "pull")]
    assert restarts(rig) == []


def test_podman_registry_policy_pulls(rig: Rig):
    rig.podman_image(API1, API, readonly=True)
    rig.podman_app("api", API1, API, policy="registry")
    rig.state["podman"]["registry"][API] = {"id": V2, "healthy": True}

    proc = rig.run("api")

    exits(proc, 0)
    assert messages(proc) == [f"pulling {API}", f"restarting api on {short(V2)} (was {short(API1)})", "api updated"]
    assert ["pull", "--quiet", API] in rig.calls("podman")
    assert not [c for c in rig.calls("podman") if c[0] == "load"]
    assert rig.container("systemd-api") == (V2, "running", "healthy")


def test_podman_failed_pull_exits_1_without_a_restart(rig: Rig):
    rig.podman_image(API1, API, readonly=True)
    rig.podman_app("api", API1, API, policy="registry")

    proc = rig.run("api")

    exits(proc, 1)
    assert messages(proc) == [f"pulling {API}", f"api: pull of {API} failed"]
    assert restarts(rig) == []
    assert rig.container("systemd-api") == (API1, "running", "healthy")


def test_podman_archive_that_cannot_be_loaded_exits_1(rig: Rig):
    rig.podman_image(V1, WEB, readonly=True)
    rig.podman_app("web", V1)
    stick = rig.tmp / "garbage.tar"
    stick.write_text("not an image archive")

    proc = rig.run("--archive", stick, "web")

    exits(proc, 1)
    assert messages(proc) == [f"loading {stick}", f"cannot load {stick}"]
    assert restarts(rig) == []


def test_podman_no_policy_and_no_archive_exits_2(rig: Rig):
    rig.podman_image(V1, WEB, readonly=True)
    rig.podman_app("web", V1, policy=None)

    proc = rig.run("web")

    exits(proc, 2)
    assert messages(proc) == ["web: no auto-update policy (set AutoUpdate= in its .container file)"]
    assert not [c for c in rig.calls("podman") if c[0] in ("load", "pull", "tag", "untag")]
    assert restarts(rig) == []


def test_podman_no_policy_with_an_archive_updates(rig: Rig):
    rig.podman_image(V1, WEB, readonly=True)
    rig.podman_app("web", V1, policy=None)
    stick = rig.archive("app-v2.tar", (V2, [WEB], True))

    proc = rig.run("--archive", stick, "web")

    exits(proc, 0)
    assert rig.container("systemd-web") == (V2, "running", "healthy")


def test_podman_unknown_unit_exits_2(rig: Rig):
    proc = rig.run("nope")

    exits(proc, 2)
    assert proc.stderr == f"{PROG}: no unit nope.service\n"
    assert proc.stdout == ""
    assert rig.calls("systemctl") == [["cat", "nope.service"]]
    assert rig.calls("podman") == []


def test_podman_unit_without_container_exits_2(rig: Rig):
    rig.state["podman"]["units"]["web.service"] = {}

    proc = rig.run("web")

    exits(proc, 2)
    assert messages(proc) == ["web: no container of web.service (is it running?)"]
    assert restarts(rig) == []


# ---------------------------------------------------------------- usage
@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--archive"],
        ["--timeout"],
        ["--all", "web"],
        ["--all", "--archive", "app.tar"],
        ["--bogus", "web"],
        ["web", "api"],
    ],
    ids=[
        "no-args",
        "archive-without-value",
        "timeout-without-value",
        "all-with-app",
        "all-with-archive",
        "bogus",
        "two-apps",
    ],
)
def test_usage_errors_exit_2(rig: Rig, args: list[str]):
    proc = rig.run(*args)

    exits(proc, 2)
    assert proc.stderr == USAGE
    assert proc.stdout == ""
    assert rig.records() == []


def test_unreadable_archive_exits_2(rig: Rig):
    proc = rig.run("--archive", rig.tmp / "missing.tar", "web")

    exits(proc, 2)
    assert proc.stderr == f"{PROG}: cannot read {rig.tmp / 'missing.tar'}\n"
    assert rig.records() == []


def test_help(rig: Rig):
    proc = rig.run("--help")

    exits(proc, 0)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{PROG}: update a container app, and roll it back when the"
    assert f"  {PROG} --all" in lines
    assert "be loaded or pulled); 2: usage error or the app is unknown; 3: rollback" in lines
    assert not [line for line in lines if line.startswith("#")]


def test_help_is_only_the_header_comment(rig: Rig):
    proc = rig.run("--help")

    assert proc.stdout.splitlines()[-1] == "failed too."


# ---------------------------------------------------------------- docker
def shop(rig: Rig) -> None:
    """Compose app "shop": web (with a health check) and db (none)."""
    rig.docker_image(D1, SHOP_WEB)
    rig.docker_image(D_PG, PG, healthy=None)
    rig.compose_app("shop", {"web": SHOP_WEB, "db": PG})


def test_docker_good_update_from_an_archive(rig: Rig):
    shop(rig)
    stick = rig.archive("shop-v2.tar", (D2, [SHOP_WEB], True))

    proc = rig.run("--timeout", "42", "--archive", stick, "shop")

    exits(proc, 0)
    assert messages(proc) == [f"loading {stick}", "recreating shop on the new image(s)", "shop updated"]
    assert rig.logged() == messages(proc)
    docker = rig.calls("docker")
    assert ["tag", D1, "acme/shop-web:edgecontainers-rollback"] in docker
    assert ["tag", D_PG, "postgres:edgecontainers-rollback"] in docker
    assert ["load", "--quiet", "--input", str(stick)] in docker
    assert rig.compose_calls("shop") == [
        ["config", "--images"],
        ["up", "--detach", "--wait", "--wait-timeout", "42", "--pull", "never"],
        ["ps", "--all", "--quiet"],
    ]
    assert (rig.run_dir / "edgecontainers-app-update.shop").read_text() == f"{SHOP_WEB} {D1}\n{PG} {D_PG}\n"
    assert rig.docker_points_to(SHOP_WEB) == D2
    assert rig.docker_points_to("acme/shop-web:edgecontainers-rollback") == D1
    assert rig.docker_container("shop-web-1") == (D2, "running", "healthy")
    assert rig.docker_container("shop-db-1") == (D_PG, "running", "none")
    assert rig.calls("podman") == [] and rig.calls("systemctl") == []


@pytest.mark.parametrize("shebang", SHELLS)
def test_docker_broken_update_is_rolled_back(tmp_path: Path, shebang: str | None):
    rig = Rig(tmp_path, shebang=shebang)
    shop(rig)
    rig.state["docker"]["registry"] = {SHOP_WEB: {"id": D_BROKEN, "healthy": False}, PG: {"id": D_PG, "healthy": None}}

    proc = rig.run("shop")

    exits(proc, 1)
    assert messages(proc) == [
        "recreating shop on the new image(s)",
        "shop: the new image is not healthy; rolling back",
        "shop rolled back to the previous image",
    ]
    up = ["up", "--detach", "--wait", "--wait-timeout", "180", "--pull", "never"]
    assert rig.compose_calls("shop") == [
        ["config", "--images"],
        ["pull", "--quiet"],
        up,
        up,
        ["ps", "--all", "--quiet"],
    ]
    docker = rig.calls("docker")
    assert ["tag", D1, SHOP_WEB] in docker
    assert ["tag", D_PG, PG] in docker
    assert rig.docker_points_to(SHOP_WEB) == D1
    assert rig.docker_container("shop-web-1") == (D1, "running", "healthy")
    assert rig.docker_container("shop-db-1") == (D_PG, "running", "none")


def test_docker_container_unhealthy_after_the_wait_is_rolled_back(rig: Rig):
    """`compose up --wait` succeeded, but the script's own look at every container finds one unhealthy."""
    shop(rig)
    rig.state["docker"]["registry"] = {
        SHOP_WEB: {"id": D_BROKEN, "healthy": False, "wait_ok": True},
        PG: {"id": D_PG, "healthy": None},
    }

    proc = rig.run("shop")

    exits(proc, 1)
    assert "shop rolled back to the previous image" in messages(proc)
    assert ["inspect", "--format", DOCKER_HEALTH, "shop-web-1"] in rig.calls("docker")
    assert rig.docker_container("shop-web-1") == (D1, "running", "healthy")


def test_docker_up_to_date(rig: Rig):
    shop(rig)
    rig.state["docker"]["registry"] = {SHOP_WEB: {"id": D1}, PG: {"id": D_PG, "healthy": None}}

    proc = rig.run("shop")

    exits(proc, 0)
    assert messages(proc) == ["shop is up to date"]
    assert rig.compose_calls("shop") == [["config", "--images"], ["pull", "--quiet"]]


def test_docker_rollback_that_is_not_healthy_either_exits_3(rig: Rig):
    rig.docker_image(D1, SHOP_WEB, healthy=False)  # ran fine until now, fails on a recreate
    rig.compose_app("shop", {"web": SHOP_WEB})
    stick = rig.archive("shop-broken.tar", (D_BROKEN, [SHOP_WEB], False))

    proc = rig.run("--archive", stick, "shop")

    exits(proc, 3)
    assert messages(proc)[-1] == "shop: the rollback is not healthy either"
    assert ["tag", D1, SHOP_WEB] in rig.calls("docker")
    assert rig.docker_points_to(SHOP_WEB) == D1


def test_docker_failed_pull_exits_1(rig: Rig):
    shop(rig)

    proc = rig.run("shop")

    exits(proc, 1)
    assert messages(proc) == ["shop: pull failed"]
    assert [c for c in rig.compose_calls("shop") if c[0] == "up"] == []


def test_docker_app_without_compose_file_exits_2(rig: Rig):
    (rig.compose_dir / "shop").mkdir(parents=True)

    proc = rig.run("shop")

    exits(proc, 2)
    assert proc.stderr == f"{PROG}: no compose app shop\n"
    assert rig.records() == []


def test_docker_rollback_tag_of_an_untagged_image_from_a_registry_with_a_port(rig: Rig):
    rig.docker_image(D1, "localhost:5000/shop-web")
    rig.compose_app("shop", {"web": "localhost:5000/shop-web"})
    stick = rig.archive("shop-v2.tar", (D2, ["localhost:5000/shop-web"], True))

    rig.run("--archive", stick, "shop")

    assert ["tag", D1, "localhost:5000/shop-web:edgecontainers-rollback"] in rig.calls("docker")


# ---------------------------------------------------------------- --all
def invocations(rig: Rig) -> list[list[str]]:
    """The script's arguments in each run of it for one app (seen from its `systemctl cat`
    or `docker compose config`, the first engine call of an app's update)."""
    found = []
    for r in rig.records():
        if r["argv"][:1] == ["cat"] or r["argv"][-2:] == ["config", "--images"]:
            parent = r["parent"]
            assert str(rig.script) in parent, parent
            found.append(parent[parent.index(str(rig.script)) + 1 :])
    return found


@pytest.mark.parametrize("shebang", SHELLS)
def test_all_runs_every_podman_app_and_exits_with_the_worst_code(tmp_path: Path, shebang: str | None):
    rig = Rig(tmp_path, shebang=shebang, engines=("podman",))  # no docker
    rig.podman_image(V1, WEB, readonly=True)
    rig.podman_app("web", V1, policy="local")  # up to date: 0
    rig.podman_image(API1, API, readonly=True)
    rig.podman_app("api", API1, API, policy="registry")  # broken, rolled back: 1
    rig.state["podman"]["registry"][API] = {"id": API_BROKEN, "healthy": False}
    rig.podman_app("db", V1, policy=None)  # no AutoUpdate=: not an app to update
    rig.podman_container("by-hand", V1, WEB, {"io.containers.autoupdate": "local"})  # no unit

    proc = rig.run("--all")

    exits(proc, 1)
    out = messages(proc)
    assert "api rolled back to the previous image" in out
    assert "web is up to date" in out
    assert invocations(rig) == [["--timeout", "180", "api"], ["--timeout", "180", "web"]]
    top = [r for r in rig.records() if r["argv"][:1] == ["ps"] and r["parent"][-1] == "--all"]
    assert [r["argv"] for r in top] == [
        [
            "ps",
            "--all",
            "--filter",
            "label=io.containers.autoupdate",
            "--format",
            '{{index .Labels "PODMAN_SYSTEMD_UNIT"}}',
        ]
    ]
    assert ["untag", API_BROKEN, API] in rig.calls("podman")
    assert rig.container("systemd-api") == (API1, "running", "healthy")
    assert rig.container("systemd-web") == (V1, "running", "healthy")


def test_all_includes_compose_apps_and_passes_the_timeout(rig: Rig):
    rig.podman_image(API1, API, readonly=True, healthy=False)
    rig.podman_app("api", API1, API, policy="registry")  # broken, rollback broken too: 3
    rig.state["podman"]["registry"][API] = {"id": API_BROKEN, "healthy": False}
    shop(rig)  # good update: 0
    rig.state["docker"]["registry"] = {SHOP_WEB: {"id": D2, "healthy": True}, PG: {"id": D_PG, "healthy": None}}

    proc = rig.run("--all", "--timeout", "30")

    exits(proc, 3)  # the worst, not the last
    assert invocations(rig) == [["--timeout", "30", "api"], ["--timeout", "30", "shop"]]
    assert "shop updated" in messages(proc)
    assert ["up", "--detach", "--wait", "--wait-timeout", "30", "--pull", "never"] in rig.compose_calls("shop")
    assert rig.docker_container("shop-web-1") == (D2, "running", "healthy")


def test_all_without_apps_exits_0(rig: Rig):
    proc = rig.run("--all")

    exits(proc, 0)
    assert proc.stdout == proc.stderr == ""
    assert [r["argv"][0] for r in rig.records()] == ["ps"]


def test_all_without_engines_exits_0(tmp_path: Path):
    rig = Rig(tmp_path, engines=())

    proc = rig.run("--all")

    exits(proc, 0)
    assert rig.records() == []
