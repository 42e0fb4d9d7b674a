"""Black-76 against QuantLib (test-only oracle), parity, inverse identities, finite-difference greeks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import QuantLib as ql
from hypothesis import given, settings
from hypothesis import strategies as st

from margin.pricing import (
    SECONDS_PER_YEAR,
    black76_greeks,
    black76_price,
    black76_scalar,
    intrinsic,
    year_fraction,
)

CASES = [  # forward, strike, t_yr, vol, rate
    (100.0, 100.0, 1.0, 0.2, 0.0),
    (100.0, 110.0, 0.5, 0.3, 0.03),
    (65_000.0, 50_000.0, 30 / 365, 0.55, 0.0),  # deep ITM BTC call / OTM put
    (65_000.0, 120_000.0, 7 / 365, 0.9, 0.0),  # deep OTM call
    (3_000.0, 2_000.0, 2.0, 1.5, 0.05),  # extreme vol
    (2_250.0, 2_300.0, 1 / 365, 0.6, 0.0),  # one day
    (5_000.0, 4_500.0, 0.25, 0.15, 0.045),  # equity index
]


def ql_calc(f, k, t, v, r, call):
    kind = ql.Option.Call if call else ql.Option.Put
    return ql.BlackCalculator(ql.PlainVanillaPayoff(kind, k), f, v * math.sqrt(t), math.exp(-r * t))


@pytest.mark.parametrize("call", [True, False], ids=["call", "put"])
@pytest.mark.parametrize("case", CASES, ids=[f"F{c[0]:g}-K{c[1]:g}-v{c[3]:g}" for c in CASES])
def test_price_and_greeks_match_quantlib(case, call):
    f, k, t, v, r = case
    ref = ql_calc(f, k, t, v, r, call)
    kind = ql.Option.Call if call else ql.Option.Put
    q_price = ql.blackFormula(kind, k, f, v * math.sqrt(t), math.exp(-r * t))
    g = black76_greeks(f, k, t, v, call, r)
    assert float(g.price) == pytest.approx(q_price, rel=1e-10, abs=1e-12 * f)
    assert black76_scalar(f, k, t, v, call, r) == pytest.approx(q_price, rel=1e-10, abs=1e-12 * f)
    assert float(g.delta) == pytest.approx(ref.deltaForward(), rel=1e-10, abs=1e-14)
    assert float(g.gamma) == pytest.approx(ref.gammaForward(), rel=1e-10, abs=1e-16)
    assert float(g.vega) == pytest.approx(ref.vega(t) / 100.0, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("case", CASES, ids=[f"F{c[0]:g}-K{c[1]:g}" for c in CASES])
def test_put_call_parity(case):
    f, k, t, v, r = case
    c = black76_price(f, k, t, v, True, r)
    p = black76_price(f, k, t, v, False, r)
    assert float(c - p) == pytest.approx(math.exp(-r * t) * (f - k), rel=1e-12, abs=1e-9 * f)
    # inverse: (c - p) in coin = D (F - K) / F
    ci = black76_price(f, k, t, v, True, r, inverse=True)
    pi = black76_price(f, k, t, v, False, r, inverse=True)
    assert float(ci - pi) == pytest.approx(math.exp(-r * t) * (f - k) / f, rel=1e-12, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    f=st.floats(100.0, 200_000.0), m=st.floats(-2.0, 2.0), t=st.floats(1e-4, 3.0),
    v=st.floats(0.01, 3.0), call=st.booleans(),
)
def test_inverse_identity_coin_price_times_forward_is_linear(f, m, t, v, call):
    k = f * math.exp(m)
    lin = black76_greeks(f, k, t, v, call)
    inv = black76_greeks(f, k, t, v, call, inverse=True)
    assert float(inv.price) * f == pytest.approx(float(lin.price), rel=1e-13, abs=1e-300)
    assert float(inv.vega) * f == pytest.approx(float(lin.vega), rel=1e-12, abs=1e-300)
    assert float(inv.theta) * f == pytest.approx(float(lin.theta), rel=1e-12, abs=1e-300)
    # premium-adjusted delta = linear delta - coin premium (Deribit's convention)
    assert float(inv.delta) == pytest.approx(float(lin.delta) - float(inv.price), abs=1e-13)


def fd(fn, x, h):
    return (fn(x + h) - fn(x - h)) / (2 * h)


@pytest.mark.parametrize("inverse", [False, True], ids=["linear", "inverse"])
@pytest.mark.parametrize("call", [True, False], ids=["call", "put"])
@pytest.mark.parametrize("case", CASES, ids=[f"F{c[0]:g}-K{c[1]:g}" for c in CASES])
def test_greeks_against_finite_differences(case, call, inverse):
    f, k, t, v, r = case
    g = black76_greeks(f, k, t, v, call, r, inverse=inverse)

    def price(ff=f, tt=t, vv=v):
        return black76_scalar(ff, k, tt, vv, call, r, inverse=inverse)

    hf = 1e-5 * f
    dprice_df = fd(lambda x: price(ff=x), f, hf)
    want_delta = f * dprice_df if inverse else dprice_df  # inverse: F dc/dF
    assert float(g.delta) == pytest.approx(want_delta, rel=1e-6, abs=1e-9)
    # gamma = d(delta)/dF, differencing the delta (itself checked above and against QuantLib)
    d_delta = fd(lambda x: float(black76_greeks(x, k, t, v, call, r, inverse=inverse).delta),
                 f, hf)
    assert float(g.gamma) == pytest.approx(d_delta, rel=1e-5, abs=1e-9 / f)
    # vega per vol point, theta per calendar day (time to expiry shrinks by one day)
    assert float(g.vega) == pytest.approx(fd(lambda x: price(vv=x), v, 1e-5) / 100, rel=1e-6,
                                          abs=1e-12 * f)
    ht = min(1e-5, t / 10)
    assert float(g.theta) == pytest.approx(-fd(lambda x: price(tt=x), t, ht) / 365, rel=1e-5,
                                           abs=1e-10 * f)


def test_theta_linear_hand_value():
    # r = 0: theta = -F pdf(d1) vol / (2 sqrt t) / 365; F=K=100, t=1, vol=0.2 -> d1 = 0.1
    pdf = math.exp(-0.005) / math.sqrt(2 * math.pi)
    assert float(black76_greeks(100.0, 100.0, 1.0, 0.2, True).theta) == pytest.approx(
        -100 * pdf * 0.2 / 2 / 365, rel=1e-14)


@pytest.mark.parametrize("inverse", [False, True], ids=["linear", "inverse"])
def test_zero_vol_and_expired_are_intrinsic(inverse):
    f = np.array([120.0, 80.0, 120.0, 80.0])
    k = 100.0
    call = np.array([True, True, False, False])
    iv = intrinsic(f, k, call)
    np.testing.assert_array_equal(iv, [20.0, 0.0, 0.0, 20.0])
    scale = f if inverse else 1.0
    for t, v in [(0.0, 0.5), (-0.1, 0.5), (0.5, 0.0)]:
        g = black76_greeks(f, k, t, v, call, 0.02, inverse=inverse)
        disc = math.exp(-0.02 * max(t, 0.0))
        np.testing.assert_allclose(g.price, disc * iv / scale, rtol=1e-15)
        np.testing.assert_array_equal(g.vega, 0.0)
        lin_delta = disc * np.array([1.0, 0.0, 0.0, -1.0])
        np.testing.assert_allclose(g.delta, lin_delta - (disc * iv / f if inverse else 0.0),
                                   rtol=1e-15)
        for i in range(4):
            assert black76_scalar(f[i], k, t, v, call[i], 0.02, inverse=inverse) == pytest.approx(
                float(g.price[i]), rel=1e-15)
    # tiny vol converges to the zero-vol value (no discontinuity in price)
    np.testing.assert_allclose(black76_price(f, k, 0.5, 1e-9, call), iv, atol=1e-9)


def test_vectorized_equals_scalar_on_grid():
    rng = np.random.default_rng(3)
    n = 500
    f = rng.uniform(10, 1e5, n)
    k = f * np.exp(rng.normal(0, 0.6, n))
    t = rng.uniform(0, 2, n)
    v = rng.uniform(0, 2, n)
    c = rng.random(n) < 0.5
    got = black76_price(f, k, t, v, c, 0.01, inverse=True)
    want = [black76_scalar(f[i], k[i], t[i], v[i], bool(c[i]), 0.01, inverse=True) for i in range(n)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_year_fraction_act365():
    assert year_fraction("2024-01-01", "2025-01-01") == pytest.approx(366 / 365)  # leap year
    a = pd.Timestamp("2024-12-20 08:00", tz="UTC")
    assert year_fraction(a, a + pd.Timedelta(hours=6)) == 6 * 3600 / SECONDS_PER_YEAR
    assert year_fraction(a, a - pd.Timedelta(days=1)) == -1 / 365


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-1.0, 100.0, 1.0, 0.2), r"forward must be finite and > 0. Got -1.0 at element 0"),
        ((100.0, 0.0, 1.0, 0.2), r"strike must be finite and > 0. Got 0.0"),
        ((100.0, 100.0, 1.0, -0.2), r"vol must be finite and >= 0. Got -0.2"),
        ((100.0, 100.0, float("nan"), 0.2), r"t_yr must be finite. Got nan"),
        ((100.0, 100.0, 1.0, float("inf")), r"vol must be finite and >= 0. Got inf"),
    ],
    ids=["forward", "strike", "vol", "t_yr", "vol-inf"],
)
def test_bad_inputs_raise_data_error(args, match):
    from features.errors import DataError

    with pytest.raises(DataError, match=match):
        black76_price(*args, True)
    with pytest.raises(DataError, match=match):
        black76_scalar(*args, True)
    with pytest.raises(DataError, match=r"forward must be finite and > 0. Got -5.0 at element 2"):
        black76_greeks([1.0, 2.0, -5.0], 1.0, 1.0, 0.2, True)
