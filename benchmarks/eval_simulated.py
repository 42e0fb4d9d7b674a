"""The oracle floor on simulated data: HAR ladder and EWMA against the true conditional variance.

Usage::

    python benchmarks/eval_simulated.py [--days 60] [--seed 20250101] [--grid 1min]
                                        [--window 500] [--horizons 1,24] [--mcs-reps 200]
                                        [--no-filtered]

Simulates the default market (:func:`features.simulate.simulate`, seeded), builds 1-hour realized
measures from the trades (:func:`features.realized.realized_measures`, previous-tick grid ``--grid``),
and runs :func:`models.evaluation.walk_forward` with the HAR ladder (HAR, log-HAR, log-HAR-DoW,
HARQ, HARQ-DoW, SHAR), the diurnal log-HAR (:class:`models.diurnal.DiurnalHARVol`, geometric-mean
time-of-day profile), the hourly Kalman-filtered log-variance model
(:class:`models.filtered.FilteredLogVol` with the hourly trade count as activity signal), EWMA
(lambda 0.94) and the random walk, rolling ``--window`` hours re-estimated every hour, passing
``truth`` = the true ``iv_var`` per hour.

``filtered_5m`` is :class:`models.filtered.FilteredLogVol` run on **5-minute** bars (tick RV on a 1 s
previous-tick grid, plus the 5-minute trade count from the 1-minute bars), windows of ``--window``
hours (x 12 periods), parameters re-estimated every hour; its forecasts at the hourly origins
(horizons 12 and 288 five-minute periods = 1 and 24 hours, x 12 to hourly units) are scored on the
same evaluated (symbol, origin, horizon) rows as the walk-forward models. It is not inside the
:func:`models.evaluation.walk_forward` table (different bar length), so it has no DM/MCS rows. The oracle
(:func:`models.oracle.oracle_forecasts`: the exact conditional expectation of the future ``iv_var``
given the simulator's hidden state) is scored on the same origins and targets.

Prints QLIKE against the truth per model, symbol and horizon (and pooled over symbols), the
oracle's, and the ratio best model / oracle (goal: <= 1.10), plus the same against the realized
target for reference.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from features.realized import realized_measures
from features.schema import SYMBOL, TRADE_COUNT, TS
from features.simulate import SimConfig, SimResult, simulate
from models import catalog
from models.evaluation import POOLED, walk_forward
from models.filtered import FilteredLogVol
from models.losses import qlike
from models.oracle import ORACLE_ID, oracle_forecasts, truth_var

GOAL_RATIO = 1.10
SUB = 12  # 5-minute periods per hour
SUB_BAR = "5min"

CONFIG_LOG = """
Configurations tried on the SELECTION simulation (seed 1, 60 days; pooled QLIKE vs truth at h=1 / h=24,
oracle 0.0437 / 0.1142 on the walk-forward sample; filtered_5m rows on their own sample of hourly
origins >= 500 h, oracle 0.0420 / 0.0978). Ratios = model / oracle.
 hourly frame, rv_var = 1-min RV (the default):
  log_har_dow                                  0.1184 / 0.2139  (2.71 / 1.87)
  diurnal log-HAR geo profile lags 1,24,168    0.1177 / 0.2416  (2.70 / 2.12)
  diurnal log-HAR geo profile lags 1,6,24      0.1113 / 0.2015  (2.55 / 1.76)  <- chosen (diurnal_har)
  diurnal log-HAR geo profile lags 1,3,12,48   0.1121 / 0.2131  (2.57 / 1.87)
  diurnal log-HAR geo lags 1,2,6,24,120        0.1118 / 0.2275  (2.56 / 1.99)
  diurnal HAR (level, mean profile) 1,6,24     0.1739 / 0.2314  (3.98 / 2.03)
 same models with other hourly input measures (rv_var replaced):
  rv_ss_var 1-min: diurnal 1,6,24              0.1088 / 0.1996  (2.49 / 1.75)  (marginal; not adopted)
  rv_var 1 s grid (tick RV): diurnal 1,6,24    0.1148 / 0.2104  (2.63 / 1.84)
  medrv_var 1-min: diurnal 1,6,24              0.1142 / 0.2213  (2.61 / 1.94)
  INFEASIBLE check, input = true hourly iv_var: diurnal 1,6,24 0.0856 / 0.1982 (1.96 / 1.74):
   even noise-free hourly IV leaves ~2x at h=1 -> intra-hour information is needed.
 filtered_5m (FilteredLogVol on 5-min bars, tick RV, window 6000 periods, refit every 12):
  rv only, half-lives 12/576, 6 harmonics, clip 3     0.0918 / 0.1590  (2.18 / 1.63)
  + trade_count activity                              0.0862 / 0.1567  (2.05 / 1.60)
  + activity, clip 2.5                                0.0859 / 0.1567  (2.05 / 1.60)
  + activity, no clip                                 0.0868 / 0.1567  (2.07 / 1.60)
  + activity, half-lives 12/96/576                    0.0861 / 0.1602  (2.05 / 1.64)
  + activity, half-lives 6/48/576                     0.0863 / 0.1624  (2.05 / 1.66)
  + activity, 3 harmonics                             0.0853 / 0.1568  (2.03 / 1.60)  <- chosen
  + activity, 10 harmonics                            0.0870 / 0.1568  (2.07 / 1.60)
  + activity, expanding window                        blew up at h=1 (a scale outlier), rejected
 filtered_1h (FilteredLogVol on the hourly frame, half-lives 1 h / 48 h, 3 harmonics, hourly trade_count
  activity, window 500 h, refit every hour), measured once with the whole benchmark on seed 1 (common
  sample of all models, oracle 0.0430 / 0.1021):   0.1051 / 0.1531  (2.44 / 1.50)
  same run: diurnal_har 0.1089 / 0.1952, log_har_dow 0.1156 / 0.1965, filtered_5m 0.0869 / 0.1573
  (2.02 / 1.54).
 Reference (prototype, not a model): the same filter with the simulator's TRUE parameters and calendar
  on 5-min tick RV + trade counts: 1.71 / 1.34; on the true 5-min IV (no noise): 1.16 / 1.23.
