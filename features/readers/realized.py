"""Daily realized-measure tables -> the ``realized`` kind.

Formats
-------
``realized_measures_csv``
    ``{btc,eth}_measures.csv`` (Binance spot, 5-minute returns, UTC days): ``date, RV, RQ,
    RS_plus, RS_minus, delta_J, BV, nobs``; the same format for any other daily series, e.g. an
    equity index (``djia_measures.csv``). Symbol from the ``symbol`` option, kept as given, or
    the file name's prefix through :func:`features.symbols.spot_pair`: a known crypto asset gets
    its USDT pair (``btc_measures.csv`` -> ``BTCUSDT``), any other name is kept (``djia`` ->
    ``DJIA``), never given a quote currency. The calendar follows from the symbol
    (:func:`features.symbols.symbol_meta`): on the 24/7 calendar ``ts = date + 1 day`` 00:00 UTC
    (the close of the UTC day); on an exchange calendar (``DJIA``, ``SPX``: NYSE, 252 sessions a
    year) ``ts`` is the date at the exchange's local close (below). RV -> rv_var, BV -> bv_var, RQ -> rq_var2 (n/3 sum r^4, variance squared), RS_plus ->
    rs_pos_var, RS_minus -> rs_neg_var, nobs -> n_obs; ``delta_J`` = RS_plus - RS_minus is
    derivable and dropped. Table ``realized_1d``.
``oxford_man_library``
    The Oxford-Man realized library in long form (``spx_realized_library.parquet``: ``date,
    symbol, rv5, bv, rsv, rk_parzen, nobs, close_price, ...``). ``.SPX`` -> ``SPX``; rv5 ->
    rv_var, bv -> bv_var, rsv -> rs_neg_var, rk_parzen -> rk_var, nobs -> n_obs, close_price ->
    close. Table ``realized_1d``.
``spy_realized_hf``
    ``spy_realized_measures_highfrequency.parquet`` (highfrequency R package's SPYRM): ``DT, RV5,
    BPV5, RK5, RQ5, ..., CLOSE``; symbol ``SPY``; RV5 -> rv_var, BPV5 -> bv_var, RK5 -> rk_var,
    CLOSE -> close. ``RQ5`` is left out: its ratio to RV5^2 has median about 1e8, while a
    realized quarticity n/3 sum r^4 in log-return units is of the order of RV^2 (exactly RV^2 for
    Gaussian returns of equal size; median RQ/RV^2 = 2.3 in the Binance BTC and ETH files). So
    RQ5 is in percent-return units (x 1e8) by a convention the source does not document; rather
    than guess a rescaling the column is not mapped. Table ``realized_1d``.
``oxford_man_wide``
    ``wide_rv5.parquet`` / ``wide_rk_parzen.parquet``: a ``DATE`` column and one column per index;
    NaN cells (index closed) are dropped. rv5 -> table ``realized_1d`` (rv_var); rk_parzen ->
    table ``realized_rk_1d`` with the kernel in both rv_var and rk_var. The measure comes from the
    file name or the ``measure`` option.

Dates of the Oxford-Man extracts (corrected on reading)
--------------------------------------------------------
The library stamped each day at local midnight in London (``2017-07-03 00:00:00+01:00``); the R
extracts these files come from turned those stamps into UTC dates, so every day that began in
British Summer Time carries the previous day's date. The evidence in the files: uncorrected, about
57% of the SPX rows fall on Sundays and Fridays are missing in the same weeks; the summer rows are
exactly those whose ``open_time`` is 09:30 (New York) rather than 08:30 (Chicago); the half-day
session of 3 July 2017 (``nobs`` 13801, close 2429.01) is dated 2017-07-02, a Sunday. After the
correction below the SPX dates are Monday..Friday only, and the only weekend rows of the 30-index
panel are BSESN/NSEI's special sessions (Saturday budget days, Diwali Sunday 2016-10-30). The two
Oxford-Man readers therefore move a date ``D`` to ``D + 1`` when local midnight in London on
``D + 1`` is in summer time (option ``fix_dates=False`` keeps the dates as stored).

Time stamps of the equity measures
----------------------------------
``ts`` is the date at the index's local close, in UTC: the close of the symbol's exchange
calendar in :mod:`features.symbols` (SPX/DJI/IXIC/RUT/SPY... 16:00 America/New_York, FTSE 16:30
London, GDAXI 17:30 Berlin, N225 15:00 Tokyo, ...). Indices without a calendar there (AEX, AORD,
BVSP, KS11, ...) are stamped 23:59:59 UTC of the date: after every listed market's close, so a
feature at that time never uses a value before it exists, at the price of up to a day's delay.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from features.readers._io import first_line, iter_csv
from features.readers.base import Chunk
from features.readers.generic import (
    DEFAULT_CHUNK_ROWS,
    ONE_DAY,
    check_chunk_rows,
    day_close_ts,
    is_parquet,
    iter_parquet,
    local_time_utc,
    numeric,
    parquet_columns,
    parse_ts,
    split_frame,
)
from features.schema import (
    BV,
    CLOSE,
    N_OBS,
    RK,
    RQ,
    RS_NEG,
    RS_POS,
    RV,
    SYMBOL,
    TS,
    DataError,
    conform,
)
from features.symbols import CALENDARS, spot_pair, symbol_meta

TABLE = "realized_1d"
RK_TABLE = "realized_rk_1d"
FALLBACK_CLOSE_UTC = "23:59:59"

MEASURES_CSV = {"RV": RV, "BV": BV, "RQ": RQ, "RS_plus": RS_POS, "RS_minus": RS_NEG, "nobs": N_OBS}
LIBRARY = {"rv5": RV, "bv": BV, "rsv": RS_NEG, "rk_parzen": RK, "nobs": N_OBS, "close_price": CLOSE}
SPY_HF = {"RV5": RV, "BPV5": BV, "RK5": RK, "CLOSE": CLOSE}
WIDE_MEASURES = {"rv5": (TABLE, (RV,)), "rk_parzen": (RK_TABLE, (RV, RK))}


def close_time(symbol: str) -> tuple[str, str]:
    """(wall-clock close "HH:MM[:SS]", time zone) of an index's daily close.

    The exchange calendar of :func:`features.symbols.symbol_meta` when the symbol is a mapped
    index, else ("23:59:59", "UTC").
    """
    meta = symbol_meta(symbol)
    cal = CALENDARS.get(meta.calendar)
    if meta.asset_class in ("equity_index", "vol_index", "equity") and cal and cal.tz != "UTC":
        return cal.close_time, cal.tz
    return FALLBACK_CLOSE_UTC, "UTC"


def index_close_ts(dates: pd.Series, symbols: pd.Series | str) -> pd.Series:
    """Dates at each symbol's local close (see :func:`close_time`), as UTC timestamps."""
    dates = pd.Series(dates).reset_index(drop=True)
    if isinstance(symbols, str):
        t, tz = close_time(symbols)
        return local_time_utc(dates, t, tz)
    symbols = pd.Series(symbols).reset_index(drop=True)
    out = pd.Series(pd.NaT, index=dates.index, dtype="datetime64[ns, UTC]")
    for sym in symbols.unique():
        mask = (symbols == sym).to_numpy()
        t, tz = close_time(sym)
        out[mask] = local_time_utc(dates[mask], t, tz).to_numpy()
    return out


