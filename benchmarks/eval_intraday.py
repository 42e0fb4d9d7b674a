"""Next-hour realized variance of BTC/ETH from 1-minute bars (issue 5, intraday goal).

Usage::

    .venv/bin/python benchmarks/eval_intraday.py                     # evaluation: 2025 window
    .venv/bin/python benchmarks/eval_intraday.py --period selection  # selection: 2024 window
    .venv/bin/python benchmarks/eval_intraday.py --period selection --grid   # + candidate configs
    .venv/bin/python benchmarks/eval_intraday.py --data 5m           # 5-minute set (about 7.5 min)
    .venv/bin/python benchmarks/eval_intraday.py --data 5m --period selection --grid x4 --only dhx

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

Second data set (``--data 5m``): the 5-minute spot klines (BTC/ETH 2024-01-01..06-30 = selection,
burn-in 720 h; BTC/ETH/BNB/LTC 2024-12-31..2026-02-19 = evaluation, burn-in 720 h so origins start
2025-01-30). Hourly RV from the 12 five-minute close-to-close returns of the hour (hours with fewer
are dropped). Both windows are gap-free (checked: no missing 5-minute bar inside either window, and
no hour dropped), so no fill rule is needed; a gap would make DiurnalHARVol raise.

Extra information (``add_features``, all known at the hour's close): realized range (sum of the
bars' Parkinson terms) relative to RV, the share of RV in the last 5/15/30 minutes, the hour's
high-low range, signed return, largest squared return, cross-asset surprise (the other symbols'
diurnally adjusted log RV), volume surprises (diurnally adjusted) and the day type (weekend /
weekday) of the target hour's diurnal level. The klines have no trade count or taker-buy volume.
Models: the diurnal HAR-X (``models.diurnal_x.DiurnalHARXVol``, the chosen diurnal HAR + a
selected subset of those as log-scale regressors), LightGBM with them (``lgbm_x``) and their
QLIKE-weighted combination; ``DiurnalBoostVol`` (LightGBM on the diurnal HAR's residual) was tried.

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
from models import catalog  # noqa: E402
from models.combine import QLIKEWeightedVol  # noqa: E402
from models.diurnal import DiurnalHARVol, bucket_ids, diurnal_shape  # noqa: E402
from models.diurnal_x import DiurnalBoostVol, DiurnalHARXVol  # noqa: E402
from models.lgbm import LGBMVol  # noqa: E402
from models.losses import diebold_mariano, model_confidence_set, qlike, rmspe  # noqa: E402

DATA = Path(os.environ.get("DPRM_DATA_DIR", ROOT.parent / "shared" / "data"))
ONE_MIN = DATA / "binance_spot_btc_eth_1m" / "klines_1m.parquet"
FIVE_MIN = DATA / "binance_spot_5m_btc_eth_bnb_ltc" / "klines_5m.parquet"
BAR = {"1m": "1min", "5m": "5min"}
MIN_RETURNS = {"1m": 59, "5m": 12}
PERIODS = {
    "selection": ("2024-01-01", "2024-12-31", 240),
    "evaluation": ("2025-01-01", "2025-12-31", 720),
}
PERIODS_5M = {
    "selection": ("2024-01-01", "2024-06-30 23:59", 720),
    "evaluation": ("2024-12-31", "2026-02-19 23:59", 720),
}
PERIOD_SETS = {"1m": PERIODS, "5m": PERIODS_5M}
BASELINES = ("persistence", "diurnal_har", "garch")
FEATURES = ["hour_f", "lrv_24", "lrv_168", "ldiurnal_next", "mkt_lrv", "lvol_ratio", "lvol_24"]
EXOG_ALL = (
    "x_rr", "x_rr6", "x_rr24", "x_rec5", "x_rec15", "x_rec30", "x_rrrec15", "x_hl", "x_ret",
    "x_neg", "x_jump", "x_mkt", "x_mkt24", "x_vols", "x_vrel",
)  # fmt: skip
EXOG_CANDIDATES: dict[str, tuple[str, ...]] = {
    "rr": ("x_rr",),
    "rr_rr24": ("x_rr", "x_rr24"),
    "rr_rr6_rr24": ("x_rr", "x_rr6", "x_rr24"),
    "rec5": ("x_rec5",),
    "rec15": ("x_rec15",),
    "rec30": ("x_rec30",),
    "rrrec15": ("x_rrrec15",),
    "hl": ("x_hl",),
    "ret_neg": ("x_ret", "x_neg"),
    "jump": ("x_jump",),
    "mkt": ("x_mkt",),
    "mkt_mkt24": ("x_mkt", "x_mkt24"),
    "vols": ("x_vols",),
    "vrel": ("x_vrel",),
    "rr_rec15": ("x_rr", "x_rec15"),
    "rr_rr24_rec15_mkt": ("x_rr", "x_rr24", "x_rec15", "x_mkt"),
    "rr_rr24_rec15_mkt_vols_neg": ("x_rr", "x_rr24", "x_rec15", "x_mkt", "x_vols", "x_neg"),
    "all": EXOG_ALL,
}
EXOG_CANDIDATES_4: dict[str, tuple[str, ...]] = {
    "mkt_dts": ("x_mkt", "x_dts"),
    "mkt_dts_vols": ("x_mkt", "x_dts", "x_vols"),
    "mkt_rec30_dts": ("x_mkt", "x_rec30", "x_dts"),
    "rr_rec15_rec30_dts": ("x_rr", "x_rec15", "x_rec30", "x_dts"),
    "rr_rec15_rec30_mkt_dts": ("x_rr", "x_rec15", "x_rec30", "x_mkt", "x_dts"),
    "rr_rec15_rec30_dts_vols": ("x_rr", "x_rec15", "x_rec30", "x_dts", "x_vols"),
}
SELECTED_EXOG = {  # chosen on each data set's selection window (CONFIG_LOG)
    "1m": EXOG_CANDIDATES_4["mkt_dts"],
    "5m": EXOG_CANDIDATES_4["rr_rec15_rec30_dts"],
}
HEADLINE = {"1m": "dhx", "5m": "combo_dhx_lgbmx"}
LGBM_X = ["x_rr", "x_rec15", "x_rec30", "x_dts", "x_mkt", "x_vols", "x_ret"]
EXOG_CANDIDATES_3: dict[str, tuple[str, ...]] = {
    "dts": ("x_dts",),
    "wkd": ("x_wkd",),
    "dts_wkd": ("x_dts", "x_wkd"),
    "rr_rec15_dts": ("x_rr", "x_rec15", "x_dts"),
    "rr_rec15_rec30_dts": ("x_rr", "x_rec15", "x_rec30", "x_dts"),
    "rr_rec15_mkt_dts": ("x_rr", "x_rec15", "x_mkt", "x_dts"),
    "mkt_dts": ("x_mkt", "x_dts"),
}
EXOG_CANDIDATES_2: dict[str, tuple[str, ...]] = {
    "rr_rec30": ("x_rr", "x_rec30"),
    "rr_rec15_rec30": ("x_rr", "x_rec15", "x_rec30"),
    "rr_rrrec15": ("x_rr", "x_rrrec15"),
    "rr_rec15_hl": ("x_rr", "x_rec15", "x_hl"),
    "rr_rec15_vols": ("x_rr", "x_rec15", "x_vols"),
    "rr_rec15_vrel": ("x_rr", "x_rec15", "x_vrel"),
    "rr_rec15_neg": ("x_rr", "x_rec15", "x_neg"),
    "rr_rec15_mkt": ("x_rr", "x_rec15", "x_mkt"),
    "rr_rec15_hl_vols_neg": ("x_rr", "x_rec15", "x_hl", "x_vols", "x_neg"),
}
BOOST_FEATURES = ["x_rr", "x_rr24", "x_rec15", "x_hl", "x_ret", "x_jump", "x_mkt", "x_vols", "la_d"]
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

Round 3 (diurnal HAR-X = models/diurnal_x.py DiurnalHARXVol, the chosen diurnal HAR + exogenous
regressors x_* of add_features; DiurnalBoostVol = LightGBM on the diurnal HAR's residual). Figures:
pooled QLIKE ratio to diurnal_har on the selection windows, 1m = 2024-08-05..08-25 (common origins
in brackets; the boosters need a longer burn-in so runs with them have fewer), 5m = 2024-01-31..
06-30 BTC/ETH (3646 origins). 5m baseline check (--data 5m --grid base): dh log/log 1/6/24 stays
best (others 1.010 .. 1.116, lags 1/3/6/24 0.999; on 1m 1.007) -> same baselines on both sets.
 exog set (--grid x, x2, x3, x4)    1m           5m        | exog set                   1m      5m
 rr                           1.004 [409]  0.969           | rr_rr24                   1.010  0.970
 rr_rr6_rr24                  1.013        0.970           | rec5                      1.022  0.997
 rec15                        0.997        0.989           | rec30                     0.997  0.986
 rrrec15                      1.002        0.989           | hl                        1.000  0.978
 ret_neg                      1.013        0.988           | jump                      1.022  1.000
 mkt                          0.989        0.998           | mkt_mkt24                 0.995  0.998
 vols                         0.996        0.983           | vrel                      1.005  0.984
 rr_rec15                     1.000        0.956           | rr_rr24_rec15_mkt         0.990  0.958
 rr_rr24_rec15_mkt_vols_neg   0.999        0.960           | all (15 x_*)              1.032  0.955
 rr_rec30                     1.001 [313]  0.954           | rr_rec15_rec30            1.001  0.952
 rr_rrrec15                   1.012        0.953           | rr_rec15_hl               1.001  0.953
 rr_rec15_vols                0.997        0.957           | rr_rec15_vrel             1.024* 0.958
 rr_rec15_neg                 1.048*       0.956           | rr_rec15_mkt              0.983  0.957
 rr_rec15_hl_vols_neg         1.043*       0.958           | rr_rec15 lags 1/6/24/168  1.006  0.965
 rr_rec15 lags 1/3/6/24       1.035*       0.957           | dts                       0.988 [457] 0.986
 wkd                          1.000        0.990           | dts_wkd                   0.992  0.986
 rr_rec15_dts                 1.004        0.946           | rr_rec15_rec30_dts        1.006  0.942
 rr_rec15_mkt_dts             0.986        0.947           | mkt_dts                   0.975  0.985
 mkt_dts_vols                 0.978        0.972           | mkt_rec30_dts             0.977  0.972
 rr_rec15_rec30_mkt_dts       0.989        0.943           | rr_rec15_rec30_dts_vols   1.007  0.944
 (* = on the 143 origins of the run with the boosters)
 learned / combined                 1m           5m
 boost_dh (DiurnalBoostVol, 9 x)    0.987 [143]  1.005     boost_dh + hour_f       0.990  1.001
 boost_dhx (base dhx rr_rec15)      1.025 [143]  0.985     combo dhx rr_rec15 + boost_dhx p8  1.022  0.952
 combo dhx rr_rec15 + lgbm p8       0.997 [313]  0.944     same, power 2           -      0.946
 lgbm_x (lgbm + 7 x_* features)     1.172 [457]  0.958
 combo mkt_dts + lgbm p8            1.000        0.965     combo mkt_dts + lgbm_x p8          0.986  0.939
 combo rr_rec15_rec30_dts + lgbm p8 1.029        0.935     combo rr_rec15_rec30_dts + lgbm_x  1.018  0.920
Chosen on each set's own selection window: 1m -> dhx = DiurnalHARXVol(x_mkt, x_dts) (0.975);
5m -> combo_dhx_lgbmx = QLIKE-weighted (power 8) dhx(x_rr, x_rec15, x_rec30, x_dts) + lgbm_x
(0.920). Both dhx and combo_dhx_lgbmx are printed for both sets. Evaluation run once per set.
"""


