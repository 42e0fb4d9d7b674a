"""Correlation forecasters: recursions by hand, oracles (pandas, sklearn, numpy), DCC parameter
recovery, PSD under near-singular inputs, no look-ahead and the estimator contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.covariance import LedoitWolf
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression

from features.covariance import is_psd
from models.corr import (
    CorrPanel,
    DCCCorr,
    EWMACorr,
    MissingCorrInputsError,
    RealizedCorrHAR,
    RollingCorr,
    ShrinkageCorr,
    as_panel,
    constant_correlation_shrinkage,
    cov_to_corr,
    dcc_loglik,
    ensure_correlation,
    ewma_covariance,
    returns_panel,
    stressed_correlation,
)
from models.corr_forecast import check_correlation

SYMS = ("AAA", "BBB", "CCC")


def make_panel(r: np.ndarray, rc: np.ndarray | None = None, start: str = "2020-01-01") -> CorrPanel:
    ts = pd.date_range(start, periods=len(r), freq="D", tz="UTC")
    syms = SYMS[: r.shape[1]] if r.shape[1] <= 3 else tuple(f"S{i}" for i in range(r.shape[1]))
    return CorrPanel(ts, syms, r, rc, pd.Timedelta("1D"))


def factor_returns(rng: np.random.Generator, t: int, n: int = 3, rho: float = 0.6) -> np.ndarray:
    f = rng.standard_normal(t)
    e = rng.standard_normal((t, n))
    return 0.01 * (np.sqrt(rho) * f[:, None] + np.sqrt(1 - rho) * e)


def realized_from_intraday(
    rng: np.random.Generator, t: int, m: int = 24, n: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Daily returns and realized covariances from m intraday factor returns with a slowly
    moving loading."""
    load = 0.6 + 0.3 * np.sin(np.arange(t) / 15.0)
    x = np.empty((t, m, n))
    for d in range(t):
        f = rng.standard_normal(m)
        x[d] = 0.002 * (
            load[d] * f[:, None] + np.sqrt(1 - load[d] ** 2) * rng.standard_normal((m, n))
        )
    return x.sum(axis=1), np.einsum("dmi,dmj->dij", x, x)


def simulate_dcc(
    rng: np.random.Generator, t: int, a: float, b: float, rbar: np.ndarray
) -> np.ndarray:
    """Returns of a DCC process with GARCH(1,1) volatilities (omega .05, alpha .08, beta .87)."""
    n = rbar.shape[0]
    q = rbar.copy()
    s2 = np.full(n, 0.05 / (1 - 0.08 - 0.87))
    r = np.empty((t, n))
    for i in range(t):
        d = np.sqrt(np.diag(q))
        rt = q / np.outer(d, d)
        e = np.linalg.cholesky(rt) @ rng.standard_normal(n)
        r[i] = 0.01 * np.sqrt(s2) * e
        s2 = 0.05 + 0.08 * (r[i] / 0.01) ** 2 + 0.87 * s2
        q = (1 - a - b) * rbar + a * np.outer(e, e) + b * q
    return r


# ---- helpers --------------------------------------------------------------------------------------
def test_cov_to_corr_and_ensure() -> None:
    cov = np.array([[4.0, 1.0], [1.0, 9.0]])
    np.testing.assert_allclose(cov_to_corr(cov), [[1.0, 1 / 6], [1 / 6, 1.0]])
    bad = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
    fixed, rep = ensure_correlation(bad)
    assert rep and is_psd(fixed)
    check_correlation(fixed, "fixed")
    ok, rep2 = ensure_correlation(np.eye(3))
    assert not rep2 and np.array_equal(ok, np.eye(3))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(0, 10_000))
def test_ensure_correlation_always_valid(n: int, seed: int) -> None:
    g = np.random.default_rng(seed)
    a = g.uniform(-1, 1, (n, n))
    fixed, _ = ensure_correlation(a + a.T)
    check_correlation(fixed, "fixed")


def test_stressed_correlation_uses_worst_days(rng: np.random.Generator) -> None:
    r = rng.standard_normal((200, 2)) * 0.01
    r[:10] = np.column_stack([np.linspace(-0.1, 0.1, 10), np.linspace(-0.09, 0.11, 10)]) * [1, 1]
    r[4:6] += [0.2, 0.2]  # the largest equal-weight moves
    out = stressed_correlation(r, quantile=0.95)
    move = np.abs(r.mean(axis=1))
    worst = np.argsort(-move, kind="stable")[:10]
    np.testing.assert_allclose(out, np.corrcoef(r[worst].T), atol=1e-12)
    with pytest.raises(ValueError, match="quantile must be in"):
        stressed_correlation(r, quantile=1.0)
    with pytest.raises(ValueError, match="n_periods >= n_symbols"):
        stressed_correlation(r[:3], quantile=0.9)


