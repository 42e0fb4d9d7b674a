"""The reader registry: every supported source format, format detection and directory listing.

Each reader module (``binance``, ``tardis``, ``lobster``, ``realized``, ``deribit``, ``taq``,
``arch_data``, ``generic``) exposes

- ``READERS: dict[str, Reader]``: format name -> ``read(path, *, chunk_rows=500_000, **options)``
  yielding :class:`~features.readers.base.Chunk` s of at most ``chunk_rows`` conformed rows;
- ``sniff(path) -> str | None``: the name of one of its formats if it recognises the file.

Modules are imported lazily, on first use, and a module that does not exist is skipped, so the
registry works with whatever readers are installed. Detection asks the specific modules first and
``generic`` (which accepts any table with a time column) last, whatever the order of
:data:`MODULES`, so a specific format is never shadowed by the generic one.

Usage::

    from features.readers import read_source, detect_format, list_sources
    for chunk in read_source(Path("klines_1m.parquet")):
        ...
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

from features.errors import ConfigError
from features.readers._io import decoding
from features.readers.base import Chunk, Reader
from features.schema import DataError

__all__ = [
    "FORMATS",
    "MODULES",
    "Chunk",
    "Reader",
    "check_options",
    "detect_format",
    "format_options",
    "list_sources",
    "read_source",
]

MODULES: tuple[str, ...] = (
    "binance",
    "tardis",
    "lobster",
    "generic",
    "realized",
    "deribit",
    "taq",
    "arch_data",
)
"""Reader modules of :mod:`features.readers`, by name."""

_GENERIC = ("generic",)
"""Modules asked last by :func:`detect_format` (they accept broad families of files)."""

DOC_SUFFIXES = (".md", ".txt", ".rst", ".pdf", ".html", ".htm")
"""File suffixes that :func:`list_sources` reports as documentation."""

DEFAULT_CHUNK_ROWS = 500_000


@functools.cache
def _modules() -> tuple[tuple[str, ModuleType], ...]:
    """The reader modules that exist, in detection order (generic ones last)."""
    found = []
    for name in MODULES:
        full = f"{__name__}.{name}"
        try:
            mod = importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name == full:  # the module itself is absent: skip it
                continue
            raise
        for attr in ("READERS", "sniff"):
            if not hasattr(mod, attr):
                raise DataError(
                    f"reader module {full} lacks '{attr}'; every reader module must "
                    "define READERS and sniff"
                )
        found.append((name, mod))
    found.sort(key=lambda item: item[0] in _GENERIC)
    return tuple(found)


@functools.cache
def _formats() -> dict[str, Reader]:
    formats: dict[str, Reader] = {}
    owner: dict[str, str] = {}
    for name, mod in _modules():
        for fmt, reader in mod.READERS.items():
            if fmt in formats:
                raise DataError(
                    f"format '{fmt}' is defined by both readers.{owner[fmt]} and "
                    f"readers.{name}; format names must be unique"
                )
            formats[fmt] = reader
            owner[fmt] = name
    return formats


def __getattr__(name: str) -> object:
    # FORMATS is built on first access so that importing the package stays cheap and free of
    # import cycles with the reader modules.
    if name == "FORMATS":
        return dict(_formats())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def known_formats() -> list[str]:
    """Sorted names of all formats of the installed reader modules."""
    return sorted(_formats())


def _sniff(path: Path) -> tuple[str, str] | None:
    """(format, module name) of the first module whose ``sniff`` recognises ``path``."""
    for name, mod in _modules():
        with decoding(path):  # a damaged file is an error naming it, not a crash of the sniffer
            fmt = mod.sniff(path)
        if fmt is not None:
            if fmt not in _formats():
                raise DataError(
                    f"readers.{name}.sniff returned '{fmt}', which is not a known "
                    f"format; known formats: {known_formats()}",
                    source=str(path),
                )
            return fmt, name
    return None


def detect_format(path: Path) -> str:
    """The format name of ``path``, asking each reader module's ``sniff`` in turn.

    Raises
    ------
    DataError
        "cannot detect the format of FILE; pass --format one of [...]" when no module recognises it,
        or when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}; expected an existing data file", source=str(path))
    hit = _sniff(path)
    if hit is None:
        raise DataError(
            f"cannot detect the format of {path}; pass --format one of {known_formats()}",
            source=str(path),
        )
    return hit[0]


