"""Range-based variance estimators on OHLC bars, and aggregation of bars to coarser bars.

All estimators return the variance of the log price over one bar (``*_var``, not annualized):

- Parkinson (1980): ``ln(H/L)^2 / (4 ln 2)``; unbiased for a driftless Brownian motion.
- Garman-Klass (1980): ``0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2``; unbiased without drift.
- Rogers-Satchell (1991): ``ln(H/C) ln(H/O) + ln(L/C) ln(L/O)``; unbiased for any drift.
- Yang-Zhang (2000), rolling over ``window`` bars: ``var(overnight) + k var(open-to-close) +
  (1-k) mean(RS)`` with ``k = 0.34 / (1.34 + (n+1)/(n-1))`` and sample variances (n-1); it also
  captures the overnight (close-to-open) variance, so it estimates the close-to-close variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.schema import CLOSE, HIGH, LOW, OPEN, SYMBOL, TS, DataError

__all__ = ["ESTIMATORS", "aggregate_bars", "range_variance"]

ESTIMATORS = {
    "parkinson": "parkinson_var",
    "garman_klass": "gk_var",
    "rogers_satchell": "rs_var",
    "yang_zhang": "yz_var",
}
"""Estimator name -> output column."""

_DEFAULT_YZ_WINDOW = 20
_SUM_COLUMNS = ("volume", "quote_volume", "trade_count", "taker_buy_volume")


def _ohlc(bars: pd.DataFrame) -> tuple[np.ndarray, ...]:
    missing = [c for c in (TS, SYMBOL, OPEN, HIGH, LOW, CLOSE) if c not in bars.columns]
    if missing:
        raise DataError(
            f"bars frame is missing column(s) {missing}; got columns {list(bars.columns)}",
            column=missing[0],
        )
    arrs = [np.asarray(bars[c].to_numpy(), dtype=np.float64) for c in (OPEN, HIGH, LOW, CLOSE)]
    for c, a in zip((OPEN, HIGH, LOW, CLOSE), arrs, strict=True):
        ok = a > 0.0
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise DataError(
                f"{c} {float(a[i])!r} at row {i} is not a positive price; expected > 0", column=c
            )
    o, h, lo, c = arrs
    bad = (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"bar at row {i} has high {float(h[i])!r}, low {float(lo[i])!r}, open {float(o[i])!r}, "
            f"close {float(c[i])!r}; "
            "expected low <= open, close <= high",
            column=HIGH,
        )
    return o, h, lo, c


def range_variance(
    bars: pd.DataFrame,
    *,
    estimators: Sequence[str] = ("parkinson", "garman_klass", "rogers_satchell", "yang_zhang"),
    window: int | None = None,
) -> pd.DataFrame:
    """Per-bar range-based variance estimates.

    Parameters
    ----------
    bars : canonical bars (ts = bar close, symbol, open, high, low, close), any row order.
    estimators : any of "parkinson", "garman_klass", "rogers_satchell", "yang_zhang".
    window : bars in the rolling Yang-Zhang window (>= 2); ``None`` uses 20. The first
        ``window - 1`` bars of each symbol (and windows without a previous close) are NaN. The
        overnight return of a bar is its open over the previous bar's close of the same symbol.

    Returns
    -------
    DataFrame with ts, symbol and one ``*_var`` column per estimator (``parkinson_var``, ``gk_var``,
    ``rs_var``, ``yz_var``), sorted by symbol then ts, variances per bar.
    """
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown or not estimators:
        raise ValueError(
            f"The 'estimators' parameter must be a non-empty subset of {sorted(ESTIMATORS)}. "
            f"Got {list(estimators)!r} instead."
        )
    n_win = _DEFAULT_YZ_WINDOW if window is None else window
    if not isinstance(n_win, int | np.integer) or n_win < 2:
        raise ValueError(f"The 'window' parameter must be an integer >= 2. Got {window!r} instead.")
    frame = bars.sort_values([SYMBOL, TS], kind="stable").reset_index(drop=True)
    o, h, lo, c = _ohlc(frame)
    lhl = np.log(h / lo)
    lco = np.log(c / o)
    rs = np.log(h / c) * np.log(h / o) + np.log(lo / c) * np.log(lo / o)
    out = pd.DataFrame({TS: frame[TS].array, SYMBOL: frame[SYMBOL].array})
    if "parkinson" in estimators:
        out["parkinson_var"] = lhl**2 / (4.0 * math.log(2.0))
    if "garman_klass" in estimators:
        out["gk_var"] = 0.5 * lhl**2 - (2.0 * math.log(2.0) - 1.0) * lco**2
    if "rogers_satchell" in estimators:
        out["rs_var"] = rs
    if "yang_zhang" in estimators:
        sym = frame[SYMBOL]
        prev_c = pd.Series(c).groupby(sym.to_numpy()).shift(1).to_numpy()
        overnight = np.log(o) - np.log(prev_c)  # NaN on each symbol's first bar
        k = 0.34 / (1.34 + (n_win + 1.0) / (n_win - 1.0))
        g = pd.DataFrame({"on": overnight, "oc": lco, "rs": rs}).groupby(sym.to_numpy(), sort=False)
        roll = g.rolling(n_win, min_periods=n_win)
        var_on = roll["on"].var(ddof=1).reset_index(level=0, drop=True).sort_index()
        var_oc = roll["oc"].var(ddof=1).reset_index(level=0, drop=True).sort_index()
        mean_rs = roll["rs"].mean().reset_index(level=0, drop=True).sort_index()
        out["yz_var"] = (var_on + k * var_oc + (1.0 - k) * mean_rs).to_numpy()
    return out


def aggregate_bars(bars: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Aggregate bars to a coarser fixed duration ``rule`` ("5min", "1h", "1D").

    Bars are stamped by their close, so coarse bars are right-closed ``(E - rule, E]`` and stamped
    by ``E`` (aligned to the UTC epoch): open = first open, high = max, low = min, close = last
    close, and volume-like columns (volume, quote_volume, trade_count, taker_buy_volume) summed.
    Equals ``resample(rule, closed="right", label="right")`` per symbol, without empty bars.
    """
    try:
        step = pd.Timedelta(rule)
    except (ValueError, TypeError):
        step = None
    if step is None or pd.isna(step) or step.value <= 0:
        raise ValueError(
            f"The 'rule' parameter must be a positive fixed duration such as '1h'. Got {rule!r} instead."
        )
    frame = bars.sort_values([SYMBOL, TS], kind="stable").reset_index(drop=True)
    _ohlc(frame)
    if frame[TS].isna().any():
        raise DataError("bars have a missing timestamp; expected UTC bar close times", column=TS)
    t = frame[TS].array.as_unit("ns").asi8
    s = step.value
    key_end = -((-t) // s) * s
    codes, names = pd.factorize(frame[SYMBOL])
    new = np.ones(len(frame), dtype=bool)
    if len(frame):
        new[1:] = (codes[1:] != codes[:-1]) | (key_end[1:] != key_end[:-1])
    starts = np.flatnonzero(new)
    if len(frame) == 0:
        return frame.iloc[:0].copy()
    last = np.append(starts[1:], len(frame)) - 1
    out = {
        TS: pd.DatetimeIndex(key_end[starts].astype("datetime64[ns]"), tz="UTC"),
        SYMBOL: pd.array(np.asarray(names, dtype=object)[codes[starts]], dtype="str"),
        OPEN: frame[OPEN].to_numpy(dtype=np.float64)[starts],
        HIGH: np.maximum.reduceat(frame[HIGH].to_numpy(dtype=np.float64), starts),
        LOW: np.minimum.reduceat(frame[LOW].to_numpy(dtype=np.float64), starts),
        CLOSE: frame[CLOSE].to_numpy(dtype=np.float64)[last],
    }
    for col in _SUM_COLUMNS:
        if col in frame.columns:
            out[col] = np.add.reduceat(frame[col].to_numpy(dtype=np.float64), starts)
    return pd.DataFrame(out)
