"""Losses and tests: hand computations, statsmodels and arch as oracles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from models.losses import (
    default_block_size,
    diebold_mariano,
    mincer_zarnowitz,
    model_confidence_set,
    mse,
    mse_log,
    newey_west_lrv,
    qlike,
    qlike_ratio_ci,
    rmspe,
)


def test_losses_by_hand():
    y = np.array([1.0, 2.0, 4.0])
    f = np.array([1.0, 4.0, 2.0])
    np.testing.assert_allclose(qlike(y, f), [0.0, 0.5 - np.log(0.5) - 1, 2 - np.log(2) - 1])
    np.testing.assert_allclose(mse(y, f), [0.0, 4.0, 4.0])
    np.testing.assert_allclose(mse_log(y, f), [0.0, np.log(2) ** 2, np.log(2) ** 2])
    assert rmspe(y, f) == pytest.approx(np.sqrt((0 + 1 + 0.25) / 3))


@settings(max_examples=100, deadline=None)
@given(st.floats(1e-8, 1e2), st.floats(1.01, 50.0))
def test_qlike_properties(y, k):
    """Zero at f = y, positive elsewhere, and under-prediction by k costs more than over-prediction."""
    assert qlike([y], [y])[0] == pytest.approx(0.0, abs=1e-12)
    under, over = qlike([y], [y / k])[0], qlike([y], [y * k])[0]
    assert under > over > 0


def test_qlike_is_minimized_in_expectation_by_the_true_variance(rng):
    """Patton (2011): E[qlike(y, f)] with E[y] = s2 is minimized at f = s2 (noisy proxy)."""
    s2 = 2e-4
    y = s2 * rng.chisquare(3, 200_000) / 3
    grid = s2 * np.array([0.8, 0.9, 1.0, 1.1, 1.25])
    means = [qlike(y, np.full_like(y, g)).mean() for g in grid]
    assert int(np.argmin(means)) == 2


@pytest.mark.parametrize(
    ("y", "f", "match"),
    [
        ([1.0, 0.0], [1.0, 1.0], r"y must be finite and > 0; got 0.0 at position 1"),
        ([1.0, 1.0], [1.0, -2.0], r"f must be finite and > 0; got -2.0"),
        ([1.0, np.nan], [1.0, 1.0], r"y must be finite and > 0; got nan"),
        ([1.0], [1.0, 2.0], r"same shape; got \(1,\) and \(2,\)"),
    ],
)
def test_loss_input_errors(y, f, match):
    with pytest.raises(ValueError, match=match):
        qlike(y, f)


def test_newey_west_by_hand_and_statsmodels(rng):
    x = np.array([1.0, 3.0, 2.0, 5.0])
    e = x - x.mean()  # [-1.75, 0.25, -0.75, 2.25]
    g0 = e @ e / 4
    g1 = (e[1:] @ e[:-1]) / 4
    assert newey_west_lrv(x, 0) == pytest.approx(g0)
    assert newey_west_lrv(x, 1) == pytest.approx(g0 + 2 * 0.5 * g1)
    d = rng.normal(size=300) + 0.05
    for lag in (0, 3, 9):
        res = sm.OLS(d, np.ones_like(d)).fit(
            cov_type="HAC", cov_kwds={"maxlags": lag, "use_correction": False}
        )
        assert np.sqrt(newey_west_lrv(d, lag) / d.size) == pytest.approx(res.bse[0], rel=1e-10)
    with pytest.raises(ValueError, match=r"lag must be in \[0, 3\]; got 4"):
        newey_west_lrv(x, 4)


def test_diebold_mariano_by_hand():
    a = np.array([1.0, 2.0, 3.0, 2.0, 1.0, 3.0])
    b = np.array([2.0, 2.0, 2.0, 3.0, 3.0, 3.0])
    d = a - b  # [-1, 0, 1, -1, -2, 0], mean -0.5
    e = d - d.mean()
    g0, g1 = e @ e / 6, (e[1:] @ e[:-1]) / 6
    se = np.sqrt((g0 + g1) / 6)  # lag 1: weight 1 - 1/2
    r = diebold_mariano(a, b, h=2)
    assert r.lag == 1 and r.n == 6
    assert r.mean_diff == pytest.approx(-0.5)
    assert r.se == pytest.approx(se)
    assert r.stat == pytest.approx(-0.5 / se)
    assert r.pvalue == pytest.approx(2 * stats.norm.sf(abs(r.stat)))
    assert r.pvalue_less == pytest.approx(stats.norm.cdf(r.stat))
    assert r.pvalue_less + r.pvalue_greater == pytest.approx(1.0)


def test_diebold_mariano_against_statsmodels_and_harvey(rng):
    la = rng.gamma(2.0, 1.0, 500)
    lb = la + rng.normal(0.1, 1.0, 500)
    h = 5
    r = diebold_mariano(la, lb, h=h)
    res = sm.OLS(la - lb, np.ones(500)).fit(
        cov_type="HAC", cov_kwds={"maxlags": h - 1, "use_correction": False}
    )
    assert r.stat == pytest.approx(res.tvalues[0], rel=1e-10)
    assert r.pvalue == pytest.approx(res.pvalues[0], rel=1e-8)
    assert r.stat < 0 and r.pvalue_less < 0.05  # a has the lower loss
    hln = diebold_mariano(la, lb, h=h, harvey=True)
    k = np.sqrt((500 + 1 - 2 * h + h * (h - 1) / 500) / 500)
    assert hln.stat == pytest.approx(r.stat * k)
    assert hln.pvalue == pytest.approx(2 * stats.t(499).sf(abs(hln.stat)))


def test_diebold_mariano_errors():
    a = np.arange(1.0, 11.0)
    with pytest.raises(
        ValueError, match=r"lag must be >= h - 1 = 4 for overlapping targets; got 2"
    ):
        diebold_mariano(a, a + 1, h=5, lag=2)
    with pytest.raises(ValueError, match="zero variance"):
        diebold_mariano(a, a + 1)
    with pytest.raises(ValueError, match="equal length"):
        diebold_mariano(a, a[:5])


def test_mincer_zarnowitz(rng):
    f = rng.gamma(3.0, 1e-4, 2000)
    y = 1e-5 + 0.8 * f + rng.normal(0, 2e-5, 2000)
    y = np.abs(y)
    r = mincer_zarnowitz(y, f, lag=4)
    beta, alpha = np.polyfit(f, y, 1)
    assert (r.alpha, r.beta) == (pytest.approx(alpha, rel=1e-8), pytest.approx(beta, rel=1e-8))
    assert r.r2 == pytest.approx(np.corrcoef(f, y)[0, 1] ** 2, rel=1e-8)
    ref = sm.OLS(y, sm.add_constant(f)).fit(cov_type="HAC", cov_kwds={"maxlags": 4})
    assert r.beta_se == pytest.approx(ref.bse[1], rel=1e-10)
    assert r.wald_pvalue < 1e-6  # beta = 0.8 is rejected against 1
    unbiased = mincer_zarnowitz(f * np.exp(rng.normal(0, 0.1, 2000) - 0.005), f, log=True)
    assert unbiased.beta == pytest.approx(1.0, abs=0.05) and unbiased.wald_pvalue > 0.001
    with pytest.raises(ValueError, match="lag must be >= 0"):
        mincer_zarnowitz(y, f, lag=-1)


def test_mcs_contains_the_best_model_and_is_seeded(rng):
    n = 600
    base = rng.gamma(2.0, 1.0, n)
    losses = pd.DataFrame(
        {
            "best": base,
            "close": base + rng.normal(0.01, 0.3, n),
            "bad": base + 0.8 + rng.normal(0, 0.3, n),
            "worse": base + 1.5 + rng.normal(0, 0.3, n),
        }
    )
    r1 = model_confidence_set(losses, h=5, reps=300, random_state=7)
    r2 = model_confidence_set(losses, h=5, reps=300, random_state=7)
    assert "best" in r1.included
    assert set(r1.excluded) >= {"bad", "worse"}
    assert r1.pvalues["best"] == 1.0
    pd.testing.assert_series_equal(r1.pvalues, r2.pvalues)
    assert r1.block_size == default_block_size(n, 5) == 8
    with pytest.raises(
        ValueError, match=r"block_size must be >= h = 5 for overlapping targets; got 2"
    ):
        model_confidence_set(losses, h=5, block_size=2)
    with pytest.raises(ValueError, match="size must be in"):
        model_confidence_set(losses, size=1.5)
    single = model_confidence_set(losses[["best"]])
    assert single.included == ("best",)


def test_qlike_ratio_ci(rng):
    n = 800
    y = rng.gamma(2.0, 1e-4, n)
    good = y * np.exp(rng.normal(0, 0.3, n))
    bad = y * np.exp(rng.normal(0, 0.8, n))
    r = qlike_ratio_ci(y, good, bad, reps=300, random_state=3)
    assert r.ratio == pytest.approx(qlike(y, good).mean() / qlike(y, bad).mean())
    assert r.lower < r.ratio < r.upper < 1.0
    again = qlike_ratio_ci(y, good, bad, reps=300, random_state=3)
    assert (again.lower, again.upper) == (r.lower, r.upper)
    mbb = qlike_ratio_ci(y, good, bad, reps=300, bootstrap="moving_block", random_state=3, h=5)
    assert mbb.block_size >= 5 and mbb.lower < r.ratio < mbb.upper
    with pytest.raises(ValueError, match="bootstrap must be one of"):
        qlike_ratio_ci(y, good, bad, bootstrap="iid")
    with pytest.raises(ValueError, match="level must be in"):
        qlike_ratio_ci(y, good, bad, level=95)


def test_mcs_with_identical_loss_columns_gives_twins_the_same_verdict(rng):
    # two models with the same forecasts (e.g. both fell back to EWMA) used to make arch's MCS fail
    n = 500
    base = rng.gamma(2.0, 1.0, n)
    losses = pd.DataFrame(
        {
            "best": base,
            "twin": base.copy(),
            "bad": base + 1.0 + rng.normal(0, 0.3, n),
            "bad_twin": base + 1.0 + rng.normal(0, 0.3, n),
        }
    )
    losses["bad_twin"] = losses["bad"]
    r = model_confidence_set(losses, h=1, reps=300, random_state=3)
    ref = model_confidence_set(losses[["best", "bad"]], h=1, reps=300, random_state=3)
    assert set(r.included) == {"best", "twin"}
    assert set(r.excluded) == {"bad", "bad_twin"}
    assert r.pvalues["twin"] == r.pvalues["best"] == ref.pvalues["best"]
    assert r.pvalues["bad_twin"] == r.pvalues["bad"] == ref.pvalues["bad"]
    all_same = model_confidence_set(losses[["best", "twin"]], h=1, reps=50, random_state=3)
    assert all_same.included == ("best", "twin") and all_same.excluded == ()


def test_mcs_groups_columns_equal_up_to_round_off(rng):
    # rolling and Ledoit-Wolf-to-constant-correlation of two symbols differ by ~1e-14: arch's MCS
    # then hits tied statistics and fails, so they are grouped like exact twins
    n = 400
    base = rng.gamma(2.0, 1.0, n)
    losses = pd.DataFrame(
        {
            "a": base,
            "b": base + 1.0 + rng.normal(0, 0.3, n),
        }
    )
    losses["b_round_off"] = losses["b"] * (1 + 1e-14)
    r = model_confidence_set(losses, h=1, reps=200, random_state=3)
    ref = model_confidence_set(losses[["a", "b"]], h=1, reps=200, random_state=3)
    assert r.pvalues["b_round_off"] == r.pvalues["b"] == ref.pvalues["b"]
