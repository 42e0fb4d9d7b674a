"""Time per risk-forecast bundle rebuilt from the ledger (issue 15, goal <= 50 ms per bundle).

A daily ledger of ``--symbols`` symbols (2-5) with ``--days`` days of seeded walk-forward history:
one volatility model (horizons 1, 2, 5), one correlation model on the symbol set (horizons 1, 2,
5) and closes. ``build_bundle`` is then timed at ``--bundles`` as-of dates spread over the last
half of the history with one ledger object (the backtest's use: the ledger's parts are read once),
wall-clock and process CPU time (the machine is shared: CPU time is the steadier figure). The
first build (which reads the ledger's parts from disk) is reported separately, as is
``save``+``load`` of one bundle. Prints the median and 90th percentile per bundle and the ratio to
the 50 ms goal.

Run: ``python benchmarks/bench_bundle.py [--symbols 5] [--days 2000] [--bundles 60]
[--scale-n-boot 199]`` (the last also estimates the variance scale inside every bundle).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.bundle_build import ModelRef, build_bundle
from models.forecast import CorrForecast, RiskForecastBundle, VolForecast
from models.ledger import ForecastLedger

GOAL_MS = 50.0
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")


def make_ledger(root: Path, n_sym: int, n_days: int, seed: int = 0) -> tuple[
        ForecastLedger, pd.DataFrame, pd.DatetimeIndex]:
    """A ledger with EWMA-like variance forecasts, constant-ish correlations and the closes."""
    rng = np.random.default_rng(seed)
    syms = SYMBOLS[:n_sym]
    days = pd.date_range("2019-01-01", periods=n_days, freq="1D", tz="UTC")
    led = ForecastLedger(root)
    closes = {}
    for k, s in enumerate(syms):
        sig2 = np.empty(n_days)
        r = np.empty(n_days)
        sig2[0] = (0.02 + 0.005 * k) ** 2
        for t in range(n_days):
            r[t] = rng.standard_t(5) * np.sqrt(sig2[t] * 3 / 5)
            if t + 1 < n_days:
                sig2[t + 1] = 0.94 * sig2[t] + 0.06 * r[t] ** 2
        closes[s] = 100.0 * np.exp(np.cumsum(r))
        var = pd.DataFrame({h: sig2 * (1 + 0.02 * (h - 1)) for h in (1, 2, 5)}, index=days)
        led.seed_walk_forward(VolForecast(var, s, "1D", 365.0, "ewma", "1",
                                          pd.Series(days, index=days)).to_frame())
    f = rng.normal(size=(n_sym, n_sym + 3))
    base = f @ f.T
    d = np.sqrt(np.diag(base))
    base = base / d[:, None] / d[None, :]
    corr = np.empty((n_days, 3, n_sym, n_sym))
    for t in range(n_days):
        w = 0.8 + 0.2 * np.sin(t / 50.0)
        c = w * base + (1 - w) * np.eye(n_sym)
        np.fill_diagonal(c, 1.0)
        corr[t] = c
    led.append_corr(CorrForecast(corr=corr, symbols=syms, origins=days, horizons=(1, 2, 5),
                                 model_id="ewma_corr", model_version="1",
                                 data_cutoff_ts=pd.Series(days, index=days)))
    return led, pd.DataFrame(closes, index=days), days


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=5)
    ap.add_argument("--days", type=int, default=2000)
    ap.add_argument("--bundles", type=int, default=60)
    ap.add_argument("--scale-n-boot", type=int, default=None,
                    help="also estimate the variance scale in each bundle (bootstrap replications)")
    ap.add_argument("--quick", action="store_true", help="a small run for `make bench` (600 days, 15 bundles)")
    args = ap.parse_args()
    if args.quick:
        args.days, args.bundles = min(args.days, 600), min(args.bundles, 15)
    if not 2 <= args.symbols <= len(SYMBOLS):
        ap.error(f"--symbols must be in 2..{len(SYMBOLS)}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        led, closes, days = make_ledger(Path(tmp) / "ledger", args.symbols, args.days)
        setup_s = time.perf_counter() - t0
        kw = {"symbols": tuple(closes.columns), "closes": {"1D": closes},
              "vol_models": {"1D": ModelRef("ewma", "1", "champion")},
              "corr_models": {"1D": ModelRef("ewma_corr", "1")}, "code_version": "bench",
              "scale_n_boot": args.scale_n_boot}
        cold_ledger = ForecastLedger(Path(tmp) / "ledger")
        w0, c0 = time.perf_counter(), time.process_time()
        first = build_bundle(cold_ledger, days[-1], **kw)
        cold = (time.perf_counter() - w0) * 1e3, (time.process_time() - c0) * 1e3
        as_ofs = days[np.linspace(args.days // 2, args.days - 1, args.bundles).astype(int)]
        wall, cpu = [], []
        for t in as_ofs:
            w0, c0 = time.perf_counter(), time.process_time()
            b = build_bundle(cold_ledger, t, **kw)
            wall.append((time.perf_counter() - w0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
        w0, c0 = time.perf_counter(), time.process_time()
        first.save(Path(tmp) / "bundle")
        back = RiskForecastBundle.load(Path(tmp) / "bundle")
        io = (time.perf_counter() - w0) * 1e3, (time.process_time() - c0) * 1e3
        assert back == first and b.as_of == as_ofs[-1]
        n_res = len(first.residuals)
    med_w, p90_w = np.median(wall), np.percentile(wall, 90)
    med_c, p90_c = np.median(cpu), np.percentile(cpu, 90)
    print(f"bench_bundle: {args.symbols} symbols, {args.days} days of history, "
          f"{args.bundles} bundles (ledger setup {setup_s:.1f} s, {n_res} residuals/bundle, "
          f"scale_n_boot={args.scale_n_boot})")
    print(f"  build_bundle warm  wall median {med_w:7.1f} ms  p90 {p90_w:7.1f} ms")
    print(f"  build_bundle warm  CPU  median {med_c:7.1f} ms  p90 {p90_c:7.1f} ms")
    print(f"  first build (reads the ledger)  wall {cold[0]:7.1f} ms  CPU {cold[1]:7.1f} ms")
    print(f"  save + load one bundle          wall {io[0]:7.1f} ms  CPU {io[1]:7.1f} ms")
    print(f"  ratio to the {GOAL_MS:g} ms goal (CPU median): {med_c / GOAL_MS:.2f}")


if __name__ == "__main__":
    main()
