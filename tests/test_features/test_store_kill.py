"""A killed ingest, rerun, ends with the store of a clean ingest (issue 12, item 1).

The writer's kill hook (``DPRM_TEST_KILL_AT=<phase>:<n>``) makes a real subprocess SIGKILL itself at
the n-th write of the read, merge or manifest phase; the rerun must leave a store identical (rows,
partition digests, index files, source records) to one ingest that was never interrupted. A
hypothesis test does the same in-process over random batch splits and kill points.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import schema as S
from features import store as store_mod
from features.ingest import write_chunks
from features.readers.base import Chunk
from features.store import INDEX_DIR, JOURNAL, KILL_ENV, TXN_DIR, DataStore


# Three sources into one dataset: A (BTC, ETH days 1-3), B (SOL days 2-4, ETH days 3-4; half of ETH
# day 3 repeats A's rows, so that partition has two contributors), then A again under a corrected
# mapping (size from another column): it replaces what A's first mapping stored.
def drive(root: str, src: str, kill: str | None = None, counts_out: str | None = None) -> None:
    """The ingest commands, run in a child process (``kill``: the kill point to arm).

    Like a user, a rerun starts again at the command that was killed (``steps.json`` beside the
    store records the commands that finished).
    """
    import tomllib

    from features.ingest import ingest_file

    if kill is not None:
        os.environ[KILL_ENV] = kill
    store = DataStore(Path(root))
    m1 = tomllib.loads((Path(src) / "m1.toml").read_text())
    m2 = tomllib.loads((Path(src) / "m2.toml").read_text())
    done_file = Path(f"{root}.steps.json")
    done = json.loads(done_file.read_text()) if done_file.exists() else 0
    for i, (name, opts) in enumerate((("a.csv", m1), ("b.csv", m1), ("a.csv", m2))):
        if i < done:
            continue
        ingest_file(store, Path(src) / name, dataset="k", fmt="generic", chunk_rows=200,
                    spill_rows=500, **opts)
        done_file.write_text(json.dumps(i + 1))
    if counts_out is not None:
        Path(counts_out).write_text(json.dumps(store_mod._kill_counts))


_CTX = None


def _ctx():
    """A forkserver that has imported pandas, pyarrow and the store once: each child is a fresh
    process (really SIGKILLed) without paying for the imports again."""
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(["pandas", "pyarrow.parquet", "features.ingest",
                                     "features.readers.generic", __name__])
    return _CTX


def run_child(root: Path, src: Path, kill: str | None = None, counts_out: Path | None = None) -> int:
    """Run :func:`drive` in a child process; its exit code (``-SIGKILL`` when killed)."""
    p = _ctx().Process(target=drive, args=(str(root), str(src), kill,
                                           None if counts_out is None else str(counts_out)))
    p.start()
    p.join(300)
    return p.exitcode


def _trades(rng: np.random.Generator, symbols: list[str], days: range, per_day: int) -> pd.DataFrame:
    rows = []
    for sym in symbols:
        for d in days:
            t0 = pd.Timestamp("2024-03-01", tz="UTC") + pd.Timedelta(days=d)
            secs = np.sort(rng.integers(0, 86_400, per_day))
            rows.append(pd.DataFrame({
                "time": (t0 + pd.to_timedelta(secs, unit="s")).strftime("%Y-%m-%d %H:%M:%S"),
                "sym": sym, "px": np.round(100 + rng.normal(0, 1, per_day).cumsum(), 2),
                "qty": np.round(rng.uniform(0.1, 2, per_day), 3),
                "qty2": np.round(rng.uniform(0.1, 2, per_day), 3), "side": rng.choice([-1, 1], per_day)}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(12)
    a = _trades(rng, ["BTCUSDT", "ETHUSDT"], range(0, 3), 120)
    b = _trades(rng, ["SOLUSDT"], range(1, 4), 120)
    eth = _trades(rng, ["ETHUSDT"], range(3, 4), 120)
    shared = a[(a["sym"] == "ETHUSDT") & (a["time"] >= "2024-03-03")].iloc[::2]
    b = pd.concat([b, eth, shared], ignore_index=True)
    a.loc[a.index[::37], "sym"] = ""  # dropped and counted as empty_symbol
    a.to_csv(src / "a.csv", index=False)
    b.to_csv(src / "b.csv", index=False)
    (src / "m1.toml").write_text('kind = "trades"\nmapping = {ts = "time", symbol = "sym", '
                                 'price = "px", size = "qty"}\n')
    (src / "m2.toml").write_text('kind = "trades"\nmapping = {ts = "time", symbol = "sym", '
                                 'price = "px", size = "qty2"}\n')
    return src


def snapshot(root: Path, dataset: str = "k") -> dict:
    """Everything that must match a clean ingest: partition rows and digests, index files, the
    sources recorded (keys, rows, counts), the rows themselves; and no leftovers."""
    store = DataStore(root)
    man = store.manifest(dataset)
    ds = store.path(dataset)
    assert not (ds / JOURNAL).exists() and not (ds / TXN_DIR).exists()
    assert not list(ds.rglob("*.tmp"))
    assert store.check(dataset).ok
    parts = {rel: (m["rows"], m["digest"], tuple(m["sources"]))
             for t in man["tables"].values() for rel, m in t["partitions"].items()}
    index = {str(p.relative_to(ds)): store_mod.file_fingerprint(p)
             for p in sorted((ds / INDEX_DIR).rglob("*.parquet"))}
    # the rule counts (not their few example rows, which follow the chunking) and row totals
    sources = {k: (r["rows_read"], r["rows_added"], r["rows_removed"],
                   {t: (c["rows_in"], c["rows_out"], c["counts"]) for t, c in r["tables"].items()})
               for k, r in man["sources"].items()}
    rows = {t: store.read(dataset, t) for t in man["tables"]}
    return {"parts": parts, "index": index, "sources": sources, "rows": rows}


def assert_same(a: dict, b: dict) -> None:
    assert a["parts"] == b["parts"]
    assert a["index"] == b["index"]
    assert a["sources"] == b["sources"]
    assert a["rows"].keys() == b["rows"].keys()
    for t in a["rows"]:
        pd.testing.assert_frame_equal(a["rows"][t], b["rows"][t])


def _count_points(src: Path, tmp: Path) -> dict[str, int]:
    """How many kill points each phase has in a clean run of the sequence."""
    out = tmp / "counts.json"
    assert run_child(tmp / "root", src, "none:0", out) == 0
    return json.loads(out.read_text())


def test_clean_ingest_of_the_kill_sources(sources: Path, tmp_path: Path) -> None:
    """The scenario itself: counted drops, a shared partition with an index, and a replacement."""
    assert run_child(tmp_path, sources) == 0
    snap = snapshot(tmp_path)
    man = DataStore(tmp_path).manifest("k")
    assert len(man["sources"]) == 2  # a.csv's first mapping was replaced by its second
    shared = [rel for rel, (_, _, srcs) in snap["parts"].items() if len(srcs) == 2]
    assert shared and snap["index"], "ETH days 3-4 have two contributors"
    a2 = next(r for r in man["sources"].values() if r["options"]["mapping"]["size"] == "qty2")
    assert a2["replaced"] and a2["rows_removed"] > 0
    t = a2["tables"]["trades"]
    assert t["counts"]["empty_symbol"] == len(range(0, 720, 37))
    # the rows now carry qty2: none of the first mapping's sizes is left in a.csv's partitions
    a = pd.read_csv(sources / "a.csv")
    stored = snap["rows"]["trades"]
    btc = stored[stored[S.SYMBOL] == "BTCUSDT"]
    assert set(btc[S.SIZE]) <= set(a["qty2"]) and not set(btc[S.SIZE]) & (set(a["qty"]) - set(a["qty2"]))


def test_sigkill_at_many_points_then_rerun_equals_a_clean_ingest(sources: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    assert run_child(clean, sources) == 0
    expected = snapshot(clean)
    counts = _count_points(sources, tmp_path / "count")
    assert min(counts.get(p, 0) for p in ("read", "merge", "manifest")) >= 8, counts
    points = []
    for phase in ("read", "merge", "manifest"):
        n = counts[phase]
        points += [f"{phase}:{int(k)}" for k in np.unique(np.linspace(1, n, 8).round())]
    assert len(points) >= 24

    def one(point: str) -> tuple[str, str | None]:
        root = tmp_path / point.replace(":", "_")
        rc = run_child(root, sources, point)
        if rc != -signal.SIGKILL:
            return point, f"not killed (exit code {rc})"
        rc = run_child(root, sources)
        if rc != 0:
            return point, f"rerun failed (exit code {rc})"
        try:
            assert_same(snapshot(root), expected)
        except AssertionError as exc:
            return point, f"store differs: {str(exc)[:500]}"
        return point, None

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        failures = [(p, why) for p, why in pool.map(one, points) if why is not None]
    assert not failures, failures


# ---- in-process property test ------------------------------------------------------------
class SimulatedKill(BaseException):
    """Raised by the kill hook in-process: like SIGKILL, nothing cleans up after it."""


def _frame(rows: list[tuple[int, int, float]], symbols: list[str]) -> pd.DataFrame:
    secs, sym, px = zip(*rows, strict=True)
    return S.conform(pd.DataFrame({
        S.TS: pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(np.array(secs) * 60, unit="s"),
        S.SYMBOL: [symbols[i] for i in sym], S.PRICE: px, S.SIZE: 1.0, S.SIDE: 1}), "trades")


def _chunks(frame: pd.DataFrame, cuts: list[int]) -> list[Chunk]:
    edges = sorted({0, len(frame), *[c % (len(frame) + 1) for c in cuts]})
    return [Chunk("trades", "trades", frame.iloc[a:b].reset_index(drop=True), "h")
            for a, b in zip(edges[:-1], edges[1:], strict=False) if b > a]


def _ingest_all(store: DataStore, sources: list[tuple[str, pd.DataFrame, list[int]]], spill: int) -> None:
    for fp, frame, cuts in sources:
        write_chunks(store, "p", _chunks(frame, cuts), source=fp, fingerprint=fp, spill_rows=spill)


rows_st = st.lists(st.tuples(st.integers(0, 3 * 1440), st.integers(0, 2), st.floats(1, 1e4)),
                   min_size=1, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=rows_st, b=rows_st, cuts_a=st.lists(st.integers(0, 40), max_size=5),
       cuts_b=st.lists(st.integers(0, 40), max_size=5), spill=st.integers(1, 50),
       phase=st.sampled_from(["read", "merge", "manifest"]), n=st.integers(1, 20))
def test_merge_property_random_splits_and_kill_points(tmp_path_factory, monkeypatch, a, b, cuts_a,
                                                      cuts_b, spill, phase, n) -> None:
    """However the rows are split into chunks and spills, and wherever the ingest is killed, a
    rerun ends with the store one uninterrupted ingest of the same sources (unsplit) gives."""
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    fa, fb = _frame(a, syms), _frame(b, syms)
    fb = pd.concat([fb, fa.iloc[::2]], ignore_index=True)  # overlap: shared partitions
    clean = DataStore(tmp_path_factory.mktemp("clean"))
    _ingest_all(clean, [("A", fa, []), ("B", fb, [])], spill=10_000)
    expected = snapshot(clean.root, "p")

    def crash() -> None:
        raise SimulatedKill

    monkeypatch.setattr(store_mod, "_crash", crash)
    monkeypatch.setenv(KILL_ENV, f"{phase}:{n}")
    store_mod._kill_counts.clear()
    root = tmp_path_factory.mktemp("killed")
    killed = DataStore(root)
    plan = [("A", fa, cuts_a), ("B", fb, cuts_b)]
    try:
        _ingest_all(killed, plan, spill)
    except SimulatedKill:
        pass
    monkeypatch.delenv(KILL_ENV)
    _ingest_all(killed, plan, spill)
    assert_same(snapshot(root, "p"), expected)
