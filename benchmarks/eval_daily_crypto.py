"""Daily BTC/ETH volatility forecasts: the HAR ladder against LightGBM and combinations.

Usage::

    .venv/bin/python benchmarks/eval_daily_crypto.py                      # evaluation 2022-01-01..2026-03-30
    .venv/bin/python benchmarks/eval_daily_crypto.py --period selection   # 2020-01-01..2021-12-31
    .venv/bin/python benchmarks/eval_daily_crypto.py --models lgbm,har_boost_ctx --period selection

Prints one row per model, symbol and horizon: n, QLIKE, ratio to log-HAR-DoW, one-sided DM p-value
of "worse than the best baseline" (``d = loss_model - loss_best_baseline``, Newey-West lag h-1),
membership of the 90% Model Confidence Set (all printed models, stationary bootstrap, seeded), QLIKE
on stressed targets (a target window holding a day in the top 1% of RV), and the coverage of the
95% / 99% predictive intervals where the model has quantiles.

Protocol: every HAR-ladder model uses a rolling 1,000-day window re-estimated daily (700 in the
selection period, where 1,000 days of history do not exist yet); the LightGBM models use their own
expanding windows and refit every 21 days. Rows with fewer than 250 five-minute returns are
dropped from samples and targets (as in :mod:`models.evaluation`). Specifications were chosen on
the selection period only; ``CONFIG_LOG`` records every configuration run on each period.

Context (joined with :func:`features.context.asof_context`, never a later row): DVOL (Deribit,
2021-03..2025-06), funding (Binance USD-M, 2023-07..2026-02, gaps), intraday recency from 1h BTC
bars (2018..2024-04), the 15m spot panel (2023-04..2025-04) and 5m/1m spot bars (2024..2026
windows), the BTC/USD daily close-to-close
return (Coinbase, ..2025-09). Missing context is NaN (LightGBM routes it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.context import asof_context, intraday_recency  # noqa: E402
from features.microstructure import implied_vol_features  # noqa: E402
from features.readers import read_source  # noqa: E402
from features.schema import RV, SYMBOL, TS  # noqa: E402
from models import catalog  # noqa: E402
from models.base import prepare_panels, target_mean  # noqa: E402
from models.calibrate import empirical_quantiles  # noqa: E402
from models.combine import HARBoostVol, QLIKEWeightedVol  # noqa: E402
from models.har import (  # noqa: E402
    LogHARDoWVol,
    LogHARDoWXVol,
)
from models.lgbm import LGBMVol  # noqa: E402
from models.losses import diebold_mariano, model_confidence_set, qlike  # noqa: E402

DATA = Path(os.environ.get("DPRM_DATA_DIR", ROOT.parent / "shared" / "data"))
MEASURES = "binance_daily_realized_measures_btc_eth_2018_2026"
PERIODS = {
    "selection": ("2020-01-01", "2021-12-31", 700),
    "evaluation": ("2022-01-01", "2026-03-30", 1000),
}
BENCH = "log_har_dow"
LADDER = ("har", "log_har", "log_har_dow", "harq", "harq_dow", "shar")
CONTEXT = [
    "dvol_liv_minus_lrv",
    "dvol_iv_chg",
    "fund_rate",
    "fund_sum_3",
    "rec_l4h_ratio",
    "rec_l1h_ratio",
    "btc_ret_d",
    "btc_absret_ratio",
]
CHAMPION = "log_har_dow_x"
"""Chosen on the selection period (best mean QLIKE ratio to log-HAR-DoW over BTC/ETH x h=1/5);
session 1's champion was ``combo3_p8``."""
CONFIG_LOG = """
Configurations and where they were run (selection = 2020-01-01..2021-12-31, chosen there only)
  evaluation, before the protocol: lgbm (defaults)
  selection (17): lgbm, lgbm_ctx, lgbm_reg, lgbm_offm, lgbm_offw, lgbm_reg_offm,
    lgbm_reg_offm_ctx, har_boost, har_boost_ctx, combo_dow_lgbm (power 2), combo_dow_lgbm_eq,
    combo_dow_lgbm_p1, combo_dow_lgbm_p8, combo_dow_lgbmreg_p2, combo_dow_lgbmreg_eq, combo3_p2,
    combo3_p8 -> champion combo3_p8 (selection ratios BTC h1 0.982, h5 1.042; ETH h1 0.940, h5 1.033)
  evaluation, once each: the ladder, combo3_p8, lgbm, lgbm_ctx, har_boost_ctx
Session 2 (the 15-minute 16-asset panel added as a recency source: ETH and BTC 2023-04..2025-04,
  no effect on the selection period), selection only, common origins n=537 per symbol:
  combo4_p8 (+ har_boost_ctx) BTC h1 0.961 h5 1.043, ETH h1 0.941 h5 1.039;
  combo5_p8 (+ har_boost_ctx, lgbm_ctx) BTC 0.958 / 1.053, ETH 0.942 / 1.050;
  on the same origins combo3_p8 BTC 0.952 / 1.028, ETH 0.929 / 1.030 -> champion unchanged.
  Context is thin in the selection period (DVOL from 2021-03, no funding, recency for BTC only),
  so selection cannot reward it; on the evaluation period, where it exists, the context models
  (run once above) are the best at h=1.
Session 2, linear context: log_har_dow_x = log-HAR-DoW-X with rec4_x (the last 4 hours' RV ratio
  minus its trailing mean; the symbol's own, else BTC's), combo3x_p8 = combo3_p8 with
  log_har_dow_x in place of log_har_dow. Selection (726 origins, mean ratio over the 4 cells):
  log_har_dow_x BTC 0.970 / 0.985, ETH 0.988 / 0.996 (mean 0.9846); combo3x_p8 0.956 / 1.028,
  0.932 / 1.029 (0.9861); combo3_p8 0.982 / 1.042, 0.940 / 1.033 (0.9993)
  -> champion log_har_dow_x. Evaluation, once each: log_har_dow_x, combo3x_p8 (and the ladder,
  combo3_p8, lgbm, lgbm_ctx, har_boost_ctx re-run with the 15m recency source).
"""


