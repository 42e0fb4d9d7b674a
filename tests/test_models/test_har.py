"""HAR family: coefficients against statsmodels OLS, the walk-forward against refits, no look-ahead,
purge and window, the insanity filter, calendar terms and the estimator contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from models.base import MissingInputsError, prepare_panels
from models.ewma import EWMAVol, RandomWalkVol
from models.forecast import only
from models.har import (
    HARCJVol,
    HARJVol,
    HARQDoWVol,
    HARQVol,
    HARVol,
    LogHARDoWVol,
    LogHARVol,
    SHARVol,
    calendar_terms,
    solve_normal,
    window_reduce,
)

HAR_CLASSES = [HARVol, LogHARVol, HARJVol, HARCJVol, SHARVol, HARQVol, LogHARDoWVol, HARQDoWVol]
ALL_CLASSES = [RandomWalkVol, EWMAVol, *HAR_CLASSES]


def simulate_realized(
    rng: np.random.Generator,
    n: int = 400,
    symbols: tuple[str, ...] = ("BTCUSDT",),
    start: str = "2020-01-01",
    low_obs_every: int = 0,
) -> pd.DataFrame:
    """A long realized frame with a persistent log-RV process, weekday effects and all inputs.

    ``low_obs_every`` > 0 gives every such row n_obs = 100 (dropped by min_obs=250).
    """
    frames = []
    ts = pd.date_range(start, periods=n, freq="D", tz="UTC") + pd.Timedelta(days=1)
    for sym in symbols:
        x = np.empty(n)
        x[0] = -8.0
        eps = rng.normal(0.0, 0.5, n)
        for t in range(1, n):
            x[t] = -8.0 * 0.05 + 0.95 * x[t - 1] + eps[t]
        x += np.where((ts - pd.Timedelta(days=1)).dayofweek >= 5, -0.4, 0.0)
        rv = np.exp(x)
        pos_share = rng.uniform(0.3, 0.7, n)
        n_obs = np.full(n, 288.0)
        if low_obs_every:
            n_obs[low_obs_every::low_obs_every] = 100.0
        frames.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "symbol": sym,
                    "rv_var": rv,
                    "bv_var": rv * rng.uniform(0.6, 1.0, n),
                    "rq_var2": rv**2 * rng.uniform(1.0, 3.0, n),
                    "rs_pos_var": rv * pos_share,
                    "rs_neg_var": rv * (1 - pos_share),
                    "n_obs": n_obs,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def frame(rng) -> pd.DataFrame:
    return simulate_realized(rng, 400)


def oracle_design(df: pd.DataFrame, h: int, log: bool = False) -> pd.DataFrame:
    """Independent construction with pandas rolling windows: HAR regressors and target."""
    rv = df["rv_var"].reset_index(drop=True)
    x = np.log(rv) if log else rv
    out = pd.DataFrame({"d": x, "w": x.rolling(5).mean(), "m": x.rolling(22).mean()})
    fwd = rv.rolling(h).mean().shift(-h)
    out["y"] = np.log(fwd) if log else fwd
    out["y_level"] = fwd
    return out


# ---- coefficients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("h", [1, 5])
def test_har_fit_equals_statsmodels_ols(frame, h):
    window = 300
    m = HARVol(horizons=(h,), window=window).fit(frame)
    d = oracle_design(frame, h)
    n = len(frame)
    rows = d.iloc[n - window :].dropna()  # last `window` observations with complete targets
    assert len(rows) == window - h
    ols = sm.OLS(rows["y"], sm.add_constant(rows[["d", "w", "m"]])).fit()
    np.testing.assert_allclose(
        m.coef_["BTCUSDT"].loc[h].to_numpy(), ols.params.to_numpy(), rtol=1e-9
    )
    st_ = m.state_["BTCUSDT"][h]
    assert st_.resid_var == pytest.approx(ols.ssr / ols.df_resid, rel=1e-9)
    assert st_.target_min == pytest.approx(rows["y_level"].min())
    assert st_.target_mean == pytest.approx(rows["y_level"].mean())


def test_log_har_bias_correction_by_hand(frame):
    h = 5
    m = LogHARVol(horizons=(h,), window=250, insanity_filter=False).fit(frame)
    d = oracle_design(frame, h, log=True)
    rows = d.iloc[len(frame) - 250 :].dropna()
    ols = sm.OLS(rows["y"], sm.add_constant(rows[["d", "w", "m"]])).fit()
    s2 = ols.ssr / ols.df_resid
    last = d.iloc[-1]
    expected = np.exp(
        ols.params["const"] + ols.params[["d", "w", "m"]] @ last[["d", "w", "m"]] + 0.5 * s2
    )
    got = only(m.predict(frame)).variance[h].iloc[-1]
    assert got == pytest.approx(expected, rel=1e-9)


def test_harq_and_shar_designs_against_statsmodels(frame):
    d = oracle_design(frame, 1)
    n = len(frame)
    q = frame["rv_var"] * np.sqrt(frame["rq_var2"])
    harq = d.assign(q=q.to_numpy()).iloc[n - 200 :].dropna()
    ols = sm.OLS(harq["y"], sm.add_constant(harq[["d", "q", "w", "m"]])).fit()
    m = HARQVol(horizons=(1,), window=200).fit(frame)
    np.testing.assert_allclose(m.coef_["BTCUSDT"].loc[1], ols.params, rtol=1e-8)
    shar = d.assign(p=frame["rs_pos_var"].to_numpy(), ng=frame["rs_neg_var"].to_numpy())
    shar = shar.iloc[n - 200 :].dropna()
    ols = sm.OLS(shar["y"], sm.add_constant(shar[["p", "ng", "w", "m"]])).fit()
    m = SHARVol(horizons=(1,), window=200).fit(frame)
    np.testing.assert_allclose(m.coef_["BTCUSDT"].loc[1], ols.params, rtol=1e-8)
    j = np.maximum(frame["rv_var"] - frame["bv_var"], 0).to_numpy()
    harj = d.assign(j=j).iloc[n - 200 :].dropna()
    ols = sm.OLS(harj["y"], sm.add_constant(harj[["d", "w", "m", "j"]])).fit()
    m = HARJVol(horizons=(1,), window=200).fit(frame)
    np.testing.assert_allclose(m.coef_["BTCUSDT"].loc[1], ols.params, rtol=1e-8)


@pytest.mark.parametrize("cls", HAR_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("window_type", ["rolling", "expanding"])
def test_walk_forward_coefficients_equal_a_refit_on_truncated_data(frame, cls, window_type):
    """The fast path (window sums, batched solves) equals fit() with numpy lstsq at each origin."""
    h, window = 5, 150
    model = cls(horizons=(h,), window=window, window_type=window_type, insanity_filter=False)
    panel = prepare_panels(frame, model._required_columns(), min_obs=250)["BTCUSDT"]
    names, X, y, yl = model.design(panel, h)
    origins = np.arange(150, len(panel))
    f, bad, coef = model.walk_forward_horizon(
        X,
        y,
        yl,
        origins,
        h=h,
        window=window,
        window_type=window_type,
        refit_every=1,
        purge=h,
        return_coef=True,
    )
    # a rolling window is full once its first row has the 22-row history of the monthly mean
    first = window + 20  # rows 21.. have the monthly mean; a window needs window - h of them
    assert np.isfinite(f[origins >= first]).all() and np.isnan(f[origins < first]).all()
    assert bad.mean() < 0.05  # only non-positive forecasts are replaced with the filter off
    for i in (first, 250, len(panel) - 1):
        k = int(np.flatnonzero(origins == i)[0])
        ref = clone(model).fit(frame.iloc[: i + 1])
        np.testing.assert_allclose(coef[k], ref.state_["BTCUSDT"][h].coef, rtol=1e-7, atol=1e-12)
        pred = only(ref.predict(frame.iloc[: i + 1])).variance[h].iloc[-1]
        assert f[k] == pytest.approx(pred, rel=1e-8)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(5, 60),
    st.integers(1, 12),
    st.sampled_from([np.add, np.minimum, np.maximum]),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_window_reduce_equals_naive_windows(m, w, ufunc, expanding, seed):
    w = min(w, m)
    x = np.random.default_rng(seed).normal(size=(m, 2))
    ends = np.arange(w - 1, m)
    got = window_reduce(x, ends, None if expanding else w, ufunc)
    for k, e in enumerate(ends):
        lo = 0 if expanding else e - w + 1
        np.testing.assert_allclose(got[k], ufunc.reduce(x[lo : e + 1], axis=0), rtol=1e-12)


def test_window_reduce_has_no_cancellation_after_a_spike():
    """Differenced cumulative sums lose a small window's sum after a huge value; blocks do not."""
    x = np.full(3000, 1e-12)
    x[10] = 1e6
    got = window_reduce(x, np.array([2999]), 1000)
    assert got[0] == pytest.approx(1000 * 1e-12, rel=1e-12)


