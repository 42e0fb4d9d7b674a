"""The forecasting cycle as Prefect flows: thin sequences of :mod:`pipelines.tasks`.

``ingest`` -> ``build_features`` -> ``train`` -> ``train_correlation`` -> ``forecast`` ->
``monitor``, and ``daily_cycle``
chaining them. Each flow takes one pydantic parameter model (:mod:`pipelines.flow_config`, every
field defaulted) and works in ``$DPRM_HOME``. Per-symbol feature building and per-symbol
walk-forward evaluation are mapped over the flow's task runner (threads by default, Dask by
configuration: :func:`pipelines.runners.make_runner`).

Without ``PREFECT_API_URL`` Prefect starts a temporary local API for the process (about 13 s the
first time, 7 s later; no separately started server). Importing this module sets the engine
environment (:func:`pipelines.flow_config.engine_environment`) before Prefect is imported.

Functions for the command line (each returns a JSON-ready summary)::

    run_ingest(cfg=None, runner=None) -> dict
    run_build_features(cfg=None, runner=None) -> dict
    run_train(cfg=None, runner=None) -> dict
    run_train_correlation(cfg=None) -> dict  # the correlation champion
    run_forecast(cfg=None) -> dict
    run_monitor(cfg=None) -> dict           # "status": "breach" and "state": "Failed" on a breach
    run_cycle(cfg=None) -> dict             # the demo: the whole cycle
    demo_cycle_config(dataset="embedded") -> CycleConfig   # "embedded" (1D) or "sim" (1h)
"""

from __future__ import annotations

from pipelines.flow_config import engine_environment

engine_environment()

import contextlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, unmapped  # noqa: E402
from prefect.futures import wait  # noqa: E402
from prefect.states import Failed  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from features.errors import ConfigError, DPRMError  # noqa: E402
from pipelines import steps  # noqa: E402
from pipelines.config import dprm_home  # noqa: E402
from pipelines.flow_config import (  # noqa: E402
    BacktestFlowConfig,
    CorrTrainFlowConfig,
    CycleConfig,
    FeaturesFlowConfig,
    ForecastFlowConfig,
    IngestFlowConfig,
    MonitorFlowConfig,
    RunnerConfig,
    TrainFlowConfig,
)
from pipelines.runners import make_runner, runner_config_from_env  # noqa: E402
from pipelines.tasks import (  # noqa: E402
    accounts_task,
    backtest_chunk_task,
    backtest_report_task,
    backtest_sweep_task,
    build_features_task,
    bundle_task,
    evaluate_symbol_task,
    forecast_task,
    ingest_source_task,
    init_tracking_task,
    margin_task,
    merge_task,
    monitor_task,
    register_task,
    train_correlation_task,
    warm_symbol_task,
)


class MonitoringBreach(RuntimeError):
    """A monitoring check breached; raised after the report and state were written."""


def _home() -> str:
    return str(dprm_home())


def registry_limit_name(model_name: str) -> str:
    """The Prefect global concurrency limit serializing registration of ``model_name``."""
    return f"dprm-registry-{model_name}"


