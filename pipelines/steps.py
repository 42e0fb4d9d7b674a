"""Pipeline steps: thin functions that call the libraries and write to the workspace.

The Prefect tasks and the CLI both call these; they hold no maths of their own.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from features.ingest import IngestReport, validate_dataset, write_chunks
from features.store import DataStore, atomic_write_parquet
from pipelines.config import DemoConfig, SimulateConfig


def simulate_to_store(store: DataStore, cfg: SimulateConfig) -> tuple[IngestReport, Path]:
    """Simulate a market with ``cfg`` and store its tables; the truth goes to ``<dataset>/truth/``."""
    from features.ingest import ingest_frames
    from features.simulate import SimConfig, simulate

    sim_cfg = SimConfig(n_days=cfg.n_days).select(*cfg.symbols)
    result = simulate(sim_cfg, random_state=cfg.seed)
    tables: dict[str, tuple[str, pd.DataFrame, pd.Timedelta | None]] = {}
    for name, (kind, frame) in result.tables().items():
        interval = pd.Timedelta(name.split("_", 1)[1]) if name.startswith("bars_") else None
        tables[name] = (kind, frame, interval)
    report = ingest_frames(store, cfg.dataset, tables, source=f"simulator(seed={cfg.seed}, days={cfg.n_days})")
    truth_dir = store.path(cfg.dataset) / "truth"
    for name, frame in result.truth().items():
        atomic_write_parquet(truth_dir / f"{name}.parquet", frame)
    return report, truth_dir


def ingest_embedded(store: DataStore, dataset: str = "embedded") -> list[IngestReport]:
    """Store the real daily data shipped inside the ``arch`` package (S&P 500, NASDAQ, VIX)."""
    import arch

    from features.readers.arch_data import EMBEDDED, load_embedded

    reports = []
    for name in EMBEDDED:
        fp = hashlib.blake2b(f"arch-{arch.__version__}-{name}".encode(), digest_size=16).hexdigest()
        reports.append(write_chunks(store, dataset, load_embedded(name), source=f"arch.data.{name}",
                                    fingerprint=fp))
    return reports


def run_demo(cfg: DemoConfig, console: Any) -> dict[str, Any]:
    """The demo: ingest the embedded data and the simulator output, validate, summarise."""
    from models.registry import verify_registry
    from pipelines.cli import _print_ingest, _print_validation
    from pipelines.config import dprm_home

    home = dprm_home()
    verify_registry(home)  # an unreachable or inconsistent registry fails now, in seconds
    store = DataStore(home / "data")
    console.rule("1. ingest embedded real data (arch: S&P 500, NASDAQ, VIX)")
    reports = ingest_embedded(store, cfg.embedded_dataset)
    console.rule(f"2. simulate {cfg.simulate.n_days} days of {len(cfg.simulate.symbols)} assets")
    with console.status("simulating"):
        sim_report, truth_dir = simulate_to_store(store, cfg.simulate)
    _print_ingest([*reports, sim_report], store)
    console.print(f"simulator ground truth: {truth_dir}")
    console.rule("3. validate")
    results = {ds: validate_dataset(store, ds) for ds in (cfg.embedded_dataset, cfg.simulate.dataset)}
    _print_validation(results)
    console.rule("4. summary")
    from rich.table import Table

    t = Table(title="Stored data")
    summary = pd.concat([store.summary(ds) for ds in results], ignore_index=True)
    for c in ("dataset", "table", "symbol", "rows", "first", "last"):
        t.add_column(c)
    for row in summary.itertuples(index=False):
        t.add_row(row.dataset, row.table, row.symbol, f"{row.rows:,}", str(row.first)[:19], str(row.last)[:19])
    console.print(t)
    console.rule("5. the forecasting cycle through Prefect: ingest -> features -> train -> forecast -> monitor")
    from pipelines.flows import demo_cycle_config, run_cycle

    cycles = {}
    for ds in ("embedded", "sim"):
        ccfg = demo_cycle_config(ds)
        ccfg = ccfg.model_copy(update={"monitor": ccfg.monitor.model_copy(update={"fail_on_breach": False})})
        with console.status(f"daily_cycle on {ds}"):
            cycles[ds] = run_cycle(ccfg)
        _print_cycle(console, ds, cycles[ds])
    console.rule("where things are")
    console.print(f"workspace:      {home}")
    console.print(f"canonical data: {home / 'data'}")
    console.print(f"features:       {home / 'features'}")
    console.print(f"forecasts:      {home / 'forecasts'}")
    console.print(f"MLflow store:   {os.environ.get('MLFLOW_TRACKING_URI') or 'sqlite:///' + str(home / 'mlflow.db')}"
                  f" (artifacts {home / 'mlartifacts'}); `dprm models list`")
    console.print(f"reports:        {home / 'reports'}")
    return {"home": home, "validation": results, "cycles": cycles}


def _print_cycle(console: Any, dataset: str, out: dict[str, Any]) -> None:
    """A compact view of one cycle's summary (every step's state and key outputs)."""
    from rich.table import Table

    t = Table(title=f"daily_cycle on {dataset}")
    t.add_column("step")
    t.add_column("result")
    for step in ("ingest", "features", "train", "forecast", "monitor"):
        r = out.get(step)
        if r is None:
            continue
        if isinstance(r, list):
            detail = f"{len(r)} source(s) ingested"
        else:
            keys = {"features": ("rows", "path"),
                    "train": ("challenger", "version", "promoted", "gate_status", "gate_reason"),
                    "forecast": ("model", "version", "source", "data_cutoff_ts", "path"),
                    "monitor": ("status", "breaches", "report")}.get(step, ())
            detail = "; ".join(f"{k}={r[k]}" for k in keys if r.get(k) not in (None, ""))
        t.add_row(step, detail)
    console.print(t)


# ---- features and evaluation ----------------------------------------------------------------
def resolve_dataset(store: DataStore, data: str) -> str:
    """A dataset name from ``data``: an ingested dataset's name, or a file/folder to ingest first."""
    from features.ingest import default_dataset_name, ingest_file
    from features.readers import list_sources
    from features.schema import DataError

    if data in store.datasets():
        return data
    p = Path(data)
    if not p.exists():
        raise DataError(f"'{data}' is neither an ingested dataset ({store.datasets()}) nor a file or folder")
    if p.is_dir():
        files = [f for f, fmt, _ in list_sources(p) if fmt is not None]
        name = p.resolve().name
        for f in files:
            ingest_file(store, f, dataset=name)
        return name
    name = default_dataset_name(p)
    ingest_file(store, p, dataset=name)
    return name


