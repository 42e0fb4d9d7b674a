"""Parameters of the forecasting-cycle flows: one pydantic model per flow, every field defaulted.

Each model loads from TOML through :func:`pipelines.config.load_config`, e.g.::

    [train]
    dataset = "sim"
    freq = "1h"
    horizons = [1, 5]
    [train.candidates.loghar]
    kind = "loghar"
    params = { window = 500 }

This module imports neither prefect nor mlflow; :func:`engine_environment` sets their environment
(state under ``$DPRM_HOME``, telemetry off) and must run before either is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.config import SimulateConfig


def engine_environment(home: Path | None = None) -> dict[str, str]:
    """Set (``os.environ.setdefault``) the Prefect and MLflow settings for a run in ``home``.

    Call before importing prefect or mlflow. State goes under ``<home>/prefect`` (database, result
    storage), telemetry is off, the temporary-server start-up timeout is 90 s, MLflow requests time
    out after 5 s with at most one retry (an unreachable server fails in seconds). Values already in the
    environment win. Creates the ``PREFECT_HOME`` folder. Returns the settings this call applied
    (name -> value).
    """
    home = Path(os.environ.get("DPRM_HOME", "dprm-home")).resolve() if home is None else Path(home)
    wanted = {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
        "MPLCONFIGDIR": str(home / "mpl"),
    }
    applied = {}
    for k, v in wanted.items():
        if k not in os.environ:
            os.environ[k] = v
            applied[k] = v
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    return applied


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


HORIZONS_HELP = ("forecast horizons in periods (None: the margin horizons of freq, "
                 "models.forecast.margin_horizons: 1, 2, 5 days; 1, 4, 24 hours)")


def margin_horizons(freq: str) -> tuple[int, ...]:
    """The default horizons of a step at ``freq`` (see :func:`models.forecast.margin_horizons`)."""
    from models.forecast import margin_horizons as _mh

    try:
        return _mh(freq)
    except ValueError as exc:
        raise ValueError(f"freq: {exc}") from None


def _fill_horizons(cfg: Any) -> Any:
    """Set ``horizons`` from ``freq`` when it was left None (the config stays frozen)."""
    if cfg.horizons is None:
        object.__setattr__(cfg, "horizons", margin_horizons(cfg.freq))
    return cfg


def with_freq(cfg: Any, update: dict[str, Any]) -> Any:
    """``cfg.model_copy(update=update)``, re-deriving default horizons when ``freq`` changes (a
    copy is not re-validated: horizons derived from the old freq would stay)."""
    if ("freq" in update and hasattr(cfg, "horizons")
            and "horizons" not in cfg.model_fields_set and "horizons" not in update):
        update = {**update, "horizons": margin_horizons(update["freq"])}
    return cfg.model_copy(update=update)


MODEL_KINDS = (
    "har",
    "loghar",
    "harq",
    "harj",
    "harcj",
    "shar",
    "loghar_dow",
    "harq_dow",
    "ewma",
    "rw",
    "garch",
)
"""The kinds a :class:`ModelSpec` named before the catalog (all still valid, as catalog names or
aliases); any volatility model of :mod:`models.catalog` is a valid kind."""


class ModelSpec(_Config):
    """One forecaster configuration: a catalog name (or alias) and its constructor parameters."""

    kind: str = Field("har", description="a volatility model of the catalog (`dprm models catalog`)")
    params: dict[str, Any] = Field(default_factory=dict, description="constructor arguments")

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        from models import catalog

        known = catalog.names("volatility")
        if catalog.ALIASES.get(v, v) not in known:
            raise ValueError(f"unknown model kind {v!r}; expected one of {known} "
                             f"(or an alias: {sorted(catalog.ALIASES)})")
        return v


LEARNED_REFIT_EVERY = 63
"""How often the cycle's LightGBM models are retrained in its walk-forward evaluation (the
benchmarks' 21 periods tripled: the evaluation costs a third, inside the demo's training budget;
the registered model is fitted on all data either way)."""


def _default_candidates() -> dict[str, ModelSpec]:
    """What the train flow compares by default: the HAR family, the daily benchmark champion's
    specification (log-HAR-DoW-X with the ``rec4_x`` recency context, skipped with the reason where
    a dataset lacks it), GARCH(1,1) and GJR-t through ``arch`` (where close prices exist),
    LightGBM and the QLIKE-weighted combination (each on its own schedule), EWMA and the random
    walk (the baselines)."""
    return {
        "har": ModelSpec(kind="har", params={"window": 500}),
        "loghar": ModelSpec(kind="loghar", params={"window": 500}),
        "harq": ModelSpec(kind="harq", params={"window": 500}),
        "log_har_dow": ModelSpec(kind="log_har_dow", params={"window": 500}),
        "log_har_dow_x": ModelSpec(kind="log_har_dow_x", params={"window": 500}),
        "garch_1_1": ModelSpec(kind="garch_1_1"),
        "gjr_t": ModelSpec(kind="gjr_t"),
        "lgbm": ModelSpec(kind="lgbm", params={"refit_every": LEARNED_REFIT_EVERY}),
        "qlike_combo": ModelSpec(kind="qlike_combo",
                                 params={"learned_refit_every": LEARNED_REFIT_EVERY}),
        "ewma": ModelSpec(kind="ewma"),
        "rw": ModelSpec(kind="rw"),
    }


class RunnerConfig(_Config):
    """Which task runner executes the mapped tasks (see :func:`pipelines.runners.make_runner`)."""

    kind: Literal["threads", "dask"] = "threads"
    max_workers: int | None = Field(None, gt=0, description="threads (None = Prefect's default)")
    dask_address: str | None = Field(None, description="scheduler address; None = a LocalCluster")
    dask_workers: int = Field(2, gt=0, description="LocalCluster worker processes")
    dask_threads_per_worker: int = Field(1, gt=0)


class Target(_Config):
    """Which feature frame a flow works on."""

    dataset: str = "embedded"
    freq: str = "1D"


DEFAULT_MODEL = "dprm-forecaster"
"""The registered model of the default (embedded) dataset."""


def model_name_for(dataset: str) -> str:
    """The registered model a dataset's forecaster lives in: ``dprm-forecaster`` for the
    embedded data, ``dprm-forecaster-<dataset>`` for any other (the model follows the data)."""
    return DEFAULT_MODEL if dataset == "embedded" else f"{DEFAULT_MODEL}-{dataset}"


class ModelTarget(Target):
    """A feature frame and the registered model that forecasts it."""

    model_name: str | None = Field(
        None,
        description="registered model (None: follows the dataset: dprm-forecaster for embedded, "
        "dprm-forecaster-<dataset> otherwise)",
    )

    @property
    def registered_model(self) -> str:
        """``model_name``, or the dataset's model (:func:`model_name_for`)."""
        return self.model_name or model_name_for(self.dataset)


