"""Generic CSV/parquet reader driven by a column mapping, and the long daily OHLCV parquet format.

Formats
-------
``generic``
    Any CSV (optionally gzipped) or parquet file whose columns can be mapped onto one canonical
    table kind. Only used when asked for: :func:`sniff` never returns it.
``daily_ohlcv_parquet``
    A parquet file with a ``date`` column (the UTC day) and ``open``/``high``/``low``/``close``
    (optionally ``volume`` and ``symbol``), e.g. ``btcusd_1d.parquet`` (Bitstamp/Coinbase BTC/USD
    2011-2025). Rows become ``bars`` in table ``bars_1d`` stamped at the day's close,
    ``date + 1 day`` 00:00 UTC.

The module also holds the small helpers the other non-Binance readers share: batched parquet
reading, numeric/time coercion with line-accurate :class:`~features.schema.DataError` and
splitting long frames into chunks.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.readers._io import first_line as _first_line
from features.readers._io import iter_csv
from features.readers.base import Chunk
from features.schema import (
    CLOSE,
    HIGH,
    LOW,
    OPEN,
    SYMBOL,
    TS,
    VOLUME,
    DataError,
    conform,
    infer_epoch_unit,
    spec,
)

DEFAULT_CHUNK_ROWS = 500_000
ONE_DAY = pd.Timedelta(days=1)

# ---- shared helpers ------------------------------------------------------------------------


def is_parquet(path: Path) -> bool:
    """True for a ``.parquet``/``.pq`` file name."""
    return Path(path).suffix.lower() in (".parquet", ".pq")


def parquet_columns(path: Path) -> list[str]:
    """Column names of a parquet file, read from its schema only."""
    try:
        return list(pq.read_schema(path).names)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the parquet schema ({exc})", source=str(path)) from None


def csv_columns(path: Path) -> list[str]:
    """Column names in the first line of a (possibly gzipped) CSV file."""
    head = _first_line(path)
    return [c.strip() for c in next(csv.reader([head]))] if head else []


def iter_parquet(
    path: Path, *, chunk_rows: int, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """Yield a parquet file as pandas frames of at most ``chunk_rows`` rows (pyarrow batches)."""
    check_chunk_rows(chunk_rows)
    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot open the parquet file ({exc})", source=str(path)) from None
    if columns is not None:
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(
                f"missing column(s) {missing}; the file has columns {pf.schema_arrow.names}",
                source=str(path),
            )
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
        yield batch.to_pandas()


def check_chunk_rows(chunk_rows: int) -> None:
    """Raise :class:`DataError` (a ``ValueError``) unless ``chunk_rows`` is a positive integer."""
    if (
        isinstance(chunk_rows, bool)
        or not isinstance(chunk_rows, int | np.integer)
        or chunk_rows < 1
    ):
        raise DataError(
            f"The 'chunk_rows' parameter must be an integer >= 1. Got {chunk_rows!r} instead."
        )


def split_frame(frame: pd.DataFrame, chunk_rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """Yield ``(offset, piece)`` slices of ``frame`` of at most ``chunk_rows`` rows (none if empty)."""
    for start in range(0, len(frame), chunk_rows):
        yield start, frame.iloc[start : start + chunk_rows].reset_index(drop=True)


def numeric(
    values: pd.Series,
    *,
    column: str,
    source: str,
    first_line: int | None = None,
    required: bool = True,
) -> np.ndarray:
    """Parse a column as float64, raising :class:`DataError` at the first bad value.

    Parameters
    ----------
    values : the raw column of one chunk (row ``i`` is file line ``first_line + i``).
    column : the source column name, used in the error.
    source : the file, used in the error.
    first_line : file line of the first row (CSV), or None (parquet: the row number is reported).
    required : empty cells are errors too (else they become NaN).

    Returns
    -------
    ndarray of float64, one value per row.
    """
    if values.dtype.kind in "iub":
        out = values.to_numpy(dtype="float64")
    elif values.dtype.kind == "f":
        out = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        out = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        bad = np.isnan(out) & values.notna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _located(
                f"cannot parse value {values.iloc[i]!r}; expected a number",
                source,
                first_line,
                i,
                column,
            )
    if required:
        missing = np.isnan(out)
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise _located("empty value; expected a number", source, first_line, i, column)
    return out


def integers(
    values: pd.Series, *, dtype: str, column: str, source: str, first_line: int | None = None
) -> pd.Series:
    """Parse a column as integers of ``dtype`` ("int8", "int16", "Int64"; only "Int64" allows
    empty cells), raising :class:`DataError` at the first non-integer value."""
    values = values.reset_index(drop=True)
    if values.dtype.kind in "iu":
        return values.astype(dtype)
    if values.dtype.kind not in "fb":
        parsed = pd.to_numeric(values, errors="coerce")
        if parsed.dtype.kind in "iu":
            return parsed.astype(dtype)
    x = numeric(
        values, column=column, source=source, first_line=first_line, required=dtype != "Int64"
    )
    present = ~np.isnan(x)
    frac = present & (x != np.round(np.where(present, x, 0.0)))
    if frac.any():
        i = int(np.flatnonzero(frac)[0])
        raise _located(f"value {values.iloc[i]!r} is not an integer", source, first_line, i, column)
    if dtype == "Int64":
        return pd.Series(pd.array(np.where(present, x, 0.0).astype("int64"), dtype="Int64")).mask(
            ~present
        )
    return pd.Series(x.astype(dtype))


def epoch_ts(
    values: pd.Series, *, unit: str | None, column: str, source: str, first_line: int | None = None
) -> pd.Series:
    """Integer/float epochs in ``unit`` ("s", "ms", "us", "ns"; None infers) -> UTC ns timestamps.

    Integer columns are scaled exactly; fractional epochs are rounded to the nanosecond.
    """
    values = values.reset_index(drop=True)
    if values.dtype.kind in "iu":
        x = values.to_numpy(dtype="int64")
    else:
        parsed = pd.to_numeric(values, errors="coerce") if values.dtype.kind not in "fb" else values
        if parsed.dtype.kind in "iu":
            x = parsed.to_numpy(dtype="int64")
        else:
            x = numeric(values, column=column, source=source, first_line=first_line)
    if unit is None:
        unit = infer_epoch_unit(pd.Series(x[:1]))
    if unit not in ("s", "ms", "us", "ns"):
        raise DataError(
            f"unknown epoch unit {unit!r}; expected one of 's', 'ms', 'us', 'ns'",
            source=source,
            column=column,
        )
    scale = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    if x.dtype.kind == "i":
        ns = x * scale
    else:  # whole units exactly, the fraction rounded to the nanosecond (x * scale loses digits)
        whole = np.floor(x)
        ns = whole.astype("int64") * scale + np.round((x - whole) * scale).astype("int64")
    return pd.Series(pd.to_datetime(ns, unit="ns", utc=True)).astype("datetime64[ns, UTC]")


def parse_ts(
    values: pd.Series,
    *,
    column: str,
    source: str,
    first_line: int | None = None,
    unit: str | None = None,
    tz: str | None = None,
) -> pd.Series:
    """Timestamps (epoch numbers, strings or datetimes) -> ``datetime64[ns, UTC]``.

    Numbers are epochs in ``unit`` (inferred from the magnitude when None); strings and naive
    datetimes are wall-clock times in ``tz`` (default UTC; DST gaps/overlaps raise); aware
    datetimes are converted. An unparsable or empty value raises :class:`DataError` with its line.
    """
    if values.dtype.kind in "iuf":
        return epoch_ts(values, unit=unit, column=column, source=source, first_line=first_line)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        out = values.dt.tz_convert("UTC")
    else:
        if values.dtype.kind == "M":
            parsed = values
        else:
            parsed = pd.to_datetime(values, errors="coerce", format="mixed")
            bad = parsed.isna().to_numpy() & values.notna().to_numpy()
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise _located(
                    f"cannot parse time {values.iloc[i]!r}; expected a date/time",
                    source,
                    first_line,
                    i,
                    column,
                )
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            out = parsed.dt.tz_convert("UTC")
        else:
            try:
                out = parsed.dt.tz_localize(tz or "UTC").dt.tz_convert("UTC")
            except (ValueError, TypeError) as exc:  # DST gap/overlap, unknown zone
                raise DataError(
                    f"cannot place naive times in time zone {tz!r} ({exc})",
                    source=source,
                    column=column,
                ) from None
    out = out.astype("datetime64[ns, UTC]")
    if out.isna().any():
        i = int(np.flatnonzero(out.isna().to_numpy())[0])
        raise _located("empty time; expected a date/time", source, first_line, i, column)
    return out.reset_index(drop=True)


def local_time_utc(dates: pd.Series, time: str, tz: str) -> pd.Series:
    """Calendar dates at wall-clock ``time`` ("HH:MM[:SS]") in ``tz``, as UTC ns timestamps."""
    d = pd.to_datetime(pd.Series(dates).reset_index(drop=True))
    if isinstance(d.dtype, pd.DatetimeTZDtype):
        d = d.dt.tz_localize(None)
    local = d.dt.normalize() + pd.Timedelta(time if time.count(":") == 2 else f"{time}:00")
    return local.dt.tz_localize(tz).dt.tz_convert("UTC").astype("datetime64[ns, UTC]")


def _located(message: str, source: str, first_line: int | None, i: int, column: str) -> DataError:
    if first_line is None:
        return DataError(f"row {i}: {message}", source=source, column=column)
    return DataError(message, source=source, line=first_line + i, column=column)


def day_close_ts(dates: pd.Series) -> pd.Series:
    """UTC calendar days -> the day's close, ``date + 1 day`` 00:00 UTC."""
    d = pd.to_datetime(pd.Series(dates).reset_index(drop=True))
    if isinstance(d.dtype, pd.DatetimeTZDtype):
        d = d.dt.tz_convert("UTC").dt.tz_localize(None)
    return (d.dt.normalize() + ONE_DAY).dt.tz_localize("UTC").astype("datetime64[ns, UTC]")


