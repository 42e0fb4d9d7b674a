"""Task runners chosen by configuration: threads by default, Dask for scale-out.

``make_runner(RunnerConfig(kind="dask", dask_address="tcp://scheduler:8786"))`` runs the mapped
tasks (per-symbol features, per-symbol walk-forward evaluation) on an existing Dask cluster; without
an address a ``LocalCluster`` of ``dask_workers`` processes is started for the flow run and closed
after it. Dask workers are separate processes, so they need a real Prefect API
(``PREFECT_API_URL``, e.g. ``prefect server start``): with the temporary API each worker would
start its own server.

The environment can choose too: ``DPRM_RUNNER`` ("threads" or "dask"), ``DPRM_DASK_ADDRESS``,
``DPRM_MAX_WORKERS`` override the configuration (see :func:`runner_config_from_env`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from features.errors import ConfigError
from pipelines.flow_config import RunnerConfig


def runner_config_from_env(cfg: RunnerConfig | None = None) -> RunnerConfig:
    """``cfg`` (default: threads) updated from ``DPRM_RUNNER``, ``DPRM_DASK_ADDRESS``,
    ``DPRM_MAX_WORKERS`` when they are set."""
    cfg = cfg or RunnerConfig()
    upd: dict[str, Any] = {}
    if kind := os.environ.get("DPRM_RUNNER"):
        upd["kind"] = kind
    if addr := os.environ.get("DPRM_DASK_ADDRESS"):
        upd["dask_address"] = addr
    if n := os.environ.get("DPRM_MAX_WORKERS"):
        upd["max_workers"] = int(n)
    return RunnerConfig.model_validate({**cfg.model_dump(), **upd}) if upd else cfg


def make_runner(cfg: RunnerConfig | None = None) -> Any:
    """The Prefect task runner ``cfg`` describes (imported lazily).

    Parameters
    ----------
    cfg : runner settings; None = ``ThreadPoolTaskRunner`` with Prefect's default worker count.

    Returns
    -------
    ``ThreadPoolTaskRunner(max_workers=...)`` or ``DaskTaskRunner(address=...)`` /
    ``DaskTaskRunner(cluster_class=LocalCluster, cluster_kwargs=...)``.
    """
    cfg = cfg or RunnerConfig()
    if cfg.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.max_workers)
    if cfg.kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:  # pragma: no cover - optional extra
            raise ImportError(
                "the 'dask' runner needs prefect-dask: pip install -c constraints.txt -e .[dask]"
            ) from exc
        if cfg.dask_address:
            return DaskTaskRunner(address=cfg.dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": cfg.dask_workers,
                "threads_per_worker": cfg.dask_threads_per_worker,
                "processes": True,
                "dashboard_address": None,
                "silence_logs": logging.WARNING,
            },
        )
    raise ConfigError(
        f"The 'kind' parameter of RunnerConfig must be 'threads' or 'dask'. Got {cfg.kind!r} instead."
    )
