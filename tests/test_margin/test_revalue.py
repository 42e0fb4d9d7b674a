"""The revaluation kernel against the scalar pricer, hand-computed cases and thread determinism."""

from __future__ import annotations

import math

import numba
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.errors import ConfigError, DataError
from margin.instruments import (
    Future,
    Option,
    OptionRight,
    Perpetual,
    Settlement,
    Spot,
    parse_instrument,
)
from margin.pricing import black76_price
from margin.revalue import (
    MarketInputs,
    ScenarioSet,
    build_book,
    position_pnl,
    revalue,
    revalue_scalar,
)

AS_OF = pd.Timestamp("2024-12-01 08:00", tz="UTC")
LIN, INV = Settlement.LINEAR, Settlement.INVERSE


def random_book(rng: np.random.Generator, n: int, n_und: int, n_buckets: int,
                vol_mode: str, short_expiry: bool):
    """n random instruments of every kind on underlyings U0..; strikes from deep ITM to deep OTM."""
    spot = {f"U{u}": float(rng.uniform(1.0, 1e5)) for u in range(n_und)}
    positions, inputs = [], {}
    for i in range(n):
        u = f"U{rng.integers(n_und)}"
        s0 = spot[u]
        kind = rng.integers(7)
        settle = INV if kind in (2, 4, 6) else LIN
        days = rng.uniform(0.05, 3.0) if short_expiry and rng.random() < 0.5 else rng.uniform(1, 720)
        exp = AS_OF + pd.Timedelta(days=float(days))
        fwd = s0 * math.exp(rng.normal(0, 0.05))
        name = f"I{i}"
        if kind == 0:
            inst, mi = Spot(name, u, float(rng.uniform(0.1, 10))), MarketInputs(s0 * rng.uniform(0.99, 1.01))
        elif kind in (1, 2):
            inst = Perpetual(name, u, float(rng.uniform(1, 100)), settle)
            mi = MarketInputs(s0 * rng.uniform(0.99, 1.01))
        elif kind in (3, 4):
            inst, mi = Future(name, u, float(rng.uniform(1, 100)), settle, "", exp), MarketInputs(fwd)
        else:
            k = fwd * math.exp(rng.normal(0, 1.2))  # deep ITM/OTM included
            vol = {"normal": rng.uniform(0.05, 1.5), "zero": 0.0,
                   "extreme": rng.choice([1e-4, 5.0, 10.0]),
                   "mixed": rng.choice([0.0, 1e-4, 0.5, 5.0])}[vol_mode]
            inst = Option(name, u, 1.0, settle, "", exp, k,
                          OptionRight.CALL if rng.random() < 0.5 else OptionRight.PUT)
            mi = MarketInputs(fwd, float(vol), int(rng.integers(n_buckets)),
                              float(rng.choice([0.0, 0.05])))
        q = float(rng.normal(0, 10)) or 1.0
        positions.append((inst, q))
        inputs[name] = mi
    return positions, inputs, spot