# ---- data ---------------------------------------------------------------------------------------
def load_bars(data_kind: str, lo: str, hi: str, data: Path = DATA) -> pd.DataFrame:
    """Bars of one contiguous window (``ts`` = bar close, UTC), columns symbol/open/high/low/close/
    volume."""
    path = data / (ONE_MIN if data_kind == "1m" else FIVE_MIN).relative_to(DATA)
    d = pd.read_parquet(
        path, columns=["symbol", "open_time", "open", "high", "low", "close", "volume"]
    )
    d = d[
        (d["open_time"] >= pd.Timestamp(lo, tz="UTC"))
        & (d["open_time"] <= pd.Timestamp(hi, tz="UTC"))
    ]
    bar = pd.Timedelta(BAR[data_kind])
    out = pd.DataFrame(
        {
            TS: (d["open_time"] + bar).astype("datetime64[ns, UTC]").to_numpy(),
            SYMBOL: d["symbol"].astype("str").to_numpy(),
        }
    )
    for c in ("open", "high", "low", "close", "volume"):
        out[c] = d[c].to_numpy(dtype="float64")
    return out.sort_values([SYMBOL, TS]).reset_index(drop=True)


def hourly_aggregates(bars: pd.DataFrame, bar: str) -> pd.DataFrame:
    """Per symbol and hour (``ts`` = hour close) the within-hour aggregates of the bars closing in
    the hour: realized range ``rr_var`` (sum of Parkinson terms ln(H/L)^2 / (4 ln 2)), the squared
    close-to-close returns of the last 5/15/30 minutes (``rv5_var``...), the realized range of the
    last 15 minutes, the hour's log return, high-low Parkinson variance ``hl_var``, the largest
    squared return and the volume. Returns across a missing bar are NaN (left out)."""
    b = pd.Timedelta(bar)
    ts = bars[TS]
    same = (bars[SYMBOL] == bars[SYMBOL].shift()) & (ts - ts.shift() == b)
    lc = np.log(bars["close"].to_numpy())
    r = np.where(same.to_numpy(), lc - np.roll(lc, 1), np.nan)
    hour = ts.dt.ceil("1h")
    minute = ((ts - (hour - pd.Timedelta("1h"))).dt.total_seconds() / 60.0).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        pk = np.log(bars["high"].to_numpy() / bars["low"].to_numpy()) ** 2 / (4.0 * np.log(2.0))
    r2 = r * r
    f = pd.DataFrame({SYMBOL: bars[SYMBOL].to_numpy(), TS: hour.to_numpy(), "r": r, "r2": r2})
    f["pk"] = pk
    for k in (5, 15, 30):
        f[f"r2_{k}"] = np.where(minute > 60 - k, r2, 0.0)
    f["pk_15"] = np.where(minute > 45, pk, 0.0)
    f["high"] = bars["high"].to_numpy()
    f["low"] = bars["low"].to_numpy()
    f["volume"] = bars["volume"].to_numpy()
    g = f.groupby([SYMBOL, TS], sort=True)
    agg = g.agg(
        rr_var=("pk", "sum"),
        rv5_var=("r2_5", "sum"),
        rv15_var=("r2_15", "sum"),
        rv30_var=("r2_30", "sum"),
        rr15_var=("pk_15", "sum"),
        ret_h=("r", "sum"),
        maxr2_var=("r2", "max"),
        high_h=("high", "max"),
        low_h=("low", "min"),
        volume_h=("volume", "sum"),
    ).reset_index()
    agg["hl_var"] = np.log(agg["high_h"] / agg["low_h"]) ** 2 / (4.0 * np.log(2.0))
    return agg.drop(columns=["high_h", "low_h"])


