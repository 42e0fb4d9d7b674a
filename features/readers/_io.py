"""Shared I/O for readers: gzip-transparent chunked CSV with line-accurate errors."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features.schema import DataError

CORRUPT_FILE_ERRORS: tuple[type[BaseException], ...] = (
    zlib.error,
    gzip.BadGzipFile,
    EOFError,
    zipfile.BadZipFile,
    UnicodeDecodeError,
    pa.ArrowInvalid,
)
"""Exceptions the decoders raise for a damaged or mislabelled file (not for a bug of ours)."""


def corrupt_file_error(path: Path | str, exc: BaseException) -> DataError:
    """A :class:`DataError` naming ``path`` and saying, in a person's words, what is wrong with it.

    ``exc`` is one of :data:`CORRUPT_FILE_ERRORS`; the decision is made on its type only.
    """
    name = str(path)
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, gzip.BadGzipFile):
        what = f"not a gzip file ({detail}); expected gzip-compressed data for a '.gz' name"
    elif isinstance(exc, zlib.error):
        what = f"corrupt gzip data ({detail}); the file is damaged: download it again"
    elif isinstance(exc, EOFError):
        what = (f"truncated compressed file ({detail}); the file is incomplete: "
                "download or copy it again")
    elif isinstance(exc, zipfile.BadZipFile):
        what = f"not a valid zip archive ({detail})"
    elif isinstance(exc, UnicodeDecodeError):
        what = (f"not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
                f"{exc.start}); expected a UTF-8 CSV or text file")
    elif isinstance(exc, pa.ArrowInvalid):
        what = f"not a readable parquet file ({detail})"
    else:  # pragma: no cover - CORRUPT_FILE_ERRORS lists the cases above
        what = detail
    return DataError(what, source=name)


@contextlib.contextmanager
def decoding(path: Path | str) -> Iterator[None]:
    """Turn a decoder's error (:data:`CORRUPT_FILE_ERRORS`) inside the block into a
    :class:`DataError` naming ``path``."""
    try:
        yield
    except DataError:
        raise
    except CORRUPT_FILE_ERRORS as exc:
        raise corrupt_file_error(path, exc) from exc


def open_text(path: Path) -> io.TextIOBase:
    """Open a text file, transparently decompressing ``.gz`` and single-member ``.zip``."""
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    if path.suffix == ".zip":
        import zipfile

        zf = zipfile.ZipFile(path)
        members = [n for n in zf.namelist() if not n.endswith("/")]
        if len(members) != 1:
            zf.close()
            raise DataError(
                f"zip archive holds {len(members)} files {members[:5]}; expected exactly one CSV",
                source=str(path),
            )
        return io.TextIOWrapper(zf.open(members[0]), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def first_line(path: Path) -> str:
    """The first line of a (possibly gzipped) text file, without the newline."""
    with open_text(path) as fh:
        return fh.readline().rstrip("\r\n")


def has_header(path: Path) -> bool:
    """True if the first CSV field of the first line is not a number."""
    head = first_line(path)
    field = next(csv.reader([head]), [""])[0].strip() if head else ""
    try:
        float(field)
    except ValueError:
        return True
    return False


def iter_csv(
    path: Path,
    *,
    chunk_rows: int,
    names: list[str] | None = None,
    header: bool | None = None,
    dtype: dict[str, str] | None = None,
) -> Iterator[tuple[int, pd.DataFrame]]:
    """Yield ``(first_line, frame)`` chunks of a CSV file, at most ``chunk_rows`` rows each.

    Parameters
    ----------
    path : CSV file, optionally gzipped.
    chunk_rows : rows per chunk; memory stays bounded by a chunk.
    names : column names for a file without a header (or to override one).
    header : whether the first line is a header; ``None`` detects it.
    dtype : column -> dtype passed to the parser; a value that does not parse raises
        :class:`DataError` naming the file, line and column.

    ``first_line`` is the 1-based file line of the chunk's first data row.
    """
    path = Path(path)
    if header is None:
        header = has_header(path)
    skip = 1 if header else 0
    try:
        reader = pd.read_csv(
            path,
            chunksize=chunk_rows,
            header=0 if header else None,
            names=names,
            dtype=dtype,
            compression="infer",
            skipinitialspace=True,
        )
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise _locate(path, exc, names, header, dtype) from None
    line = 1 + skip
    it = iter(reader)
    while True:
        try:
            frame = next(it)
        except StopIteration:
            return
        except pd.errors.EmptyDataError:
            return
        except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
            raise _locate(path, exc, names, header, dtype) from None
        yield line, frame
        line += len(frame)


def _locate(
    path: Path,
    exc: Exception,
    names: list[str] | None,
    header: bool,
    dtype: dict[str, str] | None = None,
) -> DataError:
    """Turn a pandas parse error into a DataError with the file line and column of the problem.

    With ``dtype`` only the columns given a numeric dtype are checked for non-numbers (a text column
    such as "True"/"False" is not an error); a row whose field count differs from the header/names is
    reported too (pandas raises for it only when an integer column ends up with missing values).
    """
    msg = str(exc)
    # pandas: "Error tokenizing data. C error: Expected 7 fields in line 5, saw 9"
    import re

    m = re.search(r"line (\d+)", msg)
    if m:
        return DataError(
            f"cannot parse CSV: {msg.split('C error: ')[-1]}",
            source=str(path),
            line=int(m.group(1)),
        )
    # dtype errors: find the first offending value by a slow, exact scan
    with open_text(path) as fh:
        rdr = csv.reader(fh)
        cols = names
        for lineno, row in enumerate(rdr, start=1):
            if lineno == 1 and header:
                cols = cols or row
                continue
            if cols and row and len(row) != len(cols):
                return DataError(
                    f"expected {len(cols)} fields, saw {len(row)}", source=str(path), line=lineno
                )
            for j, value in enumerate(row):
                col = cols[j] if cols and j < len(cols) else str(j)
                if dtype is not None and not _numeric_dtype(dtype.get(col)):
                    continue
                if value and _bad_number(value) and _expects_number(msg, col):
                    return DataError(
                        f"cannot parse value {value!r}; expected a number",
                        source=str(path),
                        line=lineno,
                        column=col,
                    )
    return DataError(f"cannot parse CSV: {msg}", source=str(path))


def _bad_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return True
    return False


def _expects_number(msg: str, col: str) -> bool:
    return (
        col in msg
        or "could not convert" in msg
        or "Unable to parse" in msg
        or "invalid literal" in msg
    )


def _numeric_dtype(dtype: str | None) -> bool:
    """True for a dtype name the CSV parser converts to a number ("float64", "int64", "Int64"...)."""
    if dtype is None:
        return False
    name = str(dtype).lower()
    return name.startswith(("float", "int", "uint"))
