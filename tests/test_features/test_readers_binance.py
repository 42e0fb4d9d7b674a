"""Binance readers: real files in the shared data folder and hand-made files with known answers."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.readers import binance as bn
from features.readers import read_source
from features.schema import DataError, validate

L2 = "binance_l2_depth_trades_snippets_2024-08-08"


def ns(values) -> np.ndarray:
    """Nanoseconds since the epoch of UTC datetimes (fast comparisons; no Timestamp objects)."""
    return pd.DatetimeIndex(values).as_unit("ns").asi8


def read_all(path: Path, fmt: str | None = None, **options) -> dict[str, pd.DataFrame]:
    """Read a file and concatenate its chunks per table (checking each chunk's contract)."""
    parts: dict[str, list[pd.DataFrame]] = {}
    for ch in read_source(path, fmt, **options):
        validate(ch.frame, ch.kind)
        parts.setdefault(ch.table, []).append(ch.frame)
    return {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}


# ---- real data: klines, mark prices, funding ---------------------------------------------------------

KLINES = [
    ("binance_spot_btc_eth_1m/klines_1m.parquet", "bars_1m", "1min", "spot"),
    ("binance_spot_5m_btc_eth_bnb_ltc/klines_5m.parquet", "bars_5m", "5min", "spot"),
    ("binance_spot_15m_panel_16_assets/klines_15m.parquet", "bars_15m", "15min", "spot"),
    ("binance_spot_btcusdt_1h_2017_2024/klines_1h.parquet", "bars_1h", "1h", "spot"),
    ("binance_usdm_perp_btc_eth_bnb_ltc/klines_1m.parquet", "bars_1m", "1min", "usdm_perp"),
    ("binance_usdm_perp_btc_eth_bnb_ltc/klines_5m.parquet", "bars_5m", "5min", "usdm_perp"),
    ("binance_usdm_perp_btc_eth_bnb_ltc/mark_price_1h.parquet", "mark_1h", "1h", "usdm_perp"),
    ("binance_usdm_perp_btc_eth_bnb_ltc/mark_price_8h.parquet", "mark_8h", "8h", "usdm_perp"),
]


@pytest.mark.parametrize(
    ("rel", "table", "step", "market"),
    KLINES,
    ids=[k[0].split("/")[0][8:] + "/" + k[1] for k in KLINES],
)
def test_klines_parquet_real(data_dir, rel, table, step, market):
    path = data_dir / rel
    src = pq.read_table(path).to_pandas()
    chunks = list(read_source(path, chunk_rows=150_000))
    assert {c.table for c in chunks} == {table}
    assert all(len(c.frame) <= 150_000 for c in chunks)
    assert all(c.interval == pd.Timedelta(step) for c in chunks)
    got = pd.concat([c.frame for c in chunks], ignore_index=True)
    assert len(got) == len(src)  # nothing dropped
    # THE BAR'S CLOSE: ts = open_time + interval, row by row (file order is kept)
    expected_ts = src["open_time"].astype("datetime64[ns, UTC]") + pd.Timedelta(step)
    np.testing.assert_array_equal(ns(got["ts"]), ns(expected_ts))
    assert (got["ts"] - pd.Timedelta(step)).iloc[0] == src["open_time"].iloc[0]
    suffix = "-PERP" if market == "usdm_perp" else ""
    assert (got["symbol"].to_numpy() == (src["symbol"] + suffix).to_numpy()).all()
    for c in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(got[c].to_numpy(), src[c].to_numpy())
    assert ("volume" in got) == ("volume" in src)


def test_spot_1m_btc_windows(data_dir):
    bars = read_all(data_dir / "binance_spot_btc_eth_1m/klines_1m.parquet")["bars_1m"]
    btc = bars.loc[bars["symbol"] == "BTCUSDT", "ts"].sort_values()
    window = (btc.diff() != pd.Timedelta("1min")).cumsum()
    assert window.value_counts(sort=False).tolist() == [43_209, 130_708]
    # first bar opened 2024-07-26 14:15 and closes one minute later
    assert btc.iloc[0] == pd.Timestamp("2024-07-26 14:16", tz="UTC")


def test_klines_interval_inferred_when_name_has_none(data_dir, tmp_path):
    src = pq.read_table(data_dir / "binance_spot_btcusdt_1h_2017_2024/klines_1h.parquet")
    path = tmp_path / "btc_candles.parquet"
    pq.write_table(src.slice(0, 500), path)
    (chunk,) = read_source(path, "binance_klines_parquet")
    assert chunk.table == "bars_1h" and chunk.interval == pd.Timedelta("1h")
    with pytest.raises(DataError, match=r"cannot parse interval '1M'"):
        next(read_source(path, "binance_klines_parquet", interval="1M"))
    assert next(read_source(path, interval="30m")).table == "bars_30m"


def test_klines_interval_inference_disagreement(tmp_path):
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    df = pd.DataFrame(
        {
            "symbol": ["A"] * 3 + ["B"] * 3,
            "market": "spot",
            "open_time": [t0 + pd.Timedelta(minutes=i) for i in range(3)]
            + [t0 + pd.Timedelta(minutes=5 * i) for i in range(3)],
            "open": 1.0,
            "high": 1.0,
            "low": 1.0,
            "close": 1.0,
            "volume": 1.0,
        }
    )
    path = tmp_path / "candles.parquet"
    df.to_parquet(path)
    with pytest.raises(DataError, match=r"symbols have different bar intervals"):
        next(read_source(path, "binance_klines_parquet"))


def test_funding_real(data_dir):
    path = data_dir / "binance_usdm_perp_btc_eth_bnb_ltc/funding_rate.parquet"
    src = pq.read_table(path).to_pandas()
    got = read_all(path)["funding"]
    assert len(got) == len(src) == 4_526
    assert set(got["symbol"]) == {"BTCUSDT-PERP", "ETHUSDT-PERP", "BNBUSDT-PERP", "LTCUSDT-PERP"}
    np.testing.assert_array_equal(ns(got["ts"]), ns(src["funding_time"]))
    np.testing.assert_array_equal(got["funding_rate"].to_numpy(), src["funding_rate"].to_numpy())


# ---- real data: the L2 recording -------------------------------------------------------------------

SYMBOLS = {"BTCUSDT", "ETHUSDT", "BTCUSDT-PERP", "ETHUSDT-PERP", "BTCUSD_PERP", "ETHUSD_PERP"}


def test_l2_trades_real(data_dir):
    path = data_dir / L2 / "trades.parquet"
    src = pq.read_table(path).to_pandas()
    got = read_all(path)["trades"]
    assert len(got) == len(src) == 55_270
    assert set(got["symbol"]) == SYMBOLS
    exp_sym = np.where(src["market"] == "usdm_perp", src["symbol"] + "-PERP", src["symbol"])
    assert (got["symbol"].to_numpy() == exp_sym).all()
    exp_ts = pd.to_datetime(src["trade_time_ms"], unit="ms", utc=True)
    np.testing.assert_array_equal(ns(got["ts"]), ns(exp_ts))
    assert (got["side"].to_numpy() == np.where(src["buyer_is_maker"], -1, 1)).all()
    assert (got["trade_id"].to_numpy() == src["trade_id"].to_numpy()).all()


def test_l2_book_ticker_real_and_clock_offset(data_dir):
    path = data_dir / L2 / "book_ticker.parquet"
    src = pq.read_table(path).to_pandas()
    got = read_all(path)["quotes"]
    raw = read_all(path, clock_offset=None)["quotes"]
    assert len(got) == len(src) == 207_146
    fut = src["transaction_time_ms"].notna().to_numpy()
    exp = pd.to_datetime(src.loc[fut, "transaction_time_ms"].astype("int64"), unit="ms", utc=True)
    np.testing.assert_array_equal(ns(got.loc[fut, "ts"]), ns(exp))
    # spot sends no time: receive time, shifted by the collector clock's measured offset
    spot_local = src.loc[~fut, "local_ts_ns"].to_numpy()
    np.testing.assert_array_equal(ns(raw.loc[~fut, "ts"]), spot_local)
    shift = ns(got.loc[~fut, "ts"]) - spot_local
    assert len(np.unique(shift)) == 1
    # the oracle: median of exchange minus receive time on the rows that have both
    e = src.loc[fut]
    oracle = int(np.median(e["event_time_ms"].astype("int64") * 1_000_000 - e["local_ts_ns"]))
    assert shift[0] == oracle
    assert 1.2e9 < oracle < 1.3e9  # the collector clock runs ~1.27 s behind Binance
    forced = read_all(path, clock_offset=5)["quotes"]
    assert (ns(forced.loc[~fut, "ts"]) - spot_local == 5).all()
    with pytest.raises(
        DataError, match=r"'clock_offset' option must be 'auto', None or an integer"
    ):
        next(read_source(path, clock_offset="later"))


def test_l2_depth_snapshots_real(data_dir):
    path = data_dir / L2 / "depth_snapshots.parquet"
    got = read_all(path)["book_snapshot"]
    assert len(got) == 12_000
    assert set(got["symbol"]) == SYMBOLS
    assert got["level"].min() == 0 and got["level"].max() == 999
    best = got[got["level"] == 0].pivot_table(index="symbol", columns="side", values="px")
    assert (best[1] < best[-1]).all()  # best bid below best ask


@pytest.fixture(scope="module")
def rebuilt_books(data_dir):
    return read_all(data_dir / L2 / "depth_updates.parquet")["book_l2"]


def _top_vs_ticker(book: pd.DataFrame, quotes: pd.DataFrame) -> pd.DataFrame:
    top = (
        book[book["level"] == 0]
        .pivot_table(index=["ts", "symbol"], columns="side", values="px")
        .reset_index()
    )
    top = top.rename(columns={1: "bid", -1: "ask"}).sort_values("ts")
    m = pd.merge_asof(top, quotes.sort_values("ts"), on="ts", by="symbol", direction="backward")
    m["agree"] = (m["bid"] == m["bid_px"]) & (m["ask"] == m["ask_px"])
    return m


@pytest.mark.slow
def test_depth_updates_real_book(data_dir, rebuilt_books):
    book = rebuilt_books
    assert set(book["symbol"]) == SYMBOLS
    assert (book["ts"].astype("int64") % 1_000_000_000 == 0).all()  # on the 1 s grid
    assert book["level"].max() == 9
    # every sample: bid prices strictly descending, asks ascending, book not crossed
    b = book.sort_values(["symbol", "ts", "side", "level"]).reset_index(drop=True)
    key = b[["symbol", "ts", "side"]]
    same = (key == key.shift()).all(axis=1).to_numpy()
    step = b["px"].diff().to_numpy()
    bid = b["side"].to_numpy() == 1
    assert (step[same & bid] < 0).all() and (step[same & ~bid] > 0).all()
    lvl = b["level"].to_numpy()
    assert (lvl[~same] == 0).all() and (np.diff(lvl, prepend=0)[same] == 1).all()
    top = book[book["level"] == 0].pivot_table(index=["ts", "symbol"], columns="side", values="px")
    assert (top[1] < top[-1]).all()
    # about 6 minutes of 1 s samples per instrument
    per_symbol = book[book["level"] == 0].groupby(["symbol"]).size() / 2
    assert per_symbol.between(340, 347).all()


@pytest.mark.slow
def test_depth_updates_real_agree_with_book_ticker(data_dir, rebuilt_books):
    quotes = read_all(data_dir / L2 / "book_ticker.parquet")["quotes"]
    m = _top_vs_ticker(rebuilt_books, quotes)
    rate = m.groupby("symbol")["agree"].mean()
    # measured: 0.95 BTCUSDT, 0.94 ETHUSDT, 0.97 BTCUSDT-PERP, 0.94 ETHUSDT-PERP, 1.00 BTCUSD_PERP,
    # 0.99 ETHUSD_PERP; 0.964 overall over 2,070 samples
    assert m["agree"].mean() > 0.95
    assert (rate > 0.9).all(), rate
    # without the clock-offset correction spot quotes are 1.27 s early and agree far less often
    raw = read_all(data_dir / L2 / "book_ticker.parquet", clock_offset=None)["quotes"]
    m_raw = _top_vs_ticker(rebuilt_books, raw)
    spot = m["symbol"].isin(["BTCUSDT", "ETHUSDT"])
    assert m_raw.loc[spot.to_numpy(), "agree"].mean() < 0.6 < m.loc[spot, "agree"].mean()


RAW = [
    ("spot_btcusdt_20240808.gz", "BTCUSDT"),
    ("spot_ethusdt_20240808.gz", "ETHUSDT"),
    ("usdm_btcusdt_20240808.gz", "BTCUSDT-PERP"),
    ("usdm_ethusdt_20240808.gz", "ETHUSDT-PERP"),
    ("cm_btcusd_perp_20240808.gz", "BTCUSD_PERP"),
    ("cm_ethusd_perp_20240808.gz", "ETHUSD_PERP"),
]


@pytest.fixture(scope="module")
def l2_tables(data_dir):
    trades = read_all(data_dir / L2 / "trades.parquet")["trades"]
    quotes = read_all(data_dir / L2 / "book_ticker.parquet")["quotes"]
    return trades, quotes


@pytest.mark.parametrize(("name", "symbol"), RAW, ids=[r[0][:-12] for r in RAW])
def test_ws_raw_matches_parquet(data_dir, l2_tables, name, symbol):
    got = read_all(data_dir / L2 / "raw" / name)
    trades, quotes = l2_tables
    exp_t = trades[trades["symbol"] == symbol].reset_index(drop=True)
    pd.testing.assert_frame_equal(got["trades"], exp_t)
    exp_q = quotes[quotes["symbol"] == symbol].reset_index(drop=True)
    assert len(got["quotes"]) == len(exp_q)
    for c in ("bid_px", "bid_sz", "ask_px", "ask_sz"):
        np.testing.assert_array_equal(got["quotes"][c].to_numpy(), exp_q[c].to_numpy())
    if symbol in ("BTCUSDT", "ETHUSDT"):
        # offsets measured on different message sets (this file's trades vs the parquet's futures
        # rows) differ by a few ms only
        lag = (got["quotes"]["ts"] - exp_q["ts"]).abs().max()
        assert lag < pd.Timedelta("10ms")
    else:
        np.testing.assert_array_equal(ns(got["quotes"]["ts"]), ns(exp_q["ts"]))


# ---- hand-made kline CSVs --------------------------------------------------------------------------

KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


def kline_rows(n: int, unit: str = "ms", start_ms: int = 1_704_067_200_000) -> list[str]:
    scale = 1 if unit == "ms" else 1000
    rows = []
    for i in range(n):
        o = (start_ms + 60_000 * i) * scale
        c = o + 60_000 * scale - 1
        rows.append(
            f"{o},{100 + i},{101 + i},{99 + i},{100.5 + i},{2.5 * (i + 1)},{c},"
            f"{250.0 * (i + 1)},{10 + i},{1.25 * (i + 1)},{125.0 * (i + 1)},0"
        )
    return rows


def write(path: Path, lines: list[str], compress: str | None = None) -> Path:
    text = "\n".join(lines) + "\n"
    if compress == "gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    elif compress == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(path.stem + ".csv", text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("header", "unit", "compress"),
    [
        (False, "ms", None),
        (True, "ms", None),
        (False, "us", None),
        (True, "us", "gz"),
        (False, "ms", "zip"),
    ],
    ids=["plain-ms", "header-ms", "plain-us", "header-us-gz", "zip-ms"],
)
def test_klines_csv(tmp_path, header, unit, compress):
    suffix = {None: ".csv", "gz": ".csv.gz", "zip": ".zip"}[compress]
    lines = ([KLINE_HEADER] if header else []) + kline_rows(5, unit)
    path = write(tmp_path / f"BTCUSDT-1m-2024-01-01{suffix}", lines, compress)
    assert bn.sniff(path) == "binance_klines_csv"
    chunks = list(read_source(path, chunk_rows=2))
    assert [len(c.frame) for c in chunks] == [2, 2, 1]
    assert [c.first_line for c in chunks] == ([2, 4, 6] if header else [1, 3, 5])
    bars = pd.concat([c.frame for c in chunks], ignore_index=True)
    assert chunks[0].table == "bars_1m"
    opens = pd.to_datetime(1_704_067_200_000 + 60_000 * np.arange(5), unit="ms", utc=True)
    np.testing.assert_array_equal(ns(bars["ts"]), ns(opens + pd.Timedelta("1min")))
    assert bars["ts"].iloc[0] == pd.Timestamp("2024-01-01 00:01", tz="UTC")
    assert (bars["symbol"] == "BTCUSDT").all()
    np.testing.assert_array_equal(bars["close"], 100.5 + np.arange(5))
    np.testing.assert_array_equal(bars["quote_volume"], 250.0 * np.arange(1, 6))
    np.testing.assert_array_equal(bars["trade_count"], 10 + np.arange(5))
    np.testing.assert_array_equal(bars["taker_buy_volume"], 1.25 * np.arange(1, 6))


