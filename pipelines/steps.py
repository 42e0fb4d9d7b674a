"""The pipeline's steps: plain functions the CLI commands and the Prefect tasks both call.

One path: ``dprm`` commands (:mod:`pipelines.cli`) and the flows (:mod:`pipelines.flows`, through
the thin task wrappers of :mod:`pipelines.tasks`) run these same functions. They hold no maths of
their own (that lives in ``features`` and ``models``), print nothing (they return data; rendering
is :mod:`pipelines.cli`'s) and import neither Prefect nor the CLI, so the layering inside
``pipelines`` is ``config``/``flow_config`` <- ``steps`` <- ``tasks`` <- ``flows`` <- ``deploy`` <-
``cli``.

Each step takes the workspace ``home`` (``$DPRM_HOME``) explicitly, so it runs the same on a Dask
worker, and is idempotent: running it again on unchanged inputs changes nothing and adds nothing.

Workspace layout written here (besides the data/feature stores and the MLflow store)::

    forecasts/<dataset>/<freq>/forecast_<cutoff>_<label>.parquet   one per data cutoff and model
    forecasts/<dataset>/<freq>/latest.json                           the newest file and its model
    reports/monitor/<dataset>_<freq>/<created>.json|.md, latest.*    monitoring reports
    state/forecast_source_<model>.json                               champion or baseline, and why
    evaluations/<dataset>-<freq>-...                                 `dprm evaluate` outputs

Models are named through :mod:`models.catalog`. Heavy imports (mlflow through
:mod:`models.registry`) happen inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.build import BuildReport, FeatureSpec, FeatureStore
from features.errors import ConfigError, ModelError
from features.ingest import IngestReport, write_chunks
from features.schema import BV, CLOSE, RQ, RS_NEG, RS_POS, RV, SYMBOL, TS, DataError
from features.store import (
    DataStore,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    safe_name,
)
from models import catalog
from models import monitoring as mon
from models.base import BaseForecaster, target_mean
from models.evaluation import (
    POOLED,
    EvaluationResult,
    SkippedModelWarning,
    merge_evaluations,
    walk_forward,
)
from models.schedule import WalkForward
from pipelines.config import FeaturesConfig, SimulateConfig
from pipelines.flow_config import (
    FeaturesFlowConfig,
    ForecastFlowConfig,
    IngestFlowConfig,
    ModelSpec,
    ModelTarget,
    MonitorFlowConfig,
    TrainFlowConfig,
    model_name_for,
)

__all__ = ["merge_evaluations"]  # re-exported: the flows' merge step (models.evaluation's)


# =================================================================================================
# ingest
# =================================================================================================
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



MODEL_COLUMNS = (RV, BV, RQ, RS_POS, RS_NEG, CLOSE)
"""Feature-frame columns handed to the forecasters (rows already filtered on ``valid``)."""


# =================================================================================================
# workspace
# =================================================================================================
@dataclass(frozen=True)
class Workspace:
    """Folders of a DPRM workspace."""

    home: Path

    @property
    def data(self) -> DataStore:
        """The canonical data store."""
        return DataStore(self.home / "data")

    @property
    def features(self) -> FeatureStore:
        """The feature store."""
        return FeatureStore(self.home / "features")

    def forecasts(self, dataset: str, freq: str) -> Path:
        """Folder of the persisted forecast tables of one feature frame."""
        return self.home / "forecasts" / safe_name(dataset) / safe_name(freq)

    def reports(self, dataset: str, freq: str) -> Path:
        """Folder of the monitoring reports of one feature frame."""
        return self.home / "reports" / "monitor" / f"{safe_name(dataset)}_{safe_name(freq)}"

    def state_file(self, model_name: str) -> Path:
        """The forecast-source state file of a registered model."""
        return self.home / "state" / f"forecast_source_{safe_name(model_name)}.json"


def _ws(home: Path | str) -> Workspace:
    return Workspace(Path(home).resolve())


# =================================================================================================
# ingest
# =================================================================================================
def simulate_label(cfg: IngestFlowConfig) -> str:
    """The source label the simulator's output is stored under (see :func:`simulate_to_store`)."""
    return f"simulator(seed={cfg.simulate.seed}, days={cfg.simulate.n_days})"


def ingest_source(home: Path | str, source: str, cfg: IngestFlowConfig) -> dict[str, Any]:
    """Ingest one source: "embedded", "simulate" or a file/folder path.

    Idempotent: the store skips content it already holds (by fingerprint); a simulation already
    stored under the same seed and length is not re-run.

    Returns
    -------
    dict with source, dataset, rows_added, skipped.
    """
    ws = _ws(home)
    store = ws.data
    if source == "embedded":
        reps = ingest_embedded(store, cfg.embedded_dataset)
        return {
            "source": source,
            "dataset": cfg.embedded_dataset,
            "rows_added": sum(r.rows_added for r in reps),
            "skipped": all(r.skipped for r in reps),
        }
    if source == "simulate":
        ds = cfg.simulate.dataset
        label = simulate_label(cfg)
        sources = store.manifest(ds)["sources"].values() if ds in store.datasets() else []
        if any(s.get("source") == label for s in sources) and (store.path(ds) / "truth").is_dir():
            return {"source": source, "dataset": ds, "rows_added": 0, "skipped": True}
        rep, _ = simulate_to_store(store, cfg.simulate)
        return {
            "source": source,
            "dataset": ds,
            "rows_added": rep.rows_added,
            "skipped": rep.skipped,
        }
    from features.ingest import ingest_file
    from features.readers import list_sources

    path = Path(source)
    if not path.exists():
        raise DataError(
            f"ingest source {source!r} is neither 'embedded', 'simulate' nor an existing path"
        )
    files = [f for f, fmt, _ in list_sources(path) if fmt is not None] if path.is_dir() else [path]
    added, skipped, datasets = 0, True, set()
    for f in files:
        rep = ingest_file(store, f, dataset=cfg.dataset)
        added += rep.rows_added
        skipped &= rep.skipped
        datasets.add(rep.dataset)
    return {
        "source": source,
        "dataset": ",".join(sorted(datasets)),
        "rows_added": added,
        "skipped": skipped,
    }


# =================================================================================================
# features
# =================================================================================================
def feature_spec(cfg: Any) -> FeatureSpec:
    """The library's :class:`FeatureSpec` from any command's or flow's settings (``freq``,
    ``grid``, ``horizons``, and ``har_windows``/``min_coverage`` where the settings have them,
    else the spec's defaults): one spec for the CLI and the flows."""
    extra = {k: getattr(cfg, k) for k in ("har_windows", "min_coverage") if hasattr(cfg, k)}
    if "har_windows" in extra:
        extra["har_windows"] = tuple(extra["har_windows"])
    return FeatureSpec(freq=cfg.freq, grid=cfg.grid, horizons=tuple(cfg.horizons), **extra)


