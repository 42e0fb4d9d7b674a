"""Calendar features, weekend share and the no-look-ahead diurnal profile."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.calendar import calendar_features, diurnal_profile, seasonally_adjust, weekend_share
from features.schema import DataError

UTC_TIMES = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2035, 12, 31)
).map(lambda d: pd.Timestamp(d, tz="UTC"))


# ---------------------------------------------------------------------------------------------
# calendar_features
# ---------------------------------------------------------------------------------------------
def test_calendar_features_24_7_by_hand():
    ts = pd.Series(
        pd.to_datetime(
            ["2024-01-06 13:45", "2024-01-08 00:00", "2024-01-07 23:59:59"],
            utc=True,
            format="ISO8601",
        ),
        index=[10, 11, 12],
    )
    f = calendar_features(ts)
    assert list(f.index) == [10, 11, 12]
    assert list(f["day_of_week"]) == [5, 0, 6]  # Saturday, Monday, Sunday
    assert list(f["is_weekend"]) == [1, 0, 1]
    assert list(f["hour_of_day"]) == [13, 0, 23]
    assert list(f["in_session"]) == [1, 1, 1]


def test_calendar_features_exchange_local_time_and_dst():
    ts = pd.DatetimeIndex(
        pd.to_datetime(
            [
                "2024-01-02 14:00",
                "2024-07-01 14:00",
                "2024-07-01 20:30",
                "2024-07-06 15:00",
                "2024-01-06 04:30",
            ],
            utc=True,
            format="ISO8601",
        )
    )
    f = calendar_features(ts, "XNYS")
    assert list(f["hour_of_day"]) == [9, 10, 16, 11, 23]  # EST in January, EDT in July
    assert list(f["in_session"]) == [0, 1, 0, 0, 0]  # 09:00 before the open; 16:30 after; Saturday
    assert list(f["day_of_week"]) == [
        1,
        0,
        0,
        5,
        4,
    ]  # 2024-01-06 04:30 UTC is Friday evening in New York
    assert list(f["is_weekend"]) == [0, 0, 0, 1, 0]


@settings(max_examples=100, deadline=None)
@given(UTC_TIMES, st.sampled_from(["24/7", "XNYS", "XTKS", "XLON"]))
def test_calendar_features_match_python_datetime(t, cal):
    tz = {"24/7": "UTC", "XNYS": "America/New_York", "XTKS": "Asia/Tokyo", "XLON": "Europe/London"}[
        cal
    ]
    local = t.to_pydatetime().astimezone(ZoneInfo(tz))
    f = calendar_features(pd.DatetimeIndex([t]), cal).iloc[0]
    assert f["day_of_week"] == local.weekday()
    assert f["hour_of_day"] == local.hour
    assert f["is_weekend"] == int(local.weekday() >= 5)


def test_calendar_features_errors():
    with pytest.raises(ValueError, match="The 'calendar' parameter must be one of"):
        calendar_features(pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC")]), "MOON")
    with pytest.raises(DataError, match="missing timestamp"):
        calendar_features(pd.Series([pd.Timestamp("2024-01-01", tz="UTC"), pd.NaT]))
    assert calendar_features(pd.DatetimeIndex([], tz="UTC")).empty


# ---------------------------------------------------------------------------------------------
# weekend_share
# ---------------------------------------------------------------------------------------------
def test_weekend_share_by_hand():
    # daily closes: 2024-01-06 00:00 UTC closes Friday 01-05, so its targets start on Saturday
    ts = pd.DatetimeIndex(
        pd.to_datetime(["2024-01-06", "2024-01-08", "2024-01-05 12:00"], utc=True, format="ISO8601")
    )
    assert list(weekend_share(ts, 1)) == [1.0, 0.0, 1.0]  # Sat | Mon | Sat
    assert list(weekend_share(ts, 2)) == [1.0, 0.0, 1.0]  # Sat Sun | Mon Tue | Sat Sun
    assert list(weekend_share(ts, 3)) == pytest.approx([2 / 3, 0.0, 2 / 3])
    assert weekend_share(ts, 7).to_numpy() == pytest.approx(np.full(3, 2 / 7))
    assert weekend_share(ts, 5).name == "weekend_share_5d"


@settings(max_examples=100, deadline=None)
@given(UTC_TIMES, st.integers(1, 30), st.sampled_from(["24/7", "XNYS", "XTKS"]))
def test_weekend_share_matches_date_enumeration(t, h, cal):
    tz = {"24/7": "UTC", "XNYS": "America/New_York", "XTKS": "Asia/Tokyo"}[cal]
    day_t = (t - pd.Timedelta(1, "ns")).tz_convert(tz).date()
    want = np.mean([(day_t + dt.timedelta(days=k)).weekday() >= 5 for k in range(1, h + 1)])
    assert weekend_share(pd.DatetimeIndex([t]), h, cal).iloc[0] == pytest.approx(want)


def test_weekend_share_errors():
    ts = pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC")])
    with pytest.raises(ValueError, match="The 'horizon_days' parameter"):
        weekend_share(ts, 0)


# ---------------------------------------------------------------------------------------------
# diurnal profile
# ---------------------------------------------------------------------------------------------
def _hourly(values: np.ndarray, start: str = "2024-01-01 01:00", symbol: str = "X") -> pd.DataFrame:
    ts = pd.date_range(start, periods=len(values), freq="1h", tz="UTC")
    return pd.DataFrame({"symbol": symbol, "ts": ts, "rv_var": values})


def test_diurnal_profile_by_hand():
    # three days of hourly bars; bucket of the bar closing hh:00 is (hh-1):00..hh:00
    v = np.arange(72, dtype="float64") + 1.0
    f = _hourly(v)
    p = diurnal_profile(f, "rv_var", "1h")
    assert p.name == "rv_var_profile"
    assert p.iloc[:24].isna().all()  # no earlier day
    np.testing.assert_allclose(p.iloc[24:48], v[:24])
    np.testing.assert_allclose(p.iloc[48:], (v[:24] + v[24:48]) / 2)
    trailing = diurnal_profile(f, "rv_var", "1h", window=1)
    np.testing.assert_allclose(trailing.iloc[48:], v[24:48])
    two = diurnal_profile(f, "rv_var", "1h", min_obs=2)
    assert two.iloc[:48].isna().all() and two.iloc[48:].notna().all()
    # 12-hour buckets: the profile at each row is the mean of all earlier rows in the same half-day
    half = diurnal_profile(f, "rv_var", "12h")
    bucket = ((f["ts"] - pd.Timedelta(1, "ns")).dt.hour // 12).to_numpy()
    for i in (5, 30, 71):
        earlier = [j for j in range(i) if bucket[j] == bucket[i]]
        assert half.iloc[i] == pytest.approx(v[earlier].mean())


def test_diurnal_profile_matches_pandas_expanding_reference(rng):
    frames = [_hourly(rng.gamma(2.0, 1.0, 24 * 20), symbol=s) for s in ("A", "B")]
    f = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=rng)
    f.loc[f.index[::17], "rv_var"] = np.nan  # missing values are skipped, not zero
    p = diurnal_profile(f, "rv_var", "1h")
    hour = (f["ts"] - pd.Timedelta(1, "ns")).dt.hour
    ref = (
        f.assign(h=hour)
        .sort_values("ts")
        .groupby(["symbol", "h"])["rv_var"]
        .transform(lambda x: x.shift(1).expanding().mean())
    )
    np.testing.assert_allclose(p, ref.reindex(f.index), rtol=1e-12)
    w = diurnal_profile(f, "rv_var", "1h", window=5)
    ref_w = (
        f.assign(h=hour)
        .sort_values("ts")
        .groupby(["symbol", "h"])["rv_var"]
        .transform(lambda x: x.shift(1).rolling(5, min_periods=1).mean())
    )
    np.testing.assert_allclose(w, ref_w.reindex(f.index), rtol=1e-12)


def test_diurnal_profile_no_look_ahead(rng):
    f = _hourly(rng.gamma(2.0, 1.0, 24 * 10))
    cut = f["ts"].iloc[130]
    g = f.copy()
    g.loc[g["ts"] > cut, "rv_var"] = 1e6
    g.loc[g["ts"] == cut, "rv_var"] = -5.0  # even the current row does not enter its own profile
    g = pd.concat(
        [g, _hourly(np.array([1e9]), start=str(f["ts"].iloc[-1] + pd.Timedelta("1h")))],
        ignore_index=True,
    )
    past = f["ts"] <= cut
    for kw in ({}, {"window": 3}):
        a = diurnal_profile(f, "rv_var", "1h", **kw)
        b = diurnal_profile(g, "rv_var", "1h", **kw)
        np.testing.assert_array_equal(a[past], b.iloc[: len(f)][past])
        assert not np.allclose(a[~past].dropna(), b.iloc[: len(f)][~past].dropna())


def test_diurnal_profile_exchange_buckets_follow_local_time():
    # 30-minute bars closing 10:00 New York time: 15:00 UTC in winter, 14:00 UTC in summer
    ts = pd.to_datetime(
        ["2024-03-01 15:00", "2024-03-04 15:00", "2024-03-12 14:00", "2024-03-13 14:00"],
        utc=True,
        format="ISO8601",
    )
    f = pd.DataFrame({"symbol": "SPY", "ts": ts, "rv_var": [1.0, 3.0, 5.0, 7.0]})
    p = diurnal_profile(f, "rv_var", "30min", calendar="XNYS")
    np.testing.assert_allclose(p, [np.nan, 1.0, 2.0, 3.0])
    utc = diurnal_profile(f, "rv_var", "30min")  # in UTC the summer bars fall in another bucket
    np.testing.assert_allclose(utc, [np.nan, 1.0, np.nan, 5.0])


def test_seasonally_adjust():
    f = _hourly(np.array([2.0, 4.0, 6.0]))
    prof = pd.Series([np.nan, 0.0, 3.0], index=f.index)
    np.testing.assert_allclose(seasonally_adjust(f, "rv_var", prof), [np.nan, np.nan, 2.0])
    assert seasonally_adjust(f, "rv_var", prof).name == "rv_var_sa"
    g = _hourly(np.tile(np.arange(1.0, 25.0), 3))
    sa = seasonally_adjust(g, "rv_var", diurnal_profile(g, "rv_var", "1h"))
    np.testing.assert_allclose(sa.iloc[24:], 1.0)  # a purely seasonal series adjusts to 1
    with pytest.raises(ValueError, match="The 'profile' parameter must be a Series aligned"):
        seasonally_adjust(f, "rv_var", pd.Series([1.0, 1.0, 1.0]).iloc[::-1])
    with pytest.raises(DataError, match="missing column 'nope'"):
        seasonally_adjust(f, "nope", prof)


def test_diurnal_profile_errors():
    f = _hourly(np.ones(5))
    with pytest.raises(ValueError, match="The 'bucket' parameter"):
        diurnal_profile(f, "rv_var", "7h")
    with pytest.raises(ValueError, match="The 'window' parameter"):
        diurnal_profile(f, "rv_var", window=0)
    with pytest.raises(ValueError, match="The 'min_obs' parameter"):
        diurnal_profile(f, "rv_var", min_obs=0)
    with pytest.raises(DataError, match="missing column 'rv_var'"):
        diurnal_profile(f.drop(columns="rv_var"), "rv_var")
    with pytest.raises(DataError, match="duplicate \\(symbol, ts\\)"):
        diurnal_profile(pd.concat([f, f.iloc[[2]]], ignore_index=True), "rv_var")
    with pytest.raises(ValueError, match="The 'calendar' parameter"):
        diurnal_profile(f, "rv_var", calendar="XXXX")
