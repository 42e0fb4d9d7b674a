"""compute_margin end to end: closed forms, FHS = historical simulation, small books recomputed by
hand (an independent numpy revaluation and chain) to the cent, attribution summing to the total,
what-if = full recompute, same inputs -> same bytes, failures as data, every example portfolio,
and hypothesis properties (margin >= 0, homogeneity, hedges, permutation, no look-ahead)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from features.errors import ConfigError, FailureReason, ModelError
from margin.addons import ADDONS
from margin.calculator import COMPONENTS, MarginResult, compute_margin, recompute, what_if
from margin.instruments import Future, Option, Perpetual, Spot, parse_instrument
from margin.params import MarginParams, load_params
from margin.portfolio import Portfolio
from margin.pricing import black76_price, year_fraction
from margin.scenarios import option_vol, tenor_factor
from tests.test_margin.margin_fixtures import (
    AS_OF,
    EXAMPLES,
    SPOT,
    book,
    example,
    hourly_bundle,
    make_bundle,
    make_state,
)

BUNDLE = make_bundle()
STATE = make_state()
EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.*") if p.suffix in (".csv", ".json"))


def _run(pf: Portfolio, params: MarginParams | None = None, bundle=BUNDLE,
         state=STATE) -> MarginResult:
    return compute_margin(pf, state, bundle, params or MarginParams())


# ---- closed forms ------------------------------------------------------------------------------


@pytest.mark.parametrize("h", [1, 2])
def test_one_linear_position_normal_closed_form(h: int) -> None:
    """1 BTC spot, Gaussian Monte Carlo only: ES and VaR within their standard errors of the
    closed forms of S0 (1 - e^x), x ~ N(0, s^2), s = sigma sqrt(h); and ~2.338 / 2.326 s S0."""
    n = 200_000
    p = MarginParams(scenario_sources=("mc",), mc_dof_source="normal", mc_n_scenarios=n,
                     mpor_days={"spot": h})
    r = _run(book("a,BTCUSDT,1,60000"), p)
    s, s0 = 0.03 * math.sqrt(h), SPOT["BTC"]
    c = 0.975
    es_exact = s0 * (1 - math.exp(s * s / 2) * stats.norm.cdf(-stats.norm.ppf(c) - s) / (1 - c))
    q99 = stats.norm.ppf(0.99)
    var_exact = s0 * (1 - math.exp(-q99 * s))
    se_es = s0 * s * 0.5 * 2.338 / math.sqrt(n * (1 - c))  # conservative ES standard error
    se_var = s0 * s * math.sqrt(0.99 * 0.01) / (stats.norm.pdf(q99) * math.sqrt(n))
    assert abs(r.components["market_risk"] - es_exact) < 4 * se_es
    assert abs(r.measures["var_forecast"] - var_exact) < 4 * se_var
    # with a small vol the position is linear in x: the textbook constants
    tiny = make_bundle(vols=dict.fromkeys(BUNDLE.symbols, 0.001))
    r = _run(book("a,BTCUSDT,1,60000"), p, bundle=tiny)
    s = 0.001 * math.sqrt(h)
    assert r.components["market_risk"] == pytest.approx(2.338 * s * s0, rel=0.015)
    assert r.measures["var_forecast"] == pytest.approx(2.326 * s * s0, rel=0.015)


def test_fhs_equals_historical_simulation() -> None:
    """Forecast = issued vol, h = 1, FHS only: the market risk is the ES of the historical P&L
    S0 (exp(ret) - 1) of the residual history, computed here directly."""
    p = MarginParams(scenario_sources=("fhs",))
    r = _run(book("a,BTCUSDT,2,60000"), p)
    res = BUNDLE.residuals
    ret = res[res["symbol"] == "BTCUSDT"].sort_values("ts")["ret"].to_numpy()
    pnl = 2 * SPOT["BTC"] * np.expm1(ret)
    k = math.ceil(round(len(pnl) * 0.025, 9))
    assert r.components["market_risk"] == pytest.approx(-np.sort(pnl)[:k].mean(), rel=1e-12)


# ---- an independent revaluation and chain --------------------------------------------------------


def _oracle_unit(res: MarginResult, inst, name_set: str) -> np.ndarray:
    """P&L of one contract in every scenario of one set, by plain numpy (not the kernel)."""
    ctx = res.context
    sc = ctx.scenarios
    fs = sc.sets[name_set]
    j = sc.underlyings.index(inst.underlying)
    pr = ctx.priced[inst.name]
    s0 = pr.spot
    x = fs.log_return[:, j]
    s1 = s0 * np.exp(x)
    size = inst.contract_size
    p0 = pr.inputs.price
    if isinstance(inst, Spot):
        pnl = size * (p0 * s1 / s0 - p0)
    elif isinstance(inst, Perpetual):
        p1 = p0 * s1 / s0
        f = fs.funding[:, j]
        pnl = ((size * (1 / p0 - 1 / p1) - size / p1 * f) * s1 if inst.inverse
               else size * (p1 - p0) - size * p1 * f)
    else:
        t = year_fraction(AS_OF, inst.expiry)
        tau1 = max(t - sc.dt_yr, 0.0)
        f1 = s1 * np.exp((math.log(p0 / s0) / t + fs.basis_shift_ann[:, j]) * tau1)
        if isinstance(inst, Future):
            pnl = size * ((1 / p0 - 1 / f1) * s1 if inst.inverse else f1 - p0)
        else:
            assert isinstance(inst, Option)
            fac = tenor_factor(sc.vol_of_vol[j], pr.dte_days)
            vol1 = option_vol(x, fs.iv_log_shock[:, j], pr.vol0, pr.slope, pr.curvature,
                              float(sc.beta[j]), fac, ctx.params.iv_dynamics, ctx.params.iv_floor)
            r = pr.inputs.rate
            v0 = float(black76_price(p0, inst.strike, t, pr.vol0, inst.is_call, r))
            v1 = black76_price(f1, inst.strike, tau1, vol1, inst.is_call, r)
            pnl = size * ((v1 / f1 - v0 / p0) * s1 if inst.inverse else v1 - v0)
    if ctx.margin_currency != "USD":
        k = sc.underlyings.index(ctx.margin_currency)
        pnl = pnl / (ctx.priced_spot(ctx.margin_currency) * np.exp(fs.log_return[:, k]))
    return pnl


def _es(v: np.ndarray, c: float) -> float:
    k = max(1, math.ceil(round(len(v) * (1 - c), 9)))
    return float(-np.sort(v)[:k].mean())


def _oracle_im(res: MarginResult) -> float:
    """The chain of the module docstring, from the oracle's P&L."""
    ctx = res.context
    p = ctx.params
    c = p.es_confidence
    pools = ctx.scenarios.pools
    pos = res.positions

    def pool_pnl(key: str, only: str | None = None) -> np.ndarray:
        out = []
        for name in pools[key]:
            out.append(sum(q.quantity * _oracle_unit(res, q.instrument, name) for q in pos
                           if only is None or q.instrument.underlying == only))
        return np.concatenate(out)

    r = _es(pool_pnl("forecast"), c)
    s = _es(pool_pnl("stressed"), c)
    b = p.blend_x * r + (1 - p.blend_x) * s
    mats = [_es(pool_pnl(k), c) for k in pools if k.startswith("corr:")]
    stand = sum(_es(pool_pnl("forecast", u), c) for u in {q.instrument.underlying for q in pos})
    cap = r + p.correlation_break_alpha * (stand - r)
    corr = max(b, *mats, cap)
    grid = -pool_pnl("grid").min()
    return max(corr, p.grid_floor_share * grid, 0.0)


