"""The close-to-close forward target: log return over h periods, per-period square, calendar gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import schema as S
from features.errors import DataError
from features.targets import C2C_RET, C2C_VAR, forward_close_to_close, target_name


def bars(ts: pd.DatetimeIndex, close: np.ndarray, symbol: str = "BTCUSDT") -> pd.DataFrame:
    return pd.DataFrame({S.TS: ts, S.SYMBOL: symbol, S.CLOSE: close})


def test_matches_a_pandas_reference_and_is_per_period(rng) -> None:
    n = 40
    ts = pd.date_range("2024-01-02", periods=n, freq="D", tz="UTC")
    frames = [bars(ts, np.exp(np.cumsum(rng.normal(0, 0.03, n))) * 100, s) for s in ("BTCUSDT", "ETHUSDT")]
    f = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=3)
    out = forward_close_to_close(f, (1, 2, 5))
    for h in (1, 2, 5):
        ref = f.sort_values([S.SYMBOL, S.TS]).groupby(S.SYMBOL)[S.CLOSE].transform(
            lambda s, h=h: np.log(s.shift(-h) / s))
        pd.testing.assert_series_equal(out[target_name(C2C_RET, h)], ref.loc[f.index],
                                       check_names=False, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(out[target_name(C2C_VAR, h)], ref.loc[f.index] ** 2 / h,
                                   rtol=1e-12, atol=1e-16)
        # the last h rows of each symbol have no target
        last = f.sort_values(S.TS).groupby(S.SYMBOL).tail(h).index
        assert out.loc[last, target_name(C2C_RET, h)].isna().all()


def test_a_missing_day_makes_targets_across_it_nan() -> None:
    ts = pd.date_range("2024-03-01", periods=10, freq="D", tz="UTC").delete(5)  # day 5 missing
    f = bars(ts, np.linspace(100, 110, 9))
    out = forward_close_to_close(f, (1, 2), interval=pd.Timedelta("1D"))
    r1, r2 = out[target_name(C2C_RET, 1)], out[target_name(C2C_RET, 2)]
    # row 4 is day 4, row 5 is day 6: the step 4 -> 5 spans the gap
    assert np.isnan(r1.iloc[4]) and np.isfinite(r1.iloc[3]) and np.isfinite(r1.iloc[5])
    assert np.isnan(r2.iloc[3]) and np.isnan(r2.iloc[4]) and np.isfinite(r2.iloc[5])
    # inferred spacing (median) gives the same answer
    pd.testing.assert_frame_equal(out, forward_close_to_close(f, (1, 2)))
    # a NaN close: NaN target, nothing else touched
    g = f.copy()
    g.loc[7, S.CLOSE] = np.nan
    o2 = forward_close_to_close(g, (1,))
    assert o2[target_name(C2C_RET, 1)].iloc[[6, 7]].isna().all()
    assert np.isfinite(o2[target_name(C2C_RET, 1)].iloc[5])


def test_exchange_sessions_skip_weekends_and_one_holiday_but_not_more() -> None:
    # SPX closes 16:00 New York: Thu 2024-03-28, (Good Friday closed), Mon 04-01, Tue, Wed,
    # then a week missing, then Wed 04-10
    local = pd.to_datetime(["2024-03-27 16:00", "2024-03-28 16:00", "2024-04-01 16:00",
                            "2024-04-02 16:00", "2024-04-03 16:00", "2024-04-10 16:00"])
    ts = local.tz_localize("America/New_York").tz_convert("UTC")
    f = bars(ts, np.array([100.0, 101, 102, 103, 104, 105]), symbol="SPX")
    r1 = forward_close_to_close(f, (1,))[target_name(C2C_RET, 1)]
    assert np.isfinite(r1.iloc[:4]).all()  # Thu -> Mon skips a weekend and one holiday
    assert np.isnan(r1.iloc[4])  # Wed -> next Wed skips four weekdays: a gap
    strict = forward_close_to_close(f, (1,), max_skipped_sessions=0)[target_name(C2C_RET, 1)]
    assert np.isnan(strict.iloc[1]) and np.isfinite(strict.iloc[2])
    # the same data on a 24/7 calendar: every uneven step is a gap
    as_247 = forward_close_to_close(f, (1,), calendar="24/7", interval=pd.Timedelta("1D"))
    assert as_247[target_name(C2C_RET, 1)].notna().sum() == 3


def test_targets_look_only_forward(rng) -> None:
    ts = pd.date_range("2024-01-01", periods=30, freq="h", tz="UTC")
    f = bars(ts, np.exp(np.cumsum(rng.normal(0, 0.01, 30))))
    base = forward_close_to_close(f, (1, 4))
    g = f.copy()
    g.loc[12, S.CLOSE] *= 2
    pert = forward_close_to_close(g, (1, 4))
    changed = ~np.isclose(base.to_numpy(), pert.to_numpy(), equal_nan=True)
    rows = np.flatnonzero(changed.any(axis=1))
    assert rows.min() == 8 and rows.max() == 12  # origins t with t < 12 <= t + 4, and t = 12


def test_bad_input_is_rejected() -> None:
    ts = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    f = bars(ts, np.array([1.0, 2.0, -3.0, 4.0, 5.0]))
    with pytest.raises(DataError, match=r"column 'close': close prices must be finite and > 0; got -3.0"):
        forward_close_to_close(f)
    with pytest.raises(DataError, match="column 'close': missing column"):
        forward_close_to_close(f.drop(columns=[S.CLOSE]))
    with pytest.raises(ValueError, match="'horizons' parameter must contain integers >= 1"):
        forward_close_to_close(f.assign(close=1.0), (0,))
    with pytest.raises(ValueError, match="'calendar' parameter must be one of"):
        forward_close_to_close(f.assign(close=1.0), calendar="LSE")
    dup = pd.concat([f, f.iloc[[1]]]).assign(close=1.0)
    with pytest.raises(DataError, match="timestamps of BTCUSDT must be unique"):
        forward_close_to_close(dup, (1,))


@settings(max_examples=25, deadline=None)
@given(c=st.floats(1e-4, 1e4), seed=st.integers(0, 2**16), drop=st.integers(0, 29))
def test_price_units_do_not_matter(c: float, seed: int, drop: int) -> None:
    """Targets are invariant to the price unit, with or without a gap."""
    ts = pd.date_range("2024-01-01", periods=30, freq="D", tz="UTC").delete(drop)
    px = np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.02, 29)))
    a = forward_close_to_close(bars(ts, px), (1, 3), interval=pd.Timedelta("1D"))
    b = forward_close_to_close(bars(ts, c * px), (1, 3), interval=pd.Timedelta("1D"))
    pd.testing.assert_frame_equal(a, b, rtol=1e-9, atol=1e-12)
