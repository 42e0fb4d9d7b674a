"""Empirical out-of-sample quantiles: a hand-computed case, no look-ahead, and coverage near the
nominal level on a stationary process where validation-free quantiles are known to work."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.calibrate import empirical_quantiles
from models.forecast import VolForecast


def _fc(ts: pd.DatetimeIndex, f: np.ndarray, h: int = 1) -> VolForecast:
    return VolForecast(
        variance=pd.DataFrame({h: f}, index=ts),
        symbol="X",
        horizon_unit="1D",
        annualization=365.0,
        model_id="m",
        model_version="1",
        data_cutoff_ts=pd.Series(ts, index=ts),
    )


def test_hand_computed_quantiles_and_the_first_usable_origin():
    ts = pd.date_range("2024-01-01", periods=8, freq="D", tz="UTC")
    rv = np.array([1.0, 2.0, 4.0, 1.0, 3.0, 2.0, 5.0, 1.0])
    f = np.full(8, 2.0)
    out = empirical_quantiles(_fc(ts, f), ts, rv, levels=(0.5,), window=3, min_history=2)
    # origin j's h=1 error log(rv[j+1] / 2) is usable at origin i when j + 1 <= i
    err = np.log(rv[1:] / 2.0)  # errors of origins 0..6
    assert out.variance.index[0] == ts[2]  # origins 0 and 1 usable at row 2
    for i in range(2, 8):
        e = err[:i][-3:]
        assert out.quantiles[0.5].loc[ts[i], 1] == pytest.approx(2.0 * np.exp(np.median(e)))


def test_no_look_ahead(rng):
    n, h = 400, 5
    ts = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    rv = np.exp(rng.normal(-8, 0.5, n))
    f = np.exp(rng.normal(-8, 0.1, n))
    a = empirical_quantiles(_fc(ts, f, h), ts, rv, window=200, min_history=50)
    rv2 = rv.copy()
    cut = 300
    rv2[cut + 1 :] *= 10.0  # targets after the cut change
    b = empirical_quantiles(_fc(ts, f, h), ts, rv2, window=200, min_history=50)
    for q in a.quantiles:
        pd.testing.assert_frame_equal(a.quantiles[q].loc[: ts[cut]], b.quantiles[q].loc[: ts[cut]])
        assert not np.allclose(a.quantiles[q].iloc[-1], b.quantiles[q].iloc[-1])


def test_coverage_is_nominal_on_a_stationary_process(rng):
    # y = f x lognormal noise: the empirical quantiles of past errors cover at the nominal rate
    n = 6000
    ts = pd.date_range("2000-01-01", periods=n, freq="D", tz="UTC")
    f = np.exp(rng.normal(-8, 0.3, n))
    rv = np.empty(n)
    rv[1:] = f[:-1] * np.exp(rng.normal(0, 0.7, n - 1))
    rv[0] = f[0]
    out = empirical_quantiles(_fc(ts, f), ts, rv, window=1000, min_history=500)
    pos = ts.get_indexer(out.variance.index)[:-1]
    y = rv[pos + 1]
    q = {k: v[1].to_numpy()[:-1] for k, v in out.quantiles.items()}
    cov95 = np.mean((y >= q[0.025]) & (y <= q[0.975]))
    cov99 = np.mean((y >= q[0.005]) & (y <= q[0.995]))
    assert abs(cov95 - 0.95) < 0.01 and abs(cov99 - 0.99) < 0.005


def test_errors(rng):
    ts = pd.date_range("2024-01-01", periods=50, freq="D", tz="UTC")
    fc = _fc(ts, np.ones(50))
    with pytest.raises(ValueError, match="levels must be distinct values in"):
        empirical_quantiles(fc, ts, np.ones(50), levels=(1.5,))
    with pytest.raises(ValueError, match="min_history <= window"):
        empirical_quantiles(fc, ts, np.ones(50), window=10, min_history=20)
    with pytest.raises(ValueError, match="no origin of X has 60 earlier"):
        empirical_quantiles(fc, ts, np.ones(50), window=100, min_history=60)
    with pytest.raises(ValueError, match="ts has 50 rows but rv_var has 49"):
        empirical_quantiles(fc, ts, np.ones(49))
    with pytest.raises(ValueError, match="is not a row of ts"):
        empirical_quantiles(fc, ts[1:], np.ones(49))
