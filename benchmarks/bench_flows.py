"""Training-flow time for 1, 2 and 50 symbols on the thread runner vs Dask, as ratios.

Usage::

    python benchmarks/bench_flows.py [--symbols 1 2 50] [--days 2000] [--seed 7] [--quick]

Workspace: a temporary ``DPRM_HOME``. 1 and 2 symbols are the embedded real daily data (S&P 500,
then S&P 500 + NASDAQ, 1999-2018); 50 symbols are simulated daily OHLC bars (log-variance AR(1),
seeded) of ``--days`` days, ingested and turned into features by the same pipeline steps.

Each measurement runs the ``train`` flow (per-symbol walk-forward evaluation mapped over the task
runner, then the merge and ranking; ``register_model=False`` so the MLflow registration, which does
not depend on the runner, is left out; ``refresh_cache=True`` so nothing comes from the cache) with

- ``threads``: ``ThreadPoolTaskRunner(max_workers=2)`` (the default kind);
- ``dask-local``: ``DaskTaskRunner`` starting a 2-process ``LocalCluster`` for the flow run;
- ``dask-warm``: ``DaskTaskRunner(address=...)`` on a 2-process cluster started beforehand.

Dask workers are processes, so a real Prefect API is needed: the script runs a Prefect test server
(``prefect_test_harness``) and exports ``PREFECT_API_URL`` to the workers. Printed: wall seconds
per runner and the ratios ``dask / threads`` (> 1: Dask slower), all from the same process.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def simulate_bars(n_symbols: int, n_days: int, rng: np.random.Generator) -> pd.DataFrame:
    """Daily OHLC bars with persistent stochastic variance (log-variance AR(1), phi = 0.97)."""
    ts = pd.date_range("2015-01-02 21:00", periods=n_days, freq="D", tz="UTC")
    frames = []
    for i in range(n_symbols):
        mu, phi, eta = np.log(2e-4) + rng.normal(0, 0.5), 0.97, 0.2
        lv = np.empty(n_days)
        lv[0] = mu
        shocks = rng.normal(0, eta, n_days)
        for t in range(1, n_days):
            lv[t] = mu + phi * (lv[t - 1] - mu) + shocks[t]
        sd = np.sqrt(np.exp(lv))
        r = sd * rng.standard_normal(n_days)
        close = 100 * np.exp(np.cumsum(r))
        open_ = np.concatenate([[100.0], close[:-1]])
        wig = sd * np.abs(rng.standard_normal((2, n_days))) * 0.6
        frames.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "symbol": f"SYN{i:02d}",
                    "open": open_,
                    "high": np.maximum(open_, close) * np.exp(wig[0]),
                    "low": np.minimum(open_, close) * np.exp(-wig[1]),
                    "close": close,
                    "volume": rng.uniform(1e5, 1e6, n_days),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, nargs="+", default=[1, 2, 50])
    ap.add_argument("--days", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="50 -> 10 symbols, 1200 days")
    args = ap.parse_args(argv)
    if args.quick:
        args.symbols = [min(n, 10) for n in args.symbols]
        args.days = min(args.days, 1200)

    tmp = Path(tempfile.mkdtemp(prefix="dprm-bench-flows-"))
    home = tmp / "home"
    os.environ["DPRM_HOME"] = str(home)
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

    from features.ingest import ingest_frames
    from pipelines import steps
    from pipelines.flow_config import (
        FeaturesFlowConfig,
        IngestFlowConfig,
        RunnerConfig,
        TrainFlowConfig,
    )
    from pipelines.flows import train
    from pipelines.runners import make_runner

    t0 = time.perf_counter()
    steps.ingest_source(home, "embedded", IngestFlowConfig())
    steps.build_features(home, FeaturesFlowConfig())
    n_syn = max([n for n in args.symbols if n > 2], default=0)
    if n_syn:
        bars = simulate_bars(n_syn, args.days, np.random.default_rng(args.seed))
        ingest_frames(
            steps.Workspace(home).data,
            "bench",
            {"bars_1d": ("bars", bars, pd.Timedelta("1D"))},
            source=f"bench_flows.simulate_bars(seed={args.seed}, n={n_syn}, days={args.days})",
        )
        steps.build_features(home, FeaturesFlowConfig(dataset="bench"))
    print(f"data prepared in {time.perf_counter() - t0:.1f} s (workspace {home})")

    def config(n: int) -> TrainFlowConfig:
        if n <= 2:
            syms = ("SP500",) if n == 1 else ("NASDAQ", "SP500")
            return TrainFlowConfig(
                dataset="embedded", symbols=syms, register_model=False, refresh_cache=True
            )
        syms = tuple(f"SYN{i:02d}" for i in range(n))
        return TrainFlowConfig(
            dataset="bench", symbols=syms, register_model=False, refresh_cache=True
        )

    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    rows = []
    with prefect_test_harness(server_startup_timeout=120):
        os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
        try:
            runners = {
                "threads": RunnerConfig(max_workers=2),
                "dask-local": RunnerConfig(kind="dask", dask_workers=2),
                "dask-warm": RunnerConfig(kind="dask", dask_address=cluster.scheduler_address),
            }
            for warm in ("threads", "dask-warm"):  # imports in this process and in the workers
                train.with_options(task_runner=make_runner(runners[warm]))(config(2))
            for n in args.symbols:
                cfg = config(n)
                row = {"symbols": n}
                for name, rc in runners.items():
                    t = time.perf_counter()
                    out = train.with_options(task_runner=make_runner(rc))(cfg)
                    row[name] = time.perf_counter() - t
                    row.setdefault("challenger", out["challenger"])
                rows.append(row)
                print(f"{n:>3} symbols: " + ", ".join(f"{k} {row[k]:.2f} s" for k in runners))
        finally:
            cluster.close()
    df = pd.DataFrame(rows)
    df["dask-local / threads"] = df["dask-local"] / df["threads"]
    df["dask-warm / threads"] = df["dask-warm"] / df["threads"]
    with pd.option_context("display.width", 160, "display.float_format", "{:.2f}".format):
        print(df.to_string(index=False))
    print(f"cpu count {os.cpu_count()}; python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
