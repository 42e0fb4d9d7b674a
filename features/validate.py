"""Cleaning and validation rules for canonical tables, with a report of every rule's count.

Two kinds of rules:

- **Rejecting** rules drop rows that cannot be market data: non-finite or non-positive prices and sizes
  (``non_finite``, ``non_positive``, ``negative``), rows without a time (``missing_ts``) or without a
  symbol (``empty_symbol``; options: without an underlying), exact duplicates (``duplicates``), and
  rows sharing a unique key with different values (``key_conflicts``: the last one read wins). Every
  dropped row is counted under one of them: ``rows_in = rows_out + the sum of the rejecting counts``.
- **Flagging** rules keep the rows and report them: ``out_of_order`` (a row earlier than one read before
  it for the same symbol; the stored table is sorted), ``crossed``/``locked`` quotes or books,
  ``ohlc_inconsistent`` bars (high below open/close or low above), ``outliers`` (a jump of more than
  ``k`` rolling MADs that reverts at the next observation), and ``gaps`` in coverage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features import schema as S
from features.symbols import CALENDARS, symbol_meta

UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "bars": (S.TS, S.SYMBOL),
    "realized": (S.TS, S.SYMBOL),
    "levels": (S.TS, S.SYMBOL),
    "funding": (S.TS, S.SYMBOL),
    "options": (S.TS, S.SYMBOL),
    "book": (S.TS, S.SYMBOL, S.SIDE, S.LEVEL),
}
"""Columns that identify one row for kinds where a key must be unique (trades and quotes may repeat a
timestamp legitimately)."""

PRICE_COLUMN = {
    "trades": S.PRICE,
    "bars": S.CLOSE,
    "levels": S.CLOSE,
    "realized": None,
    "quotes": None,
    "book": None,
    "funding": None,
    "options": None,
}
MAX_EXAMPLES = 5


@dataclass
class RuleCounts:
    """Counts and a few example rows per rule for one table."""

    rows_in: int = 0
    rows_out: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    gaps: list[dict[str, object]] = field(default_factory=list)

    def add(self, rule: str, n: int, examples: Iterable[str] = ()) -> None:
        """Add ``n`` hits of ``rule`` and keep up to MAX_EXAMPLES example descriptions."""
        self.counts[rule] = self.counts.get(rule, 0) + int(n)
        if n:
            ex = self.examples.setdefault(rule, [])
            for e in examples:
                if len(ex) >= MAX_EXAMPLES:
                    break
                ex.append(str(e))

    def merge(self, other: RuleCounts) -> None:
        """Accumulate another table's counts into this one."""
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        for k, v in other.counts.items():
            self.add(k, v, other.examples.get(k, ()))
        self.gaps.extend(other.gaps)

    def to_dict(self) -> dict[str, object]:
        """JSON-serializable form (at most 100 gaps listed; ``gap_count`` has them all)."""
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "counts": dict(sorted(self.counts.items())),
            "examples": self.examples,
            "gap_count": len(self.gaps),
            "gaps": self.gaps[:100],
        }


CLEANING_RULES = ("non_finite", "non_positive", "negative", "missing_ts", "empty_symbol")
"""Rejecting rules applied to each row on its own (before any merge)."""
REJECT_RULES = (*CLEANING_RULES, "duplicates", "key_conflicts")
"""Every rule that drops a row; a row is dropped by exactly one of them."""
FLAG_RULES = ("out_of_order", "crossed", "locked", "ohlc_inconsistent", "outliers", "gaps")


def _describe(frame: pd.DataFrame, mask: np.ndarray, col: str | None = None) -> list[str]:
    idx = np.flatnonzero(mask)[:MAX_EXAMPLES]
    out = []
    for i in idx:
        row = frame.iloc[int(i)]
        val = row[col].item() if col is not None and hasattr(row[col], "item") else (
            row[col] if col is not None else None)
        what = f" {col}={val!r}" if col is not None else ""
        out.append(f"{row[S.TS]} {row[S.SYMBOL]}{what}")
    return out


def reject_missing_keys(frame: pd.DataFrame, kind: str, counts: RuleCounts) -> pd.DataFrame:
    """Drop rows without a time (``missing_ts``) or with an empty symbol (``empty_symbol``; for
    options also an empty underlying, which they are partitioned by); count each rule."""
    if frame.empty:
        return frame
    no_ts = frame[S.TS].isna().to_numpy()
    empty = np.zeros(len(frame), dtype=bool)
    for col in (S.SYMBOL, S.UNDERLYING if kind == "options" else None):
        if col is None or col not in frame.columns:
            continue
        v = frame[col]
        empty |= v.isna().to_numpy() | (v.astype("str").str.strip() == "").fillna(True).to_numpy()
    empty &= ~no_ts
    if not (no_ts.any() or empty.any()):
        return frame
    if no_ts.any():
        counts.add("missing_ts", int(no_ts.sum()),
                   [f"row with {S.SYMBOL}={frame[S.SYMBOL].iloc[int(i)]!r}"
                    for i in np.flatnonzero(no_ts)[:MAX_EXAMPLES]])
    if empty.any():
        counts.add("empty_symbol", int(empty.sum()),
                   [f"{frame[S.TS].iloc[int(i)]} (empty symbol)" for i in np.flatnonzero(empty)[:MAX_EXAMPLES]])
    return frame.loc[~(no_ts | empty)].reset_index(drop=True)


