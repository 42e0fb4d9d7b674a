"""Stressed-high and stressed-low correlations on a simulated panel with known regimes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.errors import ConfigError, DataError
from models.corr_stress import co_movement_corr, rolling_mean_correlation, stressed_correlations


def equicorr(d: int, rho: float) -> np.ndarray:
    return np.full((d, d), rho) + (1 - rho) * np.eye(d)


def regime_panel(rng: np.random.Generator, n: int = 3000, d: int = 4):
    """Calm days: correlation 0.5, vol 1%; crash days (4%): correlation 0.9, vol 2%, mean -6%;
    three 60-day decorrelation episodes: correlation 0, vol 1%."""
    kind = np.zeros(n, dtype=int)
    for start in (700, 1600, 2400):
        kind[start : start + 60] = 2
    calm = np.flatnonzero(kind == 0)
    kind[rng.choice(calm, size=int(0.04 * n), replace=False)] = 1
    x = np.empty((n, d))
    for k, (rho, vol, mu) in enumerate([(0.5, 0.01, 0.0), (0.9, 0.02, -0.06), (0.0, 0.01, 0.0)]):
        m = kind == k
        x[m] = mu + vol * rng.multivariate_normal(np.zeros(d), equicorr(d, rho), size=int(m.sum()))
    idx = pd.date_range("2015-01-01", periods=n, freq="D", tz="UTC")
    return pd.DataFrame(x, index=idx, columns=["A", "B", "C", "D"]), pd.Series(kind, index=idx)


def off(c: np.ndarray) -> np.ndarray:
    return c[np.triu_indices(len(c), 1)]


def test_regimes_are_found_and_matrices_are_psd() -> None:
    rng = np.random.default_rng(42)
    panel, kind = regime_panel(rng)
    sc = stressed_correlations(panel, worst_q=0.04, window=21, low_q=0.03)
    # stressed-high: the crash days, co-movement about zero ~ (0.9 v^2 + mu^2) / (v^2 + mu^2) = 0.99
    assert (kind[sc.high.dates] == 1).mean() > 0.9
    assert off(sc.high.corr).min() > 0.95
    # stressed-low: inside the decorrelation episodes, correlation near 0
    assert (kind[sc.low.dates] == 2).mean() > 0.8
    assert np.abs(off(sc.low.corr)).max() < 0.2
    u = off(sc.usual.corr)
    assert off(sc.low.corr).max() < u.min() and u.max() < off(sc.high.corr).min()
    for m in (sc.usual, sc.high, sc.low):
        np.testing.assert_allclose(np.diag(m.corr), 1.0)
        assert np.linalg.eigvalsh(m.corr).min() > -1e-12
        assert m.symbols == ("A", "B", "C", "D") and not m.repaired
        assert m.dates.is_monotonic_increasing
    assert "0.04 quantile" in sc.high.rule and "21-date windows" in sc.low.rule
    assert (kind == 2)[sc.low.dates].sum() >= 100  # most of the 180 episode days
    # the worst matrix: a long-only book -> high; a long/short hedge -> low
    assert sc.worst(np.array([1.0, 1.0, 1.0, 1.0])).kind == "high"
    assert sc.worst(pd.Series({"A": 1.0, "B": -1.0, "C": 0.0, "D": 0.0})).kind == "low"
    with pytest.raises(ValueError, match="exposure must be 4 finite values"):
        sc.worst(np.ones(3))


def test_centered_pearson_understates_crash_co_movement() -> None:
    rng = np.random.default_rng(1)
    panel, _ = regime_panel(rng)
    about_zero = stressed_correlations(panel, worst_q=0.04).high.corr
    pearson = stressed_correlations(panel, worst_q=0.04, center=True).high.corr
    assert off(pearson).mean() < off(about_zero).mean()


def test_co_movement_corr_matches_numpy_and_repairs_pairwise_matrices() -> None:
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.standard_normal((500, 3)), columns=list("ABC"))
    c, lam, rep = co_movement_corr(x, center=True)
    np.testing.assert_allclose(c, np.corrcoef(x.to_numpy().T), atol=1e-12)
    c0, _, _ = co_movement_corr(x)
    g = x.to_numpy().T @ x.to_numpy()
    np.testing.assert_allclose(c0, g / np.sqrt(np.outer(np.diag(g), np.diag(g))), atol=1e-12)
    # pairwise-complete dates: A~B and B~C on disjoint dates, A~C opposite -> not PSD
    a = np.r_[np.ones(50), np.full(50, np.nan), -np.ones(50)] + rng.normal(0, 0.01, 150)
    b = np.r_[np.ones(50), np.ones(50), np.full(50, np.nan)] + rng.normal(0, 0.01, 150)
    cc = np.r_[np.full(50, np.nan), np.ones(50), np.ones(50)] + rng.normal(0, 0.01, 150)
    c, lam, rep = co_movement_corr(pd.DataFrame({"A": a, "B": b, "C": cc}))
    assert rep and lam < -0.1
    assert np.linalg.eigvalsh(c).min() > -1e-10
    np.testing.assert_allclose(np.diag(c), 1.0)


def test_rolling_mean_correlation_matches_pandas() -> None:
    rng = np.random.default_rng(4)
    x = pd.DataFrame(rng.standard_normal((60, 3)), columns=list("ABC"))
    rm = rolling_mean_correlation(x, 10)
    w = x.iloc[20:30].corr().to_numpy()
    assert rm.iloc[29] == pytest.approx(w[np.triu_indices(3, 1)].mean(), rel=1e-10)
    assert rm.iloc[:9].isna().all()


def test_bad_input_is_rejected() -> None:
    rng = np.random.default_rng(5)
    panel, _ = regime_panel(rng, n=300)
    with pytest.raises(ConfigError, match="'worst_q' parameter must be in"):
        stressed_correlations(panel, worst_q=0.7)
    with pytest.raises(ConfigError, match="'window' parameter must be an integer >= 5"):
        stressed_correlations(panel, window=2)
    with pytest.raises(DataError, match="need at least 2 symbols"):
        stressed_correlations(panel[["A"]])
    with pytest.raises(DataError, match="the worst 1% of days are 3 dates; need 20"):
        stressed_correlations(panel, worst_q=0.01)
    with pytest.raises(DataError, match="need at least 41 dates"):
        stressed_correlations(panel.iloc[:30])
    with pytest.raises(DataError, match="unique, increasing"):
        stressed_correlations(panel.iloc[::-1])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), perm=st.permutations([0, 1, 2, 3]))
def test_permuting_symbols_permutes_every_matrix(seed: int, perm: list[int]) -> None:
    panel, _ = regime_panel(np.random.default_rng(seed), n=400)
    a = stressed_correlations(panel, worst_q=0.1, low_q=0.1)
    b = stressed_correlations(panel.iloc[:, perm], worst_q=0.1, low_q=0.1)
    for ma, mb in ((a.usual, b.usual), (a.high, b.high), (a.low, b.low)):
        np.testing.assert_allclose(mb.corr, ma.corr[np.ix_(perm, perm)], atol=1e-12)
        assert mb.dates.equals(ma.dates)
