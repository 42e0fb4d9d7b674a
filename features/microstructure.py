"""Microstructure and liquidity features from canonical trades, quotes, books and bars.

Every public builder returns a **long-format feature frame**: one row per ``(symbol, ts)`` where
``ts`` is the CLOSE of an aggregation bar (``bar="5min"``, ``"1h"``, ``"1D"``), columns
``symbol, ts`` first, then feature columns whose names carry their units.

Bar convention
--------------
Bars are **right-closed and right-labelled**: the bar labelled ``T`` covers the interval
``(T - bar, T]``, so an event stamped exactly 10:05:00 belongs to the 5-minute bar closing 10:05:00
(the same bins as ``resample(bar, closed="right", label="right")``). Bar closes are aligned to UTC
midnight, so ``bar`` must divide one day (``"1s"`` .. ``"1D"``). A feature at ``T`` uses only data
with timestamps ``<= T``. The bar grid of each symbol runs from the bar holding its first event to
the bar holding its last; bars with no event are kept and get defined values (counts 0, sums 0,
averages NaN, state carried from the last event before the bar where the feature is a state).

Units
-----
``*_bps`` basis points (1e-4), ``*_var`` a variance in squared log-return units of the bar,
``*_base`` base-asset units (contracts for inverse contracts), ``*_notional`` quote-currency units
(``px * sz``), ``*_per_s`` per second, ``*_ann`` annualized.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from features.schema import (
    ASK_PX,
    ASK_SZ,
    BID_PX,
    BID_SZ,
    CLOSE,
    EXPIRY,
    FUNDING_RATE,
    HIGH,
    LEVEL,
    LOW,
    MARK_IV,
    MARK_PX,
    OPEN,
    OPTION_TYPE,
    PRICE,
    PX,
    QUOTE_VOLUME,
    RV,
    SIDE,
    SIZE,
    STRIKE,
    SYMBOL,
    SZ,
    TAKER_BUY_VOLUME,
    TRADE_COUNT,
    TS,
    TS_DTYPE,
    UNDERLYING,
    UNDERLYING_PX,
    VOLUME,
    DataError,
    to_utc_ns,
)
from features.symbols import symbol_meta

__all__ = [
    "BPS",
    "DEPTH_LEVELS",
    "atm_implied_variance",
    "bar_closes",
    "bar_liquidity",
    "book_features",
    "book_snapshot_features",
    "derivatives_features",
    "effective_spread",
    "implied_vol_features",
    "order_flow_imbalance",
    "quote_features",
    "trade_effective_spreads",
    "trade_features",
    "wap",
]

BPS = 1e4
"""Basis points per unit of a relative quantity."""

DEPTH_LEVELS: tuple[int, ...] = (1, 5, 10)
"""Book depth horizons (number of price levels from the best) used by :func:`book_features`."""

_DAY = pd.Timedelta("1D")
_NS_PER_S = 1_000_000_000


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _bar_step(bar: str | pd.Timedelta, name: str = "bar") -> int:
    """The bar length in nanoseconds; the bar must divide one day."""
    try:
        td = pd.Timedelta(bar)
    except (ValueError, TypeError):
        raise ValueError(
            f"The '{name}' parameter must be a fixed duration such as '5min', '1h' or '1D'. "
            f"Got {bar!r} instead."
        ) from None
    if td <= pd.Timedelta(0) or td > _DAY or _DAY.value % td.value != 0:
        raise ValueError(
            f"The '{name}' parameter must be a positive duration that divides one day "
            f"(e.g. '5min', '1h', '1D'). Got {bar!r} instead."
        )
    return int(td.value)


def _ceil_ns(t: np.ndarray, step: int) -> np.ndarray:
    """Ceil int64 epoch nanoseconds to multiples of ``step`` (right-closed bar closes)."""
    return -((-t) // step) * step


def bar_closes(ts: pd.Series | pd.DatetimeIndex, bar: str | pd.Timedelta) -> pd.DatetimeIndex:
    """The close of the right-closed bar holding each timestamp.

    Parameters
    ----------
    ts : UTC timestamps.
    bar : bar length dividing one day ("5min", "1h", "1D").

    Returns
    -------
    DatetimeIndex of the same length: ``ceil(ts, bar)``; an event exactly on a bar boundary belongs
    to the bar closing at that boundary.
    """
    step = _bar_step(bar)
    return _ns_to_ts(_ceil_ns(_ts_ns(pd.Series(ts)), step))


def _ts_ns(ts: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(ts).as_unit("ns").asi8.copy()


def _ns_to_ts(ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(
        pd.to_datetime(np.asarray(ns, dtype="int64"), unit="ns", utc=True)
    ).as_unit("ns")


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` with NaN where ``b`` is 0 or not finite (no warnings)."""
    a = np.asarray(a, dtype="float64")
    b = np.asarray(b, dtype="float64")
    a, b = np.broadcast_arrays(a, b)
    out = np.full(a.shape, np.nan)
    ok = np.isfinite(b) & (b != 0)
    np.divide(a, b, out=out, where=ok)
    return out


def _as_utc(col: pd.Series, name: str, column: str) -> pd.Series:
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        out = col.dt.tz_convert("UTC")
    else:
        try:
            out = to_utc_ns(col)
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"{name} frame: cannot read timestamps as UTC times ({exc})", column=column
            ) from None
    out = pd.Series(pd.DatetimeIndex(out).as_unit("ns"), index=col.index)
    if out.isna().any():
        i = int(np.flatnonzero(out.isna().to_numpy())[0])
        raise DataError(
            f"{name} frame ({len(col)} rows) has a missing timestamp at row {i}; expected a UTC time",
            column=column,
        )
    return out