def test_klines_csv_interval_from_close_time_and_options(tmp_path):
    path = write(tmp_path / "candles.csv", kline_rows(3))
    assert bn.sniff(path) == "binance_klines_csv"  # by content
    with pytest.raises(DataError, match=r"candles.csv: cannot tell the symbol .*give it with --symbol BTCUSDT"):
        next(read_source(path))
    (chunk,) = read_source(path, symbol="ethusdt", market="um")
    assert chunk.table == "bars_1m" and chunk.interval == pd.Timedelta("1min")
    assert (chunk.frame["symbol"] == "ETHUSDT-PERP").all()
    with pytest.raises(
        DataError,
        match=r"line 1, column 'close_time': kline spans 0 days "
        r"00:01:00 .*expected the interval 0 days 00:05:00",
    ):
        next(read_source(path, symbol="ETHUSDT", interval="5m"))
    with pytest.raises(DataError, match=r"unknown option\(s\) \['colour'\]"):
        next(read_source(path, symbol="ETHUSDT", colour="red"))


def test_klines_csv_futures_path_market(tmp_path):
    folder = tmp_path / "data" / "futures" / "um" / "daily" / "klines" / "BTCUSDT" / "1h"
    folder.mkdir(parents=True)
    rows = []
    for i in range(2):
        o = 1_704_067_200_000 + 3_600_000 * i
        rows.append(f"{o},1,2,0.5,1.5,3,{o + 3_599_999},4,5,1,2,0")
    path = write(folder / "BTCUSDT-1h-2024-01-01.csv", [KLINE_HEADER, *rows])
    (chunk,) = read_source(path)
    assert chunk.table == "bars_1h"
    assert (chunk.frame["symbol"] == "BTCUSDT-PERP").all()
    assert chunk.frame["ts"].iloc[0] == pd.Timestamp("2024-01-01 01:00", tz="UTC")


