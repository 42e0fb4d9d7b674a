"""Forward targets: the ONLY module of DPRM that looks into the future.

A row at time ``t`` (the close of a bar) holds features known at ``t``; the targets on the same row are
computed from bars strictly after ``t``: the per-period average of a realized measure over
``t+1 .. t+h``. A target is missing (NaN) when any of those bars is missing, invalid (e.g. under 85%
of its sampling grid observed) or beyond the data.

:func:`forward_close_to_close` gives the target a margin model must cover: the close-to-close log
return from ``t`` to ``t+h`` and its square as a per-period average (``r^2 / h``, the same units as
the realized-variance target, so ``mean(r^2/h) / mean(forecast)`` is a variance scale).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import schema as S
from features.errors import DataError
from features.symbols import CALENDARS, symbol_meta

C2C_VAR = "c2c_var"
"""Value name of the close-to-close target: ``target_c2c_var_h<h>`` = r_h^2 / h (per period)."""
C2C_RET = "c2c_ret"
"""Value name of the cumulative h-period close-to-close log return ``target_c2c_ret_h<h>``."""


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


def _gap_free(t_ns: np.ndarray, h: int, cal_name: str, interval: pd.Timedelta | None,
              max_skipped_sessions: int) -> np.ndarray:
    """For rows 0..m-h-1 of one symbol: True when rows i..i+h are consecutive periods."""
    m = len(t_ns)
    i = np.arange(m - h)
    cal = CALENDARS[cal_name]
    if not cal.weekdays_only:
        if interval is None:
            steps = np.diff(t_ns)
            if len(steps) == 0:
                return np.zeros(len(i), dtype=bool)
            step = int(np.median(steps))  # the modal spacing of a regular 24/7 series
        else:
            step = interval.value
        return (t_ns[i + h] - t_ns[i]) == h * step
    # exchange sessions: a step may skip weekends and at most ``max_skipped_sessions`` weekdays
    local = pd.DatetimeIndex(t_ns.view("datetime64[ns]"), tz="UTC").tz_convert(cal.tz)
    days = local.tz_localize(None).normalize().to_numpy().astype("datetime64[D]")
    bd = np.busday_count(days[:-1], days[1:])  # weekdays in [d_k, d_k+1): 1 when consecutive
    ok_step = (bd >= 1) & (bd <= 1 + max_skipped_sessions)
    bad = np.concatenate([[0], np.cumsum(~ok_step)])
    return (bad[i + h] - bad[i]) == 0


def forward_close_to_close(
    frame: pd.DataFrame,
    horizons: tuple[int, ...] = (1, 2, 5),
    *,
    close_col: str = S.CLOSE,
    calendar: str | None = None,
    interval: pd.Timedelta | None = None,
    max_skipped_sessions: int = 1,
) -> pd.DataFrame:
    """Forward close-to-close targets: the log return from ``t`` to ``t+h`` and its per-period square.

    For the row of symbol ``s`` at ``t`` (a bar's close) and horizon ``h``:

    - ``target_c2c_ret_h<h>`` = ``log(C_{t+h} / C_t)``, the cumulative log return over ``h`` periods;
    - ``target_c2c_var_h<h>`` = ``log(C_{t+h} / C_t)^2 / h``, a per-period average like the
      realized-variance target of :func:`forward_mean` (the units of ``VolForecast.variance``).

    Calendar check: both are NaN when the ``h`` rows after ``t`` are not ``h`` consecutive periods
    (a gap), when a close is NaN, or beyond the data. On a 24/7 calendar consecutive means exactly
    ``k x interval`` after ``t`` (``interval`` None = the symbol's median spacing); on an exchange
    calendar (weekdays only) rows are sessions and a step between rows may skip weekends and at
    most ``max_skipped_sessions`` weekdays (holidays: there is no holiday calendar, so a step
    skipping more weekdays counts as a gap).

    Parameters
    ----------
    frame : long frame with ``ts``, ``symbol`` and ``close_col``, one row per symbol and period.
    horizons : the h values, in periods (ints >= 1).
    close_col : the close price column (> 0 where present).
    calendar : a :data:`features.symbols.CALENDARS` name for every symbol; None = each symbol's own
        (:func:`features.symbols.symbol_meta`).
    interval : the period length of 24/7 data; ignored on exchange calendars.
    max_skipped_sessions : weekdays (holidays) a step between sessions may skip.

    Returns
    -------
    DataFrame aligned with ``frame`` (same index), columns ``target_c2c_ret_h<h>`` and
    ``target_c2c_var_h<h>`` for each h.
    """
    if not horizons or any(
        not isinstance(h, int | np.integer) or isinstance(h, bool) or h < 1 for h in horizons
    ):
        raise ValueError(f"The 'horizons' parameter must contain integers >= 1. Got {horizons} instead.")
    if calendar is not None and calendar not in CALENDARS:
        raise ValueError(
            f"The 'calendar' parameter must be one of {sorted(CALENDARS)}. Got {calendar!r} instead."
        )
    if not isinstance(max_skipped_sessions, int | np.integer) or max_skipped_sessions < 0:
        raise ValueError(
            "The 'max_skipped_sessions' parameter must be an integer >= 0. "
            f"Got {max_skipped_sessions!r} instead."
        )
    for col in (S.TS, S.SYMBOL, close_col):
        if col not in frame.columns:
            raise DataError(f"missing column; have {sorted(map(str, frame.columns))}", column=col)
    order = frame.sort_values([S.SYMBOL, S.TS], kind="stable").index
    f = frame.loc[order]
    px = pd.to_numeric(f[close_col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = ~np.isnan(px) & ~(np.isfinite(px) & (px > 0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"close prices must be finite and > 0; got {float(px[k])!r} for {f[S.SYMBOL].iloc[k]} at "
            f"{f[S.TS].iloc[k]} ({int(bad.sum())} bad row(s) of {len(px)})",
            column=close_col,
        )
    lpx = np.log(px)
    ts = S.ts_ns(f[S.TS])
    sym = f[S.SYMBOL].to_numpy()
    n = len(f)
    starts = np.flatnonzero(np.r_[True, sym[1:] != sym[:-1]]) if n else np.empty(0, dtype=int)
    ends = np.r_[starts[1:], n]
    out = pd.DataFrame(index=frame.index)
    for h in horizons:
        h = int(h)
        ret = np.full(n, np.nan)
        for a, b in zip(starts, ends, strict=True):
            m = b - a
            if m <= h:
                continue
            t = ts[a:b]
            if (np.diff(t) <= 0).any():
                k = int(np.flatnonzero(np.diff(t) <= 0)[0])
                raise DataError(
                    f"timestamps of {sym[a]} must be unique; {pd.Timestamp(t[k + 1], tz='UTC')} "
                    "appears twice",
                    column=S.TS,
                )
            cal_name = calendar or symbol_meta(str(sym[a])).calendar
            ok = _gap_free(t, h, cal_name, interval, int(max_skipped_sessions))
            lp = lpx[a:b]
            i = np.arange(m - h)
            ret[a + i] = np.where(ok, lp[i + h] - lp[i], np.nan)
        out.loc[order, target_name(C2C_RET, h)] = ret
        out.loc[order, target_name(C2C_VAR, h)] = ret**2 / h
    return out
