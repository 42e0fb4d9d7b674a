"""MLflow tracking and the ``dprm-forecaster`` model registry (the only library module that uses mlflow).

Tracking
--------
:func:`tracking_uri` is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<home>/mlflow.db`` with
artifacts under ``<home>/mlartifacts`` (experiments are created with that ``artifact_location``;
a remote ``http(s)`` server chooses its own). MLflow's telemetry and chatter are switched off with
``os.environ.setdefault`` before mlflow is imported (it is imported lazily, inside the functions,
so ``import models.registry`` stays cheap). A fresh SQLite store is initialised once, under a lock
file, by :func:`init_store` before anything fans out (processes migrating one fresh database at
once leave it unusable). Metrics and params go through ``MlflowClient.log_batch`` on explicit run
ids (MLflow's fluent API is thread-local); only ``log_model`` and ``load_model`` use the fluent API,
under a process lock that restores the global tracking URI afterwards.

:func:`log_evaluation_run` writes one run of a walk-forward evaluation into the experiment of its
target ("dprm-volatility", "dprm-correlation"), with child runs per symbol.

The forecaster bundle
---------------------
A registered version of ``dprm-forecaster`` is a pyfunc (``pipelines/forecaster_model.py``, logged
with models-from-code) around a :class:`ForecasterBundle`: one or more *fitted* forecasters (the
``primary`` member is the champion model; the others ride along, e.g. the EWMA fallback). The
bundle stores every member's fitted parameters as JSON (HAR coefficients and window statistics,
the EWMA level, GARCH parameters and return scale) and rebuilds the estimators on load, so no live
object is pickled. A forecaster class without a codec (:func:`register_member_codec`) is stored with
``joblib`` instead and the manifest says so (``storage = "joblib"``). Given the latest canonical
realized frame, the pyfunc rolls each member's state forward with its parameters held fixed (HAR
lags, the EWMA recursion, the GARCH filter) and returns the long forecast table of
:meth:`models.forecast.VolForecast.to_frame` (``model_id`` = member name, ``model_version`` =
``<class version>+<fingerprint of the parameters>``). :func:`forecast_frame_to_volforecasts` turns
the table back into :class:`~models.forecast.VolForecast` objects.

LightGBM members (:class:`models.lgbm.LGBMVol`) are not pickled either: while the bundle is
logged, the codec's ``on_log`` hook (called before the bundle is written) logs every horizon's
booster (and quantile booster) with ``mlflow.lightgbm.log_model`` into the registration run, with
a signature and input example of the booster's feature matrix and explicit pins, and keeps the
logged models' URIs on the estimator (``booster_uris_``). The member JSON holds the rest (feature
names, symbol codes, bias factors, residual quantiles, LightGBM parameters) and those URIs; on load
the boosters come back through ``mlflow.lightgbm.load_model`` (the tracking URI must point at the
store they were logged to).

Aliases and promotion
---------------------
Aliases ``challenger`` and ``champion`` (no stages). :func:`register_challenger` logs and registers
a bundle and points ``challenger`` at it. :func:`promote` runs the promotion gate (:class:`GateConfig`,
a pluggable list of checks) and, if it passes (``mode="auto"``) or a named approver signs
(``mode="manual"``, a documented human override that still records the gate), moves ``champion``.
The gate's inputs and decision are written on the model version as tags; a rejected challenger
stays registered with the reason. Every alias move (and every rejection) is appended to
``<home>/registry/promotions.jsonl`` (MLflow keeps no alias history); each line carries the SHA-256
of the previous line, so :func:`read_promotion_log` detects edits. The first version ever promoted
has no champion to compare with: the champion checks are skipped (recorded as such) and the
baseline checks still apply. :func:`rollback` moves ``champion`` back to the previous champion
from the log (or a named version).

Integrity
---------
Network calls are bounded (``MLFLOW_HTTP_REQUEST_TIMEOUT`` 5 s, at most one retry, set with
``setdefault``) and a remote server is probed once (``/health``) by :func:`init_store`; a store
that is not SQLite, or empty/missing while the promotion log records events, is a
:class:`~features.errors.RegistryError`. :func:`verify_registry` cross-checks the ``champion``
aliases with the promotion log before every champion read and every write (a champion the log names
but the registry lacks is an error, never a fallback); promotions log first and move the alias
second, and a move killed in between is completed there. Writes of one model hold
:func:`model_lock` (an OS file lock under ``<home>/registry/locks``), so concurrent processes
register and promote one at a time.

Gate checks (defaults, :class:`GateConfig`)
-------------------------------------------
All scores are recomputed by :func:`models.evaluation.walk_forward` on the **same** origins for the
challenger's and the champion's primary members and the baseline ladder (each re-estimated on the
data available at every origin), pooled over symbols, QLIKE averaged over the gate horizons:

- ``qlike_vs_champion``: QLIKE(challenger) / QLIKE(champion) <= ``max_qlike_ratio`` (1.00);
- ``beats_best_baseline``: QLIKE(challenger) / min over baselines <= ``max_ratio_to_best_baseline``;
- ``interval_calibration``: when the challenger has quantiles, the share of realized variances at
  or below each quantile is within ``calibration_tolerance`` of its level (skipped otherwise);
- ``forecast_change``: the stand-in for the margin-change check (margin does not exist yet): the
  median absolute relative change of the 1-period volatility forecast, champion -> challenger, on
  the latest ``change_lookback`` origins of the data (the served models, parameters fixed) is
  <= ``max_median_vol_change`` (25 %). A margin check registers with :func:`register_gate_check`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import getpass
import hashlib
import importlib
import json
import math
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from features.errors import ConfigError, FailureReason, RegistryError
from features.schema import (
    BV,
    CLOSE,
    N_OBS,
    RQ,
    RS_NEG,
    RS_POS,
    RV,
    SYMBOL,
    TS,
    TS_DTYPE,
    to_utc_ns,
)
from models.base import BaseForecaster
from models.evaluation import POOLED, EvaluationResult, walk_forward
from models.ewma import EWMAVol, RandomWalkVol
from models.forecast import FRAME_COLUMNS, VolForecast
from models.har import HARVol, LogHARVol

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

for _key, _value in {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    # bounded network calls: an unreachable server fails in seconds, not after MLflow's default
    # 7 retries with exponential backoff (about 4 minutes)
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
}.items():
    os.environ.setdefault(_key, _value)

MODEL_NAME = "dprm-forecaster"
CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENTS = {"volatility": "dprm-volatility", "correlation": "dprm-correlation"}
BUNDLE_FORMAT = "dprm-forecaster-bundle"
BUNDLE_FORMAT_VERSION = 1
INPUT_COLUMNS = (RV, BV, RQ, RS_POS, RS_NEG, N_OBS, CLOSE)
"""Realized columns the pyfunc's input signature knows (the members' needs are required)."""

_TAG_MAX = 4000
_ALREADY_EXISTS = ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS")
_METRIC_NAME_BAD = re.compile(r"[^A-Za-z0-9_\-./ ]")
_FLUENT_LOCK = threading.RLock()
_INIT_LOCK = threading.Lock()
_INITIALISED: set[str] = set()
_SQLITE_HEADER = b"SQLite format 3\x00"
_PROBE_TIMEOUT_S = 5.0
"""Connect/read timeout of the reachability probe of a tracking server (one attempt)."""
LOCK_TIMEOUT_S = 900.0
"""How long registration or promotion waits for another process holding the model's lock."""


# =================================================================================================
# tracking
# =================================================================================================
def tracking_uri(home: Path) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<home>/mlflow.db``.

    Parameters
    ----------
    home : the DPRM workspace folder (created if missing when the default is used).
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def artifact_root(home: Path) -> Path:
    """Where local stores keep artifacts: ``<home>/mlartifacts``."""
    return Path(home).resolve() / "mlartifacts"


def _is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "databricks"))


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def _check_sqlite_file(db: Path, home: Path) -> None:
    """Refuse a SQLite store that is not a database, or that is empty or missing while the
    promotion log records events (a wiped registry must not be silently re-created)."""
    size = db.stat().st_size if db.exists() else None
    if size:
        with open(db, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
        if head != _SQLITE_HEADER:
            raise RegistryError(
                f"the MLflow store {db} is not an SQLite database (it starts with {head[:8]!r}); "
                "restore it from a backup or point MLFLOW_TRACKING_URI at a working store"
            )
        return
    log = promotion_log_path(home)
    if log.exists() and log.stat().st_size > 0:
        state = "missing" if size is None else "empty (0 bytes)"
        champs = ", ".join(f"version {v} of {n!r}" for n, v in sorted(log_champions(home).items()))
        records = f"names {champs} as champion" if champs else "records registrations"
        raise RegistryError(
            f"the MLflow store {db} is {state} but the promotion log {log} {records}: the "
            f"registry was wiped; restore {db.name} from a backup, or move the log away to start "
            "a new registry"
        )


def _probe_server(uri: str) -> None:
    """One bounded request to ``<uri>/health``: a refused or timed-out connection is a
    :class:`RegistryError` naming the URI (any HTTP answer means the server is reachable)."""
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=_PROBE_TIMEOUT_S)
    except requests.RequestException as exc:
        raise RegistryError(
            f"the MLflow tracking server {uri} is unreachable ({type(exc).__name__}, "
            f"timeout {_PROBE_TIMEOUT_S:g} s); start it or fix MLFLOW_TRACKING_URI"
        ) from None


def _first_contact(uri: str) -> None:
    """The store's first request (creates and migrates a local store); failures are one
    :class:`RegistryError` naming the URI."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        _client(uri).search_experiments(max_results=1)
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RegistryError(
            f"the MLflow store {uri} cannot be opened ({type(exc).__name__}: {first}); "
            "restore it from a backup or point MLFLOW_TRACKING_URI at a working store"
        ) from None


def init_store(home: Path) -> str:
    """Make sure the tracking store exists and is migrated, once per process, before any fan-out.

    For a SQLite store the first connection (which creates the tables and runs the migrations) is
    made under an exclusive lock on ``<db>.lock``, so concurrent processes never migrate one fresh
    database at the same time. A file that is not a SQLite database, or an empty or missing store
    while the promotion log records events, is a :class:`RegistryError` (never silently replaced
    by a fresh registry). A remote server is probed first with one bounded request. Returns the
    tracking URI.
    """
    uri = tracking_uri(home)
    with _INIT_LOCK:
        if uri in _INITIALISED:
            return uri
        db = _sqlite_path(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            with open(db.with_name(db.name + ".lock"), "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    _check_sqlite_file(db, Path(home))
                    _first_contact(uri)
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        else:
            if uri.startswith(("http://", "https://")):
                _probe_server(uri)
            _first_contact(uri)
        _INITIALISED.add(uri)
    return uri


def experiment_id(home: Path, target: str = "volatility") -> str:
    """The id of the experiment of ``target`` ("volatility" or "correlation"), created if missing
    (with ``artifact_location`` under ``<home>/mlartifacts`` for local stores)."""
    from mlflow.exceptions import MlflowException

    if target not in EXPERIMENTS:
        raise ValueError(f"target must be one of {sorted(EXPERIMENTS)}; got {target!r}")
    uri = init_store(home)
    client = _client(uri)
    name = EXPERIMENTS[target]
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None if _is_remote(uri) else (artifact_root(home) / name).as_uri()
    try:
        return client.create_experiment(
            name, artifact_location=location, tags={"dprm.target": target}
        )
    except MlflowException as exc:
        if exc.error_code not in _ALREADY_EXISTS:
            raise
        return client.get_experiment_by_name(name).experiment_id


@contextlib.contextmanager
def _fluent(uri: str) -> Iterator[Any]:
    """Point MLflow's global (fluent) tracking URI at ``uri`` for a block, then restore it and the
    ``MLFLOW_TRACKING_URI`` variable (``mlflow.set_tracking_uri`` also sets that variable)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _FLUENT_LOCK:
        prev_env = os.environ.get("MLFLOW_TRACKING_URI")
        prev = getattr(tracking_utils, "_tracking_uri", None)
        mlflow.set_tracking_uri(uri)
        try:
            yield mlflow
        finally:
            if prev is not None:
                mlflow.set_tracking_uri(prev)
            else:
                tracking_utils._tracking_uri = None
            if prev_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = prev_env