# ---- hand-made trade CSVs -------------------------------------------------------------------------


def test_trades_csv_spot_no_header(tmp_path):
    rows = [
        "101,42000.5,0.01,420.005,1704067200123,True,True",
        "102,42001.0,0.5,21000.5,1704067200456,False,True",
    ]
    path = write(tmp_path / "BTCUSDT-trades-2024-01-01.csv", rows)
    assert bn.sniff(path) == "binance_trades_csv"
    t = read_all(path)["trades"]
    assert t["ts"].tolist() == [
        pd.Timestamp(1_704_067_200_123, unit="ms", tz="UTC"),
        pd.Timestamp(1_704_067_200_456, unit="ms", tz="UTC"),
    ]
    assert t["side"].tolist() == [-1, 1]  # buyer is maker -> the aggressor sold
    assert t["trade_id"].tolist() == [101, 102]
    assert t["size"].tolist() == [0.01, 0.5]
    assert (t["symbol"] == "BTCUSDT").all()


def test_trades_csv_usdm_header_us_gz(tmp_path):
    rows = [
        "id,price,qty,quote_qty,time,is_buyer_maker",
        "7,42000.5,0.01,420.005,1735689600123456,true",
        "8,42001.0,0.5,21000.5,1735689600123999,false",
    ]
    path = write(tmp_path / "BTCUSDT-trades-2025-01-01.csv.gz", rows, "gz")
    t = read_all(path, market="usdm_perp")["trades"]
    assert t["ts"].tolist() == [
        pd.Timestamp(1_735_689_600_123_456, unit="us", tz="UTC"),
        pd.Timestamp(1_735_689_600_123_999, unit="us", tz="UTC"),
    ]
    assert t["side"].tolist() == [-1, 1]
    assert (t["symbol"] == "BTCUSDT-PERP").all()


