"""GarchVol against independent references: arch's own forecasts, closed forms, hand recursions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from arch.univariate import GARCH, Normal, StudentsT, ZeroMean
from arch.utility.exceptions import ConvergenceWarning
from scipy.special import gammaln
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from models.base import MissingInputsError
from models.forecast import only
from models.garch import (
    GarchFitError,
    GarchVol,
    _expected_abs,
    average_variance,
    fit_problem,
    return_scale,
)

SYM = "BTCUSDT"


def garch_t_returns(
    n: int, rng: np.random.Generator, params=(0.05, 0.08, 0.90, 6.0), o: int = 0
) -> np.ndarray:
    """Daily log returns (fractions) from arch's own simulator: GARCH(1,o,1)-t in percent units."""
    model = ZeroMean(None, volatility=GARCH(1, o, 1), distribution=StudentsT(seed=rng))
    sim = model.simulate(np.asarray(params, dtype=float), n, burn=500)
    return sim["data"].to_numpy() / 100.0


def frame_from_returns(r: np.ndarray, symbol: str = SYM, start: str = "2020-01-01") -> pd.DataFrame:
    """Long close-price frame whose consecutive log returns are ``r``."""
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))
    ts = pd.date_range(start, periods=len(close), freq="D", tz="UTC")
    return pd.DataFrame({"ts": ts, "symbol": symbol, "close": close})


def log_returns(X: pd.DataFrame) -> np.ndarray:
    """Independent reference: numpy log-differences of the closes (one symbol, sorted)."""
    return np.diff(np.log(X["close"].to_numpy()))


def ewma_by_hand(r: np.ndarray, lam: float = 0.94) -> np.ndarray:
    out = np.empty(len(r))
    s = r[0] ** 2
    for i, x in enumerate(r):
        s = x * x if i == 0 else lam * s + (1 - lam) * x * x
        out[i] = s
    return out


@pytest.fixture(scope="module")
def sim_frame() -> pd.DataFrame:
    rng = np.random.default_rng(20261124)
    return frame_from_returns(garch_t_returns(1200, rng, params=(0.05, 0.06, 0.08, 0.86, 7.0), o=1))


# ---- equality with arch's own forecast for fixed parameters --------------------------------------
@pytest.mark.parametrize(
    ("vol", "o", "arch_vol", "dist", "mean"),
    [
        ("GARCH", None, "GARCH", "normal", "Zero"),
        ("GJR", 1, "GARCH", "t", "Constant"),
        ("EGARCH", 1, "EGARCH", "skewt", "Zero"),
    ],
    ids=["garch-normal-zero", "gjr-t-constant", "egarch-skewt-zero"],
)
def test_forecast_equals_arch_for_fixed_params(sim_frame, vol, o, arch_vol, dist, mean):
    m = GarchVol(vol=vol, o=o, dist=dist, mean=mean, window=None).fit(sim_frame)
    params, scale = m.params_[SYM], m.return_scale_[SYM]
    assert m.fallback_reason_[SYM] is None
    assert scale == 100.0
    r = log_returns(sim_frame)
    am = arch_model(
        r * scale, mean=mean, vol=arch_vol, p=1, o=o or 0, q=1, dist=dist, rescale=False
    )
    horizon = 1 if vol == "EGARCH" else 5
    ref = am.forecast(params=params, horizon=horizon, start=0, reindex=False)
    step = ref.residual_variance.to_numpy() / scale**2
    hs = (1,) if vol == "EGARCH" else (1, 2, 5)
    fc = only(m.predict(sim_frame, horizons=hs))
    assert len(fc.variance) == len(r)
    for h in hs:
        np.testing.assert_allclose(
            fc.variance[h].to_numpy(), step[:, :h].mean(axis=1), rtol=1e-10, atol=0
        )
    # and the last row equals the fitted result's own forecast
    own = m.result_[SYM].forecast(horizon=horizon, reindex=False).residual_variance.to_numpy()
    np.testing.assert_allclose(fc.variance[1].iloc[-1], own[-1, 0] / scale**2, rtol=1e-10)


