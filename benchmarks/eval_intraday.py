"""Next-hour realized variance of BTC/ETH from 1-minute bars (issue 5, intraday goal).

Usage::

    .venv/bin/python benchmarks/eval_intraday.py                     # evaluation: 2025 window
    .venv/bin/python benchmarks/eval_intraday.py --period selection  # selection: 2024 window
    .venv/bin/python benchmarks/eval_intraday.py --period selection --grid   # + candidate configs

Target: hourly RV = sum of squared 1-minute log returns of the closes in the hour
(:func:`features.realized.realized_measures`, bar "1h", grid "1min"; 60 returns per hour), forecast
one hour ahead from every hourly close. The 1-minute data has two contiguous windows per symbol
(2024-07-26..2024-08-25 and 2025-05-20..2025-08-18); each window is a separate data set (no lag,
target or training row spans the 9-month gap). Partial first/last hours are dropped.

Protocol: walk-forward on each window alone, re-estimation at every origin (GARCH every 24 h,
LightGBM every 168 h), expanding windows from a burn-in (2024: 240 h; 2025: 720 h), scored on the
origins common to all models. The goal's reference is the best (lowest QLIKE) of the three required
baselines: persistence (RV of the last hour), the diurnal HAR (:class:`models.diurnal.DiurnalHARVol`)
and GARCH(1,1) on hourly close-to-close returns. Every configuration choice was made on the 2024
window (``--period selection``, see ``CONFIG_LOG``); the 2025 window is run once.

Printed per model and symbol (and "pooled": losses averaged over symbols per origin): n, QLIKE,
ratio to the best baseline, RMSPE, one-sided DM p-value of "better than the best baseline"
(Newey-West, ``d = loss_model - loss_best``), and membership of the 90% Model Confidence Set
(QLIKE, stationary bootstrap, seeded).
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

from features.calendar import diurnal_profile  # noqa: E402
from features.realized import realized_measures  # noqa: E402
from features.schema import RV, SYMBOL, TS  # noqa: E402
from models.combine import QLIKEWeightedVol  # noqa: E402
from models.diurnal import DiurnalHARVol  # noqa: E402
from models.ewma import RandomWalkVol  # noqa: E402
from models.garch import GarchVol  # noqa: E402
from models.har import LogHARVol  # noqa: E402
from models.lgbm import LGBMVol  # noqa: E402
from models.losses import diebold_mariano, model_confidence_set, qlike, rmspe  # noqa: E402

DATA = Path(os.environ.get("DPRM_DATA_DIR", ROOT.parent / "shared" / "data"))
ONE_MIN = DATA / "binance_spot_btc_eth_1m" / "klines_1m.parquet"
PERIODS = {
    "selection": ("2024-01-01", "2024-12-31", 240),
    "evaluation": ("2025-01-01", "2025-12-31", 720),
}
BASELINES = ("persistence", "diurnal_har", "garch")
FEATURES = ["hour_f", "lrv_24", "lrv_168", "ldiurnal_next", "mkt_lrv", "lvol_ratio", "lvol_24"]
SELECTED_OFFSET = "lrv_w"
SELECTED_POWER = 8.0
CONFIG_LOG = """
Configurations (selection = the 2024 window, 313 common origins per symbol; pooled QLIKE ratio to
the diurnal HAR chosen there). Round 1: diurnal HAR log/log-profile lags (1,24,168) as baseline,
level/mean-profile, log/mean-profile, log/log (1,6,24) 0.972, lgbm (offset lrv_d) 1.093, combo
power 2 1.004, equal 1.006. Round 2 (baseline = the best diurnal HAR, log HAR with a geometric-mean
profile, lags 1/6/24 h, expanding profile): other diurnal HARs 1.014..1.940, lgbm offset lrv_d
1.125 / lrv_w 1.096 / none 1.103, combos (dh + lgbm) power 0 1.019, 2 1.017, 8 1.015.
Chosen: diurnal HAR log/log (1,6,24); lgbm offset lrv_w; combo power 8. Evaluation run once.
"""


# ---- data ---------------------------------------------------------------------------------------
def load_hourly(lo: str, hi: str, data: Path = DATA) -> pd.DataFrame:
    """Hourly realized frame of one contiguous 1-minute window (``ts`` = hour close)."""
    d = pd.read_parquet(
        data / ONE_MIN.relative_to(DATA), columns=["symbol", "open_time", "close", "volume"]
    )
    d = d[
        (d["open_time"] >= pd.Timestamp(lo, tz="UTC"))
        & (d["open_time"] <= pd.Timestamp(hi, tz="UTC"))
    ]
    px = pd.DataFrame(
        {
            TS: (d["open_time"] + pd.Timedelta("1min")).astype("datetime64[ns, UTC]").to_numpy(),
            SYMBOL: d["symbol"].astype("str").to_numpy(),
            "close": d["close"].to_numpy(dtype="float64"),
            "volume": d["volume"].to_numpy(dtype="float64"),
        }
    )
    rm = realized_measures(
        px[[TS, SYMBOL, "close"]],
        bar="1h",
        grid="1min",
        price_col="close",
        subsample=False,
        kernel=False,
        include_empty=False,
    )
    rm = rm[rm["n_obs"] >= 59][[TS, SYMBOL, RV, "n_obs", "close"]].reset_index(drop=True)
    hour_close = px[TS].dt.ceil("1h")
    vol = px.groupby([SYMBOL, hour_close])["volume"].sum().rename("volume_h").reset_index()
    vol = vol.rename(columns={TS: TS})
    rm = rm.merge(vol, on=[SYMBOL, TS], how="left")
    return add_features(rm.sort_values([SYMBOL, TS]).reset_index(drop=True))


def add_features(X: pd.DataFrame) -> pd.DataFrame:
    """LightGBM features known at each hourly close (trailing data only)."""
    out = X.copy()
    g = out.groupby(SYMBOL, sort=False)
    lrv = np.log(out[RV])
    out["hour_f"] = ((out[TS].dt.hour) % 24).astype("float64")  # hour of day the target hour starts
    out["lrv_24"] = lrv.groupby(out[SYMBOL]).transform(lambda s: s.rolling(24).mean())
    out["lrv_168"] = lrv.groupby(out[SYMBOL]).transform(
        lambda s: s.rolling(168, min_periods=72).mean()
    )
    prof = diurnal_profile(out, RV, bucket="1h", min_obs=3)  # strictly earlier rows of the bucket
    # the profile of the next row's bucket uses rows up to the current one: known at the origin
    nxt = prof.groupby(out[SYMBOL]).shift(-1)
    overall = out[RV].groupby(out[SYMBOL]).transform(lambda s: s.expanding().mean())
    out["ldiurnal_next"] = np.log(nxt / overall)
    out["mkt_lrv"] = lrv.groupby(out[TS]).transform("mean")
    lv = np.log(out["volume_h"].where(out["volume_h"] > 0))
    out["lvol_24"] = lv.groupby(out[SYMBOL]).transform(lambda s: s.rolling(24).mean())
    out["lvol_ratio"] = lv - out["lvol_24"]
    del g
    return out


# ---- models -------------------------------------------------------------------------------------
def _lgbm(**over: object) -> LGBMVol:
    params: dict[str, object] = dict(
        horizons=(1,),
        feature_columns=FEATURES,
        refit_every=168,
        min_train=240,
        validation_size=72,
        n_estimators=400,
        learning_rate=0.03,
        num_leaves=7,
        min_child_samples=60,
        quantile_levels=(),
        offset_feature="lrv_d",
        min_obs=None,
        random_state=0,
    )
    params.update(over)
    return LGBMVol(**params)  # type: ignore[arg-type]


def _dh(**over: object) -> DiurnalHARVol:
    params: dict[str, object] = dict(
        horizons=(1,), lags=(1, 6, 24), log=True, profile_stat="log", window=120
    )
    params.update(over)
    return DiurnalHARVol(**params)  # type: ignore[arg-type]


def _combo(a: object, b: object, power: float) -> QLIKEWeightedVol:
    return QLIKEWeightedVol(
        members=[("a", a), ("b", b)],
        horizons=(1,),
        lookback=168,
        power=power,
        min_history=24,
        min_obs=None,
    )


def models(grid: bool = False) -> dict[str, object]:
    """The compared configurations (``grid``: also the other selection candidates)."""
    dh, lgbm = _dh(), _lgbm(offset_feature=SELECTED_OFFSET)
    ms: dict[str, object] = {
        "persistence": RandomWalkVol(min_obs=None),
        "diurnal_har": dh,
        "garch": GarchVol(window=None, refit_every=24, min_fit_obs=200, random_state=0),
        "log_har": LogHARVol(horizons=(1,), window=120, window_type="expanding", min_obs=None),
        "lgbm": lgbm,
        "combo_dh_lgbm": _combo(dh, lgbm, SELECTED_POWER),
    }
    if grid:
        ms["dh_level_mean_1_24_168"] = _dh(lags=(1, 24, 168), log=False, profile_stat="mean")
        ms["dh_log_mean_1_24_168"] = _dh(lags=(1, 24, 168), profile_stat="mean")
        ms["dh_log_log_1_24_168"] = _dh(lags=(1, 24, 168))
        ms["dh_log_log_1_6_24_168"] = _dh(lags=(1, 6, 24, 168))
        ms["dh_level_log_1_6_24"] = _dh(log=False)
        ms["dh_log_log_1_6_24_pw10"] = _dh(profile_window=10)
        ms["lgbm_off_w"] = _lgbm(offset_feature="lrv_w")
        ms["lgbm_off_none"] = _lgbm(offset_feature=None)
        ms["combo_eq"] = _combo(dh, lgbm, 0.0)
        ms["combo_p8"] = _combo(dh, lgbm, 8.0)
    return ms


def forecasts(ms: dict[str, object], X: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    """Walk-forward forecasts of every model (its own window settings) with the realized next-hour
    RV, on the origins common to all models."""
    rv = X.set_index([SYMBOL, TS])[RV]
    nxt = X.groupby(SYMBOL)[RV].shift(-1)  # the next hour's RV (same contiguous window)
    target = pd.Series(nxt.to_numpy(), index=rv.index)
    frames = []
    for name, m in ms.items():
        t = time.perf_counter()
        for sym, vf in m.walk_forward(X, (1,), start=start).items():  # type: ignore[attr-defined]
            f = vf.variance.iloc[:, 0].dropna()
            frames.append(
                pd.DataFrame(
                    {
                        "model_id": name,
                        "symbol": sym,
                        "origin_ts": f.index,
                        "forecast_var": f.to_numpy(),
                        "realized_var": target.reindex(
                            pd.MultiIndex.from_arrays([[sym] * len(f), f.index])
                        ).to_numpy(),
                    }
                )
            )
        print(f"  {name}: {time.perf_counter() - t:.1f}s", file=sys.stderr)
    ev = pd.concat(frames, ignore_index=True).dropna(subset=["realized_var"])
    n_models = ev.groupby(["symbol", "origin_ts"])["model_id"].transform("nunique")
    return ev[n_models == len(ms)]


# ---- report -------------------------------------------------------------------------------------
def report(ev: pd.DataFrame, names: list[str], seed: int = 0) -> pd.DataFrame:
    """Per symbol and pooled: QLIKE, ratio to the best baseline, RMSPE, DM p-value, MCS."""
    rows = []
    pooled = (
        ev.assign(q=qlike(ev["realized_var"], ev["forecast_var"]))
        .groupby(["model_id", "origin_ts"])["q"]
        .mean()
        .rename("q")
        .reset_index()
    )
    sets = {sym: g for sym, g in ev.groupby("symbol")}
    for sym, g in [*sets.items(), ("pooled", None)]:
        if g is None:
            L = pooled.pivot(index="origin_ts", columns="model_id", values="q")[names].dropna()
            rm = {
                m: rmspe(gg["realized_var"], gg["forecast_var"]) for m, gg in ev.groupby("model_id")
            }
        else:
            g = g.assign(q=qlike(g["realized_var"], g["forecast_var"]))
            L = g.pivot(index="origin_ts", columns="model_id", values="q")[names].dropna()
            rm = {
                m: rmspe(gg["realized_var"], gg["forecast_var"]) for m, gg in g.groupby("model_id")
            }
        means = L.mean()
        best = means[list(BASELINES)].idxmin()
        mcs = model_confidence_set(L, size=0.10, reps=500, random_state=np.random.default_rng(seed))
        for m in names:
            p = np.nan
            if m != best:
                p = diebold_mariano(L[m].to_numpy(), L[best].to_numpy(), lag=1).pvalue_less
            rows.append(
                {
                    "symbol": sym,
                    "model": m,
                    "n": len(L),
                    "qlike": means[m],
                    "ratio_best": means[m] / means[best],
                    "best_baseline": best,
                    "rmspe": rm.get(m, np.nan),
                    "dm_p_better": p,
                    "in_mcs90": m in mcs.included,
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    """Run the evaluation and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--period", choices=sorted(PERIODS), default="evaluation")
    ap.add_argument("--grid", action="store_true", help="also run the selection candidates")
    args = ap.parse_args()
    t0 = time.perf_counter()
    lo, hi, burn = PERIODS[args.period]
    X = load_hourly(lo, hi)
    start = X.groupby(SYMBOL)[TS].min().max() + pd.Timedelta(hours=burn)
    ms = models(args.grid)
    ev = forecasts(ms, X, start)
    tab = report(ev, list(ms))
    pd.set_option("display.width", 200)
    print(
        f"period={args.period} window {X[TS].min()}..{X[TS].max()} start={start} models={len(ms)}"
    )
    print(tab.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(CONFIG_LOG)
    print(f"runtime {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