@pytest.mark.parametrize("header", [False, True], ids=["spot-noheader", "futures-header"])
def test_aggtrades_csv(tmp_path, header):
    head = (
        ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"]
        if header
        else []
    )
    extra = "" if header else ",True"
    rows = [
        f"5,100.0,1.5,10,12,1704067200000,False{extra}",
        f"6,99.5,0.25,13,13,1704067200001,True{extra}",
    ]
    path = write(tmp_path / "ETHUSDT-aggTrades-2024-01-01.csv", head + rows)
    assert bn.sniff(path) == "binance_aggtrades_csv"
    t = read_all(path)["trades"]
    assert t["trade_id"].tolist() == [5, 6]
    assert t["side"].tolist() == [1, -1]
    assert t["size"].tolist() == [1.5, 0.25]
    assert t["price"].tolist() == [100.0, 99.5]


def test_trades_csv_content_sniff_without_name(tmp_path):
    spot = write(tmp_path / "a.csv", ["1,2.0,3.0,6.0,1704067200000,True,True"])
    usdm = write(tmp_path / "b.csv", ["1,2.0,3.0,6.0,1704067200000,false"])
    agg = write(tmp_path / "c.csv", ["1,2.0,3.0,4,5,1704067200000,True,True"])
    other = write(tmp_path / "d.csv", ["date,close", "2024-01-01,3"])
    assert [bn.sniff(p) for p in (spot, usdm, agg, other)] == [
        "binance_trades_csv",
        "binance_trades_csv",
        "binance_aggtrades_csv",
        None,
    ]


