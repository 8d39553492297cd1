"""QEMU system tests: which images to boot, how, and the artifacts they leave.

By default the suite builds (or takes from the cache) the Debian-based test
images that carry the layer's on-target files (edgecontainers.testimage) and
boots them three times:

  podman-production-grub   OVMF -> GRUB -> the layer's grub.cfg (SSH-driven)
  podman-dev-direct        direct kernel boot, serial console login
  docker-production-direct direct kernel boot, docker engine (SSH-driven)

With ``--image``/``--deploy-dir`` it boots a kas-built image instead (the
qemuboot.conf next to it says how).  Options (put ``tests/system`` on the
command line so pytest reads them):

  --image PATH        a .qemuboot.conf or disk image of a kas build
  --deploy-dir DIR    the kas deploy directory (tmp/deploy/images/MACHINE)
  --machine M         qemux86-64 (default)
  --engine E          podman or docker (default: both / from the image)
  --variant V         production or dev (default: both / from the image name)
  --boot B            grub, uboot or direct (default: per boot above / the image's bootloader)
  --ssh-key KEY       private key whose public half the production image trusts
                      (EDGECONTAINERS_SSH_AUTHORIZED_KEYS of the kas build)
  --layer DIR         build the test images from this copy of meta-edgecontainers
                      (the mutation run's mutants); what the tests expect still
                      comes from the checkout's layer
  --layer-tag NAME    the name of those images (default: custom)

Artifacts: console logs in build/test-results/console/ (one per boot and one
per test); JUnit XML where --junitxml says (scripts/run-tests: build/test-results).
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from edgecontainers.qemu.qemuboot import find_qemuboot
from edgecontainers.qemu.session import BootTarget, Session
from edgecontainers.qemu.vm import GuestPanicked
from edgecontainers.testimage.builder import Builder, ImageSpec, TestImage, check_host
from edgecontainers.testimage.layer import Layer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checks import Expected

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "build" / "test-results"
CONSOLE_DIR = RESULTS / "console"
BOOT_TIMEOUT = 900


@dataclass(frozen=True)
class BootPlan:
    engine: str
    variant: str
    boot: str

    @property
    def id(self) -> str:
        return f"{self.engine}-{self.variant}-{self.boot}"


DEFAULT_PLANS = (
    BootPlan("podman", "production", "grub"),
    BootPlan("podman", "dev", "direct"),
    BootPlan("docker", "production", "direct"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("edgecontainers", "edgecontainers QEMU system tests")
    g.addoption("--image", help="a kas-built image: .qemuboot.conf or disk image (default: the Debian test images)")
    g.addoption("--deploy-dir", type=Path, help="kas deploy directory to take the image from")
    g.addoption("--machine", default="qemux86-64", help="machine of the Debian test images (default: qemux86-64)")
    g.addoption("--engine", choices=("podman", "docker"), help="only this engine")
    g.addoption("--variant", choices=("production", "dev"), help="only this image variant")
    g.addoption("--boot", choices=("grub", "uboot", "direct"), help="only this boot path")
    g.addoption("--ssh-key", type=Path, help="SSH key the production image trusts (kas builds)")
    g.addoption("--layer", type=Path, help="build the test images from this copy of the layer (expectations: checkout)")
    g.addoption("--layer-tag", default="custom", help="name of the images built from --layer (default: custom)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "variant(name): runs only on boots of that image variant (production/dev)")
    config.addinivalue_line("markers", "engine(name): runs only on boots of that container engine")
    config.addinivalue_line("markers", "bootpath(name): runs only on boots through that boot path")


def _kas_mode(config: pytest.Config) -> bool:
    return bool(config.getoption("image") or config.getoption("deploy_dir"))


def planned_boots(config: pytest.Config) -> list[BootPlan]:
    engine, variant, boot = (config.getoption(o) for o in ("engine", "variant", "boot"))
    if _kas_mode(config):
        try:
            qb = find_qemuboot(config.getoption("image"), config.getoption("deploy_dir"))
        except Exception:  # the booted fixture reports the real error
            return [BootPlan(engine or "auto", variant or "production", boot or "grub")]
        link = qb.image_link_name or qb.path.name
        variant = variant or ("dev" if "-image-dev" in link else "production")
        default_boot = "grub" if qb.arch == "x86_64" else "uboot"
        return [BootPlan(engine or "auto", variant, boot or default_boot)]
    plans = [
        p
        for p in DEFAULT_PLANS
        if (engine in (None, p.engine)) and (variant in (None, p.variant)) and (boot in (None, p.boot))
    ]
    if not plans:  # an explicit combination that is not among the defaults
        plans = [BootPlan(engine or "podman", variant or "production", boot or "direct")]
    return plans


def _wanted(item_markers: dict[str, str], plan: BootPlan) -> bool:
    for name, attr in (("variant", "variant"), ("engine", "engine"), ("bootpath", "boot")):
        want = item_markers.get(name)
        if want and getattr(plan, attr) not in (want, "auto"):
            return False
    return True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "booted" not in metafunc.fixturenames:
        return
    markers = {
        m.name: m.args[0] for m in metafunc.definition.iter_markers() if m.name in ("variant", "engine", "bootpath")
    }
    plans = [p for p in planned_boots(metafunc.config) if _wanted(markers, p)]
    if not plans:
        skipped = pytest.param(None, marks=pytest.mark.skip(reason="no boot of this kind planned"))
        metafunc.parametrize("booted", [skipped], indirect=True, scope="session")
        return
    metafunc.parametrize("booted", plans, ids=[p.id for p in plans], indirect=True, scope="session")


def host_cannot(reason: str) -> NoReturn:
    """This host cannot run the test: a skip, except under scripts/run-tests, which
    sets EDGECONTAINERS_REQUIRE_ALL=1 (unless --allow-skip): there a stage that
    cannot run fails, saying why."""
    if os.environ.get("EDGECONTAINERS_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (scripts/run-tests --allow-skip lets these tests skip)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------- images
@pytest.fixture(scope="session")
def builder() -> Builder:
    missing = check_host()
    if missing:
        host_cannot("cannot build QEMU test images here: missing " + ", ".join(missing) + " (docs/testing.md)")
    return Builder()


@pytest.fixture(scope="session")
def build_image(builder: Builder):
    """build_image(ImageSpec) -> TestImage, cached (the same spec is built once)."""
    built: dict[ImageSpec, TestImage | BaseException] = {}

    def build(spec: ImageSpec) -> TestImage:
        if spec not in built:
            try:
                built[spec] = builder.build(spec)
            except Exception as exc:  # tried once per session; every user reports it
                built[spec] = exc
        result = built[spec]
        if isinstance(result, BaseException):
            raise result
        return result

    return build


UBOOT_MACHINE = "qemuarm64"


@pytest.fixture(scope="session")
def arm64_image(request: pytest.FixtureRequest) -> TestImage:
    """The qemuarm64 test image (U-Boot, boot.scr) of the U-Boot modules, built once per session."""
    if request.config.getoption("image") or request.config.getoption("deploy_dir"):
        pytest.skip("builds the arm64 Debian test image; not run against a kas build")
    missing = check_host(UBOOT_MACHINE)
    if missing:
        host_cannot(f"cannot build the {UBOOT_MACHINE} test image here: missing " + ", ".join(missing))
    return Builder().build(ImageSpec(machine=UBOOT_MACHINE, engine="podman", variant="production"))


def _kas_target(config: pytest.Config, plan: BootPlan) -> BootTarget:
    from edgecontainers.qemu.vm import needs

    qb = find_qemuboot(config.getoption("image"), config.getoption("deploy_dir"))
    missing = needs(
        ["qemu-img", "sfdisk", "ssh"] + (["qemu-system-x86_64"] if qb.arch == "x86_64" else ["qemu-system-aarch64"])
    )
    if missing:
        host_cannot("cannot boot the image here: missing " + ", ".join(missing))
    engine = None if plan.engine == "auto" else plan.engine
    return BootTarget.from_qemuboot(qb, ssh_key=config.getoption("ssh_key"), variant=plan.variant, engine=engine)


@dataclass
class Booted:
    """A running guest shared by the tests of one boot plan."""

    plan: BootPlan
    session: Session
    expected: Expected
    image: TestImage | None
    target: BootTarget

    def run(self, command: str, timeout: float = 120):
        return self.session.run(command, timeout=timeout)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:150]


@pytest.fixture(scope="session")
def booted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    plan: BootPlan = request.param
    config = request.config
    image = None
    if _kas_mode(config):
        target = _kas_target(config, plan)
        machine = target.machine_name or "qemux86-64"
    else:
        build_image = request.getfixturevalue("build_image")
        layer = config.getoption("layer")
        tag = config.getoption("layer_tag") if layer else ""
        spec = ImageSpec(machine=config.getoption("machine"), engine=plan.engine, variant=plan.variant,
                         layer=layer.resolve() if layer else None, tag=tag)  # fmt: skip
        image = build_image(spec)
        target = BootTarget.from_qemuboot(find_qemuboot(image.qemuboot))
        machine = image.spec.machine
    CONSOLE_DIR.mkdir(parents=True, exist_ok=True)
    earlier: list[str] = []  # what happened to a discarded first boot, reported by the first test
    for attempt in (1, 2):
        session = Session(target, boot=plan.boot, log_path=CONSOLE_DIR / f"boot-{plan.id}.log",
                          workdir=tmp_path_factory.mktemp(f"boot-{plan.id}"))  # fmt: skip
        session.events.extend(earlier)
        try:
            session.start()
            session.wait_ready(BOOT_TIMEOUT)
        except GuestPanicked:
            # a panic while waiting for the boot: the same fault as below when it was the emulator's
            if attempt == 2 or not session.tee.emulator_faults:
                session.poweroff(90)
                session.close()
                raise
        except BaseException:
            session.poweroff(90)
            session.close()
            raise
        else:
            if not session.tee.emulator_faults or attempt == 2:
                break
        # An emulator fault before the guest was ready (the kernel then panics and
        # reboots): these tests are about one clean first boot, so that boot is
        # discarded and the image booted again on a fresh disk, once.
        message = (f"{plan.id}: the guest kernel hit the emulator's int3 fault before it was ready "
                   f"({session.tee.emulator_faults[0].strip()}); booting again on a fresh disk")  # fmt: skip
        session.tee.note(message)
        earlier.append(message)
        session.poweroff(90)
        session.close()
    try:
        engine = target.engine or _detect_engine(session)
        expected = Expected(Layer(machine, engine, plan.variant == "dev"))
        yield Booted(plan, session, expected, image, target)
    finally:
        session.poweroff(90)
        session.close()


def _detect_engine(session: Session) -> str:
    return "podman" if session.run("command -v podman").ok else "docker"


# ---------------------------------------------------------------- per-test logs and failure output
@pytest.fixture(autouse=True)
def _per_test_console_log(request: pytest.FixtureRequest):
    if "booted" not in request.fixturenames:
        yield
        return
    booted = request.getfixturevalue("booted")
    path = CONSOLE_DIR / f"{_slug(request.node.nodeid)}.log"
    path.unlink(missing_ok=True)
    booted.session.tee.attach(path)
    request.node.user_properties.append(("console_log", str(path)))
    try:
        yield
    finally:
        booted.session.tee.detach()
        report_harness_events(request.node, booted.session)


def report_harness_events(node: pytest.Item, session: Session) -> None:
    """What the harness did to the guest during this test (and, for a session's
    first test, during its boot): a watchdog reset, a power cycle, a boot waited
    for after a panic, a discarded boot.  A test never passes silently through
    one: each goes into the JUnit XML as a property and is shown as a warning."""
    for text in session.take_events():
        node.user_properties.append(("harness_event", text))
        warnings.warn(pytest.PytestWarning(f"{node.name}: {text}"), stacklevel=1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]  # read by the OTA chain fixture
    if report.when == "call" and report.failed and "booted" in getattr(item, "fixturenames", ()):
        booted = item.funcargs.get("booted")  # type: ignore[attr-defined]
        if booted is not None:
            report.sections.append(("console (last 50 lines)", booted.session.tee.tail(50)))
            faults = booted.session.tee.emulator_faults
            if faults:
                text = "the guest kernel hit the TCG int3 fault in this session (docs/testing.md):\n"
                report.sections.append(("emulator fault", text + "\n".join(faults)))
    return report