def dataset_symbols(home: Path | str, dataset: str) -> list[str]:
    """Symbols (partition keys) stored in ``dataset``, sorted."""
    return _ws(home).data.symbols(dataset)


def warm_symbol_features(home: Path | str, cfg: FeaturesFlowConfig, symbol: str) -> dict[str, Any]:
    """Compute one symbol's per-partition base measures into the feature store's cache
    (:meth:`features.build.FeatureStore.build_symbol`), leaving only the cheap cross-symbol
    assembly to :func:`build_features`; mapped over the task runner by the features flow.

    Returns
    -------
    dict with symbol, computed (partitions computed now), reused (already cached).
    """
    ws = _ws(home)
    report = ws.features.build_symbol(ws.data, cfg.dataset, feature_spec(cfg), symbol)
    return {"symbol": symbol, "computed": report.base_computed, "reused": report.base_reused}


def build_feature_frame(home: Path | str, dataset: str, cfg: Any) -> BuildReport:
    """Build (incrementally) the feature frame of ``dataset`` with the settings ``cfg``
    (:func:`feature_spec`); returns the feature store's build report."""
    ws = _ws(home)
    return ws.features.build(ws.data, dataset, feature_spec(cfg))


def build_features(home: Path | str, cfg: FeaturesFlowConfig) -> dict[str, Any]:
    """Build (incrementally) the feature frame of ``cfg.dataset`` at ``cfg.freq``.

    Returns
    -------
    dict with dataset, freq, rows, symbols, partitions_written, partitions_unchanged, fingerprint.
    """
    rep = build_feature_frame(home, cfg.dataset, cfg)
    return {
        "dataset": cfg.dataset,
        "freq": cfg.freq,
        "rows": rep.rows,
        "symbols": sorted(rep.rv_source),
        "rv_source": dict(rep.rv_source),
        "base_computed": rep.base_computed,
        "base_reused": rep.base_reused,
        "partitions_written": rep.partitions_written,
        "partitions_unchanged": rep.partitions_unchanged,
        "fingerprint": feature_fingerprint(home, cfg.dataset, cfg.freq),
    }


def feature_fingerprint(
    home: Path | str, dataset: str, freq: str, symbols: Sequence[str] | None = None
) -> str:
    """Content fingerprint of a built feature frame (or some symbols of it), from the partition
    digests in its manifest."""
    man = _ws(home).features.manifest(dataset, freq)
    keep = None if symbols is None else {safe_name(s) for s in symbols}
    h = hashlib.blake2b(digest_size=16)
    h.update(str(man.get("feature_set_version", "")).encode())
    for rel, meta in sorted(man["partitions"].items()):
        if keep is None or rel.split("/")[0].split("=", 1)[1] in keep:
            h.update(f"{rel}:{meta['digest']}".encode())
    return h.hexdigest()


def feature_symbols(home: Path | str, dataset: str, freq: str) -> list[str]:
    """Symbols of a built feature frame that have realized variance (forecastable), sorted."""
    man = _ws(home).features.manifest(dataset, freq)
    return sorted(man.get("rv_source", {}))


def train_symbols(home: Path | str, cfg: TrainFlowConfig) -> list[str]:
    """The symbols a training run covers: ``cfg.symbols`` (checked) or every forecastable one."""
    available = feature_symbols(home, cfg.dataset, cfg.freq)
    if cfg.symbols is None:
        return available
    unknown = [s for s in cfg.symbols if s not in available]
    if unknown:
        raise DataError(
            f"train symbols {unknown} are not in {cfg.dataset}/{cfg.freq}; available: {available}"
        )
    return sorted(set(cfg.symbols))


def model_frame(
    home: Path | str, dataset: str, freq: str, symbols: Sequence[str] | None = None
) -> pd.DataFrame:
    """The forecasters' input: valid rows of the feature frame with ``ts``, ``symbol`` and the
    realized columns present (:data:`MODEL_COLUMNS`), sorted by symbol and ts.

    Rows flagged invalid by the feature build (too little coverage, no positive variance) are
    dropped here, so the models run with ``min_obs=None``.
    """
    syms = list(symbols) if symbols is not None else feature_symbols(home, dataset, freq)
    f = _ws(home).features.read(dataset, freq, symbols=syms)
    f = f[f[SYMBOL].isin(syms)]
    if "valid" in f.columns:
        f = f[f["valid"].astype(bool)]
    cols = [TS, SYMBOL, *[c for c in MODEL_COLUMNS if c in f.columns]]
    return f[cols].sort_values([SYMBOL, TS]).reset_index(drop=True)


# =================================================================================================
# models
# =================================================================================================
def build_model(spec: ModelSpec) -> BaseForecaster:
    """An unfitted forecaster from a :class:`ModelSpec`: the catalog's model ``spec.kind`` (a
    canonical name or an alias, :mod:`models.catalog`) with ``spec.params`` (lists become tuples);
    ``min_obs`` defaults to None (the feature build's ``valid`` flag has already removed thin
    periods)."""
    entry = catalog.resolve(spec.kind, "volatility")
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.params.items()}
    hs = params.pop("horizons", None)
    est = entry.build(hs, **params)
    if "min_obs" in est.get_params(deep=False) and "min_obs" not in params:
        est = entry.build(hs, **params, min_obs=None)
    return est


def training_model(spec: ModelSpec, cfg: TrainFlowConfig) -> BaseForecaster:
    """The forecaster as evaluated: :func:`build_model` with the training ``horizons`` and, unless
    the model keeps its own schedule (GARCH, LightGBM, the combinations), the training ``window``,
    ``window_type`` and ``refit_every``, where the model has them (the walk-forward evaluation runs
    each model on the same schedule, so the registered model is the one scored)."""
    est = build_model(spec)
    names = est.get_params(deep=False)
    upd: dict[str, Any] = {"horizons": tuple(cfg.horizons)}
    if not type(est).own_schedule:
        upd.update(window=cfg.window, window_type=cfg.window_type, refit_every=cfg.refit_every)
    est.set_params(**{k: v for k, v in upd.items() if k in names})
    return est


def _eval_start(data: pd.DataFrame, cfg: TrainFlowConfig) -> pd.Timestamp | None:
    if cfg.eval_periods is None:
        return None
    ts = np.sort(data[TS].unique())
    k = len(ts) - cfg.eval_periods - max(cfg.horizons)
    return pd.Timestamp(ts[max(k, 0)]) if k > 0 else None