def random_scenarios(rng, und, n_s, n_buckets, dt_yr, extras=True):
    return ScenarioSet(
        tuple(und), rng.normal(0, 0.4, (n_s, len(und))), dt_yr,
        rng.normal(0, 0.3, (n_s, n_buckets)) if extras else None,
        rng.normal(0, 0.2, (n_s, len(und))) if extras else None,
        rng.normal(0, 0.01, (n_s, len(und))) if extras else None)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    vol_mode=st.sampled_from(["normal", "zero", "extreme", "mixed"]),
    dt_days=st.sampled_from([0.0, 1.0, 10.0]),
    short_expiry=st.booleans(),
    extras=st.booleans(),
    ccy=st.sampled_from(["USD", "U0"]),
)
def test_kernel_equals_scalar_pricer(seed, n, vol_mode, dt_days, short_expiry, extras, ccy):
    rng = np.random.default_rng(seed)
    positions, inputs, spot = random_book(rng, n, 3, 4, vol_mode, short_expiry)
    book = build_book(positions, inputs, spot, AS_OF)
    if ccy not in book.underlyings:
        ccy = "USD"
    sc = random_scenarios(rng, ["U2", "U0", "U1"], 30, 4, dt_days / 365, extras)
    got = revalue(book, sc, margin_currency=ccy)
    want = np.array([revalue_scalar(book, sc, s, margin_currency=ccy) for s in range(30)])
    # scale: the book's gross notional in the currency at the scenario's prices
    scale = sum(abs(q) * inputs[i.name].price * (i.contract_size if not i.inverse or
                isinstance(i, Option) else 1.0) for i, q in positions)
    if ccy != "USD":
        scale /= min(spot["U0"] * np.exp(sc.log_return[:, 1]))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10 * scale)
    # per-position P&L, asked for some scenarios, sums to the portfolio's
    idx = [0, 7, 29]
    pp = position_pnl(book, sc, idx, margin_currency=ccy)
    assert pp.shape == (n, 3)
    np.testing.assert_allclose(pp.sum(axis=0), got[idx], rtol=1e-9, atol=1e-10 * scale)


def one(inst, mi, q=1.0, spot=None):
    return build_book([(inst, q)], {inst.name: mi}, spot or {inst.underlying: mi.price}, AS_OF)


def scen(x, und="BTC", dt_yr=0.0, **kw):
    return ScenarioSet((und,), np.log(np.asarray(x, dtype=float))[:, None], dt_yr, **kw)


def test_inverse_future_hand_computed_and_convex_in_coin():
    # 100 Deribit BTC futures (10 USD each), F0 = S0 = 50,000, price +-10 %
    book = one(parse_instrument("BTC-27DEC24"), MarketInputs(50_000.0), 100)
    sc = scen([1.1, 0.9])
    usd = revalue(book, sc)
    np.testing.assert_allclose(usd, [100.0, -100.0], rtol=1e-12)  # 1000 USD x (S1/F0 - 1)
    coin = revalue(book, sc, margin_currency="BTC")
    np.testing.assert_allclose(coin, [1000 * (1 / 50_000 - 1 / 55_000),
                                      1000 * (1 / 50_000 - 1 / 45_000)], rtol=1e-12)
    assert coin[0] + coin[1] < 0  # the coin P&L loses more down than it gains up


def test_perpetual_funding_hand_computed():
    lin = one(parse_instrument("BTCUSDT-PERP"), MarketInputs(60_000.0), 2.0)
    sc = scen([1.0, 1.05], funding=np.array([[0.001], [0.001]]))
    # long 2 BTC pays 0.1 % of notional at the scenario price
    np.testing.assert_allclose(revalue(lin, sc), [-120.0, 2 * 3000 - 2 * 63_000 * 0.001],
                               rtol=1e-12)
    inv = one(parse_instrument("BTCUSD_PERP"), MarketInputs(60_000.0), -10.0)  # short 1000 USD
    got = revalue(inv, sc)
    coin = -1000 * (1 / 60_000 - 1 / 63_000) + 1000 / 63_000 * 0.001
    np.testing.assert_allclose(got[1], coin * 63_000, rtol=1e-12)


@pytest.mark.parametrize("inverse", [False, True], ids=["linear", "inverse"])
def test_option_expiring_inside_the_period_is_intrinsic(inverse):
    exp = AS_OF + pd.Timedelta(days=5)
    opt = Option("c", "BTC", 1.0, INV if inverse else LIN, "", exp, 50_000.0, OptionRight.CALL)
    book = one(opt, MarketInputs(50_000.0, 0.6), 1.0)
    v0 = float(black76_price(50_000.0, 50_000.0, 5 / 365, 0.6, True))
    got = revalue(book, scen([1.2, 0.8], dt_yr=10 / 365))
    if inverse:  # coin: 10,000/60,000 at expiry minus the coin premium, converted at 60,000
        want = [(10_000 / 60_000 - v0 / 50_000) * 60_000, (0 - v0 / 50_000) * 40_000]
    else:
        want = [10_000 - v0, -v0]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_zero_move_zero_time_is_zero_pnl():
    rng = np.random.default_rng(5)
    positions, inputs, spot = random_book(rng, 60, 3, 2, "mixed", False)
    book = build_book(positions, inputs, spot, AS_OF)
    sc = ScenarioSet(("U0", "U1", "U2"), np.zeros((4, 3)), 0.0)
    gross = sum(abs(q) * inputs[i.name].price * i.contract_size for i, q in positions)
    np.testing.assert_allclose(revalue(book, sc), 0.0, atol=1e-14 * gross)  # rounding only


