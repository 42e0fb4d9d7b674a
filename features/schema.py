"""Canonical market-data tables: column names, dtypes and validation.

Every reader turns its source format into one of the table *kinds* below; everything downstream
(the store, feature builders, models) sees only these columns.

Conventions
-----------
- ``ts`` is the event time, UTC, nanosecond precision (``datetime64[ns, UTC]``). For a bar or any
  per-period record (realized measures, an index's daily close) ``ts`` is the period's **close**:
  a source that stamps bars by their open (Binance ``open_time``) is shifted by one interval when read.
- ``side`` is an ``int8``: +1 buyer-initiated trade / bid side of a book, -1 seller-initiated / ask
  side, 0 unknown.
- Units live in column names: ``*_var`` is a variance in squared log-return units of the record's
  period, ``*_bps`` basis points, ``*_ann`` annualized.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.errors import DataError  # re-exported: its historical home

# ---- column names --------------------------------------------------------------------------
TS = "ts"
SYMBOL = "symbol"
PRICE = "price"
SIZE = "size"
SIDE = "side"
TRADE_ID = "trade_id"
BID_PX = "bid_px"
BID_SZ = "bid_sz"
ASK_PX = "ask_px"
ASK_SZ = "ask_sz"
LEVEL = "level"
PX = "px"
SZ = "sz"
OPEN = "open"
HIGH = "high"
LOW = "low"
CLOSE = "close"
VOLUME = "volume"
QUOTE_VOLUME = "quote_volume"
TRADE_COUNT = "trade_count"
TAKER_BUY_VOLUME = "taker_buy_volume"
RV = "rv_var"
BV = "bv_var"
RQ = "rq_var2"
RS_POS = "rs_pos_var"
RS_NEG = "rs_neg_var"
RK = "rk_var"
N_OBS = "n_obs"
FUNDING_RATE = "funding_rate"
MARK_PX = "mark_px"
INDEX_PX = "index_px"
OPEN_INTEREST = "open_interest"
UNDERLYING = "underlying"
EXPIRY = "expiry"
STRIKE = "strike"
OPTION_TYPE = "option_type"
MARK_IV = "mark_iv"
UNDERLYING_PX = "underlying_px"

TS_DTYPE = "datetime64[ns, UTC]"

BUY, SELL, UNKNOWN_SIDE = 1, -1, 0
BID_SIDE, ASK_SIDE = 1, -1


@dataclass(frozen=True)
class TableSpec:
    """The columns of one table kind.

    Attributes
    ----------
    kind : name of the kind ("trades", "bars", ...).
    required : column -> dtype, in canonical order.
    optional : column -> dtype, kept when present.
    key : columns that identify a row (used with ``ts`` for sorting and de-duplication).
    positive : columns whose values must be finite and > 0.
    non_negative : columns whose values must be finite and >= 0.
    """

    kind: str
    required: Mapping[str, str]
    optional: Mapping[str, str] = field(default_factory=dict)
    key: tuple[str, ...] = (TS, SYMBOL)
    positive: tuple[str, ...] = ()
    non_negative: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        """Required then optional column names."""
        return [*self.required, *self.optional]

    def dtype(self, column: str) -> str:
        """The canonical dtype of ``column``."""
        if column in self.required:
            return self.required[column]
        return self.optional[column]


_BASE = {TS: TS_DTYPE, SYMBOL: "str"}

SCHEMAS: dict[str, TableSpec] = {
    "trades": TableSpec(
        "trades",
        {**_BASE, PRICE: "float64", SIZE: "float64", SIDE: "int8"},
        {TRADE_ID: "Int64"},
        positive=(PRICE, SIZE),
    ),
    "quotes": TableSpec(
        "quotes",
        {**_BASE, BID_PX: "float64", BID_SZ: "float64", ASK_PX: "float64", ASK_SZ: "float64"},
        positive=(BID_PX, ASK_PX),
        non_negative=(BID_SZ, ASK_SZ),
    ),
    "book": TableSpec(
        "book",
        {**_BASE, SIDE: "int8", LEVEL: "int16", PX: "float64", SZ: "float64"},
        key=(TS, SYMBOL, SIDE, LEVEL),
        positive=(PX,),
        non_negative=(SZ,),
    ),
    "bars": TableSpec(
        "bars",
        {**_BASE, OPEN: "float64", HIGH: "float64", LOW: "float64", CLOSE: "float64"},
        {
            VOLUME: "float64",
            QUOTE_VOLUME: "float64",
            TRADE_COUNT: "float64",
            TAKER_BUY_VOLUME: "float64",
        },
        positive=(OPEN, HIGH, LOW, CLOSE),
        non_negative=(VOLUME, QUOTE_VOLUME, TRADE_COUNT, TAKER_BUY_VOLUME),
    ),
    "realized": TableSpec(
        "realized",
        {**_BASE, RV: "float64"},
        {
            BV: "float64",
            RQ: "float64",
            RS_POS: "float64",
            RS_NEG: "float64",
            RK: "float64",
            N_OBS: "float64",
            CLOSE: "float64",
        },
        non_negative=(RV, BV, RQ, RS_POS, RS_NEG, RK, N_OBS),
        positive=(CLOSE,),
    ),
    "levels": TableSpec(
        "levels",
        {**_BASE, CLOSE: "float64"},
        positive=(CLOSE,),
    ),
    "funding": TableSpec(
        "funding",
        {**_BASE, FUNDING_RATE: "float64"},
        {MARK_PX: "float64", INDEX_PX: "float64", OPEN_INTEREST: "float64"},
        positive=(MARK_PX, INDEX_PX),
        non_negative=(OPEN_INTEREST,),
    ),
    "options": TableSpec(
        "options",
        {
            **_BASE,
            UNDERLYING: "str",
            EXPIRY: TS_DTYPE,
            STRIKE: "float64",
            OPTION_TYPE: "str",
        },
        {
            BID_PX: "float64",
            ASK_PX: "float64",
            MARK_PX: "float64",
            MARK_IV: "float64",
            UNDERLYING_PX: "float64",
            OPEN_INTEREST: "float64",
        },
        positive=(STRIKE, UNDERLYING_PX),
        non_negative=(BID_PX, ASK_PX, MARK_PX, MARK_IV, OPEN_INTEREST),
    ),
}
"""All table kinds. ``levels`` is a close-only price or index series (the VIX, a 1-minute price
panel); ``funding`` also carries perpetual mark/index prices (Tardis ``derivative_ticker``);
``options`` prices are in the units the venue quotes (Deribit: the underlying coin), ``mark_iv`` is a
fraction (0.55 = 55%)."""


def spec(kind: str) -> TableSpec:
    """The :class:`TableSpec` for ``kind``; raises ``DataError`` naming the known kinds."""
    try:
        return SCHEMAS[kind]
    except KeyError:
        raise DataError(f"unknown table kind '{kind}'; expected one of {sorted(SCHEMAS)}") from None


def to_utc_ns(
    values: pd.Series | pd.Index | np.ndarray, *, unit: str | None = None, tz: str | None = None
) -> pd.Series:
    """Convert timestamps to ``datetime64[ns, UTC]``.

    Parameters
    ----------
    values : integers since the epoch (with ``unit`` "s", "ms", "us" or "ns"), strings, or datetimes.
    unit : unit of integer epochs; ``None`` infers it from the magnitude of the first value.
    tz : the time zone of naive datetimes (default UTC).
    """
    s = pd.Series(values)
    if s.dtype.kind in "iuf":
        if unit is None:
            unit = infer_epoch_unit(s)
        out = pd.to_datetime(s, unit=unit, utc=True)
    else:
        out = pd.to_datetime(
            s,
            utc=tz is None or tz.upper() == "UTC",
            format="mixed" if s.dtype == object or str(s.dtype) == "str" else None,
        )
        if out.dt.tz is None:
            out = out.dt.tz_localize(tz).dt.tz_convert("UTC")
    return out.astype(TS_DTYPE)


def ts_ns(ts: pd.Series | pd.Index) -> np.ndarray:
    """Nanoseconds since the epoch (int64) of a UTC timestamp column."""
    return pd.DatetimeIndex(ts).as_unit("ns").asi8


def infer_epoch_unit(values: pd.Series) -> str:
    """Infer "s", "ms", "us" or "ns" from the magnitude of epoch integers (dates 1990..2100)."""
    v = pd.Series(values).dropna()
    if v.empty:
        return "ms"
    x = float(np.abs(v.iloc[0]))
    if x < 1e11:
        return "s"
    if x < 1e14:
        return "ms"
    if x < 1e17:
        return "us"
    return "ns"


def conform(frame: pd.DataFrame, kind: str, *, source: str | None = None) -> pd.DataFrame:
    """Return ``frame`` with exactly the canonical columns of ``kind``, cast to canonical dtypes.

    Extra columns are dropped; missing optional columns are left out; a missing required column or a
    value that cannot be cast raises :class:`DataError` naming the column and an offending value.
    """
    sp = spec(kind)
    missing = [c for c in sp.required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{kind} table is missing required column(s) {missing}; got columns {list(frame.columns)}",
            source=source,
        )
    cols = [c for c in sp.columns if c in frame.columns]
    out = {}
    for c in cols:
        dtype = sp.dtype(c)
        col = frame[c]
        try:
            if dtype == TS_DTYPE:
                if not isinstance(col.dtype, pd.DatetimeTZDtype) or str(col.dtype) != TS_DTYPE:
                    col = to_utc_ns(col)
            elif dtype == "str":
                col = col.astype("str")
            elif dtype in ("float64",):
                col = pd.to_numeric(col, errors="raise").astype("float64")
            else:
                col = col.astype(dtype)
        except (ValueError, TypeError) as exc:
            bad = _first_uncastable(col, dtype)
            raise DataError(
                f"cannot convert value {bad!r} to {dtype} ({exc})", source=source, column=c
            ) from None
        out[c] = col.array
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def _first_uncastable(col: pd.Series, dtype: str) -> object:
    for v in col:
        try:
            if dtype == TS_DTYPE:
                pd.Timestamp(v)
            else:
                np.array([v]).astype(dtype if dtype != "str" else object)
                float(v)
        except (ValueError, TypeError):
            return v
    return None


def validate(frame: pd.DataFrame, kind: str, *, source: str | None = None) -> None:
    """Check a canonical frame's columns and dtypes; raise :class:`DataError` on the first problem.

    Content rules (positive prices, crossed quotes, duplicates...) are *cleaning* rules applied with a
    report by :mod:`features.validate`; this function checks the contract only.
    """
    sp = spec(kind)
    n = len(frame)
    for c, dtype in sp.required.items():
        if c not in frame.columns:
            raise DataError(
                f"{kind} table ({n} rows) is missing required column '{c}' of dtype {dtype}",
                source=source,
                column=c,
            )
    for c in frame.columns:
        if c not in sp.columns:
            raise DataError(
                f"{kind} table ({n} rows) has unexpected column '{c}'; expected a subset of {sp.columns}",
                source=source,
                column=c,
            )
        expected = sp.dtype(c)
        got = str(frame[c].dtype)
        ok = got == expected or (expected == "str" and got in ("str", "string", "object"))
        if not ok:
            raise DataError(
                f"{kind} table ({n} rows) column '{c}' has dtype {got}; expected {expected}",
                source=source,
                column=c,
            )
    if n and frame[TS].isna().any():
        i = int(np.flatnonzero(frame[TS].isna().to_numpy())[0])
        raise DataError(
            f"{kind} table ({n} rows) has a missing timestamp at row {i}; expected a UTC time",
            source=source,
            column=TS,
        )


def validate_trades(frame: pd.DataFrame, source: str | None = None) -> None:
    """Contract check for a trades table (see :func:`validate`)."""
    validate(frame, "trades", source=source)


def validate_quotes(frame: pd.DataFrame, source: str | None = None) -> None:
    """Contract check for a quotes table (see :func:`validate`)."""
    validate(frame, "quotes", source=source)


def validate_book(frame: pd.DataFrame, source: str | None = None) -> None:
    """Contract check for a book table (see :func:`validate`)."""
    validate(frame, "book", source=source)


def validate_bars(frame: pd.DataFrame, source: str | None = None) -> None:
    """Contract check for a bars table (see :func:`validate`)."""
    validate(frame, "bars", source=source)


def empty(kind: str) -> pd.DataFrame:
    """An empty frame with the required columns of ``kind``."""
    sp = spec(kind)
    return pd.DataFrame(
        {c: pd.Series(dtype=d if d != "str" else "str") for c, d in sp.required.items()}
    )