BAD_CASES = [
    # (rows, match)
    (
        [
            "1,10.0,1.0,10.0,1704067200000,True,True",
            "2,10.0,1.0,10.0,1704067200001,True,True",
            "3,10.0,1.0,10.0,1704067200002,True,True,9,9",
        ],
        r"BTCUSDT-trades-2024-01-01.csv, line 3: .*Expected 7 fields in line 3, saw 9",
    ),
    (
        [
            "1,10.0,1.0,10.0,1704067200000,True,True",
            "2,10.0,1.0,10.0,1704067200001,True,True",
            "3,abc,1.0,10.0,1704067200002,True,True",
        ],
        r"BTCUSDT-trades-2024-01-01.csv, line 3, column 'price': cannot parse value 'abc'; "
        r"expected a number",
    ),
    (
        ["1,10.0,1.0,10.0,1704067200000,True,True", "2,10.0,1.0,10.0,1704067200001,maybe,True"],
        r"BTCUSDT-trades-2024-01-01.csv, line 2, column 'is_buyer_maker': cannot parse value "
        r"'maybe'; expected true or false",
    ),
    (
        ["1,10.0,1.0,10.0,1704067200000,True,True", "2,10.0,1.0,10.0,1704067200001"],
        r"BTCUSDT-trades-2024-01-01.csv, line 2: expected 7 fields, saw 5",
    ),
    (
        [
            "1,10.0,1.0,10.0,1704067200000,True,True",
            "2,10.0,1.0",
            "3,10.0,1.0,10.0,1704067200001,True,True",
        ],
        r"BTCUSDT-trades-2024-01-01.csv, line 2: expected 7 fields, saw 3",
    ),
    (
        ["1,10.0,1.0,10.0,1704067200000,True,True", "2,10.0,1.0,10.0,1704067200001,True"],
        r"BTCUSDT-trades-2024-01-01.csv, line 2: expected 7 fields, saw 6",
    ),
]


@pytest.mark.parametrize(
    ("rows", "match"),
    BAD_CASES,
    ids=["extra-fields", "bad-price", "bad-bool", "short-int", "short-mid", "short-bool"],
)
@pytest.mark.parametrize("chunk_rows", [1, 1000], ids=["chunk1", "chunk1000"])
def test_trades_csv_malformed_lines(tmp_path, rows, match, chunk_rows):
    path = write(tmp_path / "BTCUSDT-trades-2024-01-01.csv", rows)
    with pytest.raises(DataError, match=match):
        list(read_source(path, "binance_trades_csv", chunk_rows=chunk_rows))


def test_klines_csv_malformed_price_names_line_and_column(tmp_path):
    rows = kline_rows(4)
    rows[2] = rows[2].replace(",102,", ",x102,", 1)
    path = write(tmp_path / "BTCUSDT-1m-2024-01-01.csv.gz", [KLINE_HEADER, *rows], "gz")
    with pytest.raises(
        DataError,
        match=r"BTCUSDT-1m-2024-01-01.csv.gz, line 4, column 'open': "
        r"cannot parse value 'x102'",
    ):
        list(read_source(path))


def test_csv_mixed_time_units_in_a_chunk_raise(tmp_path):
    rows = ["1,10.0,1.0,10.0,1704067200000,True,True", "2,10.0,1.0,10.0,1704067200000000,True,True"]
    path = write(tmp_path / "BTCUSDT-trades-2024-01-01.csv", rows)
    with pytest.raises(
        DataError,
        match=r"line 2, column 'time': timestamp 1704067200000000 is "
        r"not in the same unit \(ms\)",
    ):
        list(read_source(path))


def _write_binance_trades(path: Path, frame: pd.DataFrame, unit: str) -> None:
    """The Binance spot trades CSV layout (no header), written independently of the reader."""
    scale = 1_000_000 if unit == "ms" else 1_000
    lines = []
    for r in frame.itertuples(index=False):
        t = r.ts.value // scale
        maker = "True" if r.side == -1 else "False"
        lines.append(f"{r.trade_id},{r.price!r},{r.size!r},{r.price * r.size!r},{t},{maker},True")
    path.write_text("\n".join(lines) + "\n")


prices = st.floats(min_value=1e-6, max_value=1e7, allow_nan=False, allow_infinity=False)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            prices,
            prices,
            st.sampled_from([-1, 1]),
            st.integers(0, 10**12),
            st.integers(1_500_000_000_000, 4_000_000_000_000),
        ),
        min_size=1,
        max_size=30,
    ),
    unit=st.sampled_from(["ms", "us"]),
    chunk_rows=st.integers(1, 7),
)
def test_trades_round_trip(tmp_path, rows, unit, chunk_rows):
    p, q, side, tid, t_ms = zip(*rows, strict=True)
    t = np.asarray(t_ms, dtype="int64") * 1_000_000
    if unit == "us":
        t = t + 123_000  # keep microseconds
    canonical = pd.DataFrame(
        {
            "ts": pd.to_datetime(t, unit="ns", utc=True),
            "symbol": "BTCUSDT",
            "price": np.asarray(p, dtype="float64"),
            "size": np.asarray(q, dtype="float64"),
            "side": np.asarray(side, dtype="int8"),
            "trade_id": pd.array(tid, dtype="Int64"),
        }
    )
    path = tmp_path / f"BTCUSDT-trades-2024-01-0{1 if unit == 'ms' else 2}.csv"
    _write_binance_trades(path, canonical, unit)
    chunks = list(read_source(path, "binance_trades_csv", chunk_rows=chunk_rows))
    assert all(len(c.frame) <= chunk_rows for c in chunks)
    back = pd.concat([c.frame for c in chunks], ignore_index=True)
    pd.testing.assert_frame_equal(back, canonical)


# ---- hand-made L2 depth reconstruction --------------------------------------------------------------


