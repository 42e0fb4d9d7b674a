"""The generic mapped reader and the daily OHLCV parquet format."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from features.readers import generic
from features.schema import DataError, validate


def _one(chunks) -> pd.DataFrame:
    return pd.concat([c.frame for c in chunks], ignore_index=True)


CSV = (
    "time,px,qty,aggressor\n"
    "1704067200000,42000.5,0.25,1\n"
    "1704067200500,42001,1.5,-1\n"
    "1704067201250,41999.75,3,0\n"
)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_csv_with_mapping_and_constant_symbol(tmp_path, gz):
    path = tmp_path / ("t.csv.gz" if gz else "t.csv")
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(CSV)
    else:
        path.write_text(CSV)
    assert generic.sniff(path) is None  # only used when asked for
    chunks = list(
        generic.read_generic(
            path,
            kind="trades",
            symbol="BTCUSDT",
            chunk_rows=2,
            mapping={"ts": "time", "price": "px", "size": "qty", "side": "aggressor"},
        )
    )
    assert [len(c.frame) for c in chunks] == [2, 1]
    assert [c.first_line for c in chunks] == [2, 4]
    assert {c.table for c in chunks} == {"trades"}
    f = _one(chunks)
    validate(f, "trades")
    assert f["ts"].tolist() == [
        pd.Timestamp("2024-01-01 00:00:00", tz="UTC"),
        pd.Timestamp("2024-01-01 00:00:00.5", tz="UTC"),
        pd.Timestamp("2024-01-01 00:00:01.25", tz="UTC"),
    ]
    assert f["price"].tolist() == [42000.5, 42001.0, 41999.75]
    assert f["side"].tolist() == [1, -1, 0] and str(f["side"].dtype) == "int8"
    assert set(f["symbol"]) == {"BTCUSDT"}


@pytest.mark.parametrize(("unit", "scale"), [("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)])
def test_epoch_units(tmp_path, unit, scale):
    path = tmp_path / "levels.csv"
    path.write_text(f"t,v\n{1704067200 * scale},1.5\n{1704070800 * scale},2.5\n")
    f = _one(
        generic.read_generic(
            path, kind="levels", symbol="X", ts_unit=unit, mapping={"ts": "t", "close": "v"}
        )
    )
    assert f["ts"].tolist() == [
        pd.Timestamp("2024-01-01 00:00", tz="UTC"),
        pd.Timestamp("2024-01-01 01:00", tz="UTC"),
    ]
    inferred = _one(
        generic.read_generic(path, kind="levels", symbol="X", mapping={"ts": "t", "close": "v"})
    )
    pd.testing.assert_frame_equal(inferred, f)


def test_local_times_and_open_stamped_bars(tmp_path):
    path = tmp_path / "bars.csv"
    path.write_text(
        "Date,Sym,O,H,L,C,V\n"
        "2024-01-02 09:30:00,AAPL,10,11,9,10.5,100\n"
        "2024-07-01 15:59:00,AAPL,10,12,9,11,200\n"
    )
    chunks = list(
        generic.read_generic(
            path,
            kind="bars",
            table="bars_1m",
            tz="America/New_York",
            ts_is_open=True,
            interval="1min",
            mapping={
                "ts": "Date",
                "symbol": "Sym",
                "open": "O",
                "high": "H",
                "low": "L",
                "close": "C",
                "volume": "V",
            },
        )
    )
    assert chunks[0].table == "bars_1m" and chunks[0].interval == pd.Timedelta("1min")
    f = _one(chunks)
    validate(f, "bars")
    # 09:30 EST (UTC-5) open -> 09:31 close = 14:31 UTC; 15:59 EDT (UTC-4) -> 16:00 = 20:00 UTC
    assert f["ts"].tolist() == [
        pd.Timestamp("2024-01-02 14:31", tz="UTC"),
        pd.Timestamp("2024-07-01 20:00", tz="UTC"),
    ]
    assert f["volume"].tolist() == [100.0, 200.0]


def test_parquet_with_canonical_names_and_aware_times(tmp_path):
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2024-01-01 01:00", "2024-01-01 02:00"]).tz_localize(
                "Europe/Berlin"
            ),
            "symbol": ["A", "B"],
            "close": [1.0, 2.0],
            "extra": [0, 0],
        }
    )
    path = tmp_path / "levels.parquet"
    frame.to_parquet(path)
    f = _one(generic.read_generic(path, kind="levels", chunk_rows=1))
    validate(f, "levels")
    assert f["ts"].tolist() == [
        pd.Timestamp("2024-01-01 00:00", tz="UTC"),
        pd.Timestamp("2024-01-01 01:00", tz="UTC"),
    ]
    assert f["symbol"].tolist() == ["A", "B"]


def test_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    mapping = {"ts": "time", "price": "px", "size": "qty", "side": "aggressor"}
    with pytest.raises(
        DataError,
        match=r"mapped column\(s\) \[\"size -> 'amount'\"\] not in the "
        r"file; the file has columns \['time', 'px', 'qty', "
        r"'aggressor'\]",
    ):
        list(
            generic.read_generic(
                path, kind="trades", symbol="X", mapping={**mapping, "size": "amount"}
            )
        )
    with pytest.raises(DataError, match=r"needs a 'kind' option"):
        list(generic.read_generic(path, mapping=mapping))
    with pytest.raises(DataError, match=r"unknown table kind 'ticks'"):
        list(generic.read_generic(path, kind="ticks", mapping=mapping))
    with pytest.raises(DataError, match=r"no symbol column .* and no 'symbol' option"):
        list(generic.read_generic(path, kind="trades", mapping=mapping))
    with pytest.raises(DataError, match=r"'ts_is_open' needs an 'interval'"):
        list(
            generic.read_generic(path, kind="trades", symbol="X", mapping=mapping, ts_is_open=True)
        )
    with pytest.raises(DataError, match=r"cannot read interval 'weekly'"):
        list(
            generic.read_generic(
                path, kind="trades", symbol="X", mapping=mapping, interval="weekly"
            )
        )
    with pytest.raises(DataError, match=r"required column\(s\) \['side'\]"):
        list(
            generic.read_generic(
                path,
                kind="trades",
                symbol="X",
                mapping={"ts": "time", "price": "px", "size": "qty"},
            )
        )
    with pytest.raises(DataError, match=r"non-canonical column\(s\) \['qty'\]"):
        list(generic.read_generic(path, kind="trades", symbol="X", mapping={"qty": "qty"}))
    bad = tmp_path / "bad.csv"
    bad.write_text(CSV + "1704067202000,41999,2,2.5\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 5, column 'aggressor'.*not an integer"):
        list(generic.read_generic(bad, kind="trades", symbol="X", mapping=mapping, chunk_rows=3))
    bad.write_text(CSV + "1704067203000,4x,1,1\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 5, column 'px'.*'4x'"):
        list(generic.read_generic(bad, kind="trades", symbol="X", mapping=mapping))
    bad.write_text("when,v\n2024-01-01,1\nnot a date,2\n")
    with pytest.raises(DataError, match=r"line 3, column 'when'.*'not a date'"):
        list(
            generic.read_generic(
                bad, kind="levels", symbol="X", mapping={"ts": "when", "close": "v"}
            )
        )


def test_daily_ohlcv_parquet_hand_made(tmp_path):
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime(["2024-02-28", "2024-02-29"]),
            "open": [1.0, 2.0],
            "high": [2.0, 3.0],
            "low": [0.5, 1.5],
            "close": [1.5, 2.5],
        }
    )
    path = tmp_path / "ethusd_1d.parquet"
    frame.to_parquet(path)
    assert generic.sniff(path) == "daily_ohlcv_parquet"
    f = _one(generic.read_daily_ohlcv_parquet(path))
    assert f["ts"].tolist() == [
        pd.Timestamp("2024-02-29", tz="UTC"),
        pd.Timestamp("2024-03-01", tz="UTC"),
    ]
    assert set(f["symbol"]) == {"ETHUSD"} and "volume" not in f.columns
    frame.drop(columns="close").to_parquet(path)
    assert generic.sniff(path) is None
    with pytest.raises(DataError, match=r"missing \['close'\]"):
        list(generic.read_daily_ohlcv_parquet(path))
    dvol = tmp_path / "dvol_daily.parquet"
    frame.to_parquet(dvol)
    assert generic.sniff(dvol) is None  # DVOL belongs to the deribit reader


def test_btcusd_daily(data_dir):
    path = data_dir / "btcusd_daily_bitstamp_coinbase_2011_2025" / "btcusd_1d.parquet"
    assert generic.sniff(path) == "daily_ohlcv_parquet"
    chunks = list(generic.read_daily_ohlcv_parquet(path, chunk_rows=1000))
    assert all(len(c.frame) <= 1000 for c in chunks)
    assert {c.table for c in chunks} == {"bars_1d"}
    f = _one(chunks)
    validate(f, "bars")
    assert len(f) == 5152 and set(f["symbol"]) == {"BTCUSD"}
    # SOURCE.md: first candle 2011-08-18 (UTC day) -> closes 2011-08-19 00:00 UTC
    assert f.loc[0, "ts"] == pd.Timestamp("2011-08-19", tz="UTC")
    assert f.loc[0, ["open", "close", "volume"]].tolist() == pytest.approx(
        [10.9, 10.9, 0.489908], abs=1e-6
    )
    assert f["ts"].iloc[-1] == pd.Timestamp("2025-09-25", tz="UTC")
    raw = pd.read_parquet(path)
    np.testing.assert_array_equal(f["close"].to_numpy(), raw["close"].to_numpy())