def build_features(home: Path, dataset: str, cfg: Any) -> Any:
    """Build (incrementally) the feature frame of ``dataset`` at ``cfg.freq``."""
    from features.build import FeatureSpec, FeatureStore

    spec = FeatureSpec(freq=cfg.freq, grid=cfg.grid, horizons=tuple(cfg.horizons),
                       har_windows=tuple(getattr(cfg, "har_windows", (1, 5, 22))),
                       min_coverage=getattr(cfg, "min_coverage", 0.85))
    return FeatureStore(home / "features").build(DataStore(home / "data"), dataset, spec)


def ladder(cfg: Any, *, has_close: bool) -> dict[str, Any]:
    """The baseline ladder every evaluation includes (GARCH only where close prices exist)."""
    from models.ewma import EWMAVol, RandomWalkVol
    from models.har import (
        HARJVol,
        HARQDoWVol,
        HARQVol,
        HARVol,
        LogHARDoWVol,
        LogHARVol,
        SHARVol,
    )

    common = {"window": cfg.window, "window_type": cfg.window_type, "refit_every": cfg.refit_every,
              "min_obs": None, "horizons": tuple(cfg.horizons)}
    models: dict[str, Any] = {
        "random_walk": RandomWalkVol(min_obs=None),
        "ewma_0.94": EWMAVol(min_obs=None),
        "har": HARVol(**common),
        "log_har": LogHARVol(**common),
        "har_j": HARJVol(**common),
        "shar": SHARVol(**common),
        "harq": HARQVol(**common),
        "log_har_dow": LogHARDoWVol(**common),
        "harq_dow": HARQDoWVol(**common),
    }
    if has_close:
        from models.garch import GarchVol

        g = {"window": cfg.window, "refit_every": cfg.garch_refit_every, "min_obs": None}
        models["garch_1_1"] = GarchVol(vol="GARCH", dist="normal", **g)
        models["gjr_t"] = GarchVol(vol="GJR", o=1, dist="t", **g)
    learned = learned_models(cfg)
    if cfg.models:
        unknown = sorted(set(cfg.models) - set(models) - set(learned))
        if unknown:
            from features.schema import DataError

            raise DataError(f"unknown model(s) {unknown}; available: {sorted(models)} and "
                            f"the learned models {sorted(learned)}")
        models = {k: v for k, v in {**models, **learned}.items() if k in cfg.models}
    return models


