"""Diurnal HAR: the profile against a hand computation, the forecast against an independent
least-squares refit, no look-ahead, the contiguity check and parameter validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.schema import RV, SYMBOL, TS
from models.diurnal import DiurnalHARVol, bucket_ids, diurnal_shape
from models.forecast import only


def _frame(rng: np.random.Generator, n: int = 24 * 40, sym: str = "BTCUSDT") -> pd.DataFrame:
    ts = pd.date_range("2025-01-01 01:00", periods=n, freq="1h", tz="UTC")
    hour = (ts - pd.Timedelta(1, "ns")).hour.to_numpy()
    shape = 1.0 + 0.8 * np.sin(2 * np.pi * hour / 24)
    level = np.exp(np.convolve(rng.normal(0, 0.05, n), np.ones(30) / 30, mode="same"))
    rv = 1e-5 * shape * level * rng.chisquare(5, n) / 5
    return pd.DataFrame({TS: ts, SYMBOL: sym, RV: rv})


def test_bucket_ids_are_the_period_ending_at_ts() -> None:
    ts = pd.DatetimeIndex(["2025-01-01 10:00", "2025-01-01 10:30", "2025-01-02 00:00"], tz="UTC")
    assert bucket_ids(ts, pd.Timedelta("1h")).tolist() == [9, 10, 23]
    with pytest.raises(ValueError, match="dividing one day"):
        bucket_ids(ts, pd.Timedelta("7h"))


def test_diurnal_shape_hand_computed() -> None:
    rv = np.array([1.0, 3.0, 2.0, 6.0, 4.0, 2.0])
    b = np.array([0, 1, 0, 1, 0, 1])
    s = diurnal_shape(rv, b, 2, stat="mean", min_obs=1)
    # row 0: bucket 1 has no value yet -> NaN; row 1: P = (1, 3) -> shape (0.5, 1.5)
    assert np.isnan(s[0]).all()
    np.testing.assert_allclose(s[1], [0.5, 1.5])
    # row 3: P = (1.5, 4.5); row 5 window=None: P = (7/3, 11/3)
    np.testing.assert_allclose(s[3], [0.5, 1.5])
    np.testing.assert_allclose(s[5], np.array([7 / 3, 11 / 3]) / 3.0)
    # trailing window of 1 value per bucket: row 5 -> P = (4, 2)
    w = diurnal_shape(rv, b, 2, window=1, min_obs=1)
    np.testing.assert_allclose(w[5], [4 / 3, 2 / 3])
    # geometric mean: row 3 -> P = (sqrt 2, sqrt 18)
    g = diurnal_shape(rv, b, 2, stat="log", min_obs=1)
    p = np.array([np.sqrt(2.0), np.sqrt(18.0)])
    np.testing.assert_allclose(g[3], p / p.mean())
    assert np.isnan(diurnal_shape(rv, b, 2, min_obs=3)[4]).all()
    with pytest.raises(ValueError, match="'stat' parameter"):
        diurnal_shape(rv, b, 2, stat="median")


def test_forecast_matches_independent_refit(rng: np.random.Generator) -> None:
    X = _frame(rng, n=24 * 20)
    lags = (1, 6, 24)
    m = DiurnalHARVol(
        horizons=(1,), lags=lags, log=True, profile_stat="mean", window=120, insanity_filter=False
    ).fit(X)
    fc = only(m.predict(X))
    # independent computation: shape known strictly before each row, adjusted series, log-OLS
    rv = X[RV].to_numpy()
    hour = ((X[TS] - pd.Timedelta(1, "ns")).dt.hour).to_numpy()
    n = len(rv)
    prof = np.full((n, 24), np.nan)
    for i in range(n):
        for b in range(24):
            v = rv[: i + 1][hour[: i + 1] == b]
            if len(v) >= 5:
                prof[i, b] = v.mean()
    shape = prof / prof.mean(axis=1, keepdims=True)
    adj = np.full(n, np.nan)
    adj[1:] = rv[1:] / shape[np.arange(n - 1), hour[1:]]
    la = pd.Series(np.log(adj))
    Z = np.column_stack([np.ones(n)] + [la.rolling(k).mean().to_numpy() for k in lags])
    y = np.r_[la.to_numpy()[1:], np.nan]
    ok = np.isfinite(Z).all(axis=1) & np.isfinite(y)
    coef, *_ = np.linalg.lstsq(Z[ok], y[ok], rcond=None)
    resid = y[ok] - Z[ok] @ coef
    s2 = resid @ resid / (ok.sum() - len(coef))
    i = n - 1  # last origin: the target hour is bucket hour[i] + 1
    expect = np.exp(Z[i] @ coef + 0.5 * s2) * shape[i, (hour[i] + 1) % 24]
    np.testing.assert_allclose(fc.variance.iloc[-1, 0], expect, rtol=1e-9)


def test_walk_forward_has_no_look_ahead(rng: np.random.Generator) -> None:
    X = _frame(rng)
    model = DiurnalHARVol(horizons=(1, 3), lags=(1, 6, 24), log=True, profile_stat="log")
    start = X[TS].iloc[400]
    base = model.walk_forward(X, (1, 3), start=start)["BTCUSDT"].variance
    k = 600
    Y = X.copy()
    Y.loc[k + 1 :, RV] = Y.loc[k + 1 :, RV] * 50.0  # change everything after origin row k
    alt = model.walk_forward(Y, (1, 3), start=start)["BTCUSDT"].variance
    cut = X[TS].iloc[k]
    pd.testing.assert_frame_equal(base.loc[:cut], alt.loc[:cut])
    assert not np.allclose(base.loc[cut:].iloc[2:], alt.loc[cut:].iloc[2:])


def test_walk_forward_matches_refit_predict(rng: np.random.Generator) -> None:
    X = _frame(rng, n=24 * 25)
    model = DiurnalHARVol(horizons=(1,), lags=(1, 6, 24), window=120)
    i = 500
    wf = model.walk_forward(X, (1,), start=X[TS].iloc[i], end=X[TS].iloc[i])["BTCUSDT"].variance
    # at origin i the rows with a complete target are 0..i-1 (target of row j is row j + 1)
    fit = DiurnalHARVol(horizons=(1,), lags=(1, 6, 24), window=120).fit(X.iloc[: i + 1])
    pred = only(fit.predict(X.iloc[: i + 1])).variance.iloc[-1, 0]
    np.testing.assert_allclose(wf.iloc[0, 0], pred, rtol=1e-9)


def test_gap_raises(rng: np.random.Generator) -> None:
    X = _frame(rng, n=24 * 10)
    X = X.drop(index=100).reset_index(drop=True)
    with pytest.raises(ValueError, match="not contiguous"):
        DiurnalHARVol(window=50, lags=(1, 6)).fit(X)


def test_parameter_validation(rng: np.random.Generator) -> None:
    X = _frame(rng, n=24 * 10)
    with pytest.raises(ValueError, match="'profile_stat' parameter of DiurnalHARVol"):
        DiurnalHARVol(profile_stat="median").fit(X)
    with pytest.raises(ValueError, match="'lags' parameter of DiurnalHARVol"):
        DiurnalHARVol(lags=(0, 24)).fit(X)