# ---- EWMA / rolling / shrinkage ---------------------------------------------------------------------
def test_ewma_recursion_by_hand() -> None:
    r = np.array([[0.01, 0.02], [-0.03, 0.01], [0.02, -0.02]])
    init = np.array([[1e-4, 5e-5], [5e-5, 2e-4]])
    lam = 0.94
    q = init
    expect = []
    for row in r:
        q = lam * q + (1 - lam) * np.outer(row, row)
        expect.append(q)
    np.testing.assert_allclose(ewma_covariance(r, lam, init), np.array(expect), rtol=1e-13)


def test_ewma_model_forecast(rng: np.random.Generator) -> None:
    r = factor_returns(rng, 300)
    panel = make_panel(r)
    m = EWMACorr().fit(panel.slice(0, 200))
    fc = m.predict(panel, horizons=(1, 5))
    init = r[:200].T @ r[:200] / 200
    q = ewma_covariance(r, 0.94, init)
    np.testing.assert_allclose(fc.at(1), cov_to_corr(q), atol=1e-12)
    np.testing.assert_allclose(fc.at(5), fc.at(1))  # flat term structure
    # cutoff: the fit end for earlier origins, the origin afterwards
    cut = fc.cutoff_per_origin()
    assert (cut.iloc[:200] == panel.ts[199]).all() and (cut.iloc[200:] == panel.ts[200:]).all()


def test_rolling_matches_pandas(rng: np.random.Generator) -> None:
    r = factor_returns(rng, 120)
    panel = make_panel(r)
    fc = RollingCorr(window=30).fit(panel).predict(panel, (1,))
    ref = pd.DataFrame(r).rolling(30).corr()
    assert len(fc.origins) == 120 - 29
    for k, i in enumerate(range(29, 120)):
        np.testing.assert_allclose(fc.corr[k, 0], ref.loc[i].to_numpy(), atol=1e-10)


def test_shrinkage_identity_matches_sklearn(rng: np.random.Generator) -> None:
    r = factor_returns(rng, 80)
    panel = make_panel(r)
    fc = ShrinkageCorr(window=40, target="identity").fit(panel).predict(panel, (1,))
    x = r[-40:]
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    ref = LedoitWolf(assume_centered=True).fit(z).covariance_
    np.testing.assert_allclose(fc.corr[-1, 0], cov_to_corr(ref), atol=1e-12)


def test_constant_correlation_shrinkage(rng: np.random.Generator) -> None:
    load = np.array([0.9, 0.7, 0.5, 0.3, 0.1])

    def draw(t: int) -> np.ndarray:
        f = rng.standard_normal((t, 1))
        return 0.01 * (load * f + np.sqrt(1 - load**2) * rng.standard_normal((t, 5)))

    x = draw(60)
    cov, delta = constant_correlation_shrinkage(x)
    s = np.cov(x.T, bias=True)
    sd = np.sqrt(np.diag(s))
    c = s / np.outer(sd, sd)
    rbar = (c.sum() - 5) / 20
    f = rbar * np.outer(sd, sd)
    np.fill_diagonal(f, np.diag(s))
    assert 0 < delta < 1
    np.testing.assert_allclose(cov, delta * f + (1 - delta) * s, rtol=1e-12)
    # more data, less shrinkage (the estimation noise falls like 1/T)
    _, delta_long = constant_correlation_shrinkage(draw(5000))
    assert delta_long < delta
    # two symbols: the target is the sample correlation itself
    two, _ = constant_correlation_shrinkage(x[:, :2])
    np.testing.assert_allclose(cov_to_corr(two), cov_to_corr(np.cov(x[:, :2].T)), atol=1e-12)


# ---- DCC ------------------------------------------------------------------------------------------
def test_dcc_loglik_matches_direct_formula(rng: np.random.Generator) -> None:
    e = rng.standard_normal((50, 3))
    a, b = 0.07, 0.85
    qbar = e.T @ e / len(e)
    q = qbar.copy()
    ll = 0.0
    for t in range(len(e)):
        d = np.sqrt(np.diag(q))
        r = q / np.outer(d, d)
        ll += -0.5 * (np.log(np.linalg.det(r)) + e[t] @ np.linalg.solve(r, e[t]) - e[t] @ e[t])
        q = (1 - a - b) * qbar + a * np.outer(e[t], e[t]) + b * q
    assert dcc_loglik(e, a, b) == pytest.approx(ll, rel=1e-10)


