"""The comparison methods by hand: tiered fixed percentage (continuous brackets, short options),
unfiltered historical simulation and FHS with an EWMA volatility against independent numpy, and
per-position failures that leave the rest of the book computing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from features.errors import ConfigError
from margin.calculator import compute_margin
from margin.methods import METHODS, compute_method, ewma_issued_vol, tier_margin
from margin.params import MarginParams
from tests.test_margin.margin_fixtures import (
    AS_OF,
    EXAMPLES,
    book,
    example,
    make_bundle,
    make_state,
)

BUNDLE = make_bundle()
STATE = make_state()
TIERS = MarginParams().fixed_tiers


def _es(pnl: np.ndarray, c: float = 0.975) -> float:
    k = max(1, math.ceil(round(len(pnl) * (1 - c), 9)))
    return float(-np.sort(pnl)[:k].mean())


def test_tiers_by_hand_and_continuous_at_every_cap() -> None:
    """100,000 USD sits in bracket 2 (1% / 0.5%): IM = 1,000 - 50,000 x (1% - 0.8%) = 900,
    MM = 500 - 50,000 x (0.5% - 0.4%) = 450; 3 M: IM = 39,900 - 100 - 1,980 = 37,820."""
    assert tier_margin(100_000, TIERS) == pytest.approx((900.0, 450.0), rel=1e-12)
    assert tier_margin(50_000, TIERS) == pytest.approx((400.0, 200.0), rel=1e-12)
    im, mm = tier_margin(3_000_000, TIERS)
    assert im == pytest.approx(3e6 * 0.0133 - 100 - 600_000 * (0.0133 - 0.01), rel=1e-12)
    assert mm == pytest.approx(3e6 * 0.0065 - 50 - 900, rel=1e-12)
    for cap, _, _ in TIERS[:-1]:
        lo, hi = tier_margin(cap, TIERS), tier_margin(cap * (1 + 1e-12), TIERS)
        assert hi[0] == pytest.approx(lo[0], rel=1e-9) and hi[1] == pytest.approx(lo[1], rel=1e-9)
    ns = np.linspace(0, 2e9, 2001)
    ims = np.array([tier_margin(n, TIERS)[0] for n in ns])
    assert np.all(np.diff(ims) > 0)  # increasing: no bracket edge lowers the requirement


def test_fixed_margins_every_instrument_alone() -> None:
    """A hedge earns no credit: long 5 BTC perpetual (mark 60,030) and short 100 ETH (mark 3,001.5)
    each pay their own bracket; a short call pays max(15% - OTM / S, 10%) x S + its value."""
    r = compute_method("fixed", book("l,BTCUSDT-PERP,5,60000\ns,ETHUSDT-PERP,-100,3000"), STATE,
                       BUNDLE)
    want = [tier_margin(n, TIERS) for n in (5 * 60000 * 1.0005, 100 * 3000 * 1.0005)]
    assert r.im == pytest.approx(sum(w[0] for w in want), rel=1e-12)
    assert r.mm == pytest.approx(sum(w[1] for w in want), rel=1e-12)
    assert r.by_position["l"]["total"] == pytest.approx(want[0][0], rel=1e-12)
    c = compute_method("fixed", book("c,BTC-{+30D}-70000-C,-2,0.012"), STATE, BUNDLE)
    d = compute_margin(book("c,BTC-{+30D}-70000-C,-2,0.012"), STATE, BUNDLE)
    inst = d.positions[0].instrument
    from margin.methods import _option_value_usd

    value = _option_value_usd(d.context, inst)
    s0 = 60000.0
    assert c.im == pytest.approx(2 * (max(0.15 - 10000 / s0, 0.10) * s0 + value), rel=1e-12)
    assert c.mm == pytest.approx(2 * (0.075 * s0 + value), rel=1e-12)
    long = compute_method("fixed", book("c,BTC-{+30D}-70000-C,2,0.012"), STATE, BUNDLE)
    assert long.im == 0.0


def test_hvar_is_the_es_of_the_raw_historical_returns() -> None:
    """1 BTC spot, 1-day MPOR: the ES 97.5% of 60,000 (e^r - 1) over the bundle's raw daily
    returns (no filtering); 2 days (a dated future's MPOR) sums consecutive returns."""
    r = compute_method("hvar", book("a,BTCUSDT,1,60000"), STATE, BUNDLE)
    res = BUNDLE.residuals
    ret = res[res["symbol"] == "BTCUSDT"].sort_values("ts")["ret"].to_numpy()[-1100:]
    assert r.im == pytest.approx(_es(60000 * np.expm1(ret)), rel=1e-10)
    assert r.mm == pytest.approx(r.im / 1.3, rel=1e-12)
    assert r.by_position["a"]["total"] == pytest.approx(r.im, rel=1e-10)
    two = compute_method("hvar", book("a,BTCUSDT,1,60000"), STATE, BUNDLE,
                         MarginParams(mpor_days={"spot": 2}))
    assert two.im == pytest.approx(_es(60000 * np.expm1(ret[1:] + ret[:-1])), rel=1e-10)


def test_ewma_vol_by_hand_and_fhs_ewma_rescales_to_the_current_vol() -> None:
    r = np.array([0.01, -0.02, 0.03])
    s, now = ewma_issued_vol(r, 0.94, n_init=2)
    s2_0 = (0.01 ** 2 + 0.02 ** 2) / 2
    s2_1 = 0.94 * s2_0 + 0.06 * 0.01 ** 2
    s2_2 = 0.94 * s2_1 + 0.06 * 0.02 ** 2
    s2_3 = 0.94 * s2_2 + 0.06 * 0.03 ** 2
    np.testing.assert_allclose(s ** 2, [s2_0, s2_1, s2_2], rtol=1e-14)
    assert now ** 2 == pytest.approx(s2_3, rel=1e-14)
    res = BUNDLE.residuals
    ret = res[res["symbol"] == "BTCUSDT"].sort_values("ts")["ret"].to_numpy()[-1100:]
    for lam in (0.94, 0.97):
        sig, cur = ewma_issued_vol(ret, lam)
        want = _es(60000 * np.expm1(ret / sig * cur))
        got = compute_method("fhs_ewma", book("a,BTCUSDT,1,60000"), STATE, BUNDLE,
                             MarginParams(ewma_lambda=lam))
        assert got.im == pytest.approx(want, rel=1e-10)
        assert got.detail["ewma_lambda"] == lam


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_every_example_and_a_bad_position_fails_alone(method: str) -> None:
    for path in sorted(EXAMPLES.glob("*.*")):
        if path.suffix not in (".csv", ".json") or path.stem == "index_futures_options":
            continue
        r = compute_method(method, example(path, AS_OF), STATE, BUNDLE)
        assert not r.failures, (path.name, r.failures)
        assert r.im >= r.mm >= 0
        assert math.fsum(v["total"] for v in r.by_position.values()) == pytest.approx(
            r.im, rel=1e-9, abs=1e-9)
    pf = book("a,BTCUSDT,1,60000\nb,DOGEUSDT-PERP,10,0.1")
    r = compute_method(method, pf, STATE, BUNDLE)
    assert [f.subject for f in r.failures] == ["b"] and r.im > 0
    with pytest.raises(ConfigError, match="--method must be one of"):
        compute_method("span2", pf, STATE, BUNDLE)


def _b76_usd(inst, f: float, vol: float, t_yr: float, s: float) -> float:
    """USD value of one inverse option contract (coin price F-discounted times the spot)."""
    from margin.pricing import black76_price

    v = float(black76_price(f, inst.strike, t_yr, vol, inst.is_call, 0.0))
    return inst.contract_size * v / f * s


def test_deribit_style_near_expiry_option_by_hand() -> None:
    """A short BTC call 8 hours from expiry: the 9 x 3 standard table and the extended table
    recomputed with Black-76: vol up max(vol (1 + 0.5 f), 0.5), down max(vol (1 - 0.25 f), 0),
    f = (30 / max(DTE, 1))^0.30 (DTE floored at one day); losses in USD at the scenario's spot;
    the extended losses at 16% / |move|, dampened by D ln(1 + L / D); MM = 0.8 IM."""
    from margin.methods import DERIBIT_EXTENDED, deribit_vol
    from margin.pricing import year_fraction

    p = MarginParams()
    pf = book("c,BTC-3MAR25-62000-C,-10,0.01")
    r = compute_method("deribit", pf, STATE, BUNDLE, p)
    d = compute_margin(pf, STATE, BUNDLE)
    inst = d.positions[0].instrument
    pr = d.context.priced[inst.name]
    assert pr.dte_days == pytest.approx(8 / 24)
    t = year_fraction(AS_OF, inst.expiry)
    f0, s0, v0 = pr.inputs.price, 60000.0, pr.vol0
    c0 = _b76_usd(inst, f0, v0, t, s0) / s0
    fac = 30.0 ** 0.30
    assert deribit_vol(v0, pr.dte_days, "up", p) == pytest.approx(max(v0 * (1 + 0.5 * fac), 0.5))
    assert deribit_vol(v0, pr.dte_days, "down", p) == pytest.approx(v0 * (1 - 0.25 * fac))

    def loss(m: float, vol: float) -> float:
        c1 = _b76_usd(inst, f0 * (1 + m), vol, t, s0 * (1 + m)) / (s0 * (1 + m))
        return 10 * (c1 - c0) * s0 * (1 + m)  # short 10: loss = value gained by the holder

    std = max(loss(m, deribit_vol(v0, pr.dte_days, st, p))
              for m in np.linspace(-0.16, 0.16, 9) for st in ("up", "same", "down"))
    ext = max(25000 * math.log1p(max(loss(m, deribit_vol(v0, pr.dte_days, "up", p)), 0) * 0.16
                                 / abs(m) / 25000) for m in DERIBIT_EXTENDED)
    assert r.im == pytest.approx(max(std, ext, 0.0), rel=1e-8)
    assert r.mm == pytest.approx(0.8 * r.im, rel=1e-12)
    # a vol-down range large enough to push the shocked vol below zero prices at intrinsic
    big = MarginParams(deribit={"volatility_range_down": 0.5})
    assert deribit_vol(v0, pr.dte_days, "down", big) == 0.0
    assert compute_method("deribit", pf, STATE, BUNDLE, big).im >= 0


def test_deribit_style_segregates_underlyings_and_nets_within_one() -> None:
    """Spot against the same-size perpetual nets inside BTC (what is left is the perpetual's
    premium over the index times 16%); BTC against ETH does not net (each alone at +/-16%)."""
    basis = compute_method("deribit", book("s,BTCUSDT,10,60000\np,BTCUSDT-PERP,-10,60000"),
                           STATE, BUNDLE)
    assert basis.im == pytest.approx(0.16 * 10 * 60000 * 0.0005, rel=1e-9)
    pair = compute_method("deribit", book("l,BTCUSDT-PERP,5,60000\ns,ETHUSDT-PERP,-100,3000"),
                          STATE, BUNDLE)
    assert pair.im == pytest.approx(0.16 * (5 * 60000 + 100 * 3000) * 1.0005, rel=1e-9)


def test_span_style_risk_array_by_hand() -> None:
    """1 BTC spot with a 10% scan range: scenarios 13/14 lose 6,000, the extremes 35% x 12,000 =
    4,200: IM 6,000, MM 6,000 / 1.1. A short call: the 16 scenarios recomputed with Black-76
    (forward moved with the index, aged one day, vol +/- 5 points; extremes at 35%), against the
    short-option minimum 0.5% x 60,000."""
    from margin.methods import SPAN_SCENARIOS
    from margin.pricing import year_fraction

    p = MarginParams(span={"price_scan": {"BTC": 0.10}})
    spot = compute_method("span", book("a,BTCUSDT,1,60000"), STATE, BUNDLE, p)
    assert spot.im == pytest.approx(6000.0, rel=1e-12)
    assert spot.mm == pytest.approx(6000.0 / 1.1, rel=1e-12)
    assert spot.detail["by_underlying"]["BTC"]["binding_scenario"] in (13, 14)
    pf = book("c,BTC-{+30D}-65000-C,-3,0.02")
    r = compute_method("span", pf, STATE, BUNDLE, p)
    d = compute_margin(pf, STATE, BUNDLE)
    inst = d.positions[0].instrument
    pr = d.context.priced[inst.name]
    s0, f0, v0 = 60000.0, pr.inputs.price, pr.vol0
    t0 = year_fraction(AS_OF, inst.expiry)
    t1 = t0 - 1 / 365
    c0 = _b76_usd(inst, f0, v0, t0, s0) / s0
    losses = []
    for m, v in [*SPAN_SCENARIOS, (2.0, 0), (-2.0, 0)]:
        s1 = s0 * (1 + 0.10 * m)
        f1 = s1 * (f0 / s0) ** (t1 / t0)
        c1 = _b76_usd(inst, f1, v0 + 0.05 * v, t1, s1) / s1
        w = 0.35 if abs(m) == 2.0 else 1.0
        losses.append(w * 3 * (c1 - c0) * s1)
    assert r.im == pytest.approx(max(max(losses), 3 * 0.005 * s0), rel=1e-8)


# McMillan, "Options as a Strategic Investment" (5th ed.), ch. 34, "SPAN margin": the S&P 500
# future at $500 a point with a 20-point price scan range ($10,000) and an extreme move of 14
# points ($7,000 = 35% of twice the range), its published risk array, the published array of a
# long Dec 410 call, and the SPAN requirements the book derives: long call 3,990 (scenario 14),
# covered write (long future, short call) 6,620 (scenario 13). Arrays are P&L, gains positive,
# to the publication's rounding (whole $10), the extremes as published (already at 35%).
_MCMILLAN_FUTURE = [0, 0, 3330, 3330, -3330, -3330, 6670, 6670, -6670, -6670, 10000, 10000,
                    -10000, -10000, 7000, -7000]
_MCMILLAN_CALL = [460, -610, 2640, 1730, -1270, -2340, 5210, 4540, -2540, -3430, 8060, 7640,
                  -3380, -3990, 3130, -1500]


def test_span_risk_array_of_a_future_matches_the_published_example() -> None:
    """Our SPAN-style array of a linear contract worth $500 a point with a 20-point scan range
    and the default extremes (2x at 35%) is McMillan's published future array: exactly
    10,000 x the scenario's share of the range (extremes 0.35 x 20,000), and equal to the
    published figures to their rounding."""
    from margin.methods import SPAN_SCENARIOS

    p = MarginParams(span={"price_scan": {"BTC": 20.0 / 60000.0}})
    r = compute_method("span", book("f,BTCUSDT,500,60000"), STATE, BUNDLE, p)
    arr = np.array(r.detail["by_underlying"]["BTC"]["risk_array_pnl"])
    exact = [10000.0 * m for m, _ in SPAN_SCENARIOS] + [0.35 * 20000.0, -0.35 * 20000.0]
    np.testing.assert_allclose(arr, exact, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(arr, _MCMILLAN_FUTURE, atol=5.0)  # the book rounds to $10
    assert r.im == pytest.approx(10000.0, rel=1e-8)
    assert r.detail["by_underlying"]["BTC"]["binding_scenario"] == 13  # futures down 3/3


def test_span_scanning_of_the_published_arrays_gives_the_published_requirements() -> None:
    """The scanning rule (sum the positions' arrays scenario by scenario, then the largest loss)
    on McMillan's published arrays gives his requirements: long call 3,990 in scenario 14,
    covered write 6,620 in scenario 13 (not the sum of the legs' worst losses, 10,000 + 8,060)."""
    from margin.methods import span_scanning_risk

    fut, call = np.array(_MCMILLAN_FUTURE, float), np.array(_MCMILLAN_CALL, float)
    risk, k, _ = span_scanning_risk(call[None, :])
    assert (risk, k) == (3990.0, 14)
    risk, k, arr = span_scanning_risk(np.vstack([fut, -call]))
    assert (risk, k) == (6620.0, 13)
    assert arr[0] == -460.0 and arr[1] == 610.0 and arr[14] == 3870.0 and arr[15] == -5500.0
    risk, k, _ = span_scanning_risk(fut[None, :])
    assert (risk, k) == (10000.0, 13)
    # extremes given unweighted are weighted by the cover
    raw = fut.copy()
    raw[14:] = [20000.0, -20000.0]
    assert span_scanning_risk(raw[None, :], 0.35)[2][14:].tolist() == [7000.0, -7000.0]
    with pytest.raises(ValueError, match="16 scenarios"):
        span_scanning_risk(np.zeros((1, 14)))


def test_span_calendar_spread_pays_the_intra_commodity_charge() -> None:
    """Short the near call, long the far: the scan alone nets the deltas across expiries; the
    spread charge adds 1% of the price per unit of delta spread formed (min of long and short)."""
    pf = book("n,BTC-{+7D}-60000-C,-10,0.025\nf,BTC-{+60D}-60000-C,10,0.08")
    r = compute_method("span", pf, STATE, BUNDLE)
    det = r.detail["by_underlying"]["BTC"]
    res = compute_margin(pf, STATE, BUNDLE)
    inst = {q.id: q.instrument for q in res.positions}
    g = res.context.greeks
    deltas = sorted(q * g[inst[i].name][0] / 60000.0 for q, i in ((-10, "n"), (10, "f")))
    assert det["spreads_units"] == pytest.approx(min(-deltas[0], deltas[1]), rel=1e-9)
    assert det["intra_spread_charge"] == pytest.approx(0.01 * 60000 * det["spreads_units"],
                                                       rel=1e-9)
    assert r.im >= det["scanning_risk"] + det["intra_spread_charge"] - 1e-9
    one = compute_method("span", book("n,BTC-{+7D}-60000-C,-10,0.025"), STATE, BUNDLE)
    assert one.detail["by_underlying"]["BTC"]["intra_spread_charge"] == 0.0


def test_deribit_style_delta_shock_beyond_its_threshold() -> None:
    """400 BTC perpetual (24.0 M USD of delta at the 60,030 mark) is 4.0 M beyond the 20 M
    threshold: the shock adds 10% of that, allocated to the position."""
    pf = book("a,BTCUSDT-PERP,400,60000")
    r = compute_method("deribit", pf, STATE, BUNDLE)
    det = r.detail["by_underlying"]["BTC"]
    n = 400 * 60000 * 1.0005
    assert det["net_delta_usd"] == pytest.approx(n, rel=1e-8)
    assert det["delta_shock"] == pytest.approx(0.1 * (n - 20e6), rel=1e-8)
    assert r.im == pytest.approx(0.16 * n + 0.1 * (n - 20e6), rel=1e-8)
    assert r.by_position["a"]["total"] == pytest.approx(r.im, rel=1e-12)


def test_bad_method_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="fixed_tiers must be .* increasing caps"):
        MarginParams(fixed_tiers=((1e6, 0.01, 0.005), (5e5, 0.02, 0.01)))
    with pytest.raises(ValueError, match="0 < mm_rate <= im_rate"):
        MarginParams(fixed_tiers=((1e6, 0.01, 0.02),))
    with pytest.raises(ValueError, match="price_range"):
        MarginParams(deribit={"price_range": 1.5})
