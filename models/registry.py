"""MLflow tracking and the ``dprm-forecaster`` model registry (the only library module that uses mlflow).

What needs no MLflow lives beside it: the forecaster package the pyfunc serves
(:mod:`models.package`), the promotion gate (:mod:`models.gate`), the hash-chained promotion log and
the per-model lock (:mod:`models.promotion_log`) and what runs record (:mod:`models.run_record`);
``dprm train``'s orchestration is :func:`pipelines.train.train_and_register`.

Tracking
--------
:func:`tracking_uri` is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<home>/mlflow.db`` with
artifacts under ``<home>/mlartifacts`` (experiments are created with that ``artifact_location``;
a remote ``http(s)`` server chooses its own). MLflow's telemetry and chatter are switched off with
``os.environ.setdefault`` before mlflow is imported (lazily, inside the functions, so
``import models.registry`` stays cheap). A fresh SQLite store is initialised once, under a lock
file, by :func:`init_store` before anything fans out. Metrics and params go through
``MlflowClient.log_batch`` on explicit run ids (MLflow's fluent API is thread-local); only
``log_model`` and ``load_model`` use the fluent API, under a process lock that restores the global
tracking URI afterwards. :func:`log_evaluation_run` writes one run of a walk-forward evaluation
into the experiment of its target, with child runs per symbol.

LightGBM members (:class:`models.lgbm.LGBMVol`) are not pickled: while the package is logged, the
codec's ``on_log`` hook logs every horizon's booster (and quantile booster) with
``mlflow.lightgbm.log_model`` into the registration run, with a signature, an input example and
explicit pins, and keeps the logged models' URIs on the estimator (``booster_uris_``); on load the
boosters come back through ``mlflow.lightgbm.load_model``.

Aliases and promotion
---------------------
Aliases ``challenger`` and ``champion`` (no stages). :func:`register_challenger` logs and registers
a package and points ``challenger`` at it. :func:`promote` runs the gate
(:func:`models.gate.evaluate_gate`) and, if it passes (``mode="auto"``) or a named approver signs
(``mode="manual"``, which still records the gate), moves ``champion``. The gate's inputs and
decision are tagged on the version; a rejected challenger stays registered with the reason. Every
move and rejection is appended to the promotion log. :func:`rollback` moves ``champion`` back.

Integrity
---------
Network calls are bounded (``MLFLOW_HTTP_REQUEST_TIMEOUT`` 5 s, at most one retry) and a remote
server is probed once (``/health``) by :func:`init_store`; a store that is not SQLite, or
empty/missing while the promotion log records events, is a :class:`~features.errors.RegistryError`.
:func:`verify_registry` cross-checks the ``champion`` aliases with the promotion log before every
champion read and every write (never a fallback); promotions log first and move the alias second,
and a move killed in between is completed there. Writes of one model hold
:func:`models.promotion_log.model_lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from features.errors import ConfigError, RegistryError
from features.schema import SYMBOL, TS
from models.base import BaseForecaster, jsonable
from models.evaluation import POOLED, EvaluationResult
from models.forecast import VolForecast
from models.gate import GateConfig, GateDecision, evaluate_gate, gate_tags
from models.package import (
    INPUT_COLUMNS,
    ForecasterPackage,
    MemberCodec,
    canonical_input,
    codec_for,
    forecast_frame_to_volforecasts,
    input_example,
    model_code_path,
    naive_utc,
    pins,
    pip_requirements,
    register_member_codec,
    registration_params,
    version_tags,
)
from models.promotion_log import (
    CHALLENGER,
    CHAMPION,
    MODEL_NAME,
    append_promotion_log,
    champion_moves,
    log_champions,
    model_lock,
    promotion_log_path,
)
from models.run_record import (
    TAG_MAX,
    dprm_version,
    evaluation_metrics,
    evaluation_run_params,
    evaluation_run_tags,
    evaluation_symbols,
    git_commit,
    write_evaluation_artifacts,
)

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

ForecasterBundle = ForecasterPackage
"""The package's former name: every stored version's pyfunc code (a copy of
``pipelines/forecaster_model.py`` logged with it) imports it from here, so it stays."""
EXPERIMENTS = {"volatility": "dprm-volatility", "correlation": "dprm-correlation"}
_ALREADY_EXISTS = ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS")
_FLUENT_LOCK = threading.RLock()
_INIT_LOCK = threading.Lock()
_INITIALISED: set[str] = set()
_SQLITE_HEADER = b"SQLite format 3\x00"
_PROBE_TIMEOUT_S = 5.0
"""Connect/read timeout of the reachability probe of a tracking server (one attempt)."""


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

    with _FLUENT_LOCK:
        prev_env = os.environ.get("MLFLOW_TRACKING_URI")
        # an explicit global URI is one the environment does not already say (None: unset)
        current = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
        prev = current if current != prev_env else None
        mlflow.set_tracking_uri(uri)
        try:
            yield mlflow
        finally:
            mlflow.set_tracking_uri(prev)  # None: back to the environment or MLflow's default
            if prev_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = prev_env


def _param_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return json.dumps([jsonable(x) for x in v])
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
    tg = [RunTag(k, str(v)[:TAG_MAX]) for k, v in tags.items()]
    for i in range(0, len(ms), 1000):
        client.log_batch(run_id, metrics=ms[i : i + 1000], synchronous=True)
    for i in range(0, len(ps), 100):
        client.log_batch(run_id, params=ps[i : i + 100], synchronous=True)
    for i in range(0, len(tg), 100):
        client.log_batch(run_id, tags=tg[i : i + 100], synchronous=True)


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
    params, tags, metrics and artifacts of :mod:`models.run_record` (:func:`evaluation_run_params`,
    :func:`evaluation_run_tags`, :func:`evaluation_metrics` in ``log_batch`` chunks,
    :func:`write_evaluation_artifacts`).
    """
    if not isinstance(result, EvaluationResult):
        raise TypeError(f"result must be an EvaluationResult; got {type(result).__name__}")
    exp = experiment_id(home, target)
    client = _client(tracking_uri(home))
    run_tags = evaluation_run_tags(
        result,
        target=target,
        feature_set_version=feature_set_version,
        run_name=run_name,
        data=data,
        tags=tags,
    )
    params = evaluation_run_params(
        result, feature_set_version=feature_set_version, models=models, data=data
    )
    run = client.create_run(exp, tags=run_tags)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        _log_batch(client, run_id, metrics=evaluation_metrics(result), params=params)
        with tempfile.TemporaryDirectory(prefix="dprm-eval-") as tmp:
            write_evaluation_artifacts(
                result,
                Path(tmp),
                target=target,
                feature_set_version=feature_set_version,
                models=models,
                config=config,
            )
            client.log_artifacts(run_id, tmp)
        symbols = evaluation_symbols(result)
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


