"""Tardis.dev CSV readers on hand-made files that follow the documented layouts."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.readers import tardis
from features.schema import DataError, validate

T0 = 1583020800000000  # 2020-03-01 00:00:00 UTC in microseconds


def _write(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _collect(chunks) -> dict[str, pd.DataFrame]:
    out: dict[str, list[pd.DataFrame]] = {}
    for c in chunks:
        out.setdefault(c.table, []).append(c.frame)
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


TRADES = (
    "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
    f"deribit,BTC-PERPETUAL,{T0 + 123000},{T0 + 200000},12345,buy,8600.5,10\n"
    f"deribit,BTC-PERPETUAL,{T0 + 1123456},{T0 + 1200000},12346,sell,8600,20\n"
    f"deribit,BTC-PERPETUAL,,{T0 + 2200001},12347,unknown,8601.25,5\n"
)


@pytest.mark.parametrize(
    "name",
    [
        "deribit_trades_2020-03-01_BTC-PERPETUAL.csv.gz",
        "deribit_trades_2020-03-01_BTC-PERPETUAL.csv",
    ],
    ids=["gzip", "plain"],
)
def test_trades_values_by_hand(tmp_path, name):
    path = _write(tmp_path / name, TRADES)
    assert tardis.sniff(path) == "tardis_trades"
    chunks = list(tardis.read_trades(path))
    assert [c.table for c in chunks] == ["trades"] and chunks[0].first_line == 2
    f = chunks[0].frame
    validate(f.drop(columns="trade_id"), "trades")
    assert f["ts"].tolist() == [
        pd.Timestamp("2020-03-01 00:00:00.123000", tz="UTC"),
        pd.Timestamp("2020-03-01 00:00:01.123456", tz="UTC"),
        pd.Timestamp("2020-03-01 00:00:02.200001", tz="UTC"),  # empty timestamp -> local one
    ]
    assert f["side"].tolist() == [1, -1, 0]
    assert f["price"].tolist() == [8600.5, 8600.0, 8601.25]
    assert f["size"].tolist() == [10.0, 20.0, 5.0]
    assert f["trade_id"].tolist() == [12345, 12346, 12347]
    assert set(f["symbol"]) == {"BTC-PERPETUAL"}


def test_trades_symbol_override_and_string_ids(tmp_path):
    text = TRADES.replace(",12345,", ",a1b2,").replace(",12346,", ",c3,")
    path = _write(tmp_path / "coinbase_trades_2020-03-01_BTC-USD.csv", text)
    f = _collect(tardis.read_trades(path, symbol="BTCUSD"))["trades"]
    assert "trade_id" not in f.columns  # non-integer ids are not kept
    assert set(f["symbol"]) == {"BTCUSD"}


def test_quotes_empty_side_is_nan(tmp_path):
    path = _write(
        tmp_path / "binance_quotes_2020-03-01_BTCUSDT.csv.gz",
        "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
        f"binance,BTCUSDT,{T0},{T0 + 5},1.5,8601.0,8600.0,2.5\n"
        f"binance,BTCUSDT,{T0 + 7},{T0 + 9},,,8600.5,0.1\n",
    )
    assert tardis.sniff(path) == "tardis_quotes"
    f = _collect(tardis.read_quotes(path))["quotes"]
    validate(f, "quotes")
    assert f.loc[0, ["bid_px", "bid_sz", "ask_px", "ask_sz"]].tolist() == [8600.0, 2.5, 8601.0, 1.5]
    assert np.isnan(f.loc[1, "ask_px"]) and f.loc[1, "bid_px"] == 8600.5
    assert f["ts"].iloc[1] == pd.Timestamp("2020-03-01 00:00:00.000007", tz="UTC")


BOOK = (
    "exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,bids[0].price,"
    "bids[0].amount,asks[1].price,asks[1].amount,bids[1].price,bids[1].amount\n"
    f"binance,BTCUSDT,{T0},{T0 + 1},101,1,100,2,102,3,99,4\n"
    f"binance,BTCUSDT,{T0 + 1000},{T0 + 1001},101,1.5,100,2,,,99,4\n"
    f"binance,BTCUSDT,{T0 + 2000},{T0 + 2001},100.5,1,100,2,101,2,99,4\n"
)


@pytest.mark.parametrize("chunk_rows", [1, 3, 4, 7, 1000])
def test_book_snapshot_long_format(tmp_path, chunk_rows):
    path = _write(tmp_path / "binance_book_snapshot_2_2020-03-01_BTCUSDT.csv.gz", BOOK)
    assert tardis.sniff(path) == "tardis_book"
    chunks = list(tardis.read_book(path, chunk_rows=chunk_rows))
    assert all(0 < len(c.frame) <= chunk_rows for c in chunks)
    f = pd.concat([c.frame for c in chunks], ignore_index=True)
    validate(f, "book")
    assert len(f) == 4 + 3 + 4  # the empty ask level 2 of the second snapshot is dropped
    first = f[f["ts"] == pd.Timestamp(T0 * 1000, tz="UTC")]
    assert list(zip(first["side"], first["level"], first["px"], first["sz"], strict=True)) == [
        (1, 0, 100.0, 2.0),  # level 0 = best
        (1, 1, 99.0, 4.0),
        (-1, 0, 101.0, 1.0),
        (-1, 1, 102.0, 3.0),
    ]
    second = f[f["ts"] == pd.Timestamp((T0 + 1000) * 1000, tz="UTC")]
    assert second[second["side"] == -1]["level"].tolist() == [0]


def test_book_levels_from_header():
    assert tardis.book_levels(tardis.book_columns(25)) == 25
    assert tardis.book_levels(tardis.TRADES_COLUMNS) == 0


def test_derivative_ticker_to_funding(tmp_path):
    path = _write(
        tmp_path / "binance-futures_derivative_ticker_2020-03-01_BTCUSDT.csv.gz",
        "exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,"
        "predicted_funding_rate,open_interest,last_price,index_price,mark_price\n"
        f"binance-futures,BTCUSDT,{T0},{T0 + 3},{T0 + 8 * 3600 * 10**6},0.0001,0.00012,"
        "34653.577,8600.1,8599.5,8600.2\n"
        f"binance-futures,BTCUSDT,{T0 + 1000000},{T0 + 1000003},,,,34660,8601,,8601.5\n",
    )
    assert tardis.sniff(path) == "tardis_derivative_ticker"
    chunks = list(tardis.read_derivative_ticker(path))
    assert {c.table for c in chunks} == {"funding"}
    f = chunks[0].frame
    validate(f, "funding")
    assert f.loc[0, ["funding_rate", "mark_px", "index_px", "open_interest"]].tolist() == [
        0.0001,
        8600.2,
        8599.5,
        34653.577,
    ]
    assert np.isnan(f.loc[1, "funding_rate"]) and np.isnan(f.loc[1, "index_px"])
    assert f.loc[1, "mark_px"] == 8601.5


def test_options_chain(tmp_path):
    exp = 1591689600000000  # 2020-06-09 08:00 UTC
    header = ",".join(tardis.OPTIONS_CHAIN_COLUMNS) + "\n"
    row = (
        f"deribit,BTC-9JUN20-9875-P,1591574399413000,1591574400196008,put,9875,{exp},10.5,"
        "0.01,0.0085,5,48.5,0.0095,7,52.1,0.009,50.25,BTC-9JUN20,9701.2,-0.4,0.001,5,-20,-1\n"
    )
    path = _write(
        tmp_path / "deribit_options_chain_2020-06-08_OPTIONS.csv.gz",
        header + row + row.replace("put", "call").replace("-P,", "-C,"),
    )
    assert tardis.sniff(path) == "tardis_options_chain"
    f = _collect(tardis.read_options_chain(path))["options"]
    validate(f, "options")
    r = f.iloc[0]
    assert r["symbol"] == "BTC-9JUN20-9875-P" and r["underlying"] == "BTC"
    assert r["option_type"] == "P" and f.iloc[1]["option_type"] == "C"
    assert r["expiry"] == pd.Timestamp("2020-06-09 08:00", tz="UTC")
    assert r["ts"] == pd.Timestamp("2020-06-07 23:59:59.413", tz="UTC")
    assert r["mark_iv"] == pytest.approx(0.5025, abs=1e-15)
    assert (r["bid_px"], r["ask_px"], r["mark_px"], r["underlying_px"], r["open_interest"]) == (
        0.0085,
        0.0095,
        0.009,
        9701.2,
        10.5,
    )


def test_sniff_other_files(tmp_path):
    liq = _write(tmp_path / "binance-futures_liquidations_2020-03-01_BTCUSDT.csv", TRADES)
    assert tardis.sniff(liq) is None
    other = _write(tmp_path / "x.csv", "a,b\n1,2\n")
    assert tardis.sniff(other) is None
    assert tardis.sniff(tmp_path / "x.parquet") is None


# ---- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_row", "match"),
    [
        (f"deribit,BTC-PERPETUAL,{T0},{T0},9,hold,8600,1\n", r"line 4, column 'side'.*'hold'"),
        (f"deribit,BTC-PERPETUAL,{T0},{T0},9,buy,abc,1\n", r"line 4, column 'price'.*'abc'"),
        (f"deribit,BTC-PERPETUAL,{T0},{T0},9,buy,8600,\n", r"line 4, column 'amount'.*empty"),
        (f"deribit,BTC-PERPETUAL,soon,{T0},9,buy,8600,1\n", r"line 4, column 'timestamp'.*'soon'"),
        (f"deribit,BTC-PERPETUAL,{T0},{T0},9,buy,8600,1,extra\n", r"line 4.*Expected 8 fields"),
    ],
    ids=["side", "price", "empty-amount", "timestamp", "field-count"],
)
def test_trades_malformed_names_file_line_column(tmp_path, bad_row, match):
    lines = TRADES.splitlines(keepends=True)
    path = _write(
        tmp_path / "deribit_trades_2020-03-01_BTC-PERPETUAL.csv.gz",
        "".join(lines[:3]) + bad_row + lines[3],
    )
    with pytest.raises(DataError, match=match) as info:
        list(tardis.read_trades(path, chunk_rows=2))
    assert "deribit_trades_2020-03-01_BTC-PERPETUAL.csv.gz" in str(info.value)


def test_wrong_header_and_bad_option_type(tmp_path):
    path = _write(tmp_path / "deribit_trades.csv", "exchange,symbol,timestamp,price\nx,y,1,2\n")
    with pytest.raises(DataError, match=r"line 1: not a Tardis trades file.*'local_timestamp'"):
        list(tardis.read_trades(path))
    with pytest.raises(DataError, match=r"no asks\[i\]\.price columns"):
        list(tardis.read_book(path))
    header = ",".join(tardis.OPTIONS_CHAIN_COLUMNS) + "\n"
    row = (
        f"deribit,BTC-9JUN20-9875-P,{T0},{T0},straddle,9875,{T0},1,1,1,1,1,1,1,1,1,50,"
        "BTC-9JUN20,9701,0,0,0,0,0\n"
    )
    path = _write(tmp_path / "deribit_options_chain.csv", header + row)
    with pytest.raises(DataError, match=r"line 2, column 'type'.*'straddle'"):
        list(tardis.read_options_chain(path))


def test_chunk_rows_must_be_positive(tmp_path):
    path = _write(tmp_path / "t.csv", TRADES)
    with pytest.raises(ValueError, match=r"'chunk_rows' parameter must be an integer >= 1\. Got 0"):
        list(tardis.read_trades(path, chunk_rows=0))


# ---- round trip --------------------------------------------------------------------------------

_row = st.tuples(
    st.integers(min_value=1_262_304_000_000_000, max_value=4_102_444_800_000_000),  # 2010..2100 us
    st.sampled_from(["BTC-PERPETUAL", "ETHUSDT", "XBTUSD"]),
    st.floats(min_value=1e-8, max_value=1e7, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-8, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.sampled_from([1, -1, 0]),
    st.integers(min_value=0, max_value=2**62),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(_row, min_size=1, max_size=40), chunk_rows=st.integers(1, 50))
def test_round_trip_canonical_to_tardis_csv(tmp_path, rows, chunk_rows):
    """canonical trades -> a Tardis trades CSV -> read -> the same frame, at any chunk size."""
    ts_us, sym, px, sz, side, tid = (list(x) for x in zip(*rows, strict=True))
    expected = pd.DataFrame(
        {
            "ts": pd.to_datetime(np.asarray(ts_us, dtype="int64") * 1000, utc=True).astype(
                "datetime64[ns, UTC]"
            ),
            "symbol": pd.Series(sym, dtype="str"),
            "price": np.asarray(px, dtype="float64"),
            "size": np.asarray(sz, dtype="float64"),
            "side": np.asarray(side, dtype="int8"),
            "trade_id": np.asarray(tid, dtype="int64"),
        }
    )
    names = {1: "buy", -1: "sell", 0: "unknown"}
    text = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n" + "".join(
        f"x,{s},{t},{t + 7},{i},{names[d]},{p!r},{q!r}\n"
        for t, s, p, q, d, i in zip(ts_us, sym, px, sz, side, tid, strict=True)
    )
    path = _write(tmp_path / "x_trades_2020-01-01_X.csv.gz", text)
    chunks = list(tardis.read_trades(path, chunk_rows=chunk_rows))
    assert all(len(c.frame) <= chunk_rows for c in chunks)
    got = pd.concat([c.frame for c in chunks], ignore_index=True)
    got["trade_id"] = got["trade_id"].astype("int64")
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