# ---- generic -------------------------------------------------------------------------------


def read_generic(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    kind: str | None = None,
    mapping: Mapping[str, str] | None = None,
    table: str | None = None,
    symbol: str | None = None,
    ts_unit: str | None = None,
    tz: str | None = None,
    ts_is_open: bool = False,
    interval: str | pd.Timedelta | None = None,
) -> Iterator[Chunk]:
    """Read a CSV or parquet file into canonical chunks of ``kind`` through a column mapping.

    Parameters
    ----------
    path : ``.csv``/``.csv.gz`` file with a header line (columns are mapped by name) or a
        ``.parquet`` file.
    chunk_rows : at most this many rows per chunk.
    kind : the canonical table kind (a key of :data:`features.schema.SCHEMAS`); required.
    mapping : canonical column -> source column. A canonical column not in the mapping is taken
        from a source column of the same name when there is one.
    table : the logical table name (default ``kind``).
    symbol : constant symbol for a file without a symbol column.
    ts_unit : unit of numeric epoch times ("s", "ms", "us", "ns"); inferred from the magnitude
        when None.
    tz : time zone of naive (wall-clock) times, default UTC.
    ts_is_open : the time column stamps the period's open; it is shifted by ``interval`` to the
        close.
    interval : the period length ("1min", "1h", "1D", a Timedelta), required with ``ts_is_open``;
        recorded in :attr:`Chunk.interval`.

    Raises
    ------
    DataError
        Unknown kind, a mapped column missing from the file (the message lists the file's columns),
        no symbol, or a value that does not parse (with file, line and column).
    """
    path = Path(path)
    src = str(path)
    if kind is None:
        raise DataError(
            "the 'generic' format needs a 'kind' option (the canonical table kind)", source=src
        )
    sp = spec(kind)
    mapping = dict(mapping or {})
    unknown = [c for c in mapping if c not in sp.columns]
    if unknown:
        raise DataError(
            f"mapping names non-canonical column(s) {unknown} for kind '{kind}'; "
            f"expected a subset of {sp.columns}",
            source=src,
        )
    try:
        step = pd.Timedelta(interval) if interval is not None else None
    except ValueError:
        raise DataError(
            f"cannot read interval {interval!r}; expected a duration such as '1min', '1h', '1D'",
            source=src,
        ) from None
    if ts_is_open and step is None:
        raise DataError(
            "'ts_is_open' needs an 'interval' (e.g. '1min') to shift opens to closes", source=src
        )
    parquet = is_parquet(path)
    columns = parquet_columns(path) if parquet else csv_columns(path)
    missing = [f"{c} -> '{s}'" for c, s in mapping.items() if s not in columns]
    if missing:
        raise DataError(
            f"mapped column(s) {missing} not in the file; the file has columns {columns}",
            source=src,
        )
    colmap = {c: mapping.get(c, c) for c in sp.columns if mapping.get(c, c) in columns}
    if SYMBOL not in colmap and symbol is None:
        raise DataError(
            f"no symbol column (mapping 'symbol' -> a column of {columns}) and no 'symbol' option",
            source=src,
            column=SYMBOL,
        )
    absent = [c for c in sp.required if c not in colmap and c != SYMBOL]
    if absent:
        raise DataError(
            f"required column(s) {absent} of kind '{kind}' are neither mapped nor "
            f"present; the file has columns {columns}",
            source=src,
        )
    frames = (
        (
            (None, f)
            for f in iter_parquet(path, chunk_rows=chunk_rows, columns=sorted(set(colmap.values())))
        )
        if parquet
        else iter_csv(path, chunk_rows=chunk_rows, header=True)
    )
    for line, raw in frames:
        out = {}
        for canon, source_col in colmap.items():
            col = raw[source_col].reset_index(drop=True)
            if canon == TS:
                out[TS] = parse_ts(
                    col, column=source_col, source=src, first_line=line, unit=ts_unit, tz=tz
                )
            elif sp.dtype(canon) == "float64":
                out[canon] = numeric(
                    col,
                    column=source_col,
                    source=src,
                    first_line=line,
                    required=canon in sp.required,
                )
            elif sp.dtype(canon) == "datetime64[ns, UTC]":
                out[canon] = parse_ts(
                    col, column=source_col, source=src, first_line=line, unit=ts_unit, tz=tz
                )
            elif sp.dtype(canon) in ("int8", "int16", "Int64"):
                out[canon] = integers(
                    col, dtype=sp.dtype(canon), column=source_col, source=src, first_line=line
                )
            else:
                out[canon] = col.astype("str")
        frame = pd.DataFrame(out)
        if symbol is not None:  # a constant, or an override of the file's symbol column
            frame[SYMBOL] = symbol
        if ts_is_open:
            frame[TS] = frame[TS] + step
        yield Chunk(
            table or kind,
            kind,
            conform(frame, kind, source=src),
            src,
            first_line=line,
            interval=step,
        )


