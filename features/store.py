"""The canonical data store: parquet partitioned by dataset/table/symbol/date, with a manifest.

Layout under the store root (``$DPRM_HOME/data``)::

    <dataset>/manifest.json                       tables, partitions, ingested sources
    <dataset>/validation.json                     the last ``dprm data validate`` report
    <dataset>/<table>/symbol=<SYMBOL>/date=<YYYY-MM-DD>.parquet
    <dataset>/.index/<table>/symbol=<SYMBOL>/date=<...>.parquet
                                                  which source supplied which rows, for
                                                  partitions that more than one source wrote
    <dataset>/.journal.json, <dataset>/.txn/<id>/ an ingest being committed (transient)
    .locks/<dataset>.lock                         one writer per dataset

A partition holds one symbol (options: one underlying) over one period: a UTC day for ticks and
books, a month for intraday bars, a year for daily and slower tables.

**Commit protocol** (:class:`Transaction`). An ingest of one source never writes a partition file in
place. It stages every new partition file, index file and its read spills under ``.txn/<id>/``;
then it writes the *journal* (``.journal.json``: the list of staged -> final renames, the files to
delete and the complete new manifest), fsynced and renamed into place. Writing the journal is the
commit point. The renames, the deletions and the manifest follow, then the journal is removed.
Whoever next opens the dataset (a writer, or a reader that sees a journal) recovers first: a
journal is rolled forward (every step is idempotent), a ``.txn`` folder without a journal is rolled
back (deleted). So all of a source's partitions and its manifest entry become visible together, or
none of them do and a rerun redoes the source. ``DPRM_TEST_KILL_AT=<phase>:<n>`` (phases ``read``,
``merge``, ``manifest``) makes the process SIGKILL itself at the n-th write of that phase; the
kill-and-rerun tests use it.

:meth:`DataStore.check` compares the files with the manifest: *orphaned* partition files (on disk,
not in the manifest), *missing* ones (in the manifest, not on disk) and *stale* ones (row count or
content digest differs from the manifest).

Names: dataset, table and symbol names follow one rule (:func:`check_name`), and every path the
store builds is resolved and checked to stay inside the store root.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import threading
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import schema as S
from features.errors import ConfigError, StoreError
from features.validate import RuleCounts, sort_dedupe

MANIFEST = "manifest.json"
VALIDATION = "validation.json"
JOURNAL = ".journal.json"
TXN_DIR = ".txn"
INDEX_DIR = ".index"
LOCK_DIR = ".locks"
REPAIR_DIR = ".repair"
LEGACY_STAGING = ".staging"
UNKNOWN_SOURCE = "unknown"
"""Contributor key of rows whose source is not known (partitions written before sources were
tracked per partition, or adopted from the files by ``dprm data repair``); never removed."""
RESERVED_NAMES = frozenset({MANIFEST, VALIDATION, JOURNAL, TXN_DIR, INDEX_DIR, LOCK_DIR,
                            REPAIR_DIR, LEGACY_STAGING})
KILL_ENV = "DPRM_TEST_KILL_AT"
KILL_PHASES = ("read", "merge", "manifest")
_SAFE = re.compile(r"[^A-Za-z0-9._+\-]")
_PARTITION_GLOB = "*/*=*/date=*.parquet"

NAME_RULE = ("non-empty, not '.' or '..', with no path separator ('/' or '\\') and no control "
             "character")
"""What :func:`check_name` allows, as a person reads it."""


# ---- names and paths ---------------------------------------------------------------------
def name_problem(value: object) -> str | None:
    """Why ``value`` is not a valid dataset, table or symbol name, or None if it is."""
    if not isinstance(value, str):
        return f"expected text, got {type(value).__name__}"
    if value.strip() == "":
        return "it is empty"
    if value in (".", ".."):
        return f"'{value}' is a path component"
    if "/" in value or "\\" in value or os.sep in value:
        return "it contains a path separator"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return "it contains a control character"
    if value in RESERVED_NAMES:
        return f"the store uses it for its own files ({', '.join(sorted(RESERVED_NAMES))})"
    return None


def check_name(field_name: str, value: object, *, source: str | None = None) -> str:
    """Return ``value`` if it is a valid name for ``field_name`` ("dataset", "table", "symbol");
    else raise :class:`ConfigError` naming the field, the value and what is allowed."""
    problem = name_problem(value)
    if problem is not None:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}invalid {field_name} name {value!r} ({problem}); "
                          f"a {field_name} name must be {NAME_RULE}")
    return value  # type: ignore[return-value]


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved; :class:`ConfigError` unless it lies inside ``root`` (also resolved)."""
    r = Path(root).resolve()
    p = Path(path).resolve()
    if p != r and r not in p.parents:
        raise ConfigError(f"path {p} would lie outside the data store {r}; refusing to use it")
    return p