class IngestFlowConfig(_Config):
    """``ingest``: bring data into the store. Sources: "embedded" (arch's daily indices), "simulate"
    (the seeded simulator, settings in ``simulate``) and file or folder paths."""

    sources: tuple[str, ...] = ("embedded",)
    embedded_dataset: str = "embedded"
    simulate: SimulateConfig = SimulateConfig()
    dataset: str | None = Field(None, description="dataset for path sources (None: folder name)")


class FeaturesFlowConfig(Target):
    """``build_features``: the feature frame of one dataset at one frequency."""

    grid: str = "5min"
    horizons: tuple[int, ...] = (1, 5, 22)
    har_windows: tuple[int, ...] = (1, 5, 22)
    min_coverage: float = Field(0.85, gt=0, le=1)
    per_symbol: bool = Field(True, description="compute base measures per symbol on the runner")


class TrainFlowConfig(ModelTarget):
    """``train``: walk-forward evaluation, fit, log, register a challenger, gated promotion."""

    experiment: str = "dprm-train"
    symbols: tuple[str, ...] | None = Field(
        None, description="train on these symbols only (None: every symbol with realized variance)"
    )
    candidates: dict[str, ModelSpec] = Field(default_factory=_default_candidates)
    baselines: tuple[str, ...] = ("ewma", "rw")
    horizons: tuple[int, ...] | None = Field(None, description=HORIZONS_HELP)
    window: int = Field(500, gt=1)
    window_type: Literal["rolling", "expanding"] = "rolling"
    refit_every: int = Field(1, gt=0)
    eval_periods: int | None = Field(750, gt=0, description="score the last N origins (None: all)")
    mcs_reps: int = Field(200, gt=0)
    seed: int = 0
    register_model: bool = Field(
        True, description="log to MLflow and register a challenger (False: evaluate and rank only)"
    )
    promote: bool = Field(True, description="try the promotion gate after registering")
    refresh_cache: bool = Field(False, description="recompute cached per-symbol evaluations")

    @model_validator(mode="after")
    def _horizons(self) -> TrainFlowConfig:
        return _fill_horizons(self)