def test_solve_normal_matches_lstsq_and_handles_singular(rng):
    X = rng.normal(size=(50, 4)) * np.array([1.0, 1e-3, 1e3, 1.0])
    y = rng.normal(size=50)
    b = solve_normal((X.T @ X)[None], (X.T @ y)[None])[0]
    np.testing.assert_allclose(b, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-9)
    Xs = np.column_stack([X[:, 0], X[:, 0]])
    b2 = solve_normal((Xs.T @ Xs)[None], (Xs.T @ y)[None])[0]
    np.testing.assert_allclose(Xs @ b2, Xs @ np.linalg.lstsq(Xs, y, rcond=None)[0], atol=1e-8)


# ---- honesty: no look-ahead, purge, refit schedule ---------------------------------------------------
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("refit_every", [1, 7])
def test_no_look_ahead(rng, cls, refit_every):
    frame = simulate_realized(rng, 330)
    cut = frame["ts"].iloc[280]
    perturbed = frame.copy()
    after = perturbed["ts"] > cut
    for c in ("rv_var", "bv_var", "rq_var2", "rs_pos_var", "rs_neg_var"):
        perturbed.loc[after, c] = perturbed.loc[after, c] * rng.uniform(0.1, 10.0, after.sum())
    kw = dict(window=150, refit_every=refit_every)
    a = cls().walk_forward(frame, (1, 5), start=frame["ts"].iloc[200], **kw)["BTCUSDT"]
    b = cls().walk_forward(perturbed, (1, 5), start=frame["ts"].iloc[200], **kw)["BTCUSDT"]
    before = a.variance.index <= cut
    assert before.sum() == 81
    pd.testing.assert_frame_equal(
        a.variance[before], b.variance[b.variance.index <= cut], rtol=1e-12
    )
    assert not np.allclose(a.variance[~before], b.variance[~before])
    assert (a.cutoff_per_origin() == a.variance.index).all()