# ---- data ---------------------------------------------------------------------------------------
def load_realized(data: Path = DATA) -> pd.DataFrame:
    """The daily BTCUSDT/ETHUSDT realized measures as a canonical realized frame."""
    files = [data / MEASURES / f for f in ("btc_measures.csv", "eth_measures.csv")]
    return pd.concat([c.frame for f in files for c in read_source(f)], ignore_index=True)


def _bars(path: Path, interval: str) -> pd.DataFrame:
    d = pd.read_parquet(path, columns=["symbol", "open_time", "close"])
    return pd.DataFrame(
        {
            TS: (d["open_time"] + pd.Timedelta(interval)).astype("datetime64[ns, UTC]"),
            SYMBOL: d["symbol"].astype("str"),
            "close": d["close"].astype("float64"),
        }
    )


def add_context(X: pd.DataFrame, data: Path = DATA) -> pd.DataFrame:
    """Join the context features of the module docs onto the realized frame (no look-ahead)."""
    out = X.copy()
    lrv = np.log(out[RV].where(out[RV] > 0))
    # DVOL: the daily candle of date D is stamped at its close D + 1 day
    dv = pd.read_parquet(data / "deribit_dvol_daily_2021_2025h1" / "dvol_daily.parquet")
    iv = pd.DataFrame(
        {
            TS: (pd.to_datetime(dv["date"]).dt.tz_localize("UTC") + pd.Timedelta("1D")).astype(
                "datetime64[ns, UTC]"
            ),
            SYMBOL: dv["symbol"].astype("str") + "USDT",
            "close": dv["close"].astype("float64"),
        }
    )
    ivf = implied_vol_features(iv, None, bar="1D", annualization=365.0)
    ivf = ivf[[TS, SYMBOL, "iv_var", "iv_var_ann_chg"]]
    j = asof_context(out[[TS, SYMBOL]], ivf, prefix="dvol_", tolerance="3D")
    out["dvol_liv_minus_lrv"] = np.log(j["dvol_iv_var"]) - lrv
    out["dvol_iv_chg"] = j["dvol_iv_var_ann_chg"] / j["dvol_iv_var"] / 365.0
    # funding: last rate and the sum of the last 3 events (a day), stamped at the funding time
    fr = pd.read_parquet(data / "binance_usdm_perp_btc_eth_bnb_ltc" / "funding_rate.parquet")
    fr = fr.drop_duplicates(["symbol", "funding_time"]).sort_values(["symbol", "funding_time"])
    fctx = pd.DataFrame(
        {
            TS: fr["funding_time"].astype("datetime64[ns, UTC]").to_numpy(),
            SYMBOL: fr["symbol"].astype("str").to_numpy(),
            "rate": fr["funding_rate"].to_numpy(),
            "sum_3": fr.groupby("symbol")["funding_rate"]
            .transform(lambda s: s.rolling(3, min_periods=3).sum())
            .to_numpy(),
        }
    )
    j = asof_context(out[[TS, SYMBOL]], fctx, prefix="fund_", tolerance="1D")
    out["fund_rate"] = j["fund_rate"]
    out["fund_sum_3"] = j["fund_sum_3"]
    # intraday recency: finest source available per (symbol, day)
    rec = None
    sources = [
        (data / "binance_spot_btc_eth_1m" / "klines_1m.parquet", "1min"),
        (data / "binance_spot_5m_btc_eth_bnb_ltc" / "klines_5m.parquet", "5min"),
        (data / "binance_spot_15m_panel_16_assets" / "klines_15m.parquet", "15min"),
        (data / "binance_spot_btcusdt_1h_2017_2024" / "klines_1h.parquet", "1h"),
    ]
    for path, interval in sources:
        bars = _bars(path, interval)
        bars = bars[bars[SYMBOL].isin(out[SYMBOL].unique())]
        r = intraday_recency(bars, out[[TS, SYMBOL]], hours=(1, 4))
        r = r[["rv_last1h_var", "rv_last4h_var"]].to_numpy()
        rec = r if rec is None else np.where(np.isnan(rec), r, rec)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rec_l1h_ratio"] = np.log(rec[:, 0] * 24 + 1e-12) - lrv
        out["rec_l4h_ratio"] = np.log(rec[:, 1] * 6 + 1e-12) - lrv
    # centred recency for linear models (0 = no news): the log ratio minus its trailing mean (250
    # past values, at least 30), the symbol's own where it has intraday bars, else BTC's (market)
    g = out.groupby(SYMBOL, sort=False)["rec_l4h_ratio"]
    trail = g.transform(lambda s: s.rolling(250, min_periods=30).mean())
    own = out["rec_l4h_ratio"] - trail
    mkt = out[TS].map(pd.Series(own.to_numpy(), index=out[TS])[out[SYMBOL].to_numpy() == "BTCUSDT"])
    out["rec4_x"] = own.fillna(mkt)
    # BTC/USD daily return (Coinbase), the candle of date D stamped at D + 1 day
    bd = pd.read_parquet(data / "btcusd_daily_bitstamp_coinbase_2011_2025" / "btcusd_1d.parquet")
    ret = np.log(bd["close"]).diff()
    bctx = pd.DataFrame(
        {
            TS: (pd.to_datetime(bd["date"]).dt.tz_localize("UTC") + pd.Timedelta("1D")).astype(
                "datetime64[ns, UTC]"
            ),
            SYMBOL: "BTCUSDT",
            "ret_d": ret.to_numpy(),
        }
    )
    j = asof_context(out[[TS, SYMBOL]], bctx, prefix="btc_", tolerance="1D")
    # the BTC return is market context for both symbols: broadcast it by ts
    by_ts = j[j[SYMBOL] == "BTCUSDT"].set_index(TS)["btc_ret_d"]
    out["btc_ret_d"] = out[TS].map(by_ts).to_numpy()
    btc_lrv = out[out[SYMBOL] == "BTCUSDT"].set_index(TS)[RV]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["btc_absret_ratio"] = np.log(out["btc_ret_d"] ** 2 + 1e-12) - np.log(
            out[TS].map(btc_lrv).to_numpy()
        )
    return out