def undo_london_midnight_shift(dates: pd.Series) -> pd.Series:
    """Undo the one-day shift of the Oxford-Man extracts' summer dates (module notes).

    A date ``D`` becomes ``D + 1`` when midnight of ``D + 1`` in Europe/London is in summer time
    (UTC+1), i.e. when the library's stamp ``(D + 1) 00:00+01:00`` was read as the UTC date ``D``.
    Returns naive midnight dates.
    """
    d = pd.to_datetime(pd.Series(dates).reset_index(drop=True))
    if isinstance(d.dtype, pd.DatetimeTZDtype):
        d = d.dt.tz_localize(None)
    d = d.dt.normalize()
    nxt = d + ONE_DAY
    utc = nxt.dt.tz_localize("Europe/London").dt.tz_convert("UTC").dt.tz_localize(None)
    return d.where(utc == nxt, nxt)


def _measures(raw: pd.DataFrame, mapping: dict[str, str], src: str, line: int | None) -> dict:
    return {
        canon: numeric(
            raw[col].reset_index(drop=True),
            column=col,
            source=src,
            first_line=line,
            required=canon == RV,
        )
        for col, canon in mapping.items()
    }


# ---- Binance measures CSV ------------------------------------------------------------------


def measures_symbol(path: Path) -> str:
    """The symbol a measures file's name gives: ``btc_measures.csv`` -> ``BTCUSDT`` (a known crypto
    asset's USDT pair), ``djia_measures.csv`` -> ``DJIA`` (any other name kept as it is)."""
    return spot_pair(Path(path).name.split("_")[0])