def load_hourly(lo: str, hi: str, data: Path = DATA, data_kind: str = "1m") -> pd.DataFrame:
    """Hourly realized frame of one contiguous window (``ts`` = hour close) with the features."""
    bars = load_bars(data_kind, lo, hi, data)
    rm = realized_measures(
        bars[[TS, SYMBOL, "close"]],
        bar="1h",
        grid=BAR[data_kind],
        price_col="close",
        subsample=False,
        kernel=False,
        include_empty=False,
    )
    rm = rm[rm["n_obs"] >= MIN_RETURNS[data_kind]][[TS, SYMBOL, RV, "n_obs", "close"]]
    rm = rm.reset_index(drop=True)
    rm = rm.merge(hourly_aggregates(bars, BAR[data_kind]), on=[SYMBOL, TS], how="left")
    return add_features(rm.sort_values([SYMBOL, TS]).reset_index(drop=True))


def _log_ratio(num: pd.Series, den: pd.Series, floor: float = 1e-3) -> pd.Series:
    """log(num / den) with the ratio floored at ``floor`` (zero numerators)."""
    return np.log(np.maximum(num / den, floor))


def add_features(X: pd.DataFrame) -> pd.DataFrame:
    """Features known at each hourly close (trailing data only): LightGBM's context (``FEATURES``)
    and the scale-free exogenous regressors of the diurnal HAR-X (``x_*``, see ``EXOG``)."""
    out = X.copy()
    sym = out[SYMBOL]
    lrv = np.log(out[RV])
    out["hour_f"] = ((out[TS].dt.hour) % 24).astype("float64")  # hour of day the target hour starts
    out["lrv_24"] = lrv.groupby(sym).transform(lambda s: s.rolling(24).mean())
    out["lrv_168"] = lrv.groupby(sym).transform(lambda s: s.rolling(168, min_periods=72).mean())
    prof = diurnal_profile(out, RV, bucket="1h", min_obs=3)  # strictly earlier rows of the bucket
    # the profile of the next row's bucket uses rows up to the current one: known at the origin
    nxt = prof.groupby(sym).shift(-1)
    overall = out[RV].groupby(sym).transform(lambda s: s.expanding().mean())
    out["ldiurnal_next"] = np.log(nxt / overall)
    out["mkt_lrv"] = lrv.groupby(out[TS]).transform("mean")
    lv = np.log(out["volume_h"].where(out["volume_h"] > 0))
    out["lvol_24"] = lv.groupby(sym).transform(lambda s: s.rolling(24).mean())
    out["lvol_ratio"] = lv - out["lvol_24"]
    # ---- exogenous regressors (scale-free; the diurnal factor cancels in the ratios) ----
    rv = out[RV]
    out["x_rr"] = _log_ratio(out["rr_var"], rv)  # realized range vs RV (efficiency of the range)
    out["x_rr6"] = out["x_rr"].groupby(sym).transform(lambda s: s.rolling(6).mean())
    out["x_rr24"] = out["x_rr"].groupby(sym).transform(lambda s: s.rolling(24).mean())
    for k in (5, 15, 30):
        out[f"x_rec{k}"] = _log_ratio(out[f"rv{k}_var"] * (60.0 / k), rv)
    out["x_rrrec15"] = _log_ratio(out["rr15_var"] * 4.0, out["rr_var"])
    out["x_hl"] = _log_ratio(out["hl_var"], rv)
    out["x_ret"] = out["ret_h"] / np.sqrt(rv)
    out["x_neg"] = np.minimum(out["x_ret"], 0.0)
    out["x_jump"] = out["maxr2_var"] / rv
    # diurnally adjusted log RV / volume (the model's own adjustment: geometric-mean profile of
    # strictly earlier days) -> cross-asset and volume surprises
    la = pd.Series(np.nan, index=out.index)
    lva = pd.Series(np.nan, index=out.index)
    for _, idx in out.groupby(SYMBOL, sort=False).groups.items():
        ts = pd.DatetimeIndex(out.loc[idx, TS])
        bk = bucket_ids(ts, pd.Timedelta("1h"))
        for src, dst in ((out.loc[idx, RV], la), (out.loc[idx, "volume_h"], lva)):
            v = src.to_numpy(dtype="float64")
            v = np.where(v > 0, v, np.nan)
            ok = np.isfinite(v)
            shape = np.full((len(v), 24), np.nan)
            if ok.all():
                shape = diurnal_shape(v, bk, 24, stat="log", min_obs=5)
            prev = np.full(len(v), np.nan)
            prev[1:] = shape[np.arange(len(v) - 1), bk[1:]]
            dst.loc[idx] = np.log(v / prev)
    out["la_d"] = la
    out["x_mkt"] = la.groupby(out[TS]).transform("mean") - la
    la24 = la.groupby(sym).transform(lambda s: s.rolling(24).mean())
    out["x_mkt24"] = la24.groupby(out[TS]).transform("mean") - la24
    out["x_vols"] = lva - lva.groupby(sym).transform(lambda s: s.rolling(24).mean())
    out["x_vrel"] = (
        lva
        - la
        - (lva - la).groupby(sym).transform(lambda s: s.rolling(168, min_periods=72).mean())
    )
    # day type (weekend / weekday) of the target hour: the geometric-mean RV of the target's
    # (day type, hour) bucket vs its hour bucket, each from rows at or before the origin (the
    # expanding mean of the rows strictly before row t+1, put on row t); 0 until 2 such values
    tgt = out[TS] + pd.Timedelta("1h")  # close of the target hour
    out["x_wkd"] = ((tgt - pd.Timedelta("1ns")).dt.day_of_week >= 5).astype("float64")
    hb = ((out[TS] - pd.Timedelta("1ns")).dt.hour).astype("int64")
    wk = ((out[TS] - pd.Timedelta("1ns")).dt.day_of_week >= 5).astype("int64")
    prev_dt = _prev_group_mean(lrv, [sym, hb, wk])
    prev_all = _prev_group_mean(lrv, [sym, hb])
    dts = (prev_dt - prev_all).groupby(sym).shift(-1)
    out["x_dts"] = dts.fillna(0.0).where(out.groupby(SYMBOL).cumcount(ascending=False) > 0)
    return out