class ForecastFlowConfig(ModelTarget):
    """``forecast``: roll the champion (or the fallback baseline) forward on the latest data."""

    horizons: tuple[int, ...] | None = Field(None, description=HORIZONS_HELP)
    baseline: ModelSpec = ModelSpec(kind="ewma")
    history: int = Field(600, gt=30, description="rows per symbol handed to the model")
    bundle: bool = Field(True, description="also ledger the issued forecasts and write the "
                         "risk-forecast bundle under $DPRM_HOME/bundles/")

    @model_validator(mode="after")
    def _horizons(self) -> ForecastFlowConfig:
        return _fill_horizons(self)


class MonitorFlowConfig(ModelTarget):
    """``monitor``: checks of the champion and the data; thresholds of :mod:`models.monitoring`.

    The model checks score out-of-sample forecasts over the last ``window`` origins (QLIKE ratio,
    Mincer-Zarnowitz slope, coverage) and ``drift_window`` origins (PSI of log(realized/forecast)
    against the earlier out-of-sample origins); freshness is the age of each symbol's latest live
    row (realized variance > 0) at ``now``.
    """

    horizon: int = Field(1, gt=0)
    baselines: dict[str, ModelSpec] = Field(
        default_factory=lambda: {"ewma": ModelSpec(kind="ewma"), "rw": ModelSpec(kind="rw")}
    )
    window: int = Field(250, gt=1, description="origins in the rolling QLIKE window")
    max_qlike_ratio: float = Field(1.10, gt=0)
    mz_slope_min: float = 0.5
    mz_slope_max: float = 1.5
    mz_log: bool = Field(True, description="Mincer-Zarnowitz regression on logs (robust to jumps)")
    coverage_alpha: float = Field(0.01, gt=0, lt=1)
    drift_window: int = Field(
        250, gt=1, description="recent origins whose log(realized/forecast) is tested for drift"
    )
    drift_reference: int | None = Field(
        None,
        gt=1,
        description="earlier out-of-sample origins (targets complete before the recent window) "
        "the recent ones are compared with; None = all of them",
    )
    drift_features: tuple[str, ...] = Field(
        (), description="raw features whose PSI is also checked (describes the data, not the model)"
    )
    max_psi: float = Field(0.25, gt=0)
    max_age: str = Field("4D", description="breach when the latest live row is older than this")
    now: str | None = Field(
        None, description="clock for freshness (None: the wall clock; 'data': the data's end)"
    )
    fallback_on_breach: bool = Field(True, description="switch forecasting to the baseline")
    fail_on_breach: bool = Field(True, description="end the flow run Failed on a breach")

    @field_validator("now")
    @classmethod
    def _clock(cls, v: str | None) -> str | None:
        if v is None or v == "data":
            return v
        import pandas as pd

        try:
            pd.Timestamp(v)
        except (ValueError, TypeError):
            raise ValueError(
                f"expected 'data' or a UTC time such as '2025-03-01T00:00Z'; got {v!r}"
            ) from None
        return v


CORR_MODEL = "dprm-correlation"
"""The registered correlation model of the default (embedded) dataset."""


def corr_model_name_for(dataset: str) -> str:
    """The registered correlation model of a dataset: ``dprm-correlation`` for the embedded data,
    ``dprm-correlation-<dataset>`` for any other."""
    return CORR_MODEL if dataset == "embedded" else f"{CORR_MODEL}-{dataset}"


