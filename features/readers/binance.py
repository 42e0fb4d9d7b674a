"""Binance readers: klines, trades, aggTrades, funding, L2 depth, top of book and raw websocket files.

Formats (keys of :data:`READERS`)
---------------------------------
``binance_klines_parquet``
    freqtrade-derived candle parquet (``symbol, market, open_time, open, high, low, close, volume``)
    and mark-price candles (``mark_price_1h.parquet``: no volume). Table ``bars_<interval>`` or
    ``mark_<interval>``.
``binance_klines_csv``
    data.binance.vision kline CSV (12 columns, with or without header, ms or us, plain/.gz/.zip).
``binance_trades_csv`` / ``binance_aggtrades_csv``
    data.binance.vision trades / aggTrades CSV (spot without header, futures with one).
``binance_funding_parquet``
    ``symbol, funding_time, funding_rate`` -> table ``funding``.
``binance_l2_trades``, ``binance_l2_book_ticker``, ``binance_l2_depth_snapshots``,
``binance_l2_depth_updates``
    the normalised parquet tables of a websocket recording (hftbacktest collector). Depth updates are
    replayed onto the REST snapshot and sampled as a ``book_l2`` table (see :func:`read_depth_updates`).
``binance_ws_raw``
    the collector's raw ``<local receive ns> <JSON message>`` lines (gzip): trades and bookTicker.

Conventions
-----------
- A bar's ``ts`` is its **close**: ``open_time + interval`` (Binance stamps klines by their open).
- Symbols: spot as Binance spells them ("BTCUSDT"); USD-M perpetuals get a "-PERP" suffix
  ("BTCUSDT-PERP") so they never collide with spot; COIN-M perpetuals keep Binance's "BTCUSD_PERP".
- ``side`` of a trade is -1 when ``is_buyer_maker`` (the aggressor sold), else +1.
- Book ``level`` is 0-based (0 = best price, as in the canonical schema); ``side`` +1 bid, -1 ask.
- Spot top-of-book messages carry no exchange time. Their ``ts`` is the collector's receive time
  shifted by the collector clock's offset to the exchange clock, measured (median of exchange time
  minus receive time) on the messages of the same file that carry both. On the 2024-08-08 recording
  the collector clock runs about 1.27 s behind Binance, so an unshifted spot quote would precede the
  trades it preceded in reality by over a second. Pass ``clock_offset=None`` to keep raw receive
  times, or an integer number of nanoseconds to force an offset.
"""

from __future__ import annotations

import csv
import functools
import heapq
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.readers._io import first_line, has_header, iter_csv, open_text
from features.readers.base import Chunk, Reader
from features.schema import (
    ASK_PX,
    ASK_SIDE,
    ASK_SZ,
    BID_PX,
    BID_SIDE,
    BID_SZ,
    BUY,
    CLOSE,
    FUNDING_RATE,
    HIGH,
    LEVEL,
    LOW,
    OPEN,
    PRICE,
    PX,
    QUOTE_VOLUME,
    SELL,
    SIDE,
    SIZE,
    SYMBOL,
    SZ,
    TAKER_BUY_VOLUME,
    TRADE_COUNT,
    TRADE_ID,
    TS,
    VOLUME,
    DataError,
    conform,
    infer_epoch_unit,
    spec,
    to_utc_ns,
)

DEFAULT_CHUNK_ROWS = 500_000

# ---- symbols and intervals ------------------------------------------------------------------

_MARKET_ALIASES = {
    "spot": "spot",
    "usdm_perp": "usdm_perp",
    "usdm": "usdm_perp",
    "um": "usdm_perp",
    "futures_um": "usdm_perp",
    "coinm_perp": "coinm_perp",
    "coinm": "coinm_perp",
    "cm": "coinm_perp",
    "futures_cm": "coinm_perp",
}


@functools.lru_cache(maxsize=4096)
def canonical_symbol(symbol: str, market: str | None) -> str:
    """The canonical symbol of a Binance instrument.

    Parameters
    ----------
    symbol : Binance's symbol, e.g. "BTCUSDT" or "BTCUSD_PERP".
    market : "spot", "usdm_perp" or "coinm_perp" (aliases "um", "cm", "usdm", "coinm" accepted);
        None means spot.

    Returns
    -------
    "BTCUSDT" for spot, "BTCUSDT-PERP" for a USD-M perpetual, Binance's own symbol for COIN-M and
    for dated futures ("BTCUSDT_240329").
    """
    m = _market(market)
    s = str(symbol).upper()
    if m == "usdm_perp" and "_" not in s and not s.endswith("-PERP"):
        return f"{s}-PERP"
    return s


def _market(market: str | None) -> str:
    if market is None:
        return "spot"
    key = str(market).strip().lower()
    if key not in _MARKET_ALIASES:
        raise DataError(
            f"unknown Binance market '{market}'; expected one of {sorted(set(_MARKET_ALIASES.values()))}"
        )
    return _MARKET_ALIASES[key]


def _market_from_path(path: Path) -> str | None:
    """Market from a data.binance.vision style path (``.../futures/um/...``) or a file prefix."""
    parts = [p.lower() for p in path.parts[:-1]]
    if "um" in parts:
        return "usdm_perp"
    if "cm" in parts:
        return "coinm_perp"
    if "spot" in parts:
        return "spot"
    name = path.name.lower()
    for prefix, market in (
        ("spot_", "spot"),
        ("usdm_", "usdm_perp"),
        ("um_", "usdm_perp"),
        ("cm_", "coinm_perp"),
        ("coinm_", "coinm_perp"),
    ):
        if name.startswith(prefix):
            return market
    return None


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_INTERVAL_IN_NAME = re.compile(r"(?<![A-Za-z0-9])(\d+)([smhdw])(?![A-Za-z0-9])")


def parse_interval(value: str | pd.Timedelta) -> pd.Timedelta:
    """Parse a Binance interval such as "1m", "15m", "1h", "8h", "1d" (or a Timedelta).

    Raises :class:`DataError` for anything else, e.g. "1M" (months have no fixed length).
    """
    if isinstance(value, pd.Timedelta):
        if value <= pd.Timedelta(0):
            raise DataError(f"interval must be > 0; got {value}")
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(value))
    if not m or int(m.group(1)) == 0:
        raise DataError(
            f"cannot parse interval {value!r}; expected a number and a unit s, m, h, d or w "
            "such as '1m', '15m', '1h', '1d'"
        )
    return pd.Timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def interval_from_name(name: str) -> pd.Timedelta | None:
    """The interval written in a file name (``klines_1m``, ``BTCUSDT-15m-2024-01.csv``) or None."""
    m = _INTERVAL_IN_NAME.search(name)
    if not m or int(m.group(1)) == 0:
        return None
    return pd.Timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def interval_name(interval: pd.Timedelta) -> str:
    """Short name of an interval: "1m", "15m", "1h", "8h", "1d", "1w", "30s"."""
    total = int(interval / pd.Timedelta(seconds=1))
    if total <= 0 or pd.Timedelta(seconds=total) != interval:
        raise DataError(f"interval {interval} is not a positive whole number of seconds")
    for unit, secs in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if total % secs == 0:
            return f"{total // secs}{unit}"
    return f"{total}s"


