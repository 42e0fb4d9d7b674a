"""Standardized residuals and their out-of-sample calibration diagnostics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from features.errors import ConfigError, DataError
from models.residuals import diagnose_residuals, kupiec_pof, standardized_residuals


def simulate(rng: np.random.Generator, n: int, h: int, nu: float = 6.0):
    """Returns with a known exogenous variance path, and the true h-period average variance."""
    x = np.zeros(n + h)
    e = rng.standard_normal(n + h) * 0.2
    for t in range(1, n + h):
        x[t] = 0.97 * x[t - 1] + e[t]
    var = np.exp(-8.0 + x)
    r1 = np.sqrt(var) * rng.standard_t(nu, n + h) * np.sqrt((nu - 2) / nu)
    idx = pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC")
    ret = pd.Series([r1[t + 1 : t + h + 1].sum() for t in range(n)], index=idx)
    fvar = pd.Series([var[t + 1 : t + h + 1].mean() for t in range(n)], index=idx)
    return ret, fvar


@pytest.mark.parametrize("h", [1, 5], ids=["h1", "h5"])
def test_known_variance_accepts_and_halved_variance_rejects(h: int) -> None:
    rng = np.random.default_rng(100 + h)
    ret, fvar = simulate(rng, 2500, h)
    z = standardized_residuals(ret, fvar, h)
    good = diagnose_residuals(z, h, n_boot=299, random_state=1)
    assert good.ez2_lower <= 1.0 <= good.ez2_upper
    assert good.accepts(), good
    if h == 1:  # t(6) innovations; a sum of 5 of them is close to normal
        assert 4.0 < good.dist_params["nu"] < 10.0
    else:
        assert good.dist_params["nu"] > 10.0
    bad = diagnose_residuals(standardized_residuals(ret, fvar / 2, h), h, n_boot=299,
                             random_state=1)
    assert bad.ez2_lower > 1.0  # E[z^2] = 2
    assert bad.kupiec_p_low < 0.05 and bad.kupiec_p_high < 0.05
    assert bad.pit_pvalue < 0.05
    assert not bad.accepts()
    assert bad.hit_rate_low > 0.02 and bad.hit_rate_high > 0.02


def test_residuals_are_returns_over_the_h_period_volatility() -> None:
    idx = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    ret = pd.Series([0.02, -0.04, np.nan], index=idx)
    f = pd.Series([1e-4, 4e-4, 1e-4], index=idx)
    z = standardized_residuals(ret, f, 2)
    np.testing.assert_allclose(z.to_numpy()[:2], [0.02 / np.sqrt(2e-4), -0.04 / np.sqrt(8e-4)])
    assert np.isnan(z.iloc[2])
    with pytest.raises(DataError, match=r"forecast_var must be > 0; got 0.0"):
        standardized_residuals(ret, f * 0, 1)
    with pytest.raises(ConfigError, match="'horizon' parameter must be an integer >= 1"):
        standardized_residuals(ret, f, 0)


def test_hit_distribution_uses_only_earlier_residuals() -> None:
    """Blowing up residuals at the end changes no fit used before them."""
    rng = np.random.default_rng(7)
    ret, fvar = simulate(rng, 800, 1)
    z = standardized_residuals(ret, fvar, 1)
    a = diagnose_residuals(z, 1, min_history=300, refit_every=500, n_boot=99, random_state=0)
    z2 = z.copy()
    z2.iloc[-5:] *= 50  # after the last refit (position 300 + 500 > 795)
    b = diagnose_residuals(z2, 1, min_history=300, refit_every=500, n_boot=99, random_state=0)
    assert a.dist_params == b.dist_params
    assert b.hit_rate_low + b.hit_rate_high > a.hit_rate_low + a.hit_rate_high


def test_kupiec_matches_the_binomial_likelihood_ratio() -> None:
    for hits, n, p in [(5, 250, 0.01), (0, 250, 0.01), (12, 1000, 0.01), (40, 40, 0.5)]:
        pi = hits / n
        lr = 2 * (stats.binom.logpmf(hits, n, pi) - stats.binom.logpmf(hits, n, p))
        assert kupiec_pof(hits, n, p) == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-10)
    assert kupiec_pof(10, 1000, 0.01) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="need n >= 1"):
        kupiec_pof(5, 3, 0.01)


def test_bad_settings_are_rejected() -> None:
    z = pd.Series(np.random.default_rng(0).standard_normal(400),
                  index=pd.date_range("2020-01-01", periods=400, freq="D", tz="UTC"), name="z_h1")
    with pytest.raises(ConfigError, match="'hit_levels' parameter must be"):
        diagnose_residuals(z, 1, hit_levels=(0.99, 0.01))
    with pytest.raises(ConfigError, match="'min_history' parameter must be an integer >= 30"):
        diagnose_residuals(z, 1, min_history=5)
    with pytest.raises(DataError, match="need at least 510 residuals"):
        diagnose_residuals(z, 1, min_history=500)
    zi = z.copy()
    zi.iloc[3] = np.inf
    with pytest.raises(DataError, match="residuals must be finite or NaN; got inf"):
        diagnose_residuals(zi, 1)