def _snapshot(market: str, symbol: str, last_id: int, bids: dict, asks: dict) -> pd.DataFrame:
    rows = []
    for side, book in (("bid", sorted(bids.items(), reverse=True)), ("ask", sorted(asks.items()))):
        for lvl, (p, q) in enumerate(book):
            rows.append(
                {
                    "market": market,
                    "symbol": symbol,
                    "local_ts_ns": 0,
                    "last_update_id": last_id,
                    "event_time_ms": None,
                    "transaction_time_ms": None,
                    "side": side,
                    "level": lvl,
                    "price": p,
                    "qty": q,
                }
            )
    return pd.DataFrame(rows)


def _updates(market: str, symbol: str, events: list[tuple]) -> pd.DataFrame:
    """events: (time_ms, U, u, pu or None, [(side, price, qty), ...])."""
    rows = []
    for t, first, final, prev, changes in events:
        for side, p, q in changes:
            rows.append(
                {
                    "market": market,
                    "symbol": symbol,
                    "local_ts_ns": t * 1_000_000,
                    "event_time_ms": t,
                    "transaction_time_ms": None if market == "spot" else t,
                    "first_update_id": first,
                    "final_update_id": final,
                    "prev_final_update_id": prev,
                    "side": side,
                    "price": p,
                    "qty": q,
                }
            )
    return pd.DataFrame(rows)


def _write_l2(tmp_path: Path, snaps: list[pd.DataFrame], ups: list[pd.DataFrame]) -> Path:
    schema_u = pa.schema(
        [
            ("market", pa.string()),
            ("symbol", pa.string()),
            ("local_ts_ns", pa.int64()),
            ("event_time_ms", pa.int64()),
            ("transaction_time_ms", pa.int64()),
            ("first_update_id", pa.int64()),
            ("final_update_id", pa.int64()),
            ("prev_final_update_id", pa.int64()),
            ("side", pa.string()),
            ("price", pa.float64()),
            ("qty", pa.float64()),
        ]
    )
    schema_s = pa.schema(
        [
            ("market", pa.string()),
            ("symbol", pa.string()),
            ("local_ts_ns", pa.int64()),
            ("last_update_id", pa.int64()),
            ("event_time_ms", pa.int64()),
            ("transaction_time_ms", pa.int64()),
            ("side", pa.string()),
            ("level", pa.int64()),
            ("price", pa.float64()),
            ("qty", pa.float64()),
        ]
    )
    pq.write_table(
        pa.Table.from_pandas(
            pd.concat(snaps, ignore_index=True), schema=schema_s, preserve_index=False
        ),
        tmp_path / "depth_snapshots.parquet",
    )
    path = tmp_path / "depth_updates.parquet"
    pq.write_table(
        pa.Table.from_pandas(
            pd.concat(ups, ignore_index=True), schema=schema_u, preserve_index=False
        ),
        path,
        row_group_size=3,
    )
    return path


T0 = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC, a whole second


def _book_at(book: pd.DataFrame, ts_ms: int, symbol: str) -> tuple[list, list]:
    g = book[(book["ts"] == pd.Timestamp(ts_ms, unit="ms", tz="UTC")) & (book["symbol"] == symbol)]
    bids = g[g["side"] == 1].sort_values("level")[["px", "sz"]].values.tolist()
    asks = g[g["side"] == -1].sort_values("level")[["px", "sz"]].values.tolist()
    return bids, asks


def test_depth_reconstruction_futures_by_hand(tmp_path):
    snap = _snapshot(
        "usdm_perp", "BTCUSDT", 100, {100.0: 1.0, 99.0: 2.0, 98.0: 3.0}, {101.0: 1.0, 102.0: 2.0}
    )
    ev = [
        (T0 - 900, 90, 95, 89, [("bid", 100.0, 7.0)]),  # u < 100: dropped (already in snapshot)
        (T0 - 500, 96, 101, 95, [("bid", 100.0, 0.0), ("ask", 101.5, 4.0)]),  # U <= 100 <= u
        (T0 + 200, 102, 105, 101, [("bid", 99.5, 5.0), ("ask", 101.0, 0.0)]),
        (T0 + 1000, 106, 106, 105, [("ask", 103.0, 1.0)]),  # exactly on the grid: included
        (T0 + 2500, 107, 110, 106, [("bid", 99.0, 0.0), ("bid", 97.0, 9.0)]),
    ]
    path = _write_l2(tmp_path, [snap], [_updates("usdm_perp", "BTCUSDT", ev)])
    chunks = list(read_source(path, chunk_rows=4, levels=2))
    assert all(len(c.frame) <= 4 for c in chunks)
    assert {c.table for c in chunks} == {"book_l2"}
    book = pd.concat([c.frame for c in chunks], ignore_index=True)
    assert sorted(book["ts"].unique()) == [
        pd.Timestamp(T0 + k * 1000, unit="ms", tz="UTC") for k in range(3)
    ]
    assert (book["symbol"] == "BTCUSDT-PERP").all()
    # t0: after the second event only (100 removed; the dropped event's 7.0 never applied)
    assert _book_at(book, T0, "BTCUSDT-PERP") == (
        [[99.0, 2.0], [98.0, 3.0]],
        [[101.0, 1.0], [101.5, 4.0]],
    )
    assert _book_at(book, T0 + 1000, "BTCUSDT-PERP") == (
        [[99.5, 5.0], [99.0, 2.0]],
        [[101.5, 4.0], [102.0, 2.0]],
    )
    # t0+2s: the event at t0+2.5s is not yet applied
    assert _book_at(book, T0 + 2000, "BTCUSDT-PERP") == _book_at(book, T0 + 1000, "BTCUSDT-PERP")


