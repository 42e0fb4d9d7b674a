"""TAQ-style samples shipped with the R package ``highfrequency`` (parquet conversions).

Formats
-------
``taq_trades``
    ``DT, SYMBOL, PRICE, SIZE`` (+ ``EX``, ``COND``, ``CORR``, ``NUMTRADES`` ignored):
    ``sampleTData``, ``sampleTDataRaw``, ``sampleMultiTradeData``, ``sampleTDataEurope``.
    ``side`` is 0 (TAQ does not say who initiated a trade).
``taq_quotes``
    ``DT, SYMBOL, BID, BIDSIZ, OFR, OFRSIZ`` (+ ``EX``, ``MIDQUOTE`` ignored): ``sampleQData``,
    ``sampleQDataRaw``. Sizes are as recorded (round lots of 100 shares in TAQ).
``taq_one_minute``
    ``DT`` plus one price column per series (``STOCK``, ``MARKET``): ``sampleOneMinuteData`` ->
    the ``levels`` kind, table ``levels_1m``, one symbol per column. The stamps are bar closes
    already (a price stamped 09:31 is the last price at 09:31), so no shift is applied; the 09:30
    row is the opening price.

Time zones (naive ``DT`` is a wall-clock time)
----------------------------------------------
Per the folder's SOURCE.md: ``sampleTData``/``sampleQData`` are UTC (their session runs 14:30..21:00,
i.e. 09:30..16:00 New York). The raw samples are UTC too: they span 09:04..00:57 next day, which is
TAQ's 04:00..20:00 New York extended session in UTC, not New York time. ``sampleMultiTradeData``
and ``sampleOneMinuteData`` are New York time (09:30..16:00), ``sampleTDataEurope`` is European
local time, read as Europe/Berlin (its 09:00..17:30 session is Xetra's). Files with other names
default to America/New_York; the ``tz`` option overrides. Time-zone-aware columns are converted.

Raw files keep every row: condition codes (``COND``), corrections (``CORR`` != 0), pre/post-market
prints and zero bids/offers are left for the cleaning step (:mod:`features.validate`) to filter
with a report, so a reader never drops data silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from features.readers.base import Chunk
from features.readers.generic import (
    DEFAULT_CHUNK_ROWS,
    check_chunk_rows,
    is_parquet,
    iter_parquet,
    numeric,
    parquet_columns,
    parse_ts,
    split_frame,
)
from features.schema import (
    ASK_PX,
    ASK_SZ,
    BID_PX,
    BID_SZ,
    CLOSE,
    PRICE,
    SIDE,
    SIZE,
    SYMBOL,
    TS,
    UNKNOWN_SIDE,
    DataError,
    conform,
)

SAMPLE_TZ = {
    "sampletdata": "UTC",
    "sampleqdata": "UTC",
    "sampletdataraw": "UTC",
    "sampleqdataraw": "UTC",
    "samplemultitradedata": "America/New_York",
    "sampletdataeurope": "Europe/Berlin",
    "sampleoneminutedata": "America/New_York",
}
"""Time zone of the naive ``DT`` of each highfrequency sample (by lower-cased file stem)."""
DEFAULT_TZ = "America/New_York"
TRADE_COLUMNS = ["DT", "SYMBOL", "PRICE", "SIZE"]
QUOTE_COLUMNS = ["DT", "SYMBOL", "BID", "BIDSIZ", "OFR", "OFRSIZ"]
ONE_MINUTE = pd.Timedelta(minutes=1)


def sample_tz(path: Path, tz: str | None = None) -> str:
    """The time zone of a sample's naive times: ``tz`` if given, else by file name, else New York."""
    if tz is not None:
        return tz
    return SAMPLE_TZ.get(Path(path).name.split(".")[0].lower(), DEFAULT_TZ)