def read_source(
    path: Path,
    fmt: str | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    **options: object,
) -> Iterator[Chunk]:
    """Read one source file as canonical chunks.

    Parameters
    ----------
    path : the data file.
    fmt : a format name (see :data:`FORMATS`); None detects it with :func:`detect_format`.
    chunk_rows : maximum rows per chunk (memory stays bounded by one chunk).
    **options : format-specific options (``symbol=``, ``interval=``, ``market=``, ...).

    Yields
    ------
    Chunk with a frame conformed to its table kind.
    """
    path = Path(path)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise DataError(
            f"The 'chunk_rows' parameter must be an integer >= 1. Got {chunk_rows!r} instead."
        )
    if fmt is None:
        fmt = detect_format(path)
    formats = _formats()
    if fmt not in formats:
        raise DataError(f"unknown format '{fmt}'; expected one of {known_formats()}")
    if not path.is_file():
        raise DataError(f"no such file: {path}; expected an existing data file", source=str(path))
    check_options(fmt, options)
    with decoding(path):
        yield from formats[fmt](path, chunk_rows=chunk_rows, **options)


def format_options(fmt: str) -> list[str] | None:
    """The option names the reader of format ``fmt`` accepts (besides ``path`` and
    ``chunk_rows``); None when it accepts any keyword."""
    import inspect

    formats = _formats()
    if fmt not in formats:
        raise ConfigError(f"unknown format '{fmt}'; expected one of {known_formats()}")
    params = inspect.signature(formats[fmt]).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
            and p.name != "chunk_rows"]


def check_options(fmt: str, options: Mapping[str, object], *, origin: str | None = None) -> None:
    """Raise :class:`ConfigError` (naming ``origin``, e.g. the mapping file, when given) if
    ``options`` holds a key the reader of ``fmt`` does not accept."""
    accepted = format_options(fmt)
    if accepted is None:
        return
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        where = f"{origin}: " if origin else ""
        raise ConfigError(
            f"{where}unknown key(s) {unknown} for format '{fmt}'; expected keys among {accepted}"
        )


def _is_doc(path: Path) -> bool:
    name = path.name.lower()
    return (
        name.startswith(("readme", "license", "licence"))
        or name == "source.md"
        or path.suffix.lower() in DOC_SUFFIXES
    )


def list_sources(root: Path) -> list[tuple[Path, str | None, str]]:
    """Every file under ``root`` (recursively, sorted) with its detected format or a reason.

    Returns
    -------
    list of (path, format or None, reason). Detected files carry the module that recognised them
    ("binance"); documentation (README, SOURCE.md, ``.txt``/``.md``...) has format None and reason
    "documentation"; a file that a module declares to be part of another source (the order-book file
    of a LOBSTER message/orderbook pair, through that module's optional ``companion_of(path)``)
    has reason "part of <primary file name>"; anything else "unrecognised format". Hidden files and
    folders are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"no such directory: {root}; expected a folder of data files", source=str(root)
        )
    out: list[tuple[Path, str | None, str]] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if _is_doc(path):
            out.append((path, None, "documentation"))
            continue
        hit = _sniff(path)
        if hit is not None:
            out.append((path, hit[0], hit[1]))
            continue
        primary = _companion_of(path)
        if primary is not None:
            out.append((path, None, f"part of {primary.name}"))
        else:
            out.append((path, None, "unrecognised format"))
    return out


def _companion_of(path: Path) -> Path | None:
    for _, mod in _modules():
        fn = getattr(mod, "companion_of", None)
        if fn is not None:
            primary = fn(path)
            if primary is not None:
                return Path(primary)
    return None
