"""Tests of models.filtered: the Kalman recursion against a textbook reference, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.filtered import FilteredLogVol, calendar_terms, kalman_filter
from models.forecast import only


def _reference_kf(u, r, phi, v):
    """Textbook matrix Kalman filter (no clipping), stationary prior."""
    k = len(phi)
    F = np.diag(phi)
    Q = np.diag(v * (1 - phi**2))
    H = np.ones((1, k))
    m, P = np.zeros(k), np.diag(v)
    out = []
    for y, rr in zip(u, r, strict=True):
        m, P = F @ m, F @ P @ F.T + Q
        if np.isfinite(y):
            S = (H @ P @ H.T)[0, 0] + rr
            K = (P @ H.T)[:, 0] / S
            m = m + K * (y - (H @ m)[0])
            P = P - np.outer(K, H @ P)
        out.append(m.copy())
    return np.array(out)


def test_kalman_matches_reference() -> None:
    rng = np.random.default_rng(0)
    n = 300
    u = rng.standard_normal(n)
    u[[5, 40, 41]] = np.nan
    r = np.full(n, 0.3)
    phi, v = np.array([0.9, 0.995]), np.array([0.4, 0.2])
    ms, _ = kalman_filter(
        u, r, np.tile(phi, (n, 1)), np.tile(v, (n, 1)), np.zeros(2), np.diag(v), 0.0
    )
    np.testing.assert_allclose(ms, _reference_kf(u, r, phi, v), rtol=1e-10, atol=1e-12)


def test_calendar_terms_shape() -> None:
    ts = pd.date_range("2025-01-04 01:00", periods=48, freq="1h", tz="UTC")
    c = calendar_terms(ts, pd.Timedelta("1h"), 2, True)
    assert c.shape == (48, 6)
    np.testing.assert_allclose(c[:, 0], 1.0)
    assert c[0, -1] == 1.0  # Saturday


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2025-01-01 01:00", periods=n, freq="1h", tz="UTC")
    x = np.zeros(n)
    for t in range(1, n):
        x[t] = 0.95 * x[t - 1] + 0.2 * rng.standard_normal()
    season = 0.5 * np.sin(2 * np.pi * ts.hour.to_numpy() / 24)
    rv = 1e-4 * np.exp(x + season + 0.4 * rng.standard_normal(n))
    cnt = rng.poisson(200 * np.exp((x + season) / 2)).astype(float)
    return pd.DataFrame({"ts": ts, "symbol": "AAA", "rv_var": rv, "trade_count": cnt})


@pytest.mark.parametrize("activity", [None, "trade_count"])
def test_walk_forward_no_look_ahead(activity: str | None) -> None:
    X = _frame(900, 1)
    m = FilteredLogVol(
        horizons=(1, 24), half_lives=(3, 48), n_harmonics=2, activity_col=activity, window=400
    )
    a = m.walk_forward(X, (1, 24), refit_every=5)["AAA"].variance
    cut = X["ts"].iloc[700]
    Y = X.copy()
    later = Y["ts"] > cut
    Y.loc[later, "rv_var"] *= np.exp(np.random.default_rng(2).standard_normal(later.sum()))
    Y.loc[later, "trade_count"] += 50.0
    b = m.walk_forward(Y, (1, 24), refit_every=5)["AAA"].variance
    # the scale uses only targets complete at the origin, so forecasts up to the cut are unchanged
    common = a.index[a.index <= cut]
    assert len(common) > 250
    np.testing.assert_allclose(a.loc[common].to_numpy(), b.loc[common].to_numpy(), rtol=1e-12)
    assert np.isfinite(a.to_numpy()).all() and (a.to_numpy() > 0).all()


def test_fit_predict_positive_and_sane_level() -> None:
    X = _frame(700, 3)
    m = FilteredLogVol(horizons=(1, 24), half_lives=(3, 48), n_harmonics=2, window=500).fit(X)
    fc = only(m.predict(X))
    v = fc.variance.to_numpy()
    assert np.isfinite(v).all() and (v > 0).all()
    ratio = v[:, 1].mean() / X["rv_var"].mean()
    assert 0.5 < ratio < 2.0
