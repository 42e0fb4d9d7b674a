"""Prefect tasks: thin wrappers of :mod:`pipelines.steps` with retries, timeouts and caching.

Caching: only pure computations are cached across runs — the per-symbol walk-forward evaluation,
keyed (:func:`evaluation_cache_key`) on the symbol's feature fingerprint (content digests of its
feature partitions), the evaluation settings and the library code version, never on the workspace
path or on live objects; results are persisted under ``PREFECT_RESULTS_LOCAL_STORAGE_PATH``
(``<home>/prefect/storage``). Steps with side effects
(ingest, feature build, registry, forecast files, reports) are not cached by Prefect; they are
idempotent themselves (content fingerprints, training keys, one file per data cutoff and model), so
a rerun on unchanged data does no work and adds nothing.

Retries cover transient I/O (files, the MLflow server). No Prefect ``timeout_seconds``: tasks run
in worker threads, where Prefect cannot interrupt blocking I/O (it warns so on every run); network
calls are bounded by the clients instead (``MLFLOW_HTTP_REQUEST_TIMEOUT`` and
``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, set by :func:`pipelines.flow_config.engine_environment`).

Import :mod:`pipelines.flows` (which sets the engine environment first) rather than this module
directly when Prefect is not imported yet.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.evaluation import EvaluationResult
from pipelines import steps
from pipelines.bundles import issue_bundle
from pipelines.corr_train import train_correlation
from pipelines.flow_config import (
    CorrTrainFlowConfig,
    FeaturesFlowConfig,
    ForecastFlowConfig,
    IngestFlowConfig,
    MonitorFlowConfig,
    TrainFlowConfig,
)

EVALUATION_FIELDS = (
    "dataset",
    "freq",
    "candidates",
    "baselines",
    "horizons",
    "window",
    "window_type",
    "refit_every",
    "eval_periods",
    "mcs_reps",
    "seed",
)
"""Training settings an evaluation depends on (its cache key); registry settings are left out."""

_CODE_FILES = (
    "models/base.py",
    "models/evaluation.py",
    "models/har.py",
    "models/ewma.py",
    "models/garch.py",
    "models/losses.py",
    "models/forecast.py",
    "models/catalog.py",
    "pipelines/steps.py",
)


@lru_cache(maxsize=1)
def code_version() -> str:
    """Digest of the library sources an evaluation runs (a code change invalidates the cache)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.blake2b(digest_size=8)
    for rel in _CODE_FILES:
        p = root / rel
        h.update(rel.encode())
        h.update(p.read_bytes() if p.exists() else b"missing")
    return h.hexdigest()


def evaluation_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Cache key of :func:`evaluate_symbol_task`: symbol, the symbol's feature fingerprint, the
    evaluation settings and :func:`code_version` (not the workspace path, not live objects)."""
    cfg: TrainFlowConfig = parameters["cfg"]
    doc = cfg.model_dump_json(include=set(EVALUATION_FIELDS))
    raw = "|".join(
        ["evaluate-symbol", parameters["symbol"], parameters["features_fp"], doc, code_version()]
    )
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transient failures, never a
    :class:`~features.errors.DPRMError` (bad input, a corrupt or inconsistent registry: a retry
    gives the same answer later)."""
    from features.errors import DPRMError

    return not isinstance(state.result(raise_on_failure=False), DPRMError)


@task(name="ingest-source", retries=2, retry_delay_seconds=2, task_run_name="ingest-{source}")
def ingest_source_task(home: str, source: str, cfg: IngestFlowConfig) -> dict[str, Any]:
    """Ingest one source (idempotent; retried on I/O errors)."""
    out = steps.ingest_source(home, source, cfg)
    get_run_logger().info(
        "ingest %s -> %s: %s rows added%s",
        source,
        out["dataset"],
        out["rows_added"],
        " (already stored)" if out["skipped"] else "",
    )
    return out


@task(
    name="warm-symbol-features", retries=1, retry_delay_seconds=1, task_run_name="features-{symbol}"
)
def warm_symbol_task(home: str, cfg: FeaturesFlowConfig, symbol: str) -> dict[str, Any]:
    """One symbol's base measures into the feature cache."""
    return steps.warm_symbol_features(home, cfg, symbol)


@task(name="build-features", retries=1, retry_delay_seconds=1)
def build_features_task(home: str, cfg: FeaturesFlowConfig) -> dict[str, Any]:
    """Assemble and write the feature frame (incremental)."""
    out = steps.build_features(home, cfg)
    get_run_logger().info(
        "features %s/%s: %d rows, %d partitions written, %d unchanged",
        cfg.dataset,
        cfg.freq,
        out["rows"],
        out["partitions_written"],
        out["partitions_unchanged"],
    )
    return out


@task(
    name="init-tracking",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_user_error,
)
def init_tracking_task(home: str) -> str:
    """Create/migrate the MLflow store once, before anything fans out; returns the tracking URI."""
    from models import registry

    return registry.init_store(home)


@task(
    name="evaluate-symbol",
    cache_key_fn=evaluation_cache_key,
    persist_result=True,
    cache_expiration=timedelta(days=30),
    retries=1,
    retry_delay_seconds=1,
    task_run_name="evaluate-{symbol}",
)
def evaluate_symbol_task(
    home: str, cfg: TrainFlowConfig, symbol: str, features_fp: str
) -> EvaluationResult:
    """Walk-forward evaluation of every candidate on one symbol; ``features_fp`` (the symbol's
    feature fingerprint) is part of the cache key."""
    return steps.evaluate_symbol(home, cfg, symbol)


