"""Ingest sources into the store (streaming, idempotent) and validate stored datasets."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from features import schema as S
from features.readers.base import Chunk
from features.store import DataStore, atomic_write_json, file_fingerprint
from features.symbols import symbol_meta
from features.validate import (
    RuleCounts,
    count_out_of_order,
    find_gaps,
    flag_table,
    reject_invalid,
)

Progress = Callable[[int], None]


@dataclass
class IngestReport:
    """What ingesting one source did.

    Attributes
    ----------
    source : the file (or a label for generated data).
    dataset : the dataset written to.
    fingerprint : content fingerprint of the source.
    skipped : True when the same content was already ingested (nothing was read).
    tables : table -> rule counts (rows read, rows kept, rejections, duplicates...).
    rows_added : new rows stored.
    partitions_written : partition files (re)written.
    """

    source: str
    dataset: str
    fingerprint: str
    skipped: bool = False
    tables: dict[str, RuleCounts] = field(default_factory=dict)
    rows_added: int = 0
    partitions_written: int = 0

    @property
    def rows_read(self) -> int:
        """Rows read from the source over all tables."""
        return sum(c.rows_in for c in self.tables.values())

    def to_dict(self) -> dict[str, object]:
        """JSON-serializable record (stored in the dataset manifest)."""
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "ingested_at": datetime.now(UTC).isoformat(),
            "rows_read": self.rows_read,
            "rows_added": self.rows_added,
            "partitions_written": self.partitions_written,
            "tables": {t: c.to_dict() for t, c in self.tables.items()},
        }


def default_dataset_name(path: Path) -> str:
    """Dataset name for a source file: its folder's name (``raw`` folders: the parent's)."""
    parent = path.resolve().parent
    if parent.name in ("raw", "data", ""):
        parent = parent.parent
    return parent.name or path.stem


def write_chunks(
    store: DataStore,
    dataset: str,
    chunks: Iterable[Chunk],
    *,
    source: str,
    fingerprint: str,
    force: bool = False,
    spill_rows: int = 2_000_000,
    progress: Progress | None = None,
) -> IngestReport:
    """Clean and store a stream of canonical chunks; memory stays bounded by ``spill_rows``.

    Rows failing a rejecting rule are dropped and counted; out-of-order rows are counted and the
    stored partitions are sorted; partitions are merged with what is stored, so re-writing the same
    rows adds nothing. A source whose fingerprint is already in the manifest is skipped unless
    ``force``.
    """
    report = IngestReport(source=source, dataset=dataset, fingerprint=fingerprint)
    with store.lock(dataset):
        manifest = store.manifest(dataset)
        if not force and fingerprint in manifest["sources"]:
            report.skipped = True
            return report
        buffers: dict[str, list[Chunk]] = {}
        buffered = 0
        last_ts: dict[tuple[str, str], dict[str, int]] = {}
        # spilled pieces wait in a staging folder and are merged once per partition at the end
        staging_root = store.path(dataset) / ".staging"
        shutil.rmtree(staging_root, ignore_errors=True)  # leftovers of a killed ingest
        staging = staging_root / uuid.uuid4().hex
        spilled = False

        def flush(stage: bool) -> None:
            nonlocal buffered
            for table, pieces in buffers.items():
                frame = pd.concat([p.frame for p in pieces], ignore_index=True)
                first = pieces[0]
                stats = store.write_frame(
                    dataset,
                    manifest,
                    table,
                    first.kind,
                    frame,
                    report.tables[table],
                    first.interval,
                    staging=staging if stage else None,
                )
                report.rows_added += stats.rows_added
                report.partitions_written += stats.partitions_written
            buffers.clear()
            buffered = 0

        for chunk in chunks:
            counts = report.tables.setdefault(chunk.table, RuleCounts())
            counts.rows_in += len(chunk.frame)
            frame = reject_invalid(chunk.frame, chunk.kind, counts)
            count_out_of_order(frame, last_ts.setdefault((chunk.table, chunk.kind), {}), counts)
            tinfo = manifest["tables"].get(chunk.table)
            if tinfo is not None and tinfo["kind"] != chunk.kind:
                raise S.DataError(
                    f"table '{chunk.table}' holds kind '{tinfo['kind']}', got kind '{chunk.kind}'",
                    source=source,
                )
            syms = manifest["tables"].setdefault(
                chunk.table,
                {
                    "kind": chunk.kind,
                    "interval": None if chunk.interval is None else str(chunk.interval),
                    "symbols": {},
                    "partitions": {},
                },
            )["symbols"]
            for sym in pd.unique(frame[S.SYMBOL]):
                if sym not in syms:
                    syms[sym] = symbol_meta(str(sym)).to_dict()
            buffers.setdefault(chunk.table, []).append(
                Chunk(
                    chunk.table, chunk.kind, frame, chunk.source, chunk.first_line, chunk.interval
                )
            )
            buffered += len(frame)
            if progress is not None:
                progress(len(chunk.frame))
            if buffered >= spill_rows:
                flush(stage=True)
                spilled = True
        flush(stage=spilled)
        if spilled:
            stats = store.merge_staged(dataset, manifest, staging, report.tables)
            report.rows_added += stats.rows_added
            report.partitions_written += stats.partitions_written
        shutil.rmtree(staging_root, ignore_errors=True)
        for counts in report.tables.values():
            counts.rows_out = counts.rows_in - sum(
                counts.counts.get(r, 0) for r in ("non_finite", "non_positive", "negative")
            )
        manifest["sources"][fingerprint] = report.to_dict()
        store.save_manifest(dataset, manifest)
    return report


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

    The source file is only read, never modified.
    """
    from features.readers import detect_format, read_source

    path = Path(path)
    if not path.exists():
        raise S.DataError(f"file not found: {path}")
    fmt = fmt or detect_format(path)
    dataset = dataset or default_dataset_name(path)
    fp = file_fingerprint(path)
    chunks = read_source(path, fmt, chunk_rows=chunk_rows, **options)
    return write_chunks(
        store,
        dataset,
        chunks,
        source=str(path.resolve()),
        fingerprint=fp,
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
    import hashlib

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


def validate_dataset(
    store: DataStore, dataset: str, *, write: bool = True
) -> dict[str, RuleCounts]:
    """Re-check every stored table of ``dataset`` and write ``validation.json`` beside it.

    Per table: the rejections recorded at ingest (summed over sources) plus the flagging rules
    (crossed/locked quotes, inconsistent bars, reverting outliers, coverage gaps) computed on the
    stored, sorted partitions, one symbol at a time.
    """
    manifest = store.require(dataset)
    out: dict[str, RuleCounts] = {}
    for table, info in sorted(manifest["tables"].items()):
        counts = RuleCounts()
        for src in manifest["sources"].values():
            rec = src["tables"].get(table)
            if rec is None:
                continue
            for rule, n in rec["counts"].items():
                if rule in (
                    "non_finite",
                    "non_positive",
                    "negative",
                    "out_of_order",
                    "duplicates",
                    "key_conflicts",
                ):
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