# ---- models -------------------------------------------------------------------------------------
def make_models(period: str) -> dict[str, object]:
    """Every named configuration (the ladder uses the period's rolling window)."""
    w = PERIODS[period][2]
    ladder = {n: catalog.build(n, window=w)
              for n in ("har", "log_har", "log_har_dow", "harq", "harq_dow", "shar")}
    base = LogHARDoWVol(window=500, window_type="expanding")
    hb_ctx = ("har_boost_ctx", HARBoostVol(base=base, horizons=(1, 5), feature_columns=CONTEXT))
    return {
        **ladder,
        "lgbm": catalog.build("lgbm", (1, 5)),
        "lgbm_ctx": catalog.build("lgbm", (1, 5), feature_columns=CONTEXT),
        "har_boost": catalog.build("har_boost", (1, 5), base=base),
        "har_boost_ctx": HARBoostVol(base=base, horizons=(1, 5), feature_columns=CONTEXT),
        "lgbm_reg": LGBMVol(horizons=(1, 5), **REG),
        "lgbm_offm": LGBMVol(horizons=(1, 5), offset_feature="lrv_m"),
        "lgbm_offw": LGBMVol(horizons=(1, 5), offset_feature="lrv_w"),
        "lgbm_reg_offm": LGBMVol(horizons=(1, 5), offset_feature="lrv_m", **REG),
        "lgbm_reg_offm_ctx": LGBMVol(
            horizons=(1, 5), offset_feature="lrv_m", feature_columns=CONTEXT, **REG
        ),
        "combo_dow_lgbm": _combo(w, LGBMVol(horizons=(1, 5)), power=2.0),
        "combo_dow_lgbm_eq": _combo(w, LGBMVol(horizons=(1, 5)), power=0.0),
        "combo_dow_lgbm_p1": _combo(w, LGBMVol(horizons=(1, 5)), power=1.0),
        "combo_dow_lgbmreg_p2": _combo(w, LGBMVol(horizons=(1, 5), **REG), power=2.0),
        "combo_dow_lgbmreg_eq": _combo(w, LGBMVol(horizons=(1, 5), **REG), power=0.0),
        "combo_dow_lgbm_p8": _combo(w, LGBMVol(horizons=(1, 5)), power=8.0),
        "combo3_p8": _combo3(("log_har_dow", LogHARDoWVol(window=w)), power=8.0),
        "combo4_p8": _combo3(("log_har_dow", LogHARDoWVol(window=w)), power=8.0, extra=[hb_ctx]),
        "combo5_p8": _combo3(
            ("log_har_dow", LogHARDoWVol(window=w)),
            power=8.0,
            extra=[hb_ctx, ("lgbm_ctx", LGBMVol(horizons=(1, 5), feature_columns=CONTEXT))],
        ),
        "log_har_dow_x": catalog.build("log_har_dow_x", window=w, exog=["rec4_x"]),
        "combo3x_p8": _combo3(
            ("log_har_dow_x", LogHARDoWXVol(window=w, exog=["rec4_x"])), power=8.0
        ),
        "combo3_p2": _combo3(("log_har_dow", LogHARDoWVol(window=w)), power=2.0),
    }


