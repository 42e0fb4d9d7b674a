"""The add-ons: liquidity (half spread + square-root impact, net delta and net vega), concentration
(zero below the threshold, monotone, convex: hypothesis) and the short-option minimum, by hand and
as reported components whose allocations sum; exposures from the kernel against Black-76."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from margin.addons import AddOnInputs, UnderlyingLiquidity, compute_addons
from margin.calculator import COMPONENTS, compute_margin, what_if
from margin.instruments import Option, parse_instrument
from margin.market_state import Liquidity, MarketState, Quote
from margin.params import MarginParams
from margin.pricing import black76_greeks
from tests.test_margin.margin_fixtures import AS_OF, book, make_bundle, make_state

BUNDLE = make_bundle()
STATE = make_state()


def _liquid(state: MarketState, u: str, hs: float, adv: float | None = None,
            oi: float | None = None) -> MarketState:
    def q(v: float | None, unit: str) -> Quote | None:
        return None if v is None else Quote(v, unit, "test", AS_OF)

    unds = dict(state.underlyings)
    unds[u] = dataclasses.replace(unds[u], liquidity=Liquidity(q(hs, "fraction"), q(adv, "USD"),
                                                               q(oi, "USD")))
    return dataclasses.replace(state, underlyings=unds)


def _sums(r) -> None:
    assert math.fsum(r.components.values()) == pytest.approx(r.im, rel=1e-12)
    for c in COMPONENTS:
        assert math.fsum(d[c] for d in r.by_position.values()) == pytest.approx(
            r.components[c], rel=1e-9, abs=1e-9)


def test_liquidity_by_hand_spread_and_square_root_impact() -> None:
    """10 BTC spot at 60,000: N = 600,000 USD of delta; 10 bp half spread = 600 USD; ADV 1 M USD,
    so N is 60% of ADV (above the 1% threshold): impact = Y sigma_1d sqrt(N / ADV) N with the
    bundle's 3% daily vol = 0.03 x sqrt(0.6) x 600,000 = 13,942.74 USD."""
    state = _liquid(STATE, "BTC", 0.001, adv=1e6)
    r = compute_margin(book("a,BTCUSDT,10,60000"), state, BUNDLE)
    n = 600_000.0
    want = n * 0.001 + 1.0 * 0.03 * math.sqrt(n / 1e6) * n
    assert r.components["liquidity"] == pytest.approx(want, rel=1e-8)
    d = r.explain["addons"]["by_underlying"]["BTC"]
    assert d["net_delta_usd"] == pytest.approx(n, rel=1e-8) and d["impact_cost_usd"] > 0
    _sums(r)
    # below the threshold (ADV 1 bn: N is 0.06% of it) only the half spread is charged
    r = compute_margin(book("a,BTCUSDT,10,60000"), _liquid(STATE, "BTC", 0.001, adv=1e9), BUNDLE)
    assert r.components["liquidity"] == pytest.approx(n * 0.001, rel=1e-8)
    # no liquidity in the market state: the default 5 bp, recorded
    r = compute_margin(book("a,BTCUSDT,10,60000"), STATE, BUNDLE)
    assert r.components["liquidity"] == pytest.approx(n * 0.0005, rel=1e-8)
    assert "default_half_spread" in r.explain["addons"]["by_underlying"]["BTC"]["source"]


def test_book_depth_absorbs_what_fits_in_it() -> None:
    """With 1 M USD resting on the thinner side of the book, 600,000 USD of delta closes at the
    half spread (no impact although it is 60% of ADV); 2 M USD of delta does not fit: impact."""
    def liq(depth: float) -> MarketState:
        unds = dict(STATE.underlyings)
        unds["BTC"] = dataclasses.replace(unds["BTC"], liquidity=Liquidity(
            Quote(0.001, "fraction", "test", AS_OF), Quote(1e6, "USD", "test", AS_OF), None,
            Quote(depth, "USD", "test", AS_OF)))
        return dataclasses.replace(STATE, underlyings=unds)

    r = compute_margin(book("a,BTCUSDT,10,60000"), liq(1e6), BUNDLE)
    assert r.components["liquidity"] == pytest.approx(600, rel=1e-8)
    r = compute_margin(book("a,BTCUSDT,100,60000"), liq(1e6), BUNDLE)
    n = 6e6
    assert r.components["liquidity"] == pytest.approx(n * 0.001 + 0.03 * math.sqrt(n / 1e6) * n,
                                                      rel=1e-8)


