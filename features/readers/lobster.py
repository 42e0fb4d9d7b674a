"""LOBSTER limit-order-book files (lobsterdata.com) and their joined parquet form.

A LOBSTER source is a pair of files for one ticker and day,
``TICKER_DATE_start_end_message_N.csv[.gz]`` and ``TICKER_DATE_start_end_orderbook_N.csv[.gz]``,
with one orderbook row (the book after the event) per message row:

- message: time (seconds after midnight, America/New_York wall clock, up to ns decimals), event
  type (1 submission, 2 partial cancel, 3 delete, 4 visible execution, 5 hidden execution,
  6 cross/auction trade, 7 trading halt), order id, size (shares), price x 10000, direction
  (-1 sell limit order, +1 buy limit order);
- orderbook: ask price, ask size, bid price, bid size for levels 1..N (prices x 10000); empty
  levels hold the dummy prices +/-9999999999 with size 0.

Format ``lobster`` is the message file (the orderbook file is found beside it; sniffing the
orderbook file alone returns None so the pair is read once). Format ``lobster_parquet`` is the
same content joined side by side (``time_s_after_midnight, event_type, order_id, size,
price_x10000, direction, ask_price_1_x10000, ask_size_1, bid_price_1_x10000, bid_size_1, ...``),
e.g. ``amzn_level1_events.parquet``; its ticker and date come from options, else from the folder
name (``lobster_amzn_2012-06-21_level1``), else from a LOBSTER file name quoted in the folder's
``SOURCE.md``.

Tables
------
``quotes``
    Top of book after every message (prices / 10000). A side with no order (dummy price) has
    a NaN price and size 0.
``trades``
    Executions of visible and hidden limit orders (event types 4 and 5) at the message's price and
    size. ``side`` is the aggressor: executing a sell limit order (direction -1) is a
    buyer-initiated trade (+1), direction +1 gives -1. Cross trades (type 6, auctions) and halts
    (type 7) are not trades of the continuous market and are left out.
``book``
    Only when N > 1: the long book after every message (``side`` +1 bid / -1 ask, ``level``
    0..N-1 with 0 = best, as everywhere in DPRM), dummy levels dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from features.readers._io import iter_csv
from features.readers.base import Chunk
from features.readers.generic import (
    DEFAULT_CHUNK_ROWS,
    check_chunk_rows,
    iter_parquet,
    numeric,
    parquet_columns,
    split_frame,
)
from features.schema import (
    ASK_PX,
    ASK_SIDE,
    ASK_SZ,
    BID_PX,
    BID_SIDE,
    BID_SZ,
    BUY,
    LEVEL,
    PRICE,
    PX,
    SELL,
    SIDE,
    SIZE,
    SYMBOL,
    SZ,
    TS,
    DataError,
    conform,
)

TZ = "America/New_York"
PRICE_SCALE = 10_000.0
DUMMY_PRICE = 9_999_999_999
EXECUTIONS = (4, 5)
MESSAGE_COLUMNS = ["time", "event_type", "order_id", "size", "price", "direction"]
_NAME_RE = re.compile(
    r"^(?P<ticker>[A-Za-z0-9.^]+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<start>\d+)_(?P<end>\d+)_"
    r"(?P<part>message|orderbook)_(?P<levels>\d+)\.csv(?:\.gz)?$"
)
_FOLDER_RE = re.compile(
    r"lobster_(?P<ticker>[A-Za-z0-9.]+)_(?P<date>\d{4}-\d{2}-\d{2})", re.IGNORECASE
)
_PARQUET_BASE = [
    "time_s_after_midnight",
    "event_type",
    "order_id",
    "size",
    "price_x10000",
    "direction",
]


def orderbook_columns(levels: int) -> list[str]:
    """Column names for a LOBSTER orderbook file with ``levels`` levels."""
    cols = []
    for i in range(1, levels + 1):
        cols += [f"ask_px_{i}", f"ask_sz_{i}", f"bid_px_{i}", f"bid_sz_{i}"]
    return cols


def parse_name(path: Path) -> dict[str, str] | None:
    """Ticker, date, start, end, part and levels from a LOBSTER file name, or None."""
    m = _NAME_RE.match(Path(path).name)
    return m.groupdict() if m else None


def orderbook_path(message_path: Path) -> Path:
    """The orderbook file beside a message file (same compression preferred, either accepted)."""
    message_path = Path(message_path)
    name = message_path.name.replace("_message_", "_orderbook_")
    candidates = [message_path.with_name(name)]
    candidates.append(message_path.with_name(name[:-3] if name.endswith(".gz") else name + ".gz"))
    for c in candidates:
        if c.exists():
            return c
    raise DataError(
        f"LOBSTER orderbook file not found beside the message file; looked for "
        f"{[c.name for c in candidates]}",
        source=str(message_path),
    )


def _midnight_ns(date: str) -> int:
    """Nanoseconds of local midnight of ``date`` as a naive wall-clock value."""
    return pd.Timestamp(date).value


def _wall_clock_utc(date: str, seconds: np.ndarray, src: str) -> pd.Series:
    """Seconds after local midnight on ``date`` (New York wall clock) -> UTC timestamps."""
    ns = _midnight_ns(date) + np.round(seconds * 1e9).astype("int64")
    local = pd.Series(pd.to_datetime(ns, unit="ns"))
    try:
        return local.dt.tz_localize(TZ).dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"cannot place times of {date} in {TZ} ({exc})", source=src, column="time"
        ) from None


def _tables(
    *,
    ts: pd.Series,
    event: np.ndarray,
    size: np.ndarray,
    price: np.ndarray,
    direction: np.ndarray,
    book: dict[str, np.ndarray],
    levels: int,
    ticker: str,
    src: str,
    chunk_rows: int,
    first_line: int | None,
) -> Iterator[Chunk]:
    """Turn one aligned message/orderbook chunk into quotes, trades and (N > 1) book chunks."""
    n = len(ts)

    def px(raw: np.ndarray) -> np.ndarray:
        out = raw / PRICE_SCALE
        return np.where(np.abs(raw) >= DUMMY_PRICE, np.nan, out)

    quotes = pd.DataFrame(
        {
            TS: ts,
            SYMBOL: ticker,
            BID_PX: px(book["bid_px_1"]),
            BID_SZ: book["bid_sz_1"],
            ASK_PX: px(book["ask_px_1"]),
            ASK_SZ: book["ask_sz_1"],
        }
    )
    yield Chunk(
        "quotes", "quotes", conform(quotes, "quotes", source=src), src, first_line=first_line
    )
    bad = ~np.isin(direction, (-1, 1)) & np.isin(event, EXECUTIONS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"execution with direction {direction[i]!r}; expected -1 or 1",
            source=src,
            line=None if first_line is None else first_line + i,
            column="direction",
        )
    ex = np.isin(event, EXECUTIONS)
    trades = pd.DataFrame(
        {
            TS: ts[ex].reset_index(drop=True),
            SYMBOL: ticker,
            PRICE: price[ex] / PRICE_SCALE,
            SIZE: size[ex].astype("float64"),
            SIDE: np.where(direction[ex] == -1, BUY, SELL).astype("int8"),
        }
    )
    yield Chunk(
        "trades", "trades", conform(trades, "trades", source=src), src, first_line=first_line
    )
    if levels > 1:
        parts = []
        for i in range(1, levels + 1):
            for name, side in (("bid", BID_SIDE), ("ask", ASK_SIDE)):
                raw = book[f"{name}_px_{i}"]
                parts.append(
                    pd.DataFrame(
                        {
                            "_row": np.arange(n),
                            TS: ts,
                            SYMBOL: ticker,
                            SIDE: np.int8(side),
                            LEVEL: np.int16(i - 1),
                            PX: px(raw),
                            SZ: book[f"{name}_sz_{i}"],
                        }
                    )
                )
        long = pd.concat(parts, ignore_index=True)
        long = long[long[PX].notna()].sort_values(
            ["_row", SIDE, LEVEL], ascending=[True, False, True], kind="stable"
        )
        for _, piece in split_frame(long.reset_index(drop=True), chunk_rows):
            line = None if first_line is None else first_line + int(piece["_row"].iloc[0])
            yield Chunk("book", "book", conform(piece, "book", source=src), src, first_line=line)


def read_lobster(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ticker: str | None = None,
    date: str | None = None,
) -> Iterator[Chunk]:
    """Read a LOBSTER message file and its orderbook file into quotes/trades/book chunks.

    Parameters
    ----------
    path : the ``..._message_N.csv[.gz]`` file; the orderbook file must lie beside it.
    chunk_rows : messages per step (book chunks are split to at most this many rows).
    ticker, date : override the values parsed from the file name.

    Raises
    ------
    DataError
        A file name that is not LOBSTER's (without ``ticker``/``date``), a missing orderbook file,
        files of different lengths, or a value that does not parse (file, line, column).
    """
    path = Path(path)
    src = str(path)
    check_chunk_rows(chunk_rows)
    meta = parse_name(path)
    if meta is None or meta["part"] != "message":
        raise DataError(
            "not a LOBSTER message file name (TICKER_DATE_start_end_message_N.csv)", source=src
        )
    levels = int(meta["levels"])
    ticker = ticker or meta["ticker"]
    date = date or meta["date"]
    ob_path = orderbook_path(path)
    ob_names = orderbook_columns(levels)
    msgs = iter_csv(path, chunk_rows=chunk_rows, names=MESSAGE_COLUMNS)
    books = iter_csv(ob_path, chunk_rows=chunk_rows, names=ob_names)
    for (line, msg), (_, ob) in _zip_strict(msgs, books, src, str(ob_path)):
        msg = msg.reset_index(drop=True)
        seconds = numeric(msg["time"], column="time", source=src, first_line=line)
        cols = {
            c: numeric(msg[c], column=c, source=src, first_line=line)
            for c in ("event_type", "size", "price", "direction")
        }
        book = {
            c: numeric(ob[c].reset_index(drop=True), column=c, source=str(ob_path), first_line=line)
            for c in ob_names
        }
        yield from _tables(
            ts=_wall_clock_utc(date, seconds, src),
            event=cols["event_type"],
            size=cols["size"],
            price=cols["price"],
            direction=cols["direction"],
            book=book,
            levels=levels,
            ticker=ticker,
            src=src,
            chunk_rows=chunk_rows,
            first_line=line,
        )


def _zip_strict(msgs, books, src: str, ob_src: str):
    for item in msgs:
        try:
            ob_item = next(books)
        except StopIteration:
            raise DataError(
                f"orderbook file {ob_src} ends before the message file (message line {item[0]})",
                source=src,
                line=item[0],
            ) from None
        if len(ob_item[1]) != len(item[1]):
            line = item[0] + min(len(ob_item[1]), len(item[1]))
            raise DataError(
                f"message and orderbook files differ in length near line {line} ({ob_src})",
                source=src,
                line=line,
            )
        yield item, ob_item
    extra = next(books, None)
    if extra is not None:
        raise DataError(
            f"orderbook file {ob_src} has more rows than the message file (from line {extra[0]})",
            source=src,
            line=extra[0],
        )


def parquet_levels(columns: list[str]) -> int:
    """Number of book levels in a joined LOBSTER parquet (0 if it is not one)."""
    if not set(_PARQUET_BASE) <= set(columns):
        return 0
    n = 0
    while {
        f"ask_price_{n + 1}_x10000",
        f"ask_size_{n + 1}",
        f"bid_price_{n + 1}_x10000",
        f"bid_size_{n + 1}",
    } <= set(columns):
        n += 1
    return n


def parquet_meta(path: Path) -> tuple[str | None, str | None]:
    """(ticker, date) of a joined LOBSTER parquet from its folder name or the folder's SOURCE.md."""
    path = Path(path)
    m = _FOLDER_RE.search(path.parent.name)
    if m:
        return m.group("ticker").upper(), m.group("date")
    source_md = path.parent / "SOURCE.md"
    if source_md.exists():
        m = re.search(
            r"([A-Za-z0-9.]+)_(\d{4}-\d{2}-\d{2})_\d+_\d+_message_\d+",
            source_md.read_text(encoding="utf-8", errors="replace"),
        )
        if m:
            return m.group(1).upper(), m.group(2)
    return None, None