# ---- daily OHLCV parquet -------------------------------------------------------------------

_OHLC = (OPEN, HIGH, LOW, CLOSE)


def daily_symbol(path: Path) -> str:
    """Symbol from a daily file's stem: ``btcusd_1d`` -> ``BTCUSD``."""
    stem = Path(path).name.split(".")[0]
    return stem.split("_")[0].upper()


def read_daily_ohlcv_parquet(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    symbol: str | None = None,
    table: str = "bars_1d",
) -> Iterator[Chunk]:
    """Read a daily OHLCV parquet (``date`` = UTC day) into ``bars`` stamped at the day's close.

    Parameters
    ----------
    path : parquet file with ``date``, ``open``, ``high``, ``low``, ``close`` and optionally
        ``volume`` (base units) and ``symbol``.
    chunk_rows : at most this many rows per chunk.
    symbol : the symbol; default the file's ``symbol`` column, else the upper-cased file stem up to
        the first underscore (``btcusd_1d.parquet`` -> ``BTCUSD``).
    table : logical table name, default ``bars_1d``.

    ``ts`` is ``date + 1 day`` at 00:00 UTC: the close of the UTC day the candle covers.
    """
    path = Path(path)
    src = str(path)
    cols = parquet_columns(path)
    need = ["date", *_OHLC]
    missing = [c for c in need if c not in cols]
    if missing:
        raise DataError(
            f"daily OHLCV parquet needs columns {need}; missing {missing} in {cols}", source=src
        )
    use = need + [c for c in (VOLUME, SYMBOL) if c in cols]
    sym = symbol if symbol is not None else (None if SYMBOL in cols else daily_symbol(path))
    for raw in iter_parquet(path, chunk_rows=chunk_rows, columns=use):
        frame = pd.DataFrame({TS: day_close_ts(raw["date"])})
        frame[SYMBOL] = sym if sym is not None else raw[SYMBOL].to_numpy()
        for c in use[1:]:
            if c != SYMBOL:
                frame[c] = numeric(
                    raw[c].reset_index(drop=True), column=c, source=src, required=c != VOLUME
                )
        yield Chunk(table, "bars", conform(frame, "bars", source=src), src, interval=ONE_DAY)


# ---- registry hooks ------------------------------------------------------------------------

READERS = {"generic": read_generic, "daily_ohlcv_parquet": read_daily_ohlcv_parquet}
"""Format name -> reader."""


def sniff(path: Path) -> str | None:
    """``daily_ohlcv_parquet`` for a parquet file with ``date`` and open/high/low/close columns
    (DVOL files, which :mod:`features.readers.deribit` reads, excepted); never ``generic``."""
    path = Path(path)
    if not is_parquet(path) or "dvol" in path.name.lower():
        return None
    try:
        cols = set(pq.read_schema(path).names)
    except (OSError, ValueError):
        return None
    if {"date", *_OHLC} <= cols:
        return "daily_ohlcv_parquet"
    return None