@task(name="merge-evaluations")
def merge_task(results: dict[str, EvaluationResult]) -> EvaluationResult:
    """Per-symbol evaluations -> one result with pooled losses."""
    return steps.merge_evaluations(results)


@task(
    name="register-and-promote",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_user_error,
)
def register_task(
    home: str, cfg: TrainFlowConfig, result: EvaluationResult, data_fp: str
) -> dict[str, Any]:
    """Log, register the challenger and run the promotion gate (idempotent per training key)."""
    out = steps.register_and_promote(home, cfg, result, data_fp)
    log = get_run_logger()
    log.info(
        "challenger %s -> version %s (%s); gate %s%s",
        out.challenger,
        out.version,
        "reused" if out.reused else "registered",
        out.gate_status,
        f": {out.gate_reason}" if out.gate_reason else "",
    )
    return out.to_dict()


@task(
    name="train-correlation",
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_user_error,
)
def train_correlation_task(home: str, cfg: CorrTrainFlowConfig) -> dict[str, Any]:
    """Evaluate the correlation candidates, register the challenger and run the correlation gate
    (idempotent per training key)."""
    out = train_correlation(home, cfg)
    get_run_logger().info(
        "correlation challenger %s -> version %s; gate %s%s",
        out["challenger"], out.get("version", "-"), out.get("gate_status", "-"),
        f": {out['gate_reason']}" if out.get("gate_reason") else "",
    )
    return out


@task(name="issue-bundle", retries=1, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_user_error)
def bundle_task(home: str, cfg: ForecastFlowConfig) -> dict[str, Any]:
    """Ledger the champions' issued forecasts and write the risk-forecast bundle."""
    out = issue_bundle(home, cfg)
    get_run_logger().info("bundle %s at %s -> %s", out["bundle_id"][:12], out["as_of"], out["path"])
    return out


@task(name="margin", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)
def margin_task(home: str, dataset: str, freq: str | None = None) -> list[dict[str, Any]]:
    """Margin of the dataset's example books from its latest bundle at ``freq`` (written once per
    as_of, portfolio, parameters and bundle)."""
    from pipelines.margin_run import cycle_margin  # the margin stack only when margin runs

    out = cycle_margin(home, dataset, freq)
    for m in out:
        get_run_logger().info("margin %s at %s: IM %.2f %s (%s)", m["portfolio"], m["as_of"],
                              m["im"], m["margin_currency"], m["path"])
    return out


@task(name="accounts", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)
def accounts_task(home: str, dataset: str, freq: str | None = None) -> dict[str, Any] | None:
    """The configured accounts' status after the margin step (equity, IM, MM, status,
    liquidation moves), written under ``$DPRM_HOME/accounts/``."""
    from pipelines.accounts_run import cycle_accounts

    out = cycle_accounts(home, dataset, freq)
    if out is not None:
        get_run_logger().info("accounts %s at %s: %s (%s)", dataset, out["as_of"], out["status"],
                              out["path"])
    return out


@task(name="forecast", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)
def forecast_task(home: str, cfg: ForecastFlowConfig) -> dict[str, Any]:
    """Forecast with the champion (or the baseline fallback) and persist the table."""
    out = steps.forecast_step(home, cfg)
    get_run_logger().info(
        "forecast %s v%s (%s) at cutoff %s -> %s%s",
        out.model,
        out.version,
        out.source,
        out.data_cutoff_ts,
        out.path,
        "" if out.written else " (already written)",
    )
    return out.to_dict()


@task(name="monitor", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error)
def monitor_task(home: str, cfg: MonitorFlowConfig) -> dict[str, Any]:
    """All monitoring checks; writes the report and applies the fallback rule."""
    return steps.monitor_step(home, cfg).to_dict()


@task(name="backtest-chunk", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE,
      task_run_name="backtest-{job.label}")
def backtest_chunk_task(job: Any) -> str:
    """One checkpointed chunk of a backtest (:func:`pipelines.backtest.run_chunk`)."""
    from pipelines.backtest import run_chunk

    out = run_chunk(job)
    get_run_logger().info("%s -> %s", job.label, out)
    return out


@task(name="backtest-report", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def backtest_report_task(home: str, dataset: str) -> dict[str, Any]:
    """The HTML report of the dataset's latest backtest, logged to MLflow."""
    from pipelines.backtest_report import write_report

    out = write_report(home, dataset)
    return {k: str(v) for k, v in out.items()}


@task(name="backtest-setting", cache_policy=NO_CACHE, task_run_name="backtest-setting")
def backtest_sweep_task(home: str, dataset: str, start: str | None, end: str | None,
                        symbols: list[str] | None, methods: tuple[str, ...],
                        portfolios: tuple[str, ...], params: dict[str, Any]) -> list[dict[str, Any]]:
    """One sweep setting's backtest (its margin parameters); its statistics rows."""
    from margin.params import MarginParams
    from pipelines import backtest as bt

    run = bt.run_backtest(home, dataset, start=start, end=end, methods=methods,
                          portfolios=portfolios, symbols=symbols,
                          params=MarginParams.model_validate(params))
    return run.summary["rows"]