def test_garch11_multi_step_closed_form(sim_frame):
    m = GarchVol(vol="GARCH", dist="t", window=800).fit(sim_frame)
    p, scale = m.params_[SYM], m.return_scale_[SYM]
    omega, a, b = p["omega"] / scale**2, p["alpha[1]"], p["beta[1]"]
    hs = list(range(1, 23))
    fc = only(m.predict(sim_frame, horizons=hs))
    last = fc.variance.iloc[-1]
    ubar = omega / (1.0 - a - b)
    s1 = last[1]
    by_hand = np.array([ubar + (a + b) ** (h - 1) * (s1 - ubar) for h in hs])
    np.testing.assert_allclose(last.to_numpy(), np.cumsum(by_hand) / np.arange(1, 23), rtol=1e-10)
    assert m.unconditional_var_[SYM] == pytest.approx(ubar, rel=1e-12)
    assert m.persistence_[SYM] == pytest.approx(a + b, rel=1e-12)
    assert fc.cumulative_var(22).iloc[-1] == pytest.approx(by_hand.sum(), rel=1e-10)


def test_average_variance_is_running_mean():
    step = np.array([[1.0, 2.0, 3.0, 6.0]])
    np.testing.assert_allclose(average_variance(step, [1, 2, 4]), [[1.0, 1.5, 3.0]])


# ---- estimation ------------------------------------------------------------------------------------
def test_parameter_recovery_garch11_t():
    rng = np.random.default_rng(7)
    r = garch_t_returns(4000, rng, params=(0.05, 0.08, 0.90, 6.0))
    m = GarchVol(vol="GARCH", dist="t", window=None).fit(frame_from_returns(r))
    p = m.params_[SYM]
    assert m.return_scale_[SYM] == 100.0  # so arch's percent-unit parameters are comparable
    assert p["alpha[1]"] == pytest.approx(0.08, abs=0.03)
    assert p["beta[1]"] == pytest.approx(0.90, abs=0.04)
    assert p["nu"] == pytest.approx(6.0, abs=2.0)
    assert m.dist_params_[SYM] == {"nu": p["nu"]}
    assert m.persistence_[SYM] == pytest.approx(0.98, abs=0.02)
    z = m.standardized_residuals_[SYM]
    assert len(z) == 4000 and abs(z.mean()) < 0.1 and z.std() == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    ("var", "expected"), [(1e-4, 100.0), (4e-6, 1000.0), (2.5e-3, 10.0), (3e-9, 1e4), (30.0, 1.0)]
)
def test_return_scale_matches_arch_rescale(var, expected):
    r = np.random.default_rng(3).standard_normal(500)
    r = r / r.std() * math.sqrt(var)
    assert return_scale(r) == expected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = arch_model(r, mean="Zero", rescale=True).fit(disp="off")
    assert res.scale == expected


def test_expected_abs_of_students_t_closed_form():
    nu = 6.0
    closed = (
        math.sqrt(nu - 2) * math.exp(gammaln((nu - 1) / 2) - gammaln(nu / 2)) / math.sqrt(math.pi)
    )
    assert _expected_abs(StudentsT(), np.array([nu])) == pytest.approx(closed, rel=1e-8)
    assert _expected_abs(Normal(), np.array([])) == pytest.approx(math.sqrt(2 / math.pi))


