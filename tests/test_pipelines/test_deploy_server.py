"""Scheduled deployments on a real ``prefect server start`` (the temporary API runs no scheduler).

Starts a server on a free loopback port with its own PREFECT_HOME and telemetry off, registers the
three deployments, checks their cron schedules and the runs the scheduler created against next
fire times computed by hand, triggers the forecast deployment through the API, executes it with a
Runner and checks the run completed and wrote its forecast file. The server is always stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from pipelines.flow_config import CycleConfig, DeployConfig, MonitorFlowConfig

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def prefect_server(tmp: Path) -> Iterator[str]:
    """``prefect server start`` on a free loopback port; yields the API URL; always stopped."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp / "server-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
    )
    log = open(tmp / "server.log", "wb")
    exe = Path(sys.executable).with_name("prefect")
    proc = subprocess.Popen(
        [
            str(exe),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
            "--analytics-off",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited: {(tmp / 'server.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prefect server not healthy after 120 s: {url}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()


def _next_daily(now: pd.Timestamp, hour: int, minute: int, n: int) -> list[pd.Timestamp]:
    first = now.normalize() + pd.Timedelta(hours=hour, minutes=minute)
    if first <= now:
        first += pd.Timedelta("1D")
    return [first + pd.Timedelta(days=k) for k in range(n)]


def _next_weekly(now: pd.Timestamp, weekday: int, hour: int, n: int) -> list[pd.Timestamp]:
    """The next ``n`` times at ``hour``:00 on ``weekday`` (Monday 0, Sunday 6), by hand."""
    first = now.normalize() + pd.Timedelta(days=(weekday - now.weekday()) % 7, hours=hour)
    if first <= now:
        first += pd.Timedelta("7D")
    return [first + pd.Timedelta(days=7 * k) for k in range(n)]


async def _exercise(deployments: list, cfg: DeployConfig) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, FlowRunFilter
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.deployments import run_deployment
    from prefect.runner import Runner
    from prefect.server.schemas.schedules import CronSchedule

    runner = Runner(pause_on_shutdown=False)
    for d in deployments:
        await runner.aadd_deployment(d)
    out: dict = {"deployments": {}}
    now = pd.Timestamp.now(tz="UTC")
    expected = {
        "dprm-cycle/retrain": (cfg.train_cron, _next_daily(now, 2, 0, 3)),
        "dprm-cycle/forecast": (
            cfg.forecast_cron,
            [now.ceil("h") + pd.Timedelta(hours=k) for k in range(3)],
        ),
        "dprm-monitor/monitor": (cfg.monitor_cron, _next_daily(now, 2, 30, 3)),
        "dprm-backtest/weekly": (cfg.backtest_cron, _next_weekly(now, 6, 4, 3)),
    }
    async with get_client() as client:
        for name, (cron, by_hand) in expected.items():
            dep = await client.read_deployment_by_name(name)
            sched = dep.schedules[0].schedule
            assert sched.cron == cron, name
            # Prefect's own next fire times agree with the hand-computed ones
            dates = await CronSchedule(cron=sched.cron, timezone=sched.timezone).get_dates(
                n=3, start=now.to_pydatetime()
            )
            runs: list = []
            deadline = time.monotonic() + 60
            while (
                len(runs) < 3 and time.monotonic() < deadline
            ):  # the scheduler service creates them
                runs = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id={"any_": [dep.id]}),
                    flow_run_filter=FlowRunFilter(state={"type": {"any_": ["SCHEDULED"]}}),
                    sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                    limit=3,
                )
                if len(runs) < 3:
                    await asyncio.sleep(1)
            out["deployments"][name] = {
                "cron": sched.cron,
                "timezone": sched.timezone,
                "by_hand": by_hand,
                "prefect_dates": [pd.Timestamp(d) for d in dates],
                "scheduled_runs": [pd.Timestamp(r.expected_start_time) for r in runs],
                "parameters": dep.parameters,
            }
        fr = await run_deployment("dprm-cycle/forecast", timeout=0)
        await runner.start(run_once=True)
        out["triggered"] = await client.read_flow_run(fr.id)
    return out


def test_deployments_schedules_and_a_triggered_run(
    embedded_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.deploy import build_deployments

    cfg = DeployConfig(cycle=CycleConfig(monitor=MonitorFlowConfig(now="data")))
    with prefect_server(tmp_path) as url:
        monkeypatch.setenv("PREFECT_API_URL", url)  # the Runner's flow-run subprocess
        with temporary_settings({PREFECT_API_URL: url}):
            deployments = build_deployments(cfg)  # flow.to_deployment, outside the event loop
            out = asyncio.run(_exercise(deployments, cfg))
    deps = out["deployments"]
    assert {n: d["cron"] for n, d in deps.items()} == {
        "dprm-cycle/retrain": "0 2 * * *",
        "dprm-cycle/forecast": "0 * * * *",
        "dprm-monitor/monitor": "30 2 * * *",
        "dprm-backtest/weekly": "0 4 * * 0",
    }
    for name, d in deps.items():
        assert d["timezone"] == "UTC"
        assert d["prefect_dates"] == d["by_hand"], name
        assert d["scheduled_runs"] == d["by_hand"], name
    assert deps["dprm-cycle/retrain"]["parameters"]["cfg"]["steps"] == [
        "ingest",
        "features",
        "train",
        "correlation",
    ]
    assert deps["dprm-cycle/forecast"]["parameters"]["cfg"]["steps"] == [
        "ingest",
        "features",
        "forecast",
    ]
    run = out["triggered"]
    assert run.state.is_completed(), run.state
    files = list((embedded_home / "forecasts" / "embedded" / "1D").glob("forecast_*.parquet"))
    # no champion registered yet: the baseline forecast, with the reason recorded
    assert [f.name for f in files] == ["forecast_20181231T210000Z_baseline-ewma.parquet"]
    table = pd.read_parquet(files[0])
    assert set(table["source_reason"]) == {"no champion of 'dprm-forecaster' registered yet"}