def _prepare(
    frame: pd.DataFrame,
    name: str,
    required: Sequence[str],
    optional: Sequence[str] = (),
    *,
    positive: Sequence[str] = (),
    non_negative: Sequence[str] = (),
    finite: Sequence[str] = (),
    time_cols: Sequence[str] = (TS,),
    sort: bool = True,
) -> pd.DataFrame:
    """Select, check and sort (by symbol then ts, stable) the columns a builder needs."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{name} frame is missing required column(s) {missing}; got columns {list(frame.columns)}",
            column=missing[0],
        )
    cols = list(required) + [c for c in optional if c in frame.columns and c not in required]
    out = frame[cols].reset_index(drop=True)
    for c in time_cols:
        if c in out.columns:
            out[c] = _as_utc(out[c], name, c)
    if SYMBOL in out.columns:
        out[SYMBOL] = out[SYMBOL].astype("str")
    n = len(out)
    checks = [(c, "finite and > 0", lambda v: np.isfinite(v) & (v > 0)) for c in positive]
    checks += [(c, "finite and >= 0", lambda v: np.isfinite(v) & (v >= 0)) for c in non_negative]
    checks += [(c, "finite", np.isfinite) for c in finite]
    for c, what, ok_fn in checks:
        if c not in out.columns:
            continue
        try:
            v = out[c].to_numpy(dtype="float64", na_value=np.nan)
        except (ValueError, TypeError):
            raise DataError(f"{name} frame column '{c}' is not numeric", column=c) from None
        ok = ok_fn(v)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise DataError(
                f"{name} frame ({n} rows) has {c}={float(v[i])!r} at row {i}; expected {what}",
                column=c,
            )
        out[c] = v
    if sort and n:
        order = np.lexsort((np.arange(n), _ts_ns(out[TS]), pd.factorize(out[SYMBOL], sort=True)[0]))
        out = out.iloc[order].reset_index(drop=True)
    return out


def _empty_features(columns: Sequence[str]) -> pd.DataFrame:
    data: dict[str, pd.Series] = {
        SYMBOL: pd.Series(dtype="str"),
        TS: pd.Series(dtype=TS_DTYPE),
    }
    for c in columns:
        data[c] = pd.Series(dtype="float64")
    return pd.DataFrame(data)


def _assemble(parts: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    if not parts:
        return _empty_features(columns)
    out = pd.concat(parts, ignore_index=True)
    out[TS] = out[TS].astype(TS_DTYPE)
    out[SYMBOL] = out[SYMBOL].astype("str")
    return out[[SYMBOL, TS, *columns]]


def _frame(symbol: str, closes_ns: np.ndarray, cols: Mapping[str, np.ndarray]) -> pd.DataFrame:
    data: dict[str, object] = {
        SYMBOL: pd.Series([symbol] * len(closes_ns), dtype="str"),
        TS: _ns_to_ts(closes_ns),
    }
    for k, v in cols.items():
        data[k] = np.asarray(v)
    return pd.DataFrame(data)


def _grid(t: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(bar closes covering the sorted times ``t``, bar index of each time)."""
    close = _ceil_ns(t, step)
    first = close[0]
    closes = np.arange(first, close[-1] + step, step, dtype="int64")
    return closes, ((close - first) // step).astype("int64")


def _symbol_groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    if frame.empty:
        return []
    return [(str(s), g) for s, g in frame.groupby(SYMBOL, sort=True)]


# ---------------------------------------------------------------------------------------------
# quotes
# ---------------------------------------------------------------------------------------------
def wap(
    bid_px: np.ndarray | pd.Series,
    bid_sz: np.ndarray | pd.Series,
    ask_px: np.ndarray | pd.Series,
    ask_sz: np.ndarray | pd.Series,
) -> np.ndarray:
    """Level-1 weighted average price ``(bid_px*ask_sz + ask_px*bid_sz) / (bid_sz + ask_sz)``.

    Each price is weighted by the size on the *opposite* side, so the WAP leans toward the side
    with less size (the side about to be consumed). Where both sizes are 0 the mid is returned.

    Returns
    -------
    array of shape (n,).
    """
    b = np.asarray(bid_px, dtype="float64")
    bs = np.asarray(bid_sz, dtype="float64")
    a = np.asarray(ask_px, dtype="float64")
    az = np.asarray(ask_sz, dtype="float64")
    tot = bs + az
    w = _div(b * az + a * bs, tot)
    return np.where(tot > 0, w, (a + b) / 2.0)


def order_flow_imbalance(
    bid_px: np.ndarray | pd.Series,
    bid_sz: np.ndarray | pd.Series,
    ask_px: np.ndarray | pd.Series,
    ask_sz: np.ndarray | pd.Series,
) -> np.ndarray:
    """Per-update order-flow imbalance ``e_n`` of Cont, Kukanov and Stoikov (2014).

    ``e_n = 1{Pb_n >= Pb_{n-1}} qb_n - 1{Pb_n <= Pb_{n-1}} qb_{n-1}
    - 1{Pa_n <= Pa_{n-1}} qa_n + 1{Pa_n >= Pa_{n-1}} qa_{n-1}``: bid-size added (or bid price
    improved) counts as buy pressure, ask-size added (or ask price lowered) as sell pressure.

    Returns
    -------
    array of shape (n,): ``e_0`` is NaN (no previous quote), then ``e_1 .. e_{n-1}`` in size units.
    """
    pb = np.asarray(bid_px, dtype="float64")
    qb = np.asarray(bid_sz, dtype="float64")
    pa = np.asarray(ask_px, dtype="float64")
    qa = np.asarray(ask_sz, dtype="float64")
    e = np.full(pb.shape, np.nan)
    if pb.size > 1:
        e[1:] = (
            (pb[1:] >= pb[:-1]) * qb[1:]
            - (pb[1:] <= pb[:-1]) * qb[:-1]
            - (pa[1:] <= pa[:-1]) * qa[1:]
            + (pa[1:] >= pa[:-1]) * qa[:-1]
        )
    return e


QUOTE_FEATURES = (
    "wap",
    "wap_rv_var",
    "spread_bps",
    "quote_updates",
    "quote_rate_per_s",
    "ofi",
    "depth1_tw_base",
    "ofi_norm",
    "crossed_locked_share",
)


def quote_features(quotes: pd.DataFrame, bar: str = "5min") -> pd.DataFrame:
    """Top-of-book features per bar from a canonical quotes table.

    Parameters
    ----------
    quotes : columns ``ts, symbol, bid_px, bid_sz, ask_px, ask_sz`` (one row per top-of-book update;
        rows with equal ``ts`` are applied in row order).
    bar : bar length dividing one day.

    Returns
    -------
    DataFrame with ``symbol, ts`` and

    - ``wap``: level-1 WAP of the last quote at or before ``ts`` (price units).
    - ``wap_rv_var``: sum of squared log changes of the WAP between consecutive updates, each change
      assigned to the bar of its later update (so the change from the previous bar's last quote to
      this bar's first is counted here and bar values add up over longer bars).
    - ``spread_bps``: time-weighted quoted spread ``(ask-bid)/mid`` in bps; each quote is in force
      from its ``ts`` until the next update, the quote prevailing at the bar open counts for the
      time until the bar's first update. Locked/crossed quotes enter with spread <= 0.
    - ``quote_updates`` (count) and ``quote_rate_per_s`` (updates per second of bar).
    - ``ofi``: sum over the bar's updates of the CKS (2014) imbalance :func:`order_flow_imbalance`
      (size units; the first update of a symbol has no predecessor and is skipped).
    - ``depth1_tw_base``: time-weighted average level-1 depth ``(bid_sz + ask_sz)/2``.
    - ``ofi_norm``: ``ofi / depth1_tw_base``, the CKS normalisation by average depth.
    - ``crossed_locked_share``: share of the bar's time with ``ask_px <= bid_px``.

    Time-weighted values are averages over the part of the bar after the symbol's first quote;
    they are NaN in a bar with no covered time.
    """
    step = _bar_step(bar)
    q = _prepare(
        quotes,
        "quotes",
        [TS, SYMBOL, BID_PX, BID_SZ, ASK_PX, ASK_SZ],
        positive=(BID_PX, ASK_PX),
        non_negative=(BID_SZ, ASK_SZ),
    )
    parts = []
    for sym, g in _symbol_groups(q):
        t = _ts_ns(g[TS])
        bid, bsz = g[BID_PX].to_numpy(), g[BID_SZ].to_numpy()
        ask, asz = g[ASK_PX].to_numpy(), g[ASK_SZ].to_numpy()
        closes, bi = _grid(t, step)
        nb = len(closes)
        w = wap(bid, bsz, ask, asz)
        lw = np.log(w)
        updates = np.bincount(bi, minlength=nb).astype("float64")
        rv = np.bincount(bi[1:], weights=np.diff(lw) ** 2, minlength=nb)
        e = order_flow_imbalance(bid, bsz, ask, asz)
        ofi = np.bincount(bi[1:], weights=e[1:], minlength=nb)
        last = np.searchsorted(t, closes, side="right") - 1
        mid = (bid + ask) / 2.0
        spread = (ask - bid) / mid * BPS
        depth = (bsz + asz) / 2.0
        crossed = (ask <= bid).astype("float64")
        tw = _time_weighted(t, closes, step, [spread, depth, crossed])
        spread_tw, depth_tw, crossed_tw = tw
        parts.append(
            _frame(
                sym,
                closes,
                {
                    "wap": w[last],
                    "wap_rv_var": rv,
                    "spread_bps": spread_tw,
                    "quote_updates": updates,
                    "quote_rate_per_s": updates / (step / _NS_PER_S),
                    "ofi": ofi,
                    "depth1_tw_base": depth_tw,
                    "ofi_norm": _div(ofi, depth_tw),
                    "crossed_locked_share": crossed_tw,
                },
            )
        )
    return _assemble(parts, QUOTE_FEATURES)


def _time_weighted(
    t: np.ndarray, closes: np.ndarray, step: int, values: list[np.ndarray]
) -> list[np.ndarray]:
    """Time-weighted bar averages of piecewise-constant states set at times ``t`` (sorted)."""
    nb = len(closes)
    pts = np.union1d(t, closes)
    pts = pts[pts >= t[0]]
    if pts.size < 2:
        return [np.full(nb, np.nan) for _ in values]
    start, end = pts[:-1], pts[1:]
    dur = (end - start).astype("float64")
    state = np.searchsorted(t, start, side="right") - 1
    seg_bar = (_ceil_ns(end, step) - closes[0]) // step
    cover = np.bincount(seg_bar, weights=dur, minlength=nb)
    return [_div(np.bincount(seg_bar, weights=dur * v[state], minlength=nb), cover) for v in values]


# ---------------------------------------------------------------------------------------------
# books
# ---------------------------------------------------------------------------------------------
def _book_feature_names(levels: Sequence[int]) -> list[str]:
    names = []
    for k in levels:
        names += [
            f"bid_depth{k}_base",
            f"ask_depth{k}_base",
            f"bid_depth{k}_notional",
            f"ask_depth{k}_notional",
            f"depth_imbalance{k}",
            f"wap{k}",
        ]
    return names


def book_snapshot_features(
    book: pd.DataFrame, levels: Sequence[int] = DEPTH_LEVELS
) -> pd.DataFrame:
    """Depth, depth imbalance and multi-level WAP of every book snapshot.

    Parameters
    ----------
    book : canonical book rows ``ts, symbol, side (+1 bid, -1 ask), level (0 = best), px, sz``;
        one snapshot is all rows of a symbol sharing ``ts``.
    levels : depth horizons ``k`` (levels ``0 .. k-1`` of each side are summed; a side with fewer
        levels contributes what it has).

    Returns
    -------
    DataFrame, one row per snapshot, with ``symbol, ts`` and for each ``k``:
    ``bid_depth{k}_base``/``ask_depth{k}_base`` (sum of ``sz``), ``*_notional`` (sum of
    ``px*sz``), ``depth_imbalance{k} = (bid - ask)/(bid + ask)`` of base depth (NaN when both are
    0) and ``wap{k} = (bid_vwap*ask_depth + ask_vwap*bid_depth)/(bid_depth + ask_depth)`` where
    ``*_vwap`` is the size-weighted price of the side's first ``k`` levels (``wap1`` is the
    level-1 WAP; NaN when a side is empty).
    """
    levels = _check_levels(levels)
    b = _prepare(
        book,
        "book",
        [TS, SYMBOL, SIDE, LEVEL, PX, SZ],
        positive=(PX,),
        non_negative=(SZ,),
        finite=(LEVEL, SIDE),
    )
    names = _book_feature_names(levels)
    if b.empty:
        return _empty_features(names)
    side = b[SIDE].to_numpy()
    bad = ~np.isin(side, (1, -1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"book frame ({len(b)} rows) has side={float(side[i])!r} at row {i}; expected +1 (bid) or -1 (ask)",
            column=SIDE,
        )
    lvl = b[LEVEL].to_numpy()
    px, sz = b[PX].to_numpy(), b[SZ].to_numpy()
    cols: dict[str, np.ndarray] = {SYMBOL: b[SYMBOL].to_numpy(), TS: _ts_ns(b[TS])}
    for k in levels:
        m = lvl < k
        for s, tag in ((1, "bid"), (-1, "ask")):
            sel = m & (side == s)
            cols[f"{tag}_depth{k}_base"] = np.where(sel, sz, 0.0)
            cols[f"{tag}_depth{k}_notional"] = np.where(sel, px * sz, 0.0)
    tmp = pd.DataFrame(cols)
    agg = tmp.groupby([SYMBOL, TS], sort=True).sum()
    out = pd.DataFrame(index=agg.index)
    for k in levels:
        bd, ad = agg[f"bid_depth{k}_base"].to_numpy(), agg[f"ask_depth{k}_base"].to_numpy()
        bn, an = agg[f"bid_depth{k}_notional"].to_numpy(), agg[f"ask_depth{k}_notional"].to_numpy()
        out[f"bid_depth{k}_base"] = bd
        out[f"ask_depth{k}_base"] = ad
        out[f"bid_depth{k}_notional"] = bn
        out[f"ask_depth{k}_notional"] = an
        out[f"depth_imbalance{k}"] = _div(bd - ad, bd + ad)
        bv, av = _div(bn, bd), _div(an, ad)
        out[f"wap{k}"] = _div(bv * ad + av * bd, bd + ad)
    out = out.reset_index()
    out[TS] = _ns_to_ts(out[TS].to_numpy())
    out[SYMBOL] = out[SYMBOL].astype("str")
    return out[[SYMBOL, TS, *names]]


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    levels = tuple(levels)
    if not levels or any(int(k) != k or k < 1 for k in levels):
        raise ValueError(
            f"The 'levels' parameter must be a non-empty sequence of integers >= 1. Got {levels!r} instead."
        )
    return tuple(int(k) for k in levels)


def book_features(
    book: pd.DataFrame,
    bar: str = "5min",
    levels: Sequence[int] = DEPTH_LEVELS,
    how: Literal["mean", "last"] = "mean",
) -> pd.DataFrame:
    """Book depth features per bar: the snapshot features of :func:`book_snapshot_features`
    averaged over the snapshots in each bar (``how="mean"``) or taken from the bar's last snapshot
    (``how="last"``), with ``n_snapshots``. Bars without a snapshot have NaN features.

    Parameters
    ----------
    book : canonical book rows (see :func:`book_snapshot_features`).
    bar : bar length dividing one day.
    levels : depth horizons.
    how : "mean" (equal weight per snapshot) or "last".
    """
    step = _bar_step(bar)
    if how not in ("mean", "last"):
        raise ValueError(f"The 'how' parameter must be 'mean' or 'last'. Got {how!r} instead.")
    snap = book_snapshot_features(book, levels)
    names = _book_feature_names(_check_levels(levels))
    cols = ["n_snapshots", *names]
    parts = []
    for sym, g in _symbol_groups(snap):
        t = _ts_ns(g[TS])
        closes, bi = _grid(t, step)
        nb = len(closes)
        n = np.bincount(bi, minlength=nb).astype("float64")
        feats: dict[str, np.ndarray] = {"n_snapshots": n}
        last = np.searchsorted(t, closes, side="right") - 1
        has = n > 0
        for c in names:
            v = g[c].to_numpy()
            if how == "mean":
                ok = np.isfinite(v)
                feats[c] = _div(
                    np.bincount(bi[ok], weights=v[ok], minlength=nb),
                    np.bincount(bi[ok], minlength=nb),
                )
            else:
                feats[c] = np.where(has, v[last], np.nan)
        parts.append(_frame(sym, closes, feats))
    return _assemble(parts, cols)


# ---------------------------------------------------------------------------------------------
# trades
# ---------------------------------------------------------------------------------------------
def trade_effective_spreads(
    trades: pd.DataFrame,
    quotes: pd.DataFrame,
    *,
    allow_exact_matches: bool = True,
    realized_delay: str | pd.Timedelta | None = "5s",
) -> pd.DataFrame:
    """Per-trade effective (and realized) spread against the prevailing quote.

    The prevailing quote of a trade at time ``t`` is the last quote of the same symbol with
    ``ts <= t`` (``allow_exact_matches=True``; rows with equal ``ts`` are taken in row order, so
    the last one wins) or ``ts < t`` (``False``, for feeds whose quote at the trade's own timestamp
    already reflects the trade).

    - ``effective_spread_bps = 2 * side * (price - mid) / mid * 1e4``
    - ``realized_spread_bps = 2 * side * (price - mid_later) / mid * 1e4`` where ``mid_later`` is
      the prevailing mid at ``t + realized_delay`` (same matching rule).

    Trades with unknown side (0) or no earlier quote get NaN.

    Returns
    -------
    The trades (sorted by symbol, ts) with columns ``symbol, ts, price, size, side, mid,
    effective_spread_bps`` and, when ``realized_delay`` is given, ``mid_later, realized_spread_bps``.
    """
    tr = _prepare(
        trades, "trades", [TS, SYMBOL, PRICE, SIZE, SIDE], positive=(PRICE, SIZE), finite=(SIDE,)
    )
    qt = _prepare(
        quotes,
        "quotes",
        [TS, SYMBOL, BID_PX, ASK_PX],
        positive=(BID_PX, ASK_PX),
    )
    qt = qt.assign(mid=(qt[BID_PX] + qt[ASK_PX]) / 2.0)[[TS, SYMBOL, "mid"]]
    qt = qt.iloc[np.argsort(_ts_ns(qt[TS]), kind="stable")]
    tr = tr.assign(_row=np.arange(len(tr)))
    left = tr.iloc[np.argsort(_ts_ns(tr[TS]), kind="stable")]
    m = pd.merge_asof(
        left, qt, on=TS, by=SYMBOL, direction="backward", allow_exact_matches=allow_exact_matches
    )
    cols = [SYMBOL, TS, PRICE, SIZE, SIDE, "mid", "effective_spread_bps"]
    side = m[SIDE].to_numpy(dtype="float64")
    side_ok = np.where(side != 0, side, np.nan)
    price = m[PRICE].to_numpy()
    mid = m["mid"].to_numpy(dtype="float64", na_value=np.nan)
    m["effective_spread_bps"] = 2.0 * side_ok * _div(price - mid, mid) * BPS
    if realized_delay is not None:
        delay = pd.Timedelta(realized_delay)
        if delay <= pd.Timedelta(0):
            raise ValueError(
                f"The 'realized_delay' parameter must be a positive duration or None. Got {realized_delay!r} instead."
            )
        later = m[[TS, SYMBOL, "_row"]].assign(**{TS: m[TS] + delay})
        later = pd.merge_asof(
            later,
            qt.rename(columns={"mid": "mid_later"}),
            on=TS,
            by=SYMBOL,
            direction="backward",
            allow_exact_matches=allow_exact_matches,
        )
        m["mid_later"] = later["mid_later"].to_numpy(dtype="float64", na_value=np.nan)
        m["realized_spread_bps"] = (
            2.0 * side_ok * _div(price - m["mid_later"].to_numpy(), mid) * BPS
        )
        cols += ["mid_later", "realized_spread_bps"]
    m = m.sort_values("_row", kind="stable").reset_index(drop=True)
    return m[cols]


def effective_spread(
    trades: pd.DataFrame,
    quotes: pd.DataFrame,
    bar: str = "5min",
    *,
    allow_exact_matches: bool = True,
    realized_delay: str | pd.Timedelta | None = "5s",
) -> pd.DataFrame:
    """Effective (and realized) spread per bar.

    Per-trade spreads come from :func:`trade_effective_spreads` (prevailing quote with
    ``ts <= trade ts`` by default). Per bar:

    - ``effective_spread_bps``: equal-weighted mean over the bar's trades with a known side and quote;
    - ``effective_spread_vw_bps``: the same, weighted by trade notional ``price * size``;
    - ``n_matched``: the number of such trades;
    - ``realized_spread_bps`` (when ``realized_delay`` is set): mean over the bar's trades whose
      ``t + realized_delay`` is still ``<= ts`` of the bar, so that no quote after ``ts`` is used
      (trades in the last ``realized_delay`` of a bar are left out).
    """
    step = _bar_step(bar)
    per = trade_effective_spreads(
        trades, quotes, allow_exact_matches=allow_exact_matches, realized_delay=realized_delay
    )
    cols = ["effective_spread_bps", "effective_spread_vw_bps", "n_matched"]
    if realized_delay is not None:
        cols.append("realized_spread_bps")
    parts = []
    for sym, g in _symbol_groups(per):
        t = _ts_ns(g[TS])
        closes, bi = _grid(t, step)
        nb = len(closes)
        es = g["effective_spread_bps"].to_numpy()
        ok = np.isfinite(es)
        notional = (g[PRICE] * g[SIZE]).to_numpy()
        n = np.bincount(bi[ok], minlength=nb).astype("float64")
        feats = {
            "effective_spread_bps": _div(np.bincount(bi[ok], weights=es[ok], minlength=nb), n),
            "effective_spread_vw_bps": _div(
                np.bincount(bi[ok], weights=es[ok] * notional[ok], minlength=nb),
                np.bincount(bi[ok], weights=notional[ok], minlength=nb),
            ),
            "n_matched": n,
        }
        if realized_delay is not None:
            rs = g["realized_spread_bps"].to_numpy()
            known = (t + pd.Timedelta(realized_delay).value) <= closes[bi]
            okr = np.isfinite(rs) & known
            feats["realized_spread_bps"] = _div(
                np.bincount(bi[okr], weights=rs[okr], minlength=nb),
                np.bincount(bi[okr], minlength=nb),
            )
        parts.append(_frame(sym, closes, feats))
    return _assemble(parts, cols)


TRADE_FEATURES = (
    "trade_count",
    "volume",
    "notional",
    "signed_volume",
    "trade_sign_imbalance",
    "avg_trade_size",
    "last_price",
    "amihud_per_mn",
    "roll_spread_bps",
    "kyle_lambda_bps",
)


def trade_features(
    trades: pd.DataFrame,
    bar: str = "5min",
    *,
    kyle_subintervals: int = 10,
    kyle_flow: Literal["signed_sqrt", "signed"] = "signed_sqrt",
) -> pd.DataFrame:
    """Trade-based activity and liquidity features per bar.

    Parameters
    ----------
    trades : canonical trades ``ts, symbol, price, size, side`` (side +1 buyer-initiated,
        -1 seller-initiated, 0 unknown).
    bar : bar length dividing one day.
    kyle_subintervals : number of equal sub-intervals per bar for Kyle's lambda (must divide the
        bar length in nanoseconds).
    kyle_flow : "signed_sqrt" (``sum side*sqrt(size)`` per sub-interval, Hasbrouck's signed
        square-root volume) or "signed" (``sum side*size``).

    Returns
    -------
    DataFrame with ``symbol, ts`` and

    - ``trade_count``, ``volume`` (base units), ``notional`` (``sum price*size``),
      ``signed_volume`` (``sum side*size``);
    - ``trade_sign_imbalance = (n_buy - n_sell) / trade_count`` (NaN in an empty bar);
    - ``avg_trade_size = volume / trade_count``;
    - ``last_price``: last trade price at or before ``ts``;
    - ``amihud_per_mn``: ``|ln(last_price_t / last_price_{t-1})| / notional * 1e6``, the absolute
      close-to-close log return per one million quote-currency units traded (NaN when the bar has no
      trade or no previous close);
    - ``roll_spread_bps``: Roll (1984) ``2*sqrt(-cov(dp_j, dp_{j-1})) * 1e4`` from consecutive
      trade log-price changes inside the bar (sample covariance, ddof=1, at least 2 pairs, i.e. 4
      trades); NaN when the covariance is positive; a relative spread in bps;
    - ``kyle_lambda_bps``: OLS slope (with intercept) of sub-interval log returns in bps on the
      sub-interval signed flow (see ``kyle_flow``), over the bar's ``kyle_subintervals``
      sub-intervals. Returns run from the last trade price of the previous sub-interval (which may
      lie in the previous bar) to the last of this one; sub-intervals without trades have return 0
      and flow 0. Units: bps per unit of flow (base units or sqrt base units). NaN with fewer than 3
      usable sub-intervals or no variation of flow.
    """
    step = _bar_step(bar)
    if (
        not isinstance(kyle_subintervals, int | np.integer)
        or kyle_subintervals < 2
        or step % kyle_subintervals
    ):
        raise ValueError(
            "The 'kyle_subintervals' parameter must be an integer >= 2 dividing the bar length in "
            f"nanoseconds. Got {kyle_subintervals!r} instead."
        )
    if kyle_flow not in ("signed_sqrt", "signed"):
        raise ValueError(
            f"The 'kyle_flow' parameter must be 'signed_sqrt' or 'signed'. Got {kyle_flow!r} instead."
        )
    tr = _prepare(
        trades, "trades", [TS, SYMBOL, PRICE, SIZE, SIDE], positive=(PRICE, SIZE), finite=(SIDE,)
    )
    sides = tr[SIDE].to_numpy()
    bad = ~np.isin(sides, (1, 0, -1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"trades frame ({len(tr)} rows) has side={float(sides[i])!r} at row {i}; expected +1, -1 or 0",
            column=SIDE,
        )
    parts = []
    sub = step // kyle_subintervals
    for sym, g in _symbol_groups(tr):
        t = _ts_ns(g[TS])
        p = g[PRICE].to_numpy()
        sz = g[SIZE].to_numpy()
        sd = g[SIDE].to_numpy(dtype="float64")
        closes, bi = _grid(t, step)
        nb = len(closes)
        n = np.bincount(bi, minlength=nb).astype("float64")
        vol = np.bincount(bi, weights=sz, minlength=nb)
        notional = np.bincount(bi, weights=p * sz, minlength=nb)
        signed = np.bincount(bi, weights=sd * sz, minlength=nb)
        nbuy = np.bincount(bi, weights=(sd > 0).astype("float64"), minlength=nb)
        nsell = np.bincount(bi, weights=(sd < 0).astype("float64"), minlength=nb)
        lp = np.log(p)
        last = np.searchsorted(t, closes, side="right") - 1
        lclose = lp[last]
        r = np.full(nb, np.nan)
        r[1:] = np.diff(lclose)
        amihud = np.where(n > 0, _div(np.abs(r), notional) * 1e6, np.nan)
        parts.append(
            _frame(
                sym,
                closes,
                {
                    "trade_count": n,
                    "volume": vol,
                    "notional": notional,
                    "signed_volume": signed,
                    "trade_sign_imbalance": _div(nbuy - nsell, n),
                    "avg_trade_size": _div(vol, n),
                    "last_price": p[last],
                    "amihud_per_mn": amihud,
                    "roll_spread_bps": _roll_per_bar(lp, bi, nb),
                    "kyle_lambda_bps": _kyle_per_bar(t, lp, sd, sz, closes, step, sub, kyle_flow),
                },
            )
        )
    return _assemble(parts, TRADE_FEATURES)


def _grouped_cov(
    x: np.ndarray, y: np.ndarray, grp: np.ndarray, nb: int
) -> tuple[np.ndarray, np.ndarray]:
    """(count, sample covariance with ddof=1) of pairs ``(x, y)`` per group."""
    n = np.bincount(grp, minlength=nb).astype("float64")
    mx = _div(np.bincount(grp, weights=x, minlength=nb), n)
    my = _div(np.bincount(grp, weights=y, minlength=nb), n)
    sxy = np.bincount(grp, weights=(x - mx[grp]) * (y - my[grp]), minlength=nb)
    cov = np.where(n >= 2, _div(sxy, n - 1), np.nan)
    return n, cov


def _roll_per_bar(lp: np.ndarray, bi: np.ndarray, nb: int) -> np.ndarray:
    """Roll (1984) spread per bar from consecutive log-price changes within each bar."""
    out = np.full(nb, np.nan)
    if lp.size < 4:
        return out
    dp = np.diff(lp)
    same = bi[1:] == bi[:-1]  # dp_j inside one bar
    pair = same[1:] & same[:-1]  # (dp_{j-1}, dp_j) both inside one bar
    x, y = dp[:-1][pair], dp[1:][pair]
    grp = bi[2:][pair]
    n, cov = _grouped_cov(x, y, grp, nb)
    ok = np.isfinite(cov) & (cov <= 0)
    out[ok] = 2.0 * np.sqrt(-cov[ok]) * BPS
    return out


def _kyle_per_bar(
    t: np.ndarray,
    lp: np.ndarray,
    side: np.ndarray,
    size: np.ndarray,
    closes: np.ndarray,
    step: int,
    sub: int,
    flow_kind: str,
) -> np.ndarray:
    """Kyle's lambda per bar: OLS slope of sub-interval returns (bps) on signed flow."""
    nb = len(closes)
    sub_closes = np.arange(closes[0] - step + sub, closes[-1] + 1, sub, dtype="int64")
    ns = len(sub_closes)
    si = (_ceil_ns(t, sub) - sub_closes[0]) // sub
    f = side * (np.sqrt(size) if flow_kind == "signed_sqrt" else size)
    flow = np.bincount(si, weights=f, minlength=ns)
    last = np.searchsorted(t, sub_closes, side="right") - 1
    lpx = np.where(last >= 0, lp[np.maximum(last, 0)], np.nan)
    r = np.full(ns, np.nan)
    r[1:] = np.diff(lpx) * BPS
    ok = np.isfinite(r)
    grp = ((_ceil_ns(sub_closes, step) - closes[0]) // step)[ok]
    x, y = flow[ok], r[ok]
    n = np.bincount(grp, minlength=nb).astype("float64")
    mx = _div(np.bincount(grp, weights=x, minlength=nb), n)
    my = _div(np.bincount(grp, weights=y, minlength=nb), n)
    dx = x - mx[grp]
    sxx = np.bincount(grp, weights=dx * dx, minlength=nb)
    sxy = np.bincount(grp, weights=dx * (y - my[grp]), minlength=nb)
    scale = np.bincount(grp, weights=x * x, minlength=nb)
    ok_bar = (n >= 3) & (sxx > 1e-12 * scale) & (sxx > 0)
    return np.where(ok_bar, _div(sxy, sxx), np.nan)


# ---------------------------------------------------------------------------------------------
# bars
# ---------------------------------------------------------------------------------------------
_CS_K = 3.0 - 2.0 * np.sqrt(2.0)


def _corwin_schultz(
    h: np.ndarray, lo: np.ndarray, c: np.ndarray, overnight_adjust: bool
) -> np.ndarray:
    """Two-bar Corwin-Schultz spread (fraction) for each pair (t-1, t); element 0 is NaN."""
    s = np.full(h.shape, np.nan)
    if h.size < 2:
        return s
    h0, l0 = h[:-1], lo[:-1]
    h1, l1 = h[1:].copy(), lo[1:].copy()
    if overnight_adjust:
        c0 = c[:-1]
        up = np.maximum(l1 - c0, 0.0)  # bar opened above the previous close
        down = np.maximum(c0 - h1, 0.0)  # bar opened below the previous close
        h1, l1 = h1 - up + down, l1 - up + down
    beta = np.log(h0 / l0) ** 2 + np.log(h1 / l1) ** 2
    gamma = np.log(np.maximum(h0, h1) / np.minimum(l0, l1)) ** 2
    alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / _CS_K - np.sqrt(gamma / _CS_K)
    ea = np.exp(alpha)
    s[1:] = np.maximum(2.0 * (ea - 1.0) / (1.0 + ea), 0.0)
    return s


def _abdi_ranaldo_terms(h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``4 (c_{t-1} - eta_{t-1}) (c_{t-1} - eta_t)`` for each pair (t-1, t); element 0 is NaN."""
    out = np.full(h.shape, np.nan)
    if h.size < 2:
        return out
    eta = (np.log(h) + np.log(lo)) / 2.0
    lc = np.log(c)
    out[1:] = 4.0 * (lc[:-1] - eta[:-1]) * (lc[:-1] - eta[1:])
    return out


def bar_liquidity(
    bars: pd.DataFrame,
    window: int = 20,
    *,
    min_periods: int | None = None,
    overnight_adjust: bool = True,
) -> pd.DataFrame:
    """Low-frequency liquidity estimators from OHLC(V) bars.

    Parameters
    ----------
    bars : canonical bars ``ts (bar close), symbol, open, high, low, close`` and optionally
        ``volume``, ``quote_volume``, ``trade_count``, ``taker_buy_volume``; consecutive rows of a
        symbol are treated as consecutive bars.
    window : number of bars averaged by the rolling estimators.
    min_periods : least number of valid values in the window (default ``window``).
    overnight_adjust : apply the Corwin-Schultz adjustment for gaps between a bar's range and the
        previous close (both high and low of bar t are shifted by the gap).

    Returns
    -------
    DataFrame, one row per input bar, with ``symbol, ts`` and

    - ``cs_spread_bps``: Corwin and Schultz (2012) high-low estimator. For each pair of bars
      (t-1, t): ``beta = ln(H_{t-1}/L_{t-1})^2 + ln(H_t/L_t)^2``,
      ``gamma = ln(max H / min L)^2`` over both bars,
      ``alpha = (sqrt(2 beta) - sqrt(beta)) / (3 - 2 sqrt 2) - sqrt(gamma / (3 - 2 sqrt 2))``,
      ``S = 2 (e^alpha - 1) / (1 + e^alpha)``; negative two-bar estimates are set to 0 (as in the
      paper) and then averaged over the last ``window`` pairs.
    - ``ar_spread_bps``: Abdi and Ranaldo (2017) close-high-low estimator
      ``sqrt(max(mean(4 (c_{t-1} - eta_{t-1})(c_{t-1} - eta_t)), 0))`` with log close ``c`` and
      log mid-range ``eta = (ln H + ln L)/2``; the pair uses bars t-1 and t so it is known at t (the
      paper's ``(c_t - eta_t)(c_t - eta_{t+1})`` shifted by one bar); the mean is over the window
      and a negative mean gives 0.
    - ``amihud_per_mn``: rolling mean of ``|ln(C_t/C_{t-1})| / DV_t * 1e6`` where ``DV`` is
      ``quote_volume`` or else ``close * volume`` (only when one of them exists; bars with zero
      volume are skipped).
    - ``trade_count`` and ``taker_buy_imbalance = 2 taker_buy_volume / volume - 1`` per bar,
      where those columns exist.
    """
    if not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"The 'window' parameter must be an integer >= 1. Got {window!r} instead.")
    mp = window if min_periods is None else min_periods
    if not isinstance(mp, int | np.integer) or not 1 <= mp <= window:
        raise ValueError(
            f"The 'min_periods' parameter must be an integer in [1, window={window}]. Got {min_periods!r} instead."
        )
    opt = [VOLUME, QUOTE_VOLUME, TRADE_COUNT, TAKER_BUY_VOLUME]
    b = _prepare(
        bars,
        "bars",
        [TS, SYMBOL, HIGH, LOW, CLOSE],
        [OPEN, *opt],
        positive=(HIGH, LOW, CLOSE),
        non_negative=tuple(opt),
    )
    hi, lo, cl = b[HIGH].to_numpy(), b[LOW].to_numpy(), b[CLOSE].to_numpy()
    bad = (hi < lo) | (cl > hi * (1 + 1e-12)) | (cl < lo * (1 - 1e-12))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"bars frame ({len(b)} rows) has high={hi[i]!r}, low={lo[i]!r}, close={cl[i]!r} at row {i} "
            "(sorted by symbol, ts); expected low <= close <= high",
            column=HIGH,
        )
    has_dv = QUOTE_VOLUME in b.columns or VOLUME in b.columns
    cols = ["cs_spread_bps", "ar_spread_bps"]
    if has_dv:
        cols.append("amihud_per_mn")
    if TRADE_COUNT in b.columns:
        cols.append("trade_count")
    if TAKER_BUY_VOLUME in b.columns and VOLUME in b.columns:
        cols.append("taker_buy_imbalance")
    parts = []
    for sym, g in _symbol_groups(b):
        h, l_, c = g[HIGH].to_numpy(), g[LOW].to_numpy(), g[CLOSE].to_numpy()
        feats: dict[str, np.ndarray] = {}
        cs = pd.Series(_corwin_schultz(h, l_, c, overnight_adjust))
        feats["cs_spread_bps"] = cs.rolling(window, min_periods=mp).mean().to_numpy() * BPS
        ar = (
            pd.Series(_abdi_ranaldo_terms(h, l_, c))
            .rolling(window, min_periods=mp)
            .mean()
            .to_numpy()
        )
        feats["ar_spread_bps"] = (
            np.sqrt(np.where(np.isfinite(ar), np.maximum(ar, 0.0), np.nan)) * BPS
        )
        if has_dv:
            dv = (
                g[QUOTE_VOLUME].to_numpy()
                if QUOTE_VOLUME in g.columns
                else c * g[VOLUME].to_numpy()
            )
            r = np.full(c.shape, np.nan)
            r[1:] = np.diff(np.log(c))
            feats["amihud_per_mn"] = (
                pd.Series(_div(np.abs(r), dv) * 1e6)
                .rolling(window, min_periods=mp)
                .mean()
                .to_numpy()
            )
        if "trade_count" in cols:
            feats["trade_count"] = g[TRADE_COUNT].to_numpy()
        if "taker_buy_imbalance" in cols:
            feats["taker_buy_imbalance"] = (
                2.0 * _div(g[TAKER_BUY_VOLUME].to_numpy(), g[VOLUME].to_numpy()) - 1.0
            )
        part = _frame(sym, _ts_ns(g[TS]), feats)
        parts.append(part)
    return _assemble(parts, cols)


# ---------------------------------------------------------------------------------------------
# derivatives context
# ---------------------------------------------------------------------------------------------
_PERP_SUFFIXES = ("-PERP", "_PERP", "-SWAP", "_SWAP", "PERP")


def _pair_symbols(
    targets: Sequence[str],
    sources: Sequence[str],
    mapping: Mapping[str, str] | None,
    guess: Callable[[str, Sequence[str]], str | None],
    what: str,
) -> dict[str, str]:
    """Map each target symbol to a source symbol (explicit mapping, a guess, or the only pair)."""
    out: dict[str, str] = {}
    for s in targets:
        if mapping is not None and s in mapping:
            src = mapping[s]
        else:
            src = guess(s, sources)
            if src is None and len(targets) == 1 and len(sources) == 1:
                src = sources[0]
        if src is None or src not in sources:
            raise DataError(
                f"cannot pair symbol '{s}' with a {what} symbol (got {src!r}); available {what} "
                f"symbols {sorted(sources)}; pass symbol_map={{'{s}': ...}}",
                column=SYMBOL,
            )
        out[s] = src
    return out


def _guess_spot(perp: str, spots: Sequence[str]) -> str | None:
    up = perp.upper()
    for suf in _PERP_SUFFIXES:
        if up.endswith(suf):
            core = perp[: -len(suf)]
            for s in spots:
                if s.upper() == core.upper():
                    return s
    return None


def _asof(t_events: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Last value with event time <= ``at`` (NaN before the first)."""
    i = np.searchsorted(t_events, at, side="right") - 1
    return np.where(i >= 0, values[np.maximum(i, 0)] if values.size else np.nan, np.nan)


DERIV_FEATURES = (
    "funding_rate",
    "funding_sum_24h",
    "funding_sum_3ev",
    "funding_rate_ann",
    "basis_bps",
)


def derivatives_features(
    funding: pd.DataFrame,
    spot_bars: pd.DataFrame | None = None,
    perp_bars_or_mark: pd.DataFrame | None = None,
    bar: str = "1D",
    *,
    symbol_map: Mapping[str, str] | None = None,
    funding_interval: str | pd.Timedelta | None = None,
    days_per_year: float = 365.0,
) -> pd.DataFrame:
    """Funding and basis features of perpetual swaps, as known at each bar close.

    Parameters
    ----------
    funding : canonical funding table ``ts, symbol, funding_rate`` (one row per funding event, the
        rate as a fraction per funding interval; ``ts`` is the settlement time), optionally
        ``mark_px``.
    spot_bars : spot prices, ``ts, symbol, close`` (bars stamped at their close, or any price
        levels); needed for the basis.
    perp_bars_or_mark : perpetual prices: a frame with ``mark_px`` (used if present) or ``close``;
        when None, the funding table's ``mark_px`` is used if present.
    bar : output bar length dividing one day.
    symbol_map : perpetual symbol -> spot symbol; by default the spot symbol is the perpetual's
        without a "-PERP"/"_PERP"/"-SWAP" suffix, or the only spot symbol when there is one of each.
    funding_interval : time between funding events used to annualise; default: the median spacing
        of the symbol's events.
    days_per_year : annualisation (365 for 24/7 venues).

    Returns
    -------
    DataFrame keyed by the perpetual symbol with ``symbol, ts`` and

    - ``funding_rate``: the last funding rate with event ``ts <=`` bar close;
    - ``funding_sum_24h``: sum of rates with event time in ``(ts - 24h, ts]``;
    - ``funding_sum_3ev``: sum of the last 3 events at or before ``ts`` (NaN with fewer);
    - ``funding_rate_ann``: ``funding_rate * days_per_year * 1D / funding_interval``;
    - ``basis_bps``: ``(perp_px / spot_px - 1) * 1e4`` with both prices the last known at or before
      ``ts`` (as-of, no look-ahead; NaN without both prices).

    The bar grid of a symbol spans its funding events and perpetual prices.
    """
    step = _bar_step(bar)
    fd = _prepare(funding, "funding", [TS, SYMBOL, FUNDING_RATE], [MARK_PX], finite=(FUNDING_RATE,))
    spot = None
    if spot_bars is not None:
        spot = _prepare(spot_bars, "spot_bars", [TS, SYMBOL, CLOSE], positive=(CLOSE,))
    perp = None
    if perp_bars_or_mark is not None:
        pcol = MARK_PX if MARK_PX in perp_bars_or_mark.columns else CLOSE
        perp = _prepare(
            perp_bars_or_mark, "perp_bars_or_mark", [TS, SYMBOL, pcol], positive=(pcol,)
        )
        perp = perp.rename(columns={pcol: "perp_px"})
    elif MARK_PX in fd.columns:
        perp = fd[[TS, SYMBOL, MARK_PX]].dropna().rename(columns={MARK_PX: "perp_px"})
        perp = perp.reset_index(drop=True)
    fi = None
    if funding_interval is not None:
        fi = pd.Timedelta(funding_interval)
        if fi <= pd.Timedelta(0):
            raise ValueError(
                f"The 'funding_interval' parameter must be a positive duration. Got {funding_interval!r} instead."
            )
    perp_syms = sorted(set(fd[SYMBOL]) | (set(perp[SYMBOL]) if perp is not None else set()))
    pairs: dict[str, str] = {}
    if spot is not None and perp is not None and perp_syms:
        pairs = _pair_symbols(perp_syms, sorted(set(spot[SYMBOL])), symbol_map, _guess_spot, "spot")
    parts = []
    for sym in perp_syms:
        f = fd[fd[SYMBOL] == sym]
        tf = _ts_ns(f[TS])
        rate = f[FUNDING_RATE].to_numpy()
        pp = perp[perp[SYMBOL] == sym] if perp is not None else None
        tp = _ts_ns(pp[TS]) if pp is not None else np.empty(0, "int64")
        times = np.concatenate([tf, tp])
        if times.size == 0:
            continue
        closes = np.arange(
            _ceil_ns(times.min(keepdims=True), step)[0],
            _ceil_ns(times.max(keepdims=True), step)[0] + step,
            step,
            dtype="int64",
        )
        csum = np.concatenate([[0.0], np.cumsum(rate)])
        k = np.searchsorted(tf, closes, side="right")
        k24 = np.searchsorted(tf, closes - _DAY.value, side="right")
        last_rate = np.where(k > 0, rate[np.maximum(k - 1, 0)] if rate.size else np.nan, np.nan)
        sum3 = np.where(k >= 3, csum[k] - csum[np.maximum(k - 3, 0)], np.nan)
        if fi is not None:
            interval_ns = float(fi.value)
        elif tf.size >= 2:
            interval_ns = float(np.median(np.diff(tf)))
        else:
            interval_ns = np.nan
        if tf.size and not (np.isfinite(interval_ns) and interval_ns > 0):
            raise DataError(
                f"funding frame: cannot infer the funding interval of '{sym}' from {tf.size} event(s) "
                "at distinct times; pass funding_interval (e.g. '8h')",
                column=TS,
            )
        per_year = days_per_year * _DAY.value / interval_ns if tf.size else np.nan
        feats = {
            "funding_rate": last_rate,
            "funding_sum_24h": np.where(k > 0, csum[k] - csum[k24], np.nan),
            "funding_sum_3ev": sum3,
            "funding_rate_ann": last_rate * per_year,
            "basis_bps": np.full(len(closes), np.nan),
        }
        if sym in pairs and pp is not None:
            sp = spot[spot[SYMBOL] == pairs[sym]]
            perp_px = _asof(tp, pp["perp_px"].to_numpy(), closes)
            spot_px = _asof(_ts_ns(sp[TS]), sp[CLOSE].to_numpy(), closes)
            feats["basis_bps"] = (_div(perp_px, spot_px) - 1.0) * BPS
        parts.append(_frame(sym, closes, feats))
    return _assemble(parts, DERIV_FEATURES)


# ---------------------------------------------------------------------------------------------
# implied volatility
# ---------------------------------------------------------------------------------------------
IV_FEATURES = ("iv_vol_ann", "iv_var_ann", "iv_var", "iv_var_ann_chg", "iv_minus_rv_var")


def _base_asset(symbol: str) -> str:
    """The base asset of a symbol ("BTCUSDT" -> "BTC", "BTC-DVOL" -> "BTC", "BTC" -> "BTC")."""
    meta = symbol_meta(symbol)
    if meta.base:
        return meta.base.upper()
    s = symbol.upper().lstrip(".^")
    for suf in ("-DVOL", "_DVOL", "DVOL", "-IV", "_IV"):
        if s.endswith(suf) and len(s) > len(suf):
            return s[: -len(suf)]
    return s


def _guess_by_base(target: str, sources: Sequence[str]) -> str | None:
    base = _base_asset(target)
    hits = [s for s in sources if _base_asset(s) == base]
    return hits[0] if len(hits) == 1 else None


def implied_vol_features(
    iv_index: pd.DataFrame,
    realized_var: pd.DataFrame | None = None,
    bar: str = "1D",
    annualization: float = 365,
    *,
    iv_unit: Literal["percent", "fraction"] = "percent",
    symbol_map: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Implied-volatility index features as known at each bar close.

    Parameters
    ----------
    iv_index : levels table ``ts, symbol, close`` of an annualised implied-volatility index
        (Deribit DVOL, VIX), stamped at the close of its period.
    realized_var : realized table ``ts, symbol, rv_var`` with a **daily** realized variance per row
        (stamped at the day's close), or None.
    bar : output bar length dividing one day.
    annualization : periods per year of a daily variance (365 for 24/7, 252 for exchanges).
    iv_unit : "percent" (55 = 55% annualised volatility) or "fraction" (0.55).
    symbol_map : realized symbol -> index symbol. By default an index and a realized symbol are paired
        by base asset ("BTCUSDT" <-> "BTC-DVOL" or "BTC"), or taken as the only pair.

    Returns
    -------
    DataFrame with ``symbol`` (the realized symbol when ``realized_var`` is given, else the index
    symbol), ``ts`` and

    - ``iv_vol_ann``: last index value at or before ``ts`` as an annualised volatility fraction;
    - ``iv_var_ann = iv_vol_ann**2``; ``iv_var = iv_var_ann / annualization`` (a daily variance);
    - ``iv_var_ann_chg``: change of ``iv_var_ann`` since the previous bar;
    - ``iv_minus_rv_var = iv_var - rv_var``: implied minus the last known daily realized variance.
    """
    step = _bar_step(bar)
    if iv_unit not in ("percent", "fraction"):
        raise ValueError(
            f"The 'iv_unit' parameter must be 'percent' or 'fraction'. Got {iv_unit!r} instead."
        )
    if not np.isfinite(annualization) or annualization <= 0:
        raise ValueError(
            f"The 'annualization' parameter must be > 0. Got {annualization!r} instead."
        )
    iv = _prepare(iv_index, "iv_index", [TS, SYMBOL, CLOSE], non_negative=(CLOSE,))
    rv = None
    if realized_var is not None:
        rv = _prepare(realized_var, "realized_var", [TS, SYMBOL, RV], non_negative=(RV,))
    iv_syms = sorted(set(iv[SYMBOL]))
    if rv is not None:
        rv_syms = sorted(set(rv[SYMBOL]))
        pairs = _pair_symbols(
            rv_syms, iv_syms, symbol_map, _guess_by_base, "implied-volatility index"
        )
    else:
        pairs = {s: s for s in iv_syms}
    scale = 0.01 if iv_unit == "percent" else 1.0
    parts = []
    for out_sym, iv_sym in pairs.items():
        g = iv[iv[SYMBOL] == iv_sym]
        t = _ts_ns(g[TS])
        closes = np.arange(
            _ceil_ns(t[:1], step)[0], _ceil_ns(t[-1:], step)[0] + step, step, dtype="int64"
        )
        vol = _asof(t, g[CLOSE].to_numpy() * scale, closes)
        var_ann = vol**2
        chg = np.full(len(closes), np.nan)
        chg[1:] = np.diff(var_ann)
        var_d = var_ann / annualization
        spread = np.full(len(closes), np.nan)
        if rv is not None:
            r = rv[rv[SYMBOL] == out_sym]
            spread = var_d - _asof(_ts_ns(r[TS]), r[RV].to_numpy(), closes)
        parts.append(
            _frame(
                out_sym,
                closes,
                {
                    "iv_vol_ann": vol,
                    "iv_var_ann": var_ann,
                    "iv_var": var_d,
                    "iv_var_ann_chg": chg,
                    "iv_minus_rv_var": spread,
                },
            )
        )
    return _assemble(parts, IV_FEATURES)


ATM_COLUMNS = ("atm_iv_var_ann", "atm_iv_vol_ann", "n_expiries", "t_near_days", "t_far_days")


def atm_implied_variance(
    options: pd.DataFrame,
    as_of: str | pd.Timestamp,
    *,
    tenor_days: float = 30.0,
    min_days: float = 1.0,
    days_per_year: float = 365.0,
) -> pd.DataFrame:
    """ATM implied variance at a constant tenor from an option chain, as known at ``as_of``.

    Method
    ------
    1. Keep rows with ``ts <= as_of`` and, per option ``symbol``, only its latest row; drop rows
       without a positive ``mark_iv`` (a fraction) or ``underlying_px``, and expiries less than
       ``min_days`` after ``as_of``.
    2. Per underlying and expiry (time to expiry ``T`` in years of ``days_per_year`` days): the
       forward ``F`` is the median ``underlying_px`` (the venue's underlying future for that expiry);
       calls and puts of one strike are averaged; the ATM volatility is the linear interpolation of
       ``mark_iv`` in log-moneyness ``ln(K/F)`` at 0 (flat beyond the outermost strikes).
    3. Total variance ``w(T) = iv_atm^2 T`` is interpolated linearly in ``T`` between the two
       expiries bracketing ``tenor_days``; outside the expiry range the nearest expiry's implied
       variance is used (flat extrapolation in variance). ``atm_iv_var_ann = w(T*) / T*``.

    Returns
    -------
    DataFrame, one row per underlying: ``symbol`` (the underlying), ``ts`` (= ``as_of``),
    ``atm_iv_var_ann``, ``atm_iv_vol_ann``, ``n_expiries`` used, ``t_near_days`` and
    ``t_far_days`` (the expiries the interpolation used; NaN when none).
    """
    if not np.isfinite(tenor_days) or tenor_days <= 0:
        raise ValueError(f"The 'tenor_days' parameter must be > 0. Got {tenor_days!r} instead.")
    asof = pd.Timestamp(as_of)
    asof = asof.tz_localize("UTC") if asof.tzinfo is None else asof.tz_convert("UTC")
    o = _prepare(
        options,
        "options",
        [TS, SYMBOL, UNDERLYING, EXPIRY, STRIKE, OPTION_TYPE, MARK_IV, UNDERLYING_PX],
        positive=(STRIKE,),
        time_cols=(TS, EXPIRY),
    )
    o = o[_ts_ns(o[TS]) <= asof.as_unit("ns").value]
    if o.empty:
        raise DataError(
            f"options frame has no row with ts <= as_of={asof.isoformat()}; expected a chain snapshot "
            "taken at or before as_of",
            column=TS,
        )
    underlyings = sorted(set(o[UNDERLYING].astype("str")))
    o = o.groupby(SYMBOL, sort=False).tail(1)
    iv_all = o[MARK_IV].to_numpy(dtype="float64", na_value=np.nan)
    fwd_all = o[UNDERLYING_PX].to_numpy(dtype="float64", na_value=np.nan)
    o = o[np.isfinite(iv_all) & (iv_all > 0) & np.isfinite(fwd_all) & (fwd_all > 0)]
    t_years = (_ts_ns(o[EXPIRY]) - asof.as_unit("ns").value) / (_DAY.value * days_per_year)
    o = o.assign(_T=t_years)
    o = o[o["_T"] * days_per_year >= min_days]
    t_star = tenor_days / days_per_year
    rows = []
    for und in underlyings:
        g = o[o[UNDERLYING] == und]
        ts_w = []
        for _, e in g.groupby(EXPIRY, sort=True):
            fwd = float(np.median(e[UNDERLYING_PX].to_numpy(dtype="float64")))
            by_k = e.groupby(STRIKE, sort=True)[MARK_IV].mean()
            k = np.log(by_k.index.to_numpy(dtype="float64") / fwd)
            iv_atm = float(np.interp(0.0, k, by_k.to_numpy(dtype="float64")))
            T = float(e["_T"].iloc[0])
            ts_w.append((T, iv_atm**2 * T))
        var = near = far = np.nan
        if ts_w:
            Ts = np.array([x[0] for x in ts_w])
            ws = np.array([x[1] for x in ts_w])
            if t_star <= Ts[0]:
                var, near, far = ws[0] / Ts[0], Ts[0], Ts[0]
            elif t_star >= Ts[-1]:
                var, near, far = ws[-1] / Ts[-1], Ts[-1], Ts[-1]
            else:
                j = int(np.searchsorted(Ts, t_star))
                w = ws[j - 1] + (ws[j] - ws[j - 1]) * (t_star - Ts[j - 1]) / (Ts[j] - Ts[j - 1])
                var, near, far = w / t_star, Ts[j - 1], Ts[j]
        rows.append(
            {
                SYMBOL: und,
                TS: asof,
                "atm_iv_var_ann": var,
                "atm_iv_vol_ann": np.sqrt(var) if np.isfinite(var) and var >= 0 else np.nan,
                "n_expiries": float(len(ts_w)),
                "t_near_days": near * days_per_year,
                "t_far_days": far * days_per_year,
            }
        )
    out = pd.DataFrame(rows, columns=[SYMBOL, TS, *ATM_COLUMNS])
    out[TS] = out[TS].astype(TS_DTYPE)
    out[SYMBOL] = out[SYMBOL].astype("str")
    return out
