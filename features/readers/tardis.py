"""Tardis.dev downloadable CSV files (``{exchange}_{data_type}_{date}_{symbol}.csv.gz``).

Layouts (https://docs.tardis.dev/downloadable-csv-files; times are microseconds since the epoch,
UTC; files are usually gzipped):

=====================  ==============================================================================
format                 columns
=====================  ==============================================================================
``tardis_trades``      exchange, symbol, timestamp, local_timestamp, id, side, price, amount
``tardis_quotes``      exchange, symbol, timestamp, local_timestamp, ask_amount, ask_price, bid_price,
                       bid_amount
``tardis_book``        exchange, symbol, timestamp, local_timestamp, asks[0].price, asks[0].amount,
                       bids[0].price, bids[0].amount, ... (``book_snapshot_N``; N from the header)
``tardis_derivative_   exchange, symbol, timestamp, local_timestamp, funding_timestamp, funding_rate,
ticker``               predicted_funding_rate, open_interest, last_price, index_price, mark_price
``tardis_options_      exchange, symbol, timestamp, local_timestamp, type, strike_price, expiration,
chain``                open_interest, last_price, bid_price, bid_amount, bid_iv, ask_price, ask_amount,
                       ask_iv, mark_price, mark_iv, underlying_index, underlying_price, delta, gamma,
                       vega, theta, rho
=====================  ==============================================================================

Conventions
-----------
- ``ts`` is the exchange ``timestamp``; where a row has none (some venues do not send one) the
  collector's ``local_timestamp`` is used. Columns are matched by name, so their order may vary.
- Trades: ``side`` buy/sell/unknown -> +1/-1/0 (the taker side); ``trade_id`` is kept when every id in
  a chunk is an integer (venues with string ids such as UUIDs get none). ``size`` = ``amount`` in the
  unit the venue reports (contracts for inverse Deribit/BitMEX perpetuals).
- Book snapshots become the long ``book`` table: ``side`` +1 bid / -1 ask, ``level`` 0 = best;
  empty levels (no price) are dropped.
- ``derivative_ticker`` becomes ``funding`` rows (funding_rate, mark_px, index_px, open_interest);
  fields a message did not carry are NaN.
- ``options_chain`` becomes ``options``: ``underlying`` is the base currency (symbol prefix before
  the first "-"), ``option_type`` "C"/"P", ``mark_iv`` as a fraction (Tardis gives percent),
  prices in the units the venue quotes (Deribit: the coin).
- ``liquidations`` files share the trades header; they are recognised by name and not read.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from features.readers._io import first_line, iter_csv
from features.readers.base import Chunk
from features.readers.generic import (
    DEFAULT_CHUNK_ROWS,
    check_chunk_rows,
    epoch_ts,
    integers,
    numeric,
    split_frame,
)
from features.schema import (
    ASK_PX,
    ASK_SIDE,
    ASK_SZ,
    BID_PX,
    BID_SIDE,
    BID_SZ,
    EXPIRY,
    FUNDING_RATE,
    INDEX_PX,
    LEVEL,
    MARK_IV,
    MARK_PX,
    OPEN_INTEREST,
    OPTION_TYPE,
    PRICE,
    PX,
    SIDE,
    SIZE,
    STRIKE,
    SYMBOL,
    SZ,
    TRADE_ID,
    TS,
    UNDERLYING,
    UNDERLYING_PX,
    DataError,
    conform,
)

_BASE = ["exchange", "symbol", "timestamp", "local_timestamp"]
TRADES_COLUMNS = [*_BASE, "id", "side", "price", "amount"]
QUOTES_COLUMNS = [*_BASE, "ask_amount", "ask_price", "bid_price", "bid_amount"]
DERIVATIVE_TICKER_COLUMNS = [
    *_BASE,
    "funding_timestamp",
    "funding_rate",
    "predicted_funding_rate",
    "open_interest",
    "last_price",
    "index_price",
    "mark_price",
]
OPTIONS_CHAIN_COLUMNS = [
    *_BASE,
    "type",
    "strike_price",
    "expiration",
    "open_interest",
    "last_price",
    "bid_price",
    "bid_amount",
    "bid_iv",
    "ask_price",
    "ask_amount",
    "ask_iv",
    "mark_price",
    "mark_iv",
    "underlying_index",
    "underlying_price",
    "delta",
    "gamma",
    "vega",
    "theta",
    "rho",
]
_BOOK_RE = re.compile(r"(asks|bids)\[(\d+)\]\.(price|amount)")
_SIDES = {"buy": 1, "sell": -1, "unknown": 0}
_TYPES = {"call": "C", "put": "P", "c": "C", "p": "P"}


def book_columns(levels: int) -> list[str]:
    """The header of a ``book_snapshot_{levels}`` file."""
    cols = list(_BASE)
    for side in ("asks", "bids"):
        for i in range(levels):
            cols += [f"{side}[{i}].price", f"{side}[{i}].amount"]
    return cols


def _header(path: Path) -> list[str]:
    head = first_line(path)
    return [c.strip() for c in next(csv.reader([head]))] if head else []


def _check_header(path: Path, header: list[str], need: list[str], fmt: str) -> None:
    missing = [c for c in need if c not in header]
    if missing:
        raise DataError(
            f"not a {fmt} file: header lacks column(s) {missing}; got {header}",
            source=str(path),
            line=1,
        )


def _ts(raw: pd.DataFrame, src: str, line: int) -> pd.Series:
    """Exchange timestamp, falling back to ``local_timestamp`` where it is empty."""
    stamp = raw["timestamp"].reset_index(drop=True)
    if stamp.isna().any():
        stamp = stamp.where(stamp.notna(), raw["local_timestamp"].reset_index(drop=True))
    return epoch_ts(stamp, unit="us", column="timestamp", source=src, first_line=line)


def _symbols(raw: pd.DataFrame, symbol: str | None, src: str, line: int) -> np.ndarray:
    if symbol is not None:
        return np.full(len(raw), symbol, dtype=object)
    sym = raw["symbol"].reset_index(drop=True)
    if sym.isna().any():
        i = int(np.flatnonzero(sym.isna().to_numpy())[0])
        raise DataError("empty symbol", source=src, line=line + i, column="symbol")
    return sym.astype("str").to_numpy()


def read_trades(
    path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, symbol: str | None = None
) -> Iterator[Chunk]:
    """Read a Tardis ``trades`` CSV into ``trades`` chunks (see the module notes).

    Parameters
    ----------
    path : the CSV file, optionally gzipped.
    chunk_rows : at most this many rows per chunk.
    symbol : override the file's ``symbol`` column (e.g. a canonical name such as "BTCUSDT-PERP").
    """
    path = Path(path)
    src = str(path)
    check_chunk_rows(chunk_rows)
    _check_header(path, _header(path), TRADES_COLUMNS, "Tardis trades")
    for line, raw in iter_csv(
        path,
        chunk_rows=chunk_rows,
        header=True,
        dtype={"id": "str", "side": "str", "symbol": "str"},
    ):
        side_txt = raw["side"].reset_index(drop=True).str.strip().str.lower()
        side = side_txt.map(_SIDES)
        if side.isna().any():
            i = int(np.flatnonzero(side.isna().to_numpy())[0])
            raise DataError(
                f"unknown side {raw['side'].iloc[i]!r}; expected buy, sell or unknown",
                source=src,
                line=line + i,
                column="side",
            )
        frame = pd.DataFrame(
            {
                TS: _ts(raw, src, line),
                SYMBOL: _symbols(raw, symbol, src, line),
                PRICE: numeric(raw["price"], column="price", source=src, first_line=line),
                SIZE: numeric(raw["amount"], column="amount", source=src, first_line=line),
                SIDE: side.to_numpy(dtype="int8"),
            }
        )
        ids = raw["id"].reset_index(drop=True)
        parsed = pd.to_numeric(ids, errors="coerce")
        if parsed.notna().all() and parsed.dtype.kind in "iu":
            frame[TRADE_ID] = integers(
                parsed, dtype="Int64", column="id", source=src, first_line=line
            )
        yield Chunk("trades", "trades", conform(frame, "trades", source=src), src, first_line=line)


def read_quotes(
    path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, symbol: str | None = None
) -> Iterator[Chunk]:
    """Read a Tardis ``quotes`` CSV (top of book) into ``quotes`` chunks; an empty side is NaN."""
    path = Path(path)
    src = str(path)
    check_chunk_rows(chunk_rows)
    _check_header(path, _header(path), QUOTES_COLUMNS, "Tardis quotes")
    for line, raw in iter_csv(path, chunk_rows=chunk_rows, header=True, dtype={"symbol": "str"}):
        frame = pd.DataFrame({TS: _ts(raw, src, line), SYMBOL: _symbols(raw, symbol, src, line)})
        for canon, col in (
            (BID_PX, "bid_price"),
            (BID_SZ, "bid_amount"),
            (ASK_PX, "ask_price"),
            (ASK_SZ, "ask_amount"),
        ):
            frame[canon] = numeric(
                raw[col], column=col, source=src, first_line=line, required=False
            )
        yield Chunk("quotes", "quotes", conform(frame, "quotes", source=src), src, first_line=line)


def book_levels(header: list[str]) -> int:
    """The number of levels N of a ``book_snapshot_N`` header (0 if it is not one)."""
    idx = [int(m.group(2)) for c in header if (m := _BOOK_RE.fullmatch(c))]
    return max(idx) + 1 if idx else 0


def read_book(
    path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, symbol: str | None = None
) -> Iterator[Chunk]:
    """Read a Tardis ``book_snapshot_N`` CSV into the long ``book`` table.

    Each snapshot row becomes up to 2N rows (``side`` +1 bid / -1 ask, ``level`` 0..N-1, 0 = best);
    levels without a price are dropped. Chunks hold at most ``chunk_rows`` book rows.
    """
    path = Path(path)
    src = str(path)
    check_chunk_rows(chunk_rows)
    header = _header(path)
    n = book_levels(header)
    if n == 0:
        raise DataError(
            f"not a Tardis book_snapshot file: no asks[i].price columns in {header}",
            source=src,
            line=1,
        )
    _check_header(path, header, book_columns(n), f"Tardis book_snapshot_{n}")
    rows_in = max(1, chunk_rows // (2 * n))
    for line, raw in iter_csv(path, chunk_rows=rows_in, header=True, dtype={"symbol": "str"}):
        ts = _ts(raw, src, line)
        sym = _symbols(raw, symbol, src, line)
        parts = []
        for side_name, side in (("bids", BID_SIDE), ("asks", ASK_SIDE)):
            for i in range(n):
                pcol, scol = f"{side_name}[{i}].price", f"{side_name}[{i}].amount"
                px = numeric(raw[pcol], column=pcol, source=src, first_line=line, required=False)
                sz = numeric(raw[scol], column=scol, source=src, first_line=line, required=False)
                parts.append(
                    pd.DataFrame(
                        {
                            "_row": np.arange(len(raw)),
                            TS: ts,
                            SYMBOL: sym,
                            SIDE: np.int8(side),
                            LEVEL: np.int16(i),
                            PX: px,
                            SZ: sz,
                        }
                    )
                )
        long = pd.concat(parts, ignore_index=True)
        long = long[long[PX].notna()]
        # snapshot order, then bids before asks, best level first
        long = long.sort_values(["_row", SIDE, LEVEL], ascending=[True, False, True], kind="stable")
        for _, piece in split_frame(long.reset_index(drop=True), chunk_rows):
            yield Chunk(
                "book",
                "book",
                conform(piece, "book", source=src),
                src,
                first_line=line + int(piece["_row"].iloc[0]),
            )


def read_derivative_ticker(
    path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, symbol: str | None = None
) -> Iterator[Chunk]:
    """Read a Tardis ``derivative_ticker`` CSV into ``funding`` chunks (table ``funding``).

    ``funding_rate`` is the current period's rate as published; ``mark_px``/``index_px``/
    ``open_interest`` ride along; fields a message did not carry are NaN.
    """
    path = Path(path)
    src = str(path)
    check_chunk_rows(chunk_rows)
    _check_header(path, _header(path), DERIVATIVE_TICKER_COLUMNS, "Tardis derivative_ticker")
    for line, raw in iter_csv(path, chunk_rows=chunk_rows, header=True, dtype={"symbol": "str"}):
        frame = pd.DataFrame({TS: _ts(raw, src, line), SYMBOL: _symbols(raw, symbol, src, line)})
        for canon, col in (
            (FUNDING_RATE, "funding_rate"),
            (MARK_PX, "mark_price"),
            (INDEX_PX, "index_price"),
            (OPEN_INTEREST, "open_interest"),
        ):
            frame[canon] = numeric(
                raw[col], column=col, source=src, first_line=line, required=False
            )
        yield Chunk(
            "funding", "funding", conform(frame, "funding", source=src), src, first_line=line
        )


def read_options_chain(path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
    """Read a Tardis ``options_chain`` CSV into ``options`` chunks (table ``options``).

    ``mark_iv`` percent -> fraction; ``expiry`` from ``expiration`` (microseconds, UTC);
    ``option_type`` "C"/"P" from ``type`` call/put; ``underlying`` = the symbol's base currency.
    """
    path = Path(path)
    src = str(path)
    check_chunk_rows(chunk_rows)
    _check_header(path, _header(path), OPTIONS_CHAIN_COLUMNS, "Tardis options_chain")
    for line, raw in iter_csv(
        path,
        chunk_rows=chunk_rows,
        header=True,
        dtype={"symbol": "str", "type": "str", "underlying_index": "str"},
    ):
        sym = _symbols(raw, None, src, line)
        typ = raw["type"].reset_index(drop=True).str.strip().str.lower().map(_TYPES)
        if typ.isna().any():
            i = int(np.flatnonzero(typ.isna().to_numpy())[0])
            raise DataError(
                f"unknown option type {raw['type'].iloc[i]!r}; expected call or put",
                source=src,
                line=line + i,
                column="type",
            )
        frame = pd.DataFrame(
            {
                TS: _ts(raw, src, line),
                SYMBOL: sym,
                UNDERLYING: pd.Series(sym).str.split("-").str[0].to_numpy(),
                EXPIRY: epoch_ts(
                    raw["expiration"], unit="us", column="expiration", source=src, first_line=line
                ),
                STRIKE: numeric(
                    raw["strike_price"], column="strike_price", source=src, first_line=line
                ),
                OPTION_TYPE: typ.to_numpy(),
            }
        )
        for canon, col in (
            (BID_PX, "bid_price"),
            (ASK_PX, "ask_price"),
            (MARK_PX, "mark_price"),
            (UNDERLYING_PX, "underlying_price"),
            (OPEN_INTEREST, "open_interest"),
        ):
            frame[canon] = numeric(
                raw[col], column=col, source=src, first_line=line, required=False
            )
        frame[MARK_IV] = (
            numeric(raw["mark_iv"], column="mark_iv", source=src, first_line=line, required=False)
            / 100.0
        )
        yield Chunk(
            "options", "options", conform(frame, "options", source=src), src, first_line=line
        )


READERS = {
    "tardis_trades": read_trades,
    "tardis_quotes": read_quotes,
    "tardis_book": read_book,
    "tardis_derivative_ticker": read_derivative_ticker,
    "tardis_options_chain": read_options_chain,
}
"""Format name -> reader."""


def sniff(path: Path) -> str | None:
    """Recognise a Tardis CSV by its header (first line only); None for anything else.

    ``liquidations`` files have the trades header and are told apart by their name; they are not
    read (None).
    """
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".csv") or name.endswith(".csv.gz")):
        return None
    try:
        header = set(_header(path))
    except (OSError, UnicodeDecodeError, EOFError, csv.Error):
        return None
    if not set(_BASE) <= header:
        return None
    if set(OPTIONS_CHAIN_COLUMNS) <= header:
        return "tardis_options_chain"
    if set(DERIVATIVE_TICKER_COLUMNS) <= header:
        return "tardis_derivative_ticker"
    if set(QUOTES_COLUMNS) <= header:
        return "tardis_quotes"
    if book_levels(list(header)):
        return "tardis_book"
    if set(TRADES_COLUMNS) <= header:
        return None if "liquidations" in name else "tardis_trades"
    return None