def measures_ts(dates: pd.Series, symbol: str) -> pd.Series:
    """Time stamps of daily measures: the exchange's local close on an exchange calendar
    (:func:`index_close_ts`), else the end of the UTC day (``date + 1 day``)."""
    if CALENDARS[symbol_meta(symbol).calendar].weekdays_only:
        return index_close_ts(dates, symbol)
    return day_close_ts(dates)


def read_measures_csv(
    path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, symbol: str | None = None
) -> Iterator[Chunk]:
    """Read a ``{btc,eth}_measures.csv`` file into ``realized_1d`` chunks (see module notes)."""
    path = Path(path)
    src = str(path)
    check_chunk_rows(chunk_rows)
    header = [c.strip() for c in first_line(path).split(",")]
    need = ["date", *MEASURES_CSV]
    missing = [c for c in need if c not in header]
    if missing:
        raise DataError(
            f"realized measures CSV lacks column(s) {missing}; got {header}", source=src, line=1
        )
    sym = symbol.strip() if symbol else measures_symbol(path)
    if not sym:
        raise DataError("the 'symbol' option must be a non-empty name", source=src)
    for line, raw in iter_csv(path, chunk_rows=chunk_rows, header=True, dtype={"date": "str"}):
        dates = parse_ts(raw["date"], column="date", source=src, first_line=line)
        frame = pd.DataFrame(
            {TS: measures_ts(dates, sym), SYMBOL: sym, **_measures(raw, MEASURES_CSV, src, line)}
        )
        yield Chunk(
            TABLE,
            "realized",
            conform(frame, "realized", source=src),
            src,
            first_line=line,
            interval=ONE_DAY,
        )


# ---- Oxford-Man library (long) -------------------------------------------------------------


def read_oxford_man_library(
    path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, fix_dates: bool = True
) -> Iterator[Chunk]:
    """Read the long Oxford-Man realized library parquet into ``realized_1d`` chunks.

    Symbols lose the library's leading dot (``.SPX`` -> ``SPX``); ``ts`` is the (corrected, see
    :func:`undo_london_midnight_shift`; ``fix_dates=False`` keeps the stored dates) trading date at
    the index's local close (module notes).
    """
    path = Path(path)
    src = str(path)
    cols = ["date", "symbol", *LIBRARY]
    for raw in iter_parquet(path, chunk_rows=chunk_rows, columns=cols):
        sym = raw["symbol"].astype("str").str.lstrip(".").reset_index(drop=True)
        dates = undo_london_midnight_shift(raw["date"]) if fix_dates else raw["date"]
        frame = pd.DataFrame(
            {TS: index_close_ts(dates, sym), SYMBOL: sym, **_measures(raw, LIBRARY, src, None)}
        )
        yield Chunk(
            TABLE, "realized", conform(frame, "realized", source=src), src, interval=ONE_DAY
        )


# ---- SPY measures (highfrequency R package) ------------------------------------------------


def read_spy_realized_hf(
    path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, symbol: str = "SPY"
) -> Iterator[Chunk]:
    """Read ``spy_realized_measures_highfrequency.parquet`` into ``realized_1d`` chunks.

    ``ts`` = DT at 16:00 America/New_York (the NYSE close) in UTC; RQ5 is not mapped (module notes).
    """
    path = Path(path)
    src = str(path)
    for raw in iter_parquet(path, chunk_rows=chunk_rows, columns=["DT", *SPY_HF]):
        t, tz = CALENDARS["XNYS"].close_time, CALENDARS["XNYS"].tz
        frame = pd.DataFrame(
            {
                TS: local_time_utc(raw["DT"], t, tz),
                SYMBOL: symbol,
                **_measures(raw, SPY_HF, src, None),
            }
        )
        yield Chunk(
            TABLE, "realized", conform(frame, "realized", source=src), src, interval=ONE_DAY
        )