# ---- failures fall back to EWMA, never silently ----------------------------------------------------
def test_non_convergence_falls_back_to_ewma_with_reason(sim_frame):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = GarchVol(max_iter=1).fit(sim_frame)
        fc = only(m.predict(sim_frame, horizons=(1, 5)))
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert "did not converge" in m.fallback_reason_[SYM]
    assert any("ConvergenceWarning" in w for w in m.fit_warnings_[SYM])
    ref = ewma_by_hand(log_returns(sim_frame))
    np.testing.assert_allclose(fc.variance[1].to_numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(fc.variance[5].to_numpy(), ref, rtol=1e-12)
    assert fc.fallback_reason.str.startswith("ewma fallback (lambda 0.94): optimizer").all()


def test_constant_prices_fall_back_with_reason():
    ts = pd.date_range("2021-01-01", periods=400, freq="D", tz="UTC")
    close = np.full(400, 50.0)
    close[300:] = 50.0 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, 100)))
    X = pd.DataFrame({"ts": ts, "symbol": SYM, "close": close})
    m = GarchVol().fit(X.iloc[:300])
    assert m.fallback_reason_[SYM] == "degenerate returns: zero variance (constant prices)"
    fc = only(m.predict(X, horizons=(1,)))
    # origins with a zero EWMA variance have no valid forecast and are left out
    assert fc.origins[0] == ts[300]
    np.testing.assert_allclose(fc.variance[1].to_numpy(), ewma_by_hand(log_returns(X))[299:])
    assert fc.fallback_reason.str.contains("constant prices").all()


def test_too_few_observations_fall_back_or_raise(rng):
    X = frame_from_returns(rng.normal(0, 0.01, 60))
    m = GarchVol(min_fit_obs=100).fit(X)
    assert m.fallback_reason_[SYM] == "too few observations: 60 returns < min_fit_obs=100"
    assert m.params_[SYM] is None and math.isnan(m.persistence_[SYM])
    fc = only(m.predict(X, horizons=(1, 2)))
    assert fc.fallback_reason.notna().all()
    with pytest.raises(GarchFitError, match=r"failed for symbol BTCUSDT: too few observations"):
        GarchVol(min_fit_obs=100, fallback="raise").fit(X)


def test_fit_problem_detects_each_failure():
    p = pd.Series({"omega": 0.1, "alpha[1]": 0.1, "beta[1]": 0.8})
    ok = {"convergence_flag": 0, "optimizer_message": "ok", "params": p, "loglikelihood": -10.0}
    assert fit_problem(**ok, persistence=0.9) is None
    assert fit_problem(**ok, persistence=1.0) == "non-stationary fit: persistence 1 >= 1"
    assert "code 4" in fit_problem(**{**ok, "convergence_flag": 4}, persistence=0.9)
    bad = p.copy()
    bad["beta[1]"] = np.nan
    assert "non-finite parameter(s) ['beta[1]']" in fit_problem(
        **{**ok, "params": bad}, persistence=0.5
    )
    assert "log-likelihood" in fit_problem(**{**ok, "loglikelihood": np.inf}, persistence=0.5)
    rec = [(ConvergenceWarning, "The optimizer returned code 9.")]
    assert "did not converge" in fit_problem(**ok, persistence=0.5, warning_records=rec)


# ---- the estimator contract ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vol": "FIGARCH"}, r"The 'vol' parameter of GarchVol must be one of \('GARCH', 'GJR', 'EGARCH'\)\. Got 'FIGARCH' instead\."),
        ({"dist": "ged"}, r"The 'dist' parameter of GarchVol must be one of .* Got 'ged' instead\."),
        ({"mean": "AR"}, r"The 'mean' parameter of GarchVol must be one of .* Got 'AR' instead\."),
        ({"p": 0}, r"The 'p' parameter of GarchVol must be an int >= 1\. Got 0 instead\."),
        ({"window": 1}, r"The 'window' parameter of GarchVol must be an int >= 2 or None\. Got 1 instead\."),
        ({"refit_every": 0}, r"The 'refit_every' parameter of GarchVol must be an int >= 1\. Got 0 instead\."),
        ({"random_state": -1}, r"The 'random_state' parameter of GarchVol must be an int >= 0, a numpy\.random\.Generator or None\. Got -1 instead\."),
        ({"n_jobs": 0}, r"The 'n_jobs' parameter of GarchVol must be an int >= 1\. Got 0 instead\."),
        ({"backend": "dask"}, r"The 'backend' parameter of GarchVol must be one of \('thread', 'process'\)\. Got 'dask' instead\."),
        ({"vol": "GARCH", "o": 1}, r"The 'o' parameter of GarchVol must be 0 or None when vol='GARCH' .* Got 1 instead\."),
        ({"vol": "GJR", "o": 0}, r"The 'o' parameter of GarchVol must be >= 1 or None when vol='GJR'\. Got 0 instead\."),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)  # fmt: skip
