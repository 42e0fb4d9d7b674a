"""Context features joined onto a primary feature frame without look-ahead.

A *primary* frame is long, one row per ``(symbol, ts)`` (e.g. daily realized measures stamped at
the close of the UTC day). A *context* frame holds other information about the same instruments,
possibly at another frequency and under other symbol names (funding of ``BTCUSDT-PERP``, the DVOL
index ``BTC-DVOL``, intraday bars). :func:`asof_context` attaches to every primary row the **last**
context row stamped at or before the primary ``ts`` (never a later one), with prefixed column names.

:func:`intraday_recency` turns intraday bars into daily features: the realized variance of the last
``k`` hours before each daily close (the "recency" of the day's variance, which a daily RV averages
away). Both functions only read rows stamped at or before each output row's ``ts``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from features.schema import CLOSE, SYMBOL, TS, TS_DTYPE, to_utc_ns

RECENCY_RV = "rv_last{k}h_var"
"""Column pattern of :func:`intraday_recency`: realized variance of the last ``k`` hours."""
RECENCY_N = "n_last{k}h"
"""Column pattern of :func:`intraday_recency`: number of returns in the last ``k`` hours."""


def _utc(col: pd.Series, name: str) -> pd.Series:
    if str(col.dtype) == TS_DTYPE:
        return col
    try:
        return to_utc_ns(col)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name}.{TS} must hold UTC timestamps; got dtype {col.dtype}: {exc}"
        ) from None


def _need(frame: pd.DataFrame, name: str, cols: Sequence[str]) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; got columns {list(frame.columns)}")


def asof_context(
    primary: pd.DataFrame,
    context: pd.DataFrame,
    *,
    symbol_map: Mapping[str, str] | None = None,
    prefix: str,
    tolerance: str | pd.Timedelta | None = None,
) -> pd.DataFrame:
    """Join the last context row at or before each primary row (per symbol), prefixing its columns.

    Parameters
    ----------
    primary : long frame with ``ts`` (UTC) and ``symbol``; every other column is kept as is.
    context : long frame with ``ts``, ``symbol`` and the feature columns to attach (all columns
        except ``ts``/``symbol``).
    symbol_map : context symbol -> primary symbol (e.g. ``{"BTCUSDT-PERP": "BTCUSDT"}``); context
        symbols not in the map keep their name. Two context symbols mapped onto one primary symbol
        raise.
    prefix : prepended to every attached column (``"fund_"`` -> ``fund_funding_rate``); must not
        be empty, so attached columns never collide silently with primary ones.
    tolerance : the context row must be at most this old (``"2D"``); None = any age.

    Returns
    -------
    ``primary`` (same rows, same order, same index) with the prefixed context columns; NaN where no
    context row is at or before the primary ``ts`` (or within ``tolerance``), or the symbol has no
    context.
    """
    _need(primary, "primary", [TS, SYMBOL])
    _need(context, "context", [TS, SYMBOL])
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty string; got {prefix!r}")
    tol = None
    if tolerance is not None:
        tol = pd.Timedelta(tolerance)
        if tol < pd.Timedelta(0):
            raise ValueError(f"tolerance must be a non-negative duration; got {tolerance!r}")
    value_cols = [c for c in context.columns if c not in (TS, SYMBOL)]
    if not value_cols:
        raise ValueError("context has no feature column besides ts and symbol")
    clash = [prefix + c for c in value_cols if prefix + c in primary.columns]
    if clash:
        raise ValueError(
            f"primary already has column(s) {clash}; choose another prefix than {prefix!r}"
        )
    ctx = context[[TS, SYMBOL, *value_cols]].copy()
    ctx[TS] = _utc(ctx[TS], "context")
    ctx[SYMBOL] = ctx[SYMBOL].astype("str")
    if symbol_map:
        mapped = ctx[SYMBOL].map(lambda s: symbol_map.get(s, s))
        pairs = pd.DataFrame({"src": ctx[SYMBOL], "dst": mapped}).drop_duplicates()
        dup = pairs["dst"].duplicated(keep=False)
        if dup.any():
            bad = pairs[dup].sort_values("dst")
            raise ValueError(
                "symbol_map maps several context symbols onto one primary symbol: "
                f"{dict(zip(bad['src'], bad['dst'], strict=True))}"
            )
        ctx[SYMBOL] = mapped.astype("str")
    if ctx[[TS, SYMBOL]].duplicated().any():
        row = ctx[ctx[[TS, SYMBOL]].duplicated()].iloc[0]
        raise ValueError(
            f"context has duplicate rows for symbol {row[SYMBOL]!r} at ts {row[TS]}; expected one "
            "row per (symbol, ts)"
        )
    ctx = ctx.rename(columns={c: prefix + c for c in value_cols})
    left = pd.DataFrame(
        {
            TS: _utc(primary[TS], "primary").reset_index(drop=True),
            SYMBOL: primary[SYMBOL].astype("str").to_numpy(),
        }
    )
    left["_row"] = np.arange(len(left))
    left = left.sort_values(TS, kind="stable")
    ctx = ctx.sort_values(TS, kind="stable")
    joined = pd.merge_asof(
        left,
        ctx,
        on=TS,
        by=SYMBOL,
        direction="backward",
        allow_exact_matches=True,
        tolerance=tol,
    ).sort_values("_row")
    out = primary.copy()
    for c in value_cols:
        out[prefix + c] = joined[prefix + c].to_numpy()
    return out


def intraday_recency(
    bars: pd.DataFrame,
    day_close_ts: pd.DataFrame | pd.DatetimeIndex | pd.Series,
    hours: Sequence[int] = (1, 4, 12),
    *,
    min_coverage: float = 0.8,
) -> pd.DataFrame:
    """Realized variance of the last ``k`` hours before each daily close, from intraday closes.

    Parameters
    ----------
    bars : intraday bars ``ts`` (the bar's close, UTC), ``symbol``, ``close`` (> 0) of one fixed bar
        length per symbol (1 minute, 5 minutes, 1 hour); the bar length is the most common spacing.
    day_close_ts : the output rows: a frame with ``ts``, ``symbol`` (e.g. the daily primary frame),
        or timestamps (every symbol of ``bars`` at every timestamp).
    hours : window lengths ``k`` in hours (ints >= 1, each a multiple of the bar length).
    min_coverage : share of the ``k`` hours' returns that must be observed; NaN below it.

    Returns
    -------
    Frame ``symbol, ts`` (the output rows in the order given) with, per ``k``,
    ``rv_last{k}h_var`` = sum of squared log returns ``ln(close_i / close_{i-1})`` of the bars whose
    close is in ``(ts - k h, ts]`` and whose previous bar closed exactly one bar length earlier, and
    ``n_last{k}h`` = the number of such returns. Only bars stamped at or before ``ts`` are read.
    """
    _need(bars, "bars", [TS, SYMBOL, CLOSE])
    hs = [int(k) for k in hours]
    if not hs or any(isinstance(k, bool) or k < 1 for k in hours) or len(set(hs)) != len(hs):
        raise ValueError(f"hours must be distinct ints >= 1; got {list(hours)!r}")
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must be in (0, 1]; got {min_coverage!r}")
    if isinstance(day_close_ts, pd.DataFrame):
        _need(day_close_ts, "day_close_ts", [TS, SYMBOL])
        rows = pd.DataFrame(
            {
                SYMBOL: day_close_ts[SYMBOL].astype("str").to_numpy(),
                TS: _utc(day_close_ts[TS], "day_close_ts").reset_index(drop=True),
            }
        )
    else:
        idx = pd.DatetimeIndex(_utc(pd.Series(day_close_ts), "day_close_ts"))
        syms = sorted(bars[SYMBOL].astype("str").unique())
        rows = pd.DataFrame({SYMBOL: np.repeat(syms, len(idx)), TS: np.tile(idx.asi8, len(syms))})
        rows[TS] = pd.to_datetime(rows[TS], unit="ns", utc=True).astype(TS_DTYPE)
    b = pd.DataFrame(
        {
            TS: _utc(bars[TS], "bars").reset_index(drop=True),
            SYMBOL: bars[SYMBOL].astype("str").to_numpy(),
            CLOSE: pd.to_numeric(bars[CLOSE]).to_numpy(dtype="float64"),
        }
    )
    bad = ~np.isfinite(b[CLOSE].to_numpy()) | (b[CLOSE].to_numpy() <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"bars.{CLOSE} must be finite and > 0; got {b[CLOSE].iloc[i]!r} at ts {b[TS].iloc[i]} "
            f"({int(bad.sum())} bad row(s))"
        )
    out = {RECENCY_RV.format(k=k): np.full(len(rows), np.nan) for k in hs}
    out |= {RECENCY_N.format(k=k): np.zeros(len(rows), dtype="int64") for k in hs}
    for sym, g in b.groupby(SYMBOL, sort=True):
        g = g.sort_values(TS, kind="stable")
        t = pd.DatetimeIndex(g[TS]).asi8
        if len(t) < 2:
            continue
        if (np.diff(t) == 0).any():
            raise ValueError(f"bars of symbol {sym!r} have duplicate ts; expected one bar per ts")
        step = int(pd.Series(np.diff(t)).mode().iloc[0])
        lc = np.log(g[CLOSE].to_numpy())
        ok = np.zeros(len(t), dtype=bool)
        ok[1:] = np.diff(t) == step
        r2 = np.zeros(len(t))
        r2[1:] = np.diff(lc) ** 2
        r2[~ok] = 0.0
        c_r2 = np.concatenate([[0.0], np.cumsum(r2)])
        c_n = np.concatenate([[0], np.cumsum(ok)])
        sel = np.flatnonzero(rows[SYMBOL].to_numpy() == sym)
        if sel.size == 0:
            continue
        at = pd.DatetimeIndex(rows[TS]).asi8[sel]
        hi = np.searchsorted(t, at, side="right")  # bars with close <= ts
        for k in hs:
            span = k * 3_600_000_000_000
            if span % step:
                raise ValueError(
                    f"hours={k} is not a multiple of the bar length {pd.Timedelta(step, 'ns')} "
                    f"of symbol {sym!r}"
                )
            lo = np.searchsorted(t, at - span, side="right")  # bars with close > ts - k h
            n = c_n[hi] - c_n[lo]
            rv = c_r2[hi] - c_r2[lo]
            need = min_coverage * (span // step)
            out[RECENCY_N.format(k=k)][sel] = n
            out[RECENCY_RV.format(k=k)][sel] = np.where(n >= need, rv, np.nan)
    return pd.DataFrame(
        {SYMBOL: rows[SYMBOL].to_numpy(), TS: rows[TS].reset_index(drop=True), **out}
    )
