"""Static checks of the layer and the kas files: linters, schemas, conventions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "meta-edgecontainers"
KAS = ROOT / "kas"
SCHEMA_LINE = "# yaml-language-server: $schema=https://raw.githubusercontent.com/siemens/kas/master/kas/schema-kas.json"

RECIPE_SUFFIXES = (".bb", ".bbappend", ".bbclass", ".inc")


def layer_metadata() -> list[Path]:
    return sorted(p for p in LAYER.rglob("*") if p.suffix in RECIPE_SUFFIXES and "conf" not in p.parts)


def kas_files() -> list[Path]:
    return sorted(KAS.rglob("*.yml"))


def test_oelint_adv_reports_nothing():
    """oelint-adv with the committed .oelint.cfg: zero findings (suppressions carry reasons)."""
    oelint = Path(sys.executable).parent / "oelint-adv"
    if not oelint.exists():
        pytest.fail("oelint-adv is not installed in this venv (pip install -e '.[test]')")
    files = [str(p.relative_to(ROOT)) for p in layer_metadata()]
    proc = subprocess.run([str(oelint), "--relpaths", "--quiet", *files], cwd=ROOT, capture_output=True, text=True)
    findings = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and not findings, findings


def test_every_oelint_suppression_has_a_reason():
    for path in layer_metadata():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "nooelint:" in line:
                assert re.search(r"nooelint: [\w.,-]+ - \S", line), f"{path}:{n}: suppression without a reason"
    cfg = (ROOT / ".oelint.cfg").read_text()
    suppressed = re.findall(r"^\s+(oelint\.[\w.]+)\s*$", cfg, re.M)
    for rule in suppressed:
        assert re.search(rf"^#\s+{re.escape(rule)}\s+\S", cfg, re.M), f".oelint.cfg: {rule} suppressed without a reason"


@pytest.fixture(scope="module")
def kas_schema() -> dict:
    import kas

    return json.loads((Path(kas.__file__).parent / "schema-kas.json").read_text())


@pytest.mark.parametrize("path", kas_files(), ids=lambda p: str(p.relative_to(KAS)))
def test_kas_file_validates_against_the_schema_kas_ships(path, kas_schema):
    import jsonschema

    text = path.read_text()
    assert text.splitlines()[0] == SCHEMA_LINE, f"{path.name} must start with the kas schema comment line"
    jsonschema.validate(yaml.safe_load(text), kas_schema)


def test_every_upstream_repo_is_pinned_by_a_lock_file():
    for path in kas_files():
        if path.name.endswith(".lock.yml"):
            continue
        doc = yaml.safe_load(path.read_text())
        repos = {name: spec for name, spec in (doc.get("repos") or {}).items() if spec and spec.get("url")}
        if not repos:
            continue
        lock = path.with_name(path.stem + ".lock.yml")
        assert lock.exists(), f"{path.name} names upstream repos but has no {lock.name}"
        locked = yaml.safe_load(lock.read_text())["overrides"]["repos"]
        for name, spec in repos.items():
            assert spec.get("branch"), f"{path.name}: {name} has no branch"
            assert re.fullmatch(r"[0-9a-f]{40}", locked.get(name, {}).get("commit", "")), (
                f"{name} not pinned in {lock.name}"
            )


def test_kas_uses_the_split_repositories_not_poky():
    urls = [
        s.get("url", "") for p in kas_files() for s in (yaml.safe_load(p.read_text()).get("repos") or {}).values() if s
    ]
    assert not [u for u in urls if u.rstrip("/").endswith("/poky") or u.endswith("poky.git")]
    assert any(u.endswith("/bitbake") for u in urls) and any(u.endswith("/openembedded-core") for u in urls)


def test_layer_conf_declares_only_the_checked_release_and_real_dependencies():
    conf = (LAYER / "conf/layer.conf").read_text()
    assert re.search(r'^LAYERSERIES_COMPAT_edgecontainers = "wrynose"$', conf, re.M)
    deps = re.search(r'^LAYERDEPENDS_edgecontainers = "([^"]*)"', conf, re.M).group(1).split()
    assert deps == ["core", "virtualization-layer", "rauc"]
    assert not (LAYER / "conf/machine").exists(), "a distro layer must not carry machine configurations"


def test_bbappends_only_act_in_the_edgecontainers_distro():
    """Adding the layer to someone else's build must change nothing."""
    for path in LAYER.rglob("*.bbappend"):
        logical = re.sub(r"\\\n", " ", path.read_text())  # join continued lines
        for n, line in enumerate(logical.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            gated = ":edgecontainers" in stripped.split("=")[0] or "d.getVar('DISTRO') == 'edgecontainers'" in stripped
            assert gated, f"{path.relative_to(ROOT)}:{n}: not gated on the edgecontainers distro: {stripped}"


def test_no_obsolete_syntax_debug_tweaks_or_workdir_for_unpacked_files():
    for path in [*layer_metadata(), *LAYER.glob("conf/**/*.conf")]:
        text = path.read_text()
        assert not re.search(r"\b[A-Z_]+_(append|prepend|remove)\b", text), f"{path}: old override syntax"
        if path.name != "edgecontainers_sanity.bbclass":  # the check that refuses it
            assert "debug-tweaks" not in text, f"{path}: debug-tweaks"
        assert "${WORKDIR}/" not in text, f"{path}: use ${{UNPACKDIR}} for unpacked files"


def test_wks_files_live_in_files_wic_with_a_header():
    wks = list(LAYER.rglob("*.wks")) + list(LAYER.rglob("*.wks.in"))
    assert wks
    for path in wks:
        assert path.parent == LAYER / "files" / "wic", f"{path}: wks files belong in files/wic"
        lines = path.read_text().splitlines()
        assert lines[0].startswith("# short-description: ") and lines[1].startswith("# long-description: ")


def test_user_facing_variables_have_doc_flags_and_readme_entries():
    readme = (LAYER / "README.md").read_text()
    text = "\n".join(p.read_text() for p in LAYER.glob("conf/distro/**/*.conf")) + "\n".join(
        p.read_text() for p in LAYER.glob("conf/distro/include/*.inc")
    )
    text += "\n".join(p.read_text() for p in LAYER.rglob("*.inc"))
    weak = set(re.findall(r"^(EDGECONTAINERS_[A-Z_]+)(?::[\w-]+)? \?\?=", text, re.M))
    assert weak
    for var in sorted(weak):
        assert re.search(rf"^{var}\[doc\] = \"", text, re.M), f"{var} has no [doc] flag"
        assert f"### `{var}`" in readme, f"{var} is not documented in meta-edgecontainers/README.md"


ON_TARGET_SCRIPTS = [p for p in LAYER.rglob("files/*") if p.is_file() and p.read_bytes().startswith(b"#!/bin/sh")]


@pytest.mark.parametrize("script", ON_TARGET_SCRIPTS, ids=lambda p: p.name)
def test_on_target_shell_scripts_are_posix_and_shellcheck_clean(script):
    subprocess.run(["sh", "-n", str(script)], check=True)
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.fail("shellcheck is not installed (the README's set-up installs it)")
    proc = subprocess.run([shellcheck, "-s", "sh", "-S", "warning", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_no_private_key_is_tracked():
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True)
    for rel in tracked.stdout.split():
        path = ROOT / rel
        if path.is_file() and path.stat().st_size < 1_000_000:
            assert b"PRIVATE KEY-----" not in path.read_bytes() or rel.startswith("tests/static/"), rel
