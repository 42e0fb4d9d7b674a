"""Ingest sources into the store (streaming, atomic per source, idempotent), validate stored
datasets and repair a damaged one.

A source is identified by its *source key*: a fingerprint of its content together with the reading
options (format, symbol, mapping content, ...) and the dataset. The same key again is skipped
("already ingested"); the same content under other options *replaces* what the earlier options
produced (its rows are removed, then the new ones merged), so correcting a ``--symbol`` or a mapping
and re-running takes effect. Each source is one :class:`~features.store.Transaction`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features import schema as S
from features.errors import ConfigError, StoreError
from features.readers.base import Chunk
from features.store import (
    INDEX_DIR,
    MANIFEST,
    REPAIR_DIR,
    UNKNOWN_SOURCE,
    DataStore,
    StoreInconsistent,
    StoreProblems,
    Transaction,
    WriteStats,
    atomic_write_json,
    check_name,
    describe_partition,
    file_fingerprint,
    first_few,
    kill_point,
    merge_rows,
    partition_key_column,
    partition_period,
    partition_rel,
    period_starts,
    remove_source_rows,
    row_hashes,
    safe_name,
)
from features.symbols import symbol_meta
from features.validate import (
    CLEANING_RULES,
    REJECT_RULES,
    RuleCounts,
    count_out_of_order,
    find_gaps,
    flag_table,
    reject_invalid,
    reject_missing_keys,
)

Progress = Callable[[int], None]


@dataclass
class IngestReport:
    """What ingesting one source did.

    Attributes
    ----------
    source : the file (or a label for generated data).
    dataset : the dataset written to.
    fingerprint : the source key (content, reading options and dataset; see the module docstring).
    content : the content fingerprint of the source alone.
    fmt : the reader format (None for in-memory frames).
    options : the reading options (JSON-ready).
    skipped : True when the same source key was already ingested (nothing was read).
    empty : True when the source held no data rows (or none survived cleaning into a new dataset):
        nothing was stored and no dataset was created.
    tables : table -> rule counts (rows read, rows kept, each dropping rule...).
    rows_added : new rows stored.
    rows_removed : rows removed because they came from an earlier ingest of the same content under
        other options (see ``replaced``).
    partitions_written : partition files (re)written.
    partitions : the partitions this source supplied rows to.
    replaced : the source records this ingest replaced.
    """

    source: str
    dataset: str
    fingerprint: str
    content: str = ""
    fmt: str | None = None
    options: dict[str, object] = field(default_factory=dict)
    skipped: bool = False
    empty: bool = False
    tables: dict[str, RuleCounts] = field(default_factory=dict)
    rows_added: int = 0
    rows_removed: int = 0
    partitions_written: int = 0
    partitions: list[str] = field(default_factory=list)
    replaced: list[dict[str, object]] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        """Rows read from the source over all tables."""
        return sum(c.rows_in for c in self.tables.values())

    def dropped(self) -> dict[str, int]:
        """Rows dropped per rejecting rule, summed over the tables (non-zero rules only)."""
        out: dict[str, int] = {}
        for c in self.tables.values():
            for rule in REJECT_RULES:
                if c.counts.get(rule):
                    out[rule] = out.get(rule, 0) + c.counts[rule]
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-serializable record (stored in the dataset manifest)."""
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "content": self.content,
            "format": self.fmt,
            "options": self.options,
            "dataset": self.dataset,
            "ingested_at": datetime.now(UTC).isoformat(),
            "rows_read": self.rows_read,
            "rows_added": self.rows_added,
            "rows_removed": self.rows_removed,
            "partitions_written": self.partitions_written,
            "partitions": self.partitions,
            "replaced": self.replaced,
            "tables": {t: c.to_dict() for t, c in self.tables.items()},
        }


def default_dataset_name(path: Path) -> str:
    """Dataset name for a source file: its folder's name (``raw`` folders: the parent's)."""
    parent = path.resolve().parent
    if parent.name in ("raw", "data", ""):
        parent = parent.parent
    return parent.name or path.stem