REG = {"num_leaves": 7, "min_child_samples": 100, "learning_rate": 0.02, "reg_lambda": 5.0}
"""A more regularised LightGBM (shallower trees, larger leaves, slower learning)."""


def _combo3(
    first: tuple[str, object], power: float, extra: list[tuple[str, object]] | None = None
) -> QLIKEWeightedVol:
    """QLIKE-weighted combination of ``first``, LightGBM, LightGBM with a weekly offset (+ extra)."""
    members = [
        first,
        ("lgbm", LGBMVol(horizons=(1, 5))),
        ("lgbm_offw", LGBMVol(horizons=(1, 5), offset_feature="lrv_w")),
        *(extra or []),
    ]
    return QLIKEWeightedVol(members=members, horizons=(1, 5), lookback=250, power=power)


def _combo(w: int, ml: LGBMVol, power: float) -> QLIKEWeightedVol:
    return QLIKEWeightedVol(
        members=[("log_har_dow", LogHARDoWVol(window=w)), ("lgbm", ml)],
        horizons=(1, 5),
        lookback=250,
        power=power,
    )


# ---- scoring -----------------------------------------------------------------------------------
def score(
    fcs: dict[str, dict], X: pd.DataFrame, horizons: tuple[int, ...], baselines: tuple[str, ...]
) -> pd.DataFrame:
    """QLIKE, ratio to log-HAR-DoW, DM p-value (worse than the best baseline), 90% MCS membership,
    stressed QLIKE and interval coverage on the origins common to all models."""
    panels = prepare_panels(X, [RV], min_obs=250, owner="eval")
    rows = []
    rng = np.random.default_rng(20260401)
    for sym, p in panels.items():
        rv = p.col(RV)
        for h in horizons:
            y = pd.Series(target_mean(rv, h), index=p.ts)
            cols = {m: f[sym].variance[h] for m, f in fcs.items() if sym in f}
            F = pd.DataFrame(cols).dropna()
            F = F[y.reindex(F.index).notna().to_numpy()]
            yy = y.reindex(F.index).to_numpy()
            L = pd.DataFrame({m: qlike(yy, F[m].to_numpy()) for m in F.columns}, index=F.index)
            # stressed: the target window holds a top-1% RV day of the evaluation span
            span = (p.ts > F.index.min()) & (p.ts <= F.index.max() + h * p.period)
            thr = np.quantile(rv[span], 0.99)
            day = pd.Series((rv >= thr) & span, index=p.ts)
            pos = np.searchsorted(p.ts.asi8, F.index.asi8)
            stressed = np.zeros(len(F), dtype=bool)
            for k in range(1, h + 1):
                nxt = np.clip(pos + k, 0, len(p) - 1)
                stressed |= day.to_numpy()[nxt] & (pos + k < len(p))
            means = L.mean()
            best = min((b for b in baselines if b in L.columns), key=lambda b: means[b])
            mcs = model_confidence_set(L, size=0.10, h=h, reps=1000, random_state=rng)
            for m in L.columns:
                if m == best:
                    p_worse = np.nan
                else:
                    p_worse = diebold_mariano(
                        L[m].to_numpy(), L[best].to_numpy(), h=h
                    ).pvalue_greater
                fc = fcs[m][sym]
                cov95 = cov99 = np.nan
                if fc.quantiles and 0.025 in fc.quantiles and 0.975 in fc.quantiles:
                    q = {lv: fc.quantiles[lv][h].reindex(F.index).to_numpy() for lv in fc.quantiles}
                    cov95 = float(np.mean((yy >= q[0.025]) & (yy <= q[0.975])))
                    if 0.005 in q and 0.995 in q:
                        cov99 = float(np.mean((yy >= q[0.005]) & (yy <= q[0.995])))
                rows.append(
                    {
                        "model": m,
                        "symbol": sym,
                        "h": h,
                        "n": len(L),
                        "qlike": means[m],
                        "ratio_dow": means[m] / means[BENCH] if BENCH in means else np.nan,
                        "best_base": best,
                        "dm_p_worse": p_worse,
                        "in_mcs90": m in mcs.included,
                        "qlike_stress": float(L[m][stressed].mean()) if stressed.any() else np.nan,
                        "stress_ratio": float(L[m][stressed].mean() / L[BENCH][stressed].mean())
                        if stressed.any() and BENCH in L.columns
                        else np.nan,
                        "cov95": cov95,
                        "cov99": cov99,
                    }
                )
    return pd.DataFrame(rows)


