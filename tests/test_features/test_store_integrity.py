"""Store integrity (issue 12): the commit protocol, validate's store checks and repair (item 1),
names and paths (item 6), counted drops (item 9), corrected re-ingests (item 10), empty inputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import schema as S
from features import store as store_mod
from features.errors import ConfigError, StoreError
from features.ingest import (
    ingest_file,
    ingest_frames,
    repair_dataset,
    validate_dataset,
    write_chunks,
)
from features.readers.base import Chunk
from features.store import (
    INDEX_DIR,
    JOURNAL,
    KILL_ENV,
    TXN_DIR,
    DataStore,
    StoreInconsistent,
    check_name,
    inside,
)
from features.validate import REJECT_RULES


def trades(n: int, symbol: str = "BTCUSDT", start: str = "2024-01-01", freq: str = "37min",
           px0: float = 100.0) -> pd.DataFrame:
    ts = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    return S.conform(pd.DataFrame({S.TS: ts, S.SYMBOL: symbol, S.PRICE: px0 + np.arange(n) * 0.01,
                                   S.SIZE: 1.0, S.SIDE: 1}), "trades")


def csv_source(path: Path, n: int = 100, empty_every: int | None = None) -> Path:
    ts = pd.date_range("2024-01-01", periods=n, freq="17min", tz="UTC")
    sym = np.array(["BTCUSDT"] * n, dtype=object)
    if empty_every:
        sym[::empty_every] = ""
    pd.DataFrame({"time": ts.strftime("%Y-%m-%d %H:%M:%S"), "sym": sym,
                  "px": np.round(np.linspace(100, 101, n), 4), "qty": 1.0, "qty2": 2.0,
                  "side": 1}).to_csv(path, index=False)
    return path


MAPPING = {"kind": "trades", "mapping": {"ts": "time", "symbol": "sym", "price": "px", "size": "qty"}}


def parts(store: DataStore, ds: str) -> dict[str, tuple[int, str]]:
    man = store.manifest(ds)
    return {rel: (m["rows"], m["digest"]) for t in man["tables"].values()
            for rel, m in t["partitions"].items()}


# ---- commit protocol ---------------------------------------------------------------------
class Killed(BaseException):
    pass


@pytest.fixture
def kill_in_process(monkeypatch):
    """Arm the kill hook so that it raises instead of SIGKILL (no cleanup runs, like a kill)."""

    def arm(point: str) -> None:
        def crash() -> None:
            raise Killed

        monkeypatch.setattr(store_mod, "_crash", crash)
        monkeypatch.setenv(KILL_ENV, point)
        store_mod._kill_counts.clear()

    yield arm
    store_mod._kill_counts.clear()


def test_kill_before_the_journal_rolls_back_and_leaves_no_dataset(tmp_path, kill_in_process) -> None:
    store = DataStore(tmp_path)
    kill_in_process("merge:2")
    with pytest.raises(Killed):
        ingest_frames(store, "ds", {"trades": ("trades", trades(200), None)}, source="t")
    assert (tmp_path / "ds" / TXN_DIR).is_dir() and not (tmp_path / "ds" / "manifest.json").exists()
    os.environ.pop(KILL_ENV)
    assert store.datasets() == []
    assert store.check("ds").recovered and not (tmp_path / "ds").exists()  # rolled back, folder gone


def test_kill_after_the_journal_rolls_forward_on_the_next_read(tmp_path, kill_in_process) -> None:
    clean = DataStore(tmp_path / "clean")
    ingest_frames(clean, "ds", {"trades": ("trades", trades(200), None)}, source="t")
    store = DataStore(tmp_path / "k")
    kill_in_process("manifest:4")  # after the journal and two renames
    with pytest.raises(Killed):
        ingest_frames(store, "ds", {"trades": ("trades", trades(200), None)}, source="t")
    os.environ.pop(KILL_ENV)
    ds = tmp_path / "k" / "ds"
    assert (ds / JOURNAL).exists() and not (ds / "manifest.json").exists()
    assert store.datasets() == ["ds"]  # listing finishes the commit
    assert not (ds / JOURNAL).exists() and not (ds / TXN_DIR).exists()
    assert parts(store, "ds") == parts(clean, "ds")
    again = ingest_frames(store, "ds", {"trades": ("trades", trades(200), None)}, source="t")
    assert again.skipped


def test_the_old_bug_unchanged_partitions_are_recorded(tmp_path) -> None:
    """A partition file left outside the manifest (as the old writer did) and equal to what the
    rerun would write is recorded by the rerun, not skipped."""
    store = DataStore(tmp_path)
    f = trades(200)
    clean = DataStore(tmp_path / "clean")
    ingest_frames(clean, "ds", {"trades": ("trades", f, None)}, source="t")
    shutil.copytree(tmp_path / "clean" / "ds" / "trades", tmp_path / "ds" / "trades")
    rep = ingest_frames(store, "ds", {"trades": ("trades", f, None)}, source="t")
    assert parts(store, "ds") == parts(clean, "ds")
    assert store.check("ds").ok and rep.tables["trades"].rows_out == 0


# ---- validate: orphaned, missing, stale; repair --------------------------------------------
@pytest.fixture
def damaged(tmp_path) -> tuple[DataStore, Path, dict]:
    store = DataStore(tmp_path / "store")
    src = csv_source(tmp_path / "t.csv", n=300)
    ingest_file(store, src, dataset="ds", fmt="generic", **MAPPING)
    clean = parts(store, "ds")
    d = tmp_path / "store" / "ds" / "trades" / "symbol=BTCUSDT"
    files = sorted(d.iterdir())
    assert len(files) >= 3
    files[0].unlink()  # missing
    pd.read_parquet(files[1]).iloc[:-1].to_parquet(files[1])  # stale (a row fewer)
    shutil.copy(files[2], d / "date=2030-01-01.parquet")  # orphan in the wrong place
    return store, src, clean


def test_validate_reports_orphaned_missing_and_stale(damaged) -> None:
    store, _, _ = damaged
    with pytest.raises(StoreInconsistent) as exc:
        validate_dataset(store, "ds")
    p = exc.value.problems
    assert isinstance(exc.value, StoreError)
    assert len(p.orphaned) == 1 and len(p.missing) == 1 and len(p.stale) == 1
    lines = p.lines()
    assert len(lines) == 3
    assert "1 orphaned" in lines[0] and "1 missing" in lines[1] and "1 stale" in lines[2]
    assert "rows" in lines[2]
    assert "run `dprm data repair ds`" in str(exc.value)
    assert json.loads(json.dumps(p.to_dict()))["missing"] == p.missing


def test_repair_rebuilds_from_files_and_reingests_missing(damaged) -> None:
    store, _, clean = damaged
    rep = repair_dataset(store, "ds")
    assert rep.ok, rep.lines()
    assert len(rep.rebuilt) == 1 and len(rep.removed) == 1 and len(rep.reingested) == 1
    assert rep.quarantined and "other partitions" in rep.quarantined[0]  # the misplaced copy
    text = "\n".join(rep.lines())
    assert "rebuilt the manifest from the files" in text and "re-ingested 1 source" in text
    assert store.check("ds").ok
    now = parts(store, "ds")
    assert set(now) == set(clean)  # the missing partition is back, the orphan is out
    restored = rep.removed[0]
    assert now[restored] == clean[restored]  # re-ingested: the same rows and bytes as before
    assert not (store.path("ds") / "trades" / "symbol=BTCUSDT" / "date=2030-01-01.parquet").exists()
    validate_dataset(store, "ds")  # no StoreError now


def test_repair_adopts_an_orphan_of_an_unknown_table_and_says_lost_when_the_file_is_gone(tmp_path) -> None:
    store = DataStore(tmp_path)
    src = csv_source(tmp_path / "t.csv", n=200)
    ingest_file(store, src, dataset="ds", fmt="generic", **MAPPING)
    # an orphaned table the manifest never heard of (an older writer killed on a new table)
    b = S.conform(pd.DataFrame({S.TS: pd.date_range("2024-01-01 00:01", periods=5, freq="1min", tz="UTC"),
                                S.SYMBOL: "ETHUSDT", S.OPEN: 1.0, S.HIGH: 1.0, S.LOW: 1.0,
                                S.CLOSE: 1.0}), "bars")
    p = tmp_path / "ds" / "bars_1m" / "symbol=ETHUSDT" / "date=2024-01-01.parquet"
    p.parent.mkdir(parents=True)
    b.to_parquet(p)
    victim = sorted((tmp_path / "ds" / "trades" / "symbol=BTCUSDT").iterdir())[0]
    victim.unlink()
    src.unlink()  # and the source of the missing partition is gone
    rep = repair_dataset(store, "ds")
    assert rep.adopted == ["bars_1m/symbol=ETHUSDT/date=2024-01-01.parquet"]
    man = store.manifest("ds")
    assert man["tables"]["bars_1m"]["kind"] == "bars"
    assert man["tables"]["bars_1m"]["interval"] == str(pd.Timedelta("1min"))
    assert not rep.ok and rep.lost and "not available" in rep.lost[0]
    assert store.check("ds").ok  # consistent, though rows were lost (and said so)


def test_reading_a_missing_partition_is_a_store_error(tmp_path) -> None:
    store = DataStore(tmp_path)
    ingest_frames(store, "ds", {"trades": ("trades", trades(100), None)}, source="t")
    next((tmp_path / "ds" / "trades").rglob("*.parquet")).unlink()
    with pytest.raises(StoreError, match="missing.*dprm data repair ds"):
        store.read("ds", "trades")


# ---- item 6: names and paths ---------------------------------------------------------------
@pytest.mark.parametrize("value", ["", " ", ".", "..", "a/b", "../x", "a\\b", "a\x00b", "a\nb",
                                   "a\tb", ".txn", ".locks", "manifest.json"])
@pytest.mark.parametrize("field", ["dataset", "table", "symbol"])
def test_one_name_rule_rejects(field: str, value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_name(field, value)
    msg = str(exc.value)
    assert f"invalid {field} name {value!r}" in msg and "path separator" in msg


@pytest.mark.parametrize("value", ["BTCUSDT", "BTCUSD_PERP", "BTC-29MAR24-60000-C", "SPX", "a b",
                                   ".SPX", "bars_1m", "ETH=USD"])
def test_one_name_rule_accepts(value: str) -> None:
    assert check_name("symbol", value) == value


def test_dataset_dotdot_writes_nothing_outside_the_store(tmp_path) -> None:
    """The issue's cases: --dataset .. (a manifest at the workspace root), --dataset . (a dataset
    `data list` cannot see), table = '..' (a parquet file beside DPRM_HOME)."""
    home = tmp_path / "home"
    store = DataStore(home / "data")
    src = csv_source(tmp_path / "t.csv")
    for ds in ("..", ".", "a/../..", ""):
        with pytest.raises(ConfigError, match="invalid dataset name"):
            ingest_file(store, src, dataset=ds, fmt="generic", **MAPPING)
    with pytest.raises(ConfigError, match=r"invalid table name '\.\.'"):
        ingest_file(store, src, dataset="ok", fmt="generic", **{**MAPPING, "table": ".."})
    with pytest.raises(ConfigError, match=r"invalid symbol name '\.\./evil'"):
        ingest_file(store, src, dataset="ok", fmt="generic", **{**MAPPING, "symbol": "../evil"})
    with pytest.raises(ConfigError, match="invalid dataset name"):
        ingest_frames(store, "..", {"trades": ("trades", trades(3), None)}, source="t")
    written = [p for p in tmp_path.rglob("*") if p.is_file() and ".locks" not in p.parts]
    assert sorted(p.name for p in written) == ["t.csv"]
    assert not (home / "manifest.json").exists() and not (tmp_path / "manifest.json").exists()


def test_symbol_and_table_values_in_the_data_follow_the_rule(tmp_path) -> None:
    store = DataStore(tmp_path)
    bad = trades(3).assign(**{S.SYMBOL: ".."})
    with pytest.raises(ConfigError, match=r"invalid symbol name '\.\.'"):
        ingest_frames(store, "ds", {"trades": ("trades", bad, None)}, source="t")
    with pytest.raises(ConfigError, match="invalid symbol name 'a/b'"):
        ingest_frames(store, "ds", {"trades": ("trades", trades(3).assign(**{S.SYMBOL: "a/b"}), None)},
                      source="t")
    with pytest.raises(ConfigError, match=r"invalid table name '\.\.'"):
        write_chunks(store, "ds", [Chunk("..", "trades", trades(3), "x")], source="x", fingerprint="f")
    assert store.datasets() == []


def test_every_store_path_is_checked_to_stay_inside(tmp_path) -> None:
    store = DataStore(tmp_path / "data")
    with pytest.raises(ConfigError, match="outside the data store"):
        inside(tmp_path / "data", tmp_path / "data" / ".." / "x")
    with pytest.raises(ConfigError, match="outside the data store"):
        store.file("ds", "../../x.parquet")
    # a dataset folder that is a symlink to somewhere else is refused too
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="outside the data store"):
        store.path("link")
    # a tampered journal cannot move files from or to outside the dataset
    (tmp_path / "data" / "ds").mkdir()
    with pytest.raises(ConfigError, match="outside"):
        store._apply_journal("ds", {"id": "x", "renames": [["../../evil", "trades/x.parquet"]],
                                    "deletes": [], "manifest": {}})


# ---- item 9: every dropped row counted -----------------------------------------------------
def test_empty_symbols_are_counted_and_rows_out_is_true(tmp_path) -> None:
    store = DataStore(tmp_path / "s")
    src = csv_source(tmp_path / "t.csv", n=100, empty_every=7)  # 15 of 100 empty
    rep = ingest_file(store, src, dataset="ds", fmt="generic", **MAPPING)
    c = rep.tables["trades"]
    assert c.rows_in == 100 and c.counts["empty_symbol"] == 15 and c.rows_out == 85
    assert rep.rows_added == 85 and len(store.read("ds", "trades")) == 85
    rec = next(iter(store.manifest("ds")["sources"].values()))
    assert rec["tables"]["trades"]["rows_out"] == 85
    assert set(store.manifest("ds")["tables"]["trades"]["symbols"]) == {"BTCUSDT"}
    v = validate_dataset(store, "ds")["trades"]
    assert v.counts["empty_symbol"] == 15 and v.rows_out == 85


def test_every_row_is_stored_or_counted_under_a_rule(tmp_path) -> None:
    """rows_in = rows_out + every rejecting rule's count, for each kind of drop at once."""
    f = trades(60)
    f.loc[3, S.PRICE] = -1.0  # non_positive
    f.loc[4, S.PRICE] = np.inf  # non_finite
    f.loc[5, S.SYMBOL] = None  # empty_symbol
    f.loc[6, S.TS] = pd.NaT  # missing_ts
    dup = f.iloc[[10, 11]]
    store = DataStore(tmp_path)
    chunks = [Chunk("trades", "trades", f, "x"), Chunk("trades", "trades", dup.reset_index(drop=True), "x")]
    rep = write_chunks(store, "ds", chunks, source="x", fingerprint="1")
    c = rep.tables["trades"]
    dropped = sum(c.counts.get(r, 0) for r in REJECT_RULES)
    assert c.rows_in == 62 and c.rows_out + dropped == c.rows_in
    assert {r: c.counts.get(r, 0) for r in ("non_positive", "non_finite", "empty_symbol", "missing_ts")} \
        == {"non_positive": 1, "non_finite": 1, "empty_symbol": 1, "missing_ts": 1}
    # id-less ticks: identical rows within one source are distinct events, kept
    assert c.rows_out == len(store.read("ds", "trades")) == 58
    bars = S.conform(pd.DataFrame({S.TS: pd.date_range("2024-01-01", periods=4, freq="1D", tz="UTC"),
                                   S.SYMBOL: "SPX", S.OPEN: 1.0, S.HIGH: 1.0, S.LOW: 1.0,
                                   S.CLOSE: [1.0, 2.0, 3.0, 4.0]}), "bars")
    conflict = bars.iloc[[1]].assign(**{S.CLOSE: 9.0})
    rep = write_chunks(store, "b", [Chunk("bars_1d", "bars", pd.concat([bars, bars.iloc[[0]], conflict],
                                                                         ignore_index=True), "y",
                                          interval=pd.Timedelta("1D"))],
                       source="y", fingerprint="2")
    c = rep.tables["bars_1d"]
    assert (c.counts["duplicates"], c.counts["key_conflicts"]) == (1, 1)
    assert c.rows_in == c.rows_out + 2 and c.rows_out == 4


