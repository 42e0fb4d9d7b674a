"""The forecasting-cycle flows: steps proven against direct library calls, caching, idempotent
reruns, and the monitoring breach -> baseline fallback -> promotion gate round trip.

Flow tests share one session harness (``prefect_harness``); step logic is also tested without
Prefect. Every flow test works on a private copy of a workspace holding the embedded daily data.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from features.schema import SYMBOL, TS
from models.evaluation import POOLED, walk_forward
from pipelines import steps
from pipelines.config import load_config
from pipelines.flow_config import (
    CycleConfig,
    ForecastFlowConfig,
    IngestFlowConfig,
    ModelSpec,
    MonitorFlowConfig,
    RunnerConfig,
    TrainFlowConfig,
)

FAST = TrainFlowConfig(
    candidates={
        "har": ModelSpec(kind="har"),
        "loghar": ModelSpec(kind="loghar"),
        "ewma": ModelSpec(kind="ewma"),
        "rw": ModelSpec(kind="rw"),
    },
    eval_periods=400,
    mcs_reps=50,
)


# ---- steps without Prefect -----------------------------------------------------------------------
def test_merge_of_per_symbol_evaluations_equals_the_joint_walk_forward(
    embedded_template: Path,
) -> None:
    """Mapping the evaluation per symbol loses nothing: per-symbol and pooled losses equal those of
    one walk_forward over all symbols (pooled = means over all scored rows)."""
    home = embedded_template
    symbols = steps.feature_symbols(home, "embedded", "1D")
    assert symbols == ["NASDAQ", "SP500"]
    merged = steps.merge_evaluations({s: steps.evaluate_symbol(home, FAST, s) for s in symbols})
    data = steps.model_frame(home, "embedded", "1D")
    models = {n: steps.build_model(s) for n, s in FAST.candidates.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        joint = walk_forward(
            models,
            data,
            horizons=FAST.horizons,
            start=steps._eval_start(data, FAST),
            window=FAST.window,
            min_obs=None,
            baselines=list(FAST.baselines),
            mcs_reps=FAST.mcs_reps,
            random_state=FAST.seed,
        )
    keys = ["model_id", "symbol", "horizon", "regime", "target"]
    a = merged.losses.sort_values(keys).reset_index(drop=True)
    b = joint.losses.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[keys], b[keys])
    for c in ("n", "qlike", "qlike_ratio", "mse", "mse_log", "rmspe"):
        np.testing.assert_allclose(
            a[c].to_numpy(float), b[c].to_numpy(float), rtol=1e-10, err_msg=c
        )
    assert merged.benchmark == joint.benchmark
    assert (merged.dm["symbol"] != POOLED).all() and set(merged.dm["symbol"]) == set(symbols)
    # ranking: pooled QLIKE averaged over horizons, recomputed by hand
    ranking = steps.rank_candidates(merged, FAST)
    pooled = b[(b["symbol"] == POOLED) & (b["regime"] == "all") & (b["target"] == "realized")]
    by_hand = pooled.groupby("model_id")["qlike"].mean().sort_values()
    assert list(ranking["model_id"]) == list(by_hand.index)
    np.testing.assert_allclose(ranking["qlike"], by_hand.to_numpy(), rtol=1e-12)
    best_non_base = by_hand[[m for m in by_hand.index if m not in FAST.baselines]].idxmin()
    assert steps.choose_challenger(ranking) == best_non_base
    only_base = ranking[ranking["is_baseline"]]
    assert steps.choose_challenger(only_base) == by_hand[list(FAST.baselines)].idxmin()


def test_merge_evaluations_needs_results() -> None:
    with pytest.raises(ValueError, match="needs at least one per-symbol result"):
        steps.merge_evaluations({})


def test_model_frame_keeps_valid_rows_and_realized_columns(embedded_template: Path) -> None:
    f = steps.model_frame(embedded_template, "embedded", "1D")
    feats = steps.Workspace(embedded_template).features.read("embedded", "1D")
    assert list(f.columns) == [TS, SYMBOL, "rv_var", "close"]
    assert len(f) == int(feats[feats[SYMBOL].isin(["NASDAQ", "SP500"])]["valid"].sum())
    assert (f["rv_var"] > 0).all()


def test_train_key_tracks_data_and_settings_not_flags() -> None:
    k = steps.train_key(FAST, "fp1", "loghar")
    assert k == steps.train_key(
        FAST.model_copy(update={"promote": False, "register_model": False}), "fp1", "loghar"
    )
    assert k != steps.train_key(FAST, "fp2", "loghar")
    assert k != steps.train_key(FAST.model_copy(update={"window": 400}), "fp1", "loghar")
    assert k != steps.train_key(FAST, "fp1", "har")


def test_build_model_defaults_min_obs_to_none() -> None:
    from models.har import LogHARVol

    m = steps.build_model(ModelSpec(kind="loghar", params={"window": 300, "horizons": [1, 5]}))
    assert isinstance(m, LogHARVol) and m.min_obs is None and m.window == 300
    assert m.horizons == (1, 5)
    assert steps.build_model(ModelSpec(kind="ewma", params={"min_obs": 10})).min_obs == 10
    with pytest.raises(ValidationError, match="unknown model kind 'lstm'"):
        ModelSpec(kind="lstm")


def test_forecast_source_state_round_trip(tmp_path: Path) -> None:
    assert steps.forecast_source(tmp_path, "m")["source"] == "champion"
    s1 = steps.set_forecast_source(tmp_path, "m", "baseline", "monitoring breach: x", version="3")
    s2 = steps.set_forecast_source(tmp_path, "m", "baseline", "monitoring breach: y")
    assert s2["since"] == s1["since"] and len(s2["history"]) == 1  # no switch, no new history row
    s3 = steps.set_forecast_source(tmp_path, "m", "champion", "version 4 passed the gate")
    assert [h["source"] for h in s3["history"]] == ["baseline", "champion"]
    assert json.loads(steps.Workspace(tmp_path).state_file("m").read_text())["source"] == "champion"
    with pytest.raises(ValueError, match="source must be 'champion' or 'baseline'; got 'lgbm'"):
        steps.set_forecast_source(tmp_path, "m", "lgbm", "")


def test_resolve_now() -> None:
    latest = pd.Timestamp("2018-12-31 21:00", tz="UTC")
    assert steps.resolve_now("data", latest) == latest
    assert steps.resolve_now("2019-01-02", latest) == pd.Timestamp("2019-01-02", tz="UTC")
    assert abs(steps.resolve_now(None, latest) - pd.Timestamp.now(tz="UTC")) < pd.Timedelta("1min")
    from features.schema import DataError

    with pytest.raises(DataError, match="now='data' needs data"):
        steps.resolve_now("data", None)


def test_flow_configs_load_from_toml(tmp_path: Path) -> None:
    p = tmp_path / "steps.toml"
    p.write_text(
        'dataset = "sim"\nfreq = "1h"\nsteps = ["train", "forecast"]\n'
        "[train]\nhorizons = [1, 5]\nwindow = 300\n"
        '[train.candidates.loghar]\nkind = "loghar"\nparams = { window = 300 }\n'
        '[monitor]\nmax_psi = 0.5\nnow = "data"\n[runner]\nkind = "dask"\ndask_workers = 3\n'
    )
    cfg = load_config(CycleConfig, p).resolved()
    assert cfg.train.dataset == "sim" and cfg.forecast.freq == "1h" and cfg.monitor.dataset == "sim"
    assert list(cfg.train.candidates) == ["loghar"] and cfg.train.window == 300
    assert cfg.steps == ("train", "forecast") and cfg.runner.dask_workers == 3
    bad = tmp_path / "bad.toml"
    bad.write_text('steps = ["train", "deploy"]\n')
    with pytest.raises(ValidationError, match=r"unknown cycle step\(s\) \['deploy'\]"):
        load_config(CycleConfig, bad)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        load_config(TrainFlowConfig, None, windw=3)


def test_make_runner_from_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from pipelines.runners import make_runner, runner_config_from_env

    r = make_runner(RunnerConfig(max_workers=3))
    assert isinstance(r, ThreadPoolTaskRunner) and r._max_workers == 3
    d = make_runner(RunnerConfig(kind="dask", dask_address="tcp://127.0.0.1:8786"))
    assert isinstance(d, DaskTaskRunner) and d.address == "tcp://127.0.0.1:8786"
    local = make_runner(RunnerConfig(kind="dask", dask_workers=2))
    assert local.cluster_kwargs["n_workers"] == 2 and local.address is None
    monkeypatch.setenv("DPRM_RUNNER", "dask")
    monkeypatch.setenv("DPRM_DASK_ADDRESS", "tcp://h:1")
    assert runner_config_from_env().model_dump()["dask_address"] == "tcp://h:1"
    monkeypatch.setenv("DPRM_RUNNER", "ray")
    with pytest.raises(ValidationError, match="kind"):
        runner_config_from_env()


def test_ingest_source_rejects_unknown_source(tmp_path: Path) -> None:
    from features.schema import DataError

    with pytest.raises(DataError, match="neither 'embedded', 'simulate' nor an existing path"):
        steps.ingest_source(tmp_path, "nowhere.csv", IngestFlowConfig())


# ---- flows ---------------------------------------------------------------------------------------
def _recent_task_runs(prefix: str, n: int) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            task_run_filter=TaskRunFilter(name={"like_": f"{prefix}%"}),
            sort=TaskRunSort.EXPECTED_START_TIME_DESC,
            limit=n,
        )


def _flow_logs(flow_run_id, contains: str, timeout_s: float = 20.0) -> list[str]:
    """The flow run's log messages stored by the API (polled until one contains ``contains``)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id={"any_": [flow_run_id]}))
        messages = [log.message for log in logs]
        if any(contains in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.5)


