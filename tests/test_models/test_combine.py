"""Combinations: the boosted log-HAR's offset and fallback to its baseline, the trailing-QLIKE
weights against a loop reference, no look-ahead and the estimator contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from models.base import target_mean
from models.combine import HARBoostVol, QLIKEWeightedVol
from models.ewma import EWMAVol, RandomWalkVol
from models.har import LogHARDoWVol
from models.losses import qlike

from .test_lgbm import simulate

FAST = {
    "n_estimators": 40,
    "learning_rate": 0.1,
    "early_stopping_rounds": 20,
    "min_train": 50,
    "validation_size": 60,
    "min_child_samples": 20,
}


@pytest.fixture
def frame(rng) -> pd.DataFrame:
    return simulate(rng, n=450)


def _base() -> LogHARDoWVol:
    return LogHARDoWVol(window=120, window_type="expanding")


def test_offset_is_the_baselines_walk_forward_forecast(frame):
    m = HARBoostVol(base=_base(), horizons=(1, 5), **FAST)
    m._symbol_codes = ["BTCUSDT", "ETHUSDT"]
    panels, _ = m._panels_and_extra(frame)
    for h in (1, 5):
        ref = _base().walk_forward(frame, (h,), window=120, window_type="expanding", refit_every=1)
        for s, p in panels.items():
            off = pd.Series(m._offset(p, h), index=p.ts)
            got = np.exp(off.reindex(ref[s].origins).to_numpy())
            np.testing.assert_allclose(got, ref[s].variance[h].to_numpy(), rtol=1e-12)
            assert off.iloc[:100].isna().all()  # no forecast before the baseline's min history


def test_a_booster_that_learns_nothing_leaves_the_baseline_scaled(frame):
    m = HARBoostVol(
        base=_base(), horizons=(1,), **{**FAST, "n_estimators": 1, "learning_rate": 1e-9}
    )
    start = frame["ts"].iloc[300]
    wf = m.walk_forward(frame, (1,), start=start, refit_every=1000)
    ref = _base().walk_forward(
        frame, (1,), start=start, window=120, window_type="expanding", refit_every=1
    )
    for s in wf:
        ratio = wf[s].variance[1] / ref[s].variance[1].reindex(wf[s].origins)
        assert ratio.std() / ratio.mean() < 1e-6  # a constant: exp(mean residual) x c


def test_har_boost_walk_forward_has_no_look_ahead(frame):
    m = HARBoostVol(base=_base(), horizons=(1,), feature_columns=("z",), **FAST)
    start, cut = frame["ts"].iloc[330], frame["ts"].iloc[380]
    a = m.walk_forward(frame, (1,), start=start, refit_every=20)
    pert = frame.copy()
    later = pert["ts"] > cut
    pert.loc[later, "rv_var"] *= 3.0
    pert.loc[later, "z"] = 1.0
    b = m.walk_forward(pert, (1,), start=start, refit_every=20)
    for s in a:
        np.testing.assert_array_equal(
            a[s].variance.loc[:cut].to_numpy(), b[s].variance.loc[:cut].to_numpy()
        )
        assert len(a[s].variance.loc[:cut]) == 51


def test_har_boost_contract_and_errors(frame):
    m = HARBoostVol(base=_base(), horizons=(1,), **FAST)
    assert clone(m).get_params()["base"].get_params() == _base().get_params()
    with pytest.raises(NotFittedError):
        m.predict(frame)
    fc = m.fit(frame).predict(frame)
    assert "base_lvar" in m.feature_names_
    assert set(fc) == {"BTCUSDT", "ETHUSDT"}
    with pytest.raises(ValueError, match="'base' parameter of HARBoostVol must be a HAR-family"):
        HARBoostVol(base=RandomWalkVol(), **FAST).fit(frame)


def _loop_weights(
    L: np.ndarray, pos: np.ndarray, h: int, lookback: int, power: float, min_history: int
) -> np.ndarray:
    n, k = L.shape
    w = np.full((n, k), 1.0 / k)
    for i in range(n):
        sel = [
            j
            for j in range(n)
            if pos[j] + h <= pos[i] and pos[j] > pos[i] - h - lookback and np.isfinite(L[j]).all()
        ]
        if len(sel) >= min_history:
            m = L[sel].mean(axis=0)
            raw = m ** (-power)
            w[i] = raw / raw.sum()
    return w


MEMBERS = [("rw", RandomWalkVol()), ("ewma", EWMAVol(half_life=10.0))]


@pytest.mark.parametrize("power", [0.0, 1.0, 4.0])
def test_combination_equals_a_loop_reference(frame, power):
    comb = QLIKEWeightedVol(
        members=MEMBERS, horizons=(1, 5), lookback=40, power=power, min_history=10
    )
    start = frame["ts"].iloc[200]
    out = comb.walk_forward(frame, (1, 5), start=start)
    early = frame["ts"].iloc[200 - 40 - 5 - 1]
    mem = {n: clone(e).walk_forward(frame, (1, 5), start=early) for n, e in MEMBERS}
    for s in ("BTCUSDT", "ETHUSDT"):
        rv = frame[frame["symbol"] == s]["rv_var"].to_numpy()
        ts = pd.DatetimeIndex(frame[frame["symbol"] == s]["ts"])
        idx = mem["rw"][s].origins.intersection(mem["ewma"][s].origins)
        pos = ts.get_indexer(idx)
        for h in (1, 5):
            F = np.column_stack([mem[n][s].variance[h].reindex(idx).to_numpy() for n, _ in MEMBERS])
            y = target_mean(rv, h)[pos]
            L = np.full_like(F, np.nan)
            ok = np.isfinite(y)
            L[ok] = np.column_stack([qlike(y[ok], F[ok, j]) for j in range(2)])
            w = _loop_weights(L, pos, h, 40, power, 10)
            ref = pd.Series((w * F).sum(axis=1), index=idx)
            got = out[s].variance[h]
            assert got.index[0] == start
            np.testing.assert_allclose(
                got.to_numpy(), ref.reindex(got.index).to_numpy(), rtol=1e-12
            )
            if power == 0.0:
                np.testing.assert_allclose(
                    got.to_numpy(), F.mean(axis=1)[idx.get_indexer(got.index)]
                )


def test_combination_has_no_look_ahead(frame):
    comb = QLIKEWeightedVol(members=MEMBERS, horizons=(1, 5), lookback=40, power=2.0)
    start, cut = frame["ts"].iloc[200], frame["ts"].iloc[260]
    a = comb.walk_forward(frame, (1, 5), start=start)
    pert = frame.copy()
    pert.loc[pert["ts"] > cut, "rv_var"] *= 5.0
    b = comb.walk_forward(pert, (1, 5), start=start)
    for s in a:
        np.testing.assert_array_equal(
            a[s].variance.loc[:cut].to_numpy(), b[s].variance.loc[:cut].to_numpy()
        )


def test_combination_fit_predict_contract(frame):
    comb = QLIKEWeightedVol(members=MEMBERS, horizons=(1,), lookback=60, power=2.0)
    with pytest.raises(NotFittedError):
        comb.predict(frame)
    assert clone(comb).get_params()["lookback"] == 60
    comb.fit(frame)
    for s in ("BTCUSDT", "ETHUSDT"):
        w = comb.weights_[s][1]
        assert w.shape == (2,) and w.sum() == pytest.approx(1.0) and (w > 0).all()
    fc = comb.predict(frame)
    rw = comb.members_["rw"].predict(frame, horizons=(1,))["BTCUSDT"].variance[1]
    ew = comb.members_["ewma"].predict(frame, horizons=(1,))["BTCUSDT"].variance[1]
    idx = fc["BTCUSDT"].origins
    w = comb.weights_["BTCUSDT"][1]
    np.testing.assert_allclose(
        fc["BTCUSDT"].variance[1].to_numpy(),
        w[0] * rw.reindex(idx).to_numpy() + w[1] * ew.reindex(idx).to_numpy(),
    )


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"members": []}, "'members' parameter of QLIKEWeightedVol must be a non-empty"),
        (
            {"members": [("a", RandomWalkVol()), ("a", RandomWalkVol())]},
            "member names must be unique",
        ),
        ({"members": MEMBERS, "lookback": 2}, "'lookback' parameter of QLIKEWeightedVol must be"),
        ({"members": MEMBERS, "power": -1.0}, "'power' parameter of QLIKEWeightedVol must be"),
    ],
)
def test_combination_parameter_validation(frame, params, match):
    with pytest.raises(ValueError, match=match):
        QLIKEWeightedVol(**params).fit(frame)
