"""The canonical data store: parquet partitioned by dataset/table/symbol/date, with a manifest.

Layout under the store root (``$DPRM_HOME/data``)::

    <dataset>/manifest.json                       tables, partitions, ingested sources
    <dataset>/validation.json                     the last ``dprm data validate`` report
    <dataset>/<table>/symbol=<SYMBOL>/date=<YYYY-MM-DD>.parquet

A partition holds one symbol (options: one underlying) over one period: a UTC day for ticks and
books, a month for intraday bars, a year for daily and slower tables. Every file (partitions and
manifest) is written to a temporary name and renamed into place, so a reader never sees a half-written
file and a killed ingest leaves the store consistent; re-running it is idempotent because partitions
are merged (sorted, exact duplicates dropped) and a source already recorded by its content
fingerprint is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import schema as S
from features.validate import RuleCounts, sort_dedupe

MANIFEST = "manifest.json"
_SAFE = re.compile(r"[^A-Za-z0-9._+\-]")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=str, sort_keys=False).encode())


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> str:
    """Write ``frame`` as zstd parquet atomically; returns the blake2b digest of the file bytes."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    atomic_write_bytes(path, data)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_fingerprint(path: Path, block: int = 1 << 20) -> str:
    """Content fingerprint of a file (blake2b-128 of its bytes), read in blocks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


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


def _period_start(ts: pd.Series, period: str) -> pd.Series:
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


def safe_name(value: str) -> str:
    """A file-system-safe version of a symbol or table name."""
    return _SAFE.sub("_", value)


@dataclass
class WriteStats:
    """What one flush added to the store."""

    rows_added: int = 0
    partitions_written: int = 0
    partitions_unchanged: int = 0


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
        """Names of the datasets that have a manifest."""
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{MANIFEST}"))

    def path(self, dataset: str) -> Path:
        """Folder of ``dataset``."""
        return self.root / safe_name(dataset)

    def manifest(self, dataset: str) -> dict:
        """The manifest of ``dataset`` (an empty one if the dataset does not exist yet)."""
        p = self.path(dataset) / MANIFEST
        if not p.exists():
            return {"dataset": dataset, "tables": {}, "sources": {}}
        return json.loads(p.read_text())

    def save_manifest(self, dataset: str, manifest: dict) -> None:
        """Write the manifest atomically."""
        atomic_write_json(self.path(dataset) / MANIFEST, manifest)

    @contextlib.contextmanager
    def lock(self, dataset: str) -> Iterator[None]:
        """Exclusive lock on a dataset for the duration of a write (one writer at a time)."""
        d = self.path(dataset)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

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

    # ---- writing -------------------------------------------------------------------------
    def merge_partition(
        self,
        dataset: str,
        manifest: dict,
        table: str,
        kind: str,
        key_value: str,
        period: str,
        frame: pd.DataFrame,
        counts: RuleCounts,
    ) -> WriteStats:
        """Merge ``frame`` into one partition (sort, drop duplicates), writing only if it changed.

        Tick tables without an event id (quotes; trades without ``trade_id``) can hold genuinely
        identical events (two fills of the same size at the same nanosecond), so for them the merge
        is a multiset union: rows already stored are not added again, identical rows within the new
        data are kept. Everything else drops exact duplicates.
        """
        rel = f"{safe_name(table)}/{partition_key_column(kind)}={safe_name(key_value)}/date={period}.parquet"
        path = self.path(dataset) / rel
        existing = pd.read_parquet(path) if path.exists() else None
        if _no_event_id(kind, frame):
            new = frame if existing is None else _multiset_new(frame, existing)
            if counts is not None:
                counts.add("duplicates", len(frame) - len(new))
            parts = [new] if existing is None else [existing, new]
            sp = S.spec(kind)
            merged = pd.concat(parts, ignore_index=True).sort_values(
                [c for c in sp.key if c in frame.columns], kind="stable").reset_index(drop=True)
        else:
            parts = [frame] if existing is None else [existing, frame]
            merged = sort_dedupe(pd.concat(parts, ignore_index=True), kind, counts)
        stats = WriteStats()
        if existing is not None and len(merged) == len(existing) and merged.equals(existing):
            stats.partitions_unchanged = 1
            return stats
        digest = atomic_write_parquet(path, merged)
        stats.rows_added = len(merged) - (0 if existing is None else len(existing))
        stats.partitions_written = 1
        tinfo = manifest["tables"][table]
        tinfo["partitions"][rel] = {
            "rows": len(merged),
            "min_ts": str(merged[S.TS].min()),
            "max_ts": str(merged[S.TS].max()),
            "digest": digest,
        }
        return stats

    def write_frame(
        self,
        dataset: str,
        manifest: dict,
        table: str,
        kind: str,
        frame: pd.DataFrame,
        counts: RuleCounts,
        interval: pd.Timedelta | None = None,
        staging: Path | None = None,
    ) -> WriteStats:
        """Split a canonical frame into partitions and merge each into the store.

        With ``staging`` (a folder), the pieces are written there instead and merged into the store
        once per partition by :meth:`merge_staged`, so a partition is rewritten once per ingest
        however many spills it takes (linear I/O; memory bounded by a partition).
        """
        tinfo = manifest["tables"].setdefault(
            table,
            {
                "kind": kind,
                "interval": None if interval is None else str(interval),
                "symbols": {},
                "partitions": {},
            },
        )
        if tinfo["kind"] != kind:
            raise S.DataError(
                f"table '{table}' of dataset '{dataset}' holds kind '{tinfo['kind']}'; "
                f"cannot write kind '{kind}' into it"
            )
        stats = WriteStats()
        if frame.empty:
            return stats
        period = partition_period(kind, interval)
        keycol = partition_key_column(kind)
        periods = _period_start(frame[S.TS], period)
        for (key_value, per), idx in frame.groupby(
            [frame[keycol], periods], sort=True
        ).indices.items():
            if staging is not None:
                d = staging / safe_name(table) / safe_name(str(key_value)) / str(per)
                d.mkdir(parents=True, exist_ok=True)
                n = len(list(d.iterdir()))
                frame.iloc[idx].to_parquet(d / f"{n:06d}.parquet", index=False)
                continue
            s = self.merge_partition(
                dataset, manifest, table, kind, str(key_value), str(per), frame.iloc[idx], counts
            )
            stats.rows_added += s.rows_added
            stats.partitions_written += s.partitions_written
            stats.partitions_unchanged += s.partitions_unchanged
        return stats

    def merge_staged(
        self, dataset: str, manifest: dict, staging: Path, counts: dict[str, RuleCounts]
    ) -> WriteStats:
        """Merge every staged partition (see :meth:`write_frame`) into the store, one at a time."""
        stats = WriteStats()
        if not staging.is_dir():
            return stats
        for table_dir in sorted(p for p in staging.iterdir() if p.is_dir()):
            table = next(t for t in manifest["tables"] if safe_name(t) == table_dir.name)
            kind = manifest["tables"][table]["kind"]
            for key_dir in sorted(table_dir.iterdir()):
                for per_dir in sorted(key_dir.iterdir()):
                    pieces = [pd.read_parquet(f) for f in sorted(per_dir.iterdir())]
                    frame = pd.concat(pieces, ignore_index=True)
                    key_value = str(frame[partition_key_column(kind)].iloc[0])
                    s = self.merge_partition(dataset, manifest, table, kind, key_value,
                                             per_dir.name, frame, counts[table])
                    stats.rows_added += s.rows_added
                    stats.partitions_written += s.partitions_written
                    stats.partitions_unchanged += s.partitions_unchanged
                    del pieces, frame
        return stats

    # ---- reading -------------------------------------------------------------------------
    def partitions(self, dataset: str, table: str, symbols: list[str] | None = None) -> list[Path]:
        """Partition files of a table in (symbol, date) order, optionally for some symbols only."""
        info = self.table_info(dataset, table)
        keycol = partition_key_column(info["kind"])
        wanted = None if symbols is None else {f"{keycol}={safe_name(s)}" for s in symbols}
        rels = sorted(info["partitions"])
        return [self.path(dataset) / r for r in rels if wanted is None or r.split("/")[1] in wanted]

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
            meta = info["partitions"][str(p.relative_to(self.path(dataset)))]
            if hi is not None and pd.Timestamp(meta["min_ts"]) > hi:
                continue
            if lo is not None and pd.Timestamp(meta["max_ts"]) < lo:
                continue
            f = pd.read_parquet(p, columns=columns)
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
