"""Realized-measure, Deribit, TAQ-sample and arch-embedded readers on the real files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.readers import arch_data, deribit, realized, taq
from features.schema import DataError, validate


def _collect(chunks, chunk_rows: int | None = None) -> dict[str, pd.DataFrame]:
    out: dict[str, list[pd.DataFrame]] = {}
    for c in chunks:
        if chunk_rows is not None:
            assert 0 < len(c.frame) <= chunk_rows
        out.setdefault(c.table, []).append(c.frame)
    frames = {k: pd.concat(v, ignore_index=True) for k, v in out.items()}
    for c_table, frame in frames.items():
        kind = {
            "realized_1d": "realized",
            "realized_rk_1d": "realized",
            "dvol_1d": "bars",
            "bars_1d": "bars",
            "vix_1d": "levels",
            "levels_1m": "levels",
        }.get(c_table, c_table)
        validate(frame, kind)
    return frames


UTC = "UTC"


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


# ---- realized measures -------------------------------------------------------------------------

MEASURES = "binance_daily_realized_measures_btc_eth_2018_2026"


@pytest.mark.parametrize(("stem", "symbol"), [("btc", "BTCUSDT"), ("eth", "ETHUSDT")])
def test_binance_measures(data_dir, stem, symbol):
    path = data_dir / MEASURES / f"{stem}_measures.csv"
    assert realized.sniff(path) == "realized_measures_csv"
    chunks = list(realized.read_measures_csv(path, chunk_rows=1000))
    assert [c.first_line for c in chunks] == [2, 1002, 2002, 3002]
    assert all(c.interval == pd.Timedelta(days=1) for c in chunks)
    f = _collect(chunks, 1000)["realized_1d"]
    assert len(f) == 3012 and set(f["symbol"]) == {symbol}
    assert f["ts"].iloc[0] == ts("2018-01-02") and f["ts"].iloc[-1] == ts("2026-04-01")
    raw = pd.read_csv(path)
    for canon, col in (
        ("rv_var", "RV"),
        ("bv_var", "BV"),
        ("rq_var2", "RQ"),
        ("rs_pos_var", "RS_plus"),
        ("rs_neg_var", "RS_minus"),
        ("n_obs", "nobs"),
    ):
        np.testing.assert_array_equal(f[canon].to_numpy(), raw[col].to_numpy(dtype=float))


def test_btc_measures_first_day_by_hand(data_dir):
    f = _collect(realized.read_measures_csv(data_dir / MEASURES / "btc_measures.csv"))
    row = f["realized_1d"].iloc[0]
    assert row["ts"] == ts("2018-01-02 00:00")  # close of the UTC day 2018-01-01
    assert row["rv_var"] == 0.004918210525523384
    assert row["n_obs"] == 287
    # semivariances add up to RV
    assert row["rs_pos_var"] + row["rs_neg_var"] == pytest.approx(row["rv_var"], rel=1e-12)


def test_measures_csv_errors(tmp_path):
    path = tmp_path / "sol_measures.csv"
    path.write_text(
        "date,RV,RQ,RS_plus,RS_minus,delta_J,BV,nobs\n"
        "2024-01-01,0.001,1e-6,0.0005,0.0005,0,0.0009,288\n"
        "2024-01-02,oops,1e-6,0.0005,0.0005,0,0.0009,288\n"
    )
    with pytest.raises(DataError, match=r"sol_measures\.csv, line 3, column 'RV'.*'oops'"):
        list(realized.read_measures_csv(path))
    path.write_text("date,RV\n2024-01-01,0.001\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['BV', 'RQ'"):
        list(realized.read_measures_csv(path))
    assert realized.sniff(path) is None


def test_oxford_man_spx_library(data_dir):
    path = data_dir / "oxford_man_realized_spx_2000_2017" / "spx_realized_library.parquet"
    assert realized.sniff(path) == "oxford_man_library"
    f = _collect(realized.read_oxford_man_library(path, chunk_rows=2000), 2000)["realized_1d"]
    raw = pd.read_parquet(path)
    assert len(f) == 4518 and set(f["symbol"]) == {"SPX"}
    for canon, col in realized.LIBRARY.items():
        np.testing.assert_array_equal(f[col].to_numpy(), raw[canon].to_numpy())
    # 16:00 New York: EST (UTC-5) in January, EDT (UTC-4) in July
    assert f["ts"].iloc[0] == ts("2000-01-03 21:00")
    # the half-day session of 2017-07-03 (nobs 13801), stored as 2017-07-02 (a Sunday)
    # and of 2017-11-24 (winter, stored correctly)
    half = f[f["n_obs"] == 13801]
    assert half[["ts", "close"]].values.tolist()[-2:] == [
        [ts("2017-07-03 20:00"), 2429.01],
        [ts("2017-11-24 21:00"), 2602.42],
    ]
    # corrected dates are trading days: Monday..Friday, unique, Fridays as common as Mondays
    local = f["ts"].dt.tz_convert("America/New_York")
    counts = local.dt.day_of_week.value_counts()
    assert set(counts.index) == {0, 1, 2, 3, 4} and f["ts"].is_unique
    assert counts[4] > 0.9 * counts[0]
    stored = _collect(realized.read_oxford_man_library(path, fix_dates=False))["realized_1d"]
    assert (stored["ts"].dt.tz_convert("America/New_York").dt.day_of_week == 6).sum() == 509


def test_undo_london_midnight_shift_by_hand():
    stored = pd.Series(
        pd.to_datetime(
            ["2017-01-03", "2017-03-25", "2017-03-26", "2017-07-02", "2017-10-28", "2017-10-29"]
        )
    )
    got = realized.undo_london_midnight_shift(stored)
    # BST 2017: 2017-03-26 01:00 UTC .. 2017-10-29 01:00 UTC; midnight of D+1 decides
    assert got.dt.strftime("%Y-%m-%d").tolist() == [
        "2017-01-03",
        "2017-03-25",
        "2017-03-27",
        "2017-07-03",
        "2017-10-29",
        "2017-10-29",
    ]


def test_spy_measures_and_rq_units(data_dir):
    path = (
        data_dir
        / "oxford_man_realized_spx_2000_2017"
        / "spy_realized_measures_highfrequency.parquet"
    )
    assert realized.sniff(path) == "spy_realized_hf"
    f = _collect(realized.read_spy_realized_hf(path))["realized_1d"]
    raw = pd.read_parquet(path)
    assert len(f) == 999 and set(f["symbol"]) == {"SPY"}
    assert "rq_var2" not in f.columns
    np.testing.assert_array_equal(f["rv_var"].to_numpy(), raw["RV5"].to_numpy())
    np.testing.assert_array_equal(f["bv_var"].to_numpy(), raw["BPV5"].to_numpy())
    np.testing.assert_array_equal(f["rk_var"].to_numpy(), raw["RK5"].to_numpy())
    assert f.loc[0, ["ts", "close"]].tolist() == [ts("2014-01-02 21:00"), 182.95]
    # the docstring's reason for leaving RQ5 out: RQ / RV^2 is O(1) in log-return units
    # (Binance BTC: 2.3) but ~1e8 here, i.e. percent returns
    ratio = np.median(raw["RQ5"] / raw["RV5"] ** 2)
    assert 1e7 < ratio < 1e9
    btc = pd.read_csv(data_dir / MEASURES / "btc_measures.csv")
    assert 1.0 < np.median(btc["RQ"] / btc["RV"] ** 2) < 5.0


@pytest.mark.parametrize(
    ("stem", "table", "cols"),
    [
        ("wide_rv5", "realized_1d", ["rv_var"]),
        ("wide_rk_parzen", "realized_rk_1d", ["rv_var", "rk_var"]),
    ],
)
def test_oxford_man_wide(data_dir, stem, table, cols):
    path = data_dir / "oxford_man_realized_30_indices_2013_2017" / f"{stem}.parquet"
    assert realized.sniff(path) == "oxford_man_wide"
    out = _collect(realized.read_oxford_man_wide(path, chunk_rows=5000), 5000)
    assert set(out) == {table}
    f = out[table]
    raw = pd.read_parquet(path)
    values = raw.drop(columns="DATE")
    assert len(f) == int(values.notna().to_numpy().sum())  # NaN cells dropped
    assert sorted(f.columns) == sorted(["ts", "symbol", *cols])
    for c in cols:
        assert f[c].sum() == pytest.approx(np.nansum(values.to_numpy()), rel=1e-12)
    one = f[(f["symbol"] == "SPX")].iloc[0]
    assert one["rv_var"] == raw.loc[0, "SPX"]
    by_sym = f.groupby("symbol")["ts"].first()
    # 2013-01-07 (winter): local closes from features.symbols calendars, else 23:59:59 UTC
    assert by_sym["SPX"] == ts("2013-01-07 21:00")  # 16:00 New York
    assert by_sym["FTSE"] == ts("2013-01-07 16:30")  # 16:30 London
    assert by_sym["GDAXI"] == ts("2013-01-07 16:30")  # 17:30 Berlin
    assert by_sym["N225"] == ts("2013-01-07 06:00")  # 15:00 Tokyo
    assert by_sym["AEX"] == ts("2013-01-07 23:59:59")  # no calendar: end of the UTC day
    summer = f[(f["symbol"] == "FTSE") & (f["ts"].dt.month == 7)]["ts"].iloc[0]
    assert (summer.hour, summer.minute) == (15, 30)  # BST
    # corrected dates: weekends only for the Indian special sessions (Diwali Sunday 2016-10-30)
    weekend = f[f["ts"].dt.tz_convert(None).dt.day_of_week >= 5]
    assert set(weekend["symbol"]) == {"BSESN", "NSEI"}
    assert ts("2016-10-30 23:59:59") in set(weekend["ts"])
    assert (
        f[f["symbol"] == "SPX"]["ts"].dt.tz_convert("America/New_York").dt.day_of_week < 5
    ).all()


def test_wide_unknown_measure(tmp_path):
    path = tmp_path / "panel.parquet"
    pd.DataFrame({"DATE": pd.to_datetime(["2020-01-02"]), "SPX": [1e-4]}).to_parquet(path)
    assert realized.sniff(path) is None
    with pytest.raises(DataError, match=r"unknown wide measure None"):
        list(realized.read_oxford_man_wide(path))
    f = _collect(realized.read_oxford_man_wide(path, measure="rv5"))["realized_1d"]
    assert f.loc[0, ["ts", "rv_var"]].tolist() == [ts("2020-01-02 21:00"), 1e-4]


# ---- Deribit -----------------------------------------------------------------------------------

DERIBIT = "deribit_option_snapshots_2024"


def test_dvol(data_dir):
    path = data_dir / "deribit_dvol_daily_2021_2025h1" / "dvol_daily.parquet"
    assert deribit.sniff(path) == "deribit_dvol"
    f = _collect(deribit.read_dvol(path, chunk_rows=1000), 1000)["dvol_1d"]
    assert len(f) == 3120 and set(f["symbol"]) == {"BTC-DVOL", "ETH-DVOL"}
    btc = f[f["symbol"] == "BTC-DVOL"].iloc[0]
    # 2021-03-24 (UTC day) 84.80 / 95.94 / 80.52 / 95.04 -> closes 2021-03-25 00:00 UTC
    assert btc[["ts", "open", "high", "low", "close"]].tolist() == [
        ts("2021-03-25"),
        84.80,
        95.94,
        80.52,
        95.04,
    ]
    assert f["ts"].max() == ts("2025-07-01")


def test_btc_option_marks(data_dir):
    path = data_dir / DERIBIT / "btc_options_marks_2024-05.parquet"
    assert deribit.sniff(path) == "deribit_options_marks"
    f = _collect(deribit.read_options_marks(path, chunk_rows=200), 200)["options"]
    raw = pd.read_parquet(path)
    assert len(f) == 578 and f["symbol"].is_unique
    r = f.iloc[0]
    assert r["symbol"] == "BTC-25MAY24-63000-C" and r["underlying"] == "BTC"
    assert r["expiry"] == ts("2024-05-25 08:00") and r["ts"] == ts("2024-05-23 18:11")
    assert (r["strike"], r["option_type"], r["mark_px"], r["mark_iv"], r["underlying_px"]) == (
        63000.0,
        "C",
        0.0852,
        1.0,
        68777.9,
    )
    np.testing.assert_allclose(f["mark_iv"].to_numpy(), raw["mark_iv"].to_numpy() / 100, rtol=1e-15)
    assert set(f["option_type"]) == {"C", "P"}
    assert (f["expiry"].dt.hour == 8).all()


def test_eth_option_chain(data_dir):
    path = data_dir / DERIBIT / "eth_option_chain_2024-01-08.parquet"
    assert deribit.sniff(path) == "deribit_option_chain"
    f = _collect(deribit.read_option_chain(path, chunk_rows=300), 300)["options"]
    raw = pd.read_parquet(path)
    assert len(f) == 684 and set(f["underlying"]) == {"ETH"}
    assert f["ts"].min() == ts("2024-01-08 11:19:41.414")
    assert f["ts"].max() == ts("2024-01-08 11:19:41.429")
    # the instrument names agree with the separate strike / type / expiry columns
    rebuilt = [
        deribit.instrument_name("ETH", e, k, t)
        for e, k, t in zip(f["expiry"], f["strike"], f["option_type"], strict=True)
    ]
    assert rebuilt == f["symbol"].tolist()
    r = f.iloc[0]
    assert (r["symbol"], r["expiry"], r["bid_px"], r["ask_px"], r["underlying_px"]) == (
        "ETH-26JAN24-1200-P",
        ts("2024-01-26 08:00"),
        0.0004,
        0.001,
        2241.65,
    )
    assert f["bid_px"].isna().sum() == raw["bid_price"].isna().sum() == 230
    assert "mark_iv" not in f.columns


def test_instrument_names_and_expiry_codes():
    e = ts("2024-06-05 08:00")
    assert deribit.instrument_name("BTC", e, 63000.0, "C") == "BTC-5JUN24-63000-C"
    assert deribit.instrument_name("XRP_USDC", e, 0.625, "P") == "XRP_USDC-5JUN24-0d625-P"
    got = deribit.parse_expiry_code(pd.Series(["9JAN24", "27DEC24"]), source="s", column="c")
    assert got.tolist() == [ts("2024-01-09 08:00"), ts("2024-12-27 08:00")]
    with pytest.raises(DataError, match=r"column 'expire_date'.*'32JAN24'"):
        deribit.parse_expiry_code(pd.Series(["32JAN24"]), source="s", column="expire_date")


def test_option_marks_errors(tmp_path):
    frame = pd.DataFrame(
        {
            "currency": ["BTC"],
            "option_type": ["straddle"],
            "strike": [1.0],
            "creation": ["2024-05-01 00:00:00"],
            "maturity": ["2024-05-25 08:00:00"],
            "mark_price": [0.1],
            "last_price": [0.1],
            "mark_iv": [50.0],
            "index_price": [60000.0],
        }
    )
    path = tmp_path / "marks.parquet"
    frame.to_parquet(path)
    with pytest.raises(DataError, match=r"column 'option_type'.*'straddle'"):
        list(deribit.read_options_marks(path))
    frame.assign(option_type="put", maturity="2024-05-25 09:00:00").to_parquet(path)
    with pytest.raises(DataError, match=r"maturity '2024-05-25 09:00:00' is not at 08:00 UTC"):
        list(deribit.read_options_marks(path))


# ---- TAQ samples -------------------------------------------------------------------------------

TAQ = "taq_samples_highfrequency_r"


@pytest.mark.parametrize(
    ("name", "fmt", "rows", "first_ts", "symbols"),
    [
        ("sampleTData", "taq_trades", 7168, "2018-01-02 14:30:00.125", {"XXX"}),
        ("sampleTDataRaw", "taq_trades", 77263, "2018-01-02 10:01:21.479000092", {"XXX"}),
        # New York, EDT (UTC-4)
        (
            "sampleMultiTradeData",
            "taq_trades",
            43581,
            "2014-09-17 13:30:00.531656981",
            {"ETF", "AAA", "BBB"},
        ),
        # Berlin, CEST (UTC+2)
        ("sampleTDataEurope", "taq_trades", 33488, "2013-06-08 07:00:01.625473976", {"ABC"}),
        ("sampleQData", "taq_quotes", 46564, "2018-01-02 14:30:00.115000010", {"XXX"}),
        ("sampleQDataRaw", "taq_quotes", 131401, "2018-01-02 09:04:13.125", {"XXX"}),
    ],
)
def test_taq_ticks(data_dir, name, fmt, rows, first_ts, symbols):
    path = data_dir / TAQ / f"{name}.parquet"
    assert taq.sniff(path) == fmt
    out = _collect(taq.READERS[fmt](path, chunk_rows=40_000), 40_000)
    table = "trades" if fmt == "taq_trades" else "quotes"
    f = out[table]
    raw = pd.read_parquet(path)
    assert len(f) == rows == len(raw)  # raw files keep every row (conditions, corrections)
    assert f["ts"].iloc[0] == ts(first_ts) and set(f["symbol"]) == symbols
    if table == "trades":
        assert (f["side"] == 0).all()
        np.testing.assert_array_equal(f["price"].to_numpy(), raw["PRICE"].to_numpy())
        np.testing.assert_array_equal(f["size"].to_numpy(), raw["SIZE"].to_numpy(dtype=float))
    else:
        np.testing.assert_array_equal(f["bid_px"].to_numpy(), raw["BID"].to_numpy())
        np.testing.assert_array_equal(f["ask_px"].to_numpy(), raw["OFR"].to_numpy())
        np.testing.assert_array_equal(f["bid_sz"].to_numpy(), raw["BIDSIZ"].to_numpy(dtype=float))
        np.testing.assert_array_equal(f["ask_sz"].to_numpy(), raw["OFRSIZ"].to_numpy(dtype=float))
    # the time shift is the same for every row of a one-day/one-zone file
    shift = f["ts"].dt.tz_localize(None).to_numpy() - raw["DT"].to_numpy().astype("datetime64[ns]")
    assert len(np.unique(shift)) <= 2  # one zone offset (two only across a DST change)


def test_taq_one_minute(data_dir):
    path = data_dir / TAQ / "sampleOneMinuteData.parquet"
    assert taq.sniff(path) == "taq_one_minute"
    chunks = list(taq.read_taq_one_minute(path, chunk_rows=4001))
    assert chunks[0].interval == pd.Timedelta(minutes=1)
    f = _collect(chunks, 4001)["levels_1m"]
    assert len(f) == 2 * 8602 and set(f["symbol"]) == {"STOCK", "MARKET"}
    # 2001-08-04 09:31 New York (EDT) -> 13:31 UTC; close-stamped, no shift
    at = f[f["ts"] == ts("2001-08-04 13:31")].set_index("symbol")["close"]
    assert at.to_dict() == {"STOCK": 96.0566, "MARKET": 246.12}
    assert f["ts"].max() == ts("2001-09-03 20:00")


def test_taq_time_zone_option(data_dir, tmp_path):
    raw = pd.read_parquet(data_dir / TAQ / "sampleTData.parquet").head(3)
    path = tmp_path / "mytrades.parquet"
    raw.to_parquet(path)
    f = _collect(taq.read_taq_trades(path))["trades"]  # unknown name: New York
    assert f["ts"].iloc[0] == ts("2018-01-02 19:30:00.125")
    f = _collect(taq.read_taq_trades(path, tz="UTC"))["trades"]
    assert f["ts"].iloc[0] == ts("2018-01-02 14:30:00.125")


# ---- arch embedded data ------------------------------------------------------------------------


def test_arch_embedded_by_hand():
    out = _collect(arch_data.load_embedded("sp500", chunk_rows=2000), 2000)
    f = out["bars_1d"]
    assert len(f) == 5031 and set(f["symbol"]) == {"SP500"}
    # sp500.csv.gz line 2: 1/4/1999,1229.22998,1248.810059,1219.099976,1228.099976,...,877000000
    assert f.loc[0, ["ts", "open", "high", "low", "close", "volume"]].tolist() == [
        ts("1999-01-04 21:00"),
        1229.22998,
        1248.810059,
        1219.099976,
        1228.099976,
        877000000.0,
    ]
    vix = _collect(arch_data.load_embedded("vix"))["vix_1d"]
    assert vix.loc[0, ["ts", "symbol", "close"]].tolist() == [ts("2014-01-03 21:00"), "VIX", 13.76]
    assert vix["close"].notna().all()
    nasdaq = _collect(arch_data.read_arch_data(arch_data.embedded_path("nasdaq")))["bars_1d"]
    assert set(nasdaq["symbol"]) == {"NASDAQ"} and len(nasdaq) == 5031
    summer = f[f["ts"].dt.strftime("%Y-%m-%d") == "2018-07-02"]["ts"].iloc[0]
    assert summer == ts("2018-07-02 20:00")  # EDT


def test_arch_sniff_and_errors(tmp_path):
    assert arch_data.sniff(arch_data.embedded_path("vix")) == "arch_data"
    assert arch_data.sniff(tmp_path / "vix.csv.gz") is None
    with pytest.raises(DataError, match=r"unknown arch data set 'wti'; expected one of"):
        list(arch_data.load_embedded("wti"))
    with pytest.raises(DataError, match=r"needs a 'name' option"):
        list(arch_data.read_arch_data(None))
    bad = tmp_path / "sp500.csv.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write(
            "Date,Open,High,Low,Close,Adj Close,Volume\n1/4/1999,1,2,0.5,1.5,1.5,10\n"
            "13/45/1999,1,2,0.5,1.5,1.5,10\n"
        )
    with pytest.raises(DataError, match=r"line 3, column 'Date'.*'13/45/1999'"):
        list(arch_data.read_arch_data(bad))


@pytest.mark.slow
@pytest.mark.parametrize("name", arch_data.EMBEDDED)
def test_arch_embedded_matches_arch_loader(name):
    """Against arch's own loader (importing arch takes ~10 s here, hence slow)."""
    import importlib

    ref = importlib.import_module(f"arch.data.{name}").load()
    f = next(iter(_collect(arch_data.load_embedded(name)).values()))
    if name == "vix":
        ref = ref.dropna()
        np.testing.assert_array_equal(f["close"].to_numpy(), ref["vix"].to_numpy())
    else:
        for canon, col in (
            ("open", "Open"),
            ("high", "High"),
            ("low", "Low"),
            ("close", "Close"),
            ("volume", "Volume"),
        ):
            np.testing.assert_array_equal(f[canon].to_numpy(), ref[col].to_numpy(dtype=float))
    dates = pd.DatetimeIndex(ref.index).tz_localize("America/New_York") + pd.Timedelta(hours=16)
    np.testing.assert_array_equal(f["ts"].to_numpy(), dates.tz_convert("UTC").to_numpy())