def test_identical_bytes_with_1_and_2_threads_and_any_block():
    rng = np.random.default_rng(11)
    positions, inputs, spot = random_book(rng, 300, 5, 3, "normal", True)
    book = build_book(positions, inputs, spot, AS_OF)
    sc = random_scenarios(rng, [f"U{u}" for u in range(5)], 3001, 3, 3 / 365)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one_t = revalue(book, sc)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two_t = revalue(book, sc)
        two_t_b7 = revalue(book, sc, block=7)
    finally:
        numba.set_num_threads(before)
    assert one_t.tobytes() == two_t.tobytes() == two_t_b7.tobytes()


def test_duplicate_positions_aggregate():
    inst = parse_instrument("ETH-27DEC24-3000-C")
    mi = {inst.name: MarketInputs(3_600.0, 0.7)}
    a = build_book([(inst, 3.0), (inst, -1.0)], mi, {"ETH": 3_590.0}, AS_OF)
    b = build_book([(inst, 2.0)], mi, {"ETH": 3_590.0}, AS_OF)
    assert a.n_instruments == 1 and a.n_positions == 2
    sc = scen([0.7, 1.0, 1.4], "ETH", 1 / 365)
    np.testing.assert_allclose(revalue(a, sc), revalue(b, sc), rtol=1e-14)
    pp = position_pnl(a, sc, [2])
    np.testing.assert_allclose(pp[:, 0], [1.5 * revalue(b, sc)[2], -0.5 * revalue(b, sc)[2]])


def test_build_book_errors():
    opt = parse_instrument("BTC-27DEC24-50000-C")
    ok = {opt.name: MarketInputs(97_000.0, 0.5)}
    with pytest.raises(DataError, match="quantity of position 0 .* must be a finite number. Got nan"):
        build_book([(opt, float("nan"))], ok, {"BTC": 96_000.0}, AS_OF)
    with pytest.raises(DataError, match="no market inputs for instrument 'BTC-27DEC24-50000-C'"):
        build_book([(opt, 1.0)], {}, {"BTC": 96_000.0}, AS_OF)
    with pytest.raises(DataError, match="no spot/index price for underlying 'BTC'"):
        build_book([(opt, 1.0)], ok, {}, AS_OF)
    with pytest.raises(DataError, match="spot of 'BTC' must be a finite number > 0. Got -1"):
        build_book([(opt, 1.0)], ok, {"BTC": -1.0}, AS_OF)
    with pytest.raises(DataError, match="vol of option 'BTC-27DEC24-50000-C' must be a finite"):
        build_book([(opt, 1.0)], {opt.name: MarketInputs(97_000.0)}, {"BTC": 96_000.0}, AS_OF)
    with pytest.raises(DataError, match="price of 'BTC-27DEC24-50000-C' must be a finite number"):
        build_book([(opt, 1.0)], {opt.name: MarketInputs(0.0, 0.5)}, {"BTC": 1.0}, AS_OF)
    with pytest.raises(DataError, match="expired at 2024-12-27 08:00:00"):
        build_book([(opt, 1.0)], ok, {"BTC": 96_000.0}, "2024-12-28")
    other = Option(opt.name, "BTC", 1.0, LIN, "", opt.expiry, 50_000.0, OptionRight.PUT)
    with pytest.raises(DataError, match="two different instruments are named"):
        build_book([(opt, 1.0), (other, 1.0)], ok, {"BTC": 96_000.0}, AS_OF)
    with pytest.raises(DataError, match="spot instrument 'x' cannot be inverse"):
        build_book([(Spot("x", "BTC", 1.0, INV), 1.0)], {"x": MarketInputs(1.0)}, {"BTC": 1.0},
                   AS_OF)