HAND_BOOKS = {
    "one long future": "f,BTC-{+30D},3,60000",
    "short straddle": "c,ETH-{+14D}-3000-C,-50,0.05\np,ETH-{+14D}-3000-P,-50,0.05",
    "calendar spread": "n,BTC-{+7D}-60000-C,-10,0.025\nf,BTC-{+60D}-60000-C,10,0.08",
    "btc/eth hedge": "l,BTCUSDT-PERP,5,60000\ns,ETHUSDT-PERP,-100,3000",
}


@pytest.mark.parametrize("name", list(HAND_BOOKS))
def test_small_books_by_hand_to_the_cent(name: str) -> None:
    r = _run(book(HAND_BOOKS[name]))
    assert not r.failures
    addons = sum(r.components[c] for c in ADDONS)
    assert r.im - addons == pytest.approx(_oracle_im(r), abs=0.005)
    assert r.im > 0 and r.components["liquidity"] > 0


# ---- attribution, what-if, determinism --------------------------------------------------------


def _sums(r: MarginResult) -> None:
    tot = r.im
    assert math.fsum(r.components.values()) == pytest.approx(tot, rel=1e-12, abs=1e-12)
    assert math.fsum(d["total"] for d in r.by_position.values()) == pytest.approx(
        tot, rel=1e-9, abs=1e-9)
    assert math.fsum(d["total"] for d in r.by_underlying.values()) == pytest.approx(
        tot, rel=1e-9, abs=1e-9)
    assert math.fsum(d["mm_total"] for d in r.by_position.values()) == pytest.approx(
        r.mm, rel=1e-9, abs=1e-9)
    for c in COMPONENTS:
        assert math.fsum(d[c] for d in r.by_position.values()) == pytest.approx(
            r.components[c], rel=1e-9, abs=1e-9 * max(1.0, tot))
    assert set(r.components) == set(COMPONENTS)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_portfolio_computes(path) -> None:
    pf = example(path)
    assert not pf.failures
    r = _run(pf)
    assert r.failures == ()
    assert r.im > 0 and r.mm > 0 and r.im == pytest.approx(1.3 * r.mm)
    _sums(r)
    assert r.bundle_id == BUNDLE.bundle_id and r.params_hash == MarginParams().params_hash
    assert r.model_versions["vol:1D"] == "garch:7"
    ex = r.explain
    assert set(ex["scale_factors"]) == {q.instrument.underlying for q in pf.positions} | (
        {pf.margin_currency} - {"USD"})
    assert len(ex["quantile_positions"]["tail_scenarios"]) == math.ceil(
        round(ex["quantile_positions"]["n_scenarios"] * 0.025, 9))
    assert set(ex["worst_scenario_pnl_by_position"]) == {q.id for q in pf.positions}