def _conform(frame: pd.DataFrame, kind: str, *, source: str) -> pd.DataFrame:
    """:func:`features.schema.conform`, keeping nullable-integer columns (``trade_id``: "Int64").

    ``conform`` casts to "Int64" but then stores ``to_numpy()``, which is int64; cast back so the
    chunk passes :func:`features.schema.validate` (a no-op once ``conform`` keeps the dtype).
    """
    out = conform(frame, kind, source=source)
    for c, dtype in spec(kind).optional.items():
        if c in out and dtype == "Int64" and str(out[c].dtype) != "Int64":
            out[c] = out[c].astype("Int64")
    return out


def _check_chunk_rows(chunk_rows: int) -> int:
    if (
        not isinstance(chunk_rows, (int, np.integer))
        or isinstance(chunk_rows, bool)
        or chunk_rows < 1
    ):
        raise DataError(
            f"The 'chunk_rows' parameter must be an integer >= 1. Got {chunk_rows!r} instead."
        )
    return int(chunk_rows)


def _reject_options(fmt: str, options: dict[str, object], allowed: Iterable[str] = ()) -> None:
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise DataError(
            f"format '{fmt}' got unknown option(s) {extra}; expected a subset of {sorted(allowed)}"
        )


def _map_symbols(symbols: pd.Series, markets: pd.Series | str | None) -> pd.Series:
    """Vectorised :func:`canonical_symbol` over (symbol, market) columns."""
    if markets is None or isinstance(markets, str):
        table = {s: canonical_symbol(s, markets) for s in pd.unique(symbols)}
        return symbols.map(table).astype("str")
    pairs = pd.DataFrame({"s": symbols.to_numpy(), "m": markets.to_numpy()})
    key = pairs["s"].astype("str") + "\x00" + pairs["m"].astype("str")
    table = {}
    for k in pd.unique(key):
        s, m = k.split("\x00")
        table[k] = canonical_symbol(s, m)
    return key.map(table).astype("str")


# ---- klines parquet ---------------------------------------------------------------------------


def _infer_interval_parquet(pf: pq.ParquetFile, path: Path) -> pd.Timedelta:
    """Most common positive ``open_time`` step per symbol; all symbols must agree."""
    cols = [c for c in ("symbol", "open_time") if c in pf.schema_arrow.names]
    frame = pf.read(columns=cols).to_pandas()
    t = to_utc_ns(frame["open_time"])
    groups = frame["symbol"] if "symbol" in frame else pd.Series(0, index=frame.index)
    steps: dict[str, pd.Timedelta] = {}
    for sym, ts in t.groupby(groups.to_numpy()):
        d = ts.sort_values().diff().dropna()
        d = d[d > pd.Timedelta(0)]
        if len(d):
            steps[str(sym)] = d.mode().iloc[0]
    if not steps:
        raise DataError(
            "cannot infer the bar interval: fewer than two distinct open_time values per symbol; "
            "give it with interval = \"1m\" (or the right one) in a --mapping TOML file",
            source=str(path),
        )
    distinct = set(steps.values())
    if len(distinct) > 1:
        raise DataError(
            f"symbols have different bar intervals { ({k: str(v) for k, v in steps.items()}) }; "
            "give one with interval = \"1m\" in a --mapping TOML file, or split the file",
            source=str(path),
            column="open_time",
        )
    return distinct.pop()


def read_klines_parquet(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    interval: str | pd.Timedelta | None = None,
    market: str | None = None,
    **options: object,
) -> Iterator[Chunk]:
    """Read freqtrade-derived Binance candles (or mark-price candles) from parquet.

    Parameters
    ----------
    path : parquet file with ``symbol, open_time, open, high, low, close`` and optionally ``market``,
        ``volume``.
    chunk_rows : rows per chunk (read by parquet batches).
    interval : bar length; default from the file name (``klines_5m``), else the most common
        ``open_time`` step per symbol.
    market : used when the file has no ``market`` column; default "usdm_perp" for mark prices
        (only futures have one) and "spot" otherwise.

    Yields
    ------
    Chunk of kind "bars", table ``bars_<interval>`` (``mark_<interval>`` for mark prices) whose
    ``ts`` = ``open_time + interval``, the bar's close.
    """
    _reject_options("binance_klines_parquet", options)
    chunk_rows = _check_chunk_rows(chunk_rows)
    path = Path(path)
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    missing = [c for c in ("symbol", "open_time", "open", "high", "low", "close") if c not in names]
    if missing:
        raise DataError(
            f"not a Binance klines parquet: missing column(s) {missing}; got {names}",
            source=str(path),
        )
    is_mark = "mark" in path.stem.lower()
    if interval is not None:
        iv = parse_interval(interval)
    else:
        iv = interval_from_name(path.stem) or _infer_interval_parquet(pf, path)
    table = f"{'mark' if is_mark else 'bars'}_{interval_name(iv)}"
    default_market = market if market is not None else ("usdm_perp" if is_mark else "spot")
    extra = {
        "quote_volume": QUOTE_VOLUME,
        "trade_count": TRADE_COUNT,
        "taker_buy_volume": TAKER_BUY_VOLUME,
    }
    cols = [
        c
        for c in ("symbol", "market", "open_time", OPEN, HIGH, LOW, CLOSE, VOLUME, *extra)
        if c in names
    ]
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols):
        df = batch.to_pandas()
        raw_sym = df["symbol"].astype("str")
        if "market" in df and market is None:
            sym = _map_symbols(raw_sym, df["market"])
        elif is_mark and market is None:
            sym = raw_sym.map(
                lambda s: canonical_symbol(
                    s, "coinm_perp" if s.upper().endswith("_PERP") else "usdm_perp"
                )
            ).astype("str")
        else:
            sym = _map_symbols(raw_sym, default_market)
        unit = (
            None if df["open_time"].dtype.kind not in "iuf" else infer_epoch_unit(df["open_time"])
        )
        out = pd.DataFrame({TS: to_utc_ns(df["open_time"], unit=unit) + iv, SYMBOL: sym})
        for c in (OPEN, HIGH, LOW, CLOSE, VOLUME, *extra):
            if c in df:
                out[c] = df[c].to_numpy()
        yield Chunk(
            table, "bars", _conform(out, "bars", source=str(path)), source=str(path), interval=iv
        )


# ---- funding parquet -----------------------------------------------------------------------------


def read_funding_parquet(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    market: str | None = None,
    **options: object,
) -> Iterator[Chunk]:
    """Read realised funding rates (``symbol, funding_time, funding_rate``) into a "funding" table.

    ``ts`` is the funding time; symbols are USD-M perpetuals ("BTCUSDT-PERP") unless ``market`` says
    otherwise (a symbol ending in "_PERP" is taken as COIN-M).
    """
    _reject_options("binance_funding_parquet", options)
    chunk_rows = _check_chunk_rows(chunk_rows)
    path = Path(path)
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    missing = [c for c in ("symbol", "funding_time", "funding_rate") if c not in names]
    if missing:
        raise DataError(
            f"not a Binance funding parquet: missing column(s) {missing}; got {names}",
            source=str(path),
        )
    cols = ["symbol", "funding_time", "funding_rate"] + (["market"] if "market" in names else [])
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols):
        df = batch.to_pandas()
        raw = df["symbol"].astype("str")
        if market is not None:
            sym = _map_symbols(raw, market)
        elif "market" in df:
            sym = _map_symbols(raw, df["market"])
        else:
            sym = raw.map(
                lambda s: canonical_symbol(
                    s, "coinm_perp" if s.upper().endswith("_PERP") else "usdm_perp"
                )
            ).astype("str")
        t = df["funding_time"]
        unit = infer_epoch_unit(t) if t.dtype.kind in "iuf" else None
        out = pd.DataFrame(
            {TS: to_utc_ns(t, unit=unit), SYMBOL: sym, FUNDING_RATE: df["funding_rate"].to_numpy()}
        )
        yield Chunk(
            "funding", "funding", _conform(out, "funding", source=str(path)), source=str(path)
        )