def evaluate_symbol(home: Path | str, cfg: TrainFlowConfig, symbol: str) -> EvaluationResult:
    """Walk-forward evaluation of every candidate on one symbol (the unit mapped over the runner).

    Candidates that lack inputs on this data (e.g. HARQ without realized quarticity) are skipped
    and listed in the result's ``skipped``.
    """
    data = model_frame(home, cfg.dataset, cfg.freq, [symbol])
    if data.empty:
        raise DataError(f"no valid rows for symbol {symbol!r} in {cfg.dataset}/{cfg.freq}")
    models = {name: build_model(spec) for name, spec in cfg.candidates.items()}
    # a candidate whose declared inputs the data lack is skipped here with the catalog's reason
    # (warnings raised in the runner's threads would print despite catch_warnings)
    has_close = CLOSE in data.columns and bool(data[CLOSE].notna().any())
    pre = {name: why for name, spec in cfg.candidates.items()
           if (why := catalog.missing_inputs(catalog.resolve(spec.kind), data.columns,
                                             has_close=has_close)) is not None}
    for name in pre:
        del models[name]
    own = {name: WalkForward() for name, m in models.items() if type(m).own_schedule}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skipped models are in result.skipped
        result = walk_forward(
            models,
            data,
            horizons=tuple(cfg.horizons),
            start=_eval_start(data, cfg),
            schedule=WalkForward(cfg.window, cfg.window_type, cfg.refit_every),
            schedules=own,
            min_obs=None,
            baselines=[b for b in cfg.baselines if b in models] or None,
            mcs_reps=cfg.mcs_reps,
            random_state=cfg.seed,
        )
    return result.with_missing_inputs(pre)


def rank_candidates(result: EvaluationResult, cfg: TrainFlowConfig) -> pd.DataFrame:
    """Candidates ranked by pooled QLIKE (realized target, all periods) averaged over horizons.

    Returns
    -------
    DataFrame with model_id, qlike, qlike_ratio (vs the pooled best baseline), is_baseline, sorted
    best first.
    """
    pooled = result.losses[
        (result.losses["symbol"] == POOLED)
        & (result.losses["regime"] == "all")
        & (result.losses["target"] == "realized")
    ]
    if pooled.empty:
        raise ValueError("the evaluation has no pooled realized losses to rank candidates by")
    out = pooled.groupby("model_id")[["qlike", "qlike_ratio"]].mean().reset_index()
    out["is_baseline"] = out["model_id"].isin(cfg.baselines)
    return out.sort_values(["qlike", "model_id"]).reset_index(drop=True)


def score_table(result: EvaluationResult) -> list[dict[str, Any]]:
    """Per model, symbol (and "pooled") and horizon: n, qlike, qlike_ratio on the realized target
    over all periods, as records (the train flow's summary)."""
    loss = result.losses[
        (result.losses["regime"] == "all") & (result.losses["target"] == "realized")
    ]
    cols = ["model_id", "symbol", "horizon", "n", "qlike", "qlike_ratio"]
    out = loss[cols].sort_values(["symbol", "horizon", "model_id"]).reset_index(drop=True)
    return [
        {**r, "horizon": int(r["horizon"]), "n": int(r["n"])} for r in out.to_dict(orient="records")
    ]


def choose_challenger(ranking: pd.DataFrame) -> str:
    """The best non-baseline candidate (the best baseline when every candidate is a baseline)."""
    non_base = ranking[~ranking["is_baseline"]]
    return str((non_base if not non_base.empty else ranking)["model_id"].iloc[0])


def train_key(cfg: TrainFlowConfig, data_fp: str, challenger: str) -> str:
    """Identity of one training outcome: data fingerprint, settings and the chosen model.

    A rerun on the same data and settings finds the version registered with this key and does not
    register (or log) again.
    """
    settings = cfg.model_dump(mode="json", exclude={"promote", "register_model", "refresh_cache"})
    settings["model_name"] = cfg.registered_model  # the same key whether named or defaulted
    doc = json.dumps(
        {"fp": data_fp, "cfg": settings, "challenger": challenger},
        sort_keys=True,
    )
    return hashlib.blake2b(doc.encode(), digest_size=16).hexdigest()


@dataclass
class TrainOutcome:
    """What :func:`register_and_promote` did."""

    challenger: str
    version: str
    run_id: str
    reused: bool
    promoted: bool
    gate_status: str
    gate_reason: str
    champion_version: str | None
    ranking: list[dict[str, Any]] = field(default_factory=list)
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