LEARNED = ("lgbm", "har_boost", "qlike_combo")
"""Learned models ``dprm evaluate --models`` can add to the ladder; each keeps its own schedule."""


def learned_models(cfg: Any) -> dict[str, Any]:
    """LightGBM (direct log-variance, expanding window retrained every 21 periods), LightGBM on the
    log-HAR-DoW residual, and the QLIKE-weighted combination of log-HAR-DoW and two LightGBMs (the
    daily crypto champion's specification, ``benchmarks/eval_daily_crypto.py``)."""
    from models.combine import HARBoostVol, QLIKEWeightedVol
    from models.har import LogHARDoWVol
    from models.lgbm import LGBMVol

    hs = tuple(cfg.horizons)
    dow = {"window": cfg.window, "window_type": cfg.window_type, "refit_every": cfg.refit_every,
           "min_obs": None, "horizons": hs}
    return {
        "lgbm": LGBMVol(horizons=hs, min_obs=None, random_state=cfg.seed),
        "har_boost": HARBoostVol(base=LogHARDoWVol(window=500, window_type="expanding", min_obs=None,
                                                   horizons=hs),
                                 horizons=hs, min_obs=None, random_state=cfg.seed),
        "qlike_combo": QLIKEWeightedVol(
            members=[("log_har_dow", LogHARDoWVol(**dow)),
                     ("lgbm", LGBMVol(horizons=hs, min_obs=None, random_state=cfg.seed)),
                     ("lgbm_offw", LGBMVol(horizons=hs, offset_feature="lrv_w", min_obs=None,
                                           random_state=cfg.seed))],
            horizons=hs, lookback=250, power=8.0, min_obs=None),
    }


def load_truth(store: DataStore, dataset: str, freq: str) -> pd.DataFrame | None:
    """The simulator's true integrated variance aggregated to ``freq`` bars (None if not simulated)."""
    p = store.path(dataset) / "truth" / "truth_bars.parquet"
    if not p.exists():
        return None
    t = pd.read_parquet(p)
    out = (t.set_index("ts").groupby("symbol")["iv_var"]
           .resample(freq, closed="right", label="right").sum(min_count=1).reset_index())
    return out


def evaluate(home: Path, dataset: str, cfg: Any) -> tuple[Any, Path]:
    """Walk-forward evaluation of the ladder on ``dataset``; writes tables and plots, returns
    the result and the output folder."""
    from features.build import FeatureStore
    from features.schema import DataError
    from models.evaluation import walk_forward
    from pipelines.report import write_evaluation

    store = DataStore(home / "data")
    fcfg_freq = cfg.freq
    build_features(home, dataset, cfg)
    frame = FeatureStore(home / "features").read(dataset, fcfg_freq)
    data = frame[frame["valid"].astype(bool)].copy()
    if data.empty:
        raise DataError(f"dataset '{dataset}' has no valid {cfg.freq} bars to evaluate")
    has_close = "close" in data.columns and data["close"].notna().mean() > 0.9
    models = ladder(cfg, has_close=has_close)
    truth = load_truth(store, dataset, cfg.freq)
    n = data.groupby("symbol").size().min()
    window = min(cfg.window, max(50, int(n * 0.5)))
    if window != cfg.window:
        for m in models.values():
            if "window" in m.get_params():
                m.set_params(window=window)
    own = [k for k in models if k in LEARNED or k.startswith(("garch", "gjr"))]
    result = walk_forward(models, data, horizons=tuple(cfg.horizons), start=cfg.start, end=cfg.end,
                          window=window, window_type=cfg.window_type, refit_every=cfg.refit_every,
                          own_schedule=own, baselines=[k for k in models if k not in LEARNED] or None,
                          truth=truth, min_obs=None, mcs_reps=cfg.mcs_reps,
                          random_state=cfg.seed)
    out = write_evaluation(home, dataset, cfg, result, extra={"window_used": window,
                                                              "input_fingerprint": store.fingerprint(dataset)})
    return result, out