def _versions(home: Path) -> pd.DataFrame:
    from models import registry

    return registry.list_versions(home=home)


def test_daily_cycle_end_to_end_then_rerun_is_cached_and_idempotent(
    prefect_harness: str, embedded_home: Path
) -> None:
    from models.har import LogHARVol
    from pipelines.flows import daily_cycle

    home = embedded_home
    cfg = CycleConfig(
        steps=("ingest", "features", "train", "forecast", "monitor"),
        train=FAST,
        monitor=MonitorFlowConfig(now="data"),
    )
    out = daily_cycle(cfg)
    assert out["ingest"][0]["skipped"] and out["features"]["partitions_written"] == 0
    tr = out["train"]
    assert tr["challenger"] == "loghar" and tr["version"] == "1" and tr["promoted"]
    assert not tr["reused"] and tr["gate_status"] == "passed"
    # the forecast file holds what the champion model gives when fitted directly
    fc = out["forecast"]
    table = pd.read_parquet(fc["path"])
    data = steps.model_frame(home, "embedded", "1D")
    ref = (
        LogHARVol(window=500, horizons=(1, 5), min_obs=None)
        .fit(data)
        .predict(steps._history(data, ForecastFlowConfig().history), horizons=(1, 5))
    )
    for sym, f in ref.items():
        last = f.variance.iloc[-1]
        got = table[table["symbol"] == sym].set_index("horizon")["forecast_var"]
        np.testing.assert_allclose(
            got.loc[[1, 5]].to_numpy(), last.loc[[1, 5]].to_numpy(), rtol=1e-10
        )
    assert set(table["source"]) == {"champion"} and set(table["registered_version"]) == {"1"}
    assert fc["data_cutoff_ts"] == str(data[TS].max().isoformat())
    # monitoring on the embedded data: model checks pass, Q4-2018 volatility drifts from history
    mo = out["monitor"]
    report = steps.read_latest_report(home, "embedded", "1D")
    assert report is not None and report["context"]["champion"].startswith("dprm-forecaster v1")
    names = {(c["name"], c["symbol"]): c["breached"] for c in report["checks"]}
    assert names[("qlike_ratio", "SP500")] is False and names[("mz_slope", "NASDAQ")] is False
    assert mo["status"] == ("breach" if report["n_breaches"] else "ok")
    assert steps.forecast_source(home, "dprm-forecaster")["source"] == "champion"

    # rerun on unchanged data: evaluations come from the cache, nothing new is registered or written
    out2 = daily_cycle(cfg)
    states = {t.name: t.state.name for t in _recent_task_runs("evaluate-", 2)}
    assert states == {"evaluate-NASDAQ": "Cached", "evaluate-SP500": "Cached"}
    assert out2["train"]["reused"] and out2["train"]["version"] == "1"
    assert out2["forecast"]["path"] == fc["path"] and not out2["forecast"]["written"]
    assert len(_versions(home)) == 1
    files = list((home / "forecasts" / "embedded" / "1D").iterdir())
    assert sorted(p.name for p in files) == sorted(["latest.json", Path(fc["path"]).name])