def test_dcc_recovers_parameters() -> None:
    rng = np.random.default_rng(7)
    rbar = np.array([[1.0, 0.5, 0.3], [0.5, 1.0, 0.4], [0.3, 0.4, 1.0]])
    r = simulate_dcc(rng, 3000, 0.05, 0.90, rbar)
    m = DCCCorr().fit(make_panel(r))
    assert m.params_["a"] == pytest.approx(0.05, abs=0.015)
    assert m.params_["b"] == pytest.approx(0.90, abs=0.03)
    assert m.state_.converged
    for i in range(3):  # first stage: GARCH(1,1) per symbol
        assert m.state_.garch[i, 2] == pytest.approx(0.08, abs=0.03)
        assert m.state_.garch[i, 3] == pytest.approx(0.87, abs=0.05)
    ma = DCCCorr(asymmetric=True).fit(make_panel(r))
    assert ma.params_["g"] < 0.03  # no asymmetry in the simulated process
    assert ma.state_.loglik >= m.state_.loglik - 1e-6


def test_dcc_multistep_formula(rng: np.random.Generator) -> None:
    rbar = np.array([[1.0, 0.5], [0.5, 1.0]])
    r = simulate_dcc(rng, 600, 0.05, 0.90, rbar)
    panel = make_panel(r)
    m = DCCCorr().fit(panel)
    fc = m.predict(panel, (1, 5))
    s = m.state_
    p = s.a + s.b
    rb = cov_to_corr(s.qbar)
    w5 = np.mean(p ** np.arange(5))
    np.testing.assert_allclose(fc.at(5), rb + w5 * (fc.at(1) - rb), atol=1e-12)


# ---- realized HAR ---------------------------------------------------------------------------------
def test_har_pair_matches_sklearn(rng: np.random.Generator) -> None:
    r, rc = realized_from_intraday(rng, 160)
    panel = make_panel(r, rc)
    m = RealizedCorrHAR(pooling="pair", horizons=(1, 5)).fit(panel)
    z = pd.DataFrame(np.arctanh(np.clip(cov_to_corr(rc)[:, 0, 1], -0.999, 0.999)))
    x = pd.concat([z, z.rolling(5).mean(), z.rolling(22).mean()], axis=1).to_numpy()
    agg = (
        pd.DataFrame(rc.reshape(len(rc), -1))
        .rolling(5)
        .sum()
        .shift(-5)
        .to_numpy()
        .reshape(-1, 3, 3)
    )
    y = np.arctanh(np.clip(cov_to_corr(agg)[:, 0, 1], -0.999, 0.999))
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    lr = LinearRegression().fit(x[ok], y[ok])
    inter, slopes = m.state_[5]
    assert inter[0] == pytest.approx(lr.intercept_, abs=1e-10)
    np.testing.assert_allclose(slopes[0], lr.coef_, atol=1e-10)
    fc = m.predict(panel)
    t = len(panel) - 1
    expect = np.tanh(lr.intercept_ + x[t] @ lr.coef_)
    assert fc.at(5)[-1, 0, 1] == pytest.approx(expect, abs=1e-10)


def test_har_scalar_common_slopes(rng: np.random.Generator) -> None:
    r, rc = realized_from_intraday(rng, 160)
    m = RealizedCorrHAR(pooling="scalar", horizons=(1,)).fit(make_panel(r, rc))
    inter, slopes = m.state_[1]
    assert np.allclose(slopes, slopes[0])  # one set of slopes for every pair
    # pair fixed effects: intercept = zbar_p (1 - sum b)
    z = np.arctanh(np.clip(cov_to_corr(rc)[:, [0, 0, 1], [1, 2, 2]], -0.999, 0.999))
    np.testing.assert_allclose(inter, z.mean(axis=0) * (1 - slopes[0].sum()), atol=1e-12)
    assert 0.3 < slopes[0].sum() < 1.0  # persistent correlations


def test_har_needs_realized(rng: np.random.Generator) -> None:
    with pytest.raises(MissingCorrInputsError, match="needs realized covariances"):
        RealizedCorrHAR().fit(make_panel(factor_returns(rng, 100)))


