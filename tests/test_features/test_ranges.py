"""Range estimators: closed forms on hand-made bars, unbiasedness on exact Brownian ranges, and
bar aggregation against pandas resample."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.ranges import aggregate_bars, range_variance
from features.schema import DataError

T0 = pd.Timestamp("2024-03-04", tz="UTC")


def _bars(o, h, lo, c, symbol="A", freq="1D"):
    n = len(o)
    return pd.DataFrame(
        {
            "ts": pd.date_range(T0 + pd.Timedelta(freq), periods=n, freq=freq),
            "symbol": symbol,
            "open": np.asarray(o, float),
            "high": np.asarray(h, float),
            "low": np.asarray(lo, float),
            "close": np.asarray(c, float),
        }
    )


def test_hand_made_rows_match_closed_forms():
    o, h, lo, c = [100.0, 50.0], [110.0, 52.0], [95.0, 49.0], [105.0, 49.5]
    res = range_variance(
        _bars(o, h, lo, c), estimators=("parkinson", "garman_klass", "rogers_satchell")
    )
    for i in range(2):
        hl = math.log(h[i] / lo[i])
        co = math.log(c[i] / o[i])
        assert res["parkinson_var"][i] == pytest.approx(hl**2 / (4 * math.log(2)), rel=1e-12)
        assert res["gk_var"][i] == pytest.approx(
            0.5 * hl**2 - (2 * math.log(2) - 1) * co**2, rel=1e-12
        )
        rs = math.log(h[i] / c[i]) * math.log(h[i] / o[i]) + math.log(lo[i] / c[i]) * math.log(
            lo[i] / o[i]
        )
        assert res["rs_var"][i] == pytest.approx(rs, rel=1e-12)
    assert "yz_var" not in res.columns


def test_yang_zhang_by_hand(rng):
    n, w = 30, 5
    c_prev = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = c_prev * np.exp(rng.normal(0, 0.005, n))
    c = o * np.exp(rng.normal(0, 0.01, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.005, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.005, n)))
    res = range_variance(_bars(o, h, lo, c), window=w)
    k = 0.34 / (1.34 + (w + 1) / (w - 1))
    on = np.log(o[1:] / c[:-1])
    oc = np.log(c / o)
    rs = np.log(h / c) * np.log(h / o) + np.log(lo / c) * np.log(lo / o)
    for t in range(n):
        if t < w:  # the first bar has no overnight return, so the first full window ends at w
            assert np.isnan(res["yz_var"][t])
            continue
        exp = (
            np.var(on[t - w : t], ddof=1)
            + k * np.var(oc[t - w + 1 : t + 1], ddof=1)
            + (1 - k) * np.mean(rs[t - w + 1 : t + 1])
        )
        assert res["yz_var"][t] == pytest.approx(exp, rel=1e-10)


def _exact_brownian_bars(gen, n_bars, steps, sigma, overnight_sd=0.0):
    """OHLC of a driftless Brownian log price with the exact continuous high/low: each step's
    maximum/minimum is drawn from the Brownian-bridge law given its end points."""
    v = sigma**2 / steps
    dx = gen.normal(0, math.sqrt(v), (n_bars, steps))
    x0 = np.cumsum(gen.normal(0, overnight_sd, n_bars)) if overnight_sd else np.zeros(n_bars)
    path = np.concatenate([np.zeros((n_bars, 1)), np.cumsum(dx, axis=1)], axis=1)
    a, b = path[:, :-1], path[:, 1:]
    d2 = (b - a) ** 2
    mx = 0.5 * (a + b + np.sqrt(d2 - 2 * v * np.log(gen.random(a.shape))))
    mn = 0.5 * (a + b - np.sqrt(d2 - 2 * v * np.log(gen.random(a.shape))))
    # cumulate: each bar opens where the previous closed plus an overnight jump
    level = np.concatenate([[0.0], np.cumsum(path[:-1, -1])]) + x0
    o = np.exp(level)
    return _bars(
        o,
        np.exp(level + mx.max(axis=1)),
        np.exp(level + mn.min(axis=1)),
        np.exp(level + path[:, -1]),
    )


@pytest.mark.parametrize("col", ["parkinson_var", "gk_var", "rs_var"])
def test_unbiased_for_driftless_brownian_motion(rng, col):
    sigma = 0.02
    bars = _exact_brownian_bars(rng, n_bars=20000, steps=50, sigma=sigma)
    res = range_variance(bars, estimators=("parkinson", "garman_klass", "rogers_satchell"))
    est = res[col].mean() / sigma**2
    assert abs(est - 1) < 0.03, est
    # each is far more efficient than the squared close-to-open return
    co2 = np.log(bars["close"] / bars["open"]) ** 2
    assert res[col].var() < 0.6 * co2.var()


def test_yang_zhang_estimates_close_to_close_variance(rng):
    sigma, on_sd = 0.02, 0.01
    bars = _exact_brownian_bars(rng, n_bars=20000, steps=50, sigma=sigma, overnight_sd=on_sd)
    res = range_variance(bars, estimators=("yang_zhang",), window=20)
    est = res["yz_var"].mean() / (sigma**2 + on_sd**2)
    assert abs(est - 1) < 0.03, est


def test_multi_symbol_independent_and_sorted(rng):
    a = _exact_brownian_bars(rng, 40, 20, 0.01).assign(symbol="A")
    b = _exact_brownian_bars(rng, 40, 20, 0.03).assign(symbol="B")
    both = pd.concat([b, a], ignore_index=True).sample(
        frac=1.0, random_state=np.random.RandomState(0)
    )
    res = range_variance(both, window=10)
    ref = pd.concat([range_variance(a, window=10), range_variance(b, window=10)], ignore_index=True)
    pd.testing.assert_frame_equal(res, ref)


@pytest.mark.parametrize("rule", ["5min", "1h", "1D"])
def test_aggregate_matches_pandas_resample(rng, rule):
    n = 3 * 1440 - 7
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    o = np.concatenate([[100.0], close[:-1]])
    h = np.maximum(o, close) * np.exp(np.abs(rng.normal(0, 5e-4, n)))
    lo = np.minimum(o, close) * np.exp(-np.abs(rng.normal(0, 5e-4, n)))
    bars = _bars(o, h, lo, close, freq="1min").assign(volume=rng.random(n))
    bars = bars.drop(index=np.arange(100, 400)).reset_index(drop=True)  # a gap
    got = aggregate_bars(bars, rule)
    ref = (
        bars.set_index("ts")
        .resample(rule, closed="right", label="right")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        .dropna(subset=["open"])
    )
    assert list(got["ts"]) == list(ref.index)
    for c in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(got[c].to_numpy(), ref[c].to_numpy(), rtol=1e-12)
    assert (got["symbol"] == "A").all()


def test_errors():
    good = _bars([1.0], [2.0], [0.5], [1.5])
    with pytest.raises(ValueError, match="'estimators' parameter"):
        range_variance(good, estimators=("bogus",))
    with pytest.raises(ValueError, match="'window' parameter must be an integer >= 2"):
        range_variance(good, window=1)
    with pytest.raises(DataError, match="high 1.0.*expected low <= open"):
        range_variance(_bars([1.0], [1.0], [0.5], [1.5]))
    with pytest.raises(DataError, match=r"column 'low'.*-0.5 at row 0"):
        range_variance(_bars([1.0], [2.0], [-0.5], [1.5]))
    with pytest.raises(DataError, match="missing column"):
        range_variance(good.drop(columns="high"))
    with pytest.raises(ValueError, match="'rule' parameter"):
        aggregate_bars(good, "M")
