"""`dprm monitor` end to end: a real subprocess (real Prefect temporary server, real MLflow store)
on a workspace with the embedded daily data and a registered champion.

Exit codes: 0 no breach, 1 a breach (one line per breached check on stderr, no traceback), 2 bad
input (one line, before any flow runs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import steps
from pipelines.flow_config import ModelSpec, TrainFlowConfig

DPRM = [sys.executable, "-m", "pipelines.cli"]

TRAIN = TrainFlowConfig(
    candidates={
        "loghar": ModelSpec(kind="loghar"),
        "ewma": ModelSpec(kind="ewma"),
        "rw": ModelSpec(kind="rw"),
    },
    eval_periods=600,
    mcs_reps=20,
)


def _dprm(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DPRM_HOME=str(home), COLUMNS="80")
    for var in ("DPRM_DEBUG", "PREFECT_LOGGING_LEVEL"):  # as a user runs it
        env.pop(var, None)
    return subprocess.run(
        [*DPRM, *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def champion_home(embedded_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded workspace with a log-HAR champion trained and promoted without Prefect."""
    home = tmp_path_factory.mktemp("monitor-cli") / "home"
    shutil.copytree(embedded_template, home)
    symbols = steps.train_symbols(home, TRAIN)
    merged = steps.merge_evaluations({s: steps.evaluate_symbol(home, TRAIN, s) for s in symbols})
    fp = steps.feature_fingerprint(home, TRAIN.dataset, TRAIN.freq, symbols)
    out = steps.register_and_promote(home, TRAIN, merged, fp)
    assert out.promoted and out.champion_version == "1", out
    return home


@pytest.mark.slow
def test_monitor_exit_codes_and_output(champion_home: Path, tmp_path: Path) -> None:
    home = champion_home
    # This tests the exit paths, not the thresholds (the simulator tests in
    # tests/test_models/test_monitoring.py do): the drift limit is relaxed because NASDAQ's late-2018
    # forecast errors sit near it (PSI 0.34 with these 600 evaluation origins).
    cfg = tmp_path / "monitor.toml"
    cfg.write_text("[monitor]\nmax_psi = 1.0\n")
    # replaying history (clock at the data's end): a healthy champion, exit 0, JSON on request
    ok = _dprm(["monitor", "--now", "data", "--json", "-c", str(cfg)], home)
    assert ok.returncode == 0, ok.stderr[-2000:]
    report = json.loads(ok.stdout)
    assert report["status"] == "ok" and report["n_breaches"] == 0
    names = sorted({c["name"] for c in report["checks"]})
    assert names == ["drift:log_rv_ratio", "freshness", "mz_slope", "qlike_ratio"]
    assert ok.stderr.strip() == ""

    # the wall clock: the embedded data end on 2018-12-31, so every symbol's feed is stale
    stale = _dprm(["monitor", "-c", str(cfg)], home)
    assert stale.returncode == 1, stale.stderr[-2000:]
    assert "Traceback" not in stale.stderr + stale.stdout
    lines = [x for x in stale.stderr.splitlines() if x.strip()]  # nothing but the breach lines
    assert len(lines) == 2 and all(x.startswith("breach: freshness [") for x in lines), lines
    assert {x.split("[")[1].split("]")[0] for x in lines} == {"NASDAQ", "SP500"}
    for x in lines:
        assert "latest live row 2018-12-31 21:00 UTC" in x and "(limit age <= 4 days)" in x
        assert " days (" in x and "years)" in x and "e+0" not in x
    assert "BREACH" in stale.stdout and "e+0" not in stale.stdout
    table = [x for x in stale.stdout.splitlines() if not x.startswith("report: ")]
    assert max(len(x) for x in table) <= 80  # the report path alone may be longer
    latest = steps.read_latest_report(home, "embedded", "1D")
    assert latest is not None and latest["status"] == "breach" and latest["n_breaches"] == 2
    # a stale feed is a data problem: forecasting stays with the champion
    assert steps.forecast_source(home, "dprm-forecaster")["source"] == "champion"

    # bad input: one line, exit 2, before any flow runs
    bad = _dprm(["monitor", "--now", "yesterday-ish"], home)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    err = [x for x in bad.stderr.splitlines() if x.strip()]
    assert len(err) == 1 and "'now'" in err[0] and "yesterday-ish" in err[0], err
