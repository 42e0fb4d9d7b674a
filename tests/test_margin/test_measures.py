"""VaR/ES on finite scenario sets: the quantile convention by hand, closed forms (normal and
standardized t, via scipy), Euler attribution summing to the measure, coherence properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from features.errors import ConfigError, DataError
from margin.measures import es, euler, measure, tail_count, var, var_rank
from margin.scenarios import mc_standardized
from models.forecast import Innovation


def test_quantile_convention_by_hand() -> None:
    # losses 1..10 (pnl -1..-10): ES 80% = mean of the 2 largest losses, VaR 80% = 8th smallest
    pnl = -np.arange(1.0, 11.0)
    assert tail_count(10, 0.8) == 2 and es(pnl, 0.8) == pytest.approx(9.5)
    assert var_rank(10, 0.8) == 2 and var(pnl, 0.8) == 8.0
    assert tail_count(1000, 0.975) == 25  # 1000 x 0.025 = 25.000000000000004 -> 25
    assert var_rank(1000, 0.99) == 10  # the 990th smallest = the 11th largest
    assert tail_count(7, 0.999) == 1  # at least one scenario
    tm = measure(pnl, 0.8, "es")
    assert list(tm.scenarios) == [9, 8]
    # ties: lower scenario index first (deterministic tail)
    assert list(measure(np.array([-1.0, -5.0, -5.0, 0.0]), 0.75).scenarios) == [1]


def _normal_sample(n: int) -> np.ndarray:
    """Midpoint quantiles of N(0, 1): a deterministic 'sample' with an exact tail."""
    return stats.norm.ppf((np.arange(n) + 0.5) / n)


def test_normal_closed_forms() -> None:
    x = _normal_sample(400_000)
    assert var(x, 0.99) == pytest.approx(2.326, abs=2e-3)
    assert es(x, 0.975) == pytest.approx(2.338, abs=2e-3)
    assert es(x, 0.975) == pytest.approx(stats.norm.pdf(stats.norm.ppf(0.975)) / 0.025, rel=1e-4)
    sigma, h = 0.03, 2
    assert es(sigma * math.sqrt(h) * x, 0.975) == pytest.approx(2.338 * sigma * math.sqrt(h),
                                                                rel=1e-3)


@pytest.mark.parametrize("nu", [3.5, 5.0, 10.0])
def test_standardized_t_closed_forms(nu: float) -> None:
    n = 400_000
    c = 0.975
    x = stats.t.ppf((np.arange(n) + 0.5) / n, nu) * math.sqrt((nu - 2) / nu)  # unit variance
    q = stats.t.ppf(c, nu)
    es_t = (nu + q * q) / (nu - 1) * stats.t.pdf(q, nu) / (1 - c) * math.sqrt((nu - 2) / nu)
    assert es(x, c) == pytest.approx(es_t, rel=2e-3)
    assert var(x, 0.99) == pytest.approx(stats.t.ppf(0.99, nu) * math.sqrt((nu - 2) / nu),
                                         rel=1e-3)


def test_mc_t_marginals_converge_within_standard_error() -> None:
    """The Monte Carlo's unit-variance t marginals: ES within 4 standard errors of the closed form."""
    nu, n, c = 5.0, 100_000, 0.975
    draws = mc_standardized({"f": np.eye(1)}, n, 3, copula_df=nu,
                            marginals=[Innovation("t", {"nu": nu})])["f"][:, 0]
    s = math.sqrt((nu - 2) / nu)
    q = stats.t.ppf(c, nu)
    es_t = (nu + q * q) / (nu - 1) * stats.t.pdf(q, nu) / (1 - c) * s
    loss = -draws
    v = var(draws, c)
    tail = loss[loss >= v]
    se = math.sqrt((tail.var() + c * (tail.mean() - v) ** 2) / (n * (1 - c)))
    assert abs(es(draws, c) - es_t) < 4 * se
    assert draws.std() == pytest.approx(1.0, abs=0.03)


def test_euler_sums_to_the_measure() -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((7, 1000)) * rng.uniform(0.5, 3, size=(7, 1))
    for kind, c in (("es", 0.975), ("var", 0.99)):
        tm = measure(rows.sum(axis=0), c, kind)
        contrib = euler(rows, tm)
        assert math.isclose(contrib.sum(), tm.value, rel_tol=1e-12)
    with pytest.raises(DataError, match="position_pnl must have shape"):
        euler(rows[:, :10], measure(rows.sum(axis=0), 0.975))


def test_errors() -> None:
    with pytest.raises(DataError, match="at least one scenario"):
        es(np.array([]), 0.975)
    with pytest.raises(ConfigError, match="confidence must be in"):
        es(np.zeros(3), 1.0)
    with pytest.raises(DataError, match="NaN or inf"):
        es(np.array([0.0, np.nan]), 0.5)
    with pytest.raises(ConfigError, match="kind must be"):
        measure(np.zeros(3), 0.5, "cvar")


_vec = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=40, max_size=40)


@settings(max_examples=60, deadline=None)
@given(_vec, _vec, st.floats(0.01, 100.0))
def test_es_coherence_on_a_fixed_scenario_set(a: list[float], b: list[float], lam: float) -> None:
    x, y = np.array(a), np.array(b)
    tol = 1e-9 * (np.abs(x).sum() + np.abs(y).sum() + 1.0)
    assert es(x + y, 0.9) <= es(x, 0.9) + es(y, 0.9) + tol  # subadditive
    assert es(lam * x, 0.9) == pytest.approx(lam * es(x, 0.9), rel=1e-9, abs=1e-6)
    assert es(x, 0.9) >= var(x, 0.9) - tol  # ES >= VaR at the same level


@settings(max_examples=200, deadline=None)
@given(x=st.lists(st.integers(-5, 5), min_size=8, max_size=400),
       c=st.sampled_from([0.9, 0.95, 0.975, 0.99, 0.995]))
def test_the_partial_order_equals_the_full_stable_sort(x: list[int], c: float) -> None:
    """ES and VaR rest on the same scenarios, in the same order, as a full stable argsort would
    give (heavy ties: small integer P&L), whatever the tail size."""
    from margin.measures import _order, tail_count, var_rank

    a = np.asarray(x, dtype=np.float64)
    full = _order(a)
    e = measure(a, c, "es")
    assert np.array_equal(e.scenarios, full[:tail_count(a.size, c)])
    v = measure(a, c, "var")
    assert np.array_equal(v.scenarios, full[var_rank(a.size, c):][:1])
    big = np.tile(a, 40)  # long enough for the partition path
    assert np.array_equal(measure(big, c, "es").scenarios, _order(big)[:tail_count(big.size, c)])
    assert np.array_equal(measure(big, c, "var").scenarios,
                          _order(big)[var_rank(big.size, c):][:1])
