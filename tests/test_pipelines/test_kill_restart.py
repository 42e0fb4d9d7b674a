"""A cycle killed mid-run (real subprocess; SIGTERM, then SIGKILL) and restarted finishes with no
duplicated and no lost outputs: one evaluation run, one model version, one forecast file, reports,
and no temporary files left where this pipeline writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

CONFIG = """
steps = ["ingest", "features", "train", "forecast", "monitor"]
[train]
eval_periods = 400
mcs_reps = 50
[train.candidates.har]
kind = "har"
[train.candidates.loghar]
kind = "loghar"
[train.candidates.ewma]
kind = "ewma"
[train.candidates.rw]
kind = "rw"
[monitor]
now = "data"
"""


def _start(home: Path, cfg: Path, api_url: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DPRM_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "prefect" / "storage"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.flows", str(cfg)],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def _kill_when(
    proc: subprocess.Popen, cond: Callable[[], bool], sig: int, log: Path, timeout_s: float = 300
) -> None:
    """Send ``sig`` to the run's process group as soon as ``cond()`` holds."""
    deadline = time.monotonic() + timeout_s
    try:
        while not cond():
            if proc.poll() is not None:
                raise AssertionError(
                    f"the run ended before the kill point: {log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"kill point not reached in {timeout_s} s")
            time.sleep(0.05)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)


def test_killed_cycle_restarts_without_duplicates_or_losses(
    prefect_harness: str, embedded_home: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from models import promotion_log, registry

    home = embedded_home
    cfg = tmp_path / "cycle.toml"
    cfg.write_text(CONFIG)
    storage = home / "prefect" / "storage"

    # 1. SIGTERM once the first per-symbol evaluation result is persisted (mid-training)
    p1 = _start(home, cfg, prefect_harness, tmp_path / "run1.log")
    _kill_when(
        p1,
        lambda: storage.is_dir() and any(storage.iterdir()),
        signal.SIGTERM,
        tmp_path / "run1.log",
    )
    assert p1.returncode != 0
    assert not (home / "forecasts").exists()

    # 2. SIGKILL as soon as MLflow artifacts appear (while logging / registering)
    p2 = _start(home, cfg, prefect_harness, tmp_path / "run2.log")
    _kill_when(p2, lambda: (home / "mlartifacts").is_dir(), signal.SIGKILL, tmp_path / "run2.log")
    assert p2.returncode == -signal.SIGKILL

    # 3. the restart runs to the end
    p3 = _start(home, cfg, prefect_harness, tmp_path / "run3.log")
    assert p3.wait(timeout=600) == 0, (tmp_path / "run3.log").read_text()[-3000:]
    summary = json.loads((tmp_path / "run3.log").read_text().strip().splitlines()[-1])
    assert summary["state"] == "Completed"
    assert summary["train"]["version"] == "1" and summary["train"]["challenger"] == "loghar"

    # exactly one registered version, one champion, one finished evaluation run for the key
    versions = registry.list_versions(home=home)
    assert list(versions["version"]) == [1] and versions["aliases"].iloc[0] == "champion"
    key = registry.show_version(1, home=home)["tags"]["dprm.train_key"]
    client = MlflowClient(registry.init_store(home))
    exp = registry.experiment_id(home)
    finished = client.search_runs(
        [exp], filter_string=f"tags.`dprm.train_key` = '{key}' and attributes.status = 'FINISHED'"
    )
    assert len(finished) == 1
    log = promotion_log.read_promotion_log(home)  # also verifies the hash chain
    assert [e["action"] for e in log] == ["register_challenger", "promote"]

    # one forecast file (the champion's), its pointer, no temporary files; the report exists
    fdir = home / "forecasts" / "embedded" / "1D"
    names = sorted(p.name for p in fdir.iterdir())
    assert names == ["forecast_20181231T210000Z_dprm-forecaster-v1.parquet", "latest.json"]
    table = pd.read_parquet(fdir / names[0])
    assert len(table) == 2 * 3 and set(table["registered_version"]) == {"1"}  # 2 symbols x 1, 2, 5 days
    assert not table.duplicated(["symbol", "horizon"]).any()
    rdir = home / "reports" / "monitor" / "embedded_1D"
    assert (rdir / "latest.json").exists() and (rdir / "latest.md").exists()
    leftovers = [
        p
        for d in (fdir, rdir, home / "state")
        if d.exists()
        for p in d.iterdir()
        if p.name.endswith(".tmp")
    ]
    assert leftovers == []