# ---- item 10: a corrected re-ingest replaces ---------------------------------------------------
def test_corrected_symbol_replaces_the_old_rows(tmp_path) -> None:
    store = DataStore(tmp_path / "s")
    src = csv_source(tmp_path / "t.csv")
    m = {"kind": "trades", "mapping": {"ts": "time", "price": "px", "size": "qty"}}
    ingest_file(store, src, dataset="ds", fmt="generic", symbol="WRONG", **m)
    assert ingest_file(store, src, dataset="ds", fmt="generic", symbol="WRONG", **m).skipped
    rep = ingest_file(store, src, dataset="ds", fmt="generic", symbol="BTCUSDT", **m)
    assert not rep.skipped and rep.rows_removed == 100 and rep.rows_added == 100
    assert rep.replaced and rep.replaced[0]["options"]["symbol"] == "WRONG"
    back = store.read("ds", "trades")
    assert set(back[S.SYMBOL]) == {"BTCUSDT"} and len(back) == 100
    man = store.manifest("ds")
    assert len(man["sources"]) == 1 and set(man["tables"]["trades"]["symbols"]) == {"BTCUSDT"}
    assert not list((tmp_path / "s" / "ds" / "trades").glob("symbol=WRONG"))
    assert store.check("ds").ok


def test_corrected_mapping_replaces_not_merges(tmp_path) -> None:
    store = DataStore(tmp_path / "s")
    src = csv_source(tmp_path / "t.csv")
    ingest_file(store, src, dataset="ds", fmt="generic", **MAPPING)
    fixed = {"kind": "trades", "mapping": {**MAPPING["mapping"], "size": "qty2"}}
    rep = ingest_file(store, src, dataset="ds", fmt="generic", **fixed)
    back = store.read("ds", "trades")
    assert len(back) == 100 and set(back[S.SIZE]) == {2.0}  # no row of the old mapping left
    assert rep.rows_removed == 100
    # the same bytes into another dataset are another source: not a replacement there
    other = ingest_file(store, src, dataset="ds2", fmt="generic", **MAPPING)
    assert not other.skipped and not other.replaced and len(store.read("ds", "trades")) == 100