def test_scenario_and_revalue_errors():
    with pytest.raises(DataError, match=r"log_return must have shape \(n_scenarios, 2\)"):
        ScenarioSet(("A", "B"), np.zeros((3, 1)))
    with pytest.raises(DataError, match=r"vol_shift must have shape \(3, n_buckets\)"):
        ScenarioSet(("A",), np.zeros((3, 1)), vol_shift=np.zeros((2, 1)))
    with pytest.raises(DataError, match=r"funding must have shape \(3, 1\)"):
        ScenarioSet(("A",), np.zeros((3, 1)), funding=np.zeros((3, 2)))
    with pytest.raises(DataError, match="log_return holds a non-finite value nan at scenario 1"):
        ScenarioSet(("A",), np.array([[0.0], [np.nan]]))
    with pytest.raises(DataError, match="dt_yr must be a finite number >= 0. Got -1"):
        ScenarioSet(("A",), np.zeros((1, 1)), -1.0)
    book = one(parse_instrument("BTC-27DEC24-50000-C"), MarketInputs(97_000.0, 0.5, 3))
    with pytest.raises(DataError, match="no log_return column for underlyings \\['BTC'\\]"):
        revalue(book, scen([1.0], "ETH"))
    with pytest.raises(DataError, match="names vol bucket 3 but vol_shift has 1 columns"):
        revalue(book, scen([1.0], vol_shift=np.zeros((1, 1))))
    with pytest.raises(ConfigError, match="margin_currency must be 'USD' or one of"):
        revalue(book, scen([1.0]), margin_currency="EUR")
    with pytest.raises(ConfigError, match="The 'block' parameter of revalue must be an int >= 1"):
        revalue(book, scen([1.0]), block=0)
    with pytest.raises(DataError, match=r"scenario_idx must lie in \[0, 1\)"):
        position_pnl(book, scen([1.0]), [3])


def test_kernel_normal_cdf_and_exp_against_scipy_and_numpy():
    from scipy.special import ndtr

    from margin.revalue import ncdf

    x = np.concatenate([np.linspace(-40.0, 40.0, 4001), [-1.0, 1.0, -1e-300, 0.0, 8.0 * math.sqrt(2)],
                        np.random.default_rng(2).normal(0.0, 3.0, 4000)])
    got = np.array([ncdf(v) for v in x])
    want = ndtr(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=3e-16)
    tail = x > -11.0  # relative accuracy in the lower tail down to 1e-28
    np.testing.assert_allclose(got[tail], want[tail], rtol=5e-15)


def test_non_numeric_inputs_are_data_errors():
    opt = parse_instrument("BTC-27DEC24-50000-C")
    with pytest.raises(DataError, match="price of 'BTC-27DEC24-50000-C' must be a finite number "
                                        "> 0. Got 'abc' instead"):
        build_book([(opt, 1.0)], {opt.name: MarketInputs("abc", 0.5)}, {"BTC": 1.0}, AS_OF)
    with pytest.raises(DataError, match="quantity of position 0 .* Got 'x' instead"):
        build_book([(opt, "x")], {opt.name: MarketInputs(1.0, 0.5)}, {"BTC": 1.0}, AS_OF)
    with pytest.raises(DataError, match="vol of option 'BTC-27DEC24-50000-C' must be a finite "
                                        "number >= 0. Got 'high' instead"):
        build_book([(opt, 1.0)], {opt.name: MarketInputs(1.0, "high")}, {"BTC": 1.0}, AS_OF)
