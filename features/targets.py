"""Forward targets: the ONLY module of DPRM that looks into the future.

A row at time ``t`` (the close of a bar) holds features known at ``t``; the targets on the same row are
computed from bars strictly after ``t``: the per-period average of a realized measure over
``t+1 .. t+h``. A target is missing (NaN) when any of those bars is missing, invalid (e.g. under 85%
of its sampling grid observed) or beyond the data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import schema as S


def target_name(value_col: str, h: int) -> str:
    """Column name of the h-period forward target of ``value_col`` (e.g. ``target_rv_var_h5``)."""
    return f"target_{value_col}_h{h}"


def forward_mean(
    frame: pd.DataFrame,
    value_col: str,
    horizons: tuple[int, ...] = (1, 5, 22),
    *,
    valid_col: str | None = "valid",
    interval: pd.Timedelta | None = None,
) -> pd.DataFrame:
    """Per-period average of ``value_col`` over the next ``h`` rows of each symbol.

    Parameters
    ----------
    frame : long frame with ``ts``, ``symbol`` and ``value_col``, one row per symbol and period.
    value_col : the measure to average (e.g. ``rv_var``).
    horizons : the h values, in periods.
    valid_col : boolean column marking usable periods; an invalid period inside the window makes the
        target NaN (never filled). Ignored when absent.
    interval : if given, the next h rows must be exactly ``k x interval`` after ``t`` (k = 1..h), so
        a missing period makes the target NaN; if None, rows are consecutive trading periods.

    Returns
    -------
    DataFrame aligned with ``frame`` (same index) with one column per horizon
    (:func:`target_name`) plus ``target_end_<h>`` timestamps of the last target period.
    """
    if any(h < 1 for h in horizons):
        raise ValueError(f"The 'horizons' parameter must contain integers >= 1. Got {horizons} instead.")
    out = pd.DataFrame(index=frame.index)
    order = frame.sort_values([S.SYMBOL, S.TS], kind="stable").index
    f = frame.loc[order]
    vals = f[value_col].to_numpy(dtype="float64", na_value=np.nan)
    if valid_col is not None and valid_col in f.columns:
        vals = np.where(f[valid_col].to_numpy(dtype=bool), vals, np.nan)
    ts = S.ts_ns(f[S.TS])
    sym = f[S.SYMBOL].to_numpy()
    n = len(f)
    # boundaries of symbol groups
    starts = np.flatnonzero(np.r_[True, sym[1:] != sym[:-1]])
    ends = np.r_[starts[1:], n]
    for h in horizons:
        res = np.full(n, np.nan)
        end_ts = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        for a, b in zip(starts, ends, strict=True):
            v = vals[a:b]
            m = len(v)
            if m <= h:
                continue
            # windows v[i+1 .. i+h] for i = 0 .. m-h-1
            c = np.concatenate([[0.0], np.cumsum(np.nan_to_num(v))])
            bad = np.concatenate([[0], np.cumsum(np.isnan(v))])
            i = np.arange(m - h)
            s = c[i + h + 1] - c[i + 1]
            nbad = bad[i + h + 1] - bad[i + 1]
            r = np.where(nbad == 0, s / h, np.nan)
            if interval is not None:
                t = ts[a:b]
                spacing_ok = (t[i + h] - t[i]) == h * interval.value
                r = np.where(spacing_ok, r, np.nan)
            res[a + i] = r
            end_ts[a + i] = ts[a:b][i + h]
        out.loc[order, target_name(value_col, h)] = res
        # int64 min is NaT in datetime64
        out.loc[order, f"target_end_{h}"] = pd.to_datetime(end_ts.view("datetime64[ns]"), utc=True)
    return out