def test_liquidity_is_charged_on_the_net_exposure_not_the_gross() -> None:
    """Long 10 BTC spot, short 10 of the perpetual (mark 0.05% above the index): the net delta is
    -300 USD, so the close-out cost is that of 300 USD, not of 1.2 M of gross notional."""
    state = _liquid(STATE, "BTC", 0.001, adv=1e6)
    hedged = compute_margin(book("s,BTCUSDT,10,60000\np,BTCUSDT-PERP,-10,60000"), state, BUNDLE)
    legs = [compute_margin(book(x), state, BUNDLE).components["liquidity"]
            for x in ("s,BTCUSDT,10,60000", "p,BTCUSDT-PERP,-10,60000")]
    assert hedged.components["liquidity"] == pytest.approx(300 * 0.001, rel=1e-6)
    assert hedged.components["liquidity"] < 1e-3 * sum(legs)
    # the allocation follows each leg's delta: the spot leg's share is negative
    alloc = {k: v["liquidity"] for k, v in hedged.by_position.items()}
    assert alloc["s"] < 0 < alloc["p"]
    _sums(hedged)


def test_kernel_exposures_equal_black76_delta_and_vega() -> None:
    """The add-ons' option delta (USD per unit log return) and vega (USD per unit vol) from the
    kernel's central differences equal Black-76's analytic greeks (F x delta, vega x 100)."""
    pf = book("c,BTC-{+30D}-60000-C,1,0.05\np,BTC-{+30D}-50000-P,2,0.02\n"
              "e,ETH-{+14D}-3200-C,3,0.03")
    r = compute_margin(pf, STATE, BUNDLE)
    ctx = r.context
    for q in r.positions:
        inst = q.instrument
        assert isinstance(inst, Option)
        mi = ctx.priced[inst.name].inputs
        t = (inst.expiry - AS_OF).total_seconds() / (365.0 * 86400.0)
        g = black76_greeks(mi.price, inst.strike, t, mi.vol, inst.is_call, mi.rate,
                           inverse=inst.inverse)
        s0 = ctx.priced_spot(inst.underlying)
        # inverse: the kernel's USD P&L is the coin P&L (c1 - c0) at the scenario's price, so
        # its delta is S0 dc/d ln F = S0 F dc/dF, Black-76's premium-adjusted inverse delta x S0
        lin = float(g.delta) * mi.price if not inst.inverse else float(g.delta) * s0
        delta, vega = ctx.greeks[inst.name]
        assert delta == pytest.approx(lin * inst.contract_size, rel=1e-6)
        vega_usd = float(g.vega) * 100 * (s0 if inst.inverse else 1.0)
        assert vega == pytest.approx(vega_usd * inst.contract_size, rel=1e-6)


def test_vega_is_netted_per_expiry() -> None:
    """A calendar spread's vega sits in two expiries: charged on both; the same strikes and expiry
    long and short net to zero vega and zero delta."""
    p = MarginParams(vega_half_spread_vol=0.01)
    cal = compute_margin(book("n,BTC-{+7D}-60000-C,-10,0.025\nf,BTC-{+60D}-60000-C,10,0.08"),
                         STATE, BUNDLE, p)
    buckets = cal.explain["addons"]["by_underlying"]["BTC"]["vega_buckets"]
    assert len(buckets) == 2
    assert sum(b["cost_usd"] for b in buckets.values()) > 0
    flat = compute_margin(book("a,BTC-{+7D}-60000-C,-10,0.025\nb,BTC-{+7D}-60000-C,10,0.025"),
                          STATE, BUNDLE, p)
    assert flat.components["liquidity"] == pytest.approx(0.0, abs=1e-9)


def _conc(size: float, threshold: float = 0.05, power: float = 2.0) -> float:
    x = AddOnInputs(["BTC"], ["BTCUSDT-PERP"], [""], np.array([size]), np.array([size * 6e4]),
                    np.zeros(1), np.zeros(1, dtype=bool), np.zeros(1))
    liq = {"BTC": UnderlyingLiquidity(0.0005, 1e8, 5e8, 0.03, "test")}
    p = MarginParams(concentration_threshold=threshold, concentration_power=power)
    out = compute_addons(x, liq, {"BTC": 0.05 * size * 6e4}, np.array([0.05 * size * 6e4]),
                         {"BTC": 3000.0}, 0.05 * size * 6e4, p)
    return out.components["concentration"]


@settings(max_examples=60, deadline=None)
@given(threshold=st.floats(0.01, 0.3), power=st.floats(1.0, 3.0),
       sizes=st.lists(st.floats(1.0, 40_000.0), min_size=3, max_size=3, unique=True))
def test_concentration_is_zero_below_the_threshold_then_monotone_and_convex(
        threshold: float, power: float, sizes: list[float]) -> None:
    """Capacity 500 M USD: zero while 60,000 x size / 500 M <= threshold; above it
    non-decreasing in size and convex (the chord over three sizes lies above the curve)."""
    a, b, c = sorted(sizes)
    fa, fb, fc = (_conc(s, threshold, power) for s in (a, b, c))
    for s, f in ((a, fa), (b, fb), (c, fc)):
        if s * 6e4 / 5e8 <= threshold:
            assert f == 0.0
        else:
            assert f > 0.0
    assert fa <= fb <= fc
    chord = fa + (fc - fa) * (b - a) / (c - a)
    assert fb <= chord * (1 + 1e-12) + 1e-9