# ---- CSV helpers -------------------------------------------------------------------------------


def _bool_column(values: pd.Series, path: Path, first: int, column: str) -> np.ndarray:
    """Parse "True"/"true"/"False"/"false" (or real booleans); a bad value raises with its line."""
    if values.dtype == bool:
        return values.to_numpy()
    low = values.astype("str").str.strip().str.lower()
    ok_true = low.eq("true")
    ok_false = low.eq("false")
    bad = ~(ok_true | ok_false)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"cannot parse value {values.iloc[i]!r}; expected true or false",
            source=str(path),
            line=first + i,
            column=column,
        )
    return ok_true.to_numpy()


def _check_complete(
    frame: pd.DataFrame, columns: Iterable[str], path: Path, first: int, n_fields: int
) -> None:
    """A missing value in a required column means a short line: raise naming it."""
    for c in columns:
        na = frame[c].isna().to_numpy()
        if na.any():
            line = first + int(np.flatnonzero(na)[0])
            seen = _count_fields(path, line)
            if seen is not None and seen != n_fields:
                raise DataError(
                    f"expected {n_fields} fields, saw {seen}", source=str(path), line=line
                )
            raise DataError(
                f"missing value; expected {n_fields} non-empty fields",
                source=str(path),
                line=line,
                column=c,
            )


def _count_fields(path: Path, line: int) -> int | None:
    """Number of CSV fields on 1-based ``line`` of the file (error path only: reads up to it)."""
    with open_text(path) as fh:
        for i, row in enumerate(csv.reader(fh), start=1):
            if i == line:
                return len(row)
    return None


def _epoch_to_ts(values: pd.Series, path: Path, first: int, column: str) -> pd.Series:
    """Epoch ms or us (inferred from magnitude) to UTC ns; a negative or absurd value raises."""
    v = values.to_numpy()
    unit = infer_epoch_unit(values)
    if unit not in ("ms", "us"):
        raise DataError(
            f"timestamp {values.iloc[0]!r} is not epoch milliseconds or microseconds",
            source=str(path),
            line=first,
            column=column,
        )
    lo, hi = (1e11, 1e14) if unit == "ms" else (1e14, 1e17)
    bad = (v < lo) | (v >= hi)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"timestamp {int(v[i])} is not in the same unit ({unit}) as the first row of its chunk",
            source=str(path),
            line=first + i,
            column=column,
        )
    return to_utc_ns(values, unit=unit)


_KLINE_NAMES = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
]
_KLINE_DTYPE = {c: "float64" for c in _KLINE_NAMES}
_KLINE_DTYPE.update({"open_time": "int64", "close_time": "int64", "ignore": "str"})
_FILE_RE = re.compile(
    r"^(?P<symbol>[A-Z0-9_]+)-(?P<kind>trades|aggTrades|\d+[smhdw]|1mo)-\d{4}-\d{2}(-\d{2})?"
    r"\.(csv|csv\.gz|zip|gz)$"
)


def _name_parts(path: Path) -> dict[str, str] | None:
    m = _FILE_RE.match(path.name)
    return m.groupdict() if m else None


def _symbol_option(path: Path, symbol: str | None, market: str | None) -> str:
    parts = _name_parts(path)
    raw = symbol or (parts or {}).get("symbol")
    if not raw:
        raise DataError(
            "cannot tell the symbol from the file name (expected e.g. BTCUSDT-1m-2024-01-01.csv); "
            "give it with --symbol BTCUSDT",
            source=str(path),
        )
    return canonical_symbol(raw, market if market is not None else _market_from_path(path))


def read_klines_csv(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    symbol: str | None = None,
    interval: str | pd.Timedelta | None = None,
    market: str | None = None,
    **options: object,
) -> Iterator[Chunk]:
    """Read a data.binance.vision kline CSV (plain, .gz or single-file .zip).

    Parameters
    ----------
    path : ``BTCUSDT-1m-2024-01-01.csv`` and the like; 12 columns, header optional.
    symbol, interval : override what the file name says.
    market : "spot" (default), "usdm_perp" or "coinm_perp"; also read from a ``futures/um`` path.

    Yields
    ------
    Chunk "bars_<interval>" of kind "bars" with ``ts = open_time + interval`` and the Binance
    ``quote_volume``, ``count`` -> ``trade_count``, ``taker_buy_base`` -> ``taker_buy_volume``.

    Without an interval in the name or options it is ``close_time - open_time + 1`` time unit, which
    must be the same on every row. A malformed line raises :class:`DataError` with its line number.
    """
    _reject_options("binance_klines_csv", options)
    chunk_rows = _check_chunk_rows(chunk_rows)
    path = Path(path)
    sym = _symbol_option(path, symbol, market)
    iv: pd.Timedelta | None
    if interval is not None:
        iv = parse_interval(interval)
    else:
        parts = _name_parts(path)
        iv = interval_from_name(parts["kind"]) if parts else interval_from_name(path.name)
    header = has_header(path)
    numeric = [c for c in _KLINE_NAMES if c != "ignore"]
    for first, df in iter_csv(
        path, chunk_rows=chunk_rows, names=_KLINE_NAMES, header=header, dtype=_KLINE_DTYPE
    ):
        _check_complete(df, numeric, path, first, len(_KLINE_NAMES))
        unit = infer_epoch_unit(df["open_time"])
        open_ts = _epoch_to_ts(df["open_time"], path, first, "open_time")
        close_ts = _epoch_to_ts(df["close_time"], path, first, "close_time")
        tick = pd.Timedelta(1, unit=unit)
        length = close_ts - open_ts + tick
        if iv is None:
            iv = length.iloc[0]
        bad = (length != iv).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"kline spans {length.iloc[i]} (close_time - open_time + 1 {unit}); expected the "
                f"interval {iv}",
                source=str(path),
                line=first + i,
                column="close_time",
            )
        out = pd.DataFrame({TS: open_ts + iv, SYMBOL: sym})
        for c in (OPEN, HIGH, LOW, CLOSE, VOLUME, QUOTE_VOLUME):
            out[c] = df[c].to_numpy()
        out[TRADE_COUNT] = df["count"].to_numpy()
        out[TAKER_BUY_VOLUME] = df["taker_buy_volume"].to_numpy()
        yield Chunk(
            f"bars_{interval_name(iv)}",
            "bars",
            _conform(out, "bars", source=str(path)),
            source=str(path),
            first_line=first,
            interval=iv,
        )


