"""Calendar features and intraday seasonality without look-ahead.

- :func:`calendar_features`: day of week, weekend flag, hour of day (UTC on 24/7 venues, local
  session time on exchange calendars) and an in-session flag.
- :func:`weekend_share`: the share of weekend days among the target days ``t+1 .. t+h`` of a
  multi-day forecast (pure calendar arithmetic on the target window, not a look-ahead of data).
- :func:`diurnal_profile` / :func:`seasonally_adjust`: a time-of-day profile estimated at each row
  only from strictly earlier rows of the same symbol and bucket, and the value divided by it.
- :func:`exchange_holidays` / :func:`session_dates` / :func:`add_sessions`: the trading sessions of
  an exchange calendar (weekdays minus its holidays) and the close ``n`` sessions after a time, the
  end of an ``n``-period target window of daily exchange data.

Holidays
--------
No exchange-calendar package is a dependency (``exchange_calendars`` is not installed and pandas'
``USFederalHolidayCalendar`` is *not* the NYSE calendar: it has Columbus and Veterans Day, on which
the NYSE trades, and lacks Good Friday, on which it closes). The NYSE (``XNYS``) holidays are
therefore written here as pandas holiday rules: New Year's Day (a Sunday moves to Monday, a
Saturday is not made up), Martin Luther King Jr. Day (from 1998), Washington's Birthday, Good
Friday, Memorial Day, Juneteenth (from 2022), Independence Day, Labor Day, Thanksgiving and
Christmas (Saturday -> Friday, Sunday -> Monday), plus the unscheduled closures since 1994
(:data:`XNYS_SPECIAL_CLOSURES`). Tests check them against QuantLib's NYSE calendar (a test-only
dependency) over 1995-2026 and against the trading days of the Oxford-Man S&P 500 rows. The other
exchange calendars of :data:`features.symbols.CALENDARS` have no holiday rules yet: their sessions
are the weekdays.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.tseries.holiday import (
    AbstractHolidayCalendar,
    GoodFriday,
    Holiday,
    USLaborDay,
    USMartinLutherKingJr,
    USMemorialDay,
    USPresidentsDay,
    USThanksgivingDay,
    nearest_workday,
    sunday_to_monday,
)

from features.errors import ConfigError
from features.schema import SYMBOL, TS, DataError, to_utc_ns
from features.symbols import CALENDARS, Calendar

__all__ = [
    "XNYS_SPECIAL_CLOSURES",
    "add_sessions",
    "calendar_features",
    "diurnal_profile",
    "exchange_holidays",
    "seasonally_adjust",
    "session_dates",
    "weekend_share",
]

_DAY = pd.Timedelta("1D")


def _calendar(calendar: str) -> Calendar:
    try:
        return CALENDARS[calendar]
    except KeyError:
        raise ConfigError(
            f"The 'calendar' parameter must be one of {sorted(CALENDARS)}. Got {calendar!r} instead."
        ) from None


def _utc_index(ts: pd.Series | pd.DatetimeIndex, name: str = "ts") -> pd.DatetimeIndex:
    if isinstance(ts, pd.DatetimeIndex):
        idx = ts
    else:
        s = pd.Series(ts)
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            idx = pd.DatetimeIndex(s)
        else:
            try:
                idx = pd.DatetimeIndex(to_utc_ns(s))
            except (ValueError, TypeError) as exc:
                raise DataError(f"cannot read '{name}' as UTC times ({exc})", column=name) from None
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    idx = idx.tz_convert("UTC").as_unit("ns")
    if idx.hasnans:
        i = int(np.flatnonzero(idx.isna())[0])
        raise DataError(
            f"'{name}' has a missing timestamp at position {i}; expected a UTC time", column=name
        )
    return idx


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def calendar_features(ts: pd.Series | pd.DatetimeIndex, calendar: str = "24/7") -> pd.DataFrame:
    """Calendar features of timestamps.

    Parameters
    ----------
    ts : UTC timestamps (a bar's close when used on a feature frame).
    calendar : a :data:`features.symbols.CALENDARS` name: "24/7" uses UTC, an exchange calendar
        ("XNYS", ...) its local time zone.

    Returns
    -------
    DataFrame with one row per timestamp (index of ``ts`` kept when it is a Series):

    - ``day_of_week``: 0 = Monday .. 6 = Sunday (local date);
    - ``is_weekend``: 1 on Saturday and Sunday, else 0;
    - ``hour_of_day``: local hour 0..23 (UTC on 24/7);
    - ``in_session``: 1 when the local time lies in ``[open, close)`` of a session day (always 1 on
      24/7).
    """
    cal = _calendar(calendar)
    idx = _utc_index(ts)
    local = idx.tz_convert(cal.tz)
    dow = np.asarray(local.day_of_week, dtype="int64")
    hour = np.asarray(local.hour, dtype="int64")
    minute = hour * 60 + np.asarray(local.minute, dtype="int64")
    weekend = dow >= 5
    in_sess = (minute >= _minutes(cal.open_time)) & (minute < _minutes(cal.close_time))
    if cal.weekdays_only:
        in_sess &= ~weekend
    index = ts.index if isinstance(ts, pd.Series) else pd.RangeIndex(len(idx))
    return pd.DataFrame(
        {
            "day_of_week": dow.astype("int8"),
            "is_weekend": weekend.astype("int8"),
            "hour_of_day": hour.astype("int8"),
            "in_session": in_sess.astype("int8"),
        },
        index=index,
    )


def weekend_share(
    ts: pd.Series | pd.DatetimeIndex, horizon_days: int, calendar: str = "24/7"
) -> pd.Series:
    """Share of weekend days (Saturday, Sunday) among the target days ``t+1 .. t+h``.

    Day ``t`` of a timestamp is the local calendar date of the period ending at ``ts``: the date of
    ``ts - 1ns``, so a daily bar closing at 00:00 UTC on Tuesday is Monday's bar and its targets
    start on Tuesday; an intraday timestamp belongs to its own date. The target days are the next
    ``horizon_days`` calendar dates (local dates for exchange calendars). This is arithmetic on the
    target window's dates, known in advance, not a look-ahead of data.

    Returns
    -------
    Series of floats in [0, 1], named ``weekend_share_{h}d``.
    """
    if not isinstance(horizon_days, int | np.integer) or horizon_days < 1:
        raise ConfigError(
            f"The 'horizon_days' parameter must be an integer >= 1. Got {horizon_days!r} instead."
        )
    cal = _calendar(calendar)
    idx = _utc_index(ts)
    local = (idx - pd.Timedelta(1, "ns")).tz_convert(cal.tz)
    # weekday of day t (0=Mon); day t+k has weekday (dow + k) % 7
    dow = np.asarray(local.day_of_week, dtype="int64")
    k = np.arange(1, horizon_days + 1)
    wd = (dow[:, None] + k[None, :]) % 7
    share = (wd >= 5).mean(axis=1) if len(dow) else np.empty(0)
    index = ts.index if isinstance(ts, pd.Series) else pd.RangeIndex(len(idx))
    return pd.Series(share, index=index, name=f"weekend_share_{horizon_days}d", dtype="float64")


def _bucket_ids(idx: pd.DatetimeIndex, bucket: pd.Timedelta, tz: str) -> np.ndarray:
    """Time-of-day bucket of the period ending at each timestamp (local time of ``tz``)."""
    local = (idx - pd.Timedelta(1, "ns")).tz_convert(tz)
    ns_of_day = (
        np.asarray(local.hour, dtype="int64") * 3_600_000_000_000
        + np.asarray(local.minute, dtype="int64") * 60_000_000_000
        + np.asarray(local.second, dtype="int64") * 1_000_000_000
        + np.asarray(local.microsecond, dtype="int64") * 1_000
        + np.asarray(local.nanosecond, dtype="int64")
    )
    return ns_of_day // bucket.value


def diurnal_profile(
    frame: pd.DataFrame,
    value_col: str,
    bucket: str = "1h",
    calendar: str = "24/7",
    *,
    window: int | None = None,
    min_obs: int = 1,
) -> pd.Series:
    """Time-of-day profile of ``value_col`` using, at each row, only strictly earlier rows.

    Parameters
    ----------
    frame : long feature frame with ``symbol, ts`` (bar close) and ``value_col``; one row per
        (symbol, ts).
    value_col : the column to profile (e.g. ``rv_var`` of 5-minute bars, ``trade_count``).
    bucket : time-of-day bucket length dividing one day ("1h", "30min"). A row is put in the bucket
        of the period ending at its ``ts`` (``ts - 1ns``): a bar closing 10:00 is in 09:00-10:00.
    calendar : "24/7" buckets UTC time; an exchange calendar its local time.
    window : None for an expanding mean over all earlier rows of the same symbol and bucket, or the
        number of most recent earlier rows of that bucket (a trailing mean).
    min_obs : least number of earlier non-missing values needed, else NaN.

    Returns
    -------
    Series aligned to ``frame.index``, named ``{value_col}_profile``: the mean of ``value_col``
    over earlier rows of the same symbol and bucket (the current row is excluded, so the profile at
    ``ts`` depends only on data up to the previous occurrence of the bucket).
    """
    for c in (SYMBOL, TS, value_col):
        if c not in frame.columns:
            raise DataError(
                f"frame is missing column '{c}'; got columns {list(frame.columns)}", column=c
            )
    try:
        td = pd.Timedelta(bucket)
    except (ValueError, TypeError):
        td = None
    if td is None or td <= pd.Timedelta(0) or _DAY.value % td.value != 0:
        raise ConfigError(
            f"The 'bucket' parameter must be a positive duration dividing one day. Got {bucket!r} instead."
        )
    if window is not None and (not isinstance(window, int | np.integer) or window < 1):
        raise ConfigError(
            f"The 'window' parameter must be None or an integer >= 1. Got {window!r} instead."
        )
    if not isinstance(min_obs, int | np.integer) or min_obs < 1:
        raise ConfigError(
            f"The 'min_obs' parameter must be an integer >= 1. Got {min_obs!r} instead."
        )
    cal = _calendar(calendar)
    idx = _utc_index(frame[TS], TS)
    sym = frame[SYMBOL].astype("str").to_numpy()
    dup = pd.DataFrame({"s": sym, "t": idx.asi8}).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(
            f"frame has a duplicate (symbol, ts) = ({sym[i]!r}, {idx[i]}) at row {i}; expected one row per (symbol, ts)",
            column=TS,
        )
    try:
        values = frame[value_col].to_numpy(dtype="float64", na_value=np.nan)
    except (ValueError, TypeError):
        raise DataError(f"frame column '{value_col}' is not numeric", column=value_col) from None
    work = pd.DataFrame(
        {
            "s": sym,
            "b": _bucket_ids(idx, td, cal.tz),
            "t": idx.asi8,
            "v": values,
            "pos": np.arange(len(frame)),
        }
    ).sort_values(["s", "b", "t"], kind="stable")
    grp = work.groupby(["s", "b"], sort=False)["v"]
    prev = grp.shift(1)
    keys = [work["s"], work["b"]]
    if window is None:
        sums = prev.fillna(0.0).groupby(keys).cumsum()
        counts = prev.notna().astype("float64").groupby(keys).cumsum()
    else:
        sums = prev.groupby(keys).transform(lambda x: x.rolling(window, min_periods=1).sum())
        counts = (
            prev.notna()
            .astype("float64")
            .groupby(keys)
            .transform(lambda x: x.rolling(window, min_periods=1).sum())
        )
    c = counts.to_numpy(dtype="float64", na_value=0.0)
    s = sums.to_numpy(dtype="float64", na_value=np.nan)
    prof = np.full(len(work), np.nan)
    ok = c >= min_obs
    prof[ok] = s[ok] / c[ok]
    out = np.full(len(frame), np.nan)
    out[work["pos"].to_numpy()] = prof
    return pd.Series(out, index=frame.index, name=f"{value_col}_profile")


def seasonally_adjust(frame: pd.DataFrame, value_col: str, profile: pd.Series) -> pd.Series:
    """``value_col`` divided by its diurnal ``profile`` (NaN where the profile is 0 or missing).

    Parameters
    ----------
    frame : the frame holding ``value_col``.
    value_col : the column to adjust.
    profile : a Series aligned to ``frame.index``, e.g. from :func:`diurnal_profile`.

    Returns
    -------
    Series named ``{value_col}_sa``: the value relative to its usual level at that time of day.
    """
    if value_col not in frame.columns:
        raise DataError(
            f"frame is missing column '{value_col}'; got columns {list(frame.columns)}",
            column=value_col,
        )
    if not isinstance(profile, pd.Series) or not profile.index.equals(frame.index):
        raise ConfigError(
            "The 'profile' parameter must be a Series aligned to frame.index (as returned by "
            "diurnal_profile(frame, ...)). Got a misaligned or non-Series value instead."
        )
    v = frame[value_col].to_numpy(dtype="float64", na_value=np.nan)
    p = profile.to_numpy(dtype="float64", na_value=np.nan)
    out = np.full(len(v), np.nan)
    ok = np.isfinite(p) & (p != 0)
    np.divide(v, p, out=out, where=ok)
    return pd.Series(out, index=frame.index, name=f"{value_col}_sa")


# ---- exchange sessions -------------------------------------------------------------------------

XNYS_SPECIAL_CLOSURES = (
    "1994-04-27",  # President Nixon's funeral
    "2001-09-11",
    "2001-09-12",
    "2001-09-13",
    "2001-09-14",  # September 11
    "2004-06-11",  # President Reagan's funeral
    "2007-01-02",  # President Ford's funeral
    "2012-10-29",
    "2012-10-30",  # Hurricane Sandy
    "2018-12-05",  # President G.H.W. Bush's funeral
    "2025-01-09",  # President Carter's funeral
)
"""Unscheduled full-day NYSE closures since 1994 (local dates)."""


class _NYSEHolidays(AbstractHolidayCalendar):
    """The NYSE's regular full-day holidays (module notes)."""

    rules = [
        Holiday("New Year's Day", month=1, day=1, observance=sunday_to_monday),
        Holiday(
            "Martin Luther King Jr. Day",
            month=1,
            day=1,
            offset=USMartinLutherKingJr.offset,
            start_date="1998-01-01",
        ),
        USPresidentsDay,
        GoodFriday,
        USMemorialDay,
        Holiday("Juneteenth", month=6, day=19, observance=nearest_workday, start_date="2022-01-01"),
        Holiday("Independence Day", month=7, day=4, observance=nearest_workday),
        USLaborDay,
        USThanksgivingDay,
        Holiday("Christmas Day", month=12, day=25, observance=nearest_workday),
    ]


_HOLIDAY_RULES: dict[str, AbstractHolidayCalendar] = {"XNYS": _NYSEHolidays()}
_SPECIAL_CLOSURES: dict[str, tuple[str, ...]] = {"XNYS": XNYS_SPECIAL_CLOSURES}
_HOLIDAY_SPAN = (pd.Timestamp("1970-01-01"), pd.Timestamp("2100-12-31"))
_holiday_cache: dict[str, np.ndarray] = {}


def _holiday_days(calendar: str) -> np.ndarray:
    """All full-day holidays of ``calendar`` in 1970..2100 as sorted ``datetime64[D]`` (cached)."""
    if calendar not in _holiday_cache:
        rules = _HOLIDAY_RULES.get(calendar)
        days = pd.DatetimeIndex([]) if rules is None else rules.holidays(*_HOLIDAY_SPAN)
        days = days.union(pd.DatetimeIndex(list(_SPECIAL_CLOSURES.get(calendar, ()))))
        arr = np.asarray(days.normalize().to_numpy().astype("datetime64[D]"))
        _holiday_cache[calendar] = np.unique(arr[np.is_busday(arr)])
    return _holiday_cache[calendar]


def exchange_holidays(calendar: str, start: object, end: object) -> pd.DatetimeIndex:
    """Full-day holidays (weekdays without a session) of an exchange calendar in ``[start, end]``.

    Parameters
    ----------
    calendar : a :data:`features.symbols.CALENDARS` name; "24/7" and calendars without holiday
        rules (module notes) have none.
    start, end : local dates (anything ``pandas.Timestamp`` reads), inclusive.

    Returns
    -------
    DatetimeIndex of naive local dates, sorted.
    """
    _calendar(calendar)
    lo = np.datetime64(pd.Timestamp(start).date(), "D")
    hi = np.datetime64(pd.Timestamp(end).date(), "D")
    days = _holiday_days(calendar)
    return pd.DatetimeIndex(days[(days >= lo) & (days <= hi)].astype("datetime64[ns]"))


def session_dates(calendar: str, start: object, end: object) -> pd.DatetimeIndex:
    """The trading days of ``calendar`` in ``[start, end]`` (naive local dates): every day on
    "24/7", weekdays minus :func:`exchange_holidays` on an exchange calendar."""
    cal = _calendar(calendar)
    days = pd.date_range(pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize(), freq="D")
    if not cal.weekdays_only:
        return days
    d = days.to_numpy().astype("datetime64[D]")
    return days[np.is_busday(d, holidays=_holiday_days(calendar))]


def add_sessions(ts: pd.Series | pd.DatetimeIndex, n: int, calendar: str) -> pd.DatetimeIndex:
    """The time ``n`` trading sessions after each timestamp, at the same local time of day.

    Parameters
    ----------
    ts : UTC timestamps of session closes (a daily row's ``ts``).
    n : sessions to move forward (an int >= 0).
    calendar : a :data:`features.symbols.CALENDARS` name. On "24/7" a session is a day, so the
        result is ``ts + n days``; on an exchange calendar the local date moves to the ``n``-th next
        trading day (weekends and :func:`exchange_holidays` skipped; a row on a non-trading day
        counts from the trading day before it) and keeps the local wall-clock time, so a Friday 16:00 New York close plus one session is Monday's 16:00 close (Tuesday's
        after a Monday holiday), daylight-saving changes included.

    Returns
    -------
    DatetimeIndex of UTC timestamps (ns), one per input.
    """
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 0:
        raise ConfigError(f"The 'n' parameter must be an integer >= 0. Got {n!r} instead.")
    cal = _calendar(calendar)
    idx = _utc_index(ts)
    if not cal.weekdays_only or n == 0:
        return idx + int(n) * _DAY
    local = idx.tz_convert(cal.tz).tz_localize(None)
    day = local.normalize()
    time_of_day = local - day
    d = day.to_numpy().astype("datetime64[D]")
    # a row on a non-trading day (a special session) rolls back first: its next session is the
    # first trading day after it
    target = np.busday_offset(d, int(n), roll="backward", holidays=_holiday_days(calendar))
    wall = pd.DatetimeIndex(target.astype("datetime64[ns]")) + time_of_day
    return (
        wall.tz_localize(cal.tz, nonexistent="shift_forward", ambiguous=np.zeros(len(wall), bool))
        .tz_convert("UTC")
        .as_unit("ns")
    )
