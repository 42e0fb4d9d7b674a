"""Innovation distributions (unit variance, arch) and the t-copula's degrees of freedom."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from arch.univariate import SkewStudent
from scipy import stats

from features.errors import ConfigError, DataError
from models.innovations import fit_innovation, fit_innovations, fit_t_copula


def unit_t(rng: np.random.Generator, nu: float, n: int) -> np.ndarray:
    return rng.standard_t(nu, n) * np.sqrt((nu - 2) / nu)


def test_student_t_recovers_nu_and_is_chosen_over_the_normal() -> None:
    rng = np.random.default_rng(11)
    z = unit_t(rng, 5.0, 5000)
    m = fit_innovations(z)
    t = next(f for f in m.fits if f.name == "t")
    assert 4.2 < t.params["nu"] < 6.0
    assert m.chosen == "t"  # the skewed-t's extra parameter does not pay under BIC
    # the fit is the maximum of scipy's standardized-t likelihood (independent oracle)
    def scipy_ll(nu: float) -> float:
        s = np.sqrt((nu - 2) / nu)
        return float(np.sum(stats.t.logpdf(z / s, nu) - np.log(s)))
    assert t.loglik == pytest.approx(scipy_ll(t.params["nu"]), rel=1e-9)
    assert t.loglik >= scipy_ll(t.params["nu"] * 1.05) and t.loglik >= scipy_ll(t.params["nu"] / 1.05)
    assert t.bic == pytest.approx(-2 * t.loglik + np.log(5000))
    # unit variance: quantiles are scipy's t quantiles times sqrt((nu-2)/nu)
    nu = t.params["nu"]
    assert t.ppf(0.01) == pytest.approx(stats.t.ppf(0.01, nu) * np.sqrt((nu - 2) / nu), rel=1e-8)
    assert t.cdf(t.ppf(0.99)) == pytest.approx(0.99, rel=1e-8)
    assert set(m.summary()["name"]) == {"normal", "t", "skewt"}


def test_skewed_t_recovers_nu_and_lambda() -> None:
    dist = SkewStudent(seed=np.random.default_rng(5))
    z = dist.simulate([6.0, -0.3])(6000)
    m = fit_innovations(z, criterion="aic")
    sk = m.best
    assert m.chosen == "skewt"
    assert 4.8 < sk.params["nu"] < 7.5
    assert -0.37 < sk.params["lambda"] < -0.23


def test_normal_residuals_choose_the_normal() -> None:
    z = np.random.default_rng(3).standard_normal(3000)
    m = fit_innovations(z)
    assert m.chosen == "normal"
    assert m.best.loglik == pytest.approx(float(np.sum(stats.norm.logpdf(z))), rel=1e-12)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(DataError, match="at least 30 finite residuals"):
        fit_innovation(np.r_[np.ones(10), np.nan])
    with pytest.raises(ConfigError, match="'name' parameter must be one of"):
        fit_innovation(np.ones(100), "laplace")
    with pytest.raises(ConfigError, match="'criterion' parameter must be 'aic' or 'bic'"):
        fit_innovations(np.ones(100), criterion="hqic")


def _t_panel(rng: np.random.Generator, nu: float, n: int, corr: np.ndarray) -> pd.DataFrame:
    x = stats.multivariate_t(shape=corr, df=nu).rvs(size=n, random_state=rng)
    # monotone margins do not change a copula
    x[:, 1] = np.exp(x[:, 1])
    return pd.DataFrame(x, columns=["A", "B", "C"])


CORR = np.array([[1.0, 0.6, 0.3], [0.6, 1.0, 0.4], [0.3, 0.4, 1.0]])


def test_t_copula_recovers_nu_and_the_correlation() -> None:
    rng = np.random.default_rng(8)
    fit = fit_t_copula(_t_panel(rng, 4.0, 3000, CORR))
    assert 3.0 < fit.nu < 5.5
    np.testing.assert_allclose(fit.corr, CORR, atol=0.05)
    assert fit.loglik > fit.loglik_gaussian
    assert fit.symbols == ("A", "B", "C") and fit.n_obs == 3000 and not fit.repaired


def test_gaussian_panel_gives_a_large_nu() -> None:
    rng = np.random.default_rng(9)
    x = rng.multivariate_normal(np.zeros(3), CORR, size=3000)
    fit = fit_t_copula(pd.DataFrame(x, columns=list("ABC")))
    assert fit.nu > 30


def test_t_copula_rejects_bad_panels() -> None:
    with pytest.raises(DataError, match="at least 2 symbols"):
        fit_t_copula(pd.DataFrame({"A": np.ones(200)}))
    with pytest.raises(DataError, match="need 100 dates with every symbol's residual; got 50"):
        fit_t_copula(pd.DataFrame({"A": np.arange(50.0), "B": np.arange(50.0)}))