class CorrTrainFlowConfig(Target):
    """``train_correlation``: walk-forward comparison of the correlation candidates on the
    dataset's prices, the best non-baseline candidate registered as the challenger of the
    dataset's correlation model and promoted through the correlation gate (Stein loss <= the
    champion's and below EWMA and the rolling sample correlation on the same origins)."""

    model_name: str | None = Field(
        None, description="registered model (None: dprm-correlation[-<dataset>])")
    candidates: tuple[str, ...] = ("ewma_corr", "rolling_corr", "dcc", "har_corr_scalar",
                                   "lgbm_corr")
    baselines: tuple[str, ...] = ("ewma_corr", "rolling_corr")
    horizons: tuple[int, ...] | None = Field(None, description=HORIZONS_HELP)
    window: int = Field(250, gt=20, description="estimation window (periods)")
    refit_every: int = Field(20, gt=0)
    eval_periods: int = Field(250, gt=10, description="origins scored (the gate's too)")
    mcs_reps: int = Field(100, gt=0)
    seed: int = 0
    register_model: bool = True
    promote: bool = True

    @model_validator(mode="after")
    def _horizons(self) -> CorrTrainFlowConfig:
        return _fill_horizons(self)

    @field_validator("candidates", "baselines")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from models import catalog

        known = catalog.names("correlation")
        unknown = [c for c in v if catalog.ALIASES.get(c, c) not in known]
        if unknown:
            raise ValueError(f"unknown correlation model(s) {unknown}; expected some of {known}")
        return v

    @property
    def registered_model(self) -> str:
        """``model_name``, or the dataset's correlation model (:func:`corr_model_name_for`)."""
        return self.model_name or corr_model_name_for(self.dataset)


CYCLE_STEPS = ("ingest", "features", "train", "correlation", "forecast", "margin", "monitor")
"""The steps of ``daily_cycle``, in order."""


class CycleConfig(_Config):
    """``daily_cycle``: ingest -> build_features -> train -> correlation -> forecast (and the
    bundle) -> margin -> monitor.

    ``dataset``, ``freq`` and ``model_name`` (when set) override those of every step; ``steps``
    selects which run
    (the scheduled deployments run subsets: retrain, forecast, monitor).
    """

    dataset: str | None = None
    freq: str | None = None
    model_name: str | None = Field(None, description="registered model of train/forecast/monitor")
    steps: tuple[str, ...] = CYCLE_STEPS
    fail_on_monitor_breach: bool = Field(
        False,
        description="end the cycle Failed when monitoring breaches (the monitor subflow "
        "run is Failed either way)",
    )
    ingest: IngestFlowConfig = IngestFlowConfig()
    features: FeaturesFlowConfig = FeaturesFlowConfig()
    train: TrainFlowConfig = TrainFlowConfig()
    correlation: CorrTrainFlowConfig = CorrTrainFlowConfig()
    forecast: ForecastFlowConfig = ForecastFlowConfig()
    monitor: MonitorFlowConfig = MonitorFlowConfig()
    runner: RunnerConfig = RunnerConfig()

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [x for x in v if x not in CYCLE_STEPS]
        if unknown:
            raise ValueError(
                f"unknown cycle step(s) {unknown}; expected some of {list(CYCLE_STEPS)}"
            )
        return v

    def resolved(self) -> CycleConfig:
        """A copy with ``dataset``/``freq`` (and ``model_name``) pushed into every step."""
        upd = {k: v for k, v in (("dataset", self.dataset), ("freq", self.freq)) if v is not None}
        named = {**upd, **({"model_name": self.model_name} if self.model_name else {})}
        if not named:
            return self
        return self.model_copy(
            update={
                "features": self.features.model_copy(update=upd),
                "train": with_freq(self.train, named),
                "correlation": with_freq(self.correlation, upd),
                "forecast": with_freq(self.forecast, named),
                "monitor": self.monitor.model_copy(update=named),
            }
        )


class BacktestFlowConfig(_Config):
    """The ``backtest`` flow: which dataset, window, methods and reference portfolios, then the
    report (``pipelines.backtest``; None = its defaults: the champion's issued window, the demo
    subset)."""

    dataset: str = "embedded"
    start: str | None = None
    end: str | None = None
    methods: tuple[str, ...] | None = None
    portfolios: tuple[str, ...] | None = None
    symbols: tuple[str, ...] | None = None
    perp_dataset: str | None = Field(None, description=(
        "dataset holding the first symbol's perpetual marks and funding (the basis book; "
        "None: the backtested dataset itself)"))
    chunk_days: int = Field(60, gt=0, description="days per checkpointed chunk (one task each)")
    impulse: bool = Field(False, description="also the impulse response to x2/x3 vol steps")
    report: bool = True
    runner: RunnerConfig | None = None


class DeployConfig(_Config):
    """``deploy``: cron schedules of the deployments (Prefect cron syntax, ``timezone``)."""

    train_cron: str = "0 2 * * *"
    forecast_cron: str = "0 * * * *"
    monitor_cron: str = "30 2 * * *"
    backtest_cron: str = "0 4 * * 0"
    timezone: str = "UTC"
    cycle: CycleConfig = CycleConfig()