_TRADE_NAMES = {
    7: ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"],
    6: ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker"],
}
_AGG_NAMES = {
    8: [
        "agg_trade_id",
        "price",
        "quantity",
        "first_trade_id",
        "last_trade_id",
        "transact_time",
        "is_buyer_maker",
        "is_best_match",
    ],
    7: [
        "agg_trade_id",
        "price",
        "quantity",
        "first_trade_id",
        "last_trade_id",
        "transact_time",
        "is_buyer_maker",
    ],
}


def _header_names(path: Path) -> list[str]:
    return [f.strip().lower() for f in first_line(path).split(",")]


def _read_trades_like(
    path: Path,
    fmt: str,
    *,
    chunk_rows: int,
    symbol: str | None,
    market: str | None,
    names_by_count: dict[int, list[str]],
    id_col: str,
    qty_col: str,
    time_col: str,
    table: str,
) -> Iterator[Chunk]:
    chunk_rows = _check_chunk_rows(chunk_rows)
    path = Path(path)
    sym = _symbol_option(path, symbol, market)
    header = has_header(path)
    fields = _header_names(path)
    if header:
        names = fields
        need = [id_col, "price", qty_col, time_col, "is_buyer_maker"]
        missing = [c for c in need if c not in names]
        if missing:
            raise DataError(
                f"{fmt} header lacks column(s) {missing}; got {names}", source=str(path), line=1
            )
    else:
        if len(fields) not in names_by_count:
            raise DataError(
                f"expected {' or '.join(map(str, sorted(names_by_count)))} comma-separated fields "
                f"for {fmt}, saw {len(fields)}",
                source=str(path),
                line=1,
            )
        names = names_by_count[len(fields)]
    floats = ("price", qty_col, "quote_qty", "base_qty")
    ints = (id_col, time_col, "first_trade_id", "last_trade_id")
    dtype = {c: "float64" if c in floats else "int64" if c in ints else "str" for c in names}
    for first, df in iter_csv(path, chunk_rows=chunk_rows, names=names, header=header, dtype=dtype):
        _check_complete(df, names, path, first, len(names))
        maker = _bool_column(df["is_buyer_maker"], path, first, "is_buyer_maker")
        out = pd.DataFrame(
            {
                TS: _epoch_to_ts(df[time_col], path, first, time_col),
                SYMBOL: sym,
                PRICE: df["price"].to_numpy(),
                SIZE: df[qty_col].to_numpy(),
                SIDE: np.where(maker, SELL, BUY).astype("int8"),
                TRADE_ID: df[id_col].to_numpy(),
            }
        )
        yield Chunk(
            table,
            "trades",
            _conform(out, "trades", source=str(path)),
            source=str(path),
            first_line=first,
        )


def read_trades_csv(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    symbol: str | None = None,
    market: str | None = None,
    **options: object,
) -> Iterator[Chunk]:
    """Read a data.binance.vision trades CSV into the "trades" table.

    Spot files have no header and 7 fields (``id, price, qty, quote_qty, time, is_buyer_maker,
    is_best_match``); USD-M/COIN-M files have a header ``id,price,qty,quote_qty|base_qty,time,
    is_buyer_maker``. ``time`` is epoch ms or us (inferred). ``side`` = -1 if ``is_buyer_maker``.
    The symbol comes from ``BTCUSDT-trades-2024-01-01.csv`` or ``symbol=``.
    """
    _reject_options("binance_trades_csv", options)
    return _read_trades_like(
        path,
        "binance_trades_csv",
        chunk_rows=chunk_rows,
        symbol=symbol,
        market=market,
        names_by_count=_TRADE_NAMES,
        id_col="id",
        qty_col="qty",
        time_col="time",
        table="trades",
    )


def read_aggtrades_csv(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    symbol: str | None = None,
    market: str | None = None,
    **options: object,
) -> Iterator[Chunk]:
    """Read a data.binance.vision aggTrades CSV into the "trades" table (one row per aggregate).

    Columns ``agg_trade_id, price, quantity, first_trade_id, last_trade_id, transact_time,
    is_buyer_maker[, is_best_match]``, header optional; ``trade_id`` is the aggregate id.
    """
    _reject_options("binance_aggtrades_csv", options)
    return _read_trades_like(
        path,
        "binance_aggtrades_csv",
        chunk_rows=chunk_rows,
        symbol=symbol,
        market=market,
        names_by_count=_AGG_NAMES,
        id_col="agg_trade_id",
        qty_col="quantity",
        time_col="transact_time",
        table="trades",
    )


# ---- L2 recording: parquet tables ----------------------------------------------------------------


def _median_offset_ns(local_ns: np.ndarray, exchange_ms: np.ndarray) -> int | None:
    ok = ~np.isnan(exchange_ms)
    if not ok.any():
        return None
    diff = exchange_ms[ok].astype("int64") * 1_000_000 - local_ns[ok]
    return int(np.median(diff))


def _resolve_offset(clock_offset: object, measure: Callable[[], int | None]) -> int:
    """``"auto"`` -> measured (0 when nothing to measure), None -> 0, an int -> itself (ns)."""
    if clock_offset is None:
        return 0
    if isinstance(clock_offset, str):
        if clock_offset != "auto":
            raise DataError(
                f"The 'clock_offset' option must be 'auto', None or an integer number "
                f"of nanoseconds. Got {clock_offset!r} instead."
            )
        measured = measure()
        return 0 if measured is None else measured
    if isinstance(clock_offset, (int, np.integer)) and not isinstance(clock_offset, bool):
        return int(clock_offset)
    raise DataError(
        f"The 'clock_offset' option must be 'auto', None or an integer number of "
        f"nanoseconds. Got {clock_offset!r} instead."
    )


def _parquet_offset(pf: pq.ParquetFile) -> int | None:
    names = pf.schema_arrow.names
    if "local_ts_ns" not in names or "event_time_ms" not in names:
        return None
    t = pf.read(columns=["local_ts_ns", "event_time_ms"])
    local = t.column("local_ts_ns").to_numpy(zero_copy_only=False)
    ev = pc.cast(t.column("event_time_ms"), "float64").to_numpy(zero_copy_only=False)
    return _median_offset_ns(local, ev)


def _exchange_ts(df: pd.DataFrame, cols: Iterable[str], offset_ns: int) -> pd.Series:
    """First non-null of the exchange ms columns, else local receive time + offset, as UTC ns."""
    out = np.empty(len(df), dtype="int64")
    filled = np.zeros(len(df), dtype=bool)
    for c in cols:
        if c in df:
            v = df[c]
            ok = v.notna().to_numpy() & ~filled
            out[ok] = v[ok].astype("int64").to_numpy() * 1_000_000
            filled |= ok
    if not filled.all():
        if "local_ts_ns" not in df:
            raise DataError("rows have no exchange time and no local_ts_ns", column="local_ts_ns")
        out[~filled] = df["local_ts_ns"].to_numpy()[~filled] + offset_ns
    return to_utc_ns(out, unit="ns")


def _require(pf: pq.ParquetFile, need: Iterable[str], fmt: str, path: Path) -> None:
    names = pf.schema_arrow.names
    missing = [c for c in need if c not in names]
    if missing:
        raise DataError(
            f"not a {fmt} file: missing column(s) {missing}; got {names}", source=str(path)
        )