def _prev_group_mean(v: pd.Series, keys: list[pd.Series], min_obs: int = 2) -> pd.Series:
    """Mean of ``v`` over the strictly earlier rows of each row's group (NaN below ``min_obs``)."""
    g = v.groupby(keys, sort=False)
    n = g.cumcount()
    s = g.cumsum() - v
    return (s / n).where(n >= min_obs)


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


def _dhx(exog: tuple[str, ...], **over: object) -> DiurnalHARXVol:
    params: dict[str, object] = dict(
        horizons=(1,), lags=(1, 6, 24), log=True, profile_stat="log", window=120, exog=exog
    )
    params.update(over)
    return DiurnalHARXVol(**params)  # type: ignore[arg-type]


def _boost(base: DiurnalHARVol, features: list[str], **over: object) -> DiurnalBoostVol:
    params: dict[str, object] = dict(
        base=base,
        horizons=(1,),
        feature_columns=features,
        refit_every=168,
        min_train=240,
        validation_size=72,
        n_estimators=300,
        learning_rate=0.02,
        num_leaves=4,
        min_child_samples=100,
        reg_lambda=10.0,
        quantile_levels=(),
        min_obs=None,
        random_state=0,
    )
    params.update(over)
    return DiurnalBoostVol(**params)  # type: ignore[arg-type]