def ensure_registry_limit(model_name: str) -> str:
    """Create the global concurrency limit of ``model_name`` with one slot if it does not exist
    (a concurrent creator winning the race is fine); returns its name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = registry_limit_name(model_name)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
    return name


def registry_slot(
    model_name: str, *, deployed: bool | None = None
) -> contextlib.AbstractContextManager[Any]:
    """Hold the model's registry slot (a Prefect global concurrency limit of one) in deployed runs
    on a real Prefect server (``PREFECT_API_URL``): runs of one model register and promote one at a
    time across workers and machines. The slot is leased for 60 s and renewed while held, so a
    killed run frees it within a minute (the server's lease service repossesses it); waiting is
    bounded by :data:`models.promotion_log.LOCK_TIMEOUT_S`. Elsewhere (ad-hoc runs, the temporary
    per-process API) this is a no-op: the registry's file lock under ``DPRM_HOME``
    (:func:`models.promotion_log.model_lock`) serializes processes, and it is held in every case.

    Parameters
    ----------
    model_name : the registered model.
    deployed : whether this is a deployed run; None = from the flow run context.
    """
    from prefect.settings import PREFECT_API_URL

    if deployed is None:
        from prefect.runtime import deployment

        deployed = deployment.id is not None
    if not (deployed and PREFECT_API_URL.value()):
        return contextlib.nullcontext()
    from prefect.concurrency.sync import concurrency

    from models.promotion_log import LOCK_TIMEOUT_S

    return concurrency(
        ensure_registry_limit(model_name),
        occupy=1,
        strict=True,
        lease_duration=60,
        timeout_seconds=LOCK_TIMEOUT_S,
    )


@flow(name="dprm-ingest", task_runner=ThreadPoolTaskRunner())
def ingest(cfg: IngestFlowConfig = IngestFlowConfig()) -> list[dict[str, Any]]:
    """Ingest every configured source (embedded data, the simulator, files)."""
    home = _home()
    futures = [ingest_source_task.submit(home, s, cfg) for s in cfg.sources]
    return [f.result() for f in futures]


@flow(name="dprm-build-features", task_runner=ThreadPoolTaskRunner())
def build_features(cfg: FeaturesFlowConfig = FeaturesFlowConfig()) -> dict[str, Any]:
    """Per-symbol base measures on the runner, then the (incremental) feature frame."""
    home = _home()
    symbols = steps.dataset_symbols(home, cfg.dataset)
    if cfg.per_symbol and len(symbols) > 1:
        futures = warm_symbol_task.map(unmapped(home), unmapped(cfg), symbols)
        wait(futures)
        for f in futures:
            f.result()
    return build_features_task(home, cfg)


@flow(name="dprm-train", task_runner=ThreadPoolTaskRunner())
def train(cfg: TrainFlowConfig = TrainFlowConfig()) -> dict[str, Any]:
    """Per-symbol walk-forward evaluation (mapped, cached on feature fingerprints), ranking, MLflow
    logging, challenger registration and the gated promotion (one run of a model at a time:
    :func:`registry_slot` and the registry's file lock)."""
    home = _home()
    tracking = init_tracking_task.submit(home) if cfg.register_model else None
    symbols = steps.train_symbols(home, cfg)
    fps = [steps.feature_fingerprint(home, cfg.dataset, cfg.freq, [s]) for s in symbols]
    evaluate = evaluate_symbol_task.with_options(refresh_cache=cfg.refresh_cache or None)
    futures = evaluate.map(unmapped(home), unmapped(cfg), symbols, fps)
    results = {s: f.result() for s, f in zip(symbols, futures, strict=True)}
    merged = merge_task(results)
    ranking = steps.rank_candidates(merged, cfg)
    out: dict[str, Any] = {
        "dataset": cfg.dataset,
        "freq": cfg.freq,
        "symbols": symbols,
        "scores": steps.score_table(merged),
        "challenger": steps.choose_challenger(ranking),
        "ranking": ranking.to_dict(orient="records"),
        "skipped": dict(merged.skipped),
    }
    if cfg.register_model:
        tracking.result()
        data_fp = steps.feature_fingerprint(home, cfg.dataset, cfg.freq, symbols)
        with registry_slot(cfg.registered_model):
            out.update(register_task(home, cfg, merged, data_fp))
    return out


@flow(name="dprm-train-correlation", task_runner=ThreadPoolTaskRunner())
def train_correlation(cfg: CorrTrainFlowConfig = CorrTrainFlowConfig()) -> dict[str, Any]:
    """Correlation candidates compared walk-forward, the best registered as the challenger of the
    dataset's correlation model and promoted through the correlation gate (one run of a model at a
    time: :func:`registry_slot` and the registry's file lock)."""
    home = _home()
    init_tracking_task(home)
    with registry_slot(cfg.registered_model):
        return train_correlation_task(home, cfg)


@flow(name="dprm-forecast", task_runner=ThreadPoolTaskRunner())
def forecast(cfg: ForecastFlowConfig = ForecastFlowConfig()) -> dict[str, Any]:
    """Roll the champion (or the baseline after a breach) forward and persist the forecast table;
    then ledger what the champions issued and write the risk-forecast bundle (``cfg.bundle``). A
    bundle that cannot be built is reported in ``bundle.error``; the forecast table stands."""
    out = forecast_task(_home(), cfg)
    if cfg.bundle:
        state = bundle_task(_home(), cfg, return_state=True)
        result = state.result(raise_on_failure=False)
        out["bundle"] = (result if isinstance(result, dict)
                         else {"error": f"{type(result).__name__}: {result}"})
    return out


@flow(name="dprm-monitor", task_runner=ThreadPoolTaskRunner())
def monitor(cfg: MonitorFlowConfig = MonitorFlowConfig()) -> Any:
    """Monitoring checks and report; a breach logs one ERROR line per breached check, may switch
    forecasting to the baseline, and (``fail_on_breach``) ends the run in a Failed state that
    carries the summary: a breach is an outcome, not an exception, so no traceback is logged."""
    out = monitor_task(_home(), cfg)
    if out["status"] == "ok":
        return out
    log = get_run_logger()
    log.error(
        "monitoring breach on %s/%s: %s (report %s)%s",
        cfg.dataset,
        cfg.freq,
        out["breaches"],
        out["markdown_path"],
        "; forecasting switched to the baseline" if out["switched_to_baseline"] else "",
    )
    for line in out["breach_lines"]:
        log.error("breach on %s/%s: %s", cfg.dataset, cfg.freq, line)
    if cfg.fail_on_breach:
        return Failed(message=f"monitoring breach: {out['breaches']}", data=out)
    return out


@flow(name="dprm-cycle", task_runner=ThreadPoolTaskRunner())
def daily_cycle(cfg: CycleConfig = CycleConfig()) -> dict[str, Any]:
    """ingest -> build_features -> train -> correlation -> forecast -> monitor (the selected
    ``cfg.steps``; correlation only for datasets with two or more symbols).

    The monitor step's breach is recorded in the summary (its own subflow run is Failed); the cycle
    itself fails on it only with ``fail_on_monitor_breach``.
    """
    cfg = cfg.resolved()
    runner = runner_config_from_env(cfg.runner)
    out: dict[str, Any] = {"home": _home(), "seconds": {}}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        out["seconds"][step] = round(now - clock, 1)
        clock = now

    if "ingest" in cfg.steps:
        out["ingest"] = ingest.with_options(task_runner=make_runner(runner))(cfg.ingest)
        lap("ingest")
    if "features" in cfg.steps:
        out["features"] = build_features.with_options(task_runner=make_runner(runner))(cfg.features)
        lap("features")
    if "train" in cfg.steps:
        out["train"] = train.with_options(task_runner=make_runner(runner))(cfg.train)
        lap("train")
    if "correlation" in cfg.steps:
        if _multi_symbol(out["home"], cfg.correlation.dataset):
            out["correlation"] = train_correlation(cfg.correlation)
        else:
            out["correlation"] = {"skipped": f"dataset '{cfg.correlation.dataset}' has one symbol"}
        lap("correlation")
    if "forecast" in cfg.steps:
        out["forecast"] = forecast(cfg.forecast)
        lap("forecast")
    from pipelines.margin_run import CYCLE_BOOKS  # the margin stack only when the cycle runs

    if "margin" in cfg.steps and cfg.forecast.dataset in CYCLE_BOOKS:
        state = margin_task(out["home"], cfg.forecast.dataset, cfg.forecast.freq,
                            return_state=True)
        result = state.result(raise_on_failure=False)
        out["margin"] = (result if isinstance(result, list)
                         else {"error": f"{type(result).__name__}: {result}"})
        lap("margin")
        from pipelines.accounts_run import CYCLE_ACCOUNTS

        if cfg.forecast.dataset in CYCLE_ACCOUNTS:
            st = accounts_task(out["home"], cfg.forecast.dataset, cfg.forecast.freq,
                               return_state=True)
            res = st.result(raise_on_failure=False)
            out["accounts"] = (res if isinstance(res, dict) or res is None
                               else {"error": f"{type(res).__name__}: {res}"})
            lap("accounts")
    if "monitor" in cfg.steps:
        state = monitor(cfg.monitor, return_state=True)
        if state.is_completed():
            out["monitor"] = state.result()
        else:
            latest = steps.read_latest_report(out["home"], cfg.monitor.dataset, cfg.monitor.freq)
            out["monitor"] = {
                "status": "breach" if latest else "error",
                "state": state.name,
                "message": state.message,
                "breaches": None
                if latest is None
                else [f"{b['name']}[{b['symbol'] or 'all'}]" for b in latest["breaches"]],
            }
            if cfg.fail_on_monitor_breach:
                raise MonitoringBreach(state.message or "monitoring failed")
        lap("monitor")
    return out


@flow(name="dprm-backtest", task_runner=ThreadPoolTaskRunner(max_workers=1))
def backtest_flow(cfg: BacktestFlowConfig = BacktestFlowConfig()) -> dict[str, Any]:
    """The margin backtest (``pipelines.backtest.run_backtest``) with each checkpointed chunk a
    task on the flow's task runner (Dask by configuration), then the report. Killed and
    restarted, it recomputes only the chunks whose parts are missing: the outputs are the same
    bytes."""
    from pipelines import backtest as bt

    home = _home()

    def chunks(jobs: Any) -> None:
        futures = [backtest_chunk_task.submit(j) for j in jobs]
        wait(futures)
        for fu in futures:
            fu.result()

    run = bt.run_backtest(
        home, cfg.dataset, start=cfg.start, end=cfg.end,
        methods=cfg.methods or bt.DEMO_METHODS, portfolios=cfg.portfolios or bt.DEMO_PORTFOLIOS,
        symbols=list(cfg.symbols) if cfg.symbols else None, chunk_days=cfg.chunk_days,
        chunk_runner=chunks, perp_dataset=cfg.perp_dataset)
    out: dict[str, Any] = {"out_dir": str(run.out_dir), "seeded": run.seeded,
                           "resumed_chunks": run.resumed_chunks, "meta": run.summary["meta"],
                           "rows": run.summary["rows"],
                           "terciles": run.summary.get("mm_vs_deribit_by_vol_tercile") or []}
    if cfg.impulse:
        out["impulse"] = bt.impulse_response(home)
    if cfg.report:
        out["report"] = backtest_report_task(home, cfg.dataset)
    return out


SWEEP = {
    "default": {},
    "var 97.5% / es 99%": {"measure": "es", "es_confidence": 0.99},
    "measure VaR99": {"measure": "var"},
    "FHS lookback 500": {"fhs_lookback_days": 500},
    "EWMA lambda 0.97": {"ewma_lambda": 0.97},
    "MPOR 2 days": {"mpor_days": {"spot": 2, "perpetual": 2, "option": 2, "future": 2}},
    "no grid floor": {"grid_floor_share": 0.0},
    "no stress blend": {"blend_x": 1.0},
    "no stress blend, no grid floor": {"blend_x": 1.0, "grid_floor_share": 0.0},
}
"""The sensitivity sweep's settings (margin-parameter overrides; the APC options are in every
run's variants)."""


@flow(name="dprm-backtest-sweep", task_runner=ThreadPoolTaskRunner(max_workers=2))
def backtest_sweep_flow(home: str | None = None, dataset: str = "embedded",
                        start: str | None = None, end: str | None = None,
                        symbols: list[str] | None = None,
                        methods: tuple[str, ...] = ("dprm", "fhs_ewma_94"),
                        portfolios: tuple[str, ...] = ("long",)) -> list[dict[str, Any]]:
    """The sensitivity sweep: one backtest per :data:`SWEEP` setting on the task runner; one row
    per setting x portfolio x method (coverage before APC, margin and procyclicality)."""
    from margin.params import MarginParams
    from pipelines import backtest as bt

    h = home or _home()
    seeds = [m for m in methods if bt.METHODS[m].method == "dprm"]
    if seeds:  # seed the ledger once, before the settings run side by side
        bt.run_backtest(h, dataset, start=start, end=end, methods=seeds[:1],
                        portfolios=portfolios[:1], symbols=symbols)
    futures = {name: backtest_sweep_task.submit(h, dataset, start, end, symbols, methods, portfolios,
                                       MarginParams(**upd).model_dump(mode="json"))
               for name, upd in SWEEP.items()}
    wait(list(futures.values()))
    rows = []
    for name, fu in futures.items():
        for r in fu.result():
            if r["apc"] == "none":
                rows.append({"setting": name, **{k: r.get(k) for k in (
                    "portfolio", "method", "var_breaches", "expected", "p_cc",
                    "mean_margin_pct", "pc_max_30d", "pc_peak_trough")}})
    return rows


def _multi_symbol(home: str, dataset: str) -> bool:
    """Whether ``dataset`` holds two or more symbols (a correlation model to train)."""
    return len(steps.dataset_symbols(home, dataset)) >= 2


# ---- functions the CLI calls ---------------------------------------------------------------------
def _run(fl: Any, cfg: Any, runner: RunnerConfig | None) -> dict[str, Any]:
    """Run a flow (``runner`` or the ``DPRM_RUNNER`` environment choose the task runner)."""
    fl = fl.with_options(task_runner=make_runner(runner_config_from_env(runner)))
    state = fl(cfg, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, DPRMError):  # input a user must fix: one line at the CLI, not a state
        raise result
    if isinstance(result, BaseException):
        return {"state": state.name, "error": str(result)}
    summary = result if isinstance(result, dict) else {"result": result}
    return {"state": state.name, **summary}


def run_ingest(
    cfg: IngestFlowConfig | None = None, runner: RunnerConfig | None = None
) -> dict[str, Any]:
    """Run the ingest flow; ``{"state": ..., "result": [per-source dicts]}``."""
    return _run(ingest, cfg or IngestFlowConfig(), runner)


def run_build_features(
    cfg: FeaturesFlowConfig | None = None, runner: RunnerConfig | None = None
) -> dict[str, Any]:
    """Run the feature flow; the build summary with ``state``."""
    return _run(build_features, cfg or FeaturesFlowConfig(), runner)


def run_train(
    cfg: TrainFlowConfig | None = None, runner: RunnerConfig | None = None
) -> dict[str, Any]:
    """Run the training flow; challenger, version, gate status and ranking, with ``state``."""
    return _run(train, cfg or TrainFlowConfig(), runner)


def run_train_correlation(cfg: CorrTrainFlowConfig | None = None) -> dict[str, Any]:
    """Run the correlation training flow; scores, challenger, version and gate, with ``state``."""
    return _run(train_correlation, cfg or CorrTrainFlowConfig(), None)


def run_forecast(cfg: ForecastFlowConfig | None = None) -> dict[str, Any]:
    """Run the forecast flow; path, model, version, source and cutoff, with ``state``."""
    return _run(forecast, cfg or ForecastFlowConfig(), None)


def run_monitor(cfg: MonitorFlowConfig | None = None) -> dict[str, Any]:
    """Run the monitor flow; ``status`` "ok" or "breach", ``state`` "Failed" on a breach with
    ``fail_on_breach``, ``report`` the report written by this run. An exception inside the flow
    (bad input, a bug) is raised again here, never reported as a breach."""
    cfg = cfg or MonitorFlowConfig()
    state = monitor(cfg, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    out = {"state": state.name, **result}
    out["report"] = json.loads(Path(result["json_path"]).read_text())
    return out


def run_backtest_flow(cfg: BacktestFlowConfig | None = None) -> dict[str, Any]:
    """The backtest flow on the configured task runner (``cfg.runner``, else ``DPRM_RUNNER``:
    threads, or Dask workers that each compute whole chunks)."""
    cfg = cfg or BacktestFlowConfig()
    fl = backtest_flow.with_options(task_runner=make_runner(runner_config_from_env(cfg.runner)))
    return fl(cfg)


def run_cycle(cfg: CycleConfig | None = None) -> dict[str, Any]:
    """Run the whole cycle (the demo); per-step summaries with ``state``."""
    return _run(daily_cycle, cfg or CycleConfig(), None)


def demo_cycle_config(dataset: str = "embedded") -> CycleConfig:
    """The demo cycle on embedded or simulated data, with the monitoring clock at the data's end
    (the data are historical or simulated, so a wall-clock freshness check would always breach).

    Parameters
    ----------
    dataset : "embedded" (arch's daily S&P 500 and NASDAQ, 1999-2018; 1D features; model
        "dprm-forecaster") or "sim" (the simulator's default 60 days of ticks; 1h features;
        model "dprm-forecaster-sim").
    """
    monitor = MonitorFlowConfig(now="data")
    if dataset == "embedded":
        return CycleConfig(monitor=monitor)
    if dataset == "sim":
        return CycleConfig(
            dataset="sim",
            freq="1h",
            model_name="dprm-forecaster-sim",
            ingest=IngestFlowConfig(sources=("simulate",)),
            monitor=monitor,
        )
    raise ConfigError(f"demo dataset must be 'embedded' or 'sim'; got {dataset!r}")


if __name__ == "__main__":  # pragma: no cover - used by the kill/restart test and by hand
    import json
    import sys

    from pipelines.config import load_config

    path = sys.argv[1] if len(sys.argv) > 1 else None
    c = load_config(CycleConfig, None if path is None else __import__("pathlib").Path(path))
    print(json.dumps(run_cycle(c), default=str))