def read_lobster_parquet(
    path: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ticker: str | None = None,
    date: str | None = None,
) -> Iterator[Chunk]:
    """Read a joined LOBSTER parquet (message + orderbook columns) into quotes/trades/book chunks.

    ``ticker``/``date`` (YYYY-MM-DD) default to the folder name (``lobster_amzn_2012-06-21_...``)
    or a LOBSTER file name in the folder's ``SOURCE.md``; a :class:`DataError` asks for them when
    neither is found.
    """
    path = Path(path)
    src = str(path)
    cols = parquet_columns(path)
    levels = parquet_levels(cols)
    if levels == 0:
        raise DataError(
            f"not a joined LOBSTER parquet: needs {_PARQUET_BASE} and "
            f"ask_price_1_x10000/ask_size_1/bid_price_1_x10000/bid_size_1; got {cols}",
            source=src,
        )
    t, d = parquet_meta(path)
    ticker, date = ticker or t, date or d
    if ticker is None or date is None:
        raise DataError(
            "cannot tell the ticker and date of this LOBSTER parquet from its folder "
            "name or SOURCE.md; give ticker = \"AMZN\" and date = \"YYYY-MM-DD\" in a --mapping TOML file",
            source=src,
        )
    names = {}
    for i in range(1, levels + 1):
        names.update(
            {
                f"ask_px_{i}": f"ask_price_{i}_x10000",
                f"ask_sz_{i}": f"ask_size_{i}",
                f"bid_px_{i}": f"bid_price_{i}_x10000",
                f"bid_sz_{i}": f"bid_size_{i}",
            }
        )
    for raw in iter_parquet(
        path, chunk_rows=chunk_rows, columns=_PARQUET_BASE + list(names.values())
    ):
        cols = {c: numeric(raw[c], column=c, source=src) for c in _PARQUET_BASE}
        book = {k: numeric(raw[v], column=v, source=src) for k, v in names.items()}
        yield from _tables(
            ts=_wall_clock_utc(date, cols["time_s_after_midnight"], src),
            event=cols["event_type"],
            size=cols["size"],
            price=cols["price_x10000"],
            direction=cols["direction"],
            book=book,
            levels=levels,
            ticker=ticker,
            src=src,
            chunk_rows=chunk_rows,
            first_line=None,
        )


READERS = {"lobster": read_lobster, "lobster_parquet": read_lobster_parquet}
"""Format name -> reader."""


def companion_of(path: Path) -> Path | None:
    """The message file an orderbook file belongs to (it is read with it), else None."""
    path = Path(path)
    meta = parse_name(path)
    if meta is None or meta["part"] != "orderbook":
        return None
    name = path.name.replace("_orderbook_", "_message_")
    for cand in (name, name[:-3] if name.endswith(".gz") else name + ".gz"):
        if (path.with_name(cand)).exists():
            return path.with_name(cand)
    return path.with_name(name)


def sniff(path: Path) -> str | None:
    """``lobster`` for a LOBSTER message file, ``lobster_parquet`` for a joined parquet, else None.

    The orderbook file of a pair returns None: it is read with its message file.
    """
    path = Path(path)
    meta = parse_name(path)
    if meta is not None:
        return "lobster" if meta["part"] == "message" else None
    if path.suffix.lower() == ".parquet":
        try:
            return "lobster_parquet" if parquet_levels(parquet_columns(path)) else None
        except DataError:
            return None
    return None
