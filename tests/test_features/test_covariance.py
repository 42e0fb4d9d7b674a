"""Realized covariance: outer-product oracle, refresh times by hand, PSD guarantees, Higham."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from features.covariance import is_psd, nearest_correlation, realized_covariance
from features.schema import DataError

DAY = pd.Timestamp("2024-03-04", tz="UTC")


def _frame(ts, price, symbol):
    return pd.DataFrame(
        {"ts": pd.DatetimeIndex(ts).as_unit("ns"), "symbol": symbol, "price": price}
    )


def _matrix(res: pd.DataFrame, col: str) -> pd.DataFrame:
    return res.pivot(index="symbol_a", columns="symbol_b", values=col)


def test_equals_outer_product_sum_on_synchronous_grid(rng):
    ts = DAY + pd.to_timedelta(np.arange(289) * 300, unit="s")  # 00:00 seeds, then every 5 min
    chol = np.array([[1.0, 0, 0], [0.6, 0.8, 0], [-0.3, 0.2, 0.9]]) * 1e-3
    r = rng.standard_normal((288, 3)) @ chol.T
    lp = np.vstack([np.zeros(3), np.cumsum(r, axis=0)]) + np.log([10.0, 20.0, 30.0])
    df = pd.concat(
        [_frame(ts, np.exp(lp[:, j]), s) for j, s in enumerate("ABC")], ignore_index=True
    )
    res = realized_covariance(df)
    res = res[res["ts"] == DAY + pd.Timedelta("1D")]
    cov = _matrix(res, "cov_var").loc[list("ABC"), list("ABC")].to_numpy()
    np.testing.assert_allclose(cov, r.T @ r, rtol=1e-9)
    sd = np.sqrt(np.diag(r.T @ r))
    corr = _matrix(res, "corr").loc[list("ABC"), list("ABC")].to_numpy()
    np.testing.assert_allclose(corr, (r.T @ r) / np.outer(sd, sd), rtol=1e-9)
    assert (res["n_refresh"] == 288).all() and not res["repaired"].any()


def test_refresh_time_by_hand():
    sec = lambda xs: DAY + pd.Timedelta("1h") + pd.to_timedelta(xs, unit="s")  # noqa: E731
    pa = np.array([1.0, 2.0, 4.0, 8.0])
    pb = np.array([10.0, 11.0, 13.0])
    df = pd.concat(
        [_frame(sec([1, 2, 5, 9]), pa, "A"), _frame(sec([3, 4, 8]), pb, "B")], ignore_index=True
    )
    res = realized_covariance(df, sync="refresh_time", grid=None)
    # tau = 3, 5, 9: A = 2, 4, 8 and B = 10, 11, 13
    ra = np.diff(np.log([2.0, 4.0, 8.0]))
    rb = np.diff(np.log([10.0, 11.0, 13.0]))
    cov = _matrix(res, "cov_var")
    assert cov.loc["A", "B"] == pytest.approx(ra @ rb, rel=1e-12)
    assert cov.loc["A", "A"] == pytest.approx(ra @ ra, rel=1e-12)
    n = _matrix(res, "n_refresh")
    assert n.loc["A", "B"] == 3 and n.loc["A", "A"] == 4 and n.loc["B", "B"] == 3
    # with a 3-second minimum spacing: tau = 3, 6, 9 (A = 2, 4, 8; B = 10, 11, 13)
    res3 = realized_covariance(df, sync="refresh_time", grid="3s")
    n3 = _matrix(res3, "n_refresh")
    # A alone: tau = 1, 4 (1+3), 7 (4+3), 10 (7+3; A traded at 9): four refresh times
    assert n3.loc["A", "B"] == 3 and n3.loc["A", "A"] == 4
    assert _matrix(res3, "cov_var").loc["A", "B"] == pytest.approx(ra @ rb, rel=1e-12)


def test_previous_tick_pairwise_counts_and_absent_symbols(rng):
    ts_a = DAY + pd.to_timedelta(np.arange(1, 289) * 300, unit="s")
    ts_b = ts_a[::2]  # trades in every other 5-minute interval
    df = pd.concat(
        [
            _frame(ts_a, 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 288))), "A"),
            _frame(ts_b, 50 * np.exp(np.cumsum(rng.normal(0, 1e-3, 144))), "B"),
            _frame([DAY + pd.Timedelta("3h")], [5.0], "C"),  # one price: left out
        ],
        ignore_index=True,
    )
    res = realized_covariance(df)
    assert set(res["symbol_a"]) == {"A", "B"}
    n = _matrix(res, "n_refresh")
    # the first grid point with both prices is 00:05 (A and B); 287 returns follow
    assert n.loc["A", "A"] == 287 and n.loc["B", "B"] == 143 and n.loc["A", "B"] == 143


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(2, 6),
    n_ret=st.integers(1, 8),
    collinear=st.booleans(),
    sync=st.sampled_from(["previous_tick", "refresh_time"]),
    seed=st.integers(0, 2**31),
)
def test_always_psd_on_near_singular_inputs(d, n_ret, collinear, sync, seed):
    gen = np.random.default_rng(seed)
    ts = DAY + pd.to_timedelta(np.arange(n_ret + 1) * 300 + 60, unit="s")
    base = np.cumsum(gen.normal(0, 1e-3, n_ret + 1))
    frames = []
    for j in range(d):
        x = base * (1 + 1e-9 * j) if collinear else np.cumsum(gen.normal(0, 1e-3, n_ret + 1))
        frames.append(_frame(ts, 10 * np.exp(x), f"S{j}"))
    res = realized_covariance(pd.concat(frames, ignore_index=True), sync=sync)
    for _, g in res.groupby("ts"):
        cov = _matrix(g, "cov_var").to_numpy()
        corr = _matrix(g, "corr").to_numpy()
        assert is_psd(cov)
        if np.isfinite(corr).all():
            assert is_psd(corr)
            np.testing.assert_allclose(np.diag(corr), 1.0)
            assert np.abs(corr).max() <= 1.0


def test_eigenvalue_floor(rng):
    ts = DAY + pd.to_timedelta(np.arange(1, 4) * 300, unit="s")
    x = np.cumsum(rng.normal(0, 1e-3, 3))
    df = pd.concat([_frame(ts, np.exp(x), "A"), _frame(ts, np.exp(2 * x), "B")], ignore_index=True)
    res = realized_covariance(df, min_eig=1e-8)
    cov = _matrix(res, "cov_var").to_numpy()
    assert np.linalg.eigvalsh(cov).min() >= 1e-8 * (1 - 1e-6)


def test_nearest_correlation_higham_example():
    # Higham (2002), section 4: A = [[1,1,0],[1,1,1],[0,1,1]] with unit weights
    a = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    x = nearest_correlation(a)
    expected = np.array([[1.0, 0.7607, 0.1573], [0.7607, 1.0, 0.7607], [0.1573, 0.7607, 1.0]])
    np.testing.assert_allclose(x, expected, atol=5e-5)
    assert is_psd(x)


def test_nearest_correlation_against_direct_minimisation(rng):
    n = 4
    b = rng.uniform(-1, 1, (n, n))
    a = 0.5 * (b + b.T)
    np.fill_diagonal(a, 1.0)
    assert not is_psd(a)
    x = nearest_correlation(a)

    def corr_of(theta):  # rows of a lower-triangular factor, normalised: a correlation matrix
        low = np.zeros((n, n))
        low[np.tril_indices(n)] = theta
        low /= np.linalg.norm(low, axis=1, keepdims=True)
        return low @ low.T

    best = min(
        (
            optimize.minimize(
                lambda t: np.sum((corr_of(t) - a) ** 2),
                rng.normal(size=n * (n + 1) // 2),
                method="BFGS",
                options={"gtol": 1e-12},
            )
            for _ in range(5)
        ),
        key=lambda r: r.fun,
    )
    assert np.sum((x - a) ** 2) <= best.fun + 1e-7
    np.testing.assert_allclose(x, corr_of(best.x), atol=1e-3)
    # a valid correlation matrix is its own nearest
    np.testing.assert_allclose(nearest_correlation(x), x, atol=1e-8)


def test_is_psd_cases():
    assert is_psd(np.eye(3))
    assert is_psd(np.ones((2, 2)))
    assert not is_psd(np.array([[1.0, 2.0], [2.0, 1.0]]))
    assert not is_psd(np.array([[1.0, 0.5], [0.4, 1.0]]))
    assert not is_psd(np.array([[np.nan, 0.0], [0.0, 1.0]]))


def test_errors():
    df = _frame([DAY + pd.Timedelta("1h")], [1.0], "A")
    with pytest.raises(ValueError, match="'sync' parameter"):
        realized_covariance(df, sync="magic")
    with pytest.raises(ValueError, match="'grid' parameter is required"):
        realized_covariance(df, grid=None)
    with pytest.raises(ValueError, match="'min_eig' parameter"):
        realized_covariance(df, min_eig=-1.0)
    with pytest.raises(DataError, match="price -1.0 at row 0"):
        realized_covariance(df.assign(price=-1.0))
    with pytest.raises(ValueError, match="'c' parameter must be a square"):
        nearest_correlation(np.ones((2, 3)))
    assert realized_covariance(df).empty