def test_purge_excludes_rows_whose_targets_overlap_the_origin(frame):
    """With purge p, the fit at origin i uses exactly rows i - window + 1 .. i - p."""
    model = HARVol(insanity_filter=False)
    panel = prepare_panels(frame, ["rv_var"], min_obs=250)["BTCUSDT"]
    names, X, y, yl = model.design(panel, 1)
    i, window = 300, 120
    for purge in (1, 4):
        _, _, coef = model.walk_forward_horizon(
            X,
            y,
            yl,
            np.array([i]),
            h=1,
            window=window,
            window_type="rolling",
            refit_every=1,
            purge=purge,
            return_coef=True,
        )
        rows = np.arange(i - window + 1, i - purge + 1)
        ref = np.linalg.lstsq(X[rows], y[rows], rcond=None)[0]
        np.testing.assert_allclose(coef[0], ref, rtol=1e-9)
    with pytest.raises(ValueError, match="purge must be >= the longest horizon 5"):
        HARVol().walk_forward(frame, (1, 5), purge=3)


def test_refit_every_holds_coefficients_between_refits(frame):
    model = HARVol(insanity_filter=False)
    panel = prepare_panels(frame, ["rv_var"], min_obs=250)["BTCUSDT"]
    _, X, y, yl = model.design(panel, 1)
    origins = np.arange(200, 230)
    _, _, coef = model.walk_forward_horizon(
        X,
        y,
        yl,
        origins,
        h=1,
        window=150,
        window_type="rolling",
        refit_every=10,
        purge=1,
        return_coef=True,
    )
    for start in (0, 10, 20):
        block = coef[start : start + 10]
        assert np.allclose(block, block[0])
    assert not np.allclose(coef[0], coef[10])