def test_same_inputs_same_bytes_and_permutation_invariance() -> None:
    pf = example(EXAMPLES / "delta_hedged_options.json")
    a = _run(pf).to_json()
    assert a == _run(pf).to_json()
    rev = dataclasses.replace(pf, positions=tuple(reversed(pf.positions)))
    assert _run(rev).to_json() == a


def _close(a: MarginResult, b: MarginResult) -> None:
    """Equal to 1e-9 (relative to the IM) in every component and every position's share."""
    tol = 1e-9 * max(1.0, abs(b.im))
    assert a.components.keys() == b.components.keys() and a.by_position.keys() == b.by_position.keys()
    for c in COMPONENTS:
        assert abs(a.components[c] - b.components[c]) <= tol
    for k, d in b.by_position.items():
        for c, v in d.items():
            assert abs(a.by_position[k][c] - v) <= tol
    assert a.mm == pytest.approx(b.mm, abs=tol) and a.failures == b.failures


def test_what_if_equals_full_recompute() -> None:
    base_pf = book("c,BTC-{+30D}-70000-C,-5,0.01\nh,BTCUSDT-PERP,2,60000\ne,ETHUSDT,10,3000")
    base = _run(base_pf)
    trades = [
        (parse_instrument("BTCUSDT-PERP"), -1.0),  # cached instrument
        (book("x,BTC-{+30D}-50000-P,-3,0.01").positions[0].instrument, -3.0),  # new instrument
        (parse_instrument("SOLUSDT"), 100.0),  # new underlying: scenarios rebuilt
        (book("x,BTC-{+30D},1,60000").positions[0].instrument, 1.0),  # longer MPOR (future)
    ]
    for inst, q in trades:
        wi = what_if(base, (inst, q))
        full_pf = dataclasses.replace(base_pf, positions=(*base_pf.positions, wi.after.positions[
            [p.id for p in wi.after.positions].index("what-if")]))
        full = _run(full_pf)
        assert wi.after.im == pytest.approx(full.im, rel=1e-9, abs=1e-9)
        assert wi.incremental_im == pytest.approx(full.im - base.im, rel=1e-9, abs=1e-9)
        _close(wi.after, full)
        fast = what_if(base, (inst, q), full=False)
        assert fast.after is None and fast.failure is None
        assert fast.im == pytest.approx(full.im, rel=1e-9, abs=1e-9)
        assert fast.mm == pytest.approx(full.mm, rel=1e-9, abs=1e-9)
        for c in COMPONENTS:
            assert fast.components[c] == pytest.approx(full.components[c], rel=1e-9, abs=1e-6)
    bad = what_if(base, (parse_instrument("DOGEUSDT"), 5.0), full=False)
    assert bad.failure is not None and bad.failure.reason is FailureReason.MISSING_INPUTS
    assert bad.incremental_im == 0.0 and bad.im == base.im
    # the warm path: the same book from the context's cache
    _close(recompute(base.context, base_pf), base)