def safe_name(value: str) -> str:
    """A file-system-safe version of a symbol or table name (used in partition folder names)."""
    return _SAFE.sub("_", value)


# ---- the test kill hook ------------------------------------------------------------------
_kill_counts: dict[str, int] = {}


def _crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_point(phase: str) -> None:
    """A point where a test may kill this process: with ``DPRM_TEST_KILL_AT=<phase>:<n>`` the
    n-th call for ``phase`` (counted per process) sends SIGKILL to the process itself.

    Phases: ``read`` (after each chunk read and each spill written), ``merge`` (each staged
    partition or index file, between its fsync and its rename and after it, and after each
    partition merged), ``manifest`` (before and inside the journal write, after each rename and
    deletion of the commit, inside and after the manifest write, after the journal's removal).
    Without the variable this is a no-op.
    """
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    want, _, n = spec.partition(":")
    _kill_counts[phase] = _kill_counts.get(phase, 0) + 1  # every phase counted (tests read it)
    if want == phase and _kill_counts[phase] == int(n):
        _crash()


# ---- atomic files ------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, phase: str | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    ``phase`` names the kill-hook phase of this write (a kill point sits between the fsync and the
    rename, so a test can leave a half-done write behind).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if phase is not None:
            kill_point(phase)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_json(path: Path, obj: object, *, phase: str | None = None) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=str, sort_keys=False).encode(),
                       phase=phase)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as zstd parquet bytes (deterministic for equal frames)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def digest_bytes(data: bytes) -> str:
    """The content digest the manifest records (blake2b-128, hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def atomic_write_parquet(path: Path, frame: pd.DataFrame, *, phase: str | None = None) -> str:
    """Write ``frame`` as zstd parquet atomically; returns the blake2b digest of the file bytes."""
    data = parquet_bytes(frame)
    atomic_write_bytes(path, data, phase=phase)
    return digest_bytes(data)


def file_fingerprint(path: Path, block: int = 1 << 20) -> str:
    """Content fingerprint of a file (blake2b-128 of its bytes), read in blocks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


# ---- partitions --------------------------------------------------------------------------
def partition_period(kind: str, interval: pd.Timedelta | None) -> str:
    """The partition period of a table: "D" (day), "M" (month) or "Y" (year)."""
    if kind in ("trades", "quotes", "book"):
        return "D"
    if kind == "options":
        return "M"
    if interval is not None and interval < pd.Timedelta("1h"):
        return "M"
    return "Y"


def partition_key_column(kind: str) -> str:
    """The column a table is partitioned by besides time (options: the underlying)."""
    return S.UNDERLYING if kind == "options" else S.SYMBOL


def partition_rel(table: str, kind: str, key_value: str, period_start: str) -> str:
    """The partition file of a table, symbol (or underlying) and period, relative to the dataset."""
    return (f"{safe_name(table)}/{partition_key_column(kind)}={safe_name(key_value)}/"
            f"date={period_start}.parquet")


def period_starts(ts: pd.Series, period: str) -> pd.Series:
    """The partition period start (``YYYY-MM-DD``) of each timestamp."""
    naive = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    if period == "D":
        return naive.dt.strftime("%Y-%m-%d")
    if period == "M":
        return naive.dt.strftime("%Y-%m-01")
    return naive.dt.strftime("%Y-01-01")