# ---- provenance ----------------------------------------------------------------------------------
def dprm_version() -> str:
    """The installed ``dprm`` version ("unknown" when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dprm")
    except PackageNotFoundError:
        return "unknown"


def git_commit() -> str | None:
    """The project's git commit (with "-dirty" when the work tree has changes), or None."""
    cwd = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return f"{commit}-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else commit


def data_fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's columns, dtypes and values (row order matters), hex."""
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def to_toml(mapping: Mapping[str, Any]) -> str:
    """A small TOML writer for configs: nested mappings of str, int, float, bool, lists and
    timestamps (written as strings); ``None`` values are left out (TOML has no null)."""

    def value(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return "true" if v else "false"
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            f = float(v)
            if math.isnan(f):
                return "nan"
            if math.isinf(f):
                return "inf" if f > 0 else "-inf"
            return repr(f)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v if x is not None) + "]"
        return json.dumps(str(v))

    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)

    lines: list[str] = []

    def table(prefix: list[str], m: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in m.items() if not isinstance(v, Mapping) and v is not None}
        subs = {k: v for k, v in m.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not subs):
            lines.append(f"[{'.'.join(key(p) for p in prefix)}]")
        for k, v in scalars.items():
            lines.append(f"{key(str(k))} = {value(v)}")
        if scalars:
            lines.append("")
        for k, v in subs.items():
            table([*prefix, str(k)], v)

    table([], mapping)
    return "\n".join(lines).rstrip() + "\n"


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(
        f"config must be a mapping, a pydantic model or a dataclass; got {type(config).__name__}"
    )


def _metric_key(*parts: object) -> str:
    return _METRIC_NAME_BAD.sub("_", "/".join(str(p) for p in parts))


def _param_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return json.dumps([_jsonable(x) for x in v])
    if isinstance(v, np.random.Generator):
        return "Generator"
    return str(v)[:6000]


def _log_batch(
    client: MlflowClient,
    run_id: str,
    *,
    metrics: Mapping[str, float] = {},
    params: Mapping[str, Any] = {},
    tags: Mapping[str, str] = {},
) -> None:
    """log_batch in MLflow's chunk limits (1000 metrics, 100 params, 100 tags per call)."""
    import time

    from mlflow.entities import Metric, Param, RunTag

    ts = int(time.time() * 1000)
    ms = [Metric(k, float(v), ts, 0) for k, v in metrics.items() if np.isfinite(v)]
    ps = [Param(k[:250], _param_value(v)) for k, v in params.items()]
    tg = [RunTag(k, str(v)[:_TAG_MAX]) for k, v in tags.items()]
    for i in range(0, len(ms), 1000):
        client.log_batch(run_id, metrics=ms[i : i + 1000], synchronous=True)
    for i in range(0, len(ps), 100):
        client.log_batch(run_id, params=ps[i : i + 100], synchronous=True)
    for i in range(0, len(tg), 100):
        client.log_batch(run_id, tags=tg[i : i + 100], synchronous=True)


# ---- evaluation runs -----------------------------------------------------------------------------
def evaluation_metrics(result: EvaluationResult, symbol: str | None = None) -> dict[str, float]:
    """The metrics of an evaluation as a flat dict.

    Names: ``<loss>[_<regime>][_truth]/<model>/<symbol>/h<h>`` for every loss in ``result.losses``
    (``qlike``, ``qlike_ratio``, ``mse``, ``mse_log``, ``rmspe``, ``n``; regime suffix for "calm"
    and "stressed"; ``_truth`` for losses against the simulated truth), ``dm_stat``, ``dm_pvalue``,
    ``mcs_pvalue`` and ``in_mcs`` (1/0) likewise. With ``symbol`` only that symbol's rows are kept
    and the symbol part is left out of the names (the per-symbol child runs).
    """
    out: dict[str, float] = {}

    def name(stat: str, model: str, sym: str, h: int) -> str:
        return (
            _metric_key(stat, model, f"h{h}") if symbol else _metric_key(stat, model, sym, f"h{h}")
        )

    loss = result.losses if symbol is None else result.losses[result.losses["symbol"] == symbol]
    for r in loss.itertuples(index=False):
        suffix = ("" if r.regime == "all" else f"_{r.regime}") + (
            "" if r.target == "realized" else f"_{r.target}"
        )
        for stat in ("qlike", "qlike_ratio", "mse", "mse_log", "rmspe", "n"):
            out[name(f"{stat}{suffix}", r.model_id, r.symbol, int(r.horizon))] = float(
                getattr(r, stat)
            )
    for frame, stats in (
        (result.dm, ("dm_stat", "dm_pvalue")),
        (result.mcs, ("mcs_pvalue", "in_mcs")),
    ):
        part = frame if symbol is None else frame[frame["symbol"] == symbol]
        for r in part.itertuples(index=False):
            suffix = "" if r.target == "realized" else f"_{r.target}"
            for stat in stats:
                out[name(f"{stat}{suffix}", r.model_id, r.symbol, int(r.horizon))] = float(
                    getattr(r, stat)
                )
    return out