def read_taq_trades(
    path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, tz: str | None = None
) -> Iterator[Chunk]:
    """Read a TAQ-style trades parquet into ``trades`` chunks (side 0; module notes)."""
    path = Path(path)
    src = str(path)
    zone = sample_tz(path, tz)
    for raw in iter_parquet(path, chunk_rows=chunk_rows, columns=TRADE_COLUMNS):
        raw = raw.reset_index(drop=True)
        frame = pd.DataFrame(
            {
                TS: parse_ts(raw["DT"], column="DT", source=src, tz=zone),
                SYMBOL: raw["SYMBOL"].astype("str").to_numpy(),
                PRICE: numeric(raw["PRICE"], column="PRICE", source=src),
                SIZE: numeric(raw["SIZE"], column="SIZE", source=src),
                SIDE: np.full(len(raw), UNKNOWN_SIDE, dtype="int8"),
            }
        )
        yield Chunk("trades", "trades", conform(frame, "trades", source=src), src)


def read_taq_quotes(
    path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, tz: str | None = None
) -> Iterator[Chunk]:
    """Read a TAQ-style quotes parquet (BID, BIDSIZ, OFR, OFRSIZ) into ``quotes`` chunks."""
    path = Path(path)
    src = str(path)
    zone = sample_tz(path, tz)
    for raw in iter_parquet(path, chunk_rows=chunk_rows, columns=QUOTE_COLUMNS):
        raw = raw.reset_index(drop=True)
        frame = pd.DataFrame(
            {
                TS: parse_ts(raw["DT"], column="DT", source=src, tz=zone),
                SYMBOL: raw["SYMBOL"].astype("str").to_numpy(),
            }
        )
        for canon, col in (
            (BID_PX, "BID"),
            (BID_SZ, "BIDSIZ"),
            (ASK_PX, "OFR"),
            (ASK_SZ, "OFRSIZ"),
        ):
            frame[canon] = numeric(raw[col], column=col, source=src)
        yield Chunk("quotes", "quotes", conform(frame, "quotes", source=src), src)


def read_taq_one_minute(
    path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, tz: str | None = None
) -> Iterator[Chunk]:
    """Read a 1-minute price panel (``DT`` + one column per series) into ``levels`` chunks.

    Each non-``DT`` column is one symbol (``STOCK``, ``MARKET``); empty cells are dropped; rows
    are time-major with the symbols in column order.
    """
    path = Path(path)
    src = str(path)
    check_chunk_rows(chunk_rows)
    zone = sample_tz(path, tz)
    cols = parquet_columns(path)
    if "DT" not in cols:
        raise DataError(f"1-minute panel needs a DT column; got {cols}", source=src)
    symbols = [c for c in cols if c != "DT"]
    rows_in = max(1, chunk_rows // max(1, len(symbols)))
    for raw in iter_parquet(path, chunk_rows=rows_in):
        raw = raw.reset_index(drop=True)
        ts = parse_ts(raw["DT"], column="DT", source=src, tz=zone)
        values = np.column_stack(
            [numeric(raw[s], column=s, source=src, required=False) for s in symbols]
        )
        r, c = np.nonzero(~np.isnan(values))
        frame = pd.DataFrame(
            {
                TS: ts.iloc[r].reset_index(drop=True),
                SYMBOL: np.asarray(symbols, dtype=object)[c],
                CLOSE: values[r, c],
            }
        )
        frame = conform(frame, "levels", source=src)
        for _, piece in split_frame(frame, chunk_rows):
            yield Chunk("levels_1m", "levels", piece, src, interval=ONE_MINUTE)


READERS = {
    "taq_trades": read_taq_trades,
    "taq_quotes": read_taq_quotes,
    "taq_one_minute": read_taq_one_minute,
}
"""Format name -> reader."""


def sniff(path: Path) -> str | None:
    """Recognise TAQ-style parquet files by their columns (schema only)."""
    path = Path(path)
    if not is_parquet(path):
        return None
    try:
        cols = set(parquet_columns(path))
    except DataError:
        return None
    if set(QUOTE_COLUMNS) <= cols:
        return "taq_quotes"
    if set(TRADE_COLUMNS) <= cols:
        return "taq_trades"
    if {"DT", "STOCK", "MARKET"} <= cols:
        return "taq_one_minute"
    return None
