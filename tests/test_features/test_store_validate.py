"""The partitioned store, the cleaning rules and their report."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import schema as S
from features.ingest import ingest_frames, validate_dataset, write_chunks
from features.readers.base import Chunk
from features.store import DataStore, partition_period
from features.validate import (
    RuleCounts,
    count_out_of_order,
    find_gaps,
    flag_bars,
    flag_outliers,
    flag_quotes,
    reject_invalid,
    sort_dedupe,
)


def trades(ts: list[str], prices: list[float], sizes: list[float] | None = None,
           symbol: str = "BTCUSDT") -> pd.DataFrame:
    n = len(ts)
    return S.conform(pd.DataFrame({
        S.TS: pd.to_datetime(ts, utc=True), S.SYMBOL: [symbol] * n, S.PRICE: prices,
        S.SIZE: sizes if sizes is not None else [1.0] * n, S.SIDE: [1] * n,
    }), "trades")


def bars(ts: list[str], close: list[float], symbol: str = "BTCUSDT") -> pd.DataFrame:
    c = np.asarray(close, dtype=float)
    return S.conform(pd.DataFrame({
        S.TS: pd.to_datetime(ts, utc=True), S.SYMBOL: symbol, S.OPEN: c, S.HIGH: c * 1.01,
        S.LOW: c * 0.99, S.CLOSE: c, S.VOLUME: 1.0,
    }), "bars")


# ---- schema -------------------------------------------------------------------------------
def test_conform_names_missing_column() -> None:
    with pytest.raises(S.DataError, match=r"missing required column\(s\) \['size'\]"):
        S.conform(pd.DataFrame({S.TS: [1], S.SYMBOL: ["X"], S.PRICE: [1.0], S.SIDE: [1]}), "trades")


def test_conform_names_uncastable_value() -> None:
    f = pd.DataFrame({S.TS: pd.to_datetime(["2024-01-01"], utc=True), S.SYMBOL: ["X"],
                      S.PRICE: ["abc"], S.SIZE: [1.0], S.SIDE: [1]})
    with pytest.raises(S.DataError, match=r"column 'price'.*'abc'"):
        S.conform(f, "trades", source="f.csv")


def test_validate_rejects_wrong_dtype_and_unknown_kind() -> None:
    f = trades(["2024-01-01"], [1.0])
    S.validate_trades(f)
    with pytest.raises(S.DataError, match="column 'price' has dtype object; expected float64"):
        S.validate_trades(f.assign(price=f[S.PRICE].astype(object)))
    with pytest.raises(S.DataError, match="unknown table kind 'tick'"):
        S.spec("tick")


@pytest.mark.parametrize(("values", "unit"), [(1_700_000_000, "s"), (1_700_000_000_000, "ms"),
                                              (1_700_000_000_000_000, "us"), (1_700_000_000_000_000_000, "ns")])
def test_epoch_units(values: int, unit: str) -> None:
    assert S.infer_epoch_unit(pd.Series([values])) == unit
    assert S.to_utc_ns(pd.Series([values]))[0] == pd.Timestamp("2023-11-14 22:13:20", tz="UTC")


# ---- rules --------------------------------------------------------------------------------
def test_reject_rules_count_each_problem() -> None:
    f = trades(["2024-01-01 00:00", "2024-01-01 00:01", "2024-01-01 00:02", "2024-01-01 00:03"],
               [100.0, -1.0, np.inf, 101.0], [1.0, 1.0, 1.0, 0.0])
    c = RuleCounts()
    out = reject_invalid(f, "trades", c)
    assert out[S.PRICE].tolist() == [100.0]
    assert c.counts == {"non_positive": 2, "non_finite": 1}  # price -1, size 0; price inf
    assert "price=-1.0" in c.examples["non_positive"][0]


def test_out_of_order_carries_across_chunks() -> None:
    last: dict[str, int] = {}
    c = RuleCounts()
    count_out_of_order(trades(["2024-01-01 00:00", "2024-01-01 00:05"], [1.0, 1.0]), last, c)
    count_out_of_order(trades(["2024-01-01 00:03", "2024-01-01 00:06", "2024-01-01 00:04"],
                              [1.0, 1.0, 1.0]), last, c)
    assert c.counts["out_of_order"] == 2


def test_sort_dedupe_drops_exact_duplicates_and_key_conflicts() -> None:
    b = bars(["2024-01-02", "2024-01-01", "2024-01-01", "2024-01-02"], [2.0, 1.0, 1.0, 3.0])
    c = RuleCounts()
    out = sort_dedupe(b, "bars", c)
    assert c.counts["duplicates"] == 1 and c.counts["key_conflicts"] == 1
    assert out[S.CLOSE].tolist() == [1.0, 3.0]  # last value wins on a key conflict
    assert out[S.TS].is_monotonic_increasing


def test_crossed_locked_quotes_and_bad_bars() -> None:
    q = S.conform(pd.DataFrame({S.TS: pd.to_datetime(["2024-01-01"] * 3, utc=True), S.SYMBOL: "X",
                                S.BID_PX: [1.0, 2.0, 2.0], S.BID_SZ: 1.0, S.ASK_PX: [1.1, 2.0, 1.9],
                                S.ASK_SZ: 1.0}), "quotes")
    c = RuleCounts()
    flag_quotes(q, c)
    assert (c.counts["crossed"], c.counts["locked"]) == (1, 1)
    b = bars(["2024-01-01", "2024-01-02"], [1.0, 1.0])
    b.loc[1, S.HIGH] = 0.5
    flag_bars(b, c)
    assert c.counts["ohlc_inconsistent"] == 1


def test_outlier_is_a_reverting_spike_not_a_level_shift(rng: np.random.Generator) -> None:
    n = 400
    logp = np.cumsum(rng.normal(0, 1e-4, n)) + np.log(100.0)
    p = np.exp(logp)
    p[200] *= 1.05  # spike that reverts
    p[300:] *= 1.05  # a genuine level shift: not an outlier
    ts = pd.date_range("2024-01-01", periods=n, freq="s", tz="UTC").astype(str).tolist()
    c = RuleCounts()
    mask = flag_outliers(trades(ts, p.tolist()), S.PRICE, c)
    assert np.flatnonzero(mask).tolist() == [200]


def test_gaps_in_bars_and_on_exchange_calendars() -> None:
    ts = [*pd.date_range("2024-01-01 00:01", periods=5, freq="1min", tz="UTC"),
          *pd.date_range("2024-01-01 00:10", periods=2, freq="1min", tz="UTC")]
    c = RuleCounts()
    find_gaps(bars([str(t) for t in ts], [1.0] * 7), "bars", pd.Timedelta("1min"), c)
    assert c.counts["gaps"] == 1 and c.gaps[0]["missing_periods"] == 4
    # a daily index over a weekend is not a gap; a week-long hole is
    c2 = RuleCounts()
    days = ["2024-01-05 21:00", "2024-01-08 21:00", "2024-01-16 21:00"]
    find_gaps(bars(days, [1.0] * 3, symbol="SPX"), "bars", pd.Timedelta("1D"), c2)
    assert c2.counts["gaps"] == 1 and c2.gaps[0]["after"].startswith("2024-01-08")


# ---- store --------------------------------------------------------------------------------
def test_partition_periods() -> None:
    assert partition_period("trades", None) == "D"
    assert partition_period("bars", pd.Timedelta("1min")) == "M"
    assert partition_period("bars", pd.Timedelta("1D")) == "Y"


def test_store_roundtrip_is_idempotent_and_partitioned(tmp_path) -> None:
    store = DataStore(tmp_path)
    f = trades(["2024-01-01 23:59:59", "2024-01-02 00:00:01", "2024-01-01 12:00:00"], [1.0, 2.0, 3.0])
    rep = ingest_frames(store, "ds", {"trades": ("trades", f, None)}, source="test")
    assert rep.rows_added == 3 and rep.partitions_written == 2
    files = sorted(p.name for p in (tmp_path / "ds" / "trades" / "symbol=BTCUSDT").iterdir())
    assert files == ["date=2024-01-01.parquet", "date=2024-01-02.parquet"]
    back = store.read("ds", "trades")
    pd.testing.assert_frame_equal(back, f.sort_values(S.TS, kind="stable").reset_index(drop=True))
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*.parquet")}
    again = ingest_frames(store, "ds", {"trades": ("trades", f, None)}, source="test")
    assert again.skipped and again.rows_added == 0
    forced = ingest_frames(store, "ds", {"trades": ("trades", f, None)}, source="test", force=True)
    assert forced.rows_added == 0 and forced.partitions_written == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*.parquet")} == mtimes
    assert store.read("ds", "trades", start="2024-01-02").shape[0] == 1
    with pytest.raises(S.DataError, match="dataset 'nope' not found"):
        store.read("nope", "trades")
    with pytest.raises(S.DataError, match="table 'quotes' not found in dataset 'ds'"):
        store.read("ds", "quotes")


def test_spilling_keeps_the_same_result(tmp_path) -> None:
    ts = pd.date_range("2024-01-01", periods=50, freq="37min", tz="UTC")
    f = trades([str(t) for t in ts], list(np.linspace(1, 2, 50)))
    chunks = [Chunk("trades", "trades", f.iloc[i:i + 7].reset_index(drop=True), "x") for i in range(0, 50, 7)]
    a, b = DataStore(tmp_path / "a"), DataStore(tmp_path / "b")
    write_chunks(a, "ds", chunks, source="x", fingerprint="1", spill_rows=5)
    write_chunks(b, "ds", chunks, source="x", fingerprint="1", spill_rows=10_000)
    pd.testing.assert_frame_equal(a.read("ds", "trades"), b.read("ds", "trades"))
    assert a.fingerprint("ds") == b.fingerprint("ds")


def test_no_temporary_files_left_and_manifest_is_json(tmp_path) -> None:
    store = DataStore(tmp_path)
    ingest_frames(store, "ds", {"bars_1m": ("bars", bars(["2024-01-01 00:01"], [1.0]),
                                            pd.Timedelta("1min"))}, source="t")
    assert not [p for p in tmp_path.rglob("*.tmp")]
    man = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert man["tables"]["bars_1m"]["interval"] == "0 days 00:01:00"
    assert man["tables"]["bars_1m"]["symbols"]["BTCUSDT"]["annualization"] == 365


def test_validate_dataset_report(tmp_path) -> None:
    store = DataStore(tmp_path)
    ts = [*pd.date_range("2024-01-01 00:01", periods=5, freq="1min", tz="UTC"),
          pd.Timestamp("2024-01-01 00:09", tz="UTC")]
    b = bars([str(t) for t in ts], [1.0, 1.0, -1.0, 1.0, 1.0, 1.0])
    ingest_frames(store, "ds", {"bars_1m": ("bars", b, pd.Timedelta("1min"))}, source="t")
    res = validate_dataset(store, "ds")
    c = res["bars_1m"]
    # the rejected 00:03 bar leaves a hole too: 00:02->00:04 and 00:05->00:09
    assert c.counts["non_positive"] == 1 and c.counts["gaps"] == 2 and c.rows_out == 5
    rep = json.loads((tmp_path / "ds" / "validation.json").read_text())
    assert rep["tables"]["bars_1m"]["counts"]["gaps"] == 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 5 * 86_400), st.floats(0.01, 1e6), st.floats(1e-6, 1e3),
                          st.sampled_from([-1, 0, 1])), min_size=1, max_size=60))
def test_store_round_trip_property(tmp_path_factory, rows) -> None:
    """write -> read gives the sorted input (identical id-less ticks kept), whatever the partitions."""
    tmp = tmp_path_factory.mktemp("rt")
    secs, px, sz, side = zip(*rows, strict=True)
    f = S.conform(pd.DataFrame({
        S.TS: pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(np.array(secs) * 1001, unit="ms"),
        S.SYMBOL: "ETHUSDT", S.PRICE: px, S.SIZE: sz, S.SIDE: side}), "trades")
    store = DataStore(tmp)
    ingest_frames(store, "p", {"trades": ("trades", f, None)}, source="h")
    expected = f.sort_values([S.TS, S.SYMBOL], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(store.read("p", "trades"), expected)


def test_source_file_is_never_modified(tmp_path) -> None:
    """Ingest reads the raw file only (content and mtime unchanged)."""
    from features.store import file_fingerprint

    src = tmp_path / "raw.parquet"
    trades(["2024-01-01"], [1.0]).to_parquet(src)
    os.chmod(src, 0o444)
    before = (file_fingerprint(src), src.stat().st_mtime_ns)
    store = DataStore(tmp_path / "store")
    ingest_frames(store, "ds", {"trades": ("trades", pd.read_parquet(src), None)}, source=str(src))
    assert (file_fingerprint(src), src.stat().st_mtime_ns) == before


def test_identical_ticks_without_ids_are_kept_but_never_added_twice(tmp_path) -> None:
    """Two same-size fills at the same instant are two events; re-ingesting adds nothing."""
    f = trades(["2024-01-01 00:00:01", "2024-01-01 00:00:01", "2024-01-01 00:00:02"], [1.0, 1.0, 2.0])
    store = DataStore(tmp_path)
    rep = ingest_frames(store, "ds", {"trades": ("trades", f, None)}, source="t")
    assert rep.rows_added == 3 and len(store.read("ds", "trades")) == 3
    again = ingest_frames(store, "ds", {"trades": ("trades", f, None)}, source="t", force=True)
    assert again.rows_added == 0 and again.tables["trades"].counts["duplicates"] == 3
    more = ingest_frames(store, "ds", {"trades": ("trades", pd.concat([f, f.iloc[:1]]), None)},
                         source="t2")
    assert more.rows_added == 1 and len(store.read("ds", "trades")) == 4
    # with trade ids, exact duplicates are dropped
    g = f.assign(trade_id=pd.array([7, 7, 8], dtype="Int64"))
    ingest_frames(store, "ids", {"trades": ("trades", g, None)}, source="g")
    assert len(store.read("ids", "trades")) == 2