# ---- Oxford-Man wide panels ----------------------------------------------------------------


def wide_measure(path: Path) -> str | None:
    """``rv5`` or ``rk_parzen`` from a wide file's name (``wide_rv5.parquet``), else None."""
    m = re.search(r"(rv5|rk_parzen)", Path(path).stem.lower())
    return m.group(1) if m else None


def read_oxford_man_wide(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    measure: str | None = None,
    fix_dates: bool = True,
) -> Iterator[Chunk]:
    """Read a wide Oxford-Man panel (``DATE`` + one column per index) into long realized chunks.

    Parameters
    ----------
    path : ``wide_rv5.parquet`` or ``wide_rk_parzen.parquet``.
    chunk_rows : at most this many (date, index) rows per chunk.
    measure : "rv5" (table ``realized_1d``, rv_var) or "rk_parzen" (table ``realized_rk_1d``,
        rv_var and rk_var); default from the file name.
    fix_dates : undo the extract's one-day shift of summer dates
        (:func:`undo_london_midnight_shift`).
    """
    path = Path(path)
    src = str(path)
    check_chunk_rows(chunk_rows)
    measure = measure or wide_measure(path)
    if measure not in WIDE_MEASURES:
        raise DataError(
            f"unknown wide measure {measure!r}; expected one of "
            f"{sorted(WIDE_MEASURES)} (from the file name or the 'measure' option)",
            source=src,
        )
    table, targets = WIDE_MEASURES[measure]
    cols = parquet_columns(path)
    date_col = next((c for c in cols if c.lower() == "date"), None)
    if date_col is None:
        raise DataError(f"wide realized panel needs a DATE column; got {cols}", source=src)
    symbols = [c for c in cols if c != date_col]
    rows_in = max(1, chunk_rows // max(1, len(symbols)))
    for raw in iter_parquet(path, chunk_rows=rows_in):
        values = np.column_stack(
            [
                numeric(raw[s].reset_index(drop=True), column=s, source=src, required=False)
                for s in symbols
            ]
        )
        r, c = np.nonzero(~np.isnan(values))  # date-major, symbols in column order
        dates = raw[date_col].reset_index(drop=True)
        if fix_dates:
            dates = undo_london_midnight_shift(dates)
        dates = dates.iloc[r].reset_index(drop=True)
        sym = pd.Series(np.asarray(symbols, dtype=object)[c])
        frame = pd.DataFrame({TS: index_close_ts(dates, sym), SYMBOL: sym})
        for t in targets:
            frame[t] = values[r, c]
        frame = conform(frame, "realized", source=src)
        for _, piece in split_frame(frame, chunk_rows):
            yield Chunk(table, "realized", piece, src, interval=ONE_DAY)


READERS = {
    "realized_measures_csv": read_measures_csv,
    "oxford_man_library": read_oxford_man_library,
    "spy_realized_hf": read_spy_realized_hf,
    "oxford_man_wide": read_oxford_man_wide,
}
"""Format name -> reader."""


def sniff(path: Path) -> str | None:
    """Recognise the realized-measure files by their columns (CSV first line / parquet schema)."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".csv") or name.endswith(".csv.gz"):
            header = {c.strip() for c in first_line(path).split(",")}
            return "realized_measures_csv" if {"date", *MEASURES_CSV} <= header else None
        if not is_parquet(path):
            return None
        cols = parquet_columns(path)
    except (OSError, UnicodeDecodeError, EOFError, DataError):
        return None
    have = set(cols)
    if {"date", "symbol", *LIBRARY} <= have:
        return "oxford_man_library"
    if {"DT", *SPY_HF} <= have:
        return "spy_realized_hf"
    if "DATE" in have and wide_measure(path) and len(cols) > 1:
        return "oxford_man_wide"
    return None
