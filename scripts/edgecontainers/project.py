"""Where things are in a meta-edgecontainers checkout, and what it offers.

Machines, engines and kas option fragments are discovered from the ``kas/``
directory so that adding a file there is all it takes to add a choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, UsageError

LAYER_NAME = "meta-edgecontainers"
KAS_BASE = "base.yml"
ENGINES = ("podman", "docker")
DEFAULT_ENGINE = "podman"


def _looks_like_root(path: Path) -> bool:
    return (path / LAYER_NAME / "conf" / "layer.conf").is_file() and (path / "kas").is_dir()


def find_root(start: Path | None = None) -> Path:
    """The checkout root: $EDGECONTAINERS_ROOT, else the first parent of ``start``
    (default: the current directory, then this file) that holds the layer and kas/."""
    env = os.environ.get("EDGECONTAINERS_ROOT")
    if env:
        root = Path(env).resolve()
        if not _looks_like_root(root):
            raise ConfigError(f"EDGECONTAINERS_ROOT={env} is not a meta-edgecontainers checkout")
        return root
    candidates = [start or Path.cwd(), Path(__file__).resolve()]
    for cand in candidates:
        for p in [cand, *cand.parents]:
            if _looks_like_root(p):
                return p
    raise ConfigError(
        "cannot find the meta-edgecontainers checkout (no meta-edgecontainers/ and kas/ above the "
        "current directory)",
        hint="run edgectl inside the checkout or set EDGECONTAINERS_ROOT",
    )


@dataclass(frozen=True)
class Project:
    root: Path

    @classmethod
    def discover(cls, start: Path | None = None) -> Project:
        return cls(find_root(start))

    @property
    def layer(self) -> Path:
        return self.root / LAYER_NAME

    @property
    def kas_dir(self) -> Path:
        return self.root / "kas"

    def machines(self) -> list[str]:
        return sorted(
            p.stem
            for p in self.kas_dir.glob("*.yml")
            if p.name != KAS_BASE and not p.name.endswith(".lock.yml")
        )

    def options(self) -> list[str]:
        return sorted(p.stem for p in (self.kas_dir / "opt").glob("*.yml"))

    def machine_kas(self, machine: str) -> Path:
        known = self.machines()
        if machine not in known:
            raise UsageError(f"unknown machine '{machine}'; valid machines: {', '.join(known)}")
        return self.kas_dir / f"{machine}.yml"

    def option_kas(self, option: str) -> Path:
        known = self.options()
        if option not in known:
            raise UsageError(f"unknown option '{option}'; valid options: {', '.join(known)}")
        return self.kas_dir / "opt" / f"{option}.yml"

    def kas_config(self, machine: str, engine: str = DEFAULT_ENGINE, options: list[str] | None = None) -> str:
        """The colon-joined kas configuration for a machine, engine and options,
        relative to the checkout root (kas wants all parts in one repository)."""
        if engine not in ENGINES:
            raise UsageError(f"unknown engine '{engine}'; valid engines: {', '.join(ENGINES)}")
        parts = [self.machine_kas(machine)]
        if engine != DEFAULT_ENGINE:
            parts.append(self.option_kas(engine))
        for opt in options or []:
            if opt in ENGINES:
                raise UsageError(f"'{opt}' is an engine; select it with --engine {opt}")
            path = self.option_kas(opt)
            if path not in parts:
                parts.append(path)
        return ":".join(str(p.relative_to(self.root)) for p in parts)