def test_failures_are_data() -> None:
    pf = book("ok,BTCUSDT,1,60000\ndoge,DOGEUSDT,1000,0.1\nspx,SP500,1,2500")
    state = make_state()
    no_sp = dataclasses.replace(state, underlyings={k: v for k, v in state.underlyings.items()
                                                    if k != "SP500"})
    r = _run(pf, state=no_sp)
    reasons = {f.subject: f.reason for f in r.failures}
    assert reasons == {"doge": FailureReason.MISSING_INPUTS, "spx": FailureReason.MISSING_INPUTS}
    assert list(r.by_position) == ["ok"] and r.im > 0
    assert "DOGEUSDT" in next(f.message for f in r.failures if f.subject == "doge")
    empty = _run(book("doge,DOGEUSDT,1000,0.1"))
    assert empty.im == 0.0 and len(empty.failures) == 1 and empty.context is None


def test_params_from_toml_and_hash() -> None:
    p = load_params("[margin]\nmeasure = 'var'\nblend_x = 0.5\n[margin.mpor_days]\nfuture = 3\n")
    assert p.measure == "var" and p.mpor("future") == 3 and p.mpor("spot") == 1
    assert p.params_hash == load_params("blend_x = 0.5\nmeasure = 'var'\n[mpor_days]\nfuture = 3\n"
                                        ).params_hash
    assert p.params_hash != MarginParams().params_hash
    with pytest.raises(ConfigError, match="invalid margin parameters"):
        load_params("[margin]\nnot_a_field = 1\n")
    with pytest.raises(ConfigError, match="mpor_days"):
        load_params("[margin.mpor_days]\nswap = 1\n")
    with pytest.raises(ConfigError, match="TOML"):
        load_params("measure = ")
    r = _run(book("f,BTC-{+30D},1,60000"), p)
    assert r.explain["mpor_days"] == 3 and r.explain["measure"] == "var"
    _sums(r)


def test_mm_at_a_lower_confidence() -> None:
    p = MarginParams(mm_rule="confidence", mm_confidence=0.9)
    r = _run(book("a,BTCUSDT,1,60000\nb,ETHUSDT,-10,3000"), p)
    assert 0 < r.mm < r.im
    _sums(r)


