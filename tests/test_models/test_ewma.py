"""EWMA / RiskMetrics and the random walk: recursions by hand, flat term structure, contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.base import MissingInputsError
from models.ewma import EWMAVol, RandomWalkVol, ewma_recursion
from models.forecast import only
from tests.test_models.test_har import simulate_realized


def loop_ewma(x, lam):
    s = [x[0]]
    for v in x[1:]:
        s.append(lam * s[-1] + (1 - lam) * v)
    return np.array(s)


def test_recursion_by_hand():
    x = np.array([4.0, 1.0, 9.0, 2.0])
    lam = 0.94
    s1 = 0.94 * 4.0 + 0.06 * 1.0
    s2 = 0.94 * s1 + 0.06 * 9.0
    np.testing.assert_allclose(ewma_recursion(x, lam)[:3], [4.0, s1, s2], rtol=1e-15)
    assert ewma_recursion(np.array([]), lam).size == 0


def test_recursion_matches_loop_on_long_series(rng):
    x = rng.gamma(2.0, 1e-4, 2000)
    np.testing.assert_allclose(ewma_recursion(x, 0.97), loop_ewma(x, 0.97), rtol=1e-12)


def test_predict_is_the_recursion_at_every_origin_and_flat_in_h(rng):
    frame = simulate_realized(rng, 120)
    fc = only(EWMAVol(lam=0.9).fit(frame).predict(frame, horizons=(1, 5, 22)))
    expected = loop_ewma(frame["rv_var"].to_numpy(), 0.9)
    for h in (1, 5, 22):
        np.testing.assert_allclose(fc.variance[h].to_numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(fc.cumulative_var(22), 22 * expected, rtol=1e-12)
    # nothing is estimated: each forecast's data cutoff is its own origin
    assert (fc.cutoff_per_origin() == fc.variance.index).all()


def test_half_life_sets_lambda(rng):
    frame = simulate_realized(rng, 60)
    m = EWMAVol(half_life=10).fit(frame)
    assert m.lam_ == pytest.approx(0.5**0.1)
    # after half_life periods the weight of an old observation has halved
    assert m.lam_**10 == pytest.approx(0.5)
    np.testing.assert_allclose(
        only(m.predict(frame, (1,))).variance[1], loop_ewma(frame["rv_var"].to_numpy(), 0.5**0.1)
    )
    assert m.level_["BTCUSDT"] == pytest.approx(loop_ewma(frame["rv_var"].to_numpy(), 0.5**0.1)[-1])


def test_squared_returns_mode(rng):
    n = 50
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-02", periods=n, freq="D", tz="UTC"),
            "symbol": "BTCUSDT",
            "close": close,
        }
    )
    fc = only(EWMAVol(on="squared_returns").fit(frame).predict(frame, (1,)))
    r2 = np.diff(np.log(close)) ** 2
    np.testing.assert_allclose(fc.variance[1].to_numpy(), loop_ewma(r2, 0.94), rtol=1e-12)
    assert fc.variance.index[0] == frame["ts"].iloc[1]  # the first row has no return
    with pytest.raises(MissingInputsError, match=r"needs column\(s\) \['close'\]"):
        EWMAVol(on="squared_returns").fit(frame.drop(columns="close").assign(rv_var=1.0))


def test_random_walk_is_the_last_rv_and_drops_low_n_obs_days(rng):
    frame = simulate_realized(rng, 80, low_obs_every=10)
    fc = only(RandomWalkVol().fit(frame).predict(frame, horizons=(1, 5)))
    kept = frame[frame["n_obs"] >= 250]
    np.testing.assert_array_equal(fc.variance[5].to_numpy(), kept["rv_var"].to_numpy())
    wf = RandomWalkVol().walk_forward(frame, (1,), start=kept["ts"].iloc[40])["BTCUSDT"]
    np.testing.assert_array_equal(wf.variance[1].to_numpy(), kept["rv_var"].to_numpy()[40:])


def test_walk_forward_equals_predict_for_recursive_models(rng):
    frame = simulate_realized(rng, 200)
    start = frame["ts"].iloc[100]
    wf = EWMAVol().walk_forward(frame, (1, 5), start=start)["BTCUSDT"]
    fp = only(EWMAVol().fit(frame).predict(frame, (1, 5)))
    pd.testing.assert_frame_equal(wf.variance, fp.variance.loc[start:], check_freq=False)


@pytest.mark.parametrize(
    ("est", "match"),
    [
        (EWMAVol(lam=1.0), r"The 'lam' parameter of EWMAVol must be in \(0, 1\). Got 1.0 instead."),
        (
            EWMAVol(half_life=-3),
            r"The 'half_life' parameter of EWMAVol must be > 0 or None. Got -3",
        ),
        (EWMAVol(on="returns"), r"The 'on' parameter of EWMAVol must be one of \('rv', "),
        (RandomWalkVol(min_obs="x"), r"The 'min_obs' parameter of RandomWalkVol must be >= 0"),
    ],
)
def test_parameter_errors(rng, est, match):
    with pytest.raises(ValueError, match=match):
        est.fit(simulate_realized(rng, 30))


def test_horizon_free_models_need_horizons(rng):
    frame = simulate_realized(rng, 30)
    with pytest.raises(ValueError, match=r"EWMAVol.predict needs horizons"):
        EWMAVol().fit(frame).predict(frame)
