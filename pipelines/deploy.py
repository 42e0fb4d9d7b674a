"""Scheduled deployments of the forecasting cycle, with Prefect's own mechanisms.

Four deployments (cron, in ``DeployConfig.timezone``):

==========================  ====================  =================================================
deployment                  default schedule      what runs
==========================  ====================  =================================================
``dprm-cycle/retrain``      ``0 2 * * *``         ingest -> build_features -> train -> correlation
``dprm-cycle/forecast``     ``0 * * * *``         ingest -> build_features -> forecast
``dprm-monitor/monitor``    ``30 2 * * *``        monitor (Failed on a breach)
``dprm-backtest/weekly``    ``0 4 * * 0``         the full margin backtest grid, then the report
==========================  ====================  =================================================

Schedules need a real Prefect server (``prefect server start``; the temporary API Prefect starts
for a plain flow call does not run the scheduler) and ``PREFECT_API_URL`` pointing at it.
:func:`deploy` either serves the deployments from this process (``flow.serve``-style, a
:class:`prefect.runner.Runner` that executes scheduled runs in subprocesses) or registers them
for a work pool (``prefect worker start --pool <pool>`` then runs them). Runs inherit the
environment, so ``DPRM_HOME`` (and ``MLFLOW_TRACKING_URI`` for a shared tracking server) must be
set where the runner or worker starts.
"""

from __future__ import annotations

from typing import Any

from pipelines.flow_config import BacktestFlowConfig, CycleConfig, DeployConfig, MonitorFlowConfig
from pipelines.flows import backtest_flow, daily_cycle, monitor

RETRAIN_STEPS = ("ingest", "features", "train", "correlation")
FORECAST_STEPS = ("ingest", "features", "forecast")


def deployment_specs(cfg: DeployConfig | None = None) -> list[dict[str, Any]]:
    """The four deployments as plain data: name, flow, cron, timezone, parameters."""
    cfg = cfg or DeployConfig()
    cycle = cfg.cycle.resolved()
    retrain = cycle.model_copy(update={"steps": RETRAIN_STEPS})
    fcst = cycle.model_copy(update={"steps": FORECAST_STEPS})
    mon: MonitorFlowConfig = cycle.monitor
    return [
        {
            "name": "retrain",
            "flow": daily_cycle,
            "cron": cfg.train_cron,
            "parameters": {"cfg": retrain.model_dump(mode="json")},
            "description": "Daily: ingest, features, walk-forward evaluation, gated promotion.",
        },
        {
            "name": "forecast",
            "flow": daily_cycle,
            "cron": cfg.forecast_cron,
            "parameters": {"cfg": fcst.model_dump(mode="json")},
            "description": "Hourly: ingest, features, champion (or fallback) forecast table.",
        },
        {
            "name": "monitor",
            "flow": monitor,
            "cron": cfg.monitor_cron,
            "parameters": {"cfg": mon.model_dump(mode="json")},
            "description": "Daily: monitoring checks; Failed on a breach.",
        },
        {
            "name": "weekly",
            "flow": backtest_flow,
            "cron": cfg.backtest_cron,
            "parameters": {"cfg": BacktestFlowConfig(
                dataset=cycle.forecast.dataset, methods=tuple(_all_methods()),
                portfolios=tuple(_all_portfolios()), impulse=True).model_dump(mode="json")},
            "description": "Weekly: the full margin backtest grid and the risk team's report.",
        },
    ]


def _all_methods() -> list[str]:
    from pipelines.backtest import METHODS
    return list(METHODS)


def _all_portfolios() -> list[str]:
    from pipelines.backtest import PORTFOLIOS
    return list(PORTFOLIOS)


def build_deployments(cfg: DeployConfig | None = None) -> list[Any]:
    """``RunnerDeployment`` objects (``flow.to_deployment``) with cron schedules.

    Call from synchronous code (inside an event loop ``to_deployment`` returns a coroutine).
    """
    from prefect.schedules import Cron

    cfg = cfg or DeployConfig()
    out = []
    for spec in deployment_specs(cfg):
        out.append(
            spec["flow"].to_deployment(
                name=spec["name"],
                schedules=[Cron(spec["cron"], timezone=cfg.timezone)],
                parameters=spec["parameters"],
                description=spec["description"],
                tags=["dprm"],
            )
        )
    return out


def deploy(
    cfg: DeployConfig | None = None, *, work_pool: str | None = None, serve: bool = True
) -> list[str]:
    """Register the scheduled deployments; serve them from this process unless a work pool is given.

    Parameters
    ----------
    cfg : schedules and cycle settings (default :class:`DeployConfig`).
    work_pool : register for this work pool (``prefect work-pool create <pool> --type process``;
        runs need ``prefect worker start --pool <pool>``) and return at once.
    serve : without a work pool: True blocks, running scheduled runs until interrupted
        (``prefect.serve``); False only registers the deployments (they run once served).

    Returns
    -------
    The deployment ids (as strings). Needs ``PREFECT_API_URL`` set to a running server.
    """
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise RuntimeError(
            "schedules need a Prefect server: start `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (the temporary API runs no scheduler)"
        )
    deployments = build_deployments(cfg)
    if work_pool is not None:
        return [str(d.apply(work_pool_name=work_pool)) for d in deployments]
    ids = [str(d.apply()) for d in deployments]
    if serve:
        from prefect import serve as prefect_serve

        prefect_serve(*deployments)
    return ids


def default_cycle() -> CycleConfig:
    """The cycle settings the deployments use by default."""
    return DeployConfig().cycle
