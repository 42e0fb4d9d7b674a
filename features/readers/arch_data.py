"""Data sets embedded in the ``arch`` package (``arch.data``): the demo data that needs no download.

``sp500`` and ``nasdaq`` (1999-2018 daily ``Date, Open, High, Low, Close, Adj Close, Volume``)
become ``bars`` in table ``bars_1d`` with symbols ``SP500``/``NASDAQ``, raw OHLC (``Adj Close`` is
not used: for an index it equals ``Close``, and adjusted prices would rewrite history). ``vix``
(2014-2019 ``Date, vix``) becomes the ``levels`` kind in table ``vix_1d``, symbol ``VIX``.

``ts`` is the date at 16:00 America/New_York (the NYSE close of :data:`features.symbols.CALENDARS`)
in UTC, for the VIX too: its official close is printed at 16:15, but stamping it with the equity
close keeps the three series on one daily grid (the 15 minutes are immaterial for daily data).
Rows whose values arch itself cannot parse (it coerces them to NaN) are dropped.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from features.readers.base import Chunk
from features.readers.generic import (
    DEFAULT_CHUNK_ROWS,
    ONE_DAY,
    check_chunk_rows,
    local_time_utc,
    parse_ts,
    split_frame,
)
from features.schema import CLOSE, HIGH, LOW, OPEN, SYMBOL, TS, VOLUME, DataError, conform
from features.symbols import CALENDARS

EMBEDDED = ("sp500", "nasdaq", "vix")
"""Names of the embedded data sets."""

_SPEC = {
    "sp500": ("SP500", "bars", "bars_1d"),
    "nasdaq": ("NASDAQ", "bars", "bars_1d"),
    "vix": ("VIX", "levels", "vix_1d"),
}


def embedded_path(name: str) -> Path:
    """The ``.csv.gz`` file of an embedded data set inside the installed ``arch`` package."""
    _check_name(name)
    spec = importlib.util.find_spec("arch")  # locates the package without importing it (slow)
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the 'arch' package is not installed; it ships the embedded data sets")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name / f"{name}.csv.gz"


def _check_name(name: object) -> None:
    if name not in _SPEC:
        raise DataError(f"unknown arch data set {name!r}; expected one of {list(EMBEDDED)}")


def load_embedded(name: str, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
    """Read one embedded ``arch`` data set ("sp500", "nasdaq" or "vix") as canonical chunks."""
    return read_arch_data(embedded_path(name), chunk_rows=chunk_rows, name=name)


def read_arch_data(
    path: Path | None = None, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, name: str | None = None
) -> Iterator[Chunk]:
    """Read an ``arch`` data file (``sp500.csv.gz``, ``nasdaq.csv.gz``, ``vix.csv.gz``).

    Parameters
    ----------
    path : the file; None reads the copy embedded in the installed package.
    chunk_rows : at most this many rows per chunk.
    name : "sp500", "nasdaq" or "vix"; default from the file name.
    """
    check_chunk_rows(chunk_rows)
    if name is None:
        if path is None:
            raise DataError(
                f"the 'arch_data' format needs a 'name' option, one of {list(EMBEDDED)}"
            )
        name = Path(path).name.split(".")[0].lower()
    _check_name(name)
    path = Path(path) if path is not None else embedded_path(name)
    src = str(path)
    symbol, kind, table = _SPEC[name]
    raw = pd.read_csv(path)  # a few thousand rows: one read, then split
    if "Date" not in raw.columns:
        raise DataError(
            f"arch data file lacks a 'Date' column; got {list(raw.columns)}", source=src
        )
    dates = parse_ts(raw["Date"], column="Date", source=src, first_line=2)
    t, tz = CALENDARS["XNYS"].close_time, CALENDARS["XNYS"].tz
    frame = pd.DataFrame({TS: local_time_utc(dates.dt.tz_localize(None), t, tz), SYMBOL: symbol})
    if kind == "bars":
        for canon, col in (
            (OPEN, "Open"),
            (HIGH, "High"),
            (LOW, "Low"),
            (CLOSE, "Close"),
            (VOLUME, "Volume"),
        ):
            frame[canon] = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype="float64")
        keep = frame[[OPEN, HIGH, LOW, CLOSE]].notna().all(axis=1)
    else:
        frame[CLOSE] = pd.to_numeric(raw[name], errors="coerce").to_numpy(dtype="float64")
        keep = frame[CLOSE].notna()
    frame = frame[keep.to_numpy()].reset_index(drop=True)
    frame = conform(frame, kind, source=src)
    for _, piece in split_frame(frame, chunk_rows):
        yield Chunk(table, kind, piece, src, interval=ONE_DAY)


READERS = {"arch_data": read_arch_data}
"""Format name -> reader."""


def sniff(path: Path) -> str | None:
    """``arch_data`` for ``{sp500,nasdaq,vix}.csv.gz`` inside an ``arch/data/<name>/`` folder."""
    path = Path(path)
    name = path.name.split(".")[0].lower()
    if (
        name in _SPEC
        and path.name.lower() == f"{name}.csv.gz"
        and path.parent.name == name
        and path.parent.parent.name == "data"
    ):
        return "arch_data"
    return None