def models(grid: str | None = None, data_kind: str = "1m") -> dict[str, object]:
    """The compared configurations of a data set (``grid``: "base", "x", "x2", "x3" or "x4" adds
    that round's selection candidates)."""
    dh, lgbm = _dh(), _lgbm(offset_feature=SELECTED_OFFSET)
    lgbm_x = _lgbm(offset_feature=SELECTED_OFFSET, feature_columns=[*FEATURES, *LGBM_X])
    dhx_sel = _dhx(SELECTED_EXOG[data_kind])
    ms: dict[str, object] = {
        "persistence": catalog.build("random_walk", min_obs=None),
        "diurnal_har": dh,
        "garch": catalog.build("garch_1_1", window=None, refit_every=24, min_fit_obs=200,
                               random_state=0),
        "log_har": catalog.build("log_har", (1,), window=120, window_type="expanding",
                                 min_obs=None),
        "lgbm": lgbm,
        "combo_dh_lgbm": _combo(dh, lgbm, SELECTED_POWER),
        "lgbm_x": lgbm_x,
        "dhx": dhx_sel,
        "combo_dhx_lgbmx": _combo(dhx_sel, lgbm_x, SELECTED_POWER),
    }
    if grid == "base":
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
    if grid == "x":
        for name, ex in EXOG_CANDIDATES.items():
            ms[f"dhx_{name}"] = _dhx(ex)
        ms["boost_dh"] = _boost(dh, BOOST_FEATURES)
        ms["boost_dh_hf"] = _boost(dh, ["hour_f", *BOOST_FEATURES])
    if grid == "x2":
        for name, ex in EXOG_CANDIDATES_2.items():
            ms[f"dhx_{name}"] = _dhx(ex)
        rr15 = ("x_rr", "x_rec15")
        ms["dhx_rr_rec15_lag168"] = _dhx(rr15, lags=(1, 6, 24, 168))
        ms["dhx_rr_rec15_lag3"] = _dhx(rr15, lags=(1, 3, 6, 24))
        ms["dh_lag3"] = _dh(lags=(1, 3, 6, 24))
        dhx = _dhx(rr15)
        ms["boost_dhx"] = _boost(dhx, [*BOOST_FEATURES, "x_rec30", "x_vrel", "x_neg"])
        ms["combo_dhx_lgbm_p8"] = _combo(dhx, lgbm, 8.0)
        ms["combo_dhx_lgbm_p2"] = _combo(dhx, lgbm, 2.0)
        ms["combo_dhx_boost_p8"] = _combo(dhx, ms["boost_dhx"], 8.0)
    if grid == "x3":
        for name, ex in EXOG_CANDIDATES_3.items():
            ms[f"dhx_{name}"] = _dhx(ex)
    if grid == "x4":
        for name, ex in EXOG_CANDIDATES_4.items():
            ms[f"dhx_{name}"] = _dhx(ex)
        for name in ("mkt_dts", "rr_rec15_rec30_dts"):
            dhx = _dhx(EXOG_CANDIDATES_4[name])
            ms[f"combo_{name}_lgbm_p8"] = _combo(dhx, lgbm, 8.0)
            ms[f"combo_{name}_lgbmx_p8"] = _combo(dhx, lgbm_x, 8.0)
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
    ap.add_argument("--data", choices=sorted(PERIOD_SETS), default="1m", help="bar data set")
    ap.add_argument(
        "--grid",
        nargs="?",
        const="base",
        choices=("base", "x", "x2", "x3", "x4"),
        help="add selection candidates",
    )
    ap.add_argument(
        "--only",
        nargs="*",
        help="run only the models whose names start with these (and the baselines)",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    lo, hi, burn = PERIOD_SETS[args.data][args.period]
    X = load_hourly(lo, hi, data_kind=args.data)
    start = X.groupby(SYMBOL)[TS].min().max() + pd.Timedelta(hours=burn)
    ms = models(args.grid, args.data)
    if args.only:
        ms = {k: v for k, v in ms.items() if k in BASELINES or k.startswith(tuple(args.only))}
    ev = forecasts(ms, X, start)
    tab = report(ev, list(ms))
    pd.set_option("display.width", 200)
    print(
        f"data={args.data} period={args.period} window {X[TS].min()}..{X[TS].max()} start={start} models={len(ms)}"
    )
    print(tab.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(CONFIG_LOG)
    print(f"runtime {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
