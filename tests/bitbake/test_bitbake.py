"""Offline BitBake checks against the real wrynose layers (marker ``bitbake``).

They run whenever the upstream layer checkouts are present (default
/var/cache/yocto-layers, see edgectl check setup) and skip, saying
why, when they are not.  The configurations are the CI subset (both engines, both variants,
every boot path); `edgectl check bitbake --all` runs the full
matrix.  BitBake's parse cache lives outside the checkout, so warm runs take
seconds per step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgecontainers import bbcheck
from edgecontainers.project import Project

pytestmark = [pytest.mark.bitbake, pytest.mark.slow]

UNAVAILABLE = bbcheck.availability()
if UNAVAILABLE and os.environ.get("EDGECONTAINERS_REQUIRE_ALL") != "1":
    pytestmark.append(pytest.mark.skip(reason=f"BitBake checks cannot run here: {UNAVAILABLE}"))


@pytest.fixture(autouse=True)
def _required() -> None:
    """scripts/run-tests: a stage that cannot run fails, saying why (a skip is not a pass)."""
    if UNAVAILABLE:
        pytest.fail(f"BitBake checks cannot run here: {UNAVAILABLE} (scripts/run-tests --allow-skip lets them skip)")

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = bbcheck.CI_SUBSET[0]  # qemux86-64, podman, production


@pytest.fixture(scope="module")
def checker() -> bbcheck.Checker:
    return bbcheck.Checker(Project(ROOT))


def _explain(result: bbcheck.CheckResult) -> str:
    lines = [result.summary()]
    for step in result.steps:
        if not step.ok:
            lines += [f"--- {step.name} (log: {step.log})", step.detail]
    lines += [f"env: {f}" for f in result.env_failures]
    return "\n".join(lines)


@pytest.mark.parametrize("config", bbcheck.CI_SUBSET, ids=lambda c: c.name)
def test_configuration_parses_resolves_and_has_the_promised_values(checker, config):
    result = checker.check(config)
    assert result.ok, _explain(result)
    # The graph holds the engine, RAUC and the bootloader of this machine.
    assert {"rauc", "edgecontainers-base", "edgecontainers-health"} <= result.build_list
    assert ("grub-efi" if config.machine == "qemux86-64" else "u-boot") in result.build_list


def _project_copy(tmp_path: Path) -> Path:
    """The checkout's tracked files (and uncommitted changes) in a scratch dir."""
    dest = tmp_path / "project"
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"], capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_a_dangling_runtime_dependency_fails_the_graph(checker, tmp_path):
    """Negative proof: break one recipe; parsing still passes, the graph must not."""
    copy = _project_copy(tmp_path)
    recipe = next((copy / "meta-edgecontainers/recipes-core/edgecontainers-base").glob("edgecontainers-base_*.bb"))
    recipe.write_text(recipe.read_text() + '\nRDEPENDS:${PN} += "edgecontainers-no-such-package"\n')
    broken = bbcheck.Checker(Project(copy), log=checker.log)
    try:
        result = broken.check(REFERENCE, env_checks=False)
    finally:
        # Put the real layer back into the shared work dir (re-parses one recipe).
        checker.prepare(REFERENCE)
    steps = {s.name: s for s in result.steps}
    assert steps["parse"].ok, _explain(result)
    assert not steps["graph"].ok
    assert "edgecontainers-no-such-package" in steps["graph"].detail


def test_an_unsupported_engine_stops_parsing_with_one_clear_message(checker):
    result = checker.check(REFERENCE, graph=False, extra_conf='EDGECONTAINERS_ENGINE = "lxc"\n')
    try:
        parse = result.steps[0]
        assert not parse.ok
        assert 'EDGECONTAINERS_ENGINE = "lxc" is not supported; valid values: podman, docker' in parse.detail
    finally:
        checker.prepare(REFERENCE)
