"""Forecast target windows follow the data's own rows (issue 14, part 4): on daily equity-index
data ``target_end`` is the h-th next trading day (across weekends and holidays), annualization
252; 24/7 crypto keeps ``origin + h`` days and 365."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.readers import realized
from features.readers.realized import undo_london_midnight_shift
from models.evaluation import walk_forward
from models.ewma import EWMAVol
from models.forecast import VolForecast, calendar_target_end, infer_unit, only, row_target_end
from models.har import HARVol
from models.ledger import ForecastLedger

WIDE = "oxford_man_realized_30_indices_2013_2017/wide_rv5.parquet"
DAY = pd.Timedelta("1D")


def ny(*days: str) -> list[pd.Timestamp]:
    """16:00 New York closes of local dates, in UTC."""
    return [pd.Timestamp(f"{d} 16:00", tz="America/New_York").tz_convert("UTC") for d in days]


@pytest.fixture(scope="module")
def djia(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The Oxford-Man DJI 5-minute RV of 2016-2017 written as ``djia_measures.csv`` and read back
    by the project's reader (symbol DJIA, NYSE closes)."""
    wide = pd.read_parquet(data_dir / WIDE)
    dates = pd.DatetimeIndex(undo_london_midnight_shift(wide["DATE"]))
    rv = wide["DJI"].to_numpy()
    keep = np.isfinite(rv) & (dates >= "2016-01-01")
    path = tmp_path_factory.mktemp("djia") / "djia_measures.csv"
    pd.DataFrame({"date": dates[keep].strftime("%Y-%m-%d"), "RV": rv[keep], "RQ": rv[keep] ** 2,
                  "RS_plus": rv[keep] / 2, "RS_minus": rv[keep] / 2, "delta_J": 0.0,
                  "BV": rv[keep], "nobs": 78}).to_csv(path, index=False)
    return pd.concat([c.frame for c in realized.read_measures_csv(path)], ignore_index=True)


def ends(fc: VolForecast) -> pd.DataFrame:
    return fc.to_frame().set_index(["origin_ts", "horizon"])["target_end"]


def test_walk_forward_target_end_is_the_next_trading_day(djia: pd.DataFrame) -> None:
    wf = HARVol(min_obs=None).walk_forward(djia, (1, 5), start="2017-06-01", window=250,
                                           refit_every=20)
    fc = wf["DJIA"]
    assert fc.annualization == 252.0 and fc.horizon_unit == "1D"
    assert (fc.origins.tz_convert("America/New_York").dayofweek < 5).all()  # no Saturday origin
    e = ends(fc)
    fri, mon, jul5 = ny("2017-06-30", "2017-07-03", "2017-07-05")
    assert e[(fri, 1)] == mon  # across a weekend
    assert e[(mon, 1)] == jul5  # across the 4 July holiday
    assert e[(fri, 5)] == ny("2017-07-10")[0]  # 5 rows on: Mon, Wed, Thu, Fri, Mon
    # the h-th next row of the data, at every origin inside the data
    ts = pd.DatetimeIndex(djia["ts"])
    pos = ts.get_indexer(fc.origins)
    inside = pos + 5 < len(ts)
    np.testing.assert_array_equal(fc.target_ends()[5].to_numpy()[inside],
                                  ts[pos[inside] + 5].to_numpy())


def test_predict_past_the_data_continues_by_the_nyse_calendar(djia: pd.DataFrame) -> None:
    fc = only(HARVol(min_obs=None).fit(djia).predict(djia, horizons=(1, 5)))
    e = ends(fc)
    last = ny("2017-12-29")[0]
    assert e[(last, 1)] == ny("2018-01-02")[0]  # weekend and New Year's Day
    assert e[(last, 5)] == ny("2018-01-08")[0]


def test_round_trip_and_ledger_infer_one_day_periods(djia: pd.DataFrame, tmp_path: Path) -> None:
    fc = only(HARVol(min_obs=None).fit(djia).predict(djia, horizons=(1, 5)))
    frame = fc.to_frame()
    back = VolForecast.from_frame(frame)
    assert back.horizon_unit == "1D" and back.annualization == 252.0
    pd.testing.assert_frame_equal(back.to_frame(), frame)
    assert set(infer_unit(frame["target_start"], frame["target_end"], frame["horizon"],
                          "DJIA")) == {"1D"}
    # a 24/7 symbol with the same spans is not on sessions: the span is its period
    assert "3D" in set(infer_unit(frame["target_start"], frame["target_end"], frame["horizon"],
                                  "BTCUSDT"))
    led = ForecastLedger(tmp_path / "ledger")
    assert led.seed_walk_forward(frame.tail(20)) == 20


def test_evaluation_table_follows_the_rows(djia: pd.DataFrame) -> None:
    res = walk_forward({"ewma": EWMAVol()}, djia, horizons=(1,), start="2017-06-26",
                       end="2017-07-07", window=250, min_obs=None)
    t = res.forecasts.set_index("origin_ts")["target_end"]
    fri, mon, jul5 = ny("2017-06-30", "2017-07-03", "2017-07-05")
    assert t[fri] == mon and t[mon] == jul5
    realized_next = djia.set_index("ts")["rv_var"]
    assert res.forecasts.set_index("origin_ts").loc[mon, "realized_var"] == realized_next[jul5]


def test_row_target_end_uses_the_data_rows_even_with_a_missing_session() -> None:
    data = pd.DatetimeIndex(ny("2024-07-01", "2024-07-02", "2024-07-05", "2024-07-08"))  # no 3rd
    got = row_target_end(data, data[:3], [1, 2], "DJIA", DAY)
    assert list(got[1]) == [data[1], data[2], data[3]]
    assert list(got[2]) == [data[2], data[3], ny("2024-07-09")[0]]  # past the end: calendar
    with pytest.raises(ValueError, match="at or after the first data row"):
        row_target_end(data[1:], data[:1], [1], "DJIA", DAY)


def test_crypto_is_unchanged(data_dir: Path) -> None:
    path = data_dir / "binance_daily_realized_measures_btc_eth_2018_2026" / "btc_measures.csv"
    btc = pd.concat([c.frame for c in realized.read_measures_csv(path)], ignore_index=True)
    btc = btc[btc["ts"] >= pd.Timestamp("2023-01-01", tz="UTC")]
    fc = only(HARVol().fit(btc).predict(btc, horizons=(1, 5)))
    assert fc.symbol == "BTCUSDT" and fc.annualization == 365.0
    assert (fc.origins.dayofweek == 5).any()  # Saturday origins on a 24/7 venue
    te = fc.target_ends()
    for h in (1, 5):
        assert (te[h] - fc.origins == h * DAY).all()
    cal = calendar_target_end(fc.origins, [1, 5], "BTCUSDT", DAY)
    pd.testing.assert_frame_equal(cal, te, check_names=False)


def test_target_end_is_validated() -> None:
    o = pd.DatetimeIndex(ny("2024-07-05"))
    v = pd.DataFrame({1: [1e-4]}, index=o)
    with pytest.raises(ValueError, match="is not after its origin"):
        VolForecast(v, "DJIA", "1D", 252.0, "m", "1", o[0], target_end=pd.DataFrame({1: o}, index=o))
    with pytest.raises(ValueError, match="target_end must be a DataFrame with variance's origins"):
        VolForecast(v, "DJIA", "1D", 252.0, "m", "1", o[0], target_end=pd.DataFrame({2: o}, index=o))
    fc = VolForecast(v, "DJIA", "1D", 252.0, "m", "1", o[0])  # None: the NYSE calendar
    assert fc.target_ends().iat[0, 0] == ny("2024-07-08")[0]
