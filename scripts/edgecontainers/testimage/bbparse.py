"""A small reader of BitBake metadata: the literal subset meta-edgecontainers uses.

It is not BitBake.  It reads assignments (``=``, ``:=``, ``?=``, ``??=``,
``+=``, ``=+``, ``.=``, ``=.``), line continuations, override-qualified
assignments (``VAR:qemux86-64 = ...``), ``:append`` / ``:prepend`` /
``:remove`` (also conditional: ``VAR:append:x86-64``), ``include`` /
``require``, and skips functions, flags and tasks.  Values are expanded on
read (``${VAR}``); a ``${@...}`` inline-Python expression is handed to a
callback, so the caller decides which expressions it can evaluate (see
:func:`edgecontainers.testimage.layer.layer_settings`).

The override semantics follow BitBake's: the conditional value of the most
specific active override replaces the plain value, then appends, prepends and
removes whose overrides are all active apply in the order they were parsed.
A ``??=`` default applies only when nothing else assigned the variable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

OPERATIONS = ("append", "prepend", "remove")

_ASSIGN = re.compile(
    r"^(?:export\s+)?(?P<var>[A-Za-z0-9_\-.+{}$/~]+?)(?P<ovr>(?::[A-Za-z0-9_\-.+{}$~]+)*)"
    r"(?:\[(?P<flag>[A-Za-z0-9_\-]+)\])?\s*(?P<op>\?\?=|\?=|:=|\+=|=\+|\.=|=\.|=)\s*"
    r"(?P<q>[\"'])(?P<val>.*)(?P=q)\s*$",
    re.S,
)
_INCLUDE = re.compile(r"^(?P<kind>include|require)\s+(?P<path>.+?)\s*$")
_FUNC_START = re.compile(r"^(?:python\s+|fakeroot\s+)*[A-Za-z0-9_\-${}.:]*\s*\(\s*\)\s*\{\s*$|^python\s*\{\s*$")
_SKIP_WORDS = ("inherit ", "inherit_defer ", "addtask ", "deltask ", "addhandler ", "EXPORT_FUNCTIONS ", "unset ")
_VARREF = re.compile(r"\$\{([A-Za-z0-9_\-.+/~:]+)\}")


class Unresolved(Exception):
    """An inline-Python expression the caller does not evaluate."""


@dataclass
class _Op:
    op: str  # =, :=, ?=, ??=, +=, =+, .=, =., append, prepend, remove
    value: str
    cond: tuple[str, ...]  # overrides that must all be active
    origin: str
    seq: int = 0


@dataclass
class BBData:
    """Variables of one parse (a distro configuration or one recipe)."""

    overrides: Sequence[str] = ()
    python: Callable[[str, BBData], str] | None = None
    _ops: dict[tuple[str, tuple[str, ...]], list[_Op]] = field(default_factory=dict)
    inherits: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    # required files that are not in the layer (they live in other layers)
    missing: list[str] = field(default_factory=list)
    # VAR[flag] = value, last plain assignment wins (no operators on flags)
    flags: dict[tuple[str, str], str] = field(default_factory=dict)
    _seq: int = 0

    # ------------------------------------------------------------ writing
    def set(self, var: str, value: str, origin: str = "preset") -> None:
        name, *parts = var.split(":")
        self.add(name, "=", value, (), tuple(parts), origin)

    def add(self, var: str, op: str, value: str, conds: tuple[str, ...], key_ovr: tuple[str, ...], origin: str):
        self._seq += 1
        self._ops.setdefault((var, key_ovr), []).append(_Op(op, value, conds, origin, self._seq))

    def copy(self) -> BBData:
        new = BBData(overrides=list(self.overrides), python=self.python)
        new._ops = {k: list(v) for k, v in self._ops.items()}
        new.inherits = list(self.inherits)
        new.files = list(self.files)
        new.missing = list(self.missing)
        new.flags = dict(self.flags)
        new._seq = self._seq
        return new

    # ------------------------------------------------------------ reading
    def variables(self) -> list[str]:
        """Every variable set, also those set only under an override (``VAR:machine = ...``)."""
        return sorted({var for var, _ in self._ops})

    def _active(self, conds: Iterable[str]) -> bool:
        return all(self.expand(c) in self.overrides for c in conds)

    @staticmethod
    def _plain(ops: list[_Op]) -> str | None:
        value: str | None = None
        weak: str | None = None
        for o in sorted(ops, key=lambda o: o.seq):
            if o.op in OPERATIONS:
                continue
            if o.op in ("=", ":="):
                value = o.value
            elif o.op == "?=":
                if value is None:
                    value = o.value
            elif o.op == "??=":
                weak = o.value
            elif o.op == "+=":
                value = f"{value or ''} {o.value}"
            elif o.op == "=+":
                value = f"{o.value} {value or ''}"
            elif o.op == ".=":
                value = (value or "") + o.value
            elif o.op == "=.":
                value = o.value + (value or "")
        return value if value is not None else weak

    def _keyed(self, name: str) -> dict[tuple[str, ...], list[_Op]]:
        """Ops of variable ``name`` grouped by their expanded key overrides."""
        groups: dict[tuple[str, ...], list[_Op]] = {}
        for (n, key_ovr), ops in self._ops.items():
            if n == name:
                groups.setdefault(tuple(self.expand(c) for c in key_ovr), []).extend(ops)
        return groups

    def raw(self, var: str) -> str | None:
        """The unexpanded value after overrides, appends, prepends and removes.
        ``var`` may name a package-specific variable such as ``SYSTEMD_SERVICE:foo``."""
        name, *parts = var.split(":")
        base = tuple(parts)
        groups = self._keyed(name)
        own = groups.get(base, [])
        value = self._plain(own)
        # Conditional values: the most specific active override (last in OVERRIDES) wins.
        best = -1
        for key, ops in groups.items():
            if len(key) <= len(base) or key[: len(base)] != base:
                continue
            extra = key[len(base) :]
            if not all(c in self.overrides for c in extra):
                continue
            rank = max(list(self.overrides).index(c) for c in extra)
            cond_value = self._plain(ops)
            if cond_value is not None and rank >= best:
                best = rank
                value = cond_value
        ops = sorted((o for o in own if o.op in OPERATIONS), key=lambda o: o.seq)
        for o in ops:
            if not self._active(o.cond):
                continue
            if o.op == "append":
                value = (value or "") + o.value
            elif o.op == "prepend":
                value = o.value + (value or "")
        removes = [o for o in ops if o.op == "remove" and self._active(o.cond)]
        if removes and value is not None:
            gone = set()
            for o in removes:
                gone.update(self.expand(o.value).split())
            value = " ".join(w for w in self.expand(value).split() if w not in gone)
        return value

    def get(self, var: str, default: str | None = None) -> str | None:
        value = self.raw(var)
        if value is None:
            return default
        return self.expand(value, _seen=(var,))

    def __contains__(self, var: str) -> bool:
        return self.raw(var) is not None

    def expand(self, text: str, _seen: tuple[str, ...] = ()) -> str:
        """Expand ${VAR} (unknown references stay as they are) and ${@...}."""
        for _ in range(50):
            new = self._expand_python(text, _seen)
            new = _VARREF.sub(lambda m: self._ref(m.group(1), _seen), new)
            if new == text:
                return new
            text = new
        raise ConfigError(f"recursive variable expansion in '{text[:80]}'")

    def _ref(self, name: str, seen: tuple[str, ...]) -> str:
        if name in seen:
            raise ConfigError(f"variable {name} references itself")
        value = self.raw(name)
        if value is None:
            return "${" + name + "}"
        return self.expand(value, _seen=(*seen, name))

    def _expand_python(self, text: str, seen: tuple[str, ...]) -> str:
        out = []
        i = 0
        while True:
            start = text.find("${@", i)
            if start < 0:
                out.append(text[i:])
                return "".join(out)
            depth = 0
            end = -1
            for j in range(start + 1, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        end = j
                        break
            if end < 0:
                raise ConfigError(f"unterminated ${{@...}} in '{text[:80]}'")
            expr = text[start + 3 : end]
            if self.python is None:
                raise Unresolved(expr)
            out.append(text[i:start])
            out.append(self.python(expr, self))
            i = end + 1

    # The two methods a ${@...} expression may call on "d".
    def getVar(self, name: str, expand: bool = True) -> str | None:
        return self.get(name) if expand else self.raw(name)

    def getVarFlag(self, name: str, flag: str, expand: bool = True) -> str | None:
        value = self.flags.get((name, flag))
        if value is None or not expand:
            return value
        return self.expand(value)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines; drop comments and blank lines; keep function bodies out."""
    raw = text.splitlines()
    result: list[tuple[int, str]] = []
    i = 0
    while i < len(raw):
        line = raw[i]
        lineno = i + 1
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        # Shell/Python functions: "name() {" ... "}" at column 0.
        if _FUNC_START.match(line.strip()) and not _ASSIGN.match(line.strip()):
            while i < len(raw) and raw[i].rstrip() != "}":
                i += 1
            i += 1
            continue
        # "def f(d):" blocks: indented lines follow.
        if line.startswith("def "):
            while i < len(raw) and (not raw[i].strip() or raw[i][:1] in (" ", "\t")):
                i += 1
            continue
        while line.endswith("\\") and i < len(raw):
            line = line[:-1] + raw[i]
            i += 1
        result.append((lineno, line.strip()))
    return result


