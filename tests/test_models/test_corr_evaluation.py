"""Correlation evaluation: losses by hand on 2x2 cases, drawdown periods, the walk-forward (no
look-ahead, common origins, PSD share), DM/MCS tables, the response lag and the CLI entry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.corr import (
    CorrPanel,
    EWMACorr,
    RealizedCorrHAR,
    RollingCorr,
    cov_to_corr,
    ewma_covariance,
)
from models.corr_evaluation import (
    correlation_response_lag,
    drawdown_periods,
    evaluate_correlation_frame,
    frobenius_loss,
    gmv_variance,
    gmv_weights,
    mahalanobis_ratio,
    stein_loss,
    walk_forward_corr,
)
from models.corr_forecast import CorrForecast
from models.ewma import ewma_recursion

S = np.array([[4.0, 1.0], [1.0, 2.0]])
Y = np.array([[3.0, -1.0], [-1.0, 5.0]])


# ---- losses by hand ---------------------------------------------------------------------------------
def test_frobenius_by_hand() -> None:
    a = np.array([[1.0, 0.5], [0.5, 1.0]])
    b = np.array([[1.0, 0.2], [0.2, 1.0]])
    assert frobenius_loss(a, b) == pytest.approx(np.sqrt(2 * 0.3**2))
    with pytest.raises(ValueError, match="same shape"):
        frobenius_loss(a, np.eye(3))


def test_stein_by_hand() -> None:
    # S^-1 = [[2, -1], [-1, 4]] / 7; S^-1 Y = [[7, -7], [-7, 21]] / 7 = [[1, -1], [-1, 3]]
    m = np.array([[1.0, -1.0], [-1.0, 3.0]])
    np.testing.assert_allclose(np.linalg.solve(S, Y), m)
    expect = np.trace(m) - np.log(np.linalg.det(m)) - 2  # 4 - ln 2 - 2
    assert stein_loss(S, Y) == pytest.approx(2 - np.log(2.0), rel=1e-12)
    assert stein_loss(S, Y) == pytest.approx(expect, rel=1e-12)
    assert stein_loss(Y, Y) == pytest.approx(0.0, abs=1e-12)
    # reduced form = full + ln det Y (the model-free term)
    assert stein_loss(S, Y, full=False) == pytest.approx(stein_loss(S, Y) + np.log(14.0), rel=1e-12)
    singular = np.outer([0.01, 0.02], [0.01, 0.02])
    with pytest.raises(ValueError, match="pass full=False"):
        stein_loss(S, singular)
    assert np.isfinite(stein_loss(S, singular, full=False))
    with pytest.raises(ValueError, match="forecast_cov must be positive definite"):
        stein_loss(np.ones((2, 2)), Y)


def test_gmv_by_hand() -> None:
    # w = S^-1 1 / 1'S^-1 1 = [1, 3]/7 / (4/7) = [1/4, 3/4]
    np.testing.assert_allclose(gmv_weights(S), [0.25, 0.75])
    w = np.array([0.25, 0.75])
    assert gmv_variance(S, Y) == pytest.approx(w @ Y @ w)
    assert gmv_variance(S, Y) == pytest.approx(0.0625 * 3 - 2 * 0.1875 + 0.5625 * 5)


def test_mahalanobis_by_hand() -> None:
    r = np.array([1.0, 2.0])
    # r' S^-1 r = [1, 2] [[2, -1], [-1, 4]] / 7 [1, 2]' = (2 - 4 + 16) / 7 = 2
    assert mahalanobis_ratio(S, r) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="returns must have shape"):
        mahalanobis_ratio(S, np.ones(3))


def test_drawdown_periods_by_hand() -> None:
    ts = pd.date_range("2024-01-01", periods=10, freq="D", tz="UTC")
    m = np.array([0.01, -0.05, -0.05, 0.2, -0.02, 0.01, -0.03, -0.04, 0.01, 0.0])
    r = np.column_stack([m, m])
    # wealth after each period: .01 -.04 -.09 .11 .09 .10 .07 .03 .04 .04
    out = drawdown_periods(ts, r, k=3)
    assert out[0] == (ts[1], ts[2])  # .01 -> -.09: depth .10 over periods 1-2
    assert out[1] == (ts[4], ts[7])  # .11 -> .03: depth .08 over periods 4-7
    assert len(out) == 2  # no third drawdown left (the first period only rises)
    with pytest.raises(ValueError, match="returns must have shape"):
        drawdown_periods(ts, r[:5])


# ---- walk-forward -----------------------------------------------------------------------------------
def panel_with_break(rng: np.random.Generator, t: int = 400, brk: int = 300) -> CorrPanel:
    rho = np.where(np.arange(t) < brk, 0.2, 0.9)
    f = rng.standard_normal(t)
    e = rng.standard_normal((t, 3))
    r = 0.01 * (np.sqrt(rho)[:, None] * f[:, None] + np.sqrt(1 - rho)[:, None] * e)
    ts = pd.date_range("2021-01-01", periods=t, freq="D", tz="UTC")
    return CorrPanel(ts, ("A", "B", "C"), r, None, pd.Timedelta("1D"))


def test_walk_forward_scores_and_tables(rng: np.random.Generator) -> None:
    panel = panel_with_break(rng)
    models = {"ewma": EWMACorr(), "rolling": RollingCorr(window=60), "har": RealizedCorrHAR()}
    with pytest.warns(UserWarning, match="skips model 'har'"):
        res = walk_forward_corr(models, panel, window=100, refit_every=25, mcs_reps=100)
    assert set(res.forecasts) == {"ewma", "rolling"} and "har" in res.skipped
    s = res.summary()
    assert set(s["model_id"]) == {"ewma", "rolling"} and set(s["horizon"]) == {1, 5}
    assert (s["psd_share"] == 1.0).all()
    # every model scored on the same origins; origins end h periods before the data
    po = res.per_origin
    for h, g in po.groupby("horizon"):
        sets = [set(x["origin_ts"]) for _, x in g.groupby("model_id")]
        assert sets[0] == sets[1]
        assert max(sets[0]) == panel.ts[-1 - h]
    # EWMA forecast at an origin = the recursion fitted on its training window
    fc = res.forecasts["ewma"]
    k = 130  # origin position; its block starts at 125 with training rows 26..125
    lo = 125 + 1 - 100
    init = panel.returns[lo:126].T @ panel.returns[lo:126] / 100
    q = ewma_covariance(panel.returns[lo : k + 1], 0.94, init)[-1]
    np.testing.assert_allclose(fc.matrix(panel.ts[k], 1).to_numpy(), cov_to_corr(q), atol=1e-12)
    # the Stein loss of one row by hand (outer-product target, h=5: full rank for n=3)
    row = po[(po["model_id"] == "ewma") & (po["horizon"] == 5) & (po["origin_ts"] == panel.ts[k])]
    vv = np.column_stack([ewma_recursion(panel.returns[:, i] ** 2, 0.94) for i in range(3)])[k]
    d = np.sqrt(5 * vv)
    s_cov = cov_to_corr(q) * np.outer(d, d)
    y = panel.returns[k + 1 : k + 6].T @ panel.returns[k + 1 : k + 6]
    assert row["stein_qlike"].item() == pytest.approx(stein_loss(s_cov, y), rel=1e-10)
    assert res.settings["stein_form"] == {
        1: "reduced (singular targets: -ln det Y dropped)",
        5: "full",
    }
    # DM against EWMA and the MCS are reported
    assert set(res.dm["loss"]) == {"stein_qlike", "frobenius", "gmv_var"}
    assert (res.dm["benchmark"] == "ewma").all()
    assert set(res.mcs["loss"]) == {"stein_qlike", "gmv_var"}
    assert s.loc[s["model_id"] == "ewma", "stein_diff"].eq(0).all()


def test_walk_forward_no_look_ahead(rng: np.random.Generator) -> None:
    panel = panel_with_break(rng, t=300, brk=250)
    r2 = panel.returns.copy()
    r2[251:] = -r2[251:] * 4
    other = CorrPanel(panel.ts, panel.symbols, r2, None, panel.period)
    models = {"ewma": EWMACorr(), "rolling": RollingCorr(window=50)}
    a = walk_forward_corr(models, panel, window=100, refit_every=10, mcs_reps=50)
    b = walk_forward_corr(models, other, window=100, refit_every=10, mcs_reps=50)
    for name in models:
        fa, fb = a.forecasts[name], b.forecasts[name]
        upto = fa.origins <= panel.ts[250]
        np.testing.assert_array_equal(fa.corr[upto], fb.corr[upto])


def test_walk_forward_with_truth_and_stress(rng: np.random.Generator) -> None:
    panel = panel_with_break(rng)
    n = 3
    rho = np.where(np.arange(len(panel)) < 300, 0.2, 0.9)
    rows = []
    for t, p in zip(panel.ts, rho, strict=True):
        for a in panel.symbols:
            for b in panel.symbols:
                rows.append((t, a, b, 1.0 if a == b else p))
    truth = pd.DataFrame(rows, columns=["ts", "symbol_a", "symbol_b", "corr"])
    res = walk_forward_corr(
        {"ewma": EWMACorr(), "rolling": RollingCorr(window=60)},
        panel,
        window=100,
        refit_every=50,
        truth=truth,
        stress_periods=[(panel.ts[300], panel.ts[330])],
        mcs_reps=50,
    )
    assert "frobenius_truth" in res.losses.columns
    assert set(res.losses["regime"]) == {"all", "calm", "stressed"}
    st = res.per_origin[res.per_origin["horizon"] == 1]
    flagged = st.loc[st["stressed"], "origin_ts"]
    assert flagged.min() == panel.ts[299] and flagged.max() == panel.ts[329]
    # after the break the EWMA tracks the new level faster than the 60-day window
    lag = {
        name: correlation_response_lag(
            fc, truth, pd.Series(np.arange(len(panel)) >= 300, index=panel.ts), h=1
        )["lag_bars"].item()
        for name, fc in res.forecasts.items()
    }
    assert lag["ewma"] < lag["rolling"] and lag["ewma"] < 15
    assert n == res.forecasts["ewma"].n_symbols


def test_response_lag_by_hand() -> None:
    ts = pd.date_range("2024-01-01", periods=10, freq="h", tz="UTC")
    level = np.array([0.2, 0.2, 0.2, 0.25, 0.3, 0.6, 0.8, 0.8, 0.3, 0.2])
    corr = np.array([[[[1, x], [x, 1]]] for x in level])
    fc = CorrForecast(corr, ("A", "B"), ts, (1,), "m", "1", ts[-1])
    truth = pd.DataFrame(
        [
            (t, a, b, 1.0 if a == b else (0.8 if 3 <= i <= 7 else 0.2))
            for i, t in enumerate(ts)
            for a in "AB"
            for b in "AB"
        ],
        columns=["ts", "symbol_a", "symbol_b", "corr"],
    )
    stressed = pd.Series([False] * 3 + [True] * 5 + [False] * 2, index=ts)
    out = correlation_response_lag(fc, truth, stressed)
    # pre 0.2 (origin 2), stress level 0.8: half-way 0.5 first crossed at bar 5 = the 3rd stressed bar
    assert out["lag_bars"].item() == 3.0 and out["n_bars"].item() == 5
    assert out["pre_corr"].item() == pytest.approx(0.2) and out[
        "stress_corr"
    ].item() == pytest.approx(0.8)
    assert correlation_response_lag(fc, truth, stressed, fraction=1.0)["lag_bars"].item() == 4.0
    never = stressed.copy()
    never.iloc[5:8] = False  # spell of bars 3-4 only: the forecast stays below 0.5 in it
    assert np.isnan(correlation_response_lag(fc, truth, never)["lag_bars"].item())
    with pytest.raises(ValueError, match="fraction must be in"):
        correlation_response_lag(fc, truth, stressed, fraction=0.0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"purge": 2}, "purge must be >= the longest horizon 5"),
        ({"window_type": "sliding"}, "window_type must be 'rolling' or 'expanding'"),
        ({"window": 5}, "window must be an int >= 10"),
        ({"refit_every": 0}, "refit_every must be an int >= 1"),
        ({"horizons": (0, 1)}, "horizons must be distinct ints >= 1"),
        ({"vol_lam": 1.0}, r"vol_lam must be in \(0, 1\)"),
        ({"window": 399}, "no origin to evaluate"),
    ],
    ids=["purge", "window_type", "window", "refit", "horizons", "vol_lam", "too_short"],
)
def test_walk_forward_errors(kw, match, rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match=match):
        walk_forward_corr({"ewma": EWMACorr()}, panel_with_break(rng), **kw)


def test_walk_forward_model_checks(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="models must be a non-empty dict"):
        walk_forward_corr({}, panel_with_break(rng))
    with pytest.raises(TypeError, match=r"models\['x'\] must be a BaseCorrForecaster"):
        walk_forward_corr({"x": object()}, panel_with_break(rng))


def test_evaluate_correlation_frame_from_intraday_bars(rng: np.random.Generator) -> None:
    """Hourly bars -> daily returns and realized covariances; HAR is evaluated too."""
    days, per_day = 140, 24
    t = days * per_day
    load = 0.5 + 0.3 * np.sin(np.arange(t) / (per_day * 10.0))
    f = rng.standard_normal(t)
    x = 0.003 * (
        load[:, None] * f[:, None] + np.sqrt(1 - load**2)[:, None] * rng.standard_normal((t, 3))
    )
    px = 100 * np.exp(np.cumsum(x, axis=0))
    ts = pd.date_range("2024-01-01 01:00", periods=t, freq="1h", tz="UTC")
    frame = pd.concat(
        [
            pd.DataFrame({"ts": ts, "symbol": s, "close": px[:, i]})
            for i, s in enumerate(["X", "Y", "Z"])
        ]
    )
    models = {"ewma": EWMACorr(), "rolling": RollingCorr(window=40), "har": RealizedCorrHAR()}
    res = evaluate_correlation_frame(
        frame, freq="1D", window=80, refit_every=20, models=models, mcs_reps=50
    )
    s = res.summary()
    assert set(s["model_id"]) == {"ewma", "rolling", "har"}
    assert res.settings["target"] == "realized" and res.settings["stein_form"][1] == "full"
    cols = [
        "frobenius",
        "stein_qlike",
        "gmv_var",
        "mahalanobis_ratio",
        "psd_share",
        "dm_stat",
        "in_mcs",
    ]
    assert all(c in s.columns for c in cols)
    assert s["psd_share"].eq(1.0).all()
    # realized-correlation HAR beats the noisy daily EWMA on the realized target
    h1 = s[s["horizon"] == 1].set_index("model_id")
    assert h1.loc["har", "frobenius"] < h1.loc["ewma", "frobenius"]