# ---- LightGBM: boosters through mlflow.lightgbm, the rest as JSON ---------------------------------
_LGBM_PINS = ("mlflow", "lightgbm", "numpy", "pandas", "scipy")
_LGBM_EXAMPLE_ROWS = 5


def _lgbm_logged_name(member: str, h: int, level: float | None = None) -> str:
    """MLflow logged-model name of a booster ("<member>-h<h>[-q<level>]"; MLflow forbids dots)."""
    name = f"{member}-h{h}" if level is None else f"{member}-h{h}-q{level:g}"
    return name.replace(".", "p")


def _log_lgbm(est: Any, member: str, run_id: str, example: pd.DataFrame) -> None:
    """``on_log`` of :class:`models.lgbm.LGBMVol`: log every booster with ``mlflow.lightgbm`` into
    the active (registration) run and record ``booster_uris_`` = horizon -> {"booster": {uri,
    sha256}, "quantiles": {level: {uri, sha256}}} on the estimator for its ``to_state``.

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
    from models.lgbm import booster_sha256

    matrices = est.feature_matrices(canonical_input(example))
    reqs = pins(_LGBM_PINS)
    uris: dict[int, dict[str, Any]] = {}
    for h, m in sorted(est.models_.items()):
        if len(matrices[h]) == 0:
            raise ValueError(
                f"member {member!r}: the input example leaves no row for the horizon-{h} booster's "
                "example (all rows dropped by min_obs?)"
            )
        ex = matrices[h].iloc[-_LGBM_EXAMPLE_ROWS:].reset_index(drop=True)
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
            ref = {"uri": info.model_uri, "sha256": booster_sha256(booster)}
            if level is None:
                entry["booster"] = ref
            else:
                entry["quantiles"][repr(float(level))] = ref
        uris[int(h)] = entry
    est.booster_uris_ = uris


def _export_lgbm(est: Any) -> dict[str, Any]:
    return est.to_state()


def _restore_lgbm(est: Any, state: dict[str, Any]) -> None:
    """Boosters through ``mlflow.lightgbm.load_model`` (the tracking URI must point at the store
    they were logged to)."""
    import mlflow.lightgbm

    est.from_state(state, load_booster=mlflow.lightgbm.load_model)


register_member_codec(
    MemberCodec("models.lgbm.LGBMVol", _export_lgbm, _restore_lgbm, _log_lgbm, exact=True)
)


def model_signature(package: ForecasterPackage, example: pd.DataFrame) -> Any:
    """Input: ``ts`` (naive UTC datetime), ``symbol``, the realized columns (required when a member
    needs them); output: the long forecast table; param ``origins`` ("last" | "all")."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    need = set(package.required_columns())
    inputs = [ColSpec("datetime", TS), ColSpec("string", SYMBOL)]
    inputs += [ColSpec("double", c, required=c in need) for c in INPUT_COLUMNS]
    out_example = package.predict(example)
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
    forecasters: Mapping[str, BaseForecaster] | ForecasterPackage,
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
    """Log a forecaster package as a pyfunc, register it and point the ``challenger`` alias at it.

    Parameters
    ----------
    forecasters : member name -> forecaster (fitted, or fitted here on ``training_data``), or a
        ready :class:`~models.package.ForecasterPackage`.
    home : the workspace (see :func:`tracking_uri`); the promotion log is under ``home/registry``.
    training_data : the canonical realized frame the members were fitted on: the input example,
        the training window and the data fingerprint come from it.
    primary : the champion member (default: the first).
    horizons : horizons the pyfunc forecasts.
    evaluation_run_id : the evaluation run this package was chosen by (see
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

    package = (
        forecasters
        if isinstance(forecasters, ForecasterPackage)
        else ForecasterPackage.build(
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
        bdir = Path(tmp) / "bundle"  # the artifact keeps its stored name "bundle"
        example = input_example(package, training_data)
        signature = model_signature(package, example)
        with _fluent(uri) as mlflow, mlflow.start_run(run_id=run_id):
            for mname, est in package.members.items():
                codec = codec_for(est)
                if codec is not None and codec.on_log is not None:
                    codec.on_log(est, mname, run_id, example)
            manifest = package.save(bdir)
            info = mlflow.pyfunc.log_model(
                name="forecaster",
                python_model=str(model_code_path()),
                artifacts={"bundle": str(bdir)},
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements(package),
                metadata={
                    "dprm_bundle": {k: manifest[k] for k in ("primary", "horizons", "symbols")}
                },
            )
    _log_batch(client, run_id, params=registration_params(package, manifest))
    try:
        client.create_registered_model(name, description="DPRM volatility forecaster bundle")
    except MlflowException as exc:
        if exc.error_code not in _ALREADY_EXISTS:
            raise
    mv_tags = version_tags(
        package,
        manifest,
        status=CHALLENGER,
        commit=git_commit(),
        evaluation_run_id=evaluation_run_id,
        tags=tags,
    )
    with _fluent(uri):  # the SQL registry store resolves the logged model via the global URI
        mv = client.create_model_version(
            name,
            source=info.model_uri,
            run_id=run_id,
            model_id=info.model_id,
            tags=mv_tags,
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
    primary : the package's primary member (the champion model).
    """

    ref: ModelRef
    pyfunc: Any
    primary: str

    def predict(self, frame: pd.DataFrame, *, origins: str = "last") -> pd.DataFrame:
        """The long forecast table for a canonical realized frame (``ts`` may be tz-aware)."""
        return self.pyfunc.predict(naive_utc(frame), params={"origins": origins})

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