def test_monitor_breach_falls_back_to_baseline_until_the_gate_passes(
    prefect_harness: str, embedded_home: Path
) -> None:
    from models import registry
    from models.ewma import EWMAVol
    from pipelines.flows import forecast, monitor, train

    home = embedded_home
    # a deliberately poor champion: an EWMA with a 1000-day half-life (blind to the Q4-2018 rise in
    # volatility), promoted by a recorded manual override of the gate
    slow = ModelSpec(kind="ewma", params={"half_life": 1000.0})
    bad = TrainFlowConfig(
        candidates={"slow": slow}, baselines=("slow",), promote=False, eval_periods=300, mcs_reps=20
    )
    out = train(bad)
    assert out["challenger"] == "slow" and out["gate_status"] == "pending"
    registry.promote(
        out["version"],
        home=home,
        mode="manual",
        approver="test",
        reason="install a poor champion to test monitoring",
    )
    mcfg = MonitorFlowConfig(now="data", max_psi=1e6)
    state = monitor(mcfg, return_state=True)
    assert state.is_failed() and "qlike_ratio" in state.message
    report = steps.read_latest_report(home, "embedded", "1D")
    breached = {c["name"] for c in report["breaches"]}
    assert "qlike_ratio" in breached and report["forecast_source"]["switched_now"]
    qr = [c for c in report["checks"] if c["name"] == "qlike_ratio"]
    assert all(c["value"] > 1.1 for c in qr)
    md = (
        Path(report and steps.Workspace(home).reports("embedded", "1D")) / "latest.md"
    ).read_text()
    assert "## Breaches" in md and "## Forecast source" in md and "baseline" in md
    logs = _flow_logs(state.state_details.flow_run_id, "monitoring breach on")
    assert any(m.startswith("monitoring breach on embedded/1D: qlike_ratio") for m in logs)
    src = steps.forecast_source(home, "dprm-forecaster")
    assert src["source"] == "baseline" and src["reason"].startswith(
        "monitoring breach: qlike_ratio"
    )

    # forecasting now uses the baseline, with the reason recorded in the table
    f1 = forecast(ForecastFlowConfig())
    t1 = pd.read_parquet(f1["path"])
    assert f1["source"] == "baseline" and Path(f1["path"]).name.endswith("_baseline-ewma.parquet")
    assert t1["source_reason"].str.startswith("monitoring breach").all()
    hist = steps._history(steps.model_frame(home, "embedded", "1D"), ForecastFlowConfig().history)
    ref = EWMAVol(min_obs=None).fit(hist).predict(hist, horizons=(1, 5))
    for sym, f in ref.items():
        got = t1[t1["symbol"] == sym].set_index("horizon")["forecast_var"].loc[[1, 5]]
        np.testing.assert_allclose(got.to_numpy(), f.variance.iloc[-1].to_numpy(), rtol=1e-12)

    # a clean monitoring run does not switch back by itself
    ok = monitor(
        mcfg.model_copy(
            update={"max_qlike_ratio": 100.0, "mz_slope_min": -1e9, "mz_slope_max": 1e9}
        ),
        return_state=True,
    )
    assert ok.is_completed()
    assert steps.forecast_source(home, "dprm-forecaster")["source"] == "baseline"

    # a challenger that passes the promotion gate brings the champion back
    good = train(FAST)
    assert good["challenger"] == "loghar" and good["version"] == "2", good
    assert good["promoted"], good["gate_reason"]
    src = steps.forecast_source(home, "dprm-forecaster")
    assert src["source"] == "champion" and "passed the promotion gate" in src["reason"]
    assert [h["source"] for h in src["history"]] == ["baseline", "champion"]
    f2 = forecast(ForecastFlowConfig())
    assert f2["source"] == "champion" and f2["version"] == "2"