def jsonable(options: Mapping[str, object] | None) -> dict[str, object]:
    """Reading options as they are recorded (JSON round trip, so a recorded key is reproducible)."""
    return json.loads(json.dumps(dict(options or {}), default=str, sort_keys=True))


def source_key(dataset: str, content: str, fmt: str | None, options: Mapping[str, object] | None) -> str:
    """The key of a source: its content fingerprint with the reading options and the dataset."""
    doc = json.dumps({"dataset": dataset, "content": content, "format": fmt,
                      "options": jsonable(options)}, sort_keys=True, default=str)
    return hashlib.blake2b(doc.encode(), digest_size=16).hexdigest()


# ---- writing one source ------------------------------------------------------------------
@dataclass
class _Plan:
    """The new rows of one partition: spilled pieces (read order) then in-memory frames."""

    table: str
    kind: str
    pieces: list[Path] = field(default_factory=list)
    frames: list[pd.DataFrame] = field(default_factory=list)

    def load(self) -> pd.DataFrame:
        parts = [pd.read_parquet(p) for p in self.pieces] + self.frames
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def _index_frame(src: str, h: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"src": pd.Series([src] * len(h), dtype="str"),
                         "h": pd.Series(h, dtype="uint64")})


class _SourceWriter:
    """Buffers, spills and finally merges one source's rows into a transaction."""

    def __init__(self, txn: Transaction, key: str, report: IngestReport, spill_rows: int) -> None:
        self.txn = txn
        self.key = key
        self.report = report
        self.spill_rows = spill_rows
        self.buffers: dict[str, list[pd.DataFrame]] = {}
        self.kinds: dict[str, tuple[str, pd.Timedelta | None]] = {}
        self.buffered = 0
        self.plans: dict[str, _Plan] = {}
        self.stats = WriteStats()
        self.added_by_table: dict[str, int] = {}
        self._names_ok: set[tuple[str, str]] = set()

    def add(self, table: str, kind: str, interval: pd.Timedelta | None, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        man = self.txn.manifest
        tinfo = man["tables"].setdefault(table, {
            "kind": kind,
            "interval": None if interval is None else str(interval),
            "symbols": {},
            "partitions": {},
        })
        syms = tinfo["symbols"]
        for col in (S.SYMBOL, S.UNDERLYING if kind == "options" else None):
            if col is None:
                continue
            for value in pd.unique(frame[col]):
                v = str(value)
                if (col, v) not in self._names_ok:
                    check_name("symbol" if col == S.SYMBOL else "underlying", v,
                               source=self.report.source)
                    self._names_ok.add((col, v))
                if col == S.SYMBOL and v not in syms:
                    syms[v] = symbol_meta(v).to_dict()
        self.kinds.setdefault(table, (kind, interval))
        self.buffers.setdefault(table, []).append(frame)
        self.buffered += len(frame)
        if self.buffered >= self.spill_rows:
            self._flush(spill=True)

    def _flush(self, *, spill: bool) -> None:
        for table, frames in self.buffers.items():
            kind, _ = self.kinds[table]
            info = self.txn.manifest["tables"][table]
            interval = None if info.get("interval") is None else pd.Timedelta(info["interval"])
            frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            keycol = partition_key_column(kind)
            pers = period_starts(frame[S.TS], partition_period(kind, interval))
            for (kv, per), idx in frame.groupby([frame[keycol], pers], sort=True).indices.items():
                rel = partition_rel(table, kind, str(kv), str(per))
                plan = self.plans.setdefault(rel, _Plan(table, kind))
                piece = frame.iloc[idx].reset_index(drop=True)
                if spill:
                    p = self.txn.scratch("spill.parquet")
                    piece.to_parquet(p, index=False)
                    plan.pieces.append(p)
                    kill_point("read")
                else:
                    plan.frames.append(piece)
        self.buffers.clear()
        self.buffered = 0

    def finish(self, replaced: set[str]) -> None:
        """Merge every planned partition, and take the replaced sources' rows out of theirs."""
        self._flush(spill=False)
        man = self.txn.manifest
        extra: dict[str, tuple[str, str]] = {}
        if replaced:
            for t, info in man["tables"].items():
                for rel, meta in info["partitions"].items():
                    if replaced & set(meta.get("sources", ())):
                        extra[rel] = (t, info["kind"])
        for rel in sorted(set(self.plans) | set(extra)):
            plan = self.plans.get(rel)
            table, kind = (plan.table, plan.kind) if plan is not None else extra[rel]
            new = plan.load() if plan is not None else None
            self._merge(rel, table, kind, new, replaced)
            del new
            kill_point("merge")
        self.report.partitions = sorted(self.plans)
        _tidy_tables(man)

    def _merge(self, rel: str, table: str, kind: str, new: pd.DataFrame | None,
               replaced: set[str]) -> None:
        txn, man = self.txn, self.txn.manifest
        tinfo = man["tables"][table]
        meta = tinfo["partitions"].get(rel)
        cur = txn.current(rel)
        existing = pd.read_parquet(cur) if cur is not None else None
        if meta is not None:
            contributors = list(meta.get("sources") or [UNKNOWN_SOURCE])
        else:  # a new partition, or a file an older version left outside the manifest
            contributors = [UNKNOWN_SOURCE] if existing is not None and len(existing) else []
        index_rel = f"{INDEX_DIR}/{rel}"
        ipath = txn.current(index_rel)
        index = pd.read_parquet(ipath) if ipath is not None else None
        base = existing
        gone = [c for c in contributors if c in replaced]
        if gone and base is not None:
            if index is not None:
                base = remove_source_rows(base, kind, index, set(gone))
                index = index.loc[~index["src"].isin(gone)].reset_index(drop=True)
            elif set(contributors) <= set(gone):
                base = base.iloc[0:0]
            self.stats.rows_removed += len(existing) - len(base)
            contributors = [c for c in contributors if c not in gone]
        if new is not None:
            others = [c for c in contributors if c != self.key]
            if others:
                if index is None:  # one contributor so far: every row of the partition is its
                    owner = others[0] if len(others) == 1 else UNKNOWN_SOURCE
                    index = _index_frame(owner, row_hashes(base, kind) if base is not None
                                         else np.zeros(0, dtype=np.uint64))
                index = pd.concat([index.loc[index["src"] != self.key],
                                   _index_frame(self.key, row_hashes(new, kind))], ignore_index=True)
            if self.key not in contributors:
                contributors.append(self.key)
            merged = merge_rows(base, new, kind, self.report.tables[table])
        else:
            merged = base
        base_rows = 0 if base is None else len(base)
        if merged is None or merged.empty:
            if cur is not None:
                txn.delete(rel)
                self.stats.partitions_deleted += 1
            tinfo["partitions"].pop(rel, None)
            txn.delete(index_rel)
        else:
            if existing is not None and cur is not None and merged.equals(existing):
                digest = file_fingerprint(cur)
                self.stats.partitions_unchanged += 1
            else:
                digest = txn.stage_parquet(rel, merged)
                self.stats.partitions_written += 1
            tinfo["partitions"][rel] = describe_partition(merged, digest=digest, sources=contributors)
            if len(contributors) >= 2 and index is not None:
                txn.stage_parquet(index_rel, index)
            else:
                txn.delete(index_rel)
        added = (0 if merged is None else len(merged)) - base_rows
        self.stats.rows_added += added
        self.added_by_table[table] = self.added_by_table.get(table, 0) + added


def _tidy_tables(man: dict) -> None:
    """Drop tables without partitions and symbols without a partition (options: kept)."""
    for t in list(man["tables"]):
        info = man["tables"][t]
        if not info["partitions"]:
            del man["tables"][t]
            continue
        if info["kind"] == "options":
            continue
        present = {rel.split("/")[1].split("=", 1)[1] for rel in info["partitions"]}
        info["symbols"] = {s: m for s, m in info["symbols"].items() if safe_name(s) in present}


def write_chunks(
    store: DataStore,
    dataset: str,
    chunks: Iterable[Chunk],
    *,
    source: str,
    fingerprint: str,
    fmt: str | None = None,
    options: Mapping[str, object] | None = None,
    force: bool = False,
    spill_rows: int = 2_000_000,
    progress: Progress | None = None,
) -> IngestReport:
    """Clean and store a stream of canonical chunks as one source, atomically.

    Rows failing a rejecting rule are dropped and counted; out-of-order rows are counted and the
    stored partitions are sorted; partitions are merged with what is stored, so re-writing the same
    rows adds nothing. ``fingerprint`` is the content fingerprint; with ``fmt``, ``options`` and
    ``dataset`` it forms the source key. A source key already in the manifest is skipped unless
    ``force``; an earlier ingest of the same content under other options is replaced. Memory stays
    bounded by ``spill_rows`` plus one partition. All of the source's partitions and its manifest
    record commit together (see :class:`~features.store.Transaction`).
    """
    check_name("dataset", dataset)
    opts = jsonable(options)
    key = source_key(dataset, fingerprint, fmt, opts)
    report = IngestReport(source=source, dataset=dataset, fingerprint=key, content=fingerprint,
                          fmt=fmt, options=opts)
    with store.transaction(dataset) as txn:
        manifest = txn.manifest
        if not force and key in manifest["sources"]:
            report.skipped = True
            return report
        replaced = {k for k, rec in manifest["sources"].items()
                    if k != key and rec.get("content", rec.get("fingerprint", k)) == fingerprint}
        writer = _SourceWriter(txn, key, report, spill_rows)
        last_ts: dict[tuple[str, str], dict[str, int]] = {}
        tables_ok: set[str] = set()
        for chunk in chunks:
            if chunk.table not in tables_ok:
                check_name("table", chunk.table, source=source)
                tables_ok.add(chunk.table)
            counts = report.tables.setdefault(chunk.table, RuleCounts())
            counts.rows_in += len(chunk.frame)
            tinfo = manifest["tables"].get(chunk.table)
            if tinfo is not None and tinfo["kind"] != chunk.kind:
                raise S.DataError(
                    f"table '{chunk.table}' holds kind '{tinfo['kind']}', got kind '{chunk.kind}'",
                    source=source,
                )
            frame = reject_missing_keys(chunk.frame, chunk.kind, counts)
            frame = reject_invalid(frame, chunk.kind, counts)
            count_out_of_order(frame, last_ts.setdefault((chunk.table, chunk.kind), {}), counts)
            writer.add(chunk.table, chunk.kind, chunk.interval, frame)
            if progress is not None:
                progress(len(chunk.frame))
            kill_point("read")
        if report.rows_read == 0:
            report.empty = True  # empty or header-only: nothing to record, no dataset created
            return report
        writer.finish(replaced)
        report.rows_added = writer.stats.rows_added
        report.rows_removed = writer.stats.rows_removed
        report.partitions_written = writer.stats.partitions_written
        for t, c in report.tables.items():
            c.rows_out = writer.added_by_table.get(t, 0)
        if not txn.existed and not manifest["tables"]:
            report.empty = True  # every row rejected: no empty dataset
            return report
        for k in sorted(replaced):
            rec = manifest["sources"].pop(k)
            report.replaced.append({"source": rec.get("source"), "fingerprint": k,
                                    "format": rec.get("format"), "options": rec.get("options")})
        manifest["sources"][key] = report.to_dict()
        txn.commit(source=source)
    return report


def _no_rows(path: Path) -> bool:
    """True for an empty file or a parquet file with no rows (its reader is never asked)."""
    if not path.is_file():
        return False
    if path.stat().st_size == 0:
        return True
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows == 0
        except Exception:  # not readable as parquet: the reader reports it
            return False
    return False


def ingest_file(
    store: DataStore,
    path: Path,
    *,
    dataset: str | None = None,
    fmt: str | None = None,
    force: bool = False,
    chunk_rows: int = 500_000,
    spill_rows: int = 2_000_000,
    progress: Progress | None = None,
    **options: object,
) -> IngestReport:
    """Read one source file with its reader and store it (see :func:`write_chunks`).

    The reading options (``fmt`` and ``options``: ``symbol``, a mapping's content, ...) are part of
    the source key. An empty file gives an ``empty`` report and stores nothing. The source file is
    only read, never modified.
    """
    from features.readers import detect_format, read_source

    path = Path(path)
    if not path.exists():
        raise S.DataError(f"file not found: {path}")
    if dataset is None:
        dataset = default_dataset_name(path)
        check_name("dataset", dataset, source=f"{path} (the default dataset name is the folder's; "
                                              f"pass --dataset NAME)")
    check_name("dataset", dataset)
    for fld in ("symbol", "table", "underlying"):
        if options.get(fld) is not None:
            check_name(fld, options[fld], source=str(path))
    if _no_rows(path):
        return IngestReport(source=str(path.resolve()), dataset=dataset, fingerprint="", empty=True)
    fmt = fmt or detect_format(path)
    fp = file_fingerprint(path)
    chunks = read_source(path, fmt, chunk_rows=chunk_rows, **options)
    return write_chunks(
        store,
        dataset,
        chunks,
        source=str(path.resolve()),
        fingerprint=fp,
        fmt=fmt,
        options=options,
        force=force,
        spill_rows=spill_rows,
        progress=progress,
    )


def ingest_frames(
    store: DataStore,
    dataset: str,
    tables: dict[str, tuple[str, pd.DataFrame, pd.Timedelta | None]],
    *,
    source: str,
    force: bool = False,
) -> IngestReport:
    """Store in-memory canonical frames (simulator output, embedded data) like a source file.

    ``tables`` maps a table name to ``(kind, frame, interval)``; the fingerprint is computed from the
    frames' content, so storing the same frames twice adds nothing.
    """
    h = hashlib.blake2b(digest_size=16)
    chunks = []
    for name, (kind, frame, interval) in sorted(tables.items()):
        conformed = S.conform(frame, kind, source=source)
        h.update(name.encode())
        h.update(pd.util.hash_pandas_object(conformed, index=False).to_numpy().tobytes())
        chunks.append(Chunk(name, kind, conformed, source, None, interval))
    return write_chunks(
        store, dataset, chunks, source=source, fingerprint=h.hexdigest(), force=force
    )


# ---- validation --------------------------------------------------------------------------
def validate_dataset(
    store: DataStore, dataset: str, *, write: bool = True
) -> dict[str, RuleCounts]:
    """Re-check every stored table of ``dataset`` and write ``validation.json`` beside it.

    First the store itself: partition files against the manifest (orphaned, missing, stale);
    any problem raises :class:`~features.store.StoreInconsistent` (a ``StoreError``). Then per
    table: the rows dropped at ingest under each rejecting rule (summed over sources) plus the
    flagging rules (crossed/locked quotes, inconsistent bars, reverting outliers, coverage gaps)
    computed on the stored, sorted partitions, one symbol at a time.
    """
    manifest = store.require(dataset)
    store.require_consistent(dataset)
    manifest = store.manifest(dataset)
    out: dict[str, RuleCounts] = {}
    recorded = (*REJECT_RULES, "out_of_order")
    for table, info in sorted(manifest["tables"].items()):
        counts = RuleCounts()
        for src in manifest["sources"].values():
            rec = src["tables"].get(table)
            if rec is None:
                continue
            for rule, n in rec["counts"].items():
                if rule in recorded:
                    counts.add(rule, n, rec["examples"].get(rule, ()))
        interval = None if info.get("interval") is None else pd.Timedelta(info["interval"])
        prev_tail: pd.DataFrame | None = None
        prev_key = None
        for p in store.partitions(dataset, table):
            frame = pd.read_parquet(p)
            key = p.parent.name
            counts.rows_out += len(frame)
            flag_table(frame, info["kind"], interval, counts, gaps=False)
            # carry the previous partition's last row so a gap across the boundary is seen
            joined = (
                frame
                if prev_tail is None or key != prev_key
                else pd.concat([prev_tail, frame], ignore_index=True)
            )
            find_gaps(joined, info["kind"], interval, counts)
            prev_tail, prev_key = frame.tail(1), key
        counts.rows_in = sum(
            src["tables"].get(table, {}).get("rows_in", 0) for src in manifest["sources"].values()
        )
        out[table] = counts
    if write:
        atomic_write_json(
            store.path(dataset) / "validation.json",
            {
                "dataset": dataset,
                "validated_at": datetime.now(UTC).isoformat(),
                "tables": {t: c.to_dict() for t, c in out.items()},
            },
        )
    return out


# ---- repair ------------------------------------------------------------------------------
@dataclass
class RepairReport:
    """What ``dprm data repair`` did to one dataset.

    Attributes
    ----------
    dataset : the dataset.
    before : the problems found first.
    recovered : an interrupted commit finished or rolled back on opening, if any.
    adopted : orphaned partition files added to the manifest (entry rebuilt from the file).
    rebuilt : stale partitions whose manifest entry was rebuilt from the file.
    quarantined : partition files set aside (copied to ``<dataset>/.repair/``, then removed):
        unreadable, or orphans whose rows belong to other partitions; with the reason.
    removed : manifest entries of missing (or quarantined) partitions, removed.
    reingested : sources re-ingested (``--force``) to restore removed partitions.
    lost : what could not be restored, one message each.
    after : the check after the repair.
    """

    dataset: str
    before: StoreProblems | None = None
    recovered: str | None = None
    adopted: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reingested: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    after: StoreProblems | None = None

    @property
    def ok(self) -> bool:
        """True when the dataset is consistent and nothing was lost."""
        return self.after is not None and self.after.ok and not self.lost

    def lines(self) -> list[str]:
        """What was done, one line per action, as a person reads it."""
        ds = self.dataset

        out = []
        if self.recovered:
            out.append(f"{ds}: {self.recovered}")
        if self.before is not None and self.before.ok and not out:
            out.append(f"{ds}: consistent; nothing to repair")
            return out
        if self.adopted:
            out.append(f"{ds}: rebuilt the manifest from the files for {len(self.adopted)} orphaned "
                       f"partition(s): {first_few(self.adopted)}")
        if self.rebuilt:
            out.append(f"{ds}: rebuilt the manifest from the files for {len(self.rebuilt)} stale "
                       f"partition(s): {first_few(self.rebuilt)}")
        if self.quarantined:
            out.append(f"{ds}: set {len(self.quarantined)} partition file(s) aside in "
                       f"{REPAIR_DIR}/ and out of the store: {first_few(self.quarantined)}")
        if self.removed:
            out.append(f"{ds}: removed {len(self.removed)} missing partition(s) from the manifest: "
                       f"{first_few(self.removed)}")
        if self.reingested:
            out.append(f"{ds}: re-ingested {len(self.reingested)} source(s) to restore them: "
                       f"{first_few([Path(s).name for s in self.reingested])}")
        out.extend(f"{ds}: {m}" for m in self.lost)
        if self.after is not None:
            out.append(f"{ds}: consistent now" if self.after.ok else f"{ds}: still inconsistent: "
                       + "; ".join(self.after.lines()))
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "dataset": self.dataset, "ok": self.ok, "recovered": self.recovered,
            "before": None if self.before is None else self.before.to_dict(),
            "adopted": self.adopted, "rebuilt": self.rebuilt, "quarantined": self.quarantined,
            "removed": self.removed, "reingested": self.reingested, "lost": self.lost,
            "after": None if self.after is None else self.after.to_dict(),
        }