def test_generic_walk_forward_equals_the_fast_path(frame):
    """The base-class refit loop (used by models without a fast path) gives the same forecasts."""
    from models.base import BaseForecaster

    model = LogHARVol(window=150, refit_every=40)
    start = frame["ts"].iloc[200]
    fast = model.walk_forward(frame, (1, 5), start=start)["BTCUSDT"]
    panel = prepare_panels(frame, ["rv_var"], min_obs=250)["BTCUSDT"]
    origins = np.flatnonzero(panel.ts >= start)
    slow, _ = BaseForecaster._walk_forward_panel(
        model, panel, (1, 5), origins, window=150, window_type="rolling", refit_every=40, purge=None
    )
    np.testing.assert_allclose(fast.variance.to_numpy(), slow, rtol=1e-8)


def test_fit_predict_last_row_equals_walk_forward_last_origin(frame):
    m = HARQVol(horizons=(1, 5), window=200)
    wf = m.walk_forward(frame, (1, 5))["BTCUSDT"]
    fp = only(clone(m).fit(frame).predict(frame))
    np.testing.assert_allclose(wf.variance.iloc[-1], fp.variance.iloc[-1], rtol=1e-9)
    # in-sample predictions carry the fit's cutoff, the walk-forward its own origins
    assert (fp.cutoff_per_origin() == frame["ts"].iloc[-1]).all()


# ---- cleaning, insanity filter, calendar ------------------------------------------------------------
def test_low_n_obs_rows_are_dropped_from_the_sample(rng):
    frame = simulate_realized(rng, 400, low_obs_every=37)
    clean = frame[frame["n_obs"] >= 250]
    a = HARVol(horizons=(1, 5), window=200).fit(frame)
    b = HARVol(horizons=(1, 5), window=200, min_obs=None).fit(clean)
    np.testing.assert_allclose(a.coef_["BTCUSDT"], b.coef_["BTCUSDT"], rtol=1e-12)
    assert a.n_dropped_["BTCUSDT"] == 10
    fc = only(a.predict(frame))
    assert not fc.variance.index.isin(frame.loc[frame["n_obs"] < 250, "ts"]).any()
    c = HARVol(horizons=(1,), window=200, min_obs=None).fit(frame)
    assert not np.allclose(c.coef_["BTCUSDT"], a.coef_["BTCUSDT"].loc[[1]])


def test_insanity_filter_replaces_out_of_range_forecasts(frame):
    m = HARVol(horizons=(1,), window=200).fit(frame)
    st_ = m.state_["BTCUSDT"][1]
    shock = frame.copy()
    shock.loc[shock.index[-1], "rv_var"] = 1e3 * frame["rv_var"].max()
    fc = only(m.predict(shock))
    assert fc.variance[1].iloc[-1] == pytest.approx(st_.target_mean)
    assert "h=1: forecast outside the window's target range" in fc.fallback_reason.iloc[-1]
    calm = only(m.predict(frame))
    before = 0 if calm.fallback_reason is None else int(calm.fallback_reason.notna().sum())
    assert int(fc.fallback_reason.notna().sum()) == before + 1
    raw = only(HARVol(horizons=(1,), window=200, insanity_filter=False).fit(frame).predict(shock))
    assert raw.variance[1].iloc[-1] > st_.target_max and raw.fallback_reason is None
    np.testing.assert_array_equal(raw.variance[1].iloc[:-1] > 0, True)


def test_calendar_terms_by_hand():
    # closes at 2024-01-01 (Mon) 00:00 ... the target period of the first origin is Monday Jan 1
    ts = pd.date_range("2024-01-01", periods=7, freq="D", tz="UTC")
    names, d1 = calendar_terms(ts, pd.Timedelta(days=1), 1)
    assert names == ["dow_1", "dow_2", "dow_3", "dow_4", "dow_5", "dow_6"]
    np.testing.assert_array_equal(d1[0], 0)  # Monday = base
    np.testing.assert_array_equal(d1[5], [0, 0, 0, 0, 1, 0])  # Saturday
    np.testing.assert_array_equal(d1[6], [0, 0, 0, 0, 0, 1])  # Sunday
    _, share = calendar_terms(ts, pd.Timedelta(days=1), 5)
    # origin Mon Jan 1 close -> targets Mon..Fri: no weekend; origin Thu Jan 4 -> Thu..Mon: 2 of 5
    assert share[0, 0] == 0.0 and share[3, 0] == pytest.approx(0.4)