def test_corrected_format_replaces(tmp_path) -> None:
    """The same parquet read as daily OHLCV (detected) and then through a generic mapping."""
    p = tmp_path / "btcusd_1d.parquet"
    pd.DataFrame({"date": pd.date_range("2024-01-01", periods=5, freq="1D"), "open": 1.0, "high": 2.0,
                  "low": 0.5, "close": [1.0, 1.1, 1.2, 1.3, 1.4]}).to_parquet(p)
    store = DataStore(tmp_path / "s")
    first = ingest_file(store, p, dataset="ds")
    assert first.fmt == "daily_ohlcv_parquet" and store.read("ds", "bars_1d")[S.SYMBOL].iloc[0] == "BTCUSD"
    rep = ingest_file(store, p, dataset="ds", fmt="generic", kind="bars", table="bars_1d",
                      symbol="BTCUSD", mapping={"ts": "date"}, interval="1D")
    assert rep.replaced and rep.rows_removed == 5
    back = store.read("ds", "bars_1d")
    assert len(back) == 5 and back[S.TS].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")


def test_replacing_keeps_rows_other_sources_supplied(tmp_path) -> None:
    """A partition two sources wrote: replacing one keeps the other's rows, shared ones included."""
    a, b = trades(40), trades(40, start="2024-01-01 12:00")
    store = DataStore(tmp_path)
    write_chunks(store, "ds", [Chunk("trades", "trades", a, "a")], source="a", fingerprint="A")
    write_chunks(store, "ds", [Chunk("trades", "trades", pd.concat([b, a.iloc[:5]], ignore_index=True),
                                     "b")], source="b", fingerprint="B")
    assert list((tmp_path / "ds" / INDEX_DIR).rglob("*.parquet"))
    both = store.read("ds", "trades")
    rep = write_chunks(store, "ds", [Chunk("trades", "trades", a.iloc[20:], "a")], source="a",
                       fingerprint="A", options={"corrected": True})
    assert rep.replaced
    expected = pd.concat([a.iloc[:5], a.iloc[20:], b]).drop_duplicates()
    back = store.read("ds", "trades")
    assert len(back) == len(expected) < len(both)
    merged = back.merge(expected, how="outer", indicator=True)
    assert (merged["_merge"] == "both").all()
    assert store.check("ds").ok