def _find_run(home: Path, key: str) -> str | None:
    """A finished evaluation run already logged with ``dprm.train_key == key``."""
    from mlflow import MlflowClient

    from models import registry

    client = MlflowClient(tracking_uri=registry.init_store(home))
    exp = registry.experiment_id(home, "volatility")
    runs = client.search_runs(
        [exp],
        filter_string=f"tags.`dprm.train_key` = '{key}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def find_version(home: Path, name: str, key: str) -> dict[str, Any] | None:
    """The latest version of ``name`` registered with ``dprm.train_key == key`` (its
    :func:`models.registry.show_version` record), or None."""
    from models import registry

    versions = registry.list_versions(home=home, name=name)
    for v in reversed(versions["version"].tolist()):
        info = registry.show_version(v, home=home, name=name)
        if info["tags"].get("dprm.train_key") == key:
            return info
    return None


def log_evaluation(
    home: Path | str, cfg: TrainFlowConfig, result: EvaluationResult, key: str
) -> str:
    """Log the merged evaluation to MLflow once per training key; returns the run id."""
    from models import registry

    home = Path(home).resolve()
    existing = _find_run(home, key)
    if existing is not None:
        return existing
    data = model_frame(home, cfg.dataset, cfg.freq, train_symbols(home, cfg))
    models = {n: build_model(s) for n, s in cfg.candidates.items()}
    return registry.log_evaluation_run(
        result,
        home=home,
        models=models,
        data=data,
        config=cfg,
        run_name=f"train-{cfg.dataset}-{cfg.freq}",
        tags={"dprm.train_key": key, "dprm.dataset": cfg.dataset, "dprm.freq": cfg.freq},
    )


def gate_config(cfg: TrainFlowConfig, *, champion_benched: bool = False) -> Any:
    """The registry's promotion-gate settings aligned with the training settings.

    With ``champion_benched`` (monitoring switched forecasting to the baseline) the
    ``forecast_change`` check is left out: it bounds the jump from the champion's forecasts, but the
    served forecasts are the baseline's and the benched champion is known to be wrong, so the check
    would block exactly the repair it should allow. Every other check still applies (the challenger
    must beat the benched champion and the best baseline).
    """
    from models.gate import GateConfig

    n = cfg.eval_periods or 250
    checks = GateConfig.model_fields["checks"].default
    if champion_benched:
        checks = tuple(c for c in checks if c != "forecast_change")
    return GateConfig(
        checks=checks,
        horizons=tuple(cfg.horizons),
        n_origins=max(10, min(250, n)),
        window=cfg.window,
        window_type=cfg.window_type,
        refit_every=cfg.refit_every,
        min_obs=None,
        mcs_reps=cfg.mcs_reps,
        random_state=cfg.seed,
    )


def check_train_target(home: Path | str, cfg: TrainFlowConfig) -> None:
    """Refuse to register a model of ``cfg.dataset``/``cfg.freq`` into a registered model whose
    versions were trained on another dataset or frequency (the gate would compare forecasts of
    different data); :class:`~features.errors.ConfigError` naming both and the way out."""
    from models import registry

    name = cfg.registered_model
    versions = registry.list_versions(home=home, name=name)
    trained = {
        (str(d), str(f))
        for d, f in zip(versions["dataset"], versions["freq"], strict=True)
        if d or f
    }
    other = sorted(t for t in trained if t != (cfg.dataset, cfg.freq))
    if other:
        held = ", ".join(f"{d}/{f}" for d, f in other)
        raise ConfigError(
            f"registered model {name!r} holds versions trained on {held}; this run trains "
            f"{cfg.dataset}/{cfg.freq}: name another model with --model (the dataset's own model "
            f"is {model_name_for(cfg.dataset)!r})"
        )


def register_and_promote(
    home: Path | str, cfg: TrainFlowConfig, result: EvaluationResult, data_fp: str
) -> TrainOutcome:
    """Choose the challenger, log the evaluation, register the bundle (challenger + the EWMA fallback
    member) and run the promotion gate; idempotent per :func:`train_key`.

    The whole sequence (find the run and version of this training key, else log and register;
    then promote) holds the model's registry lock (:func:`models.promotion_log.model_lock`), so two
    processes training the same configuration at once register one version and promote it once.
    The registry is cross-checked with the promotion log first. On a passed gate the forecast
    source returns to the champion (recorded with the reason).
    """
    from models import registry
    from models.promotion_log import model_lock

    home = Path(home).resolve()
    with model_lock(home, cfg.registered_model):
        registry.verify_registry(home, cfg.registered_model)
        check_train_target(home, cfg)
        return _register_and_promote(home, cfg, result, data_fp)


def _register_and_promote(
    home: Path, cfg: TrainFlowConfig, result: EvaluationResult, data_fp: str
) -> TrainOutcome:
    from models import registry

    name = cfg.registered_model
    ranking = rank_candidates(result, cfg)
    challenger = choose_challenger(ranking)
    key = train_key(cfg, data_fp, challenger)
    run_id = log_evaluation(home, cfg, result, key)
    found = find_version(home, name, key)
    data = model_frame(home, cfg.dataset, cfg.freq, train_symbols(home, cfg))
    reused = found is not None
    if found is None:
        members = {challenger: training_model(cfg.candidates[challenger], cfg)}
        if challenger != "ewma":
            members["ewma"] = training_model(ModelSpec(kind="ewma"), cfg)
        ref = registry.register_challenger(
            members,
            home=home,
            training_data=data,
            primary=challenger,
            horizons=tuple(cfg.horizons),
            evaluation_run_id=run_id,
            name=name,
            description=f"{challenger} on {cfg.dataset}/{cfg.freq} (train key {key})",
            tags={"dprm.train_key": key, "dprm.dataset": cfg.dataset, "dprm.freq": cfg.freq},
        )
        version, status = ref.version, "pending"
    else:
        version, status = str(found["version"]), found["tags"].get("gate.status", "pending")
    champion_version = registry.champion_version(home, name)
    promoted, reason = False, ""
    if champion_version == version:
        status, reason = "passed", "already the champion"
    elif cfg.promote and status == "pending":
        benched = forecast_source(home, name)["source"] == "baseline"
        res = registry.promote(
            version,
            home=home,
            data=data,
            name=name,
            gate_config=gate_config(cfg, champion_benched=benched),
        )
        promoted = res.promoted
        status = "passed" if promoted else "rejected"
        reason = "" if res.decision is None else res.decision.reason
        if promoted:
            champion_version = version
            set_forecast_source(
                home,
                name,
                "champion",
                f"version {version} passed the promotion gate",
                version=version,
            )
    elif status == "rejected":
        reason = found["tags"].get("gate.reason", "") if found else ""
    return TrainOutcome(
        challenger,
        version,
        run_id,
        reused,
        promoted,
        status,
        reason,
        champion_version,
        ranking.to_dict(orient="records"),
        model=name,
    )


# =================================================================================================
# forecast source state (champion or baseline fallback)
# =================================================================================================
def forecast_source(home: Path | str, model_name: str) -> dict[str, Any]:
    """The forecast-source state: ``{"source": "champion" | "baseline", "reason", "since", ...}``
    (champion when no state was ever written)."""
    p = _ws(home).state_file(model_name)
    if not p.exists():
        return {"source": "champion", "reason": "default", "since": None, "history": []}
    return json.loads(p.read_text())


def set_forecast_source(
    home: Path | str, model_name: str, source: str, reason: str, **extra: Any
) -> dict[str, Any]:
    """Record the forecast source with its reason (atomic write; the history keeps every switch)."""
    if source not in ("champion", "baseline"):
        raise ConfigError(f"source must be 'champion' or 'baseline'; got {source!r}")
    old = forecast_source(home, model_name)
    now = pd.Timestamp.now(tz="UTC").isoformat()
    history = list(old.get("history", []))
    if old.get("source") != source or old.get("since") is None:
        history.append({"source": source, "reason": reason, "at": now, **extra})
        since = now
    else:
        since = old["since"]
    state = {
        "model_name": model_name,
        "source": source,
        "reason": reason,
        "since": since,
        **extra,
        "history": history[-100:],
    }
    atomic_write_json(_ws(home).state_file(model_name), state)
    return state


# =================================================================================================
# forecast
# =================================================================================================
def _history(data: pd.DataFrame, rows: int) -> pd.DataFrame:
    return data.groupby(SYMBOL, sort=True).tail(rows).reset_index(drop=True)


def check_champion(home: Path | str, cfg: ModelTarget) -> dict[str, Any] | None:
    """The champion of ``cfg.registered_model`` checked against the data it is asked to forecast.

    The registry is cross-checked with the promotion log first (a champion the log names but the
    registry lacks is a :class:`~features.errors.RegistryError`, never a silent fallback). Returns
    None only when neither has a champion, else :func:`models.registry.show_version`'s record.

    Raises
    ------
    ModelError
        When the champion was trained at another frequency than ``cfg.freq``, or on another
        dataset while the model name was not given explicitly (``--model``).
    """
    from models import registry

    name = cfg.registered_model
    version = registry.champion_version(Path(home), name)
    if version is None:
        return None
    info = registry.show_version(version, home=Path(home), name=name)
    ds, fq = info["tags"].get("dprm.dataset"), info["tags"].get("dprm.freq")
    if (fq and fq != cfg.freq) or (ds and ds != cfg.dataset and cfg.model_name is None):
        raise ModelError(
            f"the champion of {name!r} (version {version}) was trained on {ds or '?'}/{fq or '?'}, "
            f"not {cfg.dataset}/{cfg.freq}: pass --model NAME for a model of "
            f"{cfg.dataset}/{cfg.freq} (`dprm models list` shows them) or train one "
            f"(`dprm train --dataset {cfg.dataset} --freq {cfg.freq}`)"
        )
    return info


def _champion_data(
    info: dict[str, Any], data: pd.DataFrame, cfg: ModelTarget
) -> tuple[pd.DataFrame, list[str]]:
    """``data`` restricted to the symbols the champion was fitted on, and the data's symbols it
    does not cover; no symbol in common is a :class:`~features.errors.ModelError`."""
    fitted = json.loads(info["tags"].get("dprm.symbols") or "[]")
    if not fitted:
        return data, []
    have = sorted(map(str, data[SYMBOL].unique()))
    keep = [s for s in have if s in set(fitted)]
    if not keep:
        raise ModelError(
            f"the champion of {info['name']!r} (version {info['version']}) was fitted on symbols "
            f"{sorted(fitted)}; {cfg.dataset}/{cfg.freq} has {have}: none in common; pass "
            "--model NAME for a model of this data (`dprm models list` shows them)"
        )
    return data[data[SYMBOL].isin(keep)].reset_index(drop=True), [s for s in have if s not in keep]


def _stamp(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y%m%dT%H%M%SZ")


@dataclass
class ForecastOutcome:
    """What :func:`forecast_step` wrote."""

    path: str
    source: str
    reason: str
    model: str
    version: str
    data_cutoff_ts: str
    rows: int
    written: bool
    not_covered: list[str] = field(default_factory=list)
    """Symbols of the data the champion was not fitted on (not forecast)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


def forecast_step(home: Path | str, cfg: ForecastFlowConfig) -> ForecastOutcome:
    """Roll the champion (or, after a monitoring breach or without a champion, the baseline)
    forward on the latest data and persist the forecast table.

    The file ``forecast_<cutoff>_<model label>.parquet`` is written atomically and only once per
    data cutoff and model version; ``latest.json`` points at it. Columns: the long forecast table of
    :meth:`models.forecast.VolForecast.to_frame` plus dataset, freq, registered_model,
    registered_version, model_uri, source and source_reason.
    """
    home = Path(home).resolve()
    ws = _ws(home)
    data = _history(model_frame(home, cfg.dataset, cfg.freq), cfg.history)
    if data.empty:
        raise DataError(f"no valid feature rows in {cfg.dataset}/{cfg.freq} to forecast from")
    from models import registry

    name = cfg.registered_model
    registry.verify_registry(home, name)  # also when serving the baseline: never fail open
    state = forecast_source(home, name)
    champion = None
    not_covered: list[str] = []
    reason = state.get("reason", "")
    if state["source"] == "champion":
        info = check_champion(home, cfg)
        if info is None:
            reason = f"no champion of {name!r} registered yet"
        else:
            data, not_covered = _champion_data(info, data, cfg)
            champion = registry.load_champion(home=home, name=name)
    if champion is not None:
        table = champion.predict(data, origins="last")
        table = table[table["model_id"] == champion.primary].copy()
        ref = champion.ref
        source, model, version, uri = "champion", ref.name, ref.version, ref.uri
        label = f"{safe_name(ref.name)}-v{ref.version}"
        reason = reason if state.get("since") else "champion"
    else:
        est = build_model(cfg.baseline).fit(data)
        fc = est.predict(data, horizons=tuple(cfg.horizons))
        parts = [f.to_frame() for f in fc.values()]
        table = pd.concat(parts, ignore_index=True)
        table = table[table["origin_ts"] == table.groupby("symbol")["origin_ts"].transform("max")]
        source, model, version, uri = "baseline", f"baseline:{cfg.baseline.kind}", "-", ""
        label = f"baseline-{cfg.baseline.kind}"
    cutoff = pd.Timestamp(table["data_cutoff_ts"].max())
    table = table.assign(
        dataset=cfg.dataset,
        freq=cfg.freq,
        registered_model=model,
        registered_version=version,
        model_uri=uri,
        source=source,
        source_reason=reason,
    ).reset_index(drop=True)
    out_dir = ws.forecasts(cfg.dataset, cfg.freq)
    path = out_dir / f"forecast_{_stamp(cutoff)}_{label}.parquet"
    written = not path.exists()
    if written:
        atomic_write_parquet(path, table)
    atomic_write_json(
        out_dir / "latest.json",
        {
            "path": path.name,
            "source": source,
            "reason": reason,
            "model": model,
            "version": version,
            "data_cutoff_ts": cutoff.isoformat(),
            "rows": len(table),
            "written_at": pd.Timestamp.now(tz="UTC").isoformat(),
        },
    )
    return ForecastOutcome(
        str(path),
        source,
        reason,
        model,
        version,
        cutoff.isoformat(),
        len(table),
        written,
        not_covered,
    )


# =================================================================================================
# monitor
# =================================================================================================
FALLBACK_CHECKS = ("qlike_ratio", "mz_slope", "coverage")
"""Breaches of these checks (the champion worse than a baseline, or miscalibrated) switch
forecasting to the baseline. The others fail the run but a baseline would not fix them: a stale
feed, or forecast errors that drifted from their history while the champion may still beat every
baseline (drift is the early warning; QLIKE and MZ decide the switch)."""


@dataclass
class MonitorOutcome:
    """What :func:`monitor_step` found and wrote."""

    report: mon.MonitorReport
    json_path: str
    markdown_path: str
    switched_to_baseline: bool
    state: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "status": "ok" if self.report.ok else "breach",
            "breaches": mon.summarize_breaches(self.report.checks),
            "breach_lines": [c.line() for c in self.report.breaches],
            "json_path": self.json_path,
            "markdown_path": self.markdown_path,
            "switched_to_baseline": self.switched_to_baseline,
            "forecast_source": self.state.get("source"),
        }


def resolve_now(now: str | None, latest_ts: pd.Timestamp | None) -> pd.Timestamp:
    """The monitoring clock: the wall clock (None), the latest data time ("data": replaying
    history) or a given time (naive = UTC)."""
    if now is None:
        return pd.Timestamp.now(tz="UTC")
    if now == "data":
        if latest_ts is None:
            raise DataError("monitor now='data' needs data; the feature frame is empty")
        return pd.Timestamp(latest_ts)
    try:
        ts = pd.Timestamp(now)
    except (ValueError, TypeError):
        raise ConfigError(
            f"monitor 'now' must be 'data' or a time such as '2025-03-01T00:00Z'; got {now!r}"
        ) from None
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _utc_ns(ts: Any) -> np.ndarray:
    """UTC nanoseconds of timestamps (naive ones are UTC), as int64."""
    return pd.DatetimeIndex(pd.to_datetime(pd.Series(np.asarray(ts)), utc=True)).asi8


def _stamp_ns(ts: pd.Timestamp) -> int:
    t = pd.Timestamp(ts)
    return (t.tz_localize("UTC") if t.tz is None else t).value


def evaluation_forecasts(home: Path, run_id: str | None) -> pd.DataFrame | None:
    """The walk-forward (out-of-sample) forecasts logged by the champion's evaluation run, or None
    when the version names no evaluation run or the run holds none."""
    if not run_id:
        return None
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from models import registry

    client = MlflowClient(registry.init_store(home))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "evaluation/forecasts.parquet", tmp)
        except (MlflowException, OSError):
            return None
        return pd.read_parquet(path)


def _post_training(table: pd.DataFrame, train_end: pd.Timestamp | None, col: str) -> pd.DataFrame:
    if train_end is None:
        return table.iloc[0:0]
    return table[_utc_ns(table[col]) > _stamp_ns(train_end)]


def oos_frames(
    champion: Any,
    data: pd.DataFrame,
    cfg: MonitorFlowConfig,
    *,
    train_end: pd.Timestamp | None,
    evaluation: pd.DataFrame | None,
) -> dict[str, pd.DataFrame]:
    """Per symbol, the out-of-sample forecast series the model checks score
    (:func:`models.monitoring.forecast_checks`): one row per origin with ``y`` (the realized mean
    variance over the next ``cfg.horizon`` periods), ``forecast_var`` (the champion) and
    ``b_<name>`` per baseline (plus the champion's quantile columns, when it has them).

    The champion's forecasts at origins up to its training end are the walk-forward forecasts of
    its evaluation run (each issued by a model fitted on data before its origin); at later origins
    they are the registered champion's, with its fixed parameters. Baselines are walked forward on
    the data (refitted before each origin). No forecast is an in-sample fit.
    """
    h = int(cfg.horizon)
    parts: list[pd.DataFrame] = []
    if evaluation is not None and not evaluation.empty:
        ev = evaluation[
            (evaluation["horizon"] == h) & (evaluation["model_id"].astype(str) == champion.primary)
        ]
        if train_end is not None:
            ev = ev[_utc_ns(ev["origin_ts"]) <= _stamp_ns(train_end)]
        parts.append(ev)
    if not _post_training(data, train_end, TS).empty:
        table = champion.predict(data, origins="all")
        table = table[(table["model_id"] == champion.primary) & (table["horizon"] == h)]
        parts.append(_post_training(table, train_end, "origin_ts"))
    if not parts:
        return {}
    long = pd.concat(parts, ignore_index=True)
    long = long.assign(origin_ns=_utc_ns(long["origin_ts"]), symbol=long["symbol"].astype(str))
    qcols = [c for c in long.columns if c.startswith("q_")]
    frames: dict[str, pd.DataFrame] = {}
    for sym, g in data.groupby(SYMBOL, sort=True):
        g = g.sort_values(TS)
        champ = long[long["symbol"] == str(sym)].drop_duplicates("origin_ns", keep="last")
        if champ.empty:
            continue
        frame = pd.DataFrame(
            {
                "origin_ns": _utc_ns(g[TS]),
                "y": target_mean(g[RV].to_numpy(dtype="float64"), h),
            }
        )
        frame = frame.merge(
            champ[["origin_ns", "forecast_var", *qcols]], on="origin_ns", how="left"
        )
        has = np.flatnonzero(frame["forecast_var"].notna().to_numpy())
        frame = frame.iloc[has[0] :].reset_index(drop=True)  # one row per period from the first
        start = pd.Timestamp(int(frame["origin_ns"].iloc[0]), tz="UTC")
        for name, spec in cfg.baselines.items():
            fc = build_model(spec).walk_forward(g, horizons=(h,), start=start)[str(sym)]
            b = fc.variance[h]
            frame = frame.merge(
                pd.DataFrame({"origin_ns": _utc_ns(b.index), f"b_{name}": b.to_numpy()}),
                on="origin_ns",
                how="left",
            )
        frame.insert(0, "origin_ts", pd.to_datetime(frame.pop("origin_ns"), utc=True))
        frames[str(sym)] = frame
    return frames


def _quality_checks(
    champion: Any,
    data: pd.DataFrame,
    cfg: MonitorFlowConfig,
    train_end: pd.Timestamp | None,
    evaluation: pd.DataFrame | None,
) -> list[mon.Check]:
    frames = oos_frames(champion, data, cfg, train_end=train_end, evaluation=evaluation)
    checks: list[mon.Check] = []
    for sym in sorted(frames):
        checks += mon.forecast_checks(
            frames[sym],
            horizon=int(cfg.horizon),
            window=cfg.window,
            drift_window=cfg.drift_window,
            drift_reference=cfg.drift_reference,
            max_qlike_ratio=cfg.max_qlike_ratio,
            mz_slope_min=cfg.mz_slope_min,
            mz_slope_max=cfg.mz_slope_max,
            mz_log=cfg.mz_log,
            coverage_alpha=cfg.coverage_alpha,
            max_psi=cfg.max_psi,
            symbol=sym,
        )
    return checks


def _feature_drift_checks(
    feats: pd.DataFrame, home: Path, cfg: MonitorFlowConfig, train_end: pd.Timestamp | None
) -> list[mon.Check]:
    """Optional PSI of raw features (``cfg.drift_features``) against the rows before the recent
    ``cfg.drift_window`` (up to the champion's training end). Describes the data, not the model."""
    if not cfg.drift_features:
        return []
    checks = []
    for sym, g in feats.groupby(SYMBOL, sort=True):
        if str(sym) not in feature_symbols(home, cfg.dataset, cfg.freq):
            continue
        g = g.sort_values(TS)
        cur = g.tail(cfg.drift_window)
        ref = g[g[TS] < cur[TS].min()]
        if train_end is not None:
            ref = ref[ref[TS] <= train_end]
        if cfg.drift_reference is not None:
            ref = ref.tail(cfg.drift_reference)
        for feat in cfg.drift_features:
            if feat not in g.columns:
                raise DataError(
                    f"drift feature {feat!r} is not a column of {cfg.dataset}/{cfg.freq}; "
                    f"columns: {list(g.columns)}"
                )
            checks.append(
                mon.drift_check(
                    ref[feat].to_numpy(dtype="float64", na_value=np.nan),
                    cur[feat].to_numpy(dtype="float64", na_value=np.nan),
                    feature=feat,
                    max_psi=cfg.max_psi,
                    symbol=str(sym),
                )
            )
    return checks


def _freshness_checks(
    feats: pd.DataFrame, symbols: Sequence[str], now: pd.Timestamp, cfg: MonitorFlowConfig
) -> list[mon.Check]:
    """Per symbol: age of the latest live row (realized variance > 0) at ``now``."""
    if feats.empty or not symbols:
        return [mon.freshness_check(None, now, cfg.max_age)]
    checks = []
    for sym in symbols:
        g = feats[feats[SYMBOL] == sym]
        if "valid" in g.columns:
            g = g[g["valid"].astype(bool)]
        last_row = None if g.empty else pd.Timestamp(g[TS].max())
        live = mon.last_live_ts(g[TS], g[RV]) if not g.empty else None
        checks.append(
            mon.freshness_check(live, now, cfg.max_age, last_row_ts=last_row, symbol=str(sym))
        )
    return checks


def monitor_step(home: Path | str, cfg: MonitorFlowConfig) -> MonitorOutcome:
    """Run every check, write the report (JSON + markdown) and, on a breach of a champion-quality
    check with ``fallback_on_breach``, switch forecasting to the baseline (state file, with the
    reason). Switching back happens only through the promotion gate (:func:`register_and_promote`).

    The model checks score out-of-sample forecasts only (:func:`oos_frames`); freshness is the age
    of each symbol's latest live row (:func:`models.monitoring.last_live_ts`).
    """
    from models import registry

    home = Path(home).resolve()
    ws = _ws(home)
    data = model_frame(home, cfg.dataset, cfg.freq)
    feats = ws.features.read(cfg.dataset, cfg.freq)
    symbols = feature_symbols(home, cfg.dataset, cfg.freq)
    latest = None if feats.empty else pd.Timestamp(feats[TS].max())
    now = resolve_now(cfg.now, latest)
    checks = _freshness_checks(feats, symbols, now, cfg)
    info = check_champion(home, cfg)
    champion = None
    if info is not None:
        data, _ = _champion_data(info, data, cfg)
        champion = registry.load_champion(home=home, name=cfg.registered_model)
    context: dict[str, Any] = {
        "dataset": cfg.dataset,
        "freq": cfg.freq,
        "horizon": cfg.horizon,
        "now": now.isoformat(),
        "latest_ts": None if latest is None else latest.isoformat(),
        "window": cfg.window,
        "drift_window": cfg.drift_window,
        "baselines": list(cfg.baselines),
    }
    train_end = None
    if champion is None:
        context["champion"] = f"no champion of {cfg.registered_model!r}: model checks skipped"
    else:
        ref = champion.ref
        info = registry.show_version(ref.version, home=home, name=ref.name)
        end = info["tags"].get("data.end_ts")
        train_end = pd.Timestamp(end) if end else None
        context.update(
            champion=f"{ref.name} v{ref.version} ({champion.primary})",
            model_uri=ref.uri,
            train_end_ts=end or "unknown",
        )
        evaluation = evaluation_forecasts(home, info.get("evaluation_run_id"))
        model_checks = _quality_checks(champion, data, cfg, train_end, evaluation)
        if not model_checks:
            context["model_checks"] = (
                "skipped: no out-of-sample forecasts of the champion (its evaluation run logged "
                "none and no data arrived after its training end)"
            )
        checks += model_checks
    valid = feats[feats["valid"].astype(bool)] if "valid" in feats.columns else feats
    checks += _feature_drift_checks(valid, home, cfg, train_end)
    report = mon.MonitorReport(tuple(checks), pd.Timestamp.now(tz="UTC"), context)
    state = forecast_source(home, cfg.registered_model)
    fallback = [c for c in report.breaches if c.name in FALLBACK_CHECKS]
    switched = False
    if fallback and cfg.fallback_on_breach and state["source"] != "baseline":
        state = set_forecast_source(
            home,
            cfg.registered_model,
            "baseline",
            f"monitoring breach: {mon.summarize_breaches(fallback)}",
            version=None if champion is None else champion.ref.version,
        )
        switched = True
    doc = report.to_dict()
    doc["forecast_source"] = {
        "source": state["source"],
        "reason": state.get("reason"),
        "switched_now": switched,
    }
    md = report.to_markdown()
    if switched or state["source"] == "baseline":
        md += (
            f"\n## Forecast source\n\nForecasting uses the **{state['source']}** model: "
            f"{state.get('reason')}. Switching back needs a challenger that passes the "
            "promotion gate (`dprm train`).\n"
        )
    out = ws.reports(cfg.dataset, cfg.freq)
    stem = report.created_at.strftime("%Y%m%dT%H%M%S%fZ")
    atomic_write_json(out / f"{stem}.json", doc)
    atomic_write_bytes(out / f"{stem}.md", md.encode())
    atomic_write_json(out / "latest.json", doc)
    atomic_write_bytes(out / "latest.md", md.encode())
    return MonitorOutcome(
        report, str(out / f"{stem}.json"), str(out / f"{stem}.md"), switched, state
    )


def read_latest_report(home: Path | str, dataset: str, freq: str) -> dict[str, Any] | None:
    """The newest monitoring report of a feature frame (None if none was written)."""
    p = _ws(home).reports(dataset, freq) / "latest.json"
    return json.loads(p.read_text()) if p.exists() else None



# =================================================================================================
# `dprm evaluate`: the model ladder, walk-forward evaluation of volatility and correlation models
# =================================================================================================
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


LADDER = ("random_walk", "ewma_0.94", "har", "log_har", "har_j", "shar", "harq", "log_har_dow",
          "harq_dow")
"""The baseline ladder every ``dprm evaluate`` includes, by the labels its tables show (catalog
names or aliases: ``ewma_0.94`` is the catalog's ``ewma``)."""

GARCH_LADDER = ("garch_1_1", "gjr_t")
"""Added to the default ladder where the data have close prices."""

LEARNED = ("lgbm", "har_boost", "qlike_combo")
"""Learned models ``dprm evaluate --models`` can add to the ladder; each keeps its own schedule."""


def evaluation_model(name: str, cfg: Any) -> BaseForecaster:
    """The catalog model ``name`` with ``dprm evaluate``'s settings ``cfg``: horizon-free models
    (random walk, EWMA) as they are; GARCH with the window and ``garch_refit_every``; learned
    models and their combinations with their own schedule and ``cfg.seed`` (the combination's
    log-HAR-DoW member with the window settings); every other model with ``horizons``,
    ``window``, ``window_type`` and ``refit_every``. ``min_obs`` is None throughout (the feature
    build's ``valid`` flag has removed thin periods)."""
    entry = catalog.resolve(name, "volatility")
    hs = tuple(cfg.horizons)
    walk = {"window": cfg.window, "window_type": cfg.window_type, "refit_every": cfg.refit_every}
    if entry.horizon_free:
        return entry.build(min_obs=None)
    if "garch" in entry.tags:
        return entry.build(window=cfg.window, refit_every=cfg.garch_refit_every, min_obs=None)
    if "learned" in entry.tags:
        extra = walk if entry.name == "qlike_combo" else {}
        return entry.build(hs, min_obs=None, random_state=cfg.seed, **extra)
    return entry.build(hs, min_obs=None, **walk)


def ladder(cfg: Any, *, has_close: bool) -> dict[str, Any]:
    """The models of ``dprm evaluate``: ``cfg.models`` (catalog names or aliases, each under the
    name given) or the default ladder (:data:`LADDER`, plus :data:`GARCH_LADDER` where close
    prices exist). A name the catalog lacks, or one that does not forecast volatility, is a
    :class:`~features.errors.ConfigError` listing the volatility models."""
    if not cfg.models:
        labels = [*LADDER, *(GARCH_LADDER if has_close else ())]
        return {k: evaluation_model(k, cfg) for k in labels}
    known = set(catalog.names("volatility"))
    unknown = [m for m in cfg.models if catalog.ALIASES.get(m, m) not in known]
    if unknown:
        raise ConfigError(f"unknown model(s) {sorted(unknown)}; the catalog's volatility models: "
                          f"{', '.join(catalog.names('volatility'))} (`dprm models catalog`)")
    order = [*LADDER, *GARCH_LADDER, *LEARNED]  # the ladder's order first, then as given
    given = {k: i for i, k in enumerate(dict.fromkeys(cfg.models))}
    asked = sorted(given, key=lambda k: (order.index(k), 0) if k in order else (len(order), given[k]))
    return {k: evaluation_model(k, cfg) for k in asked}


def learned_models(cfg: Any) -> dict[str, Any]:
    """LightGBM (direct log-variance, expanding window retrained every 21 periods), LightGBM on the
    log-HAR-DoW residual, and the QLIKE-weighted combination of log-HAR-DoW and two LightGBMs (the
    daily crypto champion's specification, ``benchmarks/eval_daily_crypto.py``)."""
    return {k: evaluation_model(k, cfg) for k in LEARNED}


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
    from pipelines.report import write_evaluation

    store = DataStore(home / "data")
    build_feature_frame(home, dataset, cfg)
    frame = FeatureStore(home / "features").read(dataset, cfg.freq)
    data = frame[frame["valid"].astype(bool)].copy()
    if data.empty:
        raise DataError(f"dataset '{dataset}' has no valid {cfg.freq} bars to evaluate")
    has_close = "close" in data.columns and data["close"].notna().mean() > 0.9
    models = ladder(cfg, has_close=has_close)
    truth = load_truth(store, dataset, cfg.freq)
    n = data.groupby("symbol").size().min()
    window = min(cfg.window, max(50, int(n * 0.5)))
    entries = {k: catalog.resolve(k) for k in models}
    # a model needing close prices the data lack is skipped with the catalog's reason
    pre = {k: catalog.missing_inputs(e, data.columns, has_close=has_close)
           for k, e in entries.items() if e.inputs.close and not has_close}
    for k, why in pre.items():
        warnings.warn(f"walk_forward skips model {k!r}: {why}", SkippedModelWarning, stacklevel=2)
        del models[k], entries[k]
    # models on their own schedule keep it, with the window shortened to what short data allow
    shorter = WalkForward(window=window) if window != cfg.window else WalkForward()
    schedules = {k: shorter if "window" in models[k].get_params() else WalkForward()
                 for k, e in entries.items() if e.own_schedule}
    base = [k for k, e in entries.items() if "learned" not in e.tags]
    result = walk_forward(models, data, horizons=tuple(cfg.horizons), start=cfg.start, end=cfg.end,
                          schedule=WalkForward(window, cfg.window_type, cfg.refit_every),
                          schedules=schedules, baselines=base or None,
                          truth=truth, min_obs=None, mcs_reps=cfg.mcs_reps,
                          random_state=cfg.seed)
    result = result.with_missing_inputs(pre)
    out = write_evaluation(home, dataset, cfg, result, extra={"window_used": window,
                                                              "input_fingerprint": store.fingerprint(dataset)})
    return result, out


def correlation_prices(
    home: Path, dataset: str, freq: str, features_cfg: Any = None
) -> tuple[pd.DataFrame, str | None]:
    """The dataset's prices for correlation and the panel period: the bars table covering the
    most time (the finest among equals) no coarser than ``freq``; when it is finer than ``freq``
    the panel period is ``freq`` (realized covariances from the bars), else None (returns between
    consecutive rows, so exchange days skip weekends and holidays). Without bars, the feature
    frame's closes (built with ``features_cfg``, default the feature settings at ``freq``, when
    missing). Rows without a close are dropped."""
    from features.build import FeatureStore
    from features.schema import CLOSE

    store = DataStore(home / "data")
    man = store.require(dataset)

    def span(info: dict) -> pd.Timedelta:
        """Time covered per symbol: rows x interval / symbols (gaps do not count)."""
        rows = sum(p["rows"] for p in info["partitions"].values())
        return rows * pd.Timedelta(info["interval"]) / max(1, len(info["symbols"]))

    bars = sorted(((t, pd.Timedelta(i["interval"])) for t, i in man["tables"].items()
                   if i["kind"] == "bars" and t.startswith("bars_") and i.get("interval")
                   and pd.Timedelta(i["interval"]) <= pd.Timedelta(freq)),
                  key=lambda x: (-span(man["tables"][x[0]]).days, x[1]))
    if bars:
        frame = store.read(dataset, bars[0][0], columns=[TS, SYMBOL, CLOSE])
        finer = bars[0][1] < pd.Timedelta(freq)
    else:
        build_feature_frame(home, dataset, features_cfg or FeaturesConfig(freq=freq))
        frame = FeatureStore(home / "features").read(dataset, freq)[[TS, SYMBOL, CLOSE]]
        finer = False
    frame = frame.dropna(subset=[CLOSE]).reset_index(drop=True)
    if frame[SYMBOL].nunique() < 2:
        raise DataError(f"dataset '{dataset}' has {frame[SYMBOL].nunique()} symbol(s) with prices; "
                        "correlation needs at least 2")
    return frame, (freq if finer else None)


def evaluate_correlation(home: Path, dataset: str, cfg: Any) -> tuple[Any, Path]:
    """Walk-forward comparison of the correlation models on ``dataset``: returns from the finest
    bars (realized covariance targets from them when finer than ``cfg.freq``), else from the
    feature frame's closes. Writes the summary and settings; returns the result and the folder."""
    import json
    from datetime import UTC, datetime

    from features.schema import TS
    from features.store import atomic_write_bytes, atomic_write_json
    from models.base import InsufficientHistoryError
    from models.catalog import build as build_model
    from models.corr import default_corr_models
    from models.corr_evaluation import evaluate_correlation_frame

    frame, _ = correlation_prices(home, dataset, cfg.freq, cfg)
    periods = int((frame[TS].max() - frame[TS].min()) / pd.Timedelta(cfg.freq))
    window = min(cfg.window, 500, max(60, periods // 2))

    def models(window: int) -> dict:
        """The comparison set: the library's baselines and the gradient-boosted ``lgbm``."""
        return {**default_corr_models(window=min(250, window)),
                "lgbm": build_model("lgbm_corr", random_state=cfg.seed)}

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