def _l2_symbols(df: pd.DataFrame) -> pd.Series:
    return _map_symbols(df["symbol"].astype("str"), df["market"])


def read_l2_trades(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    **options: object,
) -> Iterator[Chunk]:
    """Read a recording's ``trades.parquet``: ``ts`` = exchange trade time (ms), side from
    ``buyer_is_maker``, symbols by market ("BTCUSDT", "BTCUSDT-PERP", "BTCUSD_PERP")."""
    _reject_options("binance_l2_trades", options)
    chunk_rows = _check_chunk_rows(chunk_rows)
    path = Path(path)
    pf = pq.ParquetFile(path)
    _require(
        pf,
        ("market", "symbol", "trade_time_ms", "trade_id", "price", "qty", "buyer_is_maker"),
        "binance_l2_trades",
        path,
    )
    for batch in pf.iter_batches(batch_size=chunk_rows):
        df = batch.to_pandas()
        out = pd.DataFrame(
            {
                TS: _exchange_ts(df, ("trade_time_ms", "event_time_ms"), 0),
                SYMBOL: _l2_symbols(df),
                PRICE: df["price"].to_numpy(),
                SIZE: df["qty"].to_numpy(),
                SIDE: np.where(df["buyer_is_maker"].to_numpy(dtype=bool), SELL, BUY).astype("int8"),
                TRADE_ID: df["trade_id"].to_numpy(),
            }
        )
        yield Chunk("trades", "trades", _conform(out, "trades", source=str(path)), source=str(path))


def read_l2_book_ticker(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    clock_offset: str | int | None = "auto",
    **options: object,
) -> Iterator[Chunk]:
    """Read a recording's ``book_ticker.parquet`` into the "quotes" table.

    ``ts`` = ``transaction_time_ms``, else ``event_time_ms``, else (spot, which sends no time)
    ``local_ts_ns`` + the collector clock offset (see the module notes; ``clock_offset``).
    """
    path, pf, offset, chunk_rows = _open_l2_parquet(
        path,
        "binance_l2_book_ticker",
        ("market", "symbol", "local_ts_ns", "bid_price", "bid_qty", "ask_price", "ask_qty"),
        chunk_rows,
        clock_offset,
        options,
    )
    for batch in pf.iter_batches(batch_size=chunk_rows):
        df = batch.to_pandas()
        out = pd.DataFrame(
            {
                TS: _exchange_ts(df, ("transaction_time_ms", "event_time_ms"), offset),
                SYMBOL: _l2_symbols(df),
                BID_PX: df["bid_price"].to_numpy(),
                BID_SZ: df["bid_qty"].to_numpy(),
                ASK_PX: df["ask_price"].to_numpy(),
                ASK_SZ: df["ask_qty"].to_numpy(),
            }
        )
        yield Chunk("quotes", "quotes", _conform(out, "quotes", source=str(path)), source=str(path))


def _open_l2_parquet(
    path: Path,
    fmt: str,
    columns: tuple[str, ...],
    chunk_rows: int,
    clock_offset: str | int | None,
    options: dict[str, object],
) -> tuple[Path, pq.ParquetFile, int, int]:
    """Common start of the L2 parquet readers: check options and columns, resolve the clock offset."""
    _reject_options(fmt, options)
    chunk_rows = _check_chunk_rows(chunk_rows)
    path = Path(path)
    pf = pq.ParquetFile(path)
    _require(pf, columns, fmt, path)
    return path, pf, _resolve_offset(clock_offset, lambda: _parquet_offset(pf)), chunk_rows