def _plot_evaluation(result: EvaluationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fc = result.forecasts[result.forecasts["evaluated"]]
    h0 = int(fc["horizon"].min())
    symbols = sorted(fc["symbol"].unique())[:3]
    fig, axes = plt.subplots(len(symbols) + 1, 1, figsize=(10, 3.2 * (len(symbols) + 1)))
    axes = np.atleast_1d(axes)
    for ax, sym in zip(axes, symbols, strict=False):
        part = fc[(fc["symbol"] == sym) & (fc["horizon"] == h0)]
        first = part[part["model_id"] == part["model_id"].iloc[0]]
        ax.plot(
            first["origin_ts"],
            np.sqrt(first["realized_var"]),
            color="0.6",
            lw=0.8,
            label="realized",
        )
        for model, g in part.groupby("model_id"):
            ax.plot(g["origin_ts"], np.sqrt(g["forecast_var"]), lw=1.0, label=str(model))
        ax.set_yscale("log")
        ax.set_title(f"{sym}: forecast vs realized volatility per period, h={h0}")
        ax.legend(fontsize=7, ncol=4)
    loss = result.losses[
        (result.losses["symbol"] == POOLED)
        & (result.losses["regime"] == "all")
        & (result.losses["target"] == "realized")
    ]
    ax = axes[-1]
    for model, g in loss.groupby("model_id"):
        g = g.sort_values("horizon")
        ax.plot(g["horizon"], g["qlike"], marker="o", label=str(model))
    ax.set_xlabel("horizon (periods)")
    ax.set_ylabel("mean QLIKE (pooled)")
    ax.set_title("QLIKE by horizon")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _feature_importance(models: Mapping[str, BaseForecaster]) -> dict[str, pd.DataFrame]:
    """Importance tables of fitted models that have them (``feature_importances_`` or HAR's
    ``coef_``, one row per symbol and horizon)."""
    out: dict[str, pd.DataFrame] = {}
    for name, m in models.items():
        try:
            check_is_fitted(m, "state_")
        except NotFittedError:
            continue
        imp = getattr(m, "feature_importances_", None)
        if imp is not None:
            out[name] = pd.DataFrame(imp) if not isinstance(imp, pd.DataFrame) else imp
            continue
        if hasattr(type(m), "coef_"):
            coef = m.coef_
            frames = [c.assign(symbol=s).reset_index() for s, c in coef.items()]
            out[name] = pd.concat(frames, ignore_index=True)
    return out


def log_evaluation_run(
    result: EvaluationResult,
    *,
    home: Path,
    target: str = "volatility",
    models: Mapping[str, BaseForecaster] | None = None,
    data: pd.DataFrame | None = None,
    config: Any = None,
    feature_set_version: str = "1",
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    per_symbol_runs: bool = True,
) -> str:
    """Log a walk-forward evaluation as one MLflow run; returns its run id.

    Parameters
    ----------
    result : :func:`models.evaluation.walk_forward`'s result.
    home : the workspace (tracking store and artifacts, see :func:`tracking_uri`).
    target : "volatility" or "correlation": the experiment ("dprm-volatility", "dprm-correlation").
    models : the evaluated configurations (name -> forecaster): their hyperparameters become params
        ``model.<name>.<param>``; fitted ones with coefficients or importances are logged too.
    data : the realized frame evaluated: its window, symbols and fingerprint are recorded.
    config : the command's configuration (mapping, pydantic model or dataclass), logged as TOML.
    feature_set_version : version of the feature definitions used.
    run_name : the run's name (default "evaluate-<target>").
    tags : extra run tags.
    per_symbol_runs : also log one nested child run per symbol (when there are several).

    Logged
    ------
    params: hyperparameters, data window, horizons and evaluation settings, feature-set version;
    metrics: :func:`evaluation_metrics` (one ``log_batch`` per 1000); tags: ``dprm.version``,
    ``mlflow.source.git.commit`` (when known), ``data.fingerprint``, target, benchmark, skipped
    models; artifacts: ``evaluation/*.parquet`` (forecasts, losses, DM, MCS) and ``summary.csv``,
    ``plots/evaluation.png``, ``feature_importance/<model>.csv``, ``config/config.toml``.
    """
    if not isinstance(result, EvaluationResult):
        raise TypeError(f"result must be an EvaluationResult; got {type(result).__name__}")
    exp = experiment_id(home, target)
    uri = tracking_uri(home)
    client = _client(uri)
    commit = git_commit()
    run_tags = {
        "mlflow.runName": run_name or f"evaluate-{target}",
        "dprm.kind": "evaluation",
        "dprm.target": target,
        "dprm.version": dprm_version(),
        "dprm.feature_set_version": feature_set_version,
        "dprm.benchmark": json.dumps({f"{s}/h{h}": m for (s, h), m in result.benchmark.items()}),
        "dprm.skipped": json.dumps(dict(result.skipped)),
        "dprm.n_configurations": str(result.n_configurations),
    }
    if commit:
        run_tags["mlflow.source.git.commit"] = commit
        run_tags["git.commit"] = commit
    params: dict[str, Any] = {
        "feature_set_version": feature_set_version,
        "n_configurations": result.n_configurations,
    }
    for k, v in result.settings.items():
        params[f"eval.{k}"] = v
    for name, m in (models or {}).items():
        cls = type(m)
        params[f"model.{name}.class"] = f"{cls.__module__}.{cls.__qualname__}"
        for k, v in m.get_params(deep=False).items():
            params[f"model.{name}.{k}"] = v
    if data is not None:
        ts = pd.DatetimeIndex(to_utc_ns(data[TS]))
        params.update(
            {
                "data.start_ts": ts.min(),
                "data.end_ts": ts.max(),
                "data.n_rows": len(data),
                "data.symbols": sorted(data[SYMBOL].astype(str).unique()),
            }
        )
        run_tags["data.fingerprint"] = data_fingerprint(data)
    run_tags.update(tags or {})
    run = client.create_run(exp, tags=run_tags)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        _log_batch(client, run_id, metrics=evaluation_metrics(result), params=params)
        with tempfile.TemporaryDirectory(prefix="dprm-eval-") as tmp:
            stage = Path(tmp)
            (stage / "evaluation").mkdir()
            result.forecasts.to_parquet(stage / "evaluation" / "forecasts.parquet", index=False)
            for nm in ("losses", "dm", "mcs"):
                getattr(result, nm).to_parquet(stage / "evaluation" / f"{nm}.parquet", index=False)
            result.summary().to_csv(stage / "evaluation" / "summary.csv", index=False)
            (stage / "plots").mkdir()
            _plot_evaluation(result, stage / "plots" / "evaluation.png")
            importance = _feature_importance(models or {})
            if importance:
                (stage / "feature_importance").mkdir()
                for name, frame in importance.items():
                    frame.to_csv(stage / "feature_importance" / f"{name}.csv", index=False)
            (stage / "config").mkdir()
            cfg = {
                "target": target,
                "feature_set_version": feature_set_version,
                "evaluation": {k: v for k, v in result.settings.items() if v is not None},
                **_config_dict(config),
            }
            (stage / "config" / "config.toml").write_text(to_toml(cfg))
            client.log_artifacts(run_id, str(stage))
        symbols = sorted(s for s in result.losses["symbol"].unique() if s != POOLED)
        if per_symbol_runs and len(symbols) > 1:
            for sym in symbols:
                child = client.create_run(
                    exp,
                    tags={
                        "mlflow.parentRunId": run_id,
                        "mlflow.runName": str(sym),
                        "dprm.kind": "evaluation-symbol",
                        "dprm.symbol": str(sym),
                    },
                )
                _log_batch(client, child.info.run_id, metrics=evaluation_metrics(result, sym))
                client.set_terminated(child.info.run_id)
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return run_id


# =================================================================================================
# the forecaster bundle (no mlflow here)
# =================================================================================================
def _jsonable(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.random.Generator):
        return None
    if v is None or isinstance(v, str):
        return v
    raise TypeError(f"cannot store {type(v).__name__} value {v!r} as JSON")


def _class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _mro_paths(obj: Any) -> set[str]:
    return {_class_path(c) for c in type(obj).__mro__}


@dataclass(frozen=True)
class MemberCodec:
    """How one forecaster family is stored in a bundle without pickling.

    Attributes
    ----------
    base : class path; the codec applies to this class and its subclasses ("models.har.HARBase").
    export_state : fitted estimator -> JSON-able dict of its learned state.
    restore_state : (unfitted estimator with the same hyperparameters, that dict) -> None; sets the
        learned attributes so ``predict`` works.
    on_log : optional hook called with (estimator, member name, run id, input example) inside the
        registration run *before* the bundle is written (so the state it records on the estimator,
        e.g. the URIs of LightGBM boosters logged through ``mlflow.lightgbm``, reaches
        ``export_state``); the input example is the pyfunc's (:func:`input_example`).
    """

    base: str
    export_state: Callable[[BaseForecaster], dict[str, Any]]
    restore_state: Callable[[BaseForecaster, dict[str, Any]], None]
    on_log: Callable[[BaseForecaster, str, str, pd.DataFrame], None] | None = None
    exact: bool = False
    """Apply to the class ``base`` only, not to its subclasses (which then need their own codec
    or fall back to joblib, e.g. :class:`models.combine.HARBoostVol`, whose ``base`` parameter is
    an estimator)."""


_CODECS: list[MemberCodec] = []


def register_member_codec(codec: MemberCodec) -> None:
    """Add (or replace, by ``base``) a codec; later registrations win for subclasses too."""
    _CODECS[:] = [c for c in _CODECS if c.base != codec.base]
    _CODECS.append(codec)


def _codec_for(est: BaseForecaster) -> MemberCodec | None:
    paths = _mro_paths(est)
    own = _class_path(est)
    for c in reversed(_CODECS):
        if c.base in paths and (not c.exact or c.base == own):
            return c
    return None


def _export_har(est: Any) -> dict[str, Any]:
    return {
        sym: {
            str(h): {
                "coef": f.coef.tolist(),
                "names": list(f.names),
                "resid_var": f.resid_var,
                "target_min": f.target_min,
                "target_max": f.target_max,
                "target_mean": f.target_mean,
                "n": f.n,
            }
            for h, f in fits.items()
        }
        for sym, fits in est.state_.items()
    }


def _restore_har(est: Any, state: dict[str, Any]) -> None:
    from models.har import HorizonFit

    est.state_ = {
        sym: {
            int(h): HorizonFit(
                np.asarray(f["coef"], dtype="float64"),
                tuple(f["names"]),
                float(f["resid_var"]),
                float(f["target_min"]),
                float(f["target_max"]),
                float(f["target_mean"]),
                int(f["n"]),
            )
            for h, f in fits.items()
        }
        for sym, fits in state.items()
    }


def _export_level(est: Any) -> dict[str, Any]:
    return {sym: float(v) for sym, v in est.state_.items()}


def _restore_level(est: Any, state: dict[str, Any]) -> None:
    est.state_ = {sym: float(v) for sym, v in state.items()}
    if isinstance(est, EWMAVol):
        est.lam_ = est._lam()
        est.level_ = dict(est.state_)


def _export_garch(est: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"__seed_entropy__": str(int(est.seed_entropy_))}
    for sym, st in est.state_.items():
        f = st.fit
        out[sym] = {
            "reason": f.reason,
            "code": f.code.value,
            "n_obs": f.n_obs,
            "scale": f.scale,
            "params": None
            if f.params is None
            else [[str(k), float(v)] for k, v in f.params.items()],
            "persistence": f.persistence,
            "unconditional_var": f.unconditional_var,
            "dist_params": dict(f.dist_params),
            "warnings": list(f.warnings),
        }
    return out


def _restore_garch(est: Any, state: dict[str, Any]) -> None:
    from models.garch import GarchFit, GarchState

    est.seed_entropy_ = int(state["__seed_entropy__"])
    est.state_ = {}
    for sym, s in state.items():
        if sym == "__seed_entropy__":
            continue
        params = None
        if s["params"] is not None:
            params = pd.Series({k: v for k, v in s["params"]}, dtype="float64", name="params")
        fit = GarchFit(
            s["reason"],
            int(s["n_obs"]),
            float(s["scale"]),
            params,
            float(s["persistence"]),
            float(s["unconditional_var"]),
            dict(s["dist_params"]),
            None,
            tuple(s["warnings"]),
            FailureReason(s.get("code", FailureReason.FIT_FAILED.value)),
        )
        est.state_[sym] = GarchState(fit, pd.Series(dtype="float64", name="std_resid"))
    fits = {s: st.fit for s, st in est.state_.items()}
    est.params_ = {s: f.params for s, f in fits.items()}
    est.return_scale_ = {s: f.scale for s, f in fits.items()}
    est.dist_params_ = {s: dict(f.dist_params) for s, f in fits.items()}
    est.persistence_ = {s: f.persistence for s, f in fits.items()}
    est.unconditional_var_ = {s: f.unconditional_var for s, f in fits.items()}
    est.result_ = {s: None for s in fits}
    est.fallback_reason_ = {s: f.reason for s, f in fits.items()}
    est.fit_warnings_ = {s: list(f.warnings) for s, f in fits.items()}
    est.standardized_residuals_ = {s: st.std_resid for s, st in est.state_.items()}


register_member_codec(MemberCodec("models.ewma.RandomWalkVol", _export_level, _restore_level))
register_member_codec(MemberCodec("models.ewma.EWMAVol", _export_level, _restore_level))
register_member_codec(MemberCodec("models.har.HARBase", _export_har, _restore_har))
register_member_codec(MemberCodec("models.garch.GarchVol", _export_garch, _restore_garch))


# ---- LightGBM: boosters through mlflow.lightgbm, the rest as JSON ---------------------------------
_LGBM_PINS = ("mlflow", "lightgbm", "numpy", "pandas", "scipy")
_LGBM_EXAMPLE_ROWS = 5


def _pins(packages: Sequence[str]) -> list[str]:
    """``name==installed version`` for each package (the bare name when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for p in packages:
        try:
            out.append(f"{p}=={version(p)}")
        except PackageNotFoundError:
            out.append(p)
    return out


def _booster_sha256(booster: Any) -> str:
    return hashlib.sha256(booster.model_to_string().encode()).hexdigest()


def _lgbm_logged_name(member: str, h: int, level: float | None = None) -> str:
    """MLflow logged-model name of a booster ("<member>-h<h>[-q<level>]"; MLflow forbids dots)."""
    name = f"{member}-h{h}" if level is None else f"{member}-h{h}-q{level:g}"
    return name.replace(".", "p")


def _log_lgbm(est: Any, member: str, run_id: str, example: pd.DataFrame) -> None:
    """``on_log`` of :class:`models.lgbm.LGBMVol`: log every booster with ``mlflow.lightgbm`` into
    the active (registration) run and record ``booster_uris_`` = horizon -> {"booster": {uri,
    sha256}, "quantiles": {level: {uri, sha256}}} on the estimator for :func:`_export_lgbm`.

    The signature and input example of each booster are its feature matrix (``feature_names_``)
    built from the pyfunc's input example (feature columns the example lacks are NaN there).
    """
    import mlflow
    from mlflow.models import infer_signature

    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:
        raise ValueError(
            f"member {member!r}: LightGBM boosters are logged inside the registration run "
            f"{run_id!r}; the active run is {None if active is None else active.info.run_id!r}"
        )
    X = _canonical_input(example)
    for c in est.feature_columns:
        if c not in X.columns:
            X[c] = np.nan
    panels, extra = est._panels_and_extra(X)
    reqs = _pins(_LGBM_PINS)
    uris: dict[int, dict[str, Any]] = {}
    for h, m in sorted(est.models_.items()):
        d = est._design(panels, extra, h)
        if len(d.X) == 0:
            raise ValueError(
                f"member {member!r}: the input example leaves no row for the horizon-{h} booster's "
                "example (all rows dropped by min_obs?)"
            )
        ex = pd.DataFrame(d.X[-_LGBM_EXAMPLE_ROWS:], columns=d.names)
        entry: dict[str, Any] = {"booster": None, "quantiles": {}}
        boosters = [(None, m.booster), *sorted(m.quantile_boosters.items())]
        for level, booster in boosters:
            signature = infer_signature(ex, booster.predict(ex.to_numpy()))
            info = mlflow.lightgbm.log_model(
                booster,
                name=_lgbm_logged_name(member, h, level),
                signature=signature,
                input_example=ex,
                pip_requirements=reqs,
            )
            ref = {"uri": info.model_uri, "sha256": _booster_sha256(booster)}
            if level is None:
                entry["booster"] = ref
            else:
                entry["quantiles"][repr(float(level))] = ref
        uris[int(h)] = entry
    est.booster_uris_ = uris


def _export_lgbm(est: Any) -> dict[str, Any]:
    """The JSON state of an :class:`models.lgbm.LGBMVol` (boosters by URI, see :func:`_log_lgbm`)."""
    uris = getattr(est, "booster_uris_", None)
    if uris is None or set(uris) != set(est.models_):
        raise ValueError(
            f"LGBMVol member: booster_uris_ covers horizons "
            f"{None if uris is None else sorted(uris)}; expected {sorted(est.models_)}. The "
            "boosters are logged through mlflow.lightgbm by register_challenger (the codec's "
            "on_log hook) before the bundle is written"
        )
    horizons = {}
    for h, m in sorted(est.models_.items()):
        logged = uris[h]
        pairs = [("booster", m.booster, logged["booster"])] + [
            (f"quantile {q}", b, logged["quantiles"].get(repr(float(q))))
            for q, b in sorted(m.quantile_boosters.items())
        ]
        for what, booster, ref in pairs:
            if ref is None or ref["sha256"] != _booster_sha256(booster):
                raise ValueError(
                    f"LGBMVol member: the logged {what} booster of horizon {h} "
                    f"({None if ref is None else ref['uri']}) is not the fitted one (refit after "
                    "logging?); register the bundle again"
                )
        horizons[str(h)] = {
            "booster_uri": logged["booster"]["uri"],
            "booster_sha256": logged["booster"]["sha256"],
            "quantile_boosters": {
                repr(float(q)): logged["quantiles"][repr(float(q))]
                for q in sorted(m.quantile_boosters)
            },
            "bias_factor": float(m.bias_factor),
            "resid_quantiles": [[float(q), float(v)] for q, v in sorted(m.resid_quantiles.items())],
            "best_iteration": int(m.best_iteration),
            "n_train": int(m.n_train),
            "n_valid": int(m.n_valid),
            "valid_qlike": float(m.valid_qlike),
            "params": _jsonable(dict(m.params)),
        }
    return {
        "feature_names": list(est.feature_names_),
        "symbol_codes": list(est._symbol_codes),
        "horizons": horizons,
    }


def _restore_lgbm(est: Any, state: dict[str, Any]) -> None:
    """Rebuild the fitted state of an :class:`models.lgbm.LGBMVol`; boosters through
    ``mlflow.lightgbm.load_model`` (the tracking URI must point at the store they were logged to)."""
    import mlflow.lightgbm

    from models.lgbm import HorizonModel

    models = {}
    for h, s in state["horizons"].items():
        models[int(h)] = HorizonModel(
            booster=mlflow.lightgbm.load_model(s["booster_uri"]),
            bias_factor=float(s["bias_factor"]),
            resid_quantiles={float(q): float(v) for q, v in s["resid_quantiles"]},
            quantile_boosters={
                float(q): mlflow.lightgbm.load_model(ref["uri"])
                for q, ref in s["quantile_boosters"].items()
            },
            best_iteration=int(s["best_iteration"]),
            n_train=int(s["n_train"]),
            n_valid=int(s["n_valid"]),
            valid_qlike=float(s["valid_qlike"]),
            params=dict(s["params"]),
        )
    est.models_ = models
    est.feature_names_ = list(state["feature_names"])
    est._symbol_codes = list(state["symbol_codes"])
    # the URIs hold the loaded boosters: a re-save of this bundle refers to them again
    est.booster_uris_ = {
        h: {
            "booster": {
                "uri": state["horizons"][str(h)]["booster_uri"],
                "sha256": _booster_sha256(m.booster),
            },
            "quantiles": {
                repr(float(q)): {
                    "uri": state["horizons"][str(h)]["quantile_boosters"][repr(float(q))]["uri"],
                    "sha256": _booster_sha256(b),
                }
                for q, b in m.quantile_boosters.items()
            },
        }
        for h, m in models.items()
    }
    est.state_ = {sym: None for sym in est.symbols_}


register_member_codec(
    MemberCodec("models.lgbm.LGBMVol", _export_lgbm, _restore_lgbm, _log_lgbm, exact=True)
)


def _common_state(est: BaseForecaster) -> dict[str, Any]:
    out: dict[str, Any] = {
        "symbols": list(est.symbols_),
        "period_ns": {s: int(p.value) for s, p in est.period_.items()},
        "n_dropped": {s: int(n) for s, n in est.n_dropped_.items()},
        "data_cutoff_ns": {
            s: None if t is None else int(t.value) for s, t in est.data_cutoff_ts_.items()
        },
    }
    if getattr(est, "horizons_", None) is not None:
        out["horizons"] = [int(h) for h in est.horizons_]
    return out


def _restore_common(est: BaseForecaster, common: dict[str, Any]) -> None:
    est.symbols_ = list(common["symbols"])
    est.period_ = {s: pd.Timedelta(int(v), unit="ns") for s, v in common["period_ns"].items()}
    est.n_dropped_ = {s: int(v) for s, v in common["n_dropped"].items()}
    est.data_cutoff_ts_ = {
        s: None if v is None else pd.Timestamp(int(v), unit="ns", tz="UTC")
        for s, v in common["data_cutoff_ns"].items()
    }
    if "horizons" in common:
        est.horizons_ = tuple(int(h) for h in common["horizons"])


def _import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    if not module.startswith("models."):
        raise ValueError(f"bundle member class must live in the models package; got {path!r}")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseForecaster)):
        raise ValueError(f"bundle member class {path!r} is not a BaseForecaster")
    return cls


def _restore_params(params: Mapping[str, Any]) -> dict[str, Any]:
    # JSON turns tuples into lists; the estimators take tuples (horizons)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def _canonical_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc input as a canonical frame: ``ts`` to UTC (naive values are UTC), symbol str."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"the input must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in (TS, SYMBOL) if c not in frame.columns]
    if missing:
        raise ValueError(f"the input frame lacks column(s) {missing}; got {list(frame.columns)}")
    out = frame.copy()
    ts = out[TS]
    if ts.dtype.kind == "M" and getattr(ts.dt, "tz", None) is None:
        out[TS] = ts.dt.tz_localize("UTC").astype(TS_DTYPE)
    else:
        out[TS] = to_utc_ns(ts)
    out[SYMBOL] = out[SYMBOL].astype("str")
    return out


def _order_columns(table: pd.DataFrame) -> pd.DataFrame:
    lead = list(FRAME_COLUMNS)
    qcols = sorted((c for c in table.columns if c.startswith("q_")), key=lambda c: float(c[2:]))
    i = lead.index("forecast_var") + 1
    return table[[*lead[:i], *qcols, *lead[i:]]]


@dataclass
class ForecasterBundle:
    """Fitted forecasters served together by the ``dprm-forecaster`` pyfunc.

    Attributes
    ----------
    members : member name -> fitted forecaster (the order is kept in the output).
    primary : the member that is "the" champion model (its forecasts are the ones margin uses).
    horizons : horizons forecast by every member (periods).
    manifest : what :meth:`save` wrote / :meth:`load` read (classes, storage, fingerprints,
        training window).
    """

    members: dict[str, BaseForecaster]
    primary: str
    horizons: tuple[int, ...]
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        forecasters: Mapping[str, BaseForecaster],
        *,
        primary: str | None = None,
        horizons: Sequence[int] = (1, 5, 22),
        training_data: pd.DataFrame | None = None,
    ) -> ForecasterBundle:
        """A bundle of fitted forecasters; unfitted ones are fitted (as clones) on ``training_data``.

        Parameters
        ----------
        forecasters : member name -> forecaster.
        primary : the champion member; None = the first.
        horizons : horizons every member forecasts; horizon-specific members (HAR) must have been
            fitted for them.
        training_data : canonical realized frame used to fit unfitted members.
        """
        if not isinstance(forecasters, Mapping) or not forecasters:
            raise ValueError("forecasters must be a non-empty dict name -> BaseForecaster")
        hs = tuple(sorted({int(h) for h in horizons}))
        if not hs or hs[0] < 1:
            raise ValueError(f"horizons must be ints >= 1; got {list(horizons)}")
        members: dict[str, BaseForecaster] = {}
        for name, est in forecasters.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
                raise ValueError(f"member name must match [A-Za-z0-9_.-]+; got {name!r}")
            if not isinstance(est, BaseForecaster):
                raise TypeError(
                    f"forecasters[{name!r}] must be a BaseForecaster; got {type(est).__name__}"
                )
            try:
                check_is_fitted(est, "state_")
            except NotFittedError:
                if training_data is None:
                    raise ValueError(
                        f"forecasters[{name!r}] is not fitted; fit it or pass training_data"
                    ) from None
                est = clone(est)
                if "horizons" in est.get_params(deep=False):
                    est.set_params(horizons=hs)
                est.fit(training_data)
            fitted_hs = getattr(est, "horizons_", None)
            if fitted_hs is not None and not set(hs) <= set(fitted_hs):
                raise ValueError(
                    f"forecasters[{name!r}] was fitted for horizons {list(fitted_hs)}; the bundle "
                    f"needs horizons {list(hs)}. Refit with horizons={hs}."
                )
            members[name] = est
        primary = next(iter(members)) if primary is None else primary
        if primary not in members:
            raise ValueError(f"primary {primary!r} is not one of the members {list(members)}")
        manifest: dict[str, Any] = {}
        if training_data is not None:
            ts = pd.DatetimeIndex(to_utc_ns(training_data[TS]))
            manifest["train"] = {
                "start_ts": str(ts.min()),
                "end_ts": str(ts.max()),
                "n_rows": len(training_data),
                "data_fingerprint": data_fingerprint(training_data),
            }
        return cls(members, primary, hs, manifest)

    # ---- storage --------------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``manifest.json`` and ``members/<name>.json`` (or ``.joblib``); returns the manifest."""
        directory = Path(directory)
        (directory / "members").mkdir(parents=True, exist_ok=True)
        entries = []
        for name, est in self.members.items():
            codec = _codec_for(est)
            entry: dict[str, Any] = {
                "name": name,
                "class": _class_path(est),
                "model_id": est.model_id,
                "class_model_version": est.model_version,
                "required_inputs": list(est._required_columns()),
            }
            if codec is not None:
                doc = {
                    "class": entry["class"],
                    "params": _jsonable(est.get_params(deep=False)),
                    "common": _common_state(est),
                    "state": codec.export_state(est),
                }
                text = json.dumps(doc, sort_keys=True, indent=1)
                (directory / "members" / f"{name}.json").write_text(text)
                entry.update(
                    storage="json",
                    file=f"members/{name}.json",
                    fingerprint=hashlib.sha256(text.encode()).hexdigest(),
                )
            else:
                import joblib

                path = directory / "members" / f"{name}.joblib"
                joblib.dump(est, path)
                entry.update(
                    storage="joblib",
                    file=f"members/{name}.joblib",
                    fingerprint=hashlib.sha256(path.read_bytes()).hexdigest(),
                )
            entries.append(entry)
        manifest = {
            **{k: v for k, v in self.manifest.items() if k == "train"},
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "primary": self.primary,
            "horizons": list(self.horizons),
            "members": entries,
            "symbols": sorted({s for e in self.members.values() for s in e.symbols_}),
            "dprm_version": dprm_version(),
        }
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        self.manifest = manifest
        return manifest

    @classmethod
    def load(cls, directory: Path | str) -> ForecasterBundle:
        """Rebuild a bundle written by :meth:`save` (estimators rebuilt from their parameters)."""
        directory = Path(directory)
        manifest = json.loads((directory / "manifest.json").read_text())
        if manifest.get("format") != BUNDLE_FORMAT:
            raise ValueError(
                f"{directory / 'manifest.json'}: format must be {BUNDLE_FORMAT!r}; got {manifest.get('format')!r}"
            )
        if int(manifest.get("format_version", 0)) > BUNDLE_FORMAT_VERSION:
            raise ValueError(
                f"bundle format_version {manifest['format_version']} is newer than this code "
                f"({BUNDLE_FORMAT_VERSION}); upgrade dprm"
            )
        members: dict[str, BaseForecaster] = {}
        for e in manifest["members"]:
            path = directory / e["file"]
            if e["storage"] == "joblib":
                import joblib

                est = joblib.load(path)
            else:
                doc = json.loads(path.read_text())
                est_cls = _import_class(doc["class"])
                est = est_cls(**_restore_params(doc["params"]))
                codec = _codec_for(est)
                if codec is None:
                    raise ValueError(f"no codec is registered for {doc['class']!r}")
                _restore_common(est, doc["common"])
                codec.restore_state(est, doc["state"])
            members[e["name"]] = est
        return cls(members, manifest["primary"], tuple(manifest["horizons"]), manifest)

    # ---- forecasting -----------------------------------------------------------------------------
    def member_version(self, name: str) -> str:
        """``<class model_version>+<first 12 hex of the member's parameter fingerprint>``."""
        est = self.members[name]
        fp = next(
            (e.get("fingerprint") for e in self.manifest.get("members", []) if e["name"] == name),
            None,
        )
        return f"{est.model_version}+{fp[:12]}" if fp else str(est.model_version)

    def required_columns(self) -> list[str]:
        """Realized columns some member needs (``close`` for GARCH's returns)."""
        cols: dict[str, None] = {}
        for est in self.members.values():
            for c in est._required_columns():
                cols[CLOSE if c == "sq_ret_var" else c] = None
        return list(cols)

    def predict(
        self, frame: pd.DataFrame, *, origins: str = "last", members: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Roll every member forward on ``frame`` with its fitted parameters and return the long
        forecast table (:meth:`VolForecast.to_frame` columns; ``model_id`` = member name).

        Parameters
        ----------
        frame : canonical realized frame holding the history the members need (HAR: 22 rows).
        origins : "last" (each symbol's latest origin with a forecast) or "all".
        members : members to run; None = all.
        """
        if origins not in ("last", "all"):
            raise ValueError(f"origins must be 'last' or 'all'; got {origins!r}")
        names = list(self.members) if members is None else list(members)
        unknown = [n for n in names if n not in self.members]
        if unknown:
            raise ValueError(f"unknown member(s) {unknown}; the bundle has {list(self.members)}")
        X = _canonical_input(frame)
        parts = []
        for name in names:
            fc = self.members[name].predict(X, horizons=self.horizons)
            for f in fc.values() if isinstance(fc, dict) else [fc]:
                t = f.to_frame()
                if origins == "last":
                    t = t[t["origin_ts"] == t["origin_ts"].max()]
                parts.append(t.assign(model_id=name, model_version=self.member_version(name)))
        table = pd.concat(parts, ignore_index=True)
        for c in ("model_id", "model_version", "symbol"):
            table[c] = table[c].astype("str")
        reason = table["fallback_reason"].astype(object)
        table["fallback_reason"] = pd.Series(
            np.where(reason.notna().to_numpy(), reason.to_numpy(), None),
            index=table.index,
            dtype=object,
        )
        return _order_columns(table).reset_index(drop=True)


def forecast_frame_to_volforecasts(
    frame: pd.DataFrame, *, model_id: str | None = None, annualization: float | None = None
) -> dict[str, VolForecast]:
    """The pyfunc's long table back as ``{symbol: VolForecast}`` for one model.

    Parameters
    ----------
    frame : the long forecast table (:meth:`VolForecast.to_frame` columns).
    model_id : which member to take; None when the table holds one model only.
    annualization : periods per year; None = the symbol's default.
    """
    ids = list(pd.unique(frame["model_id"].astype(str)))
    if model_id is None:
        if len(ids) != 1:
            raise ValueError(f"the table holds models {ids}; pass model_id=... to choose one")
        model_id = ids[0]
    if model_id not in ids:
        raise ValueError(f"model_id {model_id!r} is not in the table; it holds {ids}")
    part = frame[frame["model_id"].astype(str) == model_id]
    out = {}
    for sym, g in part.groupby("symbol", sort=True):
        out[str(sym)] = VolForecast.from_frame(g, annualization=annualization)
    return out


# =================================================================================================
# logging and registering a bundle
# =================================================================================================
def model_code_path() -> Path:
    """The models-from-code file of the pyfunc (``pipelines/forecaster_model.py`` beside this package;
    a path, not an import: the library never imports ``pipelines``)."""
    path = Path(__file__).resolve().parents[1] / "pipelines" / "forecaster_model.py"
    if not path.is_file():
        raise FileNotFoundError(
            2, "No such file or directory (the dprm-forecaster pyfunc code)", str(path)
        )
    return path


def pip_requirements(bundle: ForecasterBundle) -> list[str]:
    """Explicit pins of the packages the pyfunc imports (no inference subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    pkgs = ["mlflow", "numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "pydantic"]
    modules = {type(m).__module__ for m in bundle.members.values()}
    if "models.garch" in modules:
        pkgs += ["arch", "statsmodels"]
    if "models.lgbm" in modules:
        pkgs.append("lightgbm")
    reqs = []
    for p in pkgs:
        try:
            reqs.append(f"{p}=={version(p)}")
        except PackageNotFoundError:
            reqs.append(p)
    reqs.append(f"dprm=={dprm_version()}")
    return reqs


def _naive_utc(frame: pd.DataFrame) -> pd.DataFrame:
    out = _canonical_input(frame)
    out[TS] = out[TS].dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def input_example(
    bundle: ForecasterBundle, data: pd.DataFrame, rows_per_symbol: int = 40
) -> pd.DataFrame:
    """The last ``rows_per_symbol`` rows per symbol of ``data`` (enough for HAR's 22-row history),
    with ``ts`` as naive UTC and the columns the signature knows."""
    cols = [TS, SYMBOL, *[c for c in INPUT_COLUMNS if c in data.columns]]
    missing = [c for c in bundle.required_columns() if c not in data.columns]
    if missing:
        raise ValueError(f"training data lacks column(s) {missing} that the bundle needs")
    frame = _naive_utc(data[cols])
    frame = frame[frame[SYMBOL].isin(bundle.manifest.get("symbols") or frame[SYMBOL].unique())]
    frame = frame.sort_values([SYMBOL, TS]).groupby(SYMBOL, sort=True).tail(rows_per_symbol)
    for c in cols[2:]:
        frame[c] = frame[c].astype("float64")
    return frame.reset_index(drop=True)


def model_signature(bundle: ForecasterBundle, example: pd.DataFrame) -> Any:
    """Input: ``ts`` (naive UTC datetime), ``symbol``, the realized columns (required when a member
    needs them); output: the long forecast table; param ``origins`` ("last" | "all")."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    need = set(bundle.required_columns())
    inputs = [ColSpec("datetime", TS), ColSpec("string", SYMBOL)]
    inputs += [ColSpec("double", c, required=c in need) for c in INPUT_COLUMNS]
    out_example = bundle.predict(example)
    kinds = {
        "origin_ts": "datetime",
        "data_cutoff_ts": "datetime",
        "target_start": "datetime",
        "target_end": "datetime",
        "horizon": "long",
        "model_id": "string",
        "model_version": "string",
        "symbol": "string",
        "fallback_reason": "string",
    }
    outputs = [
        ColSpec(kinds.get(c, "double"), c, required=c != "fallback_reason")
        for c in out_example.columns
    ]
    return ModelSignature(
        inputs=Schema(inputs),
        outputs=Schema(outputs),
        params=ParamSchema([ParamSpec("origins", "string", "last")]),
    )


@dataclass(frozen=True)
class ModelRef:
    """Which registered model produced a number: recorded with every margin result.

    Attributes
    ----------
    name, version : the registered model and version (a string, as MLflow has it).
    alias : the alias it was resolved through ("champion", "challenger") or None.
    run_id : the MLflow run the model was logged in.
    uri : ``models:/<name>/<version>`` (pinned to the version, not the alias).
    """

    name: str
    version: str
    alias: str | None
    run_id: str | None
    uri: str

    def as_tags(self) -> dict[str, str]:
        """Flat string fields for result metadata: model_name, model_version, model_alias, ..."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "model_alias": self.alias or "",
            "model_run_id": self.run_id or "",
            "model_uri": self.uri,
        }


def _serialized(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a registry write under :func:`model_lock` of its ``name`` (keyword, default
    :data:`MODEL_NAME`) after :func:`verify_registry`: writes never build on a registry that
    disagrees with the promotion log, and never race another writer of the same model."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        home, name = kwargs["home"], kwargs.get("name", MODEL_NAME)
        with model_lock(home, name):
            verify_registry(home, name)
            return fn(*args, **kwargs)

    return wrapper


@_serialized
def register_challenger(
    forecasters: Mapping[str, BaseForecaster] | ForecasterBundle,
    *,
    home: Path,
    training_data: pd.DataFrame,
    primary: str | None = None,
    horizons: Sequence[int] = (1, 5, 22),
    evaluation_run_id: str | None = None,
    target: str = "volatility",
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    name: str = MODEL_NAME,
    user: str | None = None,
) -> ModelRef:
    """Log a forecaster bundle as a pyfunc, register it and point the ``challenger`` alias at it.

    Parameters
    ----------
    forecasters : member name -> forecaster (fitted, or fitted here on ``training_data``), or a
        ready :class:`ForecasterBundle`.
    home : the workspace (see :func:`tracking_uri`); the promotion log is under ``home/registry``.
    training_data : the canonical realized frame the members were fitted on: the input example,
        the training window and the data fingerprint come from it.
    primary : the champion member (default: the first).
    horizons : horizons the pyfunc forecasts.
    evaluation_run_id : the evaluation run this bundle was chosen by (see
        :func:`log_evaluation_run`): the model is logged in a new run nested under it (logging into
        the evaluation run itself would make MLflow link every one of its metrics to the model, one
        HTTP request per metric on a remote server) and the version is tagged with it.
    target : the experiment of the new run.
    description : the model version's description.
    tags : extra model-version tags.
    name : the registered model.
    user : who registers (default: the OS user), for the promotion log.

    Returns
    -------
    The new version's :class:`ModelRef` (alias "challenger").
    """
    from mlflow.exceptions import MlflowException

    bundle = (
        forecasters
        if isinstance(forecasters, ForecasterBundle)
        else ForecasterBundle.build(
            forecasters, primary=primary, horizons=horizons, training_data=training_data
        )
    )
    exp = experiment_id(home, target)
    uri = tracking_uri(home)
    client = _client(uri)
    run_tags = {
        "mlflow.runName": "register-forecaster",
        "dprm.kind": "register",
        "dprm.version": dprm_version(),
    }
    if evaluation_run_id is not None:
        run_tags.update(
            {"mlflow.parentRunId": evaluation_run_id, "dprm.evaluation_run_id": evaluation_run_id}
        )
    run_id = client.create_run(exp, tags=run_tags).info.run_id
    with tempfile.TemporaryDirectory(prefix="dprm-bundle-") as tmp:
        bdir = Path(tmp) / "bundle"
        example = input_example(bundle, training_data)
        signature = model_signature(bundle, example)
        with _fluent(uri) as mlflow, mlflow.start_run(run_id=run_id):
            for mname, est in bundle.members.items():
                codec = _codec_for(est)
                if codec is not None and codec.on_log is not None:
                    codec.on_log(est, mname, run_id, example)
            manifest = bundle.save(bdir)
            info = mlflow.pyfunc.log_model(
                name="forecaster",
                python_model=str(model_code_path()),
                artifacts={"bundle": str(bdir)},
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements(bundle),
                metadata={
                    "dprm_bundle": {k: manifest[k] for k in ("primary", "horizons", "symbols")}
                },
            )
    _log_batch(
        client,
        run_id,
        params={
            **{f"member.{e['name']}.class": e["class"] for e in manifest["members"]},
            **{
                f"member.{mname}.{k}": v
                for mname, est in bundle.members.items()
                for k, v in est.get_params(deep=False).items()
            },
            "primary": bundle.primary,
            "horizons": list(bundle.horizons),
        },
    )
    try:
        client.create_registered_model(name, description="DPRM volatility forecaster bundle")
    except MlflowException as exc:
        if exc.error_code not in _ALREADY_EXISTS:
            raise
    version_tags = {
        "dprm.status": CHALLENGER,
        "dprm.primary": bundle.primary,
        "dprm.members": json.dumps({e["name"]: e["class"] for e in manifest["members"]}),
        "dprm.storage": json.dumps({e["name"]: e["storage"] for e in manifest["members"]}),
        "dprm.horizons": json.dumps(list(bundle.horizons)),
        "dprm.symbols": json.dumps(manifest["symbols"]),
        "dprm.version": dprm_version(),
        "data.fingerprint": manifest.get("train", {}).get("data_fingerprint", ""),
        "data.end_ts": manifest.get("train", {}).get("end_ts", ""),
        "gate.status": "pending",
        **(tags or {}),
    }
    commit = git_commit()
    if commit:
        version_tags["git.commit"] = commit
    if evaluation_run_id is not None:
        version_tags["dprm.evaluation_run_id"] = evaluation_run_id
    with _fluent(uri):  # the SQL registry store resolves the logged model via the global URI
        mv = client.create_model_version(
            name,
            source=info.model_uri,
            run_id=run_id,
            model_id=info.model_id,
            tags=version_tags,
            description=description,
        )
    previous = _aliases(client, name).get(CHALLENGER)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    client.set_terminated(run_id)
    append_promotion_log(
        home,
        {
            "action": "register_challenger",
            "name": name,
            "alias": CHALLENGER,
            "from_version": previous,
            "to_version": str(mv.version),
            "who": user or getpass.getuser(),
            "mode": "auto",
            "reason": description or "",
            "gate": None,
            "run_id": run_id,
        },
    )
    return ModelRef(name, str(mv.version), CHALLENGER, run_id, f"models:/{name}/{mv.version}")


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_and_register` did: the evaluation, its run, the chosen primary member and
    the registered challenger."""

    evaluation: EvaluationResult
    evaluation_run_id: str
    primary: str
    ref: ModelRef


def train_and_register(
    models: Mapping[str, BaseForecaster],
    data: pd.DataFrame,
    *,
    home: Path,
    horizons: Sequence[int] = (1, 5, 22),
    primary: str | None = None,
    members: Sequence[str] | None = None,
    start: pd.Timestamp | str | None = None,
    window: int = 1000,
    window_type: str = "rolling",
    refit_every: int = 1,
    min_obs: float | None = 250,
    mcs_reps: int = 1000,
    random_state: int = 0,
    config: Any = None,
    feature_set_version: str = "1",
    description: str | None = None,
) -> TrainResult:
    """``dprm train``: walk-forward evaluation, one tracked run, then the bundle as challenger.

    Parameters
    ----------
    models : configuration name -> unfitted forecaster (the candidates and baselines).
    data : canonical realized frame (full history).
    home : the workspace.
    horizons : forecast horizons (periods).
    primary : the champion member; None = the model with the lowest pooled QLIKE averaged over the
        horizons.
    members : names bundled with the primary (e.g. an EWMA fallback); None = the primary only.
    start, window, window_type, refit_every, min_obs, mcs_reps, random_state : passed to
        :func:`models.evaluation.walk_forward`.
    config, feature_set_version : logged with the evaluation run.
    description : the model version's description.
    """
    hs = tuple(sorted(int(h) for h in horizons))
    result = walk_forward(
        models,
        data,
        horizons=hs,
        start=start,
        window=window,
        window_type=window_type,
        refit_every=refit_every,
        min_obs=min_obs,
        mcs_reps=mcs_reps,
        random_state=random_state,
    )
    run_id = log_evaluation_run(
        result,
        home=home,
        models=models,
        data=data,
        config=config,
        feature_set_version=feature_set_version,
    )
    if primary is None:
        loss = result.losses[
            (result.losses["symbol"] == POOLED)
            & (result.losses["regime"] == "all")
            & (result.losses["target"] == "realized")
        ]
        primary = str(loss.groupby("model_id")["qlike"].mean().idxmin())
    if primary not in models:
        raise ValueError(f"primary {primary!r} is not one of the models {list(models)}")
    names = [primary, *[m for m in (members or []) if m != primary]]
    unknown = [m for m in names if m not in models]
    if unknown:
        raise ValueError(f"members {unknown} are not among the models {list(models)}")
    chosen = {}
    for m in names:
        est = clone(models[m])
        if "min_obs" in est.get_params(deep=False):
            est.set_params(min_obs=min_obs)
        chosen[m] = est
    ref = register_challenger(
        chosen,
        home=home,
        training_data=data,
        primary=primary,
        horizons=hs,
        evaluation_run_id=run_id,
        description=description,
    )
    return TrainResult(result, run_id, primary, ref)


# =================================================================================================
# queries and loading
# =================================================================================================
def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """alias -> version of a registered model ({} when the model does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {str(k): str(v) for k, v in (rm.aliases or {}).items()}


def _model_exists(client: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def _version(client: MlflowClient, name: str, version: int | str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ConfigError(f"model {name!r} has no version {str(version)!r}") from None
        raise


VERSION_COLUMNS = (
    "model",
    "version",
    "aliases",
    "status",
    "gate_status",
    "gate_reason",
    "primary",
    "members",
    "dataset",
    "freq",
    "created_ts",
    "run_id",
    "data_end_ts",
)
"""Columns of :func:`list_versions`."""


def list_versions(*, home: Path, name: str | None = MODEL_NAME) -> pd.DataFrame:
    """One row per registered version (:data:`VERSION_COLUMNS`): model, version, aliases, status,
    gate status and reason, primary member, members, the dataset and frequency it was trained on
    (empty when not recorded), creation time, run id and the training data's end; sorted by model
    and version. ``name=None`` lists every registered model."""
    from mlflow.exceptions import MlflowException

    client = _client(init_store(home))
    cols = list(VERSION_COLUMNS)
    names = registered_model_names(home) if name is None else [name]
    rows = []
    for n in names:
        try:
            versions = client.search_model_versions(f"name='{n}'")
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue
            raise
        aliases = _aliases(client, n)
        for mv in versions:
            t = mv.tags or {}
            rows.append(
                {
                    "model": n,
                    "version": int(mv.version),
                    "aliases": ",".join(
                        sorted(a for a, v in aliases.items() if v == str(mv.version))
                    ),
                    "status": t.get("dprm.status", ""),
                    "gate_status": t.get("gate.status", ""),
                    "gate_reason": t.get("gate.reason", ""),
                    "primary": t.get("dprm.primary", ""),
                    "members": ",".join(json.loads(t.get("dprm.members", "{}"))),
                    "dataset": t.get("dprm.dataset", ""),
                    "freq": t.get("dprm.freq", ""),
                    "created_ts": pd.Timestamp(int(mv.creation_timestamp), unit="ms", tz="UTC"),
                    "run_id": mv.run_id,
                    "data_end_ts": t.get("data.end_ts", ""),
                }
            )
    if not rows:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(rows, columns=cols).sort_values(["model", "version"]).reset_index(drop=True)


def show_version(version: int | str, *, home: Path, name: str = MODEL_NAME) -> dict[str, Any]:
    """Everything about one version: aliases, tags (gate decision included), source, run id,
    description, creation time and the pooled QLIKE metrics of its evaluation run (when it was
    registered with ``evaluation_run_id``)."""
    client = _client(init_store(home))
    mv = _version(client, name, version)
    aliases = sorted(a for a, v in _aliases(client, name).items() if v == str(mv.version))
    metrics: dict[str, float] = {}
    eval_run = (mv.tags or {}).get("dprm.evaluation_run_id")
    if eval_run:
        run = client.get_run(eval_run)
        metrics = {
            k: v
            for k, v in run.data.metrics.items()
            if k.startswith("qlike/") and f"/{POOLED}/" in k
        }
    return {
        "name": name,
        "version": str(mv.version),
        "aliases": aliases,
        "status": (mv.tags or {}).get("dprm.status", ""),
        "run_id": mv.run_id,
        "source": mv.source,
        "description": mv.description or "",
        "created_ts": pd.Timestamp(int(mv.creation_timestamp), unit="ms", tz="UTC"),
        "tags": dict(mv.tags or {}),
        "evaluation_run_id": eval_run,
        "evaluation_metrics": metrics,
        "uri": f"models:/{name}/{mv.version}",
    }


def model_ref(alias_or_version: str | int, *, home: Path, name: str = MODEL_NAME) -> ModelRef:
    """Resolve an alias ("champion", "challenger") or a version number to a :class:`ModelRef`."""
    client = _client(init_store(home))
    key = str(alias_or_version)
    alias = None
    if not key.isdigit():
        aliases = _aliases(client, name)
        if key not in aliases:
            raise ConfigError(
                f"model {name!r} has no alias {key!r}; aliases: {sorted(aliases) or 'none'}"
            )
        alias, key = key, aliases[key]
    mv = _version(client, name, key)
    return ModelRef(name, str(mv.version), alias, mv.run_id, f"models:/{name}/{mv.version}")


@dataclass(frozen=True)
class LoadedForecaster:
    """A registered forecaster loaded through MLflow, with the reference to record.

    Attributes
    ----------
    ref : the :class:`ModelRef` it was loaded from.
    pyfunc : MLflow's ``PyFuncModel``.
    primary : the bundle's primary member (the champion model).
    """

    ref: ModelRef
    pyfunc: Any
    primary: str

    def predict(self, frame: pd.DataFrame, *, origins: str = "last") -> pd.DataFrame:
        """The long forecast table for a canonical realized frame (``ts`` may be tz-aware)."""
        return self.pyfunc.predict(_naive_utc(frame), params={"origins": origins})

    def vol_forecasts(
        self, frame: pd.DataFrame, *, origins: str = "last", member: str | None = None
    ) -> dict[str, VolForecast]:
        """``{symbol: VolForecast}`` of ``member`` (default: the primary member)."""
        table = self.predict(frame, origins=origins)
        return forecast_frame_to_volforecasts(table, model_id=member or self.primary)


def load_forecaster(
    ref: ModelRef | str | int = CHAMPION, *, home: Path, name: str = MODEL_NAME
) -> LoadedForecaster:
    """Load a registered forecaster by :class:`ModelRef`, alias or version."""
    if not isinstance(ref, ModelRef):
        ref = model_ref(ref, home=home, name=name)
    uri = init_store(home)
    with _fluent(uri) as mlflow:
        model = mlflow.pyfunc.load_model(ref.uri)
    meta = (model.metadata.metadata or {}).get("dprm_bundle", {})
    return LoadedForecaster(ref, model, str(meta.get("primary", "")))


def load_champion(*, home: Path, name: str = MODEL_NAME) -> LoadedForecaster:
    """The ``champion`` version, loaded after :func:`verify_registry` (a champion the promotion
    log names but the registry lacks is a :class:`RegistryError`); ``.ref`` is the
    :class:`ModelRef` to record."""
    verify_registry(home, name)
    return load_forecaster(CHAMPION, home=home, name=name)


def _load_bundle(ref: ModelRef, uri: str) -> ForecasterBundle:
    with _fluent(uri) as mlflow:
        model = mlflow.pyfunc.load_model(ref.uri)
    bundle = getattr(model.unwrap_python_model(), "bundle", None)
    if not isinstance(bundle, ForecasterBundle):
        raise ValueError(f"{ref.uri} is not a dprm-forecaster bundle")
    return bundle


# =================================================================================================
# the promotion gate
# =================================================================================================
_BASELINES: dict[str, Callable[[tuple[int, ...]], BaseForecaster]] = {
    "random_walk": lambda hs: RandomWalkVol(),
    "ewma": lambda hs: EWMAVol(),
    "har": lambda hs: HARVol(horizons=hs),
    "log_har": lambda hs: LogHARVol(horizons=hs),
}


class GateConfig(BaseModel):
    """Settings of the promotion gate (see the module docs for the checks).

    ``window``/``window_type``/``refit_every`` None = each model's own setting.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    checks: tuple[str, ...] = (
        "qlike_vs_champion",
        "beats_best_baseline",
        "interval_calibration",
        "forecast_change",
    )
    horizons: tuple[int, ...] = (1, 5)
    n_origins: int = Field(250, ge=10, description="last origins scored (with known targets)")
    window: int | None = Field(None, ge=10)
    window_type: Literal["rolling", "expanding"] | None = None
    refit_every: int | None = Field(None, ge=1)
    min_obs: float | None = Field(250, ge=0)
    baselines: tuple[str, ...] = ("random_walk", "ewma", "har")
    max_qlike_ratio: float = Field(1.0, gt=0)
    max_ratio_to_best_baseline: float = Field(1.0, gt=0)
    calibration_tolerance: float = Field(0.05, gt=0, lt=0.5)
    max_median_vol_change: float = Field(0.25, gt=0)
    change_lookback: int = Field(1, ge=1, description="latest origins per symbol compared")
    mcs_reps: int = Field(200, ge=10)
    random_state: int = 0

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(h < 1 for h in v) or len(set(v)) != len(v):
            raise ValueError(f"horizons must be distinct ints >= 1; got {list(v)}")
        return tuple(sorted(v))

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [b for b in v if b not in _BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; known: {sorted(_BASELINES)}")
        return v


@dataclass(frozen=True)
class CheckResult:
    """One gate check: ``passed`` is None when the check did not apply (skipped, with why)."""

    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    detail: str

    def as_tag(self) -> str:
        """ "pass|fail|skip value=... threshold=...: detail"."""
        word = {True: "pass", False: "fail", None: "skip"}[self.passed]
        v = "" if self.value is None else f" value={self.value:.6g}"
        t = "" if self.threshold is None else f" threshold={self.threshold:.6g}"
        return f"{word}{v}{t}: {self.detail}"


@dataclass(frozen=True)
class GateContext:
    """What a gate check sees.

    Attributes
    ----------
    config : the gate settings.
    evaluation : the walk-forward of "challenger", "champion" (when there is one) and the baselines
        on the same origins.
    qlike : model -> pooled QLIKE averaged over the gate horizons.
    challenger, champion : the bundles (champion None on the first promotion).
    latest : "challenger"/"champion" -> the primary member's forecasts on the latest data.
    baselines : names of the baseline models in ``evaluation``.
    """

    config: GateConfig
    evaluation: EvaluationResult
    qlike: Mapping[str, float]
    challenger: ForecasterBundle
    champion: ForecasterBundle | None
    latest: Mapping[str, pd.DataFrame]
    baselines: tuple[str, ...]


GateCheck = Callable[[GateContext], CheckResult]
_CHECKS: dict[str, GateCheck] = {}


def register_gate_check(name: str, check: GateCheck) -> None:
    """Make ``check`` available to :class:`GateConfig`'s ``checks`` under ``name`` (e.g. a margin
    change on reference portfolios, once margin exists)."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"gate check name must match [a-z0-9_]+; got {name!r}")
    _CHECKS[name] = check


def gate_checks() -> list[str]:
    """Names of the registered gate checks."""
    return sorted(_CHECKS)


def _check_qlike_vs_champion(ctx: GateContext) -> CheckResult:
    thr = ctx.config.max_qlike_ratio
    if ctx.champion is None or "champion" not in ctx.qlike:
        return CheckResult("qlike_vs_champion", None, None, thr, "no champion (first promotion)")
    ratio = ctx.qlike["challenger"] / ctx.qlike["champion"]
    ok = ratio <= thr
    return CheckResult(
        "qlike_vs_champion",
        ok,
        ratio,
        thr,
        f"QLIKE challenger {ctx.qlike['challenger']:.6g} / champion "
        f"{ctx.qlike['champion']:.6g} = {ratio:.4f} ({'<=' if ok else '>'} {thr:g})",
    )


def _check_beats_best_baseline(ctx: GateContext) -> CheckResult:
    thr = ctx.config.max_ratio_to_best_baseline
    scored = {b: ctx.qlike[b] for b in ctx.baselines if b in ctx.qlike}
    if not scored:
        return CheckResult(
            "beats_best_baseline",
            False,
            None,
            thr,
            f"no baseline of {list(ctx.baselines)} could be scored",
        )
    best = min(scored, key=scored.get)
    ratio = ctx.qlike["challenger"] / scored[best]
    ok = ratio <= thr
    return CheckResult(
        "beats_best_baseline",
        ok,
        ratio,
        thr,
        f"QLIKE challenger / best baseline {best} ({scored[best]:.6g}) = "
        f"{ratio:.4f} ({'<=' if ok else '>'} {thr:g})",
    )


def _check_interval_calibration(ctx: GateContext) -> CheckResult:
    tol = ctx.config.calibration_tolerance
    fc = ctx.evaluation.forecasts
    fc = fc[(fc["model_id"] == "challenger") & fc["evaluated"]]
    qcols = [c for c in fc.columns if c.startswith("q_") and fc[c].notna().any()]
    if not qcols:
        return CheckResult(
            "interval_calibration", None, None, tol, "the challenger has no quantiles"
        )
    worst, parts = 0.0, []
    for c in qcols:
        level = float(c[2:])
        sub = fc[fc[c].notna()]
        hit = float((sub["realized_var"] <= sub[c]).mean())
        worst = max(worst, abs(hit - level))
        parts.append(f"{c}: {hit:.3f}")
    ok = worst <= tol
    return CheckResult(
        "interval_calibration",
        ok,
        worst,
        tol,
        f"largest |hit rate - level| {worst:.4f} ({', '.join(parts)})",
    )


def _check_forecast_change(ctx: GateContext) -> CheckResult:
    thr = ctx.config.max_median_vol_change
    if ctx.champion is None or "champion" not in ctx.latest:
        return CheckResult("forecast_change", None, None, thr, "no champion (first promotion)")
    keys = ["symbol", "origin_ts"]
    a, b = ctx.latest["challenger"], ctx.latest["champion"]
    h = min(set(a["horizon"]) & set(b["horizon"]))
    m = a[a["horizon"] == h][[*keys, "forecast_var"]].merge(
        b[b["horizon"] == h][[*keys, "forecast_var"]], on=keys, suffixes=("_ch", "_cp")
    )
    if m.empty:
        return CheckResult(
            "forecast_change",
            False,
            None,
            thr,
            "challenger and champion share no symbol/origin on the latest data",
        )
    change = np.abs(np.sqrt(m["forecast_var_ch"] / m["forecast_var_cp"]) - 1.0)
    med = float(np.median(change))
    ok = med <= thr
    return CheckResult(
        "forecast_change",
        ok,
        med,
        thr,
        f"median |vol_challenger / vol_champion - 1| of the h={h} forecast on "
        f"{len(m)} latest symbol-origins = {med:.4f} ({'<=' if ok else '>'} {thr:g}); "
        "stand-in for the margin-change check",
    )


for _name, _fn in (
    ("qlike_vs_champion", _check_qlike_vs_champion),
    ("beats_best_baseline", _check_beats_best_baseline),
    ("interval_calibration", _check_interval_calibration),
    ("forecast_change", _check_forecast_change),
):
    register_gate_check(_name, _fn)


@dataclass(frozen=True)
class GateDecision:
    """The gate's outcome: ``passed`` unless some check failed (skipped checks do not fail)."""

    passed: bool
    checks: tuple[CheckResult, ...]
    config: GateConfig
    n_origins: int
    origins_start: str
    origins_end: str
    qlike: Mapping[str, float]
    challenger_version: str
    champion_version: str | None
    data_fingerprint: str

    @property
    def reason(self) -> str:
        """The failing checks' details ("" when it passed)."""
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks if c.passed is False)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (logged in the promotion log)."""
        return {
            "status": "passed" if self.passed else "rejected",
            "checks": {
                c.name: {"passed": c.passed, "value": c.value, "threshold": c.threshold}
                for c in self.checks
            },
            "n_origins": self.n_origins,
            "origins": [self.origins_start, self.origins_end],
            "qlike": {k: float(v) for k, v in self.qlike.items()},
            "challenger_version": self.challenger_version,
            "champion_version": self.champion_version,
            "data_fingerprint": self.data_fingerprint,
        }


def evaluate_gate(
    challenger: ForecasterBundle,
    champion: ForecasterBundle | None,
    data: pd.DataFrame,
    config: GateConfig | None = None,
    *,
    challenger_version: str = "",
    champion_version: str | None = None,
) -> GateDecision:
    """Run the gate's checks (no MLflow involved; :func:`promote` calls it).

    Parameters
    ----------
    challenger, champion : bundles; their primary members are re-estimated by a walk-forward on the
        same origins (the last ``n_origins`` of ``data`` with known targets) with the baselines.
    data : canonical realized frame (full history).
    config : gate settings (default :class:`GateConfig`).
    """
    cfg = config or GateConfig()
    unknown = [c for c in cfg.checks if c not in _CHECKS]
    if unknown:
        raise ValueError(f"unknown gate check(s) {unknown}; registered: {gate_checks()}")
    hs = cfg.horizons
    wanted: dict[str, BaseForecaster] = {
        "challenger": clone(challenger.members[challenger.primary])
    }
    if champion is not None:
        wanted["champion"] = clone(champion.members[champion.primary])
    for b in cfg.baselines:
        wanted[b] = _BASELINES[b](hs)
    # identical configurations (a re-fit of the champion's spec, a challenger equal to a baseline)
    # give identical walk-forward forecasts: evaluate each once and share its scores
    models: dict[str, BaseForecaster] = {}
    same_as: dict[str, str] = {}
    seen: dict[str, str] = {}
    overrides = {
        "horizons": hs,
        "min_obs": cfg.min_obs,
        "window": cfg.window,
        "window_type": cfg.window_type,
        "refit_every": cfg.refit_every,
    }
    for name, m in wanted.items():
        # the settings walk_forward imposes, so that the key below is the effective configuration
        names = m.get_params(deep=False)
        m.set_params(
            **{
                k: v
                for k, v in overrides.items()
                if k in names and (v is not None or k == "min_obs")
            }
        )
        key = json.dumps([_class_path(m), _jsonable(m.get_params(deep=False))], sort_keys=True)
        if key in seen:
            same_as[name] = seen[key]
        else:
            seen[key] = name
            models[name] = m
    X = _canonical_input(data)
    ts = np.sort(X[TS].unique())
    if len(ts) <= max(hs) + 1:
        raise ConfigError(f"data has {len(ts)} distinct ts; the gate needs more than {max(hs) + 1}")
    start = pd.Timestamp(ts[max(0, len(ts) - cfg.n_origins - max(hs))])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skipped models are reported in .skipped
        ev = walk_forward(
            models,
            X,
            horizons=hs,
            start=start,
            window=cfg.window,
            window_type=cfg.window_type,
            refit_every=cfg.refit_every,
            min_obs=cfg.min_obs,
            baselines=[b for b in cfg.baselines if b in models] or None,
            mcs_reps=cfg.mcs_reps,
            random_state=cfg.random_state,
        )
    if "challenger" in ev.skipped:
        raise ConfigError(f"the challenger could not be evaluated: {ev.skipped['challenger']}")
    loss = ev.losses[
        (ev.losses["symbol"] == POOLED)
        & (ev.losses["regime"] == "all")
        & (ev.losses["target"] == "realized")
    ]
    qlike = loss.groupby("model_id")["qlike"].mean().to_dict()
    for name, rep in same_as.items():
        if rep in qlike:
            qlike[name] = qlike[rep]
    latest = {"challenger": _latest(challenger, X, cfg.change_lookback)}
    if champion is not None:
        latest["champion"] = _latest(champion, X, cfg.change_lookback)
    ctx = GateContext(
        cfg, ev, qlike, challenger, champion, latest, tuple(b for b in cfg.baselines if b in qlike)
    )
    results = tuple(_CHECKS[name](ctx) for name in cfg.checks)
    evaluated = ev.forecasts[ev.forecasts["evaluated"]]
    return GateDecision(
        passed=all(r.passed is not False for r in results),
        checks=results,
        config=cfg,
        n_origins=int(evaluated["origin_ts"].nunique()),
        origins_start=str(evaluated["origin_ts"].min()),
        origins_end=str(evaluated["origin_ts"].max()),
        qlike=qlike,
        challenger_version=challenger_version,
        champion_version=champion_version,
        data_fingerprint=data_fingerprint(data),
    )


def _latest(bundle: ForecasterBundle, X: pd.DataFrame, lookback: int) -> pd.DataFrame:
    table = bundle.predict(X, origins="all", members=[bundle.primary])
    last = table.groupby("symbol")["origin_ts"].transform(
        lambda s: s >= np.sort(s.unique())[-min(lookback, s.nunique())]
    )
    return table[last].reset_index(drop=True)


# =================================================================================================
# promotion, rollback and the promotion log
# =================================================================================================
def promotion_log_path(home: Path) -> Path:
    """``<home>/registry/promotions.jsonl``."""
    return Path(home).resolve() / "registry" / "promotions.jsonl"


def append_promotion_log(home: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Append one event (JSON line) to the promotion log, under an exclusive file lock.

    Adds ``seq`` (1, 2, ...), ``ts`` (UTC ISO time) and ``prev_sha256`` (hash of the previous line,
    "" for the first), so :func:`read_promotion_log` detects any edit. Returns the written entry.
    """
    path = promotion_log_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            lines = [ln for ln in fh.read().splitlines() if ln.strip()]
            prev = hashlib.sha256(lines[-1]).hexdigest() if lines else ""
            record = {
                "seq": len(lines) + 1,
                "ts": pd.Timestamp.now(tz="UTC").isoformat(),
                **{k: _jsonable(v) for k, v in entry.items()},
                "prev_sha256": prev,
            }
            fh.seek(0, os.SEEK_END)
            fh.write(json.dumps(record, sort_keys=True).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return record


def read_promotion_log(home: Path, *, verify: bool = True) -> list[dict[str, Any]]:
    """All events of the promotion log, oldest first; with ``verify`` the hash chain and the
    sequence numbers are checked (:class:`RegistryError` naming the first bad line)."""
    path = promotion_log_path(home)
    if not path.exists():
        return []
    raw = [ln for ln in path.read_bytes().splitlines() if ln.strip()]
    out, prev = [], ""
    for i, line in enumerate(raw, start=1):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RegistryError(
                f"{path}: line {i} is not a JSON record; the promotion log is corrupt"
            ) from None
        if verify and (
            not isinstance(rec, dict) or rec.get("prev_sha256") != prev or rec.get("seq") != i
        ):
            raise RegistryError(
                f"{path}: line {i} breaks the append-only chain (prev_sha256/seq do not match the "
                "previous line); the log was edited"
            )
        prev = hashlib.sha256(line).hexdigest()
        out.append(rec)
    return out


# ---- one writer per model, and the registry checked against the log ---------------------------
def _lock_file(home: Path, name: str) -> Path:
    return (
        Path(home).resolve()
        / "registry"
        / "locks"
        / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.lock"
    )


@contextlib.contextmanager
def model_lock(
    home: Path, name: str = MODEL_NAME, *, timeout_s: float | None = None
) -> Iterator[Path]:
    """Hold the registration/promotion lock of model ``name`` (``<home>/registry/locks/``).

    An OS file lock (``filelock``): processes sharing ``home`` register and promote one at a
    time, and a thread of the same process waits too. Re-entrant within one thread, so
    :func:`register_challenger` and :func:`promote` can run inside a caller's lock. MLflow has no
    compare-and-set on tags or aliases; this lock is what makes "find the version with this key,
    else register it" safe. Waiting longer than ``timeout_s`` (default :data:`LOCK_TIMEOUT_S`) is a
    :class:`RegistryError`. Yields the lock file's path.
    """
    from filelock import FileLock, Timeout

    path = _lock_file(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), is_singleton=True)
    wait = LOCK_TIMEOUT_S if timeout_s is None else float(timeout_s)
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise RegistryError(
            f"registration and promotion of {name!r} are held by another process for more than "
            f"{wait:g} s (lock {path}); wait for it to finish"
        ) from None
    try:
        yield path
    finally:
        lock.release()


def _apply_move(client: MlflowClient, name: str, entry: Mapping[str, Any]) -> None:
    """Move ``champion`` as the promotion-log ``entry`` (a promote or rollback) records, with the
    status tags; idempotent, so an interrupted move can be completed."""
    target, prev = str(entry["to_version"]), entry.get("from_version")
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_model_version_tag(name, target, "dprm.status", CHAMPION)
    if entry["action"] == "promote":
        if _aliases(client, name).get(CHALLENGER) == target:
            client.delete_registered_model_alias(name, CHALLENGER)
        if prev is not None:
            client.set_model_version_tag(name, str(prev), "dprm.status", "retired")
    elif prev is not None:
        client.set_model_version_tag(name, str(prev), "dprm.status", "rolled_back")
        client.set_model_version_tag(
            name, str(prev), "gate.rolled_back", f"{entry['who']}: {entry['reason']}"[:_TAG_MAX]
        )


def _interrupted_move(
    home: Path, client: MlflowClient, name: str, have: str | None
) -> dict[str, Any] | None:
    """The log's last champion move of ``name`` when the registry is exactly one step behind it
    (its champion is the move's ``from_version`` and the target version exists with the logged
    run id): a promotion or rollback killed between its log line and the alias move."""
    from mlflow.exceptions import MlflowException

    moves = [
        e
        for e in read_promotion_log(home)
        if e.get("name") == name
        and e.get("alias") == CHAMPION
        and e.get("action") in ("promote", "rollback")
    ]
    if not moves or moves[-1].get("from_version") != have:
        return None
    last = moves[-1]
    try:
        mv = client.get_model_version(name, str(last["to_version"]))
    except MlflowException:
        return None
    return last if mv.run_id == last.get("run_id") else None


def log_champions(home: Path) -> dict[str, str]:
    """Model name -> champion version according to the promotion log (the last ``promote`` or
    ``rollback`` of each model; models never promoted are absent)."""
    out: dict[str, str] = {}
    for e in read_promotion_log(home):
        if (
            e.get("alias") == CHAMPION
            and e.get("action") in ("promote", "rollback")
            and e.get("to_version") is not None
        ):
            out[str(e["name"])] = str(e["to_version"])
    return out


def registered_model_names(home: Path) -> list[str]:
    """Names of every registered model in the store, sorted."""
    client = _client(init_store(home))
    names: list[str] = []
    token = None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        names += [rm.name for rm in page]
        token = page.token
        if not token:
            return sorted(names)


def verify_registry(home: Path, name: str | None = None) -> dict[str, str | None]:
    """Cross-check the registry's ``champion`` aliases with the hash-chained promotion log.

    Parameters
    ----------
    home : the workspace (the log is ``<home>/registry/promotions.jsonl``).
    name : one model; None = every model in the registry or in the log.

    Returns
    -------
    Model name -> champion version (None: neither the registry nor the log has one).

    Raises
    ------
    RegistryError
        When the log names a champion the registry does not have (a wiped, replaced or edited
        registry), the registry has a champion the log does not name (an alias moved outside
        dprm), the log's chain is broken, or the store cannot be opened. Nothing falls back.

    Promotions and rollbacks write their log line before moving the alias; one killed in between
    (the registry exactly one move behind the log, the target version present with the logged run
    id) is completed here, under the model's lock, instead of being reported.
    """
    uri = init_store(home)
    client = _client(uri)
    logged = log_champions(home)
    log = promotion_log_path(home)
    names = [name] if name is not None else sorted(set(logged) | set(registered_model_names(home)))
    out: dict[str, str | None] = {}
    for n in names:
        want = logged.get(n)
        have = _aliases(client, n).get(CHAMPION)
        if want != have and _interrupted_move(home, client, n, have) is not None:
            with model_lock(home, n):  # complete the logged move (re-checked under the lock)
                have = _aliases(client, n).get(CHAMPION)
                move = _interrupted_move(home, client, n, have) if want != have else None
                if move is not None:
                    _apply_move(client, n, move)
                    have = want
        if want != have:
            if have is None:
                what = (
                    "has no champion alias on it"
                    if _model_exists(client, n)
                    else "has no model of that name"
                )
                raise RegistryError(
                    f"the promotion log {log} names version {want} of {n!r} as champion, but the "
                    f"registry {uri} {what}: the registry was wiped, replaced or edited outside "
                    "dprm; restore it from a backup, or move the log away to start a new registry"
                )
            logged_as = f"version {want}" if want is not None else "no champion"
            raise RegistryError(
                f"the registry {uri} has version {have} of {n!r} as champion, but the promotion "
                f"log {log} names {logged_as}: the alias was moved outside dprm; set it back "
                "or restore the registry from a backup"
            )
        out[n] = have
    return out


def champion_version(home: Path, name: str = MODEL_NAME) -> str | None:
    """The champion version of ``name`` after :func:`verify_registry` (None: no champion in the
    registry and none in the log)."""
    return verify_registry(home, name)[name]


@dataclass(frozen=True)
class PromotionResult:
    """What :func:`promote` or :func:`rollback` did.

    Attributes
    ----------
    promoted : whether ``champion`` now points at ``version``.
    version : the version considered.
    previous_champion : the champion before (None if there was none).
    decision : the gate's decision (None when the gate did not run).
    log_entry : the line appended to the promotion log.
    """

    promoted: bool
    version: str
    previous_champion: str | None
    decision: GateDecision | None
    log_entry: Mapping[str, Any]

    @property
    def ref(self) -> ModelRef | None:
        """The new champion's reference (None when not promoted)."""
        if not self.promoted:
            return None
        name = str(self.log_entry.get("name", MODEL_NAME))
        return ModelRef(
            name,
            self.version,
            CHAMPION,
            self.log_entry.get("run_id"),
            f"models:/{name}/{self.version}",
        )


def _gate_tags(
    decision: GateDecision | None, *, mode: str, who: str, status: str, reason: str
) -> dict[str, str]:
    tags = {
        "gate.status": status,
        "gate.mode": mode,
        "gate.decided_by": who,
        "gate.decided_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "gate.reason": reason[:_TAG_MAX],
    }
    if decision is not None:
        tags.update(
            {
                "gate.config": json.dumps(decision.config.model_dump(mode="json"))[:_TAG_MAX],
                "gate.champion_version": decision.champion_version or "none",
                "gate.n_origins": str(decision.n_origins),
                "gate.origins": f"{decision.origins_start}..{decision.origins_end}",
                "gate.data_fingerprint": decision.data_fingerprint,
                "gate.qlike": json.dumps(
                    {k: round(float(v), 10) for k, v in decision.qlike.items()}
                ),
            }
        )
        for c in decision.checks:
            tags[f"gate.check.{c.name}"] = c.as_tag()[:_TAG_MAX]
    return tags


@_serialized
def promote(
    version: int | str,
    *,
    home: Path,
    mode: Literal["auto", "manual"] = "auto",
    approver: str | None = None,
    reason: str = "",
    gate_config: GateConfig | None = None,
    data: pd.DataFrame | None = None,
    name: str = MODEL_NAME,
) -> PromotionResult:
    """Promote ``version`` to ``champion`` through the gate.

    Parameters
    ----------
    version : the registered version (usually the challenger).
    home : the workspace.
    mode : "auto": the gate decides; "manual": a named ``approver`` decides (a human override;
        the gate still runs when ``data`` is given and its result is recorded).
    approver : who approves (required for "manual").
    reason : why (recorded; required for "manual").
    gate_config : gate settings (default :class:`GateConfig`).
    data : canonical realized frame the gate evaluates on (required for "auto").
    name : the registered model.

    Returns
    -------
    A :class:`PromotionResult`; a rejected challenger is not an error (``promoted`` False, the
    reason is tagged on the version and logged).
    """
    if mode not in ("auto", "manual"):
        raise ConfigError(f"mode must be 'auto' or 'manual'; got {mode!r}")
    if mode == "manual" and not (approver and approver.strip()):
        raise ConfigError(f"manual promotion needs a named approver; got approver={approver!r}")
    if mode == "manual" and not reason.strip():
        raise ConfigError("manual promotion needs a reason; got an empty reason")
    if mode == "auto" and data is None:
        raise ConfigError("auto promotion runs the gate and needs data=<canonical realized frame>")
    uri = init_store(home)
    client = _client(uri)
    mv = _version(client, name, version)
    v = str(mv.version)
    current = _aliases(client, name).get(CHAMPION)
    if current == v:
        raise ConfigError(f"version {v} of {name!r} is already the champion")
    decision = None
    if data is not None:
        ch_ref = ModelRef(name, v, None, mv.run_id, f"models:/{name}/{v}")
        challenger = _load_bundle(ch_ref, uri)
        champion = None
        if current is not None:
            cp = _version(client, name, current)
            champion = _load_bundle(
                ModelRef(name, current, CHAMPION, cp.run_id, f"models:/{name}/{current}"), uri
            )
        decision = evaluate_gate(
            challenger, champion, data, gate_config, challenger_version=v, champion_version=current
        )
    who = approver.strip() if approver else f"gate (run by {getpass.getuser()})"
    passed = decision is not None and decision.passed
    promoted = passed if mode == "auto" else True
    if promoted:
        status = "passed" if passed else ("override" if decision is not None else "not_run")
        why = reason or (decision.reason if decision is not None else "")
    else:
        status = "rejected"
        why = decision.reason if decision is not None else reason
    for k, val in _gate_tags(decision, mode=mode, who=who, status=status, reason=why).items():
        client.set_model_version_tag(name, v, k, val)
    # write-ahead: the log records the move before the alias moves, so a run killed in between
    # leaves a move that verify_registry completes (never an alias the log does not know)
    entry = append_promotion_log(
        home,
        {
            "action": "promote" if promoted else "reject",
            "name": name,
            "alias": CHAMPION,
            "from_version": current,
            "to_version": v if promoted else current,
            "candidate_version": v,
            "who": who,
            "mode": mode,
            "reason": why,
            "gate": None if decision is None else decision.summary(),
            "run_id": mv.run_id,
        },
    )
    if promoted:
        _apply_move(client, name, entry)
    else:
        client.set_model_version_tag(name, v, "dprm.status", "rejected")
    return PromotionResult(promoted, v, current, decision, entry)


@_serialized
def rollback(
    *,
    home: Path,
    approver: str,
    reason: str,
    to_version: int | str | None = None,
    name: str = MODEL_NAME,
) -> PromotionResult:
    """Move ``champion`` back: to ``to_version``, or to the champion the current one replaced
    (the ``from_version`` of the last *promotion* of the current champion in the log, so repeated
    rollbacks walk back through the promotion history instead of flipping between two versions).

    Parameters
    ----------
    home : the workspace.
    approver : who rolls back (required).
    reason : why (required).
    to_version : the version to restore; None = the previous champion from the promotion log.
    name : the registered model.
    """
    if not (approver and approver.strip()):
        raise ConfigError(f"rollback needs a named approver; got approver={approver!r}")
    if not reason.strip():
        raise ConfigError("rollback needs a reason; got an empty reason")
    client = _client(init_store(home))
    current = _aliases(client, name).get(CHAMPION)
    if current is None:
        raise ConfigError(f"model {name!r} has no champion to roll back")
    if to_version is None:
        moves = [
            e
            for e in read_promotion_log(home)
            if e.get("name") == name
            and e.get("alias") == CHAMPION
            and e.get("action") == "promote"
            and e.get("to_version") == current
        ]
        if not moves or moves[-1].get("from_version") is None:
            raise ConfigError(
                f"the promotion log has no champion before version {current} of {name!r}; "
                "give the version with --to-version (to_version= in Python)"
            )
        to_version = moves[-1]["from_version"]
    mv = _version(client, name, to_version)
    target = str(mv.version)
    if target == current:
        raise ConfigError(f"version {target} of {name!r} is already the champion")
    entry = append_promotion_log(  # write-ahead, as in promote
        home,
        {
            "action": "rollback",
            "name": name,
            "alias": CHAMPION,
            "from_version": current,
            "to_version": target,
            "candidate_version": target,
            "who": approver.strip(),
            "mode": "manual",
            "reason": reason,
            "gate": None,
            "run_id": mv.run_id,
        },
    )
    _apply_move(client, name, entry)
    return PromotionResult(True, target, current, None, entry)