def reject_invalid(frame: pd.DataFrame, kind: str, counts: RuleCounts) -> pd.DataFrame:
    """Drop rows with non-finite, non-positive (prices) or negative (sizes) values; count each rule.

    Optional columns may be NaN (missing) without rejecting the row; required ones may not.
    """
    sp = S.spec(kind)
    keep = np.ones(len(frame), dtype=bool)
    for col in (*sp.positive, *sp.non_negative):
        if col not in frame.columns:
            continue
        v = frame[col].to_numpy(dtype="float64", na_value=np.nan)
        required = col in sp.required
        nan = np.isnan(v)
        nonfinite = np.isinf(v) | (nan & required)
        bad_sign = (v <= 0) if col in sp.positive else (v < 0)
        bad_sign &= ~nan
        for rule, m in (
            ("non_finite", nonfinite & keep),
            ("non_positive" if col in sp.positive else "negative", bad_sign & keep),
        ):
            n = int(m.sum())
            if n:
                counts.add(rule, n, _describe(frame, m, col))
        keep &= ~(nonfinite | bad_sign)
    return frame.loc[keep].reset_index(drop=True) if not keep.all() else frame


def count_out_of_order(frame: pd.DataFrame, last_ts: dict[str, int], counts: RuleCounts) -> None:
    """Count rows whose ts is earlier than a row read before them for the same symbol.

    ``last_ts`` carries the running maximum per symbol across chunks (updated in place).
    """
    if frame.empty:
        return
    ts = S.ts_ns(frame[S.TS])
    sym = frame[S.SYMBOL].to_numpy()
    total = 0
    examples: list[str] = []
    for s in pd.unique(sym):
        m = sym == s
        t = ts[m]
        prev = np.maximum.accumulate(np.concatenate([[last_ts.get(s, np.iinfo(np.int64).min)], t]))
        bad = t < prev[:-1]
        n = int(bad.sum())
        if n:
            total += n
            examples += [
                f"{pd.Timestamp(x, tz='UTC')} {s} after {pd.Timestamp(p, tz='UTC')}"
                for x, p in zip(t[bad][:MAX_EXAMPLES], prev[:-1][bad][:MAX_EXAMPLES], strict=True)
            ]
        last_ts[s] = int(prev[-1])
    counts.add("out_of_order", total, examples)


def sort_dedupe(frame: pd.DataFrame, kind: str, counts: RuleCounts | None = None) -> pd.DataFrame:
    """Sort by the kind's key, drop exact duplicates, and resolve unique-key conflicts (last wins)."""
    sp = S.spec(kind)
    key = [c for c in sp.key if c in frame.columns]
    n0 = len(frame)
    out = frame.drop_duplicates(keep="first")
    n_dup = n0 - len(out)
    n_conf = 0
    uk = UNIQUE_KEYS.get(kind)
    if uk is not None:
        conflict = out.duplicated(subset=list(uk), keep="last")
        n_conf = int(conflict.sum())
        if n_conf and counts is not None:
            counts.add("key_conflicts", n_conf, _describe(out, conflict.to_numpy()))
        out = out.loc[~conflict]
    if counts is not None:
        counts.add("duplicates", n_dup)
    out = out.sort_values(key, kind="stable").reset_index(drop=True)
    return out


def flag_quotes(frame: pd.DataFrame, counts: RuleCounts) -> None:
    """Count crossed (bid > ask) and locked (bid == ask) quotes."""
    bid = frame[S.BID_PX].to_numpy()
    ask = frame[S.ASK_PX].to_numpy()
    crossed = bid > ask
    locked = bid == ask
    counts.add("crossed", int(crossed.sum()), _describe(frame, crossed, S.BID_PX))
    counts.add("locked", int(locked.sum()), _describe(frame, locked, S.BID_PX))


def flag_book(frame: pd.DataFrame, counts: RuleCounts) -> None:
    """Count book snapshots whose best bid is above (crossed) or at (locked) the best ask."""
    top = frame[frame[S.LEVEL] == 0]
    if top.empty:
        return
    wide = top.pivot_table(index=[S.TS, S.SYMBOL], columns=S.SIDE, values=S.PX, aggfunc="first")
    if S.BID_SIDE not in wide.columns or S.ASK_SIDE not in wide.columns:
        return
    bid, ask = wide[S.BID_SIDE].to_numpy(), wide[S.ASK_SIDE].to_numpy()
    crossed, locked = bid > ask, bid == ask
    ex = [f"{t} {s}" for (t, s) in wide.index[crossed][:MAX_EXAMPLES]]
    counts.add("crossed", int(np.nansum(crossed)), ex)
    counts.add("locked", int(np.nansum(locked)))