def test_correlation_stress_and_break_cap() -> None:
    """A BTC/ETH hedge: the decorrelated matrix binds; with alpha = 1 the cap is the sum of the
    standalone margins."""
    pf = book("l,BTCUSDT-PERP,5,60000\ns,ETHUSDT-PERP,-100,3000")
    r = _run(pf)
    assert r.components["correlation_stress"] > 0
    assert r.measures["by_matrix"]["low"] > r.measures["by_matrix"]["forecast"]
    one = _run(pf, MarginParams(correlation_break_alpha=1.0, grid_floor_share=0.0, addons=False))
    stand = sum(one.measures["standalone_by_underlying"].values())
    assert one.im == pytest.approx(max(stand, one.explain["chain"]["blend"]), rel=1e-12)
    _sums(one)


def test_stress_blend_rises_with_stressed_history() -> None:
    calm = make_bundle(issued_vol={s: 2 * v for s, v in
                                   {"BTCUSDT": 0.03, "ETHUSDT": 0.04, "SOLUSDT": 0.05,
                                    "SP500": 0.01, "NASDAQ": 0.012}.items()})
    r = _run(book("a,BTCUSDT,1,60000"), bundle=calm)
    assert r.components["stress_blend"] > 0
    assert r.explain["scale_factors"]["BTC"]["sigma_stressed_mpor"] == pytest.approx(0.06)
    _sums(r)


# ---- properties -------------------------------------------------------------------------------

_NAMES = ["BTCUSDT", "ETHUSDT", "BTCUSDT-PERP", "ETHUSDT-PERP", "BTC-{+30D}-60000-C",
          "BTC-{+30D}-55000-P", "ETH-{+14D}-3000-C", "BTC-{+60D}", "BTC-PERPETUAL"]
_PX = {"BTCUSDT": 60000, "ETHUSDT": 3000, "BTCUSDT-PERP": 60000, "ETHUSDT-PERP": 3000,
       "BTC-{+60D}": 60000, "BTC-PERPETUAL": 60000}
_FAST = MarginParams(mc_n_scenarios=300, fhs_lookback_days=200)
_books = st.lists(st.tuples(st.sampled_from(_NAMES), st.floats(-20, 20).filter(
    lambda q: abs(q) > 0.01)), min_size=1, max_size=5)


def _rows(rows: list[tuple[str, float]]) -> Portfolio:
    return book("\n".join(f"p{i},{n},{q!r},{_PX.get(n, 0.01)}" for i, (n, q) in enumerate(rows)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_books, st.floats(0.1, 10.0))
def test_properties_nonnegative_homogeneous_permutation(rows: list, lam: float) -> None:
    pf = _rows(rows)
    r = _run(pf, _FAST)
    assert r.im >= 0 and r.mm >= 0
    _sums(r)
    scaled = dataclasses.replace(pf, positions=tuple(dataclasses.replace(q, quantity=q.quantity * lam)
                                                     for q in pf.positions))
    rs = _run(scaled, _FAST)
    for c in ("market_risk", "stress_blend", "correlation_stress", "grid_floor"):
        assert rs.components[c] == pytest.approx(lam * r.components[c], rel=1e-9, abs=1e-6)
    perm = dataclasses.replace(pf, positions=tuple(reversed(pf.positions)))
    assert _run(perm, _FAST).to_json() == r.to_json()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.floats(0.5, 50.0))
def test_perfect_hedge_spot_vs_perpetual(q: float) -> None:
    spot = _run(book(f"s,BTCUSDT,{q!r},60000"), _FAST)
    perp = _run(book(f"p,BTCUSDT-PERP,{-q!r},60000"), _FAST)
    hedge = _run(book(f"s,BTCUSDT,{q!r},60000\np,BTCUSDT-PERP,{-q!r},60000"), _FAST)
    assert hedge.im < 0.05 * min(spot.im, perp.im)
    assert hedge.im >= 0


