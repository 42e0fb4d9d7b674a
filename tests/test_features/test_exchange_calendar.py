"""Exchange sessions (issue 14, part 4): NYSE holidays, session arithmetic, symbols of non-crypto
daily measures and their time stamps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.calendar import add_sessions, exchange_holidays, session_dates
from features.errors import ConfigError
from features.readers import realized
from features.readers.realized import undo_london_midnight_shift
from features.symbols import spot_pair, symbol_meta

UTC = "UTC"
WIDE = "oxford_man_realized_30_indices_2013_2017"
SPX_LIB = "oxford_man_realized_spx_2000_2017/spx_realized_library.parquet"
HEADER = "date,RV,RQ,RS_plus,RS_minus,delta_J,BV,nobs\n"


def utc(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(list(stamps), tz=UTC)


# ---- holidays ------------------------------------------------------------------------------
def test_nyse_holidays_equal_quantlib_1995_2026() -> None:
    ql = pytest.importorskip("QuantLib")
    cal = ql.UnitedStates(ql.UnitedStates.NYSE)
    oracle = pd.DatetimeIndex(
        [d.ISO() for d in ql.Calendar.holidayList(cal, ql.Date(1, 1, 1995), ql.Date(31, 12, 2026))]
    )
    mine = exchange_holidays("XNYS", "1995-01-01", "2026-12-31")
    assert len(mine) == len(oracle) == 296
    assert mine.equals(oracle)


@pytest.mark.parametrize(
    ("day", "closed"),
    [
        ("2016-03-25", True),  # Good Friday: not a federal holiday
        ("2016-10-10", False),  # Columbus Day: federal, the NYSE trades
        ("2016-11-11", False),  # Veterans Day: federal, the NYSE trades
        ("2021-12-31", False),  # New Year's Day on a Saturday is not made up
        ("2021-12-24", True),  # Christmas on a Saturday -> Friday
        ("2022-06-20", True),  # Juneteenth (Sunday) -> Monday, from 2022
        ("2021-06-18", False),  # ... and not before
        ("2012-10-29", True),  # Hurricane Sandy
        ("2025-01-09", True),  # President Carter's funeral
    ],
    ids=lambda v: str(v),
)
def test_nyse_holiday_rules_are_not_the_federal_calendar(day: str, closed: bool) -> None:
    assert (pd.Timestamp(day) in exchange_holidays("XNYS", day, day)) is closed
    assert (pd.Timestamp(day) in session_dates("XNYS", day, day)) is not closed


def test_sessions_are_the_trading_days_of_the_oxford_man_indices(data_dir: Path) -> None:
    wide = pd.read_parquet(data_dir / WIDE / "wide_rv5.parquet")
    dji = pd.DatetimeIndex(undo_london_midnight_shift(wide["DATE"][wide["DJI"].notna()]))
    assert dji.equals(session_dates("XNYS", dji.min(), dji.max()))  # 1256 days, exactly
    spx = pd.DatetimeIndex(undo_london_midnight_shift(pd.read_parquet(data_dir / SPX_LIB)["date"]))
    sessions = session_dates("XNYS", spx.min(), spx.max())
    assert spx.difference(sessions).empty  # every SPX row is an NYSE session ...
    assert len(sessions.difference(spx)) == 10  # ... and 10 sessions have no row (data gaps)


def test_other_calendars_have_weekday_sessions_and_24_7_every_day() -> None:
    assert exchange_holidays("XLON", "2024-01-01", "2024-12-31").empty
    assert len(session_dates("XLON", "2024-01-01", "2024-01-07")) == 5
    assert len(session_dates("24/7", "2024-01-01", "2024-01-07")) == 7
    with pytest.raises(ConfigError, match="The 'calendar' parameter must be one of"):
        session_dates("NOPE", "2024-01-01", "2024-01-07")


# ---- session arithmetic --------------------------------------------------------------------
def test_add_sessions_across_a_weekend_a_holiday_and_a_clock_change() -> None:
    t = utc(
        "2024-07-03 20:00",  # Wednesday 16:00 New York; Thursday 4 July is a holiday
        "2024-07-05 20:00",  # Friday -> Monday
        "2024-03-08 21:00",  # Friday 16:00 EST -> Monday 16:00 EDT (20:00 UTC)
        "2024-11-27 21:00",  # Wednesday before Thanksgiving -> Friday
    )
    got = add_sessions(t, 1, "XNYS")
    assert got.equals(
        utc("2024-07-05 20:00", "2024-07-08 20:00", "2024-03-11 20:00", "2024-11-29 21:00")
    )
    assert add_sessions(t[:1], 3, "XNYS").equals(utc("2024-07-09 20:00"))
    assert add_sessions(t, 1, "24/7").equals(t + pd.Timedelta("1D"))
    assert add_sessions(t, 0, "XNYS").equals(t)
    # a special session on a Saturday counts from the Friday before: its next session is Monday
    assert add_sessions(utc("2024-07-06 20:00"), 1, "XNYS").equals(utc("2024-07-08 20:00"))
    with pytest.raises(ConfigError, match="The 'n' parameter must be an integer >= 0. Got -1"):
        add_sessions(t, -1, "XNYS")


# ---- symbols ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "symbol", "calendar", "annualization"),
    [
        ("btc", "BTCUSDT", "24/7", 365),
        ("ETH", "ETHUSDT", "24/7", 365),
        ("BTCUSDT", "BTCUSDT", "24/7", 365),
        ("djia", "DJIA", "XNYS", 252),
        ("DJI", "DJI", "XNYS", 252),
        ("spx", "SPX", "XNYS", 252),
        ("foo", "FOO", "24/7", 365),  # unknown: kept, never FOOUSDT
    ],
)
def test_spot_pair_appends_a_quote_only_to_crypto(name, symbol, calendar, annualization) -> None:
    assert spot_pair(name) == symbol
    meta = symbol_meta(symbol)
    assert (meta.calendar, meta.annualization) == (calendar, annualization)


# ---- the measures reader on an equity index --------------------------------------------------
def dji_measures_csv(data_dir: Path, path: Path, start: str, end: str) -> pd.DataFrame:
    """A slice of the Oxford-Man DJI 5-minute RV (dates corrected) in the measures-CSV format."""
    wide = pd.read_parquet(data_dir / WIDE / "wide_rv5.parquet")
    rv = wide["DJI"].to_numpy()
    dates = pd.DatetimeIndex(undo_london_midnight_shift(wide["DATE"]))
    keep = np.isfinite(rv) & (dates >= start) & (dates <= end)
    rv, dates = rv[keep], dates[keep]
    frame = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "RV": rv, "RQ": rv**2,
                          "RS_plus": rv / 2, "RS_minus": rv / 2, "delta_J": 0.0, "BV": rv,
                          "nobs": 78})
    frame.to_csv(path, index=False)
    return frame


def read(path: Path, **kw) -> pd.DataFrame:
    return pd.concat([c.frame for c in realized.read_measures_csv(path, **kw)], ignore_index=True)


def test_an_index_keeps_its_name_and_is_stamped_at_the_nyse_close(data_dir, tmp_path) -> None:
    raw = dji_measures_csv(data_dir, tmp_path / "djia_measures.csv", "2017-06-26", "2017-07-14")
    assert realized.sniff(tmp_path / "djia_measures.csv") == "realized_measures_csv"
    f = read(tmp_path / "djia_measures.csv")
    assert set(f["symbol"]) == {"DJIA"} and len(f) == len(raw) == 14
    local = pd.DatetimeIndex(f["ts"]).tz_convert("America/New_York")
    assert (local.strftime("%H:%M") == "16:00").all()
    assert list(local.strftime("%Y-%m-%d")) == list(raw["date"])  # the trading date itself
    assert (pd.DatetimeIndex(f["ts"]).dayofweek < 5).all()  # no Saturday (or Sunday) row
    assert "2017-07-04" not in set(raw["date"])  # the holiday has no row
    np.testing.assert_array_equal(f["rv_var"].to_numpy(), raw["RV"].to_numpy())


def test_symbol_option_is_kept_as_given_and_crypto_is_unchanged(data_dir, tmp_path) -> None:
    dji_measures_csv(data_dir, tmp_path / "index_measures.csv", "2017-06-26", "2017-06-30")
    f = read(tmp_path / "index_measures.csv", symbol="SPX")
    assert set(f["symbol"]) == {"SPX"}
    assert (pd.DatetimeIndex(f["ts"]).tz_convert("America/New_York").hour == 16).all()
    unknown = read(tmp_path / "index_measures.csv")
    assert set(unknown["symbol"]) == {"INDEX"}  # an unknown name: no USDT appended
    (tmp_path / "sol_measures.csv").write_text(HEADER + "2024-01-06,0.001,1e-6,5e-4,5e-4,0,9e-4,288\n")
    sol = read(tmp_path / "sol_measures.csv")
    assert list(sol["symbol"]) == ["SOLUSDT"]
    assert sol["ts"].iloc[0] == pd.Timestamp("2024-01-07", tz=UTC)  # Saturday's UTC day, 24/7