def _infer_table(frame: pd.DataFrame) -> tuple[str, str | None] | None:
    """(kind, interval) of a partition whose table the manifest does not know, from its columns
    and its time steps; None when no kind fits."""
    cols = set(frame.columns)
    best = None
    for kind, sp in S.SCHEMAS.items():
        if set(sp.required) <= cols <= set(sp.columns) and (
                best is None or len(sp.required) > len(S.SCHEMAS[best].required)):
            best = kind
    if best is None:
        return None
    if best in ("trades", "quotes", "book", "options") or len(frame) < 2:
        return best, None
    steps = frame.groupby(S.SYMBOL)[S.TS].diff().dropna()
    return best, None if steps.empty else str(steps.median())


def _misplaced(frame: pd.DataFrame, rel: str, kind: str, interval: str | None) -> str | None:
    """Why the rows of ``frame`` do not belong to partition ``rel`` (None when they all do)."""
    if frame.empty:
        return "no rows"
    keycol = partition_key_column(kind)
    if keycol not in frame.columns or S.TS not in frame.columns:
        return f"no {keycol} or {S.TS} column"
    step = None if interval is None else pd.Timedelta(interval)
    pers = period_starts(frame[S.TS], partition_period(kind, step))
    keys = frame[keycol].astype("str").map(safe_name)
    want_key = rel.split("/")[1].split("=", 1)[1]
    want_per = rel.rsplit("date=", 1)[1].removesuffix(".parquet")
    if not ((keys == want_key).all() and (pers == want_per).all()):
        return "its rows belong to other partitions"
    return None