COVERAGE_MODELS = ("log_har_dow", "log_har_dow_x", "combo3x_p8", "lgbm")


def oos_coverage(fcs: dict[str, dict], X: pd.DataFrame, horizons: tuple[int, ...]) -> pd.DataFrame:
    """95% / 99% interval coverage of :func:`models.calibrate.empirical_quantiles` per model,
    symbol and horizon (the models of ``COVERAGE_MODELS`` that were run)."""
    panels = prepare_panels(X, [RV], min_obs=250, owner="eval")
    rows = []
    for m in (m for m in COVERAGE_MODELS if m in fcs):
        for sym, fc in fcs[m].items():
            p = panels[sym]
            cal = empirical_quantiles(fc, p.ts, p.col(RV), window=500, min_history=100)
            pos = p.ts.get_indexer(cal.variance.index)
            for h in horizons:
                y = target_mean(p.col(RV), h)[pos]
                ok = np.isfinite(y)
                q = {lv: cal.quantiles[lv][h].to_numpy()[ok] for lv in cal.quantiles}
                yy = y[ok]
                rows.append(
                    {
                        "model": m,
                        "symbol": sym,
                        "h": h,
                        "n": int(ok.sum()),
                        "cov95": float(np.mean((yy >= q[0.025]) & (yy <= q[0.975]))),
                        "cov99": float(np.mean((yy >= q[0.005]) & (yy <= q[0.995]))),
                    }
                )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the chosen models on the chosen period and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--period", choices=list(PERIODS), default="evaluation")
    ap.add_argument(
        "--models",
        default=f"ladder,{CHAMPION},combo3x_p8,combo3_p8,lgbm,lgbm_ctx,har_boost_ctx",
        help="comma-separated names; 'ladder' = the six HAR-family baselines",
    )
    ap.add_argument("--horizons", default="1,5")
    args = ap.parse_args(argv)
    start, end, w = PERIODS[args.period]
    hs = tuple(int(h) for h in args.horizons.split(","))
    names: list[str] = []
    for n in args.models.split(","):
        names += list(LADDER) if n == "ladder" else [n]
    names = list(dict.fromkeys([BENCH, *names]))
    catalog = make_models(args.period)
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {list(catalog)}")
    t0 = time.perf_counter()
    X = add_context(load_realized())
    print(f"data: {len(X)} rows, context built in {time.perf_counter() - t0:.1f} s")
    fcs, times = {}, {}
    for n in names:
        t = time.perf_counter()
        m = catalog[n]
        if n in LADDER:
            fcs[n] = m.walk_forward(X, hs, start=start, end=end, window=w, refit_every=1)
        else:
            fcs[n] = m.walk_forward(X, hs, start=start, end=end)
        times[n] = time.perf_counter() - t
        imp = getattr(m, "walk_forward_importance_", None)
        if imp is not None:
            ctx = imp.reindex([c for c in CONTEXT if c in imp.index])
            if len(ctx):
                print(f"{n}: mean gain share of context features\n{ctx.round(4).to_string()}")
    table = score(fcs, X, hs, tuple(b for b in LADDER if b in fcs))
    pd.set_option("display.width", 200)
    print(f"\nperiod {args.period} {start}..{end}; ladder window {w} (rolling, daily refit)")
    for (sym, h), g in table.groupby(["symbol", "h"]):
        print(f"\n{sym} h={h} (n={g['n'].iloc[0]}, best baseline {g['best_base'].iloc[0]})")
        cols = [
            "model",
            "qlike",
            "ratio_dow",
            "dm_p_worse",
            "in_mcs90",
            "qlike_stress",
            "stress_ratio",
            "cov95",
            "cov99",
        ]
        print(
            g.sort_values("qlike")[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")
        )
    cov = oos_coverage(fcs, X, hs)
    if len(cov):
        print(
            "\nPredictive intervals from each model's own past out-of-sample errors "
            "(models/calibrate.py; last 500 errors, from the 100th on)"
        )
        print(cov.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\nwall time per model (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    print(CONFIG_LOG)
    return table


if __name__ == "__main__":
    main()
