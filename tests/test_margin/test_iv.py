"""Implied vols: round trips through the pricer, QuantLib as an oracle, per-option bound failures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.errors import FailureReason
from margin.iv import implied_vol
from margin.pricing import black76_price


def test_hand_computed_atm_call() -> None:
    # ATM, F = K = 100, t = 1, vol = 0.2: C = 100 (2 N(0.1) - 1)
    price = 100 * (2 * 0.5 * math.erfc(-0.1 / math.sqrt(2)) - 1)
    assert price == pytest.approx(7.965567455405804, rel=1e-14)
    res = implied_vol(price, 100.0, 100.0, 1.0, True)
    assert res.failures == (None,)
    assert res.vol[0] == pytest.approx(0.2, rel=1e-13)


@settings(max_examples=200, deadline=None)
@given(
    forward=st.floats(100.0, 100_000.0),
    log_m=st.floats(-3.0, 3.0),
    t_yr=st.floats(1 / 365, 3.0),
    vol=st.floats(0.05, 3.0),
    is_call=st.booleans(),
    rate=st.floats(0.0, 0.1),
    inverse=st.booleans(),
)
def test_round_trip_through_the_pricer(forward, log_m, t_yr, vol, is_call, rate, inverse) -> None:
    # keep to where the option has time value distinguishable from intrinsic in float64
    sd = vol * math.sqrt(t_yr)
    if abs(log_m) > 6 * sd:
        return
    strike = forward * math.exp(log_m)
    price = black76_price(forward, strike, t_yr, vol, is_call, rate, inverse=inverse)
    intrinsic = max((forward - strike) if is_call else (strike - forward), 0.0)
    undisc = float(price[()]) * (forward if inverse else 1.0) * math.exp(rate * t_yr)
    if undisc - intrinsic < 1e-9 * forward:
        return
    res = implied_vol(price, forward, strike, t_yr, is_call, rate, inverse=inverse)
    assert res.failures == (None,)
    assert res.vol[0] == pytest.approx(vol, rel=1e-7)


def test_vectorized_chain_matches_scalar_calls_and_keeps_order(rng) -> None:
    n = 200
    f = rng.uniform(1_000, 70_000, n)
    k = f * np.exp(rng.uniform(-0.5, 0.5, n))
    t = rng.uniform(0.01, 1.0, n)
    v = rng.uniform(0.2, 1.5, n)
    c = rng.random(n) < 0.5
    px = black76_price(f, k, t, v, c, inverse=True)
    res = implied_vol(px, f, k, t, c, inverse=True)
    assert res.ok.all()
    np.testing.assert_allclose(res.vol, v, rtol=1e-8)
    one = implied_vol(px[17], f[17], k[17], t[17], c[17], inverse=True)
    assert one.vol[0] == res.vol[17]


def test_against_quantlib_black_formula_implied_std_dev(rng) -> None:
    ql = pytest.importorskip("QuantLib", reason="QuantLib (dev extra) not installed")
    for _ in range(50):
        f = float(rng.uniform(50, 5000))
        k = f * float(np.exp(rng.uniform(-0.4, 0.4)))
        t = float(rng.uniform(0.02, 2.0))
        vol = float(rng.uniform(0.1, 1.2))
        disc = float(np.exp(-0.03 * t))
        call = bool(rng.random() < 0.5)
        px = float(black76_price(f, k, t, vol, call, 0.03)[()])
        typ = ql.Option.Call if call else ql.Option.Put
        sd = ql.blackFormulaImpliedStdDev(typ, k, f, px, disc, 0.0, 0.5, 1e-14, 1000)
        ours = implied_vol(px, f, k, t, call, 0.03)
        assert ours.vol[0] * math.sqrt(t) == pytest.approx(sd, rel=1e-8)


@pytest.mark.parametrize(
    ("price", "forward", "strike", "is_call", "bound"),
    [
        pytest.param(9.0, 110.0, 100.0, True, "lower", id="call-below-intrinsic"),
        pytest.param(10.0, 110.0, 100.0, True, "lower", id="call-at-intrinsic"),
        pytest.param(0.0, 90.0, 100.0, True, "lower", id="otm-call-zero"),
        pytest.param(110.0, 110.0, 100.0, True, "upper", id="call-at-forward"),
        pytest.param(120.0, 110.0, 100.0, True, "upper", id="call-above-forward"),
        pytest.param(4.0, 95.0, 100.0, False, "lower", id="put-below-intrinsic"),
        pytest.param(100.0, 95.0, 100.0, False, "upper", id="put-at-strike"),
    ],
)
def test_prices_outside_the_bounds_get_an_arbitrage_failure(
    price, forward, strike, is_call, bound
) -> None:
    res = implied_vol(
        [5.0, price, 5.0],
        [100.0, forward, 100.0],
        100.0,
        0.5,
        [True, is_call, False],
        names=["A", "B", "C"],
    )
    assert res.failures[0] is None and res.failures[2] is None
    fail = res.failures[1]
    assert fail is not None and fail.reason is FailureReason.ARBITRAGE
    assert fail.subject == "B" and fail.details["bound"] == bound
    assert "no implied volatility" in fail.message
    assert np.isnan(res.vol[1]) and np.isfinite(res.vol[[0, 2]]).all()
    assert res.failed() == [fail]


def test_inverse_bounds_are_in_coin() -> None:
    # an inverse call is worth at most 1 coin (U < F): 1.0 coin is at the bound
    res = implied_vol([1.0, 0.2], 50_000.0, 40_000.0, 0.25, True, inverse=True)
    assert res.failures[0].reason is FailureReason.ARBITRAGE
    assert res.failures[0].details["bound"] == "upper"
    # intrinsic in coin = (F - K) / F = 0.2: at intrinsic
    assert res.failures[1].details["bound"] == "lower"
    assert "0.2 coin" in res.failures[1].message


@pytest.mark.parametrize(
    ("kw", "reason", "text"),
    [
        pytest.param({"price": float("nan")}, FailureReason.NON_FINITE, "price is nan", id="nan"),
        pytest.param(
            {"forward": float("inf")}, FailureReason.NON_FINITE, "forward is inf", id="inf-forward"
        ),
        pytest.param(
            {"strike": 0.0}, FailureReason.INVALID_VALUE, "strike 0.0 must be > 0", id="zero-strike"
        ),
        pytest.param(
            {"forward": -5.0},
            FailureReason.INVALID_VALUE,
            "forward -5.0 must be > 0",
            id="negative-forward",
        ),
        pytest.param({"t_yr": 0.0}, FailureReason.EXPIRED, "expired", id="expired"),
    ],
)
def test_invalid_inputs_are_failures_not_nans(kw, reason, text) -> None:
    args = {"price": 5.0, "forward": 100.0, "strike": 100.0, "t_yr": 0.5} | kw
    res = implied_vol(args["price"], args["forward"], args["strike"], args["t_yr"], True)
    assert res.failures[0].reason is reason
    assert text in res.failures[0].message
    assert np.isnan(res.vol[0])


def test_names_must_match_the_chain() -> None:
    with pytest.raises(ValueError, match=r"'names' parameter must have one name per option \(2\)"):
        implied_vol([1.0, 2.0], 100.0, 100.0, 1.0, True, names=["only-one"])
