"""The data flow is one way: features -> models -> margin; pipelines imports them all, nothing imports it.

Only models/registry.py and pipelines/ may import mlflow; only pipelines/ may import prefect.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "features": set(),
    "models": {"features"},
    "margin": {"models.forecast", "features.schema", "features.symbols", "features.errors"},
    "pipelines": {"features", "models", "margin"},
}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


FILES = [p for pkg in ALLOWED for p in sorted((ROOT / pkg).rglob("*.py"))]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_layering(path: Path) -> None:
    pkg = path.relative_to(ROOT).parts[0]
    ours = {"features", "models", "margin", "pipelines"}
    for mod in imports(path):
        top = mod.split(".")[0]
        if top in ours and top != pkg:
            ok = any(mod == a or mod.startswith(a + ".") or (a in ours and top == a)
                     for a in ALLOWED[pkg])
            assert ok, f"{path.relative_to(ROOT)} imports {mod}: {pkg} may import only {ALLOWED[pkg]}"
        if top == "mlflow":
            assert pkg == "pipelines" or path.name == "registry.py", f"{path} imports mlflow"
        if top == "prefect":
            assert pkg == "pipelines", f"{path} imports prefect"


# ---- the module graph: no cycles, strict layers inside pipelines, no private reach -----------------
def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


MODULES = {_module_name(p): p for p in FILES}


def module_edges(path: Path) -> set[str]:
    """Our modules ``path`` imports (at module level or inside functions), relative imports
    resolved; ``from a import b`` counts as ``a.b`` when that is a module."""
    me = _module_name(path)
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                parts = me.split(".")
                keep = len(parts) - node.level + (1 if path.name == "__init__.py" else 0)
                base = ".".join([*parts[:keep], node.module])
            for a in node.names:
                full = f"{base}.{a.name}"
                tgt = full if full in MODULES else base
                if tgt in MODULES and tgt != me:
                    out.add(tgt)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES and a.name != me}
    return out


def import_cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    import sys

    edges = {m: module_edges(p) for m, p in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle() -> None:
    assert import_cycles() == []


PIPELINE_LAYERS = ("config", "flow_config", "steps", "tasks", "flows", "deploy", "cli")
"""Inside pipelines each of these imports only those before it (steps: no prefect, no CLI)."""


@pytest.mark.parametrize("layer", PIPELINE_LAYERS)
def test_pipeline_layers(layer: str) -> None:
    me = f"pipelines.{layer}"
    later = {f"pipelines.{x}" for x in PIPELINE_LAYERS[PIPELINE_LAYERS.index(layer) + 1:]}
    bad = sorted(module_edges(MODULES[me]) & later)
    assert not bad, f"{me} imports {bad}, a later layer of {PIPELINE_LAYERS}"
    if PIPELINE_LAYERS.index(layer) <= PIPELINE_LAYERS.index("steps"):
        assert "prefect" not in {m.split(".")[0] for m in imports(MODULES[me])}


def _resolve(node: ast.ImportFrom, here: str, is_pkg: bool) -> str | None:
    if node.level == 0:
        return node.module
    base = here.split(".") if is_pkg else here.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_names(tree: ast.AST) -> set[str]:
    """Every name a module defines itself: functions, classes, assignments, attributes set on self/cls,
    arguments and keywords (a private name defined here may be used here on any object)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            out.add(node.attr)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, ast.keyword) and node.arg:
            out.add(node.arg)
        elif isinstance(node, ast.alias):
            out.add(node.asname or node.name.split(".")[0])
    return out


def private_reach(source: str, mod: str, is_pkg: bool = False) -> list[str]:
    """Uses of another module's private names in ``source`` (module ``mod``): ``from x import _y``,
    ``module._y`` and ``obj._y`` where this module does not define ``_y`` itself. ``self._y`` and
    ``cls._y`` are a class's own (protected) members, inherited ones included, and are allowed."""
    tree = ast.parse(source)
    defined = {n for n in _defined_names(tree) if _private(n)}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _resolve(node, mod, is_pkg) or ""
            for a in node.names:
                if _private(a.name):
                    found.append(f"line {node.lineno}: from {base} import {a.name}")
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in defined:
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_private_reach_detector() -> None:
    import textwrap

    src = textwrap.dedent(
        """
        from models.base import _hidden
        import mlflow.utils as u
        class A:
            def __init__(self):
                self._mine = 1
            def f(self, other):
                return other._mine + u._tracking + self.__class__.__name__.__len__()
        """
    )
    hits = private_reach(src, "models.probe")
    assert len(hits) == 2 and "_hidden" in hits[0] and "u._tracking" in hits[1], hits


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_reach(path: Path) -> None:
    hits = private_reach(path.read_text(), _module_name(path), path.name == "__init__.py")
    assert not hits, f"{path.relative_to(ROOT)} uses another module's private names: {hits}"
