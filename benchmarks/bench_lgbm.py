"""LGBMVol.fit on 1 million feature rows against ``lightgbm.train`` on the same matrix.

Usage::

    .venv/bin/python benchmarks/bench_lgbm.py [--rows 1000000] [--rounds 200] [--threads 2]

A synthetic hourly log-AR(1) realized-variance panel (4 symbols) gives ``rows`` rows; the wrapper
builds the features (HAR aggregates, cross-asset, calendar), trains one booster with early stopping
on its time-ordered validation slice and computes the bias factor and quantiles. The reference is
``lightgbm.train`` called directly, in the same process, on the wrapper's own training matrix and
validation matrix with the same parameters and the same number of rounds (no early stopping
triggers: ``early_stopping_rounds`` > rounds). Printed: wall times (best of ``--repeat``) and the
ratio wrapper / direct.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.lgbm import LGBMVol


def panel(rows: int, n_symbols: int = 4, seed: int = 7) -> pd.DataFrame:
    """A long realized frame of ``rows`` rows: hourly log-AR(1) variance per symbol."""
    rng = np.random.default_rng(seed)
    n = rows // n_symbols
    ts = pd.date_range("2000-01-01", periods=n, freq="h", tz="UTC")
    frames = []
    for k in range(n_symbols):
        eps = rng.normal(scale=0.5, size=n)
        lv = np.empty(n)
        lv[0] = -10.0
        for t in range(1, n):  # plain loop: a few seconds for 1e6 rows is fine here
            lv[t] = -10.0 + 0.9 * (lv[t - 1] + 10.0) + eps[t]
        frames.append(pd.DataFrame({"ts": ts, "symbol": f"SYM{k}USDT", "rv_var": np.exp(lv)}))
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time the wrapper and the direct call; print and return the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="100,000 rows, one repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.repeat = 100_000, 1
    X = panel(args.rows)
    model = LGBMVol(
        horizons=(1,),
        n_estimators=args.rounds,
        early_stopping_rounds=args.rounds + 1,
        refit_full=False,
        validation_size=20_000,
        min_obs=None,
        num_threads=args.threads,
        num_leaves=31,
        min_child_samples=100,
    )
    # the same matrices the wrapper trains on
    model._symbol_codes = None
    panels, extra = model._panels_and_extra(X)
    model._symbol_codes = sorted(panels)
    d = model._design(panels, extra, 1)
    ends = {s: len(p) - 1 for s, p in panels.items()}
    tr, val = model._masks(d, ends, 1, 1)
    params = model._lgb_params(0)
    rounds = params.pop("num_boost_round_")
    cat = [d.names.index("symbol")]
    Xtr, ytr, Xva, yva = d.X[tr], d.y[tr], d.X[val], d.y[val]
    t_wrap, t_direct = [], []
    for _ in range(args.repeat):  # interleaved, best of each: the machine may be shared
        t0 = time.perf_counter()
        model.fit(X)
        t_wrap.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dtr = lgb.Dataset(Xtr, ytr, feature_name=d.names, categorical_feature=cat)
        dva = lgb.Dataset(Xva, yva, reference=dtr, feature_name=d.names, categorical_feature=cat)
        booster = lgb.train(params, dtr, num_boost_round=rounds, valid_sets=[dva])
        t_direct.append(time.perf_counter() - t0)
    same = np.allclose(booster.predict(Xva), model.models_[1].booster.predict(Xva))
    w, r = min(t_wrap), min(t_direct)
    print(
        f"rows {len(X):,} (train {int(tr.sum()):,}, valid {int(val.sum()):,}), "
        f"{len(d.names)} features, {rounds} rounds, {args.threads} threads"
    )
    print(f"LGBMVol.fit        {w:8.2f} s  (features + train + validation residuals)")
    print(f"lightgbm.train     {r:8.2f} s  (Dataset + train on the same matrices)")
    print(f"ratio wrapper / direct = {w / r:.3f}; same booster predictions: {same}")
    return {"wrapper_s": w, "direct_s": r, "ratio": w / r}


if __name__ == "__main__":
    main()