def test_concentration_in_the_margin_uses_open_interest_else_adv_days() -> None:
    """1,000 BTC (60 M USD) against 100 M USD of open interest is 60% of it: 12x the 5%
    threshold, so the add-on = (12 - 1)^2 x the standalone market risk."""
    pf = book("a,BTCUSDT-PERP,1000,60000")
    r = compute_margin(pf, _liquid(STATE, "BTC", 0.0005, adv=1e12, oi=1e8), BUNDLE)
    d = r.explain["addons"]["by_underlying"]["BTC"]
    share = d["share_of_capacity"]
    assert share == pytest.approx(1000 * 60000 * 1.0005 / 1e8, rel=1e-6)
    stand = r.measures["standalone_by_underlying"]["BTC"]
    assert r.components["concentration"] == pytest.approx((share / 0.05 - 1) ** 2 * stand, rel=1e-9)
    # without open interest: capacity = 5 days of ADV
    r2 = compute_margin(pf, _liquid(STATE, "BTC", 0.0005, adv=1e8), BUNDLE)
    assert r2.explain["addons"]["by_underlying"]["BTC"]["capacity_usd"] == pytest.approx(5e8)
    _sums(r)


def test_short_option_minimum_floors_a_far_out_of_the_money_short() -> None:
    """Short 100 BTC calls struck at 4x spot expiring in a week: almost no scenario risk, so the
    floor binds: 10% x 100 BTC x the outright margin of 1 BTC, less the rest of the margin."""
    pf = book("c,BTC-{+7D}-240000-C,-100,0.0001")
    r = compute_margin(pf, STATE, BUNDLE)
    d = r.explain["addons"]["by_underlying"]["BTC"]
    assert d["short_option_units"] == pytest.approx(100.0)
    # the outright margin of 1 BTC, recomputed from the forecast pool's log returns
    ctx = r.context
    x, *_ = ctx.stacked
    lo, hi = ctx.offsets["fhs"][0], ctx.offsets["mc:forecast"][1]
    j = ctx.scenarios.underlyings.index("BTC")
    pnl = 60000.0 * np.expm1(x[lo:hi, j])
    k = math.ceil(round(len(pnl) * 0.025, 9))
    es = max(-np.sort(pnl)[:k].mean(), -np.sort(-pnl)[:k].mean())
    assert d["outright_unit_margin"] == pytest.approx(es, rel=1e-12)
    before = math.fsum(r.components[c] for c in COMPONENTS if c != "short_option_minimum")
    assert r.components["short_option_minimum"] == pytest.approx(0.1 * 100 * es - before, rel=1e-9)
    assert r.im == pytest.approx(0.1 * 100 * es, rel=1e-9)
    _sums(r)
    # a long position in the same option nets it away: no floor
    net = compute_margin(book("c,BTC-{+7D}-240000-C,-100,0.0001\nl,BTC-{+7D}-240000-C,100,0.0001"),
                         STATE, BUNDLE)
    assert net.components["short_option_minimum"] == 0.0


def test_what_if_with_add_ons_equals_the_full_recompute() -> None:
    state = _liquid(STATE, "BTC", 0.001, adv=5e6, oi=2e7)
    base = compute_margin(book("a,BTCUSDT-PERP,50,60000\nc,BTC-{+7D}-90000-C,-20,0.001"), state,
                          BUNDLE)
    call = next(q.instrument for q in base.positions if q.id == "c")
    for inst, qty in ((parse_instrument("BTCUSDT-PERP"), 200.0), (call, -50.0),
                      (parse_instrument("BTCUSDT"), -50.0)):
        fast = what_if(base, (inst, qty), full=False)
        full = what_if(base, (inst, qty))
        assert fast.im == pytest.approx(full.after.im, rel=1e-9)
        for c in ("liquidity", "concentration", "short_option_minimum"):
            assert fast.components[c] == pytest.approx(full.after.components[c], rel=1e-9, abs=1e-9)


def test_addons_off_give_the_risk_chain_only() -> None:
    pf = book("c,BTC-{+7D}-240000-C,-100,0.0001\na,BTCUSDT,3,60000")
    r = compute_margin(pf, STATE, BUNDLE, MarginParams(addons=False))
    assert all(r.components[c] == 0.0 for c in ("liquidity", "concentration",
                                                 "short_option_minimum"))


def test_bad_liquidity_inputs_are_named() -> None:
    q = Quote(0.001, "fraction", "quotes", AS_OF)
    from features.errors import DataError

    with pytest.raises(DataError, match=r"Liquidity.adv_usd must be finite and > 0; got -5.0 "
                                         r"\(bars_1m\)"):
        Liquidity(q, Quote(-5.0, "USD", "bars_1m", AS_OF))
    with pytest.raises(TypeError, match="Liquidity.half_spread must be a Quote; got float"):
        Liquidity(0.001)  # type: ignore[arg-type]