def test_depth_reconstruction_spot_rules_and_interleaving(tmp_path):
    s_spot = _snapshot("spot", "ETHUSDT", 50, {10.0: 1.0}, {11.0: 1.0})
    s_cm = _snapshot("coinm_perp", "ETHUSD_PERP", 500, {20.0: 1.0}, {21.0: 1.0})
    spot = _updates(
        "spot",
        "ETHUSDT",
        [
            (T0 - 300, 45, 50, None, [("bid", 10.0, 9.0)]),  # u <= 50: dropped for spot
            (T0 - 200, 51, 53, None, [("bid", 10.5, 2.0)]),  # U = 51 = lastUpdateId + 1
            (T0 + 400, 54, 60, None, [("ask", 11.0, 0.0), ("ask", 12.0, 3.0)]),
        ],
    )
    cm = _updates(
        "coinm_perp",
        "ETHUSD_PERP",
        [
            (T0 - 100, 499, 500, 498, [("ask", 20.5, 1.0)]),  # u == lastUpdateId: kept on futures
            (T0 + 1200, 501, 502, 500, [("bid", 20.0, 0.0), ("bid", 19.0, 4.0)]),
        ],
    )
    path = _write_l2(tmp_path, [s_spot, s_cm], [spot, cm])
    book = read_all(path, levels=3)["book_l2"]
    assert _book_at(book, T0, "ETHUSDT") == ([[10.5, 2.0], [10.0, 1.0]], [[11.0, 1.0]])
    assert _book_at(book, T0 + 1000, "ETHUSDT") == ([], [])  # spot ends at t0+0.4 s
    assert _book_at(book, T0, "ETHUSD_PERP") == ([[20.0, 1.0]], [[20.5, 1.0], [21.0, 1.0]])
    assert _book_at(book, T0 + 1000, "ETHUSD_PERP") == _book_at(book, T0, "ETHUSD_PERP")
    assert book["ts"].max() == pd.Timestamp(T0 + 1000, unit="ms", tz="UTC")


@pytest.mark.parametrize(
    ("market", "events", "match"),
    [
        (
            "usdm_perp",
            [(T0, 96, 101, 95, [("bid", 1.0, 1.0)]), (T0 + 1, 103, 104, 102, [("bid", 1.0, 2.0)])],
            r"BTCUSDT-PERP: gap in depth updates: event pu=102 after u=101; expected pu = 101",
        ),
        (
            "spot",
            [
                (T0, 101, 101, None, [("bid", 1.0, 1.0)]),
                (T0 + 1, 103, 104, None, [("bid", 1.0, 2.0)]),
            ],
            r"BTCUSDT: gap in depth updates: event U=103 after u=101; expected U = 102",
        ),
        (
            "usdm_perp",
            [(T0, 102, 110, 101, [("bid", 1.0, 1.0)])],
            r"first depth update after the snapshot has ids U=102, u=110; expected U <= 100 <= u",
        ),
    ],
    ids=["futures-gap", "spot-gap", "snapshot-too-old"],
)
def test_depth_reconstruction_gaps_raise(tmp_path, market, events, match):
    snap = _snapshot(market, "BTCUSDT", 100, {1.0: 1.0}, {2.0: 1.0})
    path = _write_l2(tmp_path, [snap], [_updates(market, "BTCUSDT", events)])
    with pytest.raises(DataError, match=match):
        list(read_source(path))


def test_depth_reconstruction_needs_snapshot_and_valid_options(tmp_path):
    snap = _snapshot("spot", "BTCUSDT", 100, {1.0: 1.0}, {2.0: 1.0})
    path = _write_l2(
        tmp_path, [snap], [_updates("spot", "BTCUSDT", [(T0, 101, 101, None, [("bid", 1.0, 1.0)])])]
    )
    with pytest.raises(DataError, match=r"nowhere.parquet does not exist; give its path with snapshot"):
        next(read_source(path, snapshot=tmp_path / "nowhere.parquet"))
    with pytest.raises(DataError, match=r"'levels' parameter must be an integer >= 1. Got 0"):
        next(read_source(path, levels=0))
    with pytest.raises(DataError, match=r"cannot parse interval '1 second'"):
        next(read_source(path, book_interval="1 second"))
    other = _snapshot("spot", "ETHUSDT", 100, {1.0: 1.0}, {2.0: 1.0})
    path = _write_l2(
        tmp_path,
        [other],
        [_updates("spot", "BTCUSDT", [(T0, 101, 101, None, [("bid", 1.0, 1.0)])])],
    )
    with pytest.raises(DataError, match=r"no depth snapshot for spot BTCUSDT"):
        next(read_source(path))


def test_whole_events_never_split_an_event(tmp_path):
    ev = [
        (T0 + i, 10 * i, 10 * i + 5, None, [("bid", float(j), 1.0) for j in range(i + 1)])
        for i in range(1, 6)
    ]
    df = _updates("spot", "X", ev)
    path = tmp_path / "u.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=2)
    pf = pq.ParquetFile(path)
    frames = list(bn._whole_events(pf, list(df.columns), 2))
    assert sum(len(f) for f in frames) == len(df)
    seen = [f["final_update_id"].unique().tolist() for f in frames]
    flat = [u for s in seen for u in s]
    assert flat == sorted(set(flat))  # each event id in exactly one frame


# ---- hand-made raw websocket lines ------------------------------------------------------------------


