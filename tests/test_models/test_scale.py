"""Variance scale: ratio of means, out-of-sample estimation and an honest bootstrap interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.errors import ConfigError, DataError
from models.scale import ratio_of_means_interval, variance_scale


def simulate(rng: np.random.Generator, n: int, scale: float, h: int = 1, nu: float = 6.0):
    """Known forecasts f_t (a persistent log-variance) and per-period squared h-period returns whose
    true variance is ``scale x f`` (Student-t innovations with unit variance)."""
    x = np.zeros(n + h)
    e = rng.standard_normal(n + h) * 0.25
    for t in range(1, n + h):
        x[t] = 0.97 * x[t - 1] + e[t]
    f = np.exp(-8.0 + x)
    eps = rng.standard_t(nu, n + h) * np.sqrt((nu - 2) / nu)
    r1 = np.sqrt(scale * f) * eps
    fc = np.array([f[t + 1 : t + h + 1].mean() for t in range(n)])
    y = np.array([r1[t + 1 : t + h + 1].sum() ** 2 / h for t in range(n)])
    return y, fc


def test_interval_covers_the_known_scale_in_93_to_97_percent() -> None:
    rng = np.random.default_rng(20261202)
    truth = 1.5
    hits = 0
    for _ in range(200):
        y, f = simulate(rng, 600, truth, nu=10.0)
        s, lo, hi, _ = ratio_of_means_interval(y, f, n_boot=299, random_state=rng)
        assert lo < s < hi
        hits += lo <= truth <= hi
    assert 0.93 <= hits / 200 <= 0.97, hits


def test_ratio_is_the_ratio_of_means_and_the_block_length_is_at_least_h() -> None:
    rng = np.random.default_rng(1)
    y, f = simulate(rng, 300, 2.0, h=5)
    s, lo, hi, bl = ratio_of_means_interval(y, f, horizon=5, n_boot=199, random_state=3)
    assert s == pytest.approx(y.mean() / f.mean(), rel=1e-14)
    assert bl >= 5
    # same seed -> same interval
    assert ratio_of_means_interval(y, f, horizon=5, n_boot=199, random_state=3) == (s, lo, hi, bl)
    with pytest.raises(ValueError, match="at least 10 pairs"):
        ratio_of_means_interval(y[:5], f[:5])
    with pytest.raises(ValueError, match="'level' parameter must be in"):
        ratio_of_means_interval(y, f, level=1.5)


def _series(y, f, start="2020-01-01"):
    idx = pd.date_range(start, periods=len(y), freq="D", tz="UTC")
    return pd.Series(y, index=idx), pd.Series(f, index=idx)


def test_scale_uses_only_pairs_known_before_each_origin() -> None:
    rng = np.random.default_rng(2)
    h = 2
    y, f = simulate(rng, 400, 1.3, h=h)
    ys, fs = _series(y, f)
    vs = variance_scale(ys, fs, h, min_pairs=100, every=50, n_boot=99, random_state=0)
    est = vs.estimates
    pos = ys.index.get_indexer(est.index)
    # at origin position i the pairs j <= i - h are known: i - h + 1 of them (expanding)
    np.testing.assert_array_equal(est["n_pairs"].to_numpy(), pos - h + 1)
    for p, (_, row) in zip(pos, est.iterrows(), strict=True):
        assert row["scale"] == pytest.approx(y[: p - h + 1].mean() / f[: p - h + 1].mean(), rel=1e-12)
    assert est.index[-1] == ys.index[-1] and est.index[0] == ys.index[100 + h - 1]
    # perturbing the future (targets not yet complete) changes no estimate
    y2 = y.copy()
    y2[-h:] *= 100
    vs2 = variance_scale(pd.Series(y2, index=ys.index), fs, h, min_pairs=100, every=50, n_boot=99,
                         random_state=0)
    pd.testing.assert_frame_equal(vs.estimates, vs2.estimates)
    # rolling window
    vr = variance_scale(ys, fs, h, window=150, min_pairs=100, every=50, n_boot=99, random_state=0)
    assert vr.estimates["n_pairs"].max() == 150
    # at / apply: step function of the estimates
    t = est.index[1] + pd.Timedelta("3D")
    assert vs.at(t)["scale"] == est["scale"].iloc[1]
    applied = vs.apply(fs)
    assert np.isnan(applied.iloc[0])
    assert applied.loc[t] == pytest.approx(fs.loc[t] * est["scale"].iloc[1])
    with pytest.raises(KeyError, match="no variance scale"):
        vs.at("2019-01-01")


def test_missing_pairs_are_skipped_and_bad_input_is_rejected() -> None:
    rng = np.random.default_rng(4)
    y, f = simulate(rng, 200, 1.0)
    y[10:20] = np.nan
    ys, fs = _series(y, f)
    vs = variance_scale(ys, fs, 1, min_pairs=50, every=1000, n_boot=99, random_state=0)
    assert vs.latest()["n_pairs"] == 199 - 10
    with pytest.raises(ConfigError, match="'horizon' parameter must be an integer >= 1"):
        variance_scale(ys, fs, 0)
    with pytest.raises(ConfigError, match="'window' parameter must be None"):
        variance_scale(ys, fs, 1, window=5)
    with pytest.raises(DataError, match="share one index"):
        variance_scale(ys, fs.iloc[1:], 1)
    bad = fs.copy()
    bad.iloc[3] = -1.0
    with pytest.raises(DataError, match=r"column .forecast_var.: forecast_var must be > 0; got -1.0"):
        variance_scale(ys, bad, 1)
    # too little history: no estimate at all
    assert variance_scale(ys, fs, 1, min_pairs=500, n_boot=99).estimates.empty


@settings(max_examples=15, deadline=None)
@given(c=st.floats(1e-3, 1e3), d=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_scale_is_equivariant_in_the_units_of_y_and_f(c: float, d: float, seed: int) -> None:
    """Multiplying realized and forecast variance by constants multiplies every number by c/d."""
    y, f = simulate(np.random.default_rng(seed), 60, 1.2)
    a = ratio_of_means_interval(y, f, n_boot=99, block_length=2.0, random_state=seed)
    b = ratio_of_means_interval(c * y, d * f, n_boot=99, block_length=2.0, random_state=seed)
    np.testing.assert_allclose(b[:3], np.array(a[:3]) * c / d, rtol=1e-9)