def test_har_valid_with_near_one_correlations(rng: np.random.Generator) -> None:
    """Per-pair HAR with realized correlations near +-1 (one pair flipping sign): valid forecasts."""
    t, m = 150, 24
    x = np.empty((t, m, 3))
    for d in range(t):
        f = rng.standard_normal(m)
        a = f + 0.05 * rng.standard_normal(m)
        b = f + 0.05 * rng.standard_normal(m)
        c = (f if d % 2 else -f) + 0.05 * rng.standard_normal(m)  # flips: HAR mean ~0
        x[d] = 0.002 * np.column_stack([a, b, c])
    rc = np.einsum("dmi,dmj->dij", x, x)
    panel = make_panel(x.sum(axis=1), rc)
    fc = RealizedCorrHAR(pooling="pair", horizons=(1,)).fit(panel).predict(panel)
    for mat in fc.corr[:, 0]:
        check_correlation(mat, "forecast")
    assert fc.at(1)[:, 0, 1].min() > 0.95


# ---- PSD, look-ahead, contract ----------------------------------------------------------------------
MODELS = [
    EWMACorr(),
    RollingCorr(window=40),
    ShrinkageCorr(window=40, target="identity"),
    ShrinkageCorr(window=40, target="constant_correlation"),
]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(0, 10_000), st.floats(1e-8, 1e-2), st.integers(2, 5))
def test_psd_with_near_singular_inputs(seed: int, eps: float, n: int) -> None:
    """Near-collinear returns (correlations near 1): every model's forecasts stay valid."""
    g = np.random.default_rng(seed)
    base = g.standard_normal((80, 1)) * 0.01
    r = base + eps * 0.01 * g.standard_normal((80, n))
    panel = make_panel(r)
    for model in MODELS:
        fc = clone(model).fit(panel).predict(panel, (1, 5))  # CorrForecast validates PSD
        assert all(is_psd(c) for c in fc.corr.reshape(-1, n, n))


def test_dcc_psd_with_correlations_near_one(rng: np.random.Generator) -> None:
    rbar = np.array([[1.0, 0.97, 0.95], [0.97, 1.0, 0.96], [0.95, 0.96, 1.0]])
    r = simulate_dcc(rng, 400, 0.05, 0.93, rbar)
    panel = make_panel(r)
    fc = DCCCorr().fit(panel).predict(panel, (1, 5))
    assert fc.at(1)[:, 0, 1].mean() > 0.9
    assert all(is_psd(c) for c in fc.corr.reshape(-1, 3, 3))


@pytest.mark.parametrize(
    "model", [*MODELS, DCCCorr(), RealizedCorrHAR(horizons=(1, 5))], ids=lambda m: repr(m)
)
def test_no_look_ahead(model, rng: np.random.Generator) -> None:
    r, rc = realized_from_intraday(rng, 260)
    panel = make_panel(r, rc)
    t0 = 200
    fitted = clone(model).fit(panel.slice(0, t0 + 1))
    r2, rc2 = r.copy(), rc.copy()
    r2[t0 + 1 :] *= -3.0
    rc2[t0 + 1 :] = rc2[t0 + 1 :][:, ::-1, ::-1] * 5
    before = fitted.predict(panel, (1, 5))
    after = fitted.predict(make_panel(r2, rc2), (1, 5))
    k = before.origins.get_loc(panel.ts[t0])
    np.testing.assert_array_equal(before.corr[: k + 1], after.corr[: k + 1])
    assert not np.allclose(before.corr[k + 2 :], after.corr[k + 2 :])


@pytest.mark.parametrize("model", [*MODELS, DCCCorr(), RealizedCorrHAR()], ids=lambda m: repr(m))
def test_estimator_contract(model) -> None:
    params = model.get_params()
    c = clone(model)
    assert c.get_params() == params and c is not model
    with pytest.raises(NotFittedError):
        model.predict(make_panel(np.zeros((5, 2)) + 0.01), (1,))


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (
            EWMACorr(lam=1.5),
            r"The 'lam' parameter of EWMACorr must be in \(0, 1\). Got 1.5 instead.",
        ),
        (RollingCorr(window=2), "The 'window' parameter of RollingCorr must be an int >= 3"),
        (ShrinkageCorr(target="zero"), "The 'target' parameter of ShrinkageCorr must be one of"),
        (DCCCorr(asymmetric="yes"), "The 'asymmetric' parameter of DCCCorr"),
        (RealizedCorrHAR(pooling="all"), "The 'pooling' parameter of RealizedCorrHAR"),
        (EWMACorr(stress_quantile=0.0), "The 'stress_quantile' parameter of EWMACorr"),
    ],
    ids=["lam", "window", "target", "asymmetric", "pooling", "stress_quantile"],
)
def test_parameter_validation(model, match, rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match=match):
        model.fit(make_panel(factor_returns(rng, 300)))