def test_parameter_validation(sim_frame, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GarchVol(**kwargs).fit(sim_frame)


def test_estimator_contract(sim_frame):
    m = GarchVol(vol="GJR", dist="t", window=500, random_state=3)
    c = clone(m)
    assert c.get_params() == m.get_params()
    assert set(m.get_params()) >= {"vol", "p", "o", "q", "dist", "mean", "window", "refit_every"}
    with pytest.raises(NotFittedError):
        m.predict(sim_frame, horizons=(1,))
    with pytest.raises(MissingInputsError, match=r"needs column\(s\) \['close'\]"):
        m.fit(sim_frame.drop(columns="close"))
    assert m.fit(sim_frame) is m
    assert not hasattr(c, "state_")


def test_egarch_simulation_is_deterministic(sim_frame):
    X = sim_frame.iloc[:700]

    def run(seed):
        m = GarchVol(vol="EGARCH", dist="t", window=None, random_state=seed, simulations=200)
        return only(m.fit(X).predict(X.iloc[-40:], horizons=(1, 5))).variance

    a, b, c = run(11), run(11), run(12)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a[5].to_numpy(), c[5].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(a[1].to_numpy(), c[1].to_numpy(), rtol=1e-12)  # h=1 is analytic


# ---- walk-forward ----------------------------------------------------------------------------------
def test_walk_forward_refits_and_filters_like_arch(sim_frame):
    X = sim_frame.iloc[:460]
    m = GarchVol(vol="GJR", dist="t", window=300, refit_every=4)
    origins = X["ts"].iloc[400:412]
    wf = m.walk_forward(X, horizons=(1, 3), start=origins.iloc[0], end=origins.iloc[-1])[SYM]
    assert list(wf.origins) == list(origins)
    pd.testing.assert_series_equal(
        wf.cutoff_per_origin(), pd.Series(wf.origins, index=wf.origins), check_names=False
    )
    fits = m.walk_forward_fits_[SYM]
    assert len(fits) == 3 and fits["converged"].all()
    r = log_returns(X)  # row i of X (i >= 1) is return i - 1
    for k, fit in fits.iterrows():
        pos = 399 + 4 * k  # return index of the refit origin (X row 400 + 4k)
        assert fit["origin_ts"] == X["ts"].iloc[pos + 1]
        assert fit["fit_end_ts"] == fit["origin_ts"] and fit["n_obs"] == 300
        params = fit[["omega", "alpha[1]", "gamma[1]", "beta[1]", "nu"]].astype(float)
        for t in range(pos, pos + 4):  # the refit origin and the filtered ones after it
            am = arch_model(r[pos - 299 : t + 1] * 100, mean="Zero", vol="GARCH", o=1, dist="t")
            ref = am.forecast(params=params, horizon=3, reindex=False).residual_variance
            step = ref.to_numpy()[-1] / 1e4
            got = wf.variance.loc[X["ts"].iloc[t + 1]]
            np.testing.assert_allclose(got.to_numpy(), [step[0], step.mean()], rtol=1e-10)
    # out-of-sample standardized residuals: (r_{t+1} - 0) / sqrt(one-step variance at t)
    z = m.standardized_residuals_[SYM]
    one = wf.variance[1]
    assert list(z.index) == list(X["ts"].iloc[401:413])
    np.testing.assert_allclose(z.to_numpy(), r[400:412] / np.sqrt(one.to_numpy()), rtol=1e-12)


@pytest.mark.parametrize("vol", ["GJR", "EGARCH"])
def test_walk_forward_has_no_look_ahead(sim_frame, vol):
    X = sim_frame.iloc[:420].copy()
    m = GarchVol(vol=vol, dist="t", window=250, refit_every=3, random_state=5, simulations=100)
    start, cut = X["ts"].iloc[395], 405
    base = m.walk_forward(X, horizons=(1, 5), start=start)[SYM].variance
    Y = X.copy()
    shock = np.exp(np.random.default_rng(9).normal(0, 0.05, len(Y) - cut - 1))
    Y.loc[cut + 1 :, "close"] = Y["close"].to_numpy()[cut + 1 :] * np.cumprod(shock)
    pert = m.walk_forward(Y, horizons=(1, 5), start=start)[SYM].variance
    upto = X["ts"].iloc[cut]
    pd.testing.assert_frame_equal(base.loc[:upto], pert.loc[:upto], rtol=0, atol=0)
    assert not np.allclose(base.loc[upto:].iloc[1:], pert.loc[upto:].iloc[1:])


def test_walk_forward_early_origins_fall_back_then_garch(sim_frame):
    X = sim_frame.iloc[:330]
    start = X["ts"].iloc[290]  # the origin of return 289: 290 returns so far
    m = GarchVol(window=400, min_fit_obs=300, refit_every=10)
    wf = m.walk_forward(X, horizons=(1, 5), start=start)[SYM]
    fb = wf.fallback_reason
    assert len(wf.origins) == 40
    expected = (
        "ewma fallback (lambda 0.94): too few observations: 290 returns < min_fit_obs=300"
        " [insufficient_history]"
    )
    assert (fb.iloc[:10] == expected).all() and fb.iloc[10:].isna().all()
    ewma = ewma_by_hand(log_returns(X))
    np.testing.assert_allclose(wf.variance[5].iloc[:10].to_numpy(), ewma[289:299], rtol=1e-12)
    assert m.walk_forward_fits_[SYM]["converged"].tolist() == [False, True, True, True]
    # an expanding window starts once min_fit_obs returns exist; earlier origins are left out
    wf2 = GarchVol(window=None, min_fit_obs=300, refit_every=10).walk_forward(X, (1,), start=start)
    assert wf2[SYM].origins[0] == X["ts"].iloc[300] and wf2[SYM].fallback_reason is None


def test_parallel_matches_sequential(sim_frame, rng):
    X = pd.concat(
        [sim_frame.iloc[:500], frame_from_returns(rng.standard_t(6, 499) * 0.01, symbol="ETHUSDT")],
        ignore_index=True,
    )
    seq = GarchVol(dist="t", window=None).fit(X)
    thr = GarchVol(dist="t", window=None, n_jobs=2).fit(X)
    for s in ("BTCUSDT", "ETHUSDT"):
        pd.testing.assert_series_equal(seq.params_[s], thr.params_[s])
    kw = {"horizons": (1,), "start": X["ts"].iloc[480], "window": 400, "refit_every": 10}
    a = GarchVol(n_jobs=1).walk_forward(X, **kw)
    b = GarchVol(n_jobs=2, backend="process").walk_forward(X, **kw)
    for s in a:
        pd.testing.assert_frame_equal(a[s].variance, b[s].variance)


# ---- real data -------------------------------------------------------------------------------------
def test_sp500_gjr_t_smoke():
    from arch.data import sp500

    data = sp500.load()
    X = pd.DataFrame(
        {
            "ts": pd.DatetimeIndex(data.index).tz_localize("UTC") + pd.Timedelta(hours=21),
            "symbol": "SPX",
            "close": data["Adj Close"].to_numpy(),
        }
    )
    m = GarchVol(vol="GJR", dist="t", window=None).fit(X)
    assert m.fallback_reason_["SPX"] is None
    assert 0.9 < m.persistence_["SPX"] < 1.0
    p = m.params_["SPX"]
    assert p["gamma[1]"] > 0.05  # the leverage effect
    assert 4 < m.dist_params_["SPX"]["nu"] < 12
    ann_vol = math.sqrt(m.unconditional_var_["SPX"] * 252)
    assert 0.1 < ann_vol < 0.3
    fc = only(m.predict(X.iloc[-300:], horizons=(1, 5, 22)))
    assert fc.annualization == 252.0 and fc.horizon_unit == "1D"
    assert (fc.variance > 0).all().all()
