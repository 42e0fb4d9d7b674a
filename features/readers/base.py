"""The reader contract: every source format becomes a stream of canonical chunks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd


@dataclass(frozen=True)
class Chunk:
    """A piece of one canonical table read from a source file.

    Attributes
    ----------
    table : logical table name inside a dataset, e.g. "trades", "quotes", "book", "bars_1m",
        "mark_1h", "funding", "realized_1d", "options", "ivindex_1d".
    kind : the schema kind of ``frame`` (a key of :data:`features.schema.SCHEMAS`).
    frame : the rows, already conformed to the canonical columns and dtypes of ``kind``.
    first_line : 1-based line of the source file holding this chunk's first row (text formats),
        or None.
    interval : bar length for per-period tables (bars, realized, index levels), else None.
    source : the file the rows came from.
    """

    table: str
    kind: str
    frame: pd.DataFrame
    source: str
    first_line: int | None = None
    interval: pd.Timedelta | None = None


class Reader(Protocol):
    """A function reading one source file into canonical chunks of at most ``chunk_rows`` rows."""

    def __call__(
        self, path: Path, *, chunk_rows: int = ..., **options: object
    ) -> Iterator[Chunk]: ...