def parse_into(
    data: BBData,
    path: Path,
    *,
    search: Sequence[Path] = (),
    class_dirs: Sequence[Path] = (),
    _depth: int = 0,
) -> None:
    """Parse ``path`` into ``data``; ``include``/``require`` look in the file's
    directory, then ``search``; ``inherit`` of a class found in ``class_dirs``
    parses it too (once)."""
    if _depth > 20:
        raise ConfigError(f"include depth exceeded at {path}")
    data.files.append(path)
    previous_thisdir = data.raw("THISDIR")
    data.set("THISDIR", str(path.parent), origin=str(path))
    data.set("FILE", str(path), origin=str(path))
    for lineno, line in logical_lines(path.read_text()):
        origin = f"{path}:{lineno}"
        m = _ASSIGN.match(line)
        if m:
            if m.group("flag"):
                # VAR[flag] = ...: kept as written (documentation, task and slot flags)
                if m.group("op") in ("=", "?=", "??=", ":="):
                    key = (m.group("var"), m.group("flag"))
                    if m.group("op") == "=" or key not in data.flags:
                        data.flags[key] = m.group("val")
                continue
            var = m.group("var")
            parts = [p for p in m.group("ovr").split(":") if p]
            value = m.group("val")
            op = m.group("op")
            opi = next((k for k, p in enumerate(parts) if p in OPERATIONS), None)
            if opi is None:
                key_ovr, conds, kind = tuple(parts), (), op
            else:
                key_ovr, conds, kind = tuple(parts[:opi]), tuple(parts[opi + 1 :]), parts[opi]
            if op == ":=":
                value = data.expand(value)
            if kind in OPERATIONS and op not in ("=", ":="):
                raise ConfigError(f"{origin}: '{op}' with :{kind} is not supported by this reader")
            data.add(var, kind if kind in OPERATIONS else op, value, conds, key_ovr, origin)
            continue
        m = _INCLUDE.match(line)
        if m:
            target = data.expand(m.group("path")).strip()
            if not target:
                continue  # require ${@'x.inc' if ... else ''} evaluated to nothing
            found = _find(target, [path.parent, *search])
            if found is None:
                if m.group("kind") == "require":
                    data.missing.append(target)
                continue
            parse_into(data, found, search=search, class_dirs=class_dirs, _depth=_depth + 1)
            continue
        if line.startswith(("inherit ", "inherit_defer ")):
            for name in data.expand(line.split(None, 1)[1]).split():
                if name in data.inherits:
                    continue
                data.inherits.append(name)
                cls = _find(f"{name}.bbclass", list(class_dirs))
                if cls is not None:
                    parse_into(data, cls, search=search, class_dirs=class_dirs, _depth=_depth + 1)
            continue
        if line.startswith(_SKIP_WORDS) or re.match(r"^[A-Za-z0-9_\-${}.:]+\[[^\]]+\]\s*[+.?:]*=", line):
            continue
        if line.startswith("python ") or line.endswith("{") or line == "}":
            continue
        raise ConfigError(f"{origin}: cannot read this line: {line[:100]}")
    if previous_thisdir is not None:
        data.set("THISDIR", previous_thisdir, origin=str(path))


def _find(name: str, dirs: Sequence[Path]) -> Path | None:
    p = Path(name)
    if p.is_absolute():
        return p if p.is_file() else None
    for d in dirs:
        cand = d / name
        if cand.is_file():
            return cand
    return None