def _load_package(ref: ModelRef, uri: str) -> ForecasterPackage:
    with _fluent(uri) as mlflow:
        model = mlflow.pyfunc.load_model(ref.uri)
    package = getattr(model.unwrap_python_model(), "bundle", None)  # the pyfunc's attribute
    if not isinstance(package, ForecasterPackage):
        raise ValueError(f"{ref.uri} is not a dprm-forecaster bundle")
    return package


# =================================================================================================
# promotion, rollback and the promotion log
# =================================================================================================
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
            name, str(prev), "gate.rolled_back", f"{entry['who']}: {entry['reason']}"[:TAG_MAX]
        )


def _interrupted_move(
    home: Path, client: MlflowClient, name: str, have: str | None
) -> dict[str, Any] | None:
    """The log's last champion move of ``name`` when the registry is exactly one step behind it
    (its champion is the move's ``from_version`` and the target version exists with the logged
    run id): a promotion or rollback killed between its log line and the alias move."""
    from mlflow.exceptions import MlflowException

    moves = champion_moves(home, name)
    if not moves or moves[-1].get("from_version") != have:
        return None
    last = moves[-1]
    try:
        mv = client.get_model_version(name, str(last["to_version"]))
    except MlflowException:
        return None
    return last if mv.run_id == last.get("run_id") else None


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
        challenger = _load_package(ch_ref, uri)
        champion = None
        if current is not None:
            cp = _version(client, name, current)
            champion = _load_package(
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
    for k, val in gate_tags(decision, mode=mode, who=who, status=status, reason=why).items():
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
            e for e in champion_moves(home, name, ("promote",)) if e.get("to_version") == current
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
