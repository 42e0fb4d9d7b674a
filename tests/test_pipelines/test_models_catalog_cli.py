"""`dprm models catalog`: the catalog as a table at 80 columns and as JSON; unknown names exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from models import catalog

DPRM = [sys.executable, "-m", "pipelines.cli"]


def run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DPRM_HOME": str(home), "COLUMNS": "80"}
    return subprocess.run([*DPRM, *args], capture_output=True, text=True, env=env, timeout=300)


def test_catalog_table_and_json(tmp_path: Path) -> None:
    r = run(["models", "catalog"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert all(len(line) <= 80 for line in r.stdout.splitlines())
    for name in ("random_walk", "log_har", "garch_1_1", "qlike_combo", "diurnal_har", "dcc"):
        assert name in r.stdout
    r = run(["models", "catalog", "--json", "--target", "correlation"], tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert [x["name"] for x in rows] == catalog.names("correlation")
    assert all(x["target"] == "correlation" and x["close"] for x in rows)


def test_catalog_bad_target_exits_2(tmp_path: Path) -> None:
    r = run(["models", "catalog", "--target", "margin"], tmp_path)
    assert r.returncode == 2 and "--target must be volatility or correlation" in r.stderr