def _side_codes(side: pd.Series, path: Path) -> np.ndarray:
    s = side.astype("str").str.lower()
    bad = ~s.isin(["bid", "ask"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"book side {side.iloc[i]!r} at row {i}; expected 'bid' or 'ask'",
            source=str(path),
            column="side",
        )
    return np.where(s.eq("bid").to_numpy(), BID_SIDE, ASK_SIDE).astype("int8")


def read_l2_depth_snapshots(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    clock_offset: str | int | None = "auto",
    **options: object,
) -> Iterator[Chunk]:
    """Read REST depth snapshots into a "book_snapshot" table of kind "book" (level 0 = best).

    ``ts`` as for the book ticker: transaction time, else event time, else receive time + offset.
    """
    path, pf, offset, chunk_rows = _open_l2_parquet(
        path,
        "binance_l2_depth_snapshots",
        ("market", "symbol", "local_ts_ns", "side", "level", "price", "qty"),
        chunk_rows,
        clock_offset,
        options,
    )
    for batch in pf.iter_batches(batch_size=chunk_rows):
        df = batch.to_pandas()
        out = pd.DataFrame(
            {
                TS: _exchange_ts(df, ("transaction_time_ms", "event_time_ms"), offset),
                SYMBOL: _l2_symbols(df),
                SIDE: _side_codes(df["side"], path),
                LEVEL: df["level"].to_numpy(),
                PX: df["price"].to_numpy(),
                SZ: df["qty"].to_numpy(),
            }
        )
        yield Chunk(
            "book_snapshot", "book", _conform(out, "book", source=str(path)), source=str(path)
        )


# ---- L2 book reconstruction ------------------------------------------------------------------------


class L2Book:
    """One instrument's order book rebuilt from a REST snapshot and websocket depth diffs.

    Sequencing follows Binance's documentation ("How to manage a local order book correctly"):

    - spot: drop events with ``u <= lastUpdateId``; the first applied event must have
      ``U <= lastUpdateId + 1 <= u``; afterwards each event's ``U`` must be the previous ``u + 1``.
    - futures (USD-M, COIN-M): drop events with ``u < lastUpdateId``; the first applied event must
      have ``U <= lastUpdateId <= u``; afterwards each event's ``pu`` must be the previous ``u``.

    A quantity of 0 removes the price level; any other quantity replaces it.

    Parameters
    ----------
    symbol : for messages.
    spot : spot sequencing rules (else futures).
    bids, asks : snapshot price -> quantity.
    last_update_id : the snapshot's ``lastUpdateId``.
    """

    def __init__(
        self,
        symbol: str,
        spot: bool,
        bids: dict[float, float],
        asks: dict[float, float],
        last_update_id: int,
    ) -> None:
        self.symbol = symbol
        self.spot = spot
        self.bids = dict(bids)
        self.asks = dict(asks)
        self.snapshot_id = int(last_update_id)
        self.last_u: int | None = None
        self.dropped_events = 0
        self.applied_events = 0

    @property
    def synced(self) -> bool:
        """True once the first event after the snapshot has been applied."""
        return self.last_u is not None

    def accepts(self, first_id: int, final_id: int, prev_final_id: int | None) -> bool:
        """Check one event's ids; False means drop it (older than the snapshot).

        Raises :class:`DataError` on a gap (a missed event): the book can no longer be trusted.
        """
        if self.last_u is None:
            lid = self.snapshot_id
            if (final_id <= lid) if self.spot else (final_id < lid):
                self.dropped_events += 1
                return False
            need = lid + 1 if self.spot else lid
            if not first_id <= need <= final_id:
                raise DataError(
                    f"{self.symbol}: first depth update after the snapshot has ids U={first_id}, "
                    f"u={final_id}; expected U <= {need} <= u (snapshot lastUpdateId {lid}): "
                    "updates are missing between the snapshot and the stream"
                )
            return True
        if self.spot or prev_final_id is None:
            if first_id != self.last_u + 1:
                raise DataError(
                    f"{self.symbol}: gap in depth updates: event U={first_id} after u={self.last_u}; "
                    f"expected U = {self.last_u + 1}"
                )
        elif prev_final_id != self.last_u:
            raise DataError(
                f"{self.symbol}: gap in depth updates: event pu={prev_final_id} after "
                f"u={self.last_u}; expected pu = {self.last_u}"
            )
        return True

    def apply(
        self, final_id: int, is_bid: Iterable[bool], prices: Iterable[float], qtys: Iterable[float]
    ) -> None:
        """Apply one accepted event's level changes (qty 0 removes the level)."""
        bids, asks = self.bids, self.asks
        for b, p, q in zip(is_bid, prices, qtys, strict=True):
            book = bids if b else asks
            if q == 0.0:
                book.pop(p, None)
            else:
                book[p] = q
        self.last_u = int(final_id)
        self.applied_events += 1

    def top(self, levels: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Best ``levels`` bids (descending price) and asks (ascending price) as (price, qty)."""
        bids = heapq.nlargest(levels, self.bids.items())
        asks = heapq.nsmallest(levels, self.asks.items())
        return bids, asks


def _load_snapshots(path: Path) -> dict[tuple[str, str], L2Book]:
    if not path.is_file():
        raise DataError(
            f"depth updates need the REST depth snapshot taken at the start of the recording; "
            f"{path} does not exist; give its path with snapshot = \"PATH\" in a --mapping TOML file",
            source=str(path),
        )
    snap = pq.read_table(
        path, columns=["market", "symbol", "last_update_id", "side", "price", "qty"]
    ).to_pandas()
    books: dict[tuple[str, str], L2Book] = {}
    for (market, sym), g in snap.groupby(["market", "symbol"], sort=False):
        ids = g["last_update_id"].unique()
        if len(ids) != 1:
            raise DataError(
                f"{market} {sym}: {len(ids)} snapshots (lastUpdateId {list(ids)[:5]}); expected "
                "one per instrument",
                source=str(path),
                column="last_update_id",
            )
        is_bid = g["side"].astype("str").str.lower().eq("bid").to_numpy()
        px = g["price"].to_numpy()
        qty = g["qty"].to_numpy()
        bids = {float(p): float(q) for p, q in zip(px[is_bid], qty[is_bid], strict=True) if q > 0}
        asks = {float(p): float(q) for p, q in zip(px[~is_bid], qty[~is_bid], strict=True) if q > 0}
        books[(str(market), str(sym))] = L2Book(
            canonical_symbol(str(sym), str(market)),
            _market(str(market)) == "spot",
            bids,
            asks,
            int(ids[0]),
        )
    return books


def _whole_events(
    pf: pq.ParquetFile, columns: list[str], batch_rows: int
) -> Iterator[pd.DataFrame]:
    """Parquet batches re-cut so that no event (rows sharing an update id) spans two frames."""
    carry: pd.DataFrame | None = None
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
        df = batch.to_pandas()
        if carry is not None:
            df = pd.concat([carry, df], ignore_index=True)
        if df.empty:
            continue
        fu = df["final_update_id"].to_numpy()
        sym = df["symbol"].to_numpy()
        mk = df["market"].to_numpy()
        last = len(df) - 1
        start = last
        while (
            start > 0
            and fu[start - 1] == fu[last]
            and sym[start - 1] == sym[last]
            and mk[start - 1] == mk[last]
        ):
            start -= 1
        carry = df.iloc[start:].reset_index(drop=True)
        if start > 0:
            yield df.iloc[:start].reset_index(drop=True)
    if carry is not None and len(carry):
        yield carry


def read_depth_updates(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    snapshot: Path | str | None = None,
    levels: int = 10,
    book_interval: str | pd.Timedelta = "1s",
    **options: object,
) -> Iterator[Chunk]:
    """Rebuild order books from depth diffs and sample the top levels on a regular time grid.

    Parameters
    ----------
    path : ``depth_updates.parquet`` (market, symbol, event/transaction time ms, first/final/prev
        update ids, side, price, qty), rows of an event contiguous and in update-id order per
        instrument (instruments may be interleaved).
    snapshot : the REST snapshot parquet; default ``depth_snapshots.parquet`` beside ``path``.
    levels : price levels per side to emit (fewer when the book is thinner).
    book_interval : grid step; samples at every multiple of it (UTC epoch aligned).

    Yields
    ------
    Chunk "book_l2" of kind "book": at each grid time ``t`` (from the first grid time at or after
    the first applied event to the last event time) the book after every event with exchange time
    (transaction time, else event time) ``<= t``; ``level`` 0 = best, ``side`` +1 bid, -1 ask.

    Raises
    ------
    DataError on a sequence gap (see :class:`L2Book`), an instrument without a snapshot, or
    events out of update-id order.
    """
    _reject_options("binance_l2_depth_updates", options)
    chunk_rows = _check_chunk_rows(chunk_rows)
    if not isinstance(levels, (int, np.integer)) or isinstance(levels, bool) or levels < 1:
        raise DataError(f"The 'levels' parameter must be an integer >= 1. Got {levels!r} instead.")
    step = parse_interval(book_interval) if isinstance(book_interval, str) else book_interval
    if not isinstance(step, pd.Timedelta) or step <= pd.Timedelta(0):
        raise DataError(
            f"The 'book_interval' parameter must be a positive interval such as '1s'. "
            f"Got {book_interval!r} instead."
        )
    step_ns = int(step.value)
    path = Path(path)
    snap_path = (
        Path(snapshot) if snapshot is not None else path.with_name("depth_snapshots.parquet")
    )
    books = _load_snapshots(snap_path)
    next_t: dict[tuple[str, str], int] = {}
    last_t: dict[tuple[str, str], int] = {}
    buf: dict[str, list] = {TS: [], SYMBOL: [], SIDE: [], LEVEL: [], PX: [], SZ: []}
    src = str(path)

    def emit(book: L2Book, t: int) -> None:
        bids, asks = book.top(levels)
        for side, rows in ((BID_SIDE, bids), (ASK_SIDE, asks)):
            for i, (p, q) in enumerate(rows):
                buf[TS].append(t)
                buf[SYMBOL].append(book.symbol)
                buf[SIDE].append(side)
                buf[LEVEL].append(i)
                buf[PX].append(p)
                buf[SZ].append(q)

    def flush(final: bool) -> Iterator[Chunk]:
        while len(buf[TS]) >= chunk_rows or (final and buf[TS]):
            n = min(chunk_rows, len(buf[TS]))
            part = {k: v[:n] for k, v in buf.items()}
            for v in buf.values():
                del v[:n]
            frame = pd.DataFrame(part)
            frame[TS] = to_utc_ns(np.asarray(part[TS], dtype="int64"), unit="ns")
            yield Chunk(
                "book_l2", "book", _conform(frame, "book", source=src), source=src, interval=step
            )

    cols = [
        "market",
        "symbol",
        "event_time_ms",
        "transaction_time_ms",
        "first_update_id",
        "final_update_id",
        "prev_final_update_id",
        "side",
        "price",
        "qty",
    ]
    pf = pq.ParquetFile(path)
    present = [c for c in cols if c in pf.schema_arrow.names]
    need = {
        "market",
        "symbol",
        "event_time_ms",
        "first_update_id",
        "final_update_id",
        "side",
        "price",
        "qty",
    }
    if not need <= set(present):
        raise DataError(
            f"not a Binance depth-updates parquet: missing {sorted(need - set(present))}",
            source=src,
        )
    for df in _whole_events(pf, present, max(chunk_rows, 65_536)):
        n = len(df)
        market = df["market"].astype("str").to_numpy()
        sym = df["symbol"].astype("str").to_numpy()
        fu = df["final_update_id"].to_numpy(dtype="int64")
        fi = df["first_update_id"].to_numpy(dtype="int64")
        pu_col = df["prev_final_update_id"] if "prev_final_update_id" in df else None
        pu_na = pu_col.isna().to_numpy() if pu_col is not None else np.ones(n, dtype=bool)
        pu = pu_col.fillna(-1).to_numpy(dtype="int64") if pu_col is not None else np.full(n, -1)
        t_ms = df["event_time_ms"].astype("float64")
        if "transaction_time_ms" in df:
            t_ms = df["transaction_time_ms"].astype("float64").fillna(t_ms)
        t_ns = t_ms.to_numpy(dtype="int64") * 1_000_000
        is_bid = _side_codes(df["side"], path) == BID_SIDE
        px = df["price"].to_numpy(dtype="float64")
        qty = df["qty"].to_numpy(dtype="float64")
        change = np.ones(n, dtype=bool)
        change[1:] = (fu[1:] != fu[:-1]) | (sym[1:] != sym[:-1]) | (market[1:] != market[:-1])
        starts = np.flatnonzero(change)
        ends = np.append(starts[1:], n)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            key = (market[a], sym[a])
            book = books.get(key)
            if book is None:
                raise DataError(
                    f"no depth snapshot for {key[0]} {key[1]} in {snap_path}", source=src
                )
            if book.last_u is not None and fu[a] <= book.last_u:
                raise DataError(
                    f"{book.symbol}: depth update u={int(fu[a])} after u={book.last_u}; "
                    "events must be in update-id order",
                    source=src,
                    column="final_update_id",
                )
            prev = None if pu_na[a] else int(pu[a])
            if not book.accepts(int(fi[a]), int(fu[a]), prev):
                continue
            t = int(t_ns[a])
            if key not in next_t:
                next_t[key] = -(-t // step_ns) * step_ns
            else:
                nt = next_t[key]
                while nt < t:
                    emit(book, nt)
                    nt += step_ns
                next_t[key] = nt
            book.apply(int(fu[a]), is_bid[a:b].tolist(), px[a:b].tolist(), qty[a:b].tolist())
            last_t[key] = t
            if len(buf[TS]) >= chunk_rows:
                yield from flush(False)
    for key, nt in next_t.items():
        while nt <= last_t[key]:
            emit(books[key], nt)
            nt += step_ns
    yield from flush(True)


# ---- raw websocket recording ----------------------------------------------------------------------

_RAW_LINE = re.compile(r"^\d{16,20} \{")


def _raw_market(msg: dict, file_market: str | None) -> str:
    if file_market is not None:
        return file_market
    s = str(msg.get("s", ""))
    if "ps" in msg or s.endswith("_PERP"):
        return "coinm_perp"
    if "X" in msg or (msg.get("e") == "bookTicker" and "T" in msg):
        return "usdm_perp"
    return "spot"


_SKIPPED_STREAMS = ("@depth", '"lastUpdateId"')


def _raw_lines(path: Path, *, skip_depth: bool = True) -> Iterator[tuple[int, int, dict]]:
    """Yield (line number, local receive ns, parsed JSON) for each non-empty line.

    With ``skip_depth`` the (large) depth-diff and REST-snapshot lines are skipped before parsing.
    """
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            head, sep, body = line.partition(" ")
            if skip_depth and any(k in body[:48] for k in _SKIPPED_STREAMS):
                continue
            try:
                local = int(head)
                obj = json.loads(body)
            except ValueError as exc:
                raise DataError(
                    f"cannot parse line {line[:60]!r}: expected '<receive time ns> <JSON message>' "
                    f"({exc})",
                    source=str(path),
                    line=lineno,
                ) from None
            if not sep or not isinstance(obj, dict):
                raise DataError(
                    f"cannot parse line {line[:60]!r}: expected '<receive time ns> <JSON object>'",
                    source=str(path),
                    line=lineno,
                )
            yield lineno, local, obj


def _raw_offset(path: Path, max_messages: int = 20_000) -> int | None:
    diffs = []
    for _, local, obj in _raw_lines(path):
        msg = obj.get("data", obj)
        e_ms = msg.get("E") if isinstance(msg, dict) else None
        if isinstance(e_ms, int):
            diffs.append(e_ms * 1_000_000 - local)
            if len(diffs) >= max_messages:
                break
    return int(np.median(diffs)) if diffs else None


def read_ws_raw(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    market: str | None = None,
    clock_offset: str | int | None = "auto",
    **options: object,
) -> Iterator[Chunk]:
    """Read a raw websocket recording (``<local receive ns> <JSON>`` per line, gzip or plain).

    ``trade`` messages -> "trades" (ts = trade time ``T``), ``aggTrade`` -> "agg_trades",
    ``bookTicker`` -> "quotes" (ts = ``T``, else ``E``, else receive time + clock offset).
    Depth diffs and the REST snapshot lines are skipped: the same data are in the recording's
    ``depth_updates.parquet`` / ``depth_snapshots.parquet``, which :func:`read_depth_updates`
    replays into books. Other event types are skipped too.

    Parameters
    ----------
    market : "spot", "usdm_perp" or "coinm_perp"; default from the file name prefix
        (``spot_``, ``usdm_``, ``cm_``) or, failing that, from each message's fields.
    clock_offset : see the module notes; "auto" measures it on this file's messages with an ``E``.
    """
    _reject_options("binance_ws_raw", options)
    chunk_rows = _check_chunk_rows(chunk_rows)
    path = Path(path)
    file_market = _market(market) if market is not None else _market_from_path(path)
    offset = _resolve_offset(clock_offset, lambda: _raw_offset(path))
    trades: dict[str, list] = {k: [] for k in (TS, SYMBOL, PRICE, SIZE, SIDE, TRADE_ID)}
    aggs: dict[str, list] = {k: [] for k in (TS, SYMBOL, PRICE, SIZE, SIDE, TRADE_ID)}
    quotes: dict[str, list] = {k: [] for k in (TS, SYMBOL, BID_PX, BID_SZ, ASK_PX, ASK_SZ)}
    first = {"trades": None, "agg_trades": None, "quotes": None}
    src = str(path)

    def make(table: str, kind: str, buf: dict[str, list]) -> Chunk:
        frame = pd.DataFrame(buf)
        frame[TS] = to_utc_ns(np.asarray(buf[TS], dtype="int64"), unit="ns")
        chunk = Chunk(
            table, kind, _conform(frame, kind, source=src), source=src, first_line=first[table]
        )
        for v in buf.values():
            v.clear()
        first[table] = None
        return chunk

    def number(msg: dict, key: str, lineno: int) -> float:
        try:
            return float(msg[key])
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"message field '{key}' is {msg.get(key)!r}; expected a number",
                source=src,
                line=lineno,
                column=key,
            ) from None

    for lineno, local, obj in _raw_lines(path):
        msg = obj.get("data", obj)
        stream = str(obj.get("stream", ""))
        event = msg.get("e") if isinstance(msg, dict) else None
        if event is None and stream.endswith("@bookTicker"):
            event = "bookTicker"
        if event in ("trade", "aggTrade"):
            buf = trades if event == "trade" else aggs
            table = "trades" if event == "trade" else "agg_trades"
            mk = _raw_market(msg, file_market)
            first[table] = first[table] or lineno
            t_ms = msg.get("T", msg.get("E"))
            if not isinstance(t_ms, int):
                raise DataError(
                    f"{event} message has no integer time 'T'; got {t_ms!r}",
                    source=src,
                    line=lineno,
                    column="T",
                )
            buf[TS].append(t_ms * 1_000_000)
            buf[SYMBOL].append(canonical_symbol(msg["s"], mk))
            buf[PRICE].append(number(msg, "p", lineno))
            buf[SIZE].append(number(msg, "q", lineno))
            buf[SIDE].append(SELL if msg.get("m") else BUY)
            buf[TRADE_ID].append(int(msg["t"] if event == "trade" else msg["a"]))
            if len(buf[TS]) >= chunk_rows:
                yield make(table, "trades", buf)
        elif event == "bookTicker":
            mk = _raw_market(msg, file_market)
            first["quotes"] = first["quotes"] or lineno
            t_ms = msg.get("T", msg.get("E"))
            quotes[TS].append(t_ms * 1_000_000 if isinstance(t_ms, int) else local + offset)
            quotes[SYMBOL].append(canonical_symbol(msg["s"], mk))
            quotes[BID_PX].append(number(msg, "b", lineno))
            quotes[BID_SZ].append(number(msg, "B", lineno))
            quotes[ASK_PX].append(number(msg, "a", lineno))
            quotes[ASK_SZ].append(number(msg, "A", lineno))
            if len(quotes[TS]) >= chunk_rows:
                yield make("quotes", "quotes", quotes)
    if trades[TS]:
        yield make("trades", "trades", trades)
    if aggs[TS]:
        yield make("agg_trades", "trades", aggs)
    if quotes[TS]:
        yield make("quotes", "quotes", quotes)


# ---- sniffing -------------------------------------------------------------------------------------

_PARQUET_SIGNATURES: list[tuple[str, set[str]]] = [
    (
        "binance_l2_depth_updates",
        {"market", "symbol", "first_update_id", "final_update_id", "side", "price", "qty"},
    ),
    (
        "binance_l2_depth_snapshots",
        {"market", "symbol", "last_update_id", "side", "level", "price", "qty"},
    ),
    (
        "binance_l2_book_ticker",
        {
            "market",
            "symbol",
            "local_ts_ns",
            "update_id",
            "bid_price",
            "bid_qty",
            "ask_price",
            "ask_qty",
        },
    ),
    (
        "binance_l2_trades",
        {
            "market",
            "symbol",
            "local_ts_ns",
            "trade_time_ms",
            "trade_id",
            "price",
            "qty",
            "buyer_is_maker",
        },
    ),
    ("binance_funding_parquet", {"symbol", "funding_time", "funding_rate"}),
    ("binance_klines_parquet", {"symbol", "open_time", "open", "high", "low", "close"}),
]


def _is_int(s: str) -> bool:
    return s.strip().lstrip("-").isdigit()


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _is_bool(s: str) -> bool:
    return s.strip().lower() in ("true", "false")


def _is_epoch(s: str) -> bool:
    """Epoch ms or us between 2009 and 2100."""
    if not _is_int(s):
        return False
    v = int(s)
    return 1.23e12 <= v < 4.2e12 or 1.23e15 <= v < 4.2e15


def _sniff_csv_line(line: str) -> str | None:
    f = [x.strip() for x in line.split(",")]
    low = [x.lower() for x in f]
    if low[:6] == ["open_time", "open", "high", "low", "close", "volume"] and len(f) == 12:
        return "binance_klines_csv"
    if low[:2] == ["id", "price"] and "is_buyer_maker" in low and "time" in low:
        return "binance_trades_csv"
    if low[:2] == ["agg_trade_id", "price"] and "is_buyer_maker" in low:
        return "binance_aggtrades_csv"
    n = len(f)
    if n == 12 and _is_epoch(f[0]) and _is_epoch(f[6]) and all(_is_float(x) for x in f[1:6]):
        return "binance_klines_csv"
    if (
        n in (6, 7)
        and _is_int(f[0])
        and _is_epoch(f[4])
        and _is_bool(f[5])
        and all(_is_float(x) for x in f[1:4])
        and (n == 6 or _is_bool(f[6]))
    ):
        return "binance_trades_csv"
    if (
        n in (7, 8)
        and all(_is_int(x) for x in (f[0], f[3], f[4]))
        and _is_epoch(f[5])
        and _is_bool(f[6])
        and (n == 7 or _is_bool(f[7]))
    ):
        return "binance_aggtrades_csv"
    return None


def sniff(path: Path) -> str | None:
    """The Binance format of ``path`` judged by its name and columns / first line, or None."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            cols = set(pq.read_schema(path).names)
            for fmt, need in _PARQUET_SIGNATURES:
                if need <= cols:
                    return fmt
            return None
        parts = _name_parts(path)
        if parts:
            kind = parts["kind"]
            if kind == "trades":
                return "binance_trades_csv"
            if kind == "aggTrades":
                return "binance_aggtrades_csv"
            return "binance_klines_csv"
        if name.endswith((".csv", ".csv.gz", ".zip")):
            return _sniff_csv_line(first_line(path))
        if name.endswith(".gz") or name.endswith((".txt", ".jsonl", ".log")) or "." not in name:
            with open_text(path) as fh:
                for _ in range(5):
                    line = fh.readline()
                    if not line:
                        break
                    if _RAW_LINE.match(line) and (
                        '"stream":"' in line and "@" in line or '"lastUpdateId"' in line
                    ):
                        return "binance_ws_raw"
            return None
    except (OSError, UnicodeDecodeError, ValueError, EOFError):
        return None
    return None


READERS: dict[str, Reader] = {
    "binance_klines_parquet": read_klines_parquet,
    "binance_funding_parquet": read_funding_parquet,
    "binance_klines_csv": read_klines_csv,
    "binance_trades_csv": read_trades_csv,
    "binance_aggtrades_csv": read_aggtrades_csv,
    "binance_l2_trades": read_l2_trades,
    "binance_l2_book_ticker": read_l2_book_ticker,
    "binance_l2_depth_snapshots": read_l2_depth_snapshots,
    "binance_l2_depth_updates": read_depth_updates,
    "binance_ws_raw": read_ws_raw,
}
"""Binance format name -> reader."""