def _no_event_id(kind: str, frame: pd.DataFrame) -> bool:
    if kind == "quotes":
        return True
    return kind == "trades" and (S.TRADE_ID not in frame.columns or bool(frame[S.TRADE_ID].isna().all()))


def _occurrence_keys(frame: pd.DataFrame) -> pd.MultiIndex:
    """(row hash, occurrence number of that row) for a multiset comparison of rows."""
    h = pd.Series(pd.util.hash_pandas_object(frame, index=False).to_numpy())
    return pd.MultiIndex.from_arrays([h.to_numpy(), h.groupby(h).cumcount().to_numpy()])


def _multiset_new(new: pd.DataFrame, existing: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``new`` not already in ``existing``, counting multiplicity."""
    cols = [c for c in existing.columns if c in new.columns]
    if len(cols) != len(existing.columns) or len(cols) != len(new.columns):
        return new
    keep = ~_occurrence_keys(new[cols]).isin(_occurrence_keys(existing[cols]))
    return new.loc[keep].reset_index(drop=True)


def merge_rows(base: pd.DataFrame | None, new: pd.DataFrame, kind: str,
               counts: RuleCounts | None) -> pd.DataFrame:
    """``base`` (what a partition holds) merged with ``new`` rows: sorted, duplicates dropped.

    Tick tables without an event id (quotes; trades without ``trade_id``) can hold genuinely
    identical events (two fills of the same size at the same nanosecond), so for them the merge
    is a multiset union: rows already stored are not added again, identical rows within the new
    data are kept. Everything else drops exact duplicates and resolves key conflicts (the row read
    last wins). ``counts`` receives ``duplicates`` and ``key_conflicts``.
    """
    if base is not None and base.empty:
        base = None
    if _no_event_id(kind, new):
        add = new if base is None else _multiset_new(new, base)
        if counts is not None:
            counts.add("duplicates", len(new) - len(add))
        parts = [add] if base is None else [base, add]
        key = [c for c in S.spec(kind).key if c in new.columns]
        return pd.concat(parts, ignore_index=True).sort_values(key, kind="stable").reset_index(drop=True)
    parts = [new] if base is None else [base, new]
    return sort_dedupe(pd.concat(parts, ignore_index=True), kind, counts)


_MIX = np.uint64(0x100000001B3)


def row_hashes(frame: pd.DataFrame, kind: str) -> np.ndarray:
    """A 64-bit hash per row over every canonical column of ``kind`` (absent or missing values hash
    alike), so the same row hashes equal in frames with different optional columns."""
    sp = S.spec(kind)
    h = np.zeros(len(frame), dtype=np.uint64)
    for c in sp.columns:
        if c in frame.columns:
            col = frame[c]
            with contextlib.suppress(ValueError, TypeError):
                col = col.astype(sp.dtype(c))
            hc = pd.util.hash_pandas_object(col, index=False, categorize=False).to_numpy(np.uint64)
            hc = np.where(col.isna().to_numpy(), np.uint64(0), hc)
        else:
            hc = np.zeros(len(frame), dtype=np.uint64)
        h = (h * _MIX) ^ hc
    return h


def remove_source_rows(frame: pd.DataFrame, kind: str, index: pd.DataFrame,
                       removed: set[str]) -> pd.DataFrame:
    """The rows of a partition that remain when the sources in ``removed`` are taken out.

    ``index`` has one row per (contributing source ``src``, row hash ``h``) occurrence. A row that a
    removed source supplied is kept only as often as some remaining source supplied it too; rows
    no source is known to have supplied are kept.
    """
    h = row_hashes(frame, kind)
    by_removed = index["src"].isin(removed)
    gone = set(index.loc[by_removed, "h"].to_numpy().tolist())
    other = index.loc[~by_removed]
    allowed = other.groupby(["src", "h"]).size().groupby(level="h").max()
    occ = pd.Series(h).groupby(h).cumcount().to_numpy()
    limit = pd.Series(h).map(allowed).fillna(0).to_numpy()
    in_gone = np.fromiter((x in gone for x in h.tolist()), dtype=bool, count=len(h))
    keep = ~in_gone | (occ < limit)
    return frame.loc[keep].reset_index(drop=True)


def describe_partition(frame: pd.DataFrame, data: bytes | None = None, digest: str | None = None,
                       sources: list[str] | None = None) -> dict:
    """The manifest entry of a partition."""
    return {
        "rows": len(frame),
        "min_ts": str(frame[S.TS].min()),
        "max_ts": str(frame[S.TS].max()),
        "digest": digest if digest is not None else digest_bytes(data or b""),
        "sources": list(sources or []),
    }


@dataclass
class WriteStats:
    """What merging one source into the store did."""

    rows_added: int = 0
    rows_removed: int = 0
    partitions_written: int = 0
    partitions_unchanged: int = 0
    partitions_deleted: int = 0


# ---- consistency -------------------------------------------------------------------------
def first_few(items: list[str], n: int = 3) -> str:
    """The first ``n`` items joined by commas, and how many more there are (for one-line reports)."""
    more = f", ... ({len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


@dataclass
class StoreProblems:
    """How the files of a dataset disagree with its manifest (see :meth:`DataStore.check`)."""

    dataset: str
    orphaned: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    stale: list[dict[str, object]] = field(default_factory=list)
    recovered: str | None = None

    @property
    def ok(self) -> bool:
        """True when every partition file matches the manifest."""
        return not (self.orphaned or self.missing or self.stale)

    def lines(self) -> list[str]:
        """One line per kind of problem, with its count and the first few partitions."""
        out = []

        ds = self.dataset
        if self.orphaned:
            out.append(f"dataset '{ds}': {len(self.orphaned)} orphaned partition file(s) not in the "
                       f"manifest: {first_few(self.orphaned)}")
        if self.missing:
            out.append(f"dataset '{ds}': {len(self.missing)} missing partition file(s) listed in the "
                       f"manifest: {first_few(self.missing)}")
        if self.stale:
            stale = [f"{s['partition']} ({s['problem']})" for s in self.stale]
            out.append(f"dataset '{ds}': {len(self.stale)} stale partition file(s) whose rows or "
                       f"digest differ from the manifest: {first_few(stale)}")
        return out

    def summary(self) -> str:
        """One line: the counts and what to run."""
        return (f"dataset '{self.dataset}' disagrees with its manifest: {len(self.orphaned)} orphaned, "
                f"{len(self.missing)} missing, {len(self.stale)} stale partition file(s); "
                f"run `dprm data repair {self.dataset}`")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"dataset": self.dataset, "ok": self.ok, "orphaned": self.orphaned,
                "missing": self.missing, "stale": self.stale, "recovered": self.recovered}


class StoreInconsistent(StoreError):
    """A dataset's files disagree with its manifest; ``problems`` says how."""

    def __init__(self, problems: StoreProblems) -> None:
        self.problems = problems
        super().__init__(problems.summary())


# ---- the in-process reentrant writer lock --------------------------------------------------
_HELD: dict[tuple[str, int], list] = {}


class DataStore:
    """Partitioned parquet store of canonical tables (see the module docstring for the layout).

    Parameters
    ----------
    root : the store folder, usually ``$DPRM_HOME/data``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ---- datasets and manifests ----------------------------------------------------------
    def datasets(self) -> list[str]:
        """Names of the datasets that have a manifest (an interrupted commit is finished first)."""
        if not self.root.is_dir():
            return []
        for j in self.root.glob(f"*/{JOURNAL}"):
            if name_problem(j.parent.name) is None:
                self.recover(j.parent.name)
        return sorted(p.parent.name for p in self.root.glob(f"*/{MANIFEST}")
                      if name_problem(p.parent.name) is None)

    def path(self, dataset: str) -> Path:
        """Folder of ``dataset`` (the name checked by :func:`check_name`, the path kept inside the
        store root)."""
        check_name("dataset", dataset)
        return inside(self.root, self.root / dataset)

    def file(self, dataset: str, rel: str) -> Path:
        """A file of ``dataset`` given relative to its folder, checked to stay inside it."""
        base = self.path(dataset)
        return inside(base, base / rel)

    def read_manifest(self, dataset: str) -> dict:
        """The manifest file of ``dataset`` as stored (no journal recovery; an empty manifest if the
        dataset does not exist yet); an unreadable file is a :class:`StoreError`."""
        p = self.path(dataset) / MANIFEST
        if not p.exists():
            return {"dataset": dataset, "tables": {}, "sources": {}}
        try:
            return json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"the manifest {p} is unreadable ({exc}); run `dprm data repair "
                             f"{dataset}`") from None

    def manifest(self, dataset: str) -> dict:
        """The manifest of ``dataset`` (an empty one if the dataset does not exist yet).

        A pending commit journal (a writer killed while committing) is rolled forward first.
        """
        if (self.path(dataset) / JOURNAL).exists():
            self.recover(dataset)
        return self.read_manifest(dataset)

    def symbol_manifest(self, dataset: str, symbols: list[str] | tuple[str, ...]) -> dict:
        """The manifest of an existing dataset (:meth:`require`) with each table's partitions
        restricted to those of ``symbols`` (a per-symbol view for per-symbol work)."""
        keys = {safe_name(s) for s in symbols}
        man = self.require(dataset)
        for info in man["tables"].values():
            info["partitions"] = {rel: m for rel, m in info["partitions"].items()
                                  if rel.split("/")[1].split("=", 1)[1] in keys}
        return man

    def symbols(self, dataset: str) -> list[str]:
        """Symbols (partition keys) stored in an existing ``dataset``, sorted."""
        man = self.require(dataset)
        return sorted({rel.split("/")[1].split("=", 1)[1]
                       for info in man["tables"].values() for rel in info["partitions"]})

    def exists(self, dataset: str) -> bool:
        """True when ``dataset`` has a manifest."""
        return (self.path(dataset) / MANIFEST).exists()

    @contextlib.contextmanager
    def lock(self, dataset: str) -> Iterator[None]:
        """Exclusive lock on a dataset (one writer at a time; reentrant within a thread).

        The lock file lives in ``<root>/.locks/``, so taking it creates no dataset folder.
        """
        check_name("dataset", dataset)
        p = inside(self.root, self.root / LOCK_DIR / f"{dataset}.lock")
        key = (str(p), threading.get_ident())  # reentrant per thread; other threads wait
        if key in _HELD:
            _HELD[key][1] += 1
            try:
                yield
            finally:
                _HELD[key][1] -= 1
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        fh = open(p, "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
            _HELD[key] = [fh, 1]
            try:
                yield
            finally:
                del _HELD[key]
                fcntl.flock(fh, fcntl.LOCK_UN)
        finally:
            fh.close()

    def require(self, dataset: str) -> dict:
        """The manifest of an existing dataset; DataError listing the known ones otherwise."""
        if dataset not in self.datasets():
            raise S.DataError(
                f"dataset '{dataset}' not found in {self.root}; known datasets: {self.datasets()}"
            )
        return self.manifest(dataset)

    def table_info(self, dataset: str, table: str) -> dict:
        """The manifest entry of ``table``; DataError listing the dataset's tables otherwise."""
        tables = self.require(dataset)["tables"]
        if table not in tables:
            raise S.DataError(
                f"table '{table}' not found in dataset '{dataset}'; tables: {sorted(tables)}"
            )
        return tables[table]

    # ---- commit protocol -----------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self, dataset: str) -> Iterator[Transaction]:
        """Lock ``dataset``, recover an interrupted commit, and yield a :class:`Transaction`.

        Leaving the block without :meth:`Transaction.commit` (or with an error before the commit
        point) discards everything staged; a kill leaves it for the next open to roll back.
        """
        with self.lock(dataset):
            self.recover(dataset)
            txn = Transaction(self, dataset)
            try:
                yield txn
            except (Exception, KeyboardInterrupt):
                if not txn.committing:
                    txn.abort()
                raise
            else:
                if not txn.committing:
                    txn.abort()

    def recover(self, dataset: str) -> str | None:
        """Finish or undo an interrupted commit of ``dataset``; returns what was done (or None).

        A journal is rolled forward (its renames, deletions and manifest applied); staged files
        without a journal are deleted (the ingest they belonged to never committed and is redone
        by a rerun); leftover temporary files are removed.
        """
        with self.lock(dataset):
            ds = self.path(dataset)
            if not ds.is_dir():
                return None
            done = None
            j = ds / JOURNAL
            if j.exists():
                try:
                    journal = json.loads(j.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise StoreError(f"the commit journal {j} is unreadable ({exc})") from None
                self._apply_journal(dataset, journal)
                done = f"finished an interrupted commit of {journal.get('source', 'an ingest')}"
            txn = ds / TXN_DIR
            if txn.exists():
                shutil.rmtree(txn, ignore_errors=True)
                done = done or "discarded the staged files of an ingest that did not commit"
            legacy = ds / LEGACY_STAGING
            if legacy.exists():
                shutil.rmtree(legacy, ignore_errors=True)
                done = done or "discarded the staged files of an ingest that did not commit"
            for tmp in ds.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            if not any(ds.iterdir()):
                ds.rmdir()  # a new dataset whose first ingest never committed
            return done

    def _apply_journal(self, dataset: str, journal: dict) -> None:
        """Apply a commit journal; every step is idempotent, so a rerun after a kill is safe."""
        ds = self.path(dataset)
        for staged, final in journal["renames"]:
            src, dst = self.file(dataset, staged), self.file(dataset, final)
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                kill_point("manifest")
        for rel in journal["deletes"]:
            p = self.file(dataset, rel)
            if p.exists():
                p.unlink()
                _prune_empty_dirs(p.parent, ds)
                kill_point("manifest")
        atomic_write_json(ds / MANIFEST, journal["manifest"], phase="manifest")
        _fsync_dir(ds)
        kill_point("manifest")
        (ds / JOURNAL).unlink(missing_ok=True)
        kill_point("manifest")
        shutil.rmtree(ds / TXN_DIR / journal["id"], ignore_errors=True)
        with contextlib.suppress(OSError):
            (ds / TXN_DIR).rmdir()

    # ---- consistency ---------------------------------------------------------------------
    def partition_files(self, dataset: str) -> list[str]:
        """Partition files on disk (relative to the dataset folder), hidden folders excluded."""
        ds = self.path(dataset)
        if not ds.is_dir():
            return []
        return sorted(str(p.relative_to(ds)) for p in ds.glob(_PARTITION_GLOB)
                      if not p.relative_to(ds).parts[0].startswith(".") and p.is_file())

    def check(self, dataset: str) -> StoreProblems:
        """Compare the partition files of ``dataset`` with its manifest (rows and digests).

        Holds the dataset's lock, so a concurrent ingest is never mistaken for damage.
        """
        with self.lock(dataset):
            problems = StoreProblems(dataset, recovered=self.recover(dataset))
            man = self.read_manifest(dataset)
            listed = {rel: meta for info in man["tables"].values()
                      for rel, meta in info["partitions"].items()}
            on_disk = set(self.partition_files(dataset))
            problems.orphaned = sorted(on_disk - set(listed))
            problems.missing = sorted(set(listed) - on_disk)
            for rel in sorted(on_disk & set(listed)):
                meta = listed[rel]
                p = self.file(dataset, rel)
                try:
                    rows = pq.ParquetFile(p).metadata.num_rows
                except (OSError, ValueError, pa.ArrowException) as exc:
                    problems.stale.append({"partition": rel, "problem": f"unreadable: {exc}"})
                    continue
                if rows != meta["rows"]:
                    problems.stale.append({"partition": rel, "problem":
                                           f"{rows} rows, manifest says {meta['rows']}"})
                elif file_fingerprint(p) != meta["digest"]:
                    problems.stale.append({"partition": rel, "problem": "digest differs"})
            return problems

    def require_consistent(self, dataset: str) -> StoreProblems:
        """:meth:`check`, raising :class:`StoreInconsistent` when there is a problem."""
        problems = self.check(dataset)
        if not problems.ok:
            raise StoreInconsistent(problems)
        return problems

    # ---- reading -------------------------------------------------------------------------
    def partitions(self, dataset: str, table: str, symbols: list[str] | None = None) -> list[Path]:
        """Partition files of a table in (symbol, date) order, optionally for some symbols only."""
        info = self.table_info(dataset, table)
        keycol = partition_key_column(info["kind"])
        wanted = None if symbols is None else {f"{keycol}={safe_name(s)}" for s in symbols}
        rels = sorted(info["partitions"])
        return [self.file(dataset, r) for r in rels if wanted is None or r.split("/")[1] in wanted]

    def read_partition(self, dataset: str, rel: str, columns: list[str] | None = None) -> pd.DataFrame:
        """One partition file; a missing file is a :class:`StoreError` pointing at repair."""
        p = self.file(dataset, rel)
        try:
            return pd.read_parquet(p, columns=columns)
        except FileNotFoundError:
            raise StoreError(f"partition {rel} of dataset '{dataset}' is missing from {p.parent}; "
                             f"run `dprm data repair {dataset}`") from None

    def read(
        self,
        dataset: str,
        table: str,
        *,
        symbols: list[str] | None = None,
        start: str | pd.Timestamp | None = None,
        end: str | pd.Timestamp | None = None,
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """Read a table (optionally some symbols, ``start <= ts <= end``, some columns)."""
        info = self.table_info(dataset, table)
        frames = []
        lo = (
            None
            if start is None
            else pd.Timestamp(start, tz="UTC")
            if pd.Timestamp(start).tz is None
            else pd.Timestamp(start)
        )
        hi = (
            None
            if end is None
            else pd.Timestamp(end, tz="UTC")
            if pd.Timestamp(end).tz is None
            else pd.Timestamp(end)
        )
        for p in self.partitions(dataset, table, symbols):
            rel = str(p.relative_to(self.path(dataset).resolve()))
            meta = info["partitions"][rel]
            if hi is not None and pd.Timestamp(meta["min_ts"]) > hi:
                continue
            if lo is not None and pd.Timestamp(meta["max_ts"]) < lo:
                continue
            f = self.read_partition(dataset, rel, columns)
            if lo is not None or hi is not None:
                m = pd.Series(True, index=f.index)
                if lo is not None:
                    m &= f[S.TS] >= lo
                if hi is not None:
                    m &= f[S.TS] <= hi
                f = f.loc[m]
            frames.append(f)
        if not frames:
            return S.empty(info["kind"]) if columns is None else S.empty(info["kind"])[columns]
        out = pd.concat(frames, ignore_index=True)
        key = [c for c in S.spec(info["kind"]).key if c in out.columns]
        return out.sort_values(key, kind="stable").reset_index(drop=True) if key else out

    def fingerprint(self, dataset: str, tables: list[str] | None = None) -> str:
        """A content fingerprint of a dataset (or some of its tables), from the partition digests."""
        man = self.require(dataset)
        h = hashlib.blake2b(digest_size=16)
        for t in sorted(man["tables"] if tables is None else tables):
            for rel, meta in sorted(man["tables"][t]["partitions"].items()):
                h.update(f"{rel}:{meta['digest']}".encode())
        return h.hexdigest()

    def summary(self, dataset: str) -> pd.DataFrame:
        """One row per table and symbol: kind, interval, rows, first and last ts, partitions."""
        man = self.require(dataset)
        rows = []
        for t, info in sorted(man["tables"].items()):
            per_sym: dict[str, dict] = {}
            for rel, meta in info["partitions"].items():
                sym = rel.split("/")[1].split("=", 1)[1]
                d = per_sym.setdefault(
                    sym,
                    {"rows": 0, "first": meta["min_ts"], "last": meta["max_ts"], "partitions": 0},
                )
                d["rows"] += meta["rows"]
                d["first"] = min(d["first"], meta["min_ts"])
                d["last"] = max(d["last"], meta["max_ts"])
                d["partitions"] += 1
            for sym, d in sorted(per_sym.items()):
                rows.append(
                    {
                        "dataset": dataset,
                        "table": t,
                        "kind": info["kind"],
                        "interval": info.get("interval"),
                        "symbol": sym,
                        **d,
                    }
                )
        return pd.DataFrame(rows)


def _prune_empty_dirs(d: Path, stop: Path) -> None:
    """Remove ``d`` and its parents up to (excluding) ``stop`` while they are empty."""
    d, stop = d.resolve(), stop.resolve()
    while d != stop and stop in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


class Transaction:
    """The staged changes of one ingest (see the module docstring's commit protocol).

    Attributes
    ----------
    manifest : the dataset's manifest as it will be committed (edit it in place).
    """

    def __init__(self, store: DataStore, dataset: str) -> None:
        self.store = store
        self.dataset = dataset
        self.ds = store.path(dataset)
        self.id = uuid.uuid4().hex
        self.manifest = store.read_manifest(dataset)
        self.existed = (self.ds / MANIFEST).exists()
        self.committing = False
        self._staged: dict[str, str] = {}  # final rel -> staged rel (relative to the dataset)
        self._deletes: set[str] = set()
        self._n = 0

    @property
    def dir(self) -> Path:
        """This transaction's staging folder (created on first use)."""
        return self.ds / TXN_DIR / self.id

    def scratch(self, name: str) -> Path:
        """A new file path in the staging folder for temporary data (e.g. read spills)."""
        self._n += 1
        p = self.dir / "scratch" / f"{self._n:07d}-{name}"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def current(self, rel: str) -> Path | None:
        """Where the current content of ``rel`` is: its staged version, the committed file, or None
        (deleted in this transaction, or absent)."""
        if rel in self._staged:
            return self.ds / self._staged[rel]
        if rel in self._deletes:
            return None
        p = self.store.file(self.dataset, rel)
        return p if p.exists() else None

    def stage_bytes(self, rel: str, data: bytes, *, phase: str = "merge") -> None:
        """Stage ``data`` as the new content of ``rel`` (renamed into place at commit)."""
        self.store.file(self.dataset, rel)  # checks the final path
        self._n += 1
        staged = f"{TXN_DIR}/{self.id}/files/{self._n:07d}.bin"
        atomic_write_bytes(self.ds / staged, data, phase=phase)
        self._staged[rel] = staged
        self._deletes.discard(rel)
        kill_point(phase)

    def stage_parquet(self, rel: str, frame: pd.DataFrame, *, phase: str = "merge") -> str:
        """Stage ``frame`` as the new partition (or index) file ``rel``; returns its digest."""
        data = parquet_bytes(frame)
        self.stage_bytes(rel, data, phase=phase)
        return digest_bytes(data)

    def delete(self, rel: str) -> None:
        """Delete ``rel`` at commit."""
        self._staged.pop(rel, None)
        if self.store.file(self.dataset, rel).exists():
            self._deletes.add(rel)

    def commit(self, *, source: str = "") -> None:
        """Write the journal (the commit point), then apply it."""
        kill_point("manifest")
        journal = {
            "id": self.id,
            "source": source,
            "renames": [[staged, final] for final, staged in sorted(self._staged.items())],
            "deletes": sorted(self._deletes),
            "manifest": self.manifest,
        }
        self.ds.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.ds / JOURNAL, journal, phase="manifest")
        _fsync_dir(self.ds)
        self.committing = True
        kill_point("manifest")
        self.store._apply_journal(self.dataset, journal)

    def abort(self) -> None:
        """Discard everything staged (and a dataset folder this transaction created)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.ds / TXN_DIR).rmdir()
        with contextlib.suppress(OSError):
            if self.ds.is_dir() and not any(self.ds.iterdir()):
                self.ds.rmdir()
