"""Copying prepared workspaces between tests (the session templates of conftest.py)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path


def copy_workspace(src: Path, dst: Path) -> Path:
    """Copy the workspace ``src`` to ``dst`` (which must not exist) and return ``dst``.

    MLflow records absolute locations (experiments' artifact locations, runs' artifact URIs, model
    versions' sources, ``artifact_path`` in each ``MLmodel``): in the copy they are rewritten from
    ``src`` to ``dst``, so the copy reads and writes its own artifacts and never the template's.
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    shutil.copytree(src, dst)
    old, new = f"{src}/", f"{dst}/"
    db = dst / "mlflow.db"
    if db.is_file() and db.stat().st_size:
        con = sqlite3.connect(db)
        try:
            tables = [
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for table in tables:
                for col in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                    name, kind = col[1], (col[2] or "").upper()
                    if "CHAR" in kind or "TEXT" in kind or "CLOB" in kind:
                        con.execute(
                            f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?) '
                            f'WHERE instr("{name}", ?) > 0',
                            (old, new, old),
                        )
            con.commit()
        finally:
            con.close()
    for mlmodel in (dst / "mlartifacts").rglob("MLmodel"):
        text = mlmodel.read_text()
        if old in text:
            mlmodel.write_text(text.replace(old, new))
    return dst