def test_predict_errors(rng: np.random.Generator) -> None:
    panel = make_panel(factor_returns(rng, 100))
    m = EWMACorr().fit(panel)
    with pytest.raises(ValueError, match="needs horizons"):
        m.predict(panel)
    with pytest.raises(ValueError, match="fitted on symbols"):
        m.predict(make_panel(factor_returns(rng, 100, n=2)), (1,))
    with pytest.raises(ValueError, match="is not a ts of X"):
        m.predict(panel, (1,), origins=[pd.Timestamp("1990-01-01", tz="UTC")])
    with pytest.raises(ValueError, match="needs at least 100 periods"):
        DCCCorr().fit(panel.slice(0, 50))
    har = RealizedCorrHAR(horizons=(1,))
    r, rc = realized_from_intraday(rng, 100)
    har.fit(make_panel(r, rc))
    with pytest.raises(ValueError, match=r"fitted for horizons \[1\]; got horizon\(s\) \[5\]"):
        har.predict(make_panel(r, rc), (1, 5))


# ---- input building -------------------------------------------------------------------------------
def test_returns_panel_daily_from_intraday(rng: np.random.Generator) -> None:
    ts = pd.date_range("2024-01-01 01:00", periods=24 * 5, freq="1h", tz="UTC")
    px = 100 * np.exp(np.cumsum(rng.standard_normal((len(ts), 2)) * 0.003, axis=0))
    frame = pd.concat(
        [pd.DataFrame({"ts": ts, "symbol": s, "close": px[:, i]}) for i, s in enumerate(["X", "Y"])]
    )
    panel = returns_panel(frame, freq="1D")
    # daily closes: last close at or before each midnight (right-closed bins)
    wide = pd.DataFrame(px, index=ts, columns=["X", "Y"])
    daily = wide[wide.index.hour == 0]
    np.testing.assert_allclose(panel.returns, np.diff(np.log(daily.to_numpy()), axis=0), rtol=1e-12)
    assert list(panel.ts) == list(daily.index[1:])
    # realized covariance: hourly returns within each day (the previous midnight close seeds it)
    lr = np.diff(np.log(px), axis=0)
    for k, end in enumerate(panel.ts):
        sel = (ts[1:] > end - pd.Timedelta("1D")) & (ts[1:] <= end)
        np.testing.assert_allclose(panel.realized_cov[k], lr[sel].T @ lr[sel], rtol=1e-10)
    wide_r = pd.DataFrame(panel.returns, index=panel.ts, columns=["X", "Y"])
    assert np.array_equal(as_panel(wide_r).returns, panel.returns)
    with pytest.raises(ValueError, match="frame is missing column 'close'"):
        returns_panel(frame.drop(columns="close"))
    with pytest.raises(TypeError, match="X must be a CorrPanel or a pandas DataFrame"):
        as_panel(np.zeros((3, 2)))


class _Inconsistent(EWMACorr):
    """A model whose raw forecasts are not PSD (as per-pair models can produce)."""

    def _path(self, panel, state, horizons, rows):
        bad = np.array([[1.0, 0.95, -0.95], [0.95, 1.0, 0.95], [-0.95, 0.95, 1.0]])
        out = np.repeat(np.repeat(bad[None, None], len(rows), axis=0), len(horizons), axis=1)
        out[::2] = np.eye(3)  # every other origin is already valid
        return out


def test_predict_repairs_and_reports(rng: np.random.Generator) -> None:
    panel = make_panel(factor_returns(rng, 10))
    fc = _Inconsistent().fit(panel).predict(panel, (1, 5))
    np.testing.assert_array_equal(fc.repaired[:, 0], np.arange(10) % 2 == 1)
    np.testing.assert_array_equal(fc.corr[0, 0], np.eye(3))
    for m in fc.corr.reshape(-1, 3, 3):
        check_correlation(m, "forecast")
    assert fc.corr[1, 0, 0, 1] > 0.5 and fc.corr[1, 0, 0, 2] < 0