def test_no_look_ahead() -> None:
    """A bundle from after the market state's as_of is refused (its forecasts may use later data);
    the scenarios ignore residuals after as_of (tests/test_margin/test_scenarios.py), so the
    history a valid bundle holds beyond the book's time changes nothing."""
    n = 300
    z = np.random.default_rng(9).standard_t(5, size=(n + 10, 5)) * math.sqrt(3 / 5)
    late = make_bundle(residual_z=z, n_days=n + 10, as_of=AS_OF + pd.Timedelta(days=10))
    pf = book("a,BTCUSDT,1,60000\nb,ETHUSDT-PERP,-10,3000")
    with pytest.raises(ModelError, match="after the market state"):
        compute_margin(pf, STATE, late, MarginParams())
    early = make_bundle(residual_z=z[:n], n_days=n)
    a = compute_margin(pf, STATE, early, MarginParams())
    # perturbing the residual rows the bundle would hold after as_of: impossible by construction
    assert a.explain["quantile_positions"]["n_scenarios"] > 0


def test_margin_from_an_hourly_bundle_equals_the_daily_one_with_the_same_day_variance() -> None:
    """A crypto venue's hourly cycle: the same 1-day variance and correlation as 24 hourly
    periods give the same margin, to round-off (Monte Carlo and grid; FHS differs by design: its
    history is hourly); a doubled hourly variance raises it; the explain record names the unit."""
    p = MarginParams(scenario_sources=("mc",))
    for pf in (example(EXAMPLES / "naked_options.csv"), example(EXAMPLES / "long_short_btc_eth.csv"),
               example(EXAMPLES / "calendar_spread.csv")):
        d = _run(pf, p)
        h = _run(pf, p, bundle=hourly_bundle(BUNDLE))
        assert h.im == pytest.approx(d.im, rel=1e-10) and d.im > 0
        assert h.explain["forecast_unit"] == "1h" and d.explain["forecast_unit"] == "1D"
        assert h.explain["mpor_periods"] == 24 * h.explain["mpor_days"]
        assert not h.failures
        hi = _run(pf, p, bundle=hourly_bundle(BUNDLE, day_var_factor=2.0))
        assert hi.components["market_risk"] > 1.2 * h.components["market_risk"]


def test_a_book_that_gains_in_every_tail_scenario_needs_zero_margin_exactly() -> None:
    """Cash-and-carry at a 1% per 8 h funding rate: the short perpetual's funding income exceeds
    every tail loss, the chain's measures are negative; IM, MM and every component are exactly 0
    (not -1e-15 of round-off), the raw market-risk measure stays in the explain record."""
    state = make_state(funding_rate=0.01)
    pf = book("spot,BTCUSDT,10,60000\nperp,BTCUSDT-PERP,-10,60000")
    r = _run(pf, MarginParams(addons=False), state=state)
    assert r.im == 0.0 and r.mm == 0.0
    assert set(r.components.values()) == {0.0}
    assert all(v == 0.0 for a in r.by_position.values() for v in a.values())
    assert r.explain["chain"]["market_risk"] < 0
    # with the add-ons only the close-out cost of the net delta is left: 10 x 60,000 spot less
    # 10 x 60,030 perpetual (its mark 0.05% above) = -300 USD at the default 5 bp half spread
    r = _run(pf, state=state)
    assert r.im == pytest.approx(300 * 0.0005, rel=1e-6)
    assert r.components["liquidity"] == r.im
    # the same book at a normal funding rate needs margin
    assert _run(pf).im > 1.0


def test_the_margin_json_is_the_same_bytes_with_one_and_two_threads() -> None:
    """Every parallel kernel (revaluation, implied-vol shifts, combining P&L vectors) sums in a
    fixed order: the whole result serializes to identical bytes for any thread count."""
    import numba

    pf = example(EXAMPLES / "delta_hedged_options.json")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run(pf).to_json()
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _run(pf).to_json()
    finally:
        numba.set_num_threads(before)
    assert one == two