def evaluate_correlation(home: Path, dataset: str, cfg: Any) -> tuple[Any, Path]:
    """Walk-forward comparison of the correlation models on ``dataset``: returns from the finest
    bars (realized covariance targets from them when finer than ``cfg.freq``), else from the
    feature frame's closes. Writes the summary and settings; returns the result and the folder."""
    import json
    from datetime import UTC, datetime

    from features.schema import CLOSE, SYMBOL, TS, DataError
    from features.store import atomic_write_bytes, atomic_write_json
    from models.base import InsufficientHistoryError
    from models.corr import default_corr_models
    from models.corr_evaluation import evaluate_correlation_frame
    from models.corr_lgbm import LGBMCorr

    store = DataStore(home / "data")
    man = store.require(dataset)
    def span(info: dict) -> pd.Timedelta:
        """Time covered per symbol: rows x interval / symbols (gaps do not count)."""
        rows = sum(p["rows"] for p in info["partitions"].values())
        return rows * pd.Timedelta(info["interval"]) / max(1, len(info["symbols"]))

    # the bars table covering the most time (the finest among equals), no coarser than freq
    bars = sorted(((t, pd.Timedelta(i["interval"])) for t, i in man["tables"].items()
                   if i["kind"] == "bars" and t.startswith("bars_") and i.get("interval")
                   and pd.Timedelta(i["interval"]) <= pd.Timedelta(cfg.freq)),
                  key=lambda x: (-span(man["tables"][x[0]]).days, x[1]))
    if bars:
        frame = store.read(dataset, bars[0][0], columns=[TS, SYMBOL, CLOSE])
    else:
        from features.build import FeatureStore

        build_features(home, dataset, cfg)
        frame = FeatureStore(home / "features").read(dataset, cfg.freq)[[TS, SYMBOL, CLOSE]]
    if frame[SYMBOL].nunique() < 2:
        raise DataError(f"dataset '{dataset}' has {frame[SYMBOL].nunique()} symbol(s) with prices; "
                        "correlation needs at least 2")
    periods = int((frame[TS].max() - frame[TS].min()) / pd.Timedelta(cfg.freq))
    window = min(cfg.window, 500, max(60, periods // 2))

    def models(window: int) -> dict:
        """The comparison set: the library's baselines and the gradient-boosted ``lgbm``."""
        return {**default_corr_models(window=min(250, window)),
                "lgbm": LGBMCorr(random_state=cfg.seed, num_threads=1)}

    try:
        result = evaluate_correlation_frame(frame, freq=cfg.freq, horizons=tuple(cfg.horizons),
                                            window=window, random_state=cfg.seed,
                                            models=models(window))
    except InsufficientHistoryError as exc:
        # the common sample (periods where every symbol trades) can be shorter than the span:
        # retry once with half of it as the window
        if exc.periods // 2 < 30:
            raise
        window = exc.periods // 2
        result = evaluate_correlation_frame(frame, freq=cfg.freq, horizons=tuple(cfg.horizons),
                                            window=window, random_state=cfg.seed,
                                            models=models(window))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = home / "evaluations" / f"{dataset}-{cfg.freq}-correlation-{stamp}"
    summ = result.summary()
    atomic_write_bytes(out / "summary.csv", summ.to_csv(index=False).encode())
    atomic_write_json(out / "settings.json", {"dataset": dataset, "config": json.loads(cfg.model_dump_json()),
                                              "settings": {k: str(v) for k, v in result.settings.items()}})
    return result, out