def test_registry_detects_every_real_file(data_dir):
    """The registry (features.readers) finds these modules' formats for every real file."""
    from features.readers import detect_format

    expected = {
        MEASURES + "/btc_measures.csv": "realized_measures_csv",
        "oxford_man_realized_spx_2000_2017/spx_realized_library.parquet": "oxford_man_library",
        "oxford_man_realized_spx_2000_2017/spy_realized_measures_highfrequency.parquet": "spy_realized_hf",
        "oxford_man_realized_30_indices_2013_2017/wide_rv5.parquet": "oxford_man_wide",
        "deribit_dvol_daily_2021_2025h1/dvol_daily.parquet": "deribit_dvol",
        DERIBIT + "/btc_options_marks_2024-05.parquet": "deribit_options_marks",
        DERIBIT + "/eth_option_chain_2024-01-08.parquet": "deribit_option_chain",
        "lobster_amzn_2012-06-21_level1/amzn_level1_events.parquet": "lobster_parquet",
        "lobster_amzn_2012-06-21_level1/AMZN_2012-06-21_34200000_57600000_message_1.csv.gz": "lobster",
        TAQ + "/sampleQDataRaw.parquet": "taq_quotes",
        TAQ + "/sampleTDataEurope.parquet": "taq_trades",
        TAQ + "/sampleOneMinuteData.parquet": "taq_one_minute",
        "btcusd_daily_bitstamp_coinbase_2011_2025/btcusd_1d.parquet": "daily_ohlcv_parquet",
    }
    got = {rel: detect_format(Path(data_dir) / rel) for rel in expected}
    assert got == expected
