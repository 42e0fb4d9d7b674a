"""Overhead of the GARCH wrapper over ``arch`` called directly, and its per-symbol parallel speed-up.

Usage::

    python benchmarks/bench_garch.py [--symbols 100] [--n 2500] [--quick] [--seed 7]

Simulates ``--symbols`` GARCH(1,1)-normal daily return paths of ``--n`` returns (seeded), turns them
into close prices, then in the same process times

1. the reference: ``arch_model(100 * r, mean="Zero", vol="GARCH", p=1, q=1).fit(disp="off")`` in a
   loop over the symbols (returns computed with numpy beforehand, not timed);
2. ``GarchVol(window=None).fit(X)`` on the long close-price frame, ``n_jobs=1`` and ``n_jobs=2``
   with threads and with processes (timed end to end: return derivation, cleaning, fits,
   diagnostics).

It prints the wall times, the ratio wrapper / arch at ``n_jobs=1`` (goal: <= ~1.1), the parallel
speed-up ``n_jobs=1 / n_jobs=2`` and the largest parameter difference between the two paths (they
run the same optimisation, so it should be ~0).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd
from arch import arch_model
from arch.univariate import GARCH, Normal, ZeroMean

from models.base import SQ_RET, prepare_panels
from models.garch import GarchVol


def simulate_closes(n_symbols: int, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Long close-price frame of ``n_symbols`` GARCH(1,1) paths with ``n`` daily returns each."""
    ts = pd.date_range("2015-01-01", periods=n + 1, freq="D", tz="UTC")
    frames = []
    for i in range(n_symbols):
        alpha = rng.uniform(0.03, 0.12)
        beta = rng.uniform(0.80, 0.95 - alpha)
        omega = rng.uniform(0.5, 2.0) * (1 - alpha - beta)  # unconditional var 0.5-2 (%^2)
        model = ZeroMean(None, volatility=GARCH(1, 0, 1), distribution=Normal(seed=rng))
        sim = model.simulate(np.array([omega, alpha, beta]), n, burn=500)
        r = sim["data"].to_numpy() / 100.0
        close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))
        frames.append(pd.DataFrame({"ts": ts, "symbol": f"SIM{i:03d}", "close": close}))
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--n", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="10 symbols x 1000 returns")
    args = ap.parse_args(argv)
    n_symbols, n = (10, 1000) if args.quick else (args.symbols, args.n)
    rng = np.random.default_rng(args.seed)
    X = simulate_closes(n_symbols, n, rng)
    returns = {s: np.diff(np.log(g["close"].to_numpy())) for s, g in X.groupby("symbol", sort=True)}
    print(
        f"GARCH(1,1)-normal, zero mean: {n_symbols} symbols x {n} daily returns, cpus={os.cpu_count()}"
    )

    # warm-up (imports, numba/cython first calls) outside the timings
    GarchVol(window=None).fit(X[X["symbol"] == "SIM000"])
    arch_model(100 * returns["SIM000"], mean="Zero", vol="GARCH", p=1, q=1).fit(disp="off")

    t0 = time.perf_counter()
    ref = {
        s: arch_model(100.0 * r, mean="Zero", vol="GARCH", p=1, q=1, rescale=False).fit(disp="off")
        for s, r in returns.items()
    }
    t_arch = time.perf_counter() - t0

    t0 = time.perf_counter()
    prepare_panels(X, (SQ_RET,))
    t_clean = time.perf_counter() - t0

    t0 = time.perf_counter()
    m1 = GarchVol(window=None, n_jobs=1).fit(X)
    t_w1 = time.perf_counter() - t0

    t0 = time.perf_counter()
    m2 = GarchVol(window=None, n_jobs=2).fit(X)
    t_w2 = time.perf_counter() - t0

    t0 = time.perf_counter()
    m3 = GarchVol(window=None, n_jobs=2, backend="process").fit(X)
    t_w3 = time.perf_counter() - t0

    diff = max(
        float(np.max(np.abs(m1.params_[s].to_numpy() - ref[s].params.to_numpy()))) for s in ref
    )
    diff2 = max(
        float(np.max(np.abs(m1.params_[s].to_numpy() - m.params_[s].to_numpy())))
        for s in ref
        for m in (m2, m3)
    )
    scales = sorted(set(m1.return_scale_.values()))
    failed = sum(r is not None for r in m1.fallback_reason_.values())
    print(f"arch direct loop        : {t_arch:8.3f} s  ({1e3 * t_arch / n_symbols:.1f} ms/symbol)")
    print(f"GarchVol.fit n_jobs=1   : {t_w1:8.3f} s")
    print(f"GarchVol.fit n_jobs=2   : {t_w2:8.3f} s  (threads)")
    print(f"GarchVol.fit n_jobs=2   : {t_w3:8.3f} s  (processes)")
    print(f"  of which shared cleaning models.base.prepare_panels: {t_clean:.3f} s")
    print(f"ratio wrapper/arch (n_jobs=1): {t_w1 / t_arch:.3f}   (goal <= ~1.1)")
    print(f"ratio without the shared cleaning: {(t_w1 - t_clean) / t_arch:.3f}")
    print(
        f"parallel speed-up n_jobs=1/n_jobs=2: threads {t_w1 / t_w2:.2f}x, processes {t_w1 / t_w3:.2f}x"
    )
    print(
        f"max |param diff| wrapper vs arch: {diff:.2e}; n_jobs=1 vs 2 (both backends): {diff2:.2e}"
    )
    print(f"return scales used: {scales}; failed fits: {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
