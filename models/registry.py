"""MLflow tracking and the model registry: the only library module that imports mlflow.

What needs no MLflow lives beside it: :mod:`models.registry_store` (where the store is),
:mod:`models.package` (what the pyfunc serves), :mod:`models.gate` (the promotion rules),
:mod:`models.promotion_log` (the hash-chained log, the per-model lock, version records) and
:mod:`models.run_record` (what runs record). MLflow's telemetry and chatter are switched off
before it is imported (lazily, inside functions); network calls are bounded (5 s, one retry).
Metrics and params go through ``log_batch`` on explicit run ids; only ``log_model``/``load_model``
use the fluent API, under a process lock that restores the global URI (:func:`_fluent`). Every
champion read and write first cross-checks the aliases with the promotion log
(:func:`verify_registry`); alias moves are logged before they happen (write-ahead).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from features.errors import ConfigError, RegistryError
from models import gate
from models import package as pkg
from models import promotion_log as plog
from models import registry_store as store
from models import run_record as rr
from models.base import BaseForecaster
from models.corr_gate import evaluate_corr_gate
from models.corr_package import CorrelationPackage
from models.evaluation import POOLED, EvaluationResult
from models.gate import GateConfig
from models.package import ForecasterPackage, LoadedForecaster
from models.promotion_log import CHALLENGER, CHAMPION, MODEL_NAME, ModelRef, model_lock
from models.registry_store import artifact_root, is_remote, probe_server, sqlite_path, tracking_uri

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

for _key, _value in store.MLFLOW_ENV.items():  # before mlflow is first imported
    os.environ.setdefault(_key, _value)

ForecasterBundle = ForecasterPackage
"""The package's former name: every stored version's pyfunc code (a copy of
``pipelines/forecaster_model.py`` logged with it) imports it from here, so it stays."""
EXPERIMENTS = {"volatility": "dprm-volatility", "correlation": "dprm-correlation",
               "backtest": "dprm-backtest"}
_ALREADY_EXISTS = ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS")
_FLUENT_LOCK = threading.RLock()
_INIT_LOCK = threading.Lock()
_INITIALISED: set[str] = set()


# =================================================================================================
# tracking
# =================================================================================================
def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


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
        db = sqlite_path(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            with open(db.with_name(db.name + ".lock"), "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    plog.check_store_file(db, Path(home))
                    _first_contact(uri)
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        else:
            if uri.startswith(("http://", "https://")):
                probe_server(uri)
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
    location = None if is_remote(uri) else (artifact_root(home) / name).as_uri()
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
    ps = [Param(k[:250], rr.param_value(v)) for k, v in params.items()]
    tg = [RunTag(k, str(v)[: rr.TAG_MAX]) for k, v in tags.items()]
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
    """Log a walk-forward evaluation as one MLflow run (experiment of ``target``: "volatility" or
    "correlation"); returns its run id.

    ``models`` (name -> forecaster) become params ``model.<name>.<param>`` (and coefficients or
    importances of fitted ones), ``data`` gives the window, symbols and fingerprint, ``config`` is
    logged as TOML; with ``per_symbol_runs`` each symbol also gets a nested child run. What is
    logged is built by :mod:`models.run_record` (params, tags, metrics in ``log_batch`` chunks,
    artifacts).
    """
    if not isinstance(result, EvaluationResult):
        raise TypeError(f"result must be an EvaluationResult; got {type(result).__name__}")
    exp = experiment_id(home, target)
    client = _client(tracking_uri(home))
    run_tags = rr.evaluation_run_tags(
        result,
        target=target,
        feature_set_version=feature_set_version,
        run_name=run_name,
        data=data,
        tags=tags,
    )
    params = rr.evaluation_run_params(
        result, feature_set_version=feature_set_version, models=models, data=data
    )
    run = client.create_run(exp, tags=run_tags)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        _log_batch(client, run_id, metrics=rr.evaluation_metrics(result), params=params)
        with tempfile.TemporaryDirectory(prefix="dprm-eval-") as tmp:
            rr.write_evaluation_artifacts(
                result,
                Path(tmp),
                target=target,
                feature_set_version=feature_set_version,
                models=models,
                config=config,
            )
            client.log_artifacts(run_id, tmp)
        symbols = rr.evaluation_symbols(result)
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
                _log_batch(client, child.info.run_id, metrics=rr.evaluation_metrics(result, sym))
                client.set_terminated(child.info.run_id)
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return run_id


# ---- LightGBM: boosters through mlflow.lightgbm, the rest as JSON ---------------------------------
def log_run(
    *,
    home: Path,
    target: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    artifacts: Mapping[str, bytes] | None = None,
) -> str:
    """Log one finished run (params, metrics, tags and small ``artifacts`` name -> bytes) in the
    experiment of ``target``; returns its run id (the correlation training's evaluation run)."""
    client = _client(tracking_uri(home))
    run_id = client.create_run(experiment_id(home, target),
                               tags={"mlflow.runName": run_name, **(tags or {})}).info.run_id
    status = "FAILED"
    try:
        _log_batch(client, run_id, metrics=dict(metrics),
                   params=params)
        with tempfile.TemporaryDirectory(prefix="dprm-run-") as tmp:
            for fname, data in (artifacts or {}).items():
                (Path(tmp) / fname).write_bytes(data)
            client.log_artifacts(run_id, tmp)
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return run_id


_LGBM_PINS = ("mlflow", "lightgbm", "numpy", "pandas", "scipy")
_LGBM_EXAMPLE_ROWS = 5


def _log_lgbm(est: Any, member: str, run_id: str, example: pd.DataFrame) -> None:
    """``on_log`` of :class:`models.lgbm.LGBMVol`: every booster through ``mlflow.lightgbm`` into
    the active (registration) run, its signature and input example its feature matrix built from
    the pyfunc's input example (:meth:`~models.lgbm.LGBMVol.boosters_to_log`); the URIs go back
    onto the estimator for its ``to_state``."""
    import mlflow
    from mlflow.models import infer_signature

    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:
        raise ValueError(
            f"member {member!r}: LightGBM boosters are logged inside the registration run "
            f"{run_id!r}; the active run is {None if active is None else active.info.run_id!r}"
        )
    reqs = pkg.pins(_LGBM_PINS)
    logged = []
    for h, level, name, booster, ex in est.boosters_to_log(
        member, pkg.canonical_input(example), _LGBM_EXAMPLE_ROWS
    ):
        signature = infer_signature(ex, booster.predict(ex.to_numpy()))
        info = mlflow.lightgbm.log_model(
            booster, name=name, signature=signature, input_example=ex, pip_requirements=reqs
        )
        logged.append((h, level, info.model_uri))
    est.set_booster_uris(logged)


def _restore_lgbm(est: Any, state: dict[str, Any]) -> None:
    """Boosters through ``mlflow.lightgbm.load_model`` (the tracking URI must point at the store
    they were logged to)."""
    import mlflow.lightgbm

    est.from_state(state, load_booster=mlflow.lightgbm.load_model)


pkg.register_member_codec(
    pkg.MemberCodec(
        "models.lgbm.LGBMVol", lambda est: est.to_state(), _restore_lgbm, _log_lgbm, exact=True
    )
)


def model_signature(package: ForecasterPackage, example: pd.DataFrame) -> Any:
    """Input: ``ts`` (naive UTC datetime), ``symbol``, the realized columns (required when a member
    needs them); output: the long forecast table; param ``origins`` ("last" | "all")."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = [ColSpec(kind, c, required=req) for kind, c, req in pkg.input_schema(package)]
    out = pkg.output_schema(package.predict(example))
    outputs = [ColSpec(kind, c, required=req) for kind, c, req in out]
    return ModelSignature(
        inputs=Schema(inputs),
        outputs=Schema(outputs),
        params=ParamSchema([ParamSpec("origins", "string", "last")]),
    )


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
    forecasters: Mapping[str, BaseForecaster] | ForecasterPackage | CorrelationPackage,
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
    """Log a forecaster package as a pyfunc, register it under ``name`` and point ``challenger``
    at it; returns the new version's :class:`ModelRef`.

    ``forecasters``: member name -> forecaster (fitted, or fitted here on ``training_data``), or a
    ready :class:`~models.package.ForecasterPackage`; ``training_data`` (the canonical realized
    frame) gives the input example, the training window and the fingerprint; ``primary`` is the
    champion member (default the first). With ``evaluation_run_id`` the model is logged in a new
    run nested under that evaluation run (logging into it would link every one of its metrics to
    the model) and the version is tagged with it. ``user`` (default the OS user) is recorded in
    the promotion log.
    """
    from mlflow.exceptions import MlflowException

    package = (
        forecasters
        if isinstance(forecasters, ForecasterPackage | CorrelationPackage)
        else ForecasterPackage.build(
            forecasters, primary=primary, horizons=horizons, training_data=training_data
        )
    )
    exp = experiment_id(home, target)
    uri = tracking_uri(home)
    client = _client(uri)
    run_tags = pkg.registration_run_tags(evaluation_run_id)
    run_id = client.create_run(exp, tags=run_tags).info.run_id
    with tempfile.TemporaryDirectory(prefix="dprm-bundle-") as tmp:
        bdir = Path(tmp) / "bundle"  # the artifact keeps its stored name "bundle"
        example = pkg.input_example(package, training_data)
        signature = model_signature(package, example)
        with (_fluent(uri) as mlflow, mlflow.start_run(run_id=run_id),
              warnings.catch_warnings()):
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            for mname, est in package.members.items():
                codec = pkg.codec_for(est)
                if codec is not None and codec.on_log is not None:
                    codec.on_log(est, mname, run_id, example)
            manifest = package.save(bdir)
            info = mlflow.pyfunc.log_model(
                name="forecaster",
                python_model=str(pkg.model_code_path(package)),
                artifacts={"bundle": str(bdir)},
                signature=signature,
                # a correlation model's example spans its window in (possibly minute) bars: the
                # explicit signature is enough
                input_example=example if package.target == "volatility" else None,
                pip_requirements=pkg.pip_requirements(package),
                metadata={
                    "dprm_bundle": {k: manifest[k] for k in ("primary", "horizons", "symbols")}
                },
            )
    _log_batch(client, run_id, params=pkg.registration_params(package, manifest))
    try:
        client.create_registered_model(name, description=f"DPRM {package.target} forecaster")
    except MlflowException as exc:
        if exc.error_code not in _ALREADY_EXISTS:
            raise
    mv_tags = pkg.version_tags(
        package,
        manifest,
        status=CHALLENGER,
        commit=rr.git_commit(),
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
    plog.log_event(home, "register_challenger", name, from_version=previous,
                   to_version=str(mv.version), who=user or getpass.getuser(), mode="auto",
                   reason=description or "", run_id=run_id, alias=CHALLENGER)
    return ModelRef.at(name, mv.version, CHALLENGER, run_id)


# =================================================================================================
# queries and loading
# =================================================================================================
def _registered(client: MlflowClient, name: str) -> Any:
    """The registered model ``name`` (None when it does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """alias -> version of a registered model ({} when the model does not exist)."""
    rm = _registered(client, name)
    return {} if rm is None else {str(k): str(v) for k, v in (rm.aliases or {}).items()}


def _version(client: MlflowClient, name: str, version: int | str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ConfigError(f"model {name!r} has no version {str(version)!r}") from None
        raise


def list_versions(*, home: Path, name: str | None = MODEL_NAME) -> pd.DataFrame:
    """One row per registered version (:func:`models.package.version_row`), sorted by model and
    version; ``name=None``: every registered model."""
    from mlflow.exceptions import MlflowException

    client = _client(init_store(home))
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
        rows += [pkg.version_row(n, mv, aliases) for mv in versions]
    return pkg.versions_frame(rows)


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
        metrics = {k: v for k, v in run.data.metrics.items()
                   if k.startswith("qlike/") and f"/{POOLED}/" in k}
    return pkg.version_details(name, mv, aliases, metrics)


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
    return ModelRef.at(name, mv.version, alias, mv.run_id)


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


def _load_package(ref: ModelRef, uri: str) -> ForecasterPackage | CorrelationPackage:
    """The package behind a version; one that cannot be restored (a missing artifact, a file
    whose digest differs from its manifest) is a :class:`RegistryError` naming the version."""
    try:
        with _fluent(uri) as mlflow:
            model = mlflow.pyfunc.load_model(ref.uri)
        package = getattr(model.unwrap_python_model(), "bundle", None)  # the pyfunc's attribute
    except Exception as exc:  # any failure to restore a version is this one error
        raise RegistryError(f"version {ref.version} of {ref.name!r} cannot be restored "
                            f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(package, ForecasterPackage | CorrelationPackage):
        raise RegistryError(f"version {ref.version} of {ref.name!r} ({ref.uri}) is not a dprm package")
    return package


def load_package(
    ref: ModelRef | str | int = CHAMPION, *, home: Path, name: str = MODEL_NAME
) -> ForecasterPackage | CorrelationPackage:
    """The package (volatility or correlation) of a registered version by :class:`ModelRef`,
    alias or version, after :func:`verify_registry`."""
    verify_registry(home, name)
    if not isinstance(ref, ModelRef):
        ref = model_ref(ref, home=home, name=name)
    return _load_package(ref, init_store(home))


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
            name, str(prev), "gate.rolled_back", f"{entry['who']}: {entry['reason']}"[: rr.TAG_MAX]
        )


def _interrupted_move(
    home: Path, client: MlflowClient, name: str, have: str | None
) -> dict[str, Any] | None:
    """The log's last champion move of ``name`` when the registry is exactly one step behind it
    (its champion is the move's ``from_version`` and the target version exists with the logged
    run id): a promotion or rollback killed between its log line and the alias move."""
    from mlflow.exceptions import MlflowException

    moves = plog.champion_moves(home, name)
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
    """Cross-check the registry's ``champion`` aliases with the hash-chained promotion log
    (one model, or every model in the registry or the log); returns name -> champion version.

    A :class:`RegistryError` when the log names a champion the registry lacks (a wiped or replaced
    registry), the registry has one the log does not name (an alias moved outside dprm), the
    chain is broken or the store cannot be opened: nothing falls back. A promotion or rollback
    killed between its log line and the alias move (registry exactly one move behind, target
    version present with the logged run id) is completed here, under the model's lock.
    """
    uri = init_store(home)
    client = _client(uri)
    logged = plog.log_champions(home)
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
            exists = have is not None or _registered(client, n) is not None
            raise plog.champion_mismatch(home, uri, n, logged=want, registered=have, exists=exists)
        out[n] = have
    return out


def champion_version(home: Path, name: str = MODEL_NAME) -> str | None:
    """The champion version of ``name`` after :func:`verify_registry` (None: no champion in the
    registry and none in the log)."""
    return verify_registry(home, name)[name]


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
) -> gate.PromotionResult:
    """Promote ``version`` to ``champion`` through the gate.

    ``mode`` "auto": the gate decides on ``data`` (the canonical realized frame, required);
    "manual": a named ``approver`` decides with a ``reason`` (an override; the gate still runs
    and is recorded when ``data`` is given). Returns a :class:`PromotionResult`: a rejected
    challenger is not an error (``promoted`` False, the reason tagged on the version and logged).
    """
    gate.check_promotion_request(mode, approver, reason, has_data=data is not None)
    uri = init_store(home)
    client = _client(uri)
    mv = _version(client, name, version)
    v = str(mv.version)
    current = _aliases(client, name).get(CHAMPION)
    if current == v:
        raise ConfigError(f"version {v} of {name!r} is already the champion")
    decision = None
    if data is not None:
        ch_ref = ModelRef.at(name, v, None, mv.run_id)
        challenger = _load_package(ch_ref, uri)
        champion = None
        if current is not None:
            cp = _version(client, name, current)
            champion = _load_package(ModelRef.at(name, current, CHAMPION, cp.run_id), uri)
        run_gate = evaluate_corr_gate if challenger.target == "correlation" else gate.evaluate_gate
        decision = run_gate(
            challenger, champion, data, gate_config,  # type: ignore[arg-type]
            challenger_version=v, champion_version=current,
        )
    out = gate.promotion_outcome(decision, mode=mode, approver=approver, reason=reason)
    tags = gate.gate_tags(decision, mode=mode, who=out.who, status=out.status, reason=out.reason)
    for k, val in tags.items():
        client.set_model_version_tag(name, v, k, val)
    # write-ahead: the log records the move before the alias moves, so a run killed in between
    # leaves a move that verify_registry completes (never an alias the log does not know)
    entry = plog.log_event(
        home, "promote" if out.promoted else "reject", name, from_version=current,
        to_version=v if out.promoted else current, candidate_version=v, who=out.who, mode=mode,
        reason=out.reason, gate=None if decision is None else decision.summary(), run_id=mv.run_id)
    if out.promoted:
        _apply_move(client, name, entry)
    else:
        client.set_model_version_tag(name, v, "dprm.status", "rejected")
    return gate.PromotionResult(out.promoted, v, current, decision, entry)


@_serialized
def rollback(
    *,
    home: Path,
    approver: str,
    reason: str,
    to_version: int | str | None = None,
    name: str = MODEL_NAME,
) -> gate.PromotionResult:
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
    gate.check_rollback_request(approver, reason)
    client = _client(init_store(home))
    current = _aliases(client, name).get(CHAMPION)
    if current is None:
        raise ConfigError(f"model {name!r} has no champion to roll back")
    if to_version is None:
        to_version = plog.previous_champion(home, name, current)
    mv = _version(client, name, to_version)
    target = str(mv.version)
    if target == current:
        raise ConfigError(f"version {target} of {name!r} is already the champion")
    entry = plog.log_event(  # write-ahead, as in promote
        home, "rollback", name, from_version=current, to_version=target,
        candidate_version=target, who=approver.strip(), mode="manual", reason=reason,
        run_id=mv.run_id)
    _apply_move(client, name, entry)
    return gate.PromotionResult(True, target, current, None, entry)