# ---- empty inputs -----------------------------------------------------------------------------
def test_empty_and_header_only_files_store_nothing(tmp_path) -> None:
    store = DataStore(tmp_path / "s")
    (tmp_path / "zero.csv").write_text("")
    (tmp_path / "header.csv").write_text("time,sym,px,qty,side\n")
    pd.DataFrame({"date": pd.Series(dtype="datetime64[ns]"), "open": [], "high": [], "low": [],
                  "close": []}).to_parquet(tmp_path / "x_1d.parquet")
    for name, kw in (("zero.csv", {"fmt": "generic", **MAPPING}), ("header.csv", {"fmt": "generic", **MAPPING}),
                     ("x_1d.parquet", {})):
        rep = ingest_file(store, tmp_path / name, dataset="e", **kw)
        assert rep.empty and rep.rows_added == 0, name
    assert store.datasets() == [] and not (tmp_path / "s" / "e").exists()
    # into an existing dataset: nothing recorded either
    ingest_frames(store, "e", {"trades": ("trades", trades(3), None)}, source="t")
    before = store.manifest("e")
    assert ingest_file(store, tmp_path / "header.csv", dataset="e", fmt="generic", **MAPPING).empty
    assert store.manifest("e")["sources"].keys() == before["sources"].keys()


def test_all_rows_rejected_creates_no_dataset(tmp_path) -> None:
    store = DataStore(tmp_path)
    bad = trades(5).assign(**{S.PRICE: -1.0})
    rep = ingest_frames(store, "ds", {"trades": ("trades", bad, None)}, source="t")
    assert rep.empty and rep.tables["trades"].counts["non_positive"] == 5
    assert store.datasets() == [] and not (tmp_path / "ds").exists()


def test_repair_rebuilds_a_manifest_that_is_gone(tmp_path) -> None:
    """What the old writer left when killed on a new dataset: partition files and no manifest."""
    clean = DataStore(tmp_path / "clean")
    ingest_frames(clean, "ds", {"trades": ("trades", trades(200), None)}, source="t")
    shutil.copytree(tmp_path / "clean" / "ds" / "trades", tmp_path / "s" / "ds" / "trades")
    store = DataStore(tmp_path / "s")
    assert store.datasets() == []
    rep = repair_dataset(store, "ds")
    assert len(rep.adopted) == len(parts(clean, "ds")) and rep.ok
    assert parts(store, "ds") == parts(clean, "ds")
    pd.testing.assert_frame_equal(store.read("ds", "trades"), clean.read("ds", "trades"))