def test_ws_raw_by_hand(tmp_path):
    lines = [
        '1000000000000000000 {"stream":"btcusdt@trade","data":{"e":"trade","E":1000000001000,'
        '"s":"BTCUSDT","t":7,"p":"10.5","q":"2","T":1000000000999,"m":true,"M":true}}',
        '1000000000500000000 {"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT",'
        '"b":"10.4","B":"1","a":"10.6","A":"3"}}',
        '1000000000600000000 {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate"}}',
        '1000000000700000000 {"lastUpdateId":5,"bids":[],"asks":[]}',
        '1000000002000000000 {"stream":"btcusdt@trade","data":{"e":"trade","E":1000000003000,'
        '"s":"BTCUSDT","t":8,"p":"10.6","q":"1","T":1000000003000,"m":false,"M":true}}',
    ]
    path = write(tmp_path / "spot_btcusdt_20240101.gz", lines, "gz")
    assert bn.sniff(path) == "binance_ws_raw"
    got = read_all(path)
    assert got["trades"]["side"].tolist() == [-1, 1]
    assert got["trades"]["trade_id"].tolist() == [7, 8]
    assert got["trades"]["ts"].iloc[0] == pd.Timestamp(1_000_000_000_999, unit="ms", tz="UTC")
    # offset = median(E - receive) over the two trades = median(1.0 s, 1.0 s) = 1 s
    assert got["quotes"]["ts"].tolist() == [pd.Timestamp(1_000_000_001_500, unit="ms", tz="UTC")]
    assert got["quotes"][["bid_px", "bid_sz", "ask_px", "ask_sz"]].values.tolist() == [
        [10.4, 1.0, 10.6, 3.0]
    ]
    raw = read_all(path, clock_offset=None)["quotes"]
    assert raw["ts"].iloc[0] == pd.Timestamp(1_000_000_000_500, unit="ms", tz="UTC")


def test_ws_raw_malformed_line(tmp_path):
    good = (
        '1000000000000000000 {"stream":"btcusdt@trade","data":{"e":"trade","E":1000000001000,'
        '"s":"BTCUSDT","t":7,"p":"10.5","q":"2","T":1000000000999,"m":true}}'
    )
    path = write(
        tmp_path / "usdm_btcusdt_x.gz", [good, good, '1000000000000000001 {"stream": oops'], "gz"
    )
    with pytest.raises(DataError, match=r"usdm_btcusdt_x.gz, line 3: cannot parse line"):
        list(read_source(path, "binance_ws_raw"))
    bad_price = good.replace('"p":"10.5"', '"p":"ten"')
    path = write(tmp_path / "usdm_btcusdt_y.gz", [good, bad_price], "gz")
    with pytest.raises(DataError, match=r"line 2, column 'p': message field 'p' is 'ten'"):
        list(read_source(path, "binance_ws_raw"))


# ---- small helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "market", "expected"),
    [
        ("BTCUSDT", "spot", "BTCUSDT"),
        ("btcusdt", "usdm_perp", "BTCUSDT-PERP"),
        ("BTCUSDT", "um", "BTCUSDT-PERP"),
        ("BTCUSDT-PERP", "usdm_perp", "BTCUSDT-PERP"),
        ("BTCUSD_PERP", "coinm_perp", "BTCUSD_PERP"),
        ("BTCUSDT_240329", "usdm_perp", "BTCUSDT_240329"),
        ("ETHUSDT", None, "ETHUSDT"),
    ],
)
def test_canonical_symbol(symbol, market, expected):
    assert bn.canonical_symbol(symbol, market) == expected


def test_canonical_symbol_unknown_market():
    with pytest.raises(DataError, match=r"unknown Binance market 'options'; expected one of"):
        bn.canonical_symbol("BTCUSDT", "options")


@pytest.mark.parametrize(
    ("text", "minutes", "name"),
    [
        ("1m", 1, "1m"),
        ("15m", 15, "15m"),
        ("1h", 60, "1h"),
        ("8h", 480, "8h"),
        ("1d", 1440, "1d"),
        ("1w", 10080, "1w"),
        ("90m", 90, "90m"),
    ],
)
def test_intervals(text, minutes, name):
    iv = bn.parse_interval(text)
    assert iv == pd.Timedelta(minutes=minutes)
    assert bn.interval_name(iv) == name
    assert bn.interval_from_name(f"klines_{text}") == iv
    assert bn.interval_from_name(f"BTCUSDT-{text}-2024-01-01.csv") == iv


def test_interval_names_without_interval():
    assert bn.interval_from_name("funding_rate") is None
    assert bn.interval_from_name("btcusdt_20240808") is None
    assert bn.interval_name(pd.Timedelta(seconds=30)) == "30s"
    with pytest.raises(DataError, match=r"not a positive whole number of seconds"):
        bn.interval_name(pd.Timedelta(milliseconds=1500))


def test_chunk_rows_validation(tmp_path):
    path = write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", kline_rows(2))
    with pytest.raises(DataError, match=r"'chunk_rows' parameter must be an integer >= 1. Got 0"):
        next(bn.read_klines_csv(path, chunk_rows=0))


def test_l2_readers_reject_foreign_parquet(tmp_path):
    path = tmp_path / "trades.parquet"
    pd.DataFrame({"market": ["spot"], "symbol": ["BTCUSDT"], "price": [1.0]}).to_parquet(path)
    with pytest.raises(
        DataError,
        match=r"not a binance_l2_trades file: missing column\(s\) "
        r"\['trade_time_ms'",
    ):
        next(read_source(path, "binance_l2_trades"))
    with pytest.raises(DataError, match=r"not a binance_l2_book_ticker file: missing"):
        next(read_source(path, "binance_l2_book_ticker"))
    with pytest.raises(DataError, match=r"not a Binance klines parquet: missing column\(s\)"):
        next(read_source(path, "binance_klines_parquet"))
    with pytest.raises(DataError, match=r"not a Binance funding parquet: missing column\(s\)"):
        next(read_source(path, "binance_funding_parquet"))
    assert bn.sniff(path) is None