def flag_bars(frame: pd.DataFrame, counts: RuleCounts) -> None:
    """Count bars whose high is below max(open, close) or low above min(open, close)."""
    o, h, lo, c = (frame[k].to_numpy() for k in (S.OPEN, S.HIGH, S.LOW, S.CLOSE))
    bad = (h < np.maximum(o, c) * (1 - 1e-12)) | (lo > np.minimum(o, c) * (1 + 1e-12)) | (h < lo)
    counts.add("ohlc_inconsistent", int(bad.sum()), _describe(frame, bad, S.HIGH))


def flag_outliers(
    frame: pd.DataFrame, price_col: str, counts: RuleCounts, *, k: float = 10.0, window: int = 500
) -> np.ndarray:
    """Flag spikes: a log-price jump of more than ``k`` rolling MADs that reverts at the next point.

    The MAD is computed on the trailing ``window`` log returns of the same symbol (1.4826 x median
    absolute deviation). Returns the boolean mask of flagged rows (frame sorted by symbol, ts).
    """
    mask = np.zeros(len(frame), dtype=bool)
    if len(frame) < 3:
        return mask
    for _, idx in frame.groupby(S.SYMBOL, sort=False).indices.items():
        if len(idx) < 3:
            continue
        x = np.log(frame[price_col].to_numpy()[idx])
        r = np.diff(x)
        rs = pd.Series(r)
        med = rs.rolling(window, min_periods=20).median().shift(1)
        mad = (rs - med).abs().rolling(window, min_periods=20).median().shift(1) * 1.4826
        mad = mad.to_numpy()
        r_next = np.append(r[1:], np.nan)
        big = np.abs(r) > k * mad
        big_next = np.abs(r_next) > k * mad
        reverts = (np.sign(r) != np.sign(r_next)) & (np.abs(r + r_next) < 0.5 * np.abs(r))
        spike = big & big_next & reverts & (mad > 0)
        # return i goes from point i to i+1: the spike is point i+1
        m = np.zeros(len(idx), dtype=bool)
        m[1:] = spike
        mask[idx] = m
    counts.add("outliers", int(mask.sum()), _describe(frame, mask, price_col))
    return mask


def find_gaps(
    frame: pd.DataFrame,
    kind: str,
    interval: pd.Timedelta | None,
    counts: RuleCounts,
    *,
    tick_gap: pd.Timedelta = pd.Timedelta("10min"),
) -> None:
    """List coverage gaps per symbol.

    Bars and other per-period tables: a step longer than the interval (on exchange calendars, only
    within a local trading day for intraday bars, and over 4 calendar days for daily bars). Ticks: a
    silence longer than ``tick_gap`` within a local trading day.
    """
    if frame.empty or kind == "options":
        return
    for sym, idx in frame.groupby(S.SYMBOL, sort=False).indices.items():
        ts = S.ts_ns(frame[S.TS])[idx]
        if len(ts) < 2:
            continue
        cal = CALENDARS[symbol_meta(str(sym)).calendar]
        d = np.diff(ts)
        if interval is not None and kind not in ("trades", "quotes", "book"):
            step = interval.value
            if cal.name != "24/7" and interval >= pd.Timedelta("1D"):
                limit = 4 * 86_400 * 10**9
            else:
                limit = step
        else:
            step = None
            limit = tick_gap.value
        gap = d > limit * 1.0001
        if cal.name != "24/7" and not (interval is not None and interval >= pd.Timedelta("1D")):
            local = pd.DatetimeIndex(ts, tz="UTC").tz_convert(cal.tz).date
            same_day = np.asarray(local[1:]) == np.asarray(local[:-1])
            gap &= same_day
        gi = np.flatnonzero(gap)
        for i in gi:
            start, end = pd.Timestamp(ts[i], tz="UTC"), pd.Timestamp(ts[i + 1], tz="UTC")
            rec: dict[str, object] = {
                "symbol": str(sym),
                "after": start.isoformat(),
                "before": end.isoformat(),
                "duration": str(end - start),
            }
            if step is not None:
                rec["missing_periods"] = int(round(d[i] / step)) - 1
            counts.gaps.append(rec)
        counts.add("gaps", len(gi))


def flag_table(
    frame: pd.DataFrame,
    kind: str,
    interval: pd.Timedelta | None,
    counts: RuleCounts,
    *,
    gaps: bool = True,
) -> None:
    """Apply every flagging rule that fits ``kind`` to a sorted canonical frame."""
    if kind == "quotes":
        flag_quotes(frame, counts)
    elif kind == "book":
        flag_book(frame, counts)
    elif kind == "bars":
        flag_bars(frame, counts)
    price_col = PRICE_COLUMN.get(kind)
    if price_col is not None:
        flag_outliers(frame, price_col, counts)
    elif kind == "quotes" and len(frame):
        mid = frame.assign(_mid=(frame[S.BID_PX] + frame[S.ASK_PX]) / 2)
        ok = mid["_mid"] > 0
        flag_outliers(mid.loc[ok].reset_index(drop=True), "_mid", counts)
    if gaps:
        find_gaps(frame, kind, interval, counts)