def _quarantine(store: DataStore, dataset: str, rel: str, stamp: str) -> None:
    src = store.file(dataset, rel)
    dst = store.file(dataset, f"{REPAIR_DIR}/{stamp}/{rel}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _contributors(man: dict, rel: str, table: str, meta: dict) -> list[str]:
    if meta.get("sources"):
        return list(meta["sources"])
    # entries written before sources were tracked per partition: every source of the table
    return [k for k, rec in man["sources"].items()
            if rel in rec.get("partitions", ()) or ("partitions" not in rec and table in rec["tables"])]


def _reingest(store: DataStore, dataset: str, rec: dict) -> str | None:
    """Re-ingest a recorded source with ``force``; the reason it cannot be, or None."""
    label = str(rec.get("source"))
    path = Path(label)
    if rec.get("format") is None or not path.is_file():
        return (f"cannot restore the rows of {label}: its file is not available"
                if rec.get("format") is not None else
                f"cannot restore the rows of {label}: not a file (re-run the command that stored it)")
    if rec.get("content") and file_fingerprint(path) != rec["content"]:
        return f"cannot restore the rows of {label}: the file changed since it was ingested"
    ingest_file(store, path, dataset=dataset, fmt=str(rec["format"]), force=True,
                **dict(rec.get("options") or {}))
    return None


def repair_dataset(store: DataStore, dataset: str) -> RepairReport:
    """Make ``dataset``'s manifest agree with its files again, and say how.

    - an interrupted commit is finished (journal) or rolled back (staged files) first;
    - orphaned partition files are adopted: their manifest entries are rebuilt from the files (a
      table the manifest does not know gets its kind from the columns);
    - stale partitions get their entries rebuilt from the files;
    - unreadable files, and orphans holding rows of other partitions, are copied to
      ``<dataset>/.repair/`` and removed (an unreadable listed partition is then treated as missing);
    - missing partitions are removed from the manifest and the sources that supplied them are
      re-ingested (``force``) when their files are still there, unchanged.
    """
    ds = store.path(dataset)
    if not ds.is_dir():
        raise S.DataError(f"dataset '{dataset}' not found in {store.root}; known datasets: "
                          f"{store.datasets()}")
    report = RepairReport(dataset)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    with store.lock(dataset):
        try:
            store.manifest(dataset)
        except StoreError:  # unreadable manifest: keep a copy, rebuild from the files
            _quarantine(store, dataset, MANIFEST, stamp)
            (ds / MANIFEST).unlink()
            report.lost.append(f"the manifest was unreadable (a copy is in {REPAIR_DIR}/{stamp}/); "
                               "rebuilt from the files, so the ingest history is lost")
        problems = store.check(dataset)
    report.before = problems
    report.recovered = problems.recovered
    if problems.ok:
        report.after = problems
        return report
    to_reingest: dict[str, dict] = {}
    with store.transaction(dataset) as txn:
        man = txn.manifest
        by_dir = {safe_name(t): t for t in man["tables"]}

        def owner(rel: str) -> str | None:
            return by_dir.get(rel.split("/")[0])

        def set_aside(rel: str, why: str) -> None:
            _quarantine(store, dataset, rel, stamp)
            report.quarantined.append(f"{rel} ({why})")
            txn.delete(rel)

        def read(rel: str) -> pd.DataFrame | None:
            try:
                return pd.read_parquet(store.file(dataset, rel))
            except Exception:  # any unreadable file is set aside
                set_aside(rel, "unreadable")
                return None

        missing = list(problems.missing)
        for rel in problems.orphaned:
            frame = read(rel)
            if frame is None:
                continue
            table = owner(rel)
            guess = None
            if table is None:
                guess = _infer_table(frame)
                if guess is None:
                    set_aside(rel, "no table kind has these columns")
                    continue
            kind, interval = (guess if guess is not None else
                              (man["tables"][table]["kind"], man["tables"][table].get("interval")))
            why = _misplaced(frame, rel, kind, interval)
            if why is not None:
                set_aside(rel, why)
                continue
            if table is None:
                table = rel.split("/")[0]
                man["tables"][table] = {"kind": kind, "interval": interval, "symbols": {},
                                        "partitions": {}}
                by_dir[table] = table
            info = man["tables"][table]
            info["partitions"][rel] = describe_partition(
                frame, digest=file_fingerprint(store.file(dataset, rel)), sources=[UNKNOWN_SOURCE])
            if S.SYMBOL in frame.columns and info["kind"] != "options":
                for sym in pd.unique(frame[S.SYMBOL]):
                    info["symbols"].setdefault(str(sym), symbol_meta(str(sym)).to_dict())
            report.adopted.append(rel)
        for s in problems.stale:
            rel = str(s["partition"])
            info = man["tables"][owner(rel)]
            frame = read(rel)
            if frame is not None:
                why = _misplaced(frame, rel, info["kind"], info.get("interval"))
                if why is not None:
                    set_aside(rel, why)
                    frame = None
            if frame is None:
                missing.append(rel)
                continue
            old = info["partitions"][rel]
            info["partitions"][rel] = describe_partition(
                frame, digest=file_fingerprint(store.file(dataset, rel)),
                sources=old.get("sources") or [UNKNOWN_SOURCE])
            report.rebuilt.append(rel)
        for rel in missing:
            table = owner(rel)
            meta = man["tables"][table]["partitions"].pop(rel)
            txn.delete(f"{INDEX_DIR}/{rel}")
            report.removed.append(rel)
            for k in _contributors(man, rel, table, meta):
                if k in man["sources"]:
                    to_reingest[k] = man["sources"][k]
                elif k == UNKNOWN_SOURCE:
                    report.lost.append(f"partition {rel} held rows of unknown origin; they cannot "
                                       "be restored")
        _tidy_tables(man)
        txn.commit(source="dprm data repair")
    for rec in to_reingest.values():
        why = _reingest(store, dataset, rec)
        if why is None:
            report.reingested.append(str(rec.get("source")))
        else:
            report.lost.append(why)
    report.after = store.check(dataset)
    return report


__all__ = [
    "CLEANING_RULES",
    "ConfigError",
    "IngestReport",
    "RepairReport",
    "StoreInconsistent",
    "default_dataset_name",
    "ingest_file",
    "ingest_frames",
    "repair_dataset",
    "source_key",
    "validate_dataset",
    "write_chunks",
]