"""


def _models(window: int) -> dict:
    """The compared models, by catalog name (:mod:`models.catalog`) with this study's settings."""
    ladder = ("har", "log_har", "log_har_dow", "harq", "harq_dow", "shar")
    return {
        "diurnal_har": catalog.build(
            "diurnal_har", lags=(1, 6, 24), log=True, profile_stat="log", window=window,
            window_type="rolling"
        ),
        "filtered_1h": catalog.build(
            "filtered_activity", half_lives=(1, 48), n_harmonics=3, window=window
        ),
        **{n: catalog.build(n, window=window) for n in ladder},
        "ewma": catalog.build("ewma", lam=0.94),
        "random_walk": catalog.build("random_walk"),
    }


def _trade_counts(bars_1m: pd.DataFrame, freq: str) -> pd.DataFrame:
    """Trades per ``freq`` bar (``ts`` = bar close) from the 1-minute bars' ``trade_count``."""
    close = bars_1m[TS].dt.ceil(freq)
    out = bars_1m.assign(**{TS: close}).groupby([TS, SYMBOL], observed=True)[TRADE_COUNT].sum()
    return out.reset_index()


def _with_counts(rm: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    out = rm.merge(counts, on=[TS, SYMBOL], how="left", validate="one_to_one")
    out[TRADE_COUNT] = out[TRADE_COUNT].fillna(0.0)
    return out


def filtered_5m(
    sim: SimResult, args: argparse.Namespace, horizons: tuple[int, ...]
) -> pd.DataFrame:
    """Forecasts of :class:`FilteredLogVol` on 5-minute bars at every 5-minute origin, in hourly
    units (columns ``symbol, origin_ts, horizon, forecast_var``, horizons in hours)."""
    rm5 = realized_measures(sim.trades, bar=SUB_BAR, grid="1s", kernel=False, subsample=False)
    rm5 = _with_counts(rm5, _trade_counts(sim.bars_1m, SUB_BAR))
    sub_h = tuple(SUB * h for h in horizons)
    model = FilteredLogVol(
        horizons=sub_h,
        half_lives=(SUB, 48 * SUB),
        n_harmonics=3,
        activity_col=TRADE_COUNT,
        window=args.window * SUB,
        refit_every=SUB,
    )
    fcs = model.walk_forward(rm5, sub_h)
    rows = []
    for sym, fc in fcs.items():
        v = fc.variance
        for h, hs in zip(horizons, sub_h, strict=True):
            rows.append(
                pd.DataFrame(
                    {
                        "symbol": sym,
                        "origin_ts": v.index,
                        "horizon": h,
                        "forecast_var": SUB * v[hs].to_numpy(),
                        "fc_ts": v.index,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def main() -> None:
    """Run the evaluation and print the tables (see module docs)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=20250101)
    ap.add_argument("--grid", default="1min")
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--horizons", default="1,24")
    ap.add_argument("--mcs-reps", type=int, default=200)
    ap.add_argument("--no-filtered", action="store_true", help="skip the 5-minute filtered model")
    ap.add_argument(
        "--truth-input",
        action="store_true",
        help="infeasibility check: models see the TRUE hourly iv_var as rv_var (no measurement noise)",
    )
    args = ap.parse_args()
    horizons = tuple(int(h) for h in args.horizons.split(","))
    freq = "1h"

    t0 = time.perf_counter()
    sim = simulate(SimConfig(n_days=args.days), args.seed)
    t_sim = time.perf_counter() - t0
    rm = realized_measures(sim.trades, bar=freq, grid=args.grid, kernel=False)
    rm = _with_counts(rm, _trade_counts(sim.bars_1m, freq))
    truth = truth_var(sim, freq)
    if args.truth_input:
        t = truth.set_index([SYMBOL, TS])["iv_var"]
        rm["rv_var"] = t.reindex(pd.MultiIndex.from_frame(rm[[SYMBOL, TS]])).to_numpy()
        rm = rm[rm["rv_var"] > 0].reset_index(drop=True)
    t1 = time.perf_counter()
    res = walk_forward(
        _models(args.window),
        rm,
        horizons=horizons,
        window=args.window,
        truth=truth,
        min_obs=None,
        mcs_reps=args.mcs_reps,
        random_state=args.seed,
    )
    t_eval = time.perf_counter() - t1

    # the oracle on the same origins and targets as the models
    ev = res.forecasts[res.forecasts["evaluated"]]
    sample = ev[ev["model_id"] == ev["model_id"].iloc[0]][
        ["symbol", "origin_ts", "horizon", "truth_var", "realized_var"]
    ]
    t2 = time.perf_counter()
    orc = oracle_forecasts(sim, freq, horizons, origins=sample["origin_ts"].unique())
    t_oracle = time.perf_counter() - t2
    orc = sample.merge(
        orc[["symbol", "origin_ts", "horizon", "forecast_var"]],
        on=["symbol", "origin_ts", "horizon"],
        how="left",
        validate="one_to_one",
    )
    if orc["forecast_var"].isna().any():
        raise RuntimeError("the oracle lacks forecasts for some evaluated origins")
    extra = {ORACLE_ID: orc}
    t_filt, n_stale = 0.0, 0
    if not args.no_filtered:
        t3 = time.perf_counter()
        # an hourly origin whose 5-minute bar was dropped (no price change: rv 0) takes the
        # forecast of the latest earlier 5-minute origin (older information, never later)
        f5 = pd.merge_asof(
            sample.sort_values("origin_ts"),
            filtered_5m(sim, args, horizons).sort_values("origin_ts"),
            on="origin_ts",
            by=["symbol", "horizon"],
            direction="backward",
            tolerance=pd.Timedelta("1h"),
        )
        n_stale = int((f5["fc_ts"] != f5["origin_ts"]).sum())
        t_filt = time.perf_counter() - t3
        if f5["forecast_var"].isna().any():
            raise RuntimeError("filtered_5m lacks forecasts for some evaluated origins")
        extra["filtered_5m"] = f5
    scored = {}
    for name, fr in extra.items():
        fr = fr.assign(
            qlike_truth=qlike(fr["truth_var"], fr["forecast_var"]),
            qlike_realized=qlike(fr["realized_var"], fr["forecast_var"]),
        )
        per_sym = fr.groupby(["symbol", "horizon"])[["qlike_truth", "qlike_realized"]].mean()
        pooled = fr.groupby("horizon")[["qlike_truth", "qlike_realized"]].mean()
        pooled.index = pd.MultiIndex.from_product(
            [[POOLED], pooled.index], names=["symbol", "horizon"]
        )
        scored[name] = pd.concat([per_sym, pooled])
    oracle = scored.pop(ORACLE_ID)

    loss = res.losses[res.losses["regime"] == "all"]
    table = loss.pivot_table(
        index=["symbol", "horizon"], columns=["target", "model_id"], values="qlike"
    )
    for name, sc in scored.items():
        for target in ("truth", "realized"):
            table[(target, name)] = sc[f"qlike_{target}"]
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    print(
        f"simulated {args.days} days (seed {args.seed}) in {t_sim:.1f}s; "
        f"walk-forward {t_eval:.1f}s; oracle {t_oracle:.1f}s; filtered_5m {t_filt:.1f}s; "
        f"{len(sample)} evaluated (symbol, origin, horizon) rows ({n_stale} filtered_5m forecasts "
        f"from the previous 5-min origin); grid {args.grid}, "
        f"window {args.window}h"
    )
    for target in ("truth", "realized"):
        q = table[target].copy()
        q[ORACLE_ID] = oracle[f"qlike_{target}"]
        models = [c for c in q.columns if c != ORACLE_ID]
        q["best"] = q[models].idxmin(axis=1)
        q["best/oracle"] = q[models].min(axis=1) / q[ORACLE_ID]
        print(f"\nQLIKE against the {target} target (mean over the common origins)")
        print(q.round(4).to_string())
    ratio = (table["truth"].min(axis=1) / oracle["qlike_truth"]).loc[POOLED]
    print("\nGoal: best model's QLIKE vs truth within 10% of the oracle's (ratio <= 1.10)")
    for h, r in ratio.items():
        verdict = "met" if r <= GOAL_RATIO else "NOT met"
        print(f"  pooled, h={h}: ratio {r:.3f} -> {verdict}")
    print(
        "\nThe oracle reads the simulator's hidden state (OU factors, regime): a floor, not a model."
    )


if __name__ == "__main__":
    main()