def test_dow_model_learns_the_weekend_effect(rng):
    frame = simulate_realized(rng, 900)
    coef = LogHARDoWVol(horizons=(1, 5), window=800).fit(frame).coef_["BTCUSDT"]
    # Saturday targets follow a normal Friday: the -0.4 log effect shows against other weekdays
    # (Monday, the base, follows a low Sunday through lrv_d, which shifts every dummy alike)
    weekdays = coef.loc[1, ["dow_1", "dow_2", "dow_3", "dow_4"]]
    assert coef.loc[1, "dow_5"] - weekdays.mean() == pytest.approx(-0.4, abs=0.15)
    assert weekdays.std() < 0.1
    assert coef.loc[5, "weekend_share"] < -0.5


# ---- the estimator contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_estimator_contract(frame, cls):
    est = cls()
    params = est.get_params()
    cloned = clone(est)
    assert cloned.get_params() == params and cloned is not est
    with pytest.raises(NotFittedError):
        est.predict(frame, horizons=(1,))
    if "window" in params:
        est.set_params(window=200)
        assert est.get_params()["window"] == 200
    assert est.fit(frame) is est
    assert not any(k.endswith("_") for k in cloned.__dict__)
    fc = only(est.predict(frame, horizons=(1, 5)))
    assert fc.symbol == "BTCUSDT" and fc.horizons == [1, 5] and fc.model_id == cls.model_id


@pytest.mark.parametrize(
    ("est", "match"),
    [
        (HARVol(window=0), r"The 'window' parameter of HARVol must be an int >= 1. Got 0 instead."),
        (HARVol(window_type="sliding"), r"The 'window_type' parameter of HARVol must be one of"),
        (HARQVol(refit_every=1.5), r"The 'refit_every' parameter of HARQVol must be an int >= 1"),
        (LogHARVol(horizons=(0,)), r"The 'horizons' parameter of LogHARVol must be a non-empty"),
        (HARVol(min_obs=-1), r"The 'min_obs' parameter of HARVol must be >= 0 or None. Got -1"),
        (
            HARVol(insanity_filter="yes"),
            r"The 'insanity_filter' parameter of HARVol must be a bool",
        ),
    ],
)
def test_parameter_validation_at_fit(frame, est, match):
    with pytest.raises(ValueError, match=match):
        est.fit(frame)


def test_missing_inputs_and_other_errors(frame):
    with pytest.raises(MissingInputsError, match=r"HARQVol needs column\(s\) \['rq_var2'\]"):
        HARQVol().fit(frame.drop(columns="rq_var2"))
    with pytest.raises(MissingInputsError, match=r"\['bv_var'\]"):
        HARCJVol().walk_forward(frame.drop(columns="bv_var"))
    m = HARVol(horizons=(1, 5)).fit(frame)
    with pytest.raises(ValueError, match=r"fitted for horizons \[1, 5\]; got horizon\(s\) \[22\]"):
        m.predict(frame, horizons=(22,))
    with pytest.raises(ValueError, match="fitted on symbols"):
        m.predict(frame.assign(symbol="ETHUSDT"))
    with pytest.raises(ValueError, match=r"has 3 usable row\(s\) for horizon 1; need more than 4"):
        HARVol(horizons=(1,)).fit(frame.iloc[:25])
    with pytest.raises(ValueError, match="duplicate ts"):
        HARVol().fit(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(ValueError, match="window - purge must exceed"):
        HARVol().walk_forward(frame, (5,), window=8)


def test_multi_symbol_fit_returns_a_dict(rng):
    frame = simulate_realized(rng, 300, symbols=("BTCUSDT", "ETHUSDT"))
    m = HARVol(horizons=(1,), window=200).fit(frame)
    out = m.predict(frame)
    assert set(out) == {"BTCUSDT", "ETHUSDT"}
    one = HARVol(horizons=(1,), window=200).fit(frame[frame.symbol == "ETHUSDT"])
    np.testing.assert_allclose(m.coef_["ETHUSDT"], one.coef_["ETHUSDT"], rtol=1e-12)
