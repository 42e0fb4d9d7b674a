"""Deribit files: the DVOL implied-volatility index and option snapshots.

Formats
-------
``deribit_dvol``
    ``dvol_daily.parquet``: ``date, symbol (BTC/ETH), open, high, low, close`` of Deribit's 30-day
    implied-volatility index, annualised, in percent (55.0 = 55%), as published. Rows become
    ``bars`` in table ``dvol_1d`` with symbols ``BTC-DVOL``/``ETH-DVOL`` and
    ``ts = date + 1 day`` 00:00 UTC (the close of the UTC day).
``deribit_options_marks``
    ``btc_options_marks_2024-05.parquet``: ``currency, option_type (call/put), strike, creation,
    maturity, mark_price, last_price, mark_iv (%), index_price``. ``ts`` is ``creation``, the
    instrument's last-trade time (naive UTC), because the file carries no snapshot time: the marks
    themselves were collected 2024-05-22..24, so ``ts`` is a lower bound of when they were valid.
    ``underlying_px`` is the index price (the file has no forward).
``deribit_option_chain``
    ``eth_option_chain_2024-01-08.parquet`` (one ``public/get_book_summary_by_currency``
    snapshot): ``instrument_name, creation_timestamp (ms), bid_price, ask_price, mark_price,
    underlying_price, open_interest, expire_date (26JAN24), strike_price, option_type (C/P)``.
    ``underlying_px`` is the price of the option's underlying future (or synthetic future).

Both option formats give the ``options`` kind (table ``options``): ``symbol`` = the Deribit
instrument name (``BTC-25MAY24-63000-C``), ``underlying`` = the coin, ``expiry`` = expiry day
08:00 UTC (Deribit's settlement time), prices in the coin, ``mark_iv`` a fraction.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from features.readers.base import Chunk
from features.readers.generic import (
    DEFAULT_CHUNK_ROWS,
    ONE_DAY,
    day_close_ts,
    is_parquet,
    iter_parquet,
    numeric,
    parquet_columns,
    parse_ts,
)
from features.schema import (
    ASK_PX,
    BID_PX,
    CLOSE,
    EXPIRY,
    HIGH,
    LOW,
    MARK_IV,
    MARK_PX,
    OPEN,
    OPEN_INTEREST,
    OPTION_TYPE,
    STRIKE,
    SYMBOL,
    TS,
    UNDERLYING,
    UNDERLYING_PX,
    DataError,
    conform,
)
from features.symbols import deribit_code

EXPIRY_TIME = pd.Timedelta(hours=8)
"""Deribit options and futures expire at 08:00 UTC."""

DVOL_COLUMNS = ["date", "symbol", OPEN, HIGH, LOW, CLOSE]
MARKS_COLUMNS = [
    "currency",
    "option_type",
    "strike",
    "creation",
    "maturity",
    "mark_price",
    "mark_iv",
    "index_price",
]
CHAIN_COLUMNS = [
    "instrument_name",
    "creation_timestamp",
    "bid_price",
    "ask_price",
    "mark_price",
    "underlying_price",
    "open_interest",
    "expire_date",
    "strike_price",
    "option_type",
]
_TYPES = {"call": "C", "put": "P", "c": "C", "p": "P"}


def instrument_name(currency: str, expiry: pd.Timestamp, strike: float, option_type: str) -> str:
    """Deribit option name, e.g. ``BTC-25MAY24-63000-C`` (day without a leading zero; a
    fractional strike written with "d", ``0d625``)."""
    day = deribit_code(expiry)
    k = str(int(strike)) if float(strike).is_integer() else repr(float(strike)).replace(".", "d")
    return f"{currency}-{day}-{k}-{option_type}"


def parse_expiry_code(codes: pd.Series, *, source: str, column: str) -> pd.Series:
    """Deribit expiry codes (``26JAN24``, ``9JAN24``) -> 08:00 UTC on that day."""
    codes = codes.reset_index(drop=True).astype("str").str.strip().str.upper()
    days = pd.to_datetime(codes, format="%d%b%y", errors="coerce")
    if days.isna().any():
        i = int(np.flatnonzero(days.isna().to_numpy())[0])
        raise DataError(
            f"row {i}: cannot parse expiry {codes.iloc[i]!r}; expected e.g. 26JAN24",
            source=source,
            column=column,
        )
    return (days + EXPIRY_TIME).dt.tz_localize("UTC").astype("datetime64[ns, UTC]")


def _option_types(values: pd.Series, *, source: str, column: str) -> np.ndarray:
    typ = values.reset_index(drop=True).astype("str").str.strip().str.lower().map(_TYPES)
    if typ.isna().any():
        i = int(np.flatnonzero(typ.isna().to_numpy())[0])
        raise DataError(
            f"row {i}: unknown option type {values.iloc[i]!r}; expected call/put or C/P",
            source=source,
            column=column,
        )
    return typ.to_numpy()


def read_dvol(path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
    """Read ``dvol_daily.parquet`` into ``bars`` chunks of table ``dvol_1d`` (module notes)."""
    path = Path(path)
    src = str(path)
    for raw in iter_parquet(path, chunk_rows=chunk_rows, columns=DVOL_COLUMNS):
        frame = pd.DataFrame(
            {
                TS: day_close_ts(raw["date"]),
                SYMBOL: raw["symbol"].astype("str").str.upper().reset_index(drop=True) + "-DVOL",
            }
        )
        for c in (OPEN, HIGH, LOW, CLOSE):
            frame[c] = numeric(raw[c].reset_index(drop=True), column=c, source=src)
        yield Chunk("dvol_1d", "bars", conform(frame, "bars", source=src), src, interval=ONE_DAY)


def read_options_marks(path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
    """Read a Deribit option marks file (``btc_options_marks_2024-05.parquet``) into ``options``."""
    path = Path(path)
    src = str(path)
    for raw in iter_parquet(path, chunk_rows=chunk_rows, columns=MARKS_COLUMNS):
        raw = raw.reset_index(drop=True)
        expiry = parse_ts(raw["maturity"], column="maturity", source=src)
        if (expiry.dt.floor("D") + EXPIRY_TIME != expiry).any():
            i = int(np.flatnonzero((expiry.dt.floor("D") + EXPIRY_TIME != expiry).to_numpy())[0])
            raise DataError(
                f"row {i}: maturity {raw['maturity'].iloc[i]!r} is not at 08:00 UTC "
                "(Deribit's expiry time)",
                source=src,
                column="maturity",
            )
        currency = raw["currency"].astype("str").str.upper()
        typ = _option_types(raw["option_type"], source=src, column="option_type")
        strike = numeric(raw["strike"], column="strike", source=src)
        names = [
            instrument_name(c, e, k, t)
            for c, e, k, t in zip(currency, expiry, strike, typ, strict=True)
        ]
        frame = pd.DataFrame(
            {
                TS: parse_ts(raw["creation"], column="creation", source=src),
                SYMBOL: names,
                UNDERLYING: currency.to_numpy(),
                EXPIRY: expiry,
                STRIKE: strike,
                OPTION_TYPE: typ,
                MARK_PX: numeric(
                    raw["mark_price"], column="mark_price", source=src, required=False
                ),
                MARK_IV: numeric(raw["mark_iv"], column="mark_iv", source=src, required=False)
                / 100.0,
                UNDERLYING_PX: numeric(raw["index_price"], column="index_price", source=src),
            }
        )
        yield Chunk("options", "options", conform(frame, "options", source=src), src)


def read_option_chain(path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
    """Read a Deribit option-chain snapshot (``eth_option_chain_2024-01-08.parquet``) into
    ``options``; ``ts`` = ``creation_timestamp`` (ms, UTC); no IV column in the source."""
    path = Path(path)
    src = str(path)
    for raw in iter_parquet(path, chunk_rows=chunk_rows, columns=CHAIN_COLUMNS):
        raw = raw.reset_index(drop=True)
        names = raw["instrument_name"].astype("str").str.strip()
        parts = names.str.split("-")
        if (parts.str.len() != 4).any():
            i = int(np.flatnonzero((parts.str.len() != 4).to_numpy())[0])
            raise DataError(
                f"row {i}: instrument name {names.iloc[i]!r} is not COIN-DDMMMYY-STRIKE-C/P",
                source=src,
                column="instrument_name",
            )
        frame = pd.DataFrame(
            {
                TS: parse_ts(
                    raw["creation_timestamp"], column="creation_timestamp", source=src, unit="ms"
                ),
                SYMBOL: names.to_numpy(),
                UNDERLYING: parts.str[0].to_numpy(),
                EXPIRY: parse_expiry_code(raw["expire_date"], source=src, column="expire_date"),
                STRIKE: numeric(raw["strike_price"], column="strike_price", source=src),
                OPTION_TYPE: _option_types(raw["option_type"], source=src, column="option_type"),
            }
        )
        for canon, col in (
            (BID_PX, "bid_price"),
            (ASK_PX, "ask_price"),
            (MARK_PX, "mark_price"),
            (UNDERLYING_PX, "underlying_price"),
            (OPEN_INTEREST, "open_interest"),
        ):
            frame[canon] = numeric(raw[col], column=col, source=src, required=False)
        yield Chunk("options", "options", conform(frame, "options", source=src), src)


READERS = {
    "deribit_dvol": read_dvol,
    "deribit_options_marks": read_options_marks,
    "deribit_option_chain": read_option_chain,
}
"""Format name -> reader."""


def sniff(path: Path) -> str | None:
    """Recognise the Deribit parquet files by their schema (DVOL also by its name)."""
    path = Path(path)
    if not is_parquet(path):
        return None
    try:
        cols = set(parquet_columns(path))
    except DataError:
        return None
    if set(DVOL_COLUMNS) <= cols and "dvol" in path.name.lower():
        return "deribit_dvol"
    if set(MARKS_COLUMNS) <= cols:
        return "deribit_options_marks"
    if set(CHAIN_COLUMNS) <= cols:
        return "deribit_option_chain"
    return None
