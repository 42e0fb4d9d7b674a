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
