"""LightGBM forecaster: determinism, estimator contract, no look-ahead, validation-only bias
correction, quantiles, SHAP and a nonlinear effect it must learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from models.base import target_mean
from models.forecast import VolForecast, only
from models.lgbm import LGBMVol
from models.losses import qlike

FAST = {
    "n_estimators": 60,
    "learning_rate": 0.1,
    "early_stopping_rounds": 20,
    "min_train": 50,
    "validation_size": 60,
    "min_child_samples": 20,
}


def simulate(
    rng: np.random.Generator,
    n: int = 500,
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
    *,
    z_effect: float = 0.0,
    noise: np.ndarray | None = None,
) -> pd.DataFrame:
    """Log-AR(1) realized variance per symbol; an exogenous ``z`` in [0, 1] known at t raises
    log RV at t+1 by ``z_effect`` when ``z > 0.5`` (a step: nonlinear)."""
    ts = pd.date_range("2020-01-02", periods=n, freq="D", tz="UTC")
    frames = []
    for s in symbols:
        z = rng.uniform(size=n)
        eps = rng.normal(scale=0.4, size=n) if noise is None else noise * rng.normal(size=n)
        lv = np.empty(n)
        lv[0] = -8.0
        for t in range(1, n):
            lv[t] = -8.0 + 0.6 * (lv[t - 1] + 8.0) + z_effect * (z[t - 1] > 0.5) + eps[t]
        frames.append(
            pd.DataFrame({"ts": ts, "symbol": s, "rv_var": np.exp(lv), "z": z, "n_obs": 288.0})
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def frame(rng) -> pd.DataFrame:
    return simulate(rng)


def test_same_seed_gives_bit_identical_forecasts(frame):
    a = LGBMVol(horizons=(1, 5), subsample=0.7, colsample_bytree=0.7, random_state=3, **FAST)
    b = clone(a)
    fa = a.fit(frame).predict(frame)
    fb = b.fit(frame).predict(frame)
    for s in fa:
        assert np.array_equal(fa[s].variance.to_numpy(), fb[s].variance.to_numpy())
        for q in fa[s].quantiles:
            assert np.array_equal(fa[s].quantiles[q].to_numpy(), fb[s].quantiles[q].to_numpy())
    wa = a.walk_forward(frame, (1,), start=frame["ts"].iloc[400], refit_every=30)
    wb = b.walk_forward(frame, (1,), start=frame["ts"].iloc[400], refit_every=30)
    for s in wa:
        assert np.array_equal(wa[s].variance.to_numpy(), wb[s].variance.to_numpy())
    c = LGBMVol(horizons=(1, 5), subsample=0.7, colsample_bytree=0.7, random_state=4, **FAST)
    fc = c.fit(frame).predict(frame)
    assert not np.array_equal(fa["BTCUSDT"].variance.to_numpy(), fc["BTCUSDT"].variance.to_numpy())


def test_estimator_contract(frame):
    m = LGBMVol(horizons=(1,), num_leaves=5, **FAST)
    params = m.get_params()
    assert params["num_leaves"] == 5 and params["horizons"] == (1,)
    c = clone(m)
    assert c.get_params() == params and not hasattr(c, "models_")
    for call in (
        lambda: m.predict(frame),
        lambda: m.feature_importance_,
        lambda: m.shap_values(frame),
        lambda: m.bias_factor_,
    ):
        with pytest.raises(NotFittedError):
            call()
    assert m.fit(frame) is m
    assert set(m.models_) == {1}
    fc = only(m.predict(frame[frame["symbol"] == "BTCUSDT"]))
    assert isinstance(fc, VolForecast) and fc.symbol == "BTCUSDT"
    # the forecasts' data cutoff is the end of the fit data (state estimated on all of it)
    assert (fc.cutoff_per_origin() >= frame["ts"].max()).all()
    with pytest.raises(ValueError, match=r"fitted for horizons \[1\]"):
        m.predict(frame, horizons=(5,))
    with pytest.raises(ValueError, match="fitted on symbols"):
        m.predict(frame[frame["symbol"] == "BTCUSDT"].assign(symbol="SOLUSDT"))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"num_leaves": 1}, "'num_leaves' parameter of LGBMVol must be an int >= 2"),
        ({"learning_rate": 0.0}, "'learning_rate' parameter of LGBMVol must be > 0"),
        ({"subsample": 1.5}, "'subsample' parameter of LGBMVol must be in"),
        ({"window_type": "sliding"}, "'window_type' parameter of LGBMVol must be one of"),
        ({"quantile_levels": (0.5, 1.2)}, "'quantile_levels' parameter of LGBMVol"),
        ({"feature_columns": "z"}, "'feature_columns' parameter of LGBMVol"),
        ({"random_state": -1}, "'random_state' parameter of LGBMVol"),
        ({"param_grid": {"foo": [1]}}, "param_grid key 'foo' of LGBMVol is not tunable"),
        ({"param_grid": {"num_leaves": [1]}}, "'num_leaves' parameter of LGBMVol must be"),
        ({"offset_feature": "rv"}, "'offset_feature' parameter of LGBMVol must be one of"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_parameter_validation(frame, params, match):
    with pytest.raises(ValueError, match=match):
        LGBMVol(**params).fit(frame)


def test_errors(frame):
    with pytest.raises(ValueError, match=r"feature_columns \['nope'\] are not columns of X"):
        LGBMVol(feature_columns=("nope",), **FAST).fit(frame)
    with pytest.raises(ValueError, match="too few rows to train horizon 1"):
        LGBMVol(horizons=(1,), **{**FAST, "min_train": 5000}).fit(frame)
    with pytest.raises(ValueError, match="purge must be >= the longest horizon 5"):
        LGBMVol(**FAST).walk_forward(frame, (1, 5), purge=2)
    with pytest.raises(ValueError, match="'refit_every' parameter of LGBMVol must be"):
        LGBMVol(**FAST).walk_forward(frame, (1,), refit_every=0)


def test_walk_forward_has_no_look_ahead(frame):
    m = LGBMVol(horizons=(1, 5), **FAST)
    start = frame["ts"].iloc[380]
    cut = frame["ts"].iloc[440]
    base = m.walk_forward(frame, (1, 5), start=start, refit_every=25)
    pert = frame.copy()
    later = pert["ts"] > cut
    pert.loc[later, "rv_var"] *= np.exp(np.random.default_rng(0).normal(size=later.sum()))
    pert.loc[later, "z"] = 0.0
    moved = m.walk_forward(pert, (1, 5), start=start, refit_every=25)
    for s in base:
        a = base[s].variance.loc[:cut]
        b = moved[s].variance.loc[:cut]
        assert len(a) == 61
        assert np.array_equal(a.to_numpy(), b.to_numpy())
        assert not np.array_equal(
            base[s].variance.loc[cut:].to_numpy()[1:], moved[s].variance.loc[cut:].to_numpy()[1:]
        )
        assert (base[s].cutoff_per_origin() == base[s].origins).all()


def test_walk_forward_refit_equals_a_fit_on_the_data_up_to_the_refit(frame):
    m = LGBMVol(horizons=(1,), **FAST)
    origin = frame["ts"].iloc[420]
    wf = m.walk_forward(frame, (1,), start=origin, end=origin, refit_every=1)
    direct = clone(m).fit(frame[frame["ts"] <= origin]).predict(frame[frame["ts"] <= origin])
    for s in wf:
        assert wf[s].variance.iloc[0, 0] == pytest.approx(direct[s].variance.iloc[-1, 0], rel=1e-12)


def test_bias_factor_comes_from_validation_residuals_only(rng):
    n, vs = 600, 120
    noise = np.full(n, 0.1)
    noise[n - vs - 2 :] = 0.8  # calm history, turbulent validation slice
    frame = simulate(rng, n=n, symbols=("BTCUSDT",), noise=noise)
    m = LGBMVol(
        horizons=(1,),
        validation_size=vs,
        refit_full=False,
        n_estimators=80,
        learning_rate=0.1,
        min_child_samples=20,
        min_train=50,
        quantile_levels=(0.1, 0.9),
    )
    m.fit(frame)
    hm = m.models_[1]
    # recompute c by hand from the validation rows: positions (n-1-h-vs, n-1-h]
    rv = frame["rv_var"].to_numpy()
    y = np.log(target_mean(rv, 1))
    m._symbol_codes = ["BTCUSDT"]
    panels, extra = m._panels_and_extra(frame)
    d = m._design(panels, extra, 1)
    last = n - 1 - 1
    val = np.arange(last - vs + 1, last + 1)
    resid_val = y[val] - hm.booster.predict(d.X[val])
    tr = np.arange(0, last - vs - 1 + 1)
    resid_tr = y[tr] - hm.booster.predict(d.X[tr])
    assert hm.bias_factor == pytest.approx(float(np.mean(np.exp(resid_val))), rel=1e-12)
    assert m.bias_factor_[1] == hm.bias_factor
    assert hm.bias_factor > 1.15 > 1.02 > float(np.mean(np.exp(resid_tr)))
    assert hm.resid_quantiles[0.9] == pytest.approx(float(np.quantile(resid_val, 0.9)))
    # the forecast is exp(raw) x c
    fc = only(m.predict(frame))
    raw = hm.booster.predict(d.X[-1:])
    assert fc.variance.iloc[-1, 0] == pytest.approx(float(np.exp(raw[0]) * hm.bias_factor))
    off = LGBMVol(
        horizons=(1,),
        validation_size=vs,
        refit_full=False,
        bias_correction=False,
        n_estimators=80,
        learning_rate=0.1,
        min_child_samples=20,
        min_train=50,
    )
    assert off.fit(frame).bias_factor_[1] == 1.0


@pytest.mark.parametrize("method", ["residual", "lgbm"])
def test_quantiles_increase_with_the_level(frame, method):
    m = LGBMVol(horizons=(1, 5), quantile_method=method, **FAST)
    fc = m.fit(frame).predict(frame)
    for f in fc.values():
        levels = sorted(f.quantiles)
        assert levels == [0.005, 0.025, 0.975, 0.995]
        stack = np.stack([f.quantiles[q].to_numpy() for q in levels])
        assert (np.diff(stack, axis=0) >= 0).all()
        assert (stack > 0).all()
        if method == "residual":  # quantiles bracket the median of the predictive distribution
            assert (f.quantiles[0.025].to_numpy() < f.variance.to_numpy()).all()
            assert (f.quantiles[0.975].to_numpy() > f.variance.to_numpy()).all()


def test_residual_quantile_coverage_on_stationary_data(rng):
    frame = simulate(rng, n=900)
    m = LGBMVol(horizons=(1,), **{**FAST, "validation_size": 250})
    wf = m.walk_forward(frame, (1,), start=frame["ts"].iloc[600], refit_every=100)
    hits = []
    for s, f in wf.items():
        rv = frame[frame["symbol"] == s]["rv_var"].to_numpy()
        y = pd.Series(target_mean(rv, 1), index=pd.DatetimeIndex(frame["ts"].iloc[:900]))
        yy = y.reindex(f.origins).to_numpy()
        ok = np.isfinite(yy)
        hits.append(
            (yy[ok] >= f.quantiles[0.025][1].to_numpy()[ok])
            & (yy[ok] <= f.quantiles[0.975][1].to_numpy()[ok])
        )
    cover = np.concatenate(hits).mean()
    assert 0.91 <= cover <= 0.99


def test_learns_a_known_nonlinear_effect(rng):
    frame = simulate(rng, n=700, z_effect=1.0)
    with_z = LGBMVol(horizons=(1,), feature_columns=("z",), **FAST).fit(frame)
    without = LGBMVol(horizons=(1,), **FAST).fit(frame)
    imp = with_z.feature_importance_[1]
    assert imp.idxmax() == "z" and imp.sum() == pytest.approx(1.0)
    # the partial effect of z: same row, z moved across the threshold
    row = frame[frame["symbol"] == "BTCUSDT"].copy()
    hi = only(with_z.predict(row.assign(z=0.9))).variance[1].to_numpy()
    lo = only(with_z.predict(row.assign(z=0.1))).variance[1].to_numpy()
    assert np.median(np.log(hi / lo)) == pytest.approx(1.0, abs=0.2)
    mid = only(with_z.predict(row.assign(z=0.7))).variance[1].to_numpy()
    assert np.median(np.log(mid / hi)) == pytest.approx(0.0, abs=0.15)  # a step, not a slope
    # out of sample, the model with z forecasts much better
    test = simulate(np.random.default_rng(99), n=300, z_effect=1.0)
    for model, worse in ((with_z, without),):
        f1 = model.predict(test)["ETHUSDT"].variance[1]
        f0 = worse.predict(test.drop(columns="z"))["ETHUSDT"].variance[1]
        rv = test[test["symbol"] == "ETHUSDT"]["rv_var"].to_numpy()
        y = target_mean(rv, 1)[: len(f1)]
        ok = np.isfinite(y)
        assert qlike(y[ok], f1.to_numpy()[ok]).mean() < 0.8 * qlike(y[ok], f0.to_numpy()[ok]).mean()


def test_shap_values_sum_to_the_raw_prediction(frame):
    m = LGBMVol(horizons=(1, 5), **FAST).fit(frame)
    sv = m.shap_values(frame, horizon=5)
    assert list(sv.columns) == [*m.feature_names_, "bias"]
    m._symbol_codes = sorted(m.symbols_)
    panels, extra = m._panels_and_extra(frame)
    d = m._design(panels, extra, 5)
    raw = m.models_[5].booster.predict(d.X)
    np.testing.assert_allclose(sv.sum(axis=1).to_numpy(), raw, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="horizon 22 was not fitted"):
        m.shap_values(frame, horizon=22)


def test_param_grid_keeps_the_best_validation_qlike(frame):
    grid = {"num_leaves": [2, 15], "learning_rate": [0.05, 0.2]}
    m = LGBMVol(horizons=(1,), param_grid=grid, **FAST).fit(frame)
    chosen = m.models_[1]
    for nl in grid["num_leaves"]:
        for lr in grid["learning_rate"]:
            single = LGBMVol(horizons=(1,), **{**FAST, "num_leaves": nl, "learning_rate": lr})
            assert chosen.valid_qlike <= single.fit(frame).models_[1].valid_qlike + 1e-12


def test_missing_context_is_routed_not_dropped(frame):
    ctx = frame.copy()
    ctx.loc[ctx["ts"] < ctx["ts"].iloc[300], "z"] = np.nan  # context starts late
    m = LGBMVol(horizons=(1,), feature_columns=("z",), **FAST).fit(ctx)
    fc = m.predict(ctx)
    assert len(fc["BTCUSDT"].variance) == 500  # every row forecast, with or without context
    assert np.isfinite(fc["BTCUSDT"].variance.to_numpy()).all()
