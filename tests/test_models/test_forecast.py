"""VolForecast: validation, the per-period-average vs cumulative guard, the long-table round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.forecast import (
    FRAME_COLUMNS,
    VolForecast,
    default_annualization,
    format_period,
    only,
    parse_horizon_unit,
)

ORIGINS = pd.date_range("2024-01-02", periods=4, freq="D", tz="UTC", name="origin_ts")


def make(values=None, **kw) -> VolForecast:
    values = (
        np.array([[1e-4, 2e-4], [1.5e-4, 2.5e-4], [3e-4, 2e-4], [1e-4, 1e-4]])
        if values is None
        else values
    )
    args = dict(
        variance=pd.DataFrame(values, index=ORIGINS[: len(values)], columns=[1, 5]),
        symbol="BTCUSDT",
        horizon_unit="1D",
        annualization=365.0,
        model_id="har",
        model_version="1",
        data_cutoff_ts=ORIGINS[len(values) - 1],
    )
    args.update(kw)
    return VolForecast(**args)


def test_cumulative_is_h_times_average_not_the_average():
    fc = make()
    avg5 = fc.variance[5]
    np.testing.assert_allclose(fc.cumulative_var(5), 5 * avg5)
    assert not np.allclose(fc.cumulative_var(5), avg5)  # the factor-h guard
    np.testing.assert_allclose(fc.cumulative_var(1), fc.variance[1])
    np.testing.assert_allclose(fc.vol(5) ** 2, fc.cumulative_var(5))
    np.testing.assert_allclose(fc.annualized_vol(5), np.sqrt(avg5 * 365.0))
    assert fc.horizons == [1, 5] and fc.period == pd.Timedelta(days=1)


def test_cumulative_matches_the_variance_of_h_period_returns(rng):
    """With iid returns of per-period variance s2, the h-period return has variance h*s2:
    sqrt(cumulative_var(h)) is the h-period vol, the stored average is not."""
    s2, h = 4e-4, 5
    fc = make(np.full((1, 2), s2)[:1], data_cutoff_ts=ORIGINS[0])
    r = rng.normal(0.0, np.sqrt(s2), size=(200_000, h)).sum(axis=1)
    assert r.var() == pytest.approx(float(fc.cumulative_var(h).iloc[0]), rel=0.02)
    assert r.std() == pytest.approx(float(fc.vol(h).iloc[0]), rel=0.01)
    assert abs(r.var() - s2) > 0.5 * r.var()


def test_to_frame_columns_and_values():
    fc = make()
    frame = fc.to_frame()
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert len(frame) == 8
    row = frame.iloc[3]  # origin 2, horizon 5
    assert row["origin_ts"] == ORIGINS[1] and row["horizon"] == 5
    assert row["target_start"] == ORIGINS[1]
    assert row["target_end"] == ORIGINS[1] + pd.Timedelta(days=5)
    assert row["forecast_var"] == 2.5e-4
    assert np.isnan(row["realized_var"]) and row["fallback_reason"] is None
    assert (frame["data_cutoff_ts"] == ORIGINS[3]).all()
    assert str(frame["origin_ts"].dtype) == "datetime64[ns, UTC]"


def test_round_trip_with_quantiles_fallbacks_and_per_origin_cutoff():
    q05 = make().variance * 0.5
    q95 = make().variance * 2.0
    fb = pd.Series([None, "h=1: replaced", None, None], index=ORIGINS)
    fc = make(
        quantiles={0.95: q95, 0.05: q05},
        fallback_reason=fb,
        data_cutoff_ts=pd.Series(ORIGINS, index=ORIGINS),
        annualization=365.0,
    )
    frame = fc.to_frame()
    assert list(frame.columns) == [*FRAME_COLUMNS[:9], "q_0.05", "q_0.95", *FRAME_COLUMNS[9:]]
    back = VolForecast.from_frame(frame)
    pd.testing.assert_frame_equal(back.variance, fc.variance, check_freq=False)
    pd.testing.assert_series_equal(
        back.data_cutoff_ts, fc.data_cutoff_ts, check_names=False, check_freq=False
    )
    pd.testing.assert_series_equal(back.fallback_reason, fc.fallback_reason, check_freq=False)
    assert list(back.quantiles) == [0.05, 0.95]
    pd.testing.assert_frame_equal(back.quantiles[0.95], q95, check_freq=False)
    assert (back.symbol, back.horizon_unit, back.annualization) == ("BTCUSDT", "1D", 365.0)
    assert (back.model_id, back.model_version) == ("har", "1")
    pd.testing.assert_frame_equal(back.to_frame(), frame)


def test_from_frame_annualization_and_unit_overrides():
    frame = make(horizon_unit="1h", annualization=8760.0).to_frame()
    back = VolForecast.from_frame(frame)
    assert back.horizon_unit == "1h" and back.annualization == pytest.approx(365 * 24)
    back = VolForecast.from_frame(frame, annualization=252.0 * 7)
    assert back.annualization == 1764.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.floats(1e-10, 1.0), min_size=3, max_size=3), min_size=1, max_size=4))
def test_round_trip_property(rows):
    values = np.array(rows)
    idx = ORIGINS[: len(values)]
    fc = VolForecast(
        variance=pd.DataFrame(values, index=idx, columns=[1, 2, 22]),
        symbol="ETHUSDT",
        horizon_unit="1D",
        annualization=365.0,
        model_id="m",
        model_version="2",
        data_cutoff_ts=idx[-1] + pd.Timedelta(hours=3),
    )
    back = VolForecast.from_frame(fc.to_frame())
    np.testing.assert_array_equal(back.variance.to_numpy(), values)
    assert back.data_cutoff_ts == fc.data_cutoff_ts and back.fallback_reason is None


def test_single_valued_cutoff_series_and_empty_fallback_are_normalised():
    fc = make(
        data_cutoff_ts=pd.Series([ORIGINS[3]] * 4, index=ORIGINS),
        fallback_reason=pd.Series([None] * 4, index=ORIGINS),
    )
    assert fc.data_cutoff_ts == ORIGINS[3] and fc.fallback_reason is None


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"values": np.array([[1e-4, -1.0]])}, r"variance must be finite and > 0; got -1.0"),
        ({"values": np.array([[np.nan, 1.0]])}, r"variance must be finite and > 0; got nan"),
        ({"symbol": ""}, "symbol must be a non-empty string"),
        ({"horizon_unit": "soon"}, "horizon_unit must be a pandas duration"),
        ({"annualization": 0.0}, "annualization must be finite and > 0; got 0.0"),
        ({"model_id": ""}, "model_id must be a non-empty string"),
        ({"data_cutoff_ts": pd.Timestamp("2024-01-01", tz="UTC")}, "before the last origin"),
        ({"data_cutoff_ts": pd.Timestamp("2025-01-01")}, "must be a UTC pandas Timestamp"),
    ],
    ids=["negative", "nan", "symbol", "unit", "annualization", "model_id", "cutoff", "naive"],
)
def test_validation_errors(kw, match):
    values = kw.pop("values", None)
    with pytest.raises(ValueError, match=match):
        make(values, **kw)


def test_index_and_column_errors():
    good = make().variance
    with pytest.raises(ValueError, match="UTC DatetimeIndex"):
        make(variance=good.tz_localize(None) if False else good.set_axis(range(4)))
    with pytest.raises(ValueError, match="sorted"):
        make(variance=good.iloc[::-1], data_cutoff_ts=ORIGINS[3])
    with pytest.raises(ValueError, match="duplicate origin"):
        make(variance=good.set_axis(ORIGINS[[0, 0, 1, 2]]))
    with pytest.raises(ValueError, match="horizons as ints >= 1"):
        make(variance=good.set_axis([0, 5], axis=1))
    with pytest.raises(ValueError, match="unique increasing"):
        make(variance=good.set_axis([5, 1], axis=1))
    with pytest.raises(ValueError, match="before its origin"):
        make(data_cutoff_ts=pd.Series(ORIGINS - pd.Timedelta(hours=1), index=ORIGINS))
    with pytest.raises(ValueError, match=r"quantiles\[0.5\] must be a DataFrame"):
        make(quantiles={0.5: good.iloc[:2]})
    with pytest.raises(ValueError, match="quantile level must be in"):
        make(quantiles={1.5: good})
    with pytest.raises(ValueError, match="fallback_reason must be a Series"):
        make(fallback_reason=pd.Series(["x"]))
    with pytest.raises(KeyError, match="horizon 22 is not in this forecast"):
        make().cumulative_var(22)


def test_from_frame_errors():
    frame = make().to_frame()
    two = pd.concat([frame, frame.assign(symbol="ETHUSDT")])
    with pytest.raises(ValueError, match="must hold one symbol; got 2"):
        VolForecast.from_frame(two)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['forecast_var'\]"):
        VolForecast.from_frame(frame.drop(columns="forecast_var"))
    with pytest.raises(ValueError, match="duplicate"):
        VolForecast.from_frame(pd.concat([frame, frame]))
    with pytest.raises(ValueError, match="every horizon at every origin"):
        VolForecast.from_frame(frame.iloc[1:])


def test_period_helpers():
    assert format_period(pd.Timedelta(days=1)) == "1D"
    assert format_period(pd.Timedelta(hours=1)) == "1h"
    assert format_period(pd.Timedelta(minutes=5)) == "5min"
    assert format_period(pd.Timedelta(seconds=30)) == "30s"
    assert parse_horizon_unit("4h") == pd.Timedelta(hours=4)
    with pytest.raises(ValueError, match="positive duration"):
        parse_horizon_unit("-1D")
    assert default_annualization("BTCUSDT", pd.Timedelta(days=1)) == 365.0
    assert default_annualization("SPX", pd.Timedelta(days=1)) == 252.0
    assert default_annualization("BTCUSDT", pd.Timedelta(hours=1)) == 365.0 * 24


def test_only_unwraps_one_symbol_and_names_the_symbols_otherwise():
    btc, eth = make(), make(symbol="ETHUSDT")
    assert only({"BTCUSDT": btc}) is btc
    with pytest.raises(ValueError, match=r"exactly one symbol; got 2: \['BTCUSDT', 'ETHUSDT'\]"):
        only({"BTCUSDT": btc, "ETHUSDT": eth})
    with pytest.raises(ValueError, match=r"exactly one symbol; got 0: \[\]"):
        only({})
