"""Tests of the immutable MarketState: provenance, forwards (points, interpolation, carry), prices
and recorded (never defaulted) missing inputs. Hand-built states, hand-computed numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from features.errors import DataError, Failure, FailureReason
from margin.instruments import parse_instrument
from margin.market_state import (
    FlatVolSurface,
    Forward,
    FundingQuote,
    MarketState,
    Quote,
    UnderlyingState,
)

T = pd.Timestamp("2025-03-01T00:00Z")
YEAR_S = 365 * 86400


class FlatSurface:
    """A flat smile: the simplest object with ``implied_vol(strike, expiry)``."""

    def __init__(self, vol: float) -> None:
        self.vol = vol

    def implied_vol(self, strike: object, expiry: object) -> np.ndarray:
        return np.full(np.shape(strike), self.vol)


def _q(v: float, src: str = "test", unit: str = "USD", ts: pd.Timestamp = T) -> Quote:
    return Quote(v, unit, src, ts)


def _btc(**kw: object) -> UnderlyingState:
    e1, e2 = pd.Timestamp("2025-03-28T08:00Z"), pd.Timestamp("2025-06-27T08:00Z")
    args = dict(
        spot=_q(60_000.0, "bars_1m.close[BTCUSDT]"),
        index=_q(59_990.0, "funding.index_px[BTCUSDT-PERP]"),
        forwards={e1: Forward(e1, 60_500.0, "future BTC-28MAR25", T),
                  e2: Forward(e2, 62_000.0, "future BTC-27JUN25", T - pd.Timedelta("1min"))},
        marks={"BTCUSDT-PERP": _q(60_010.0, "funding.mark_px[BTCUSDT-PERP]"),
               "BTC-28MAR25-70000-C": _q(0.0123, "options.mark_px", unit="BTC")},
        funding=FundingQuote(_q(0.0001, "funding.funding_rate", unit="per_period"),
                             pd.Timedelta("8h")),
        rate=_q(0.0, "convention: Deribit r = 0", unit="fraction"),
    )
    args.update(kw)
    return UnderlyingState("BTC", **args)


def _state(**kw: object) -> MarketState:
    return MarketState(T, {"BTC": _btc(**kw)}, (), source="test")


# ---- immutability and provenance -------------------------------------------------------------


def test_state_is_immutable() -> None:
    ms = _state()
    with pytest.raises(TypeError):
        ms.underlyings["ETH"] = ms.underlyings["BTC"]  # type: ignore[index]
    with pytest.raises(TypeError):
        ms.underlyings["BTC"].marks["X"] = _q(1.0)  # type: ignore[index]
    with pytest.raises(AttributeError):
        ms.as_of = T  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ms.underlyings["BTC"].spot.value = 1.0  # type: ignore[misc, union-attr]
    # forwards are kept sorted by expiry whatever the input order
    exps = list(ms.underlyings["BTC"].forwards)
    assert exps == sorted(exps)


def test_inputs_after_as_of_are_rejected() -> None:
    late = _q(60_000.0, "bars_1m.close[BTCUSDT]", ts=T + pd.Timedelta("1s"))
    with pytest.raises(ValueError, match=r"BTC: an input from bars_1m.close\[BTCUSDT\] is stamped"):
        MarketState(T, {"BTC": _btc(spot=late)})


def test_surface_must_have_implied_vol() -> None:
    with pytest.raises(TypeError, match="vol_surface of BTC must have implied_vol"):
        _btc(vol_surface=object())


def test_to_dict_is_json() -> None:
    ms = MarketState(T, {"BTC": _btc()}, (Failure(FailureReason.MISSING_INPUTS, "BTC/vol_index",
                                                   "no BTC-DVOL"),), source="test")
    doc = json.loads(json.dumps(ms.to_dict()))
    assert doc["underlyings"]["BTC"]["spot"]["source"] == "bars_1m.close[BTCUSDT]"
    assert doc["underlyings"]["BTC"]["funding"]["carry_ann"] == pytest.approx(0.0001 * 1095)
    assert doc["failures"][0]["reason"] == "missing_inputs"
    assert [f.subject for f in ms.failures_for("BTC")] == ["BTC/vol_index"]
    assert ms.failures_for("ETH") == ()


# ---- forwards --------------------------------------------------------------------------------


def _tau(e: pd.Timestamp) -> float:
    return (e - T).total_seconds() / YEAR_S


def test_forward_points_interpolation_and_extrapolation() -> None:
    ms = _state()
    e1, e2 = pd.Timestamp("2025-03-28T08:00Z"), pd.Timestamp("2025-06-27T08:00Z")
    assert ms.forward("BTC", e1).value == 60_500.0
    assert ms.forward("BTC", e1).source == "future BTC-28MAR25"
    # between two points: ln F linear in time
    mid = pd.Timestamp("2025-05-02T08:00Z")
    w = (_tau(mid) - _tau(e1)) / (_tau(e2) - _tau(e1))
    f = ms.forward("BTC", mid)
    assert f.value == pytest.approx(math.exp((1 - w) * math.log(60_500) + w * math.log(62_000)),
                                    rel=1e-13)
    assert "interpolated" in f.source and f.ts == T - pd.Timedelta("1min")
    # before the first point: from the index (time 0) to the first future
    early = pd.Timestamp("2025-03-07T08:00Z")
    w0 = _tau(early) / _tau(e1)
    assert ms.forward("BTC", early).value == pytest.approx(
        math.exp((1 - w0) * math.log(59_990) + w0 * math.log(60_500)), rel=1e-13)
    # after the last: the last point's annualized basis against the index
    late = pd.Timestamp("2025-12-26T08:00Z")
    basis = math.log(62_000 / 59_990) / _tau(e2)
    assert ms.forward("BTC", late).value == pytest.approx(59_990 * math.exp(basis * _tau(late)),
                                                          rel=1e-13)


def test_forward_from_funding_carry_then_missing() -> None:
    ms = _state(forwards={})
    e = pd.Timestamp("2025-04-01T08:00Z")
    f = ms.forward("BTC", e)
    assert f.value == pytest.approx(59_990 * math.exp(0.0001 * 3 * 365 * _tau(e)), rel=1e-13)
    assert f.source.startswith("spot with funding carry")
    bare = _state(forwards={}, funding=None)
    miss = bare.forward("BTC", e)
    assert isinstance(miss, Failure) and miss.reason is FailureReason.MISSING_PRICE
    assert "no future, option chain, funding rate or rate and dividend yield" in miss.message
    exp = bare.forward("BTC", T)
    assert isinstance(exp, Failure) and exp.reason is FailureReason.EXPIRED
    unknown = bare.forward("DOGE", e)
    assert isinstance(unknown, Failure) and unknown.reason is FailureReason.MISSING_INPUTS
    assert "has ['BTC']" in unknown.message


def test_equity_index_forward_needs_rate_and_dividend_yield() -> None:
    spx = UnderlyingState("SP500", spot=_q(5_000.0, "bars_1d.close[SP500]"),
                          rate=_q(0.04, "config: rates", unit="fraction"))
    e = pd.Timestamp("2025-06-20T20:00Z")
    ms = MarketState(T, {"SP500": spx})
    assert isinstance(ms.forward("SP500", e), Failure)
    spx2 = UnderlyingState("SP500", spot=spx.spot, rate=spx.rate,
                           dividend_yield=_q(0.015, "config: dividend_yields", unit="fraction"))
    f = MarketState(T, {"SP500": spx2}).forward("SP500", e)
    assert f.value == pytest.approx(5_000 * math.exp((0.04 - 0.015) * _tau(e)), rel=1e-13)


# ---- prices ------------------------------------------------------------------------------------


def test_prices_by_instrument_type() -> None:
    ms = _state()
    assert ms.price(parse_instrument("BTCUSDT")).value == 60_000.0
    perp = ms.price(parse_instrument("BTC-PERPETUAL"))
    assert perp.value == 60_010.0 and "the BTC perpetual's mark" in perp.source
    assert ms.price(parse_instrument("BTCUSDT-PERP")).value == 60_010.0
    fut = ms.price(parse_instrument("BTC-28MAR25"))
    assert fut.value == 60_500.0 and fut.unit == "USD"
    mark = ms.price(parse_instrument("BTC-28MAR25-70000-C"))
    assert mark.value == 0.0123 and mark.unit == "BTC"
    expired = ms.price(parse_instrument("BTC-28FEB25-70000-C"))
    assert isinstance(expired, Failure) and expired.reason is FailureReason.EXPIRED


def test_option_off_the_surface_is_black76_in_the_coin() -> None:
    ms = _state(vol_surface=FlatSurface(0.6))
    opt = parse_instrument("BTC-25APR25-65000-P")
    q = ms.price(opt)
    f = ms.forward("BTC", opt.expiry).value
    t = _tau(opt.expiry)
    sd = 0.6 * math.sqrt(t)
    d1 = (math.log(f / 65_000) + sd * sd / 2) / sd
    put = 65_000 * norm.cdf(-(d1 - sd)) - f * norm.cdf(-d1)
    assert q.unit == "BTC" and q.value == pytest.approx(put / f, rel=1e-12)
    assert "Black-76 at vol 0.6000" in q.source


def test_option_without_surface_or_rate_is_a_failure() -> None:
    opt = parse_instrument("BTC-25APR25-65000-P")
    no_surface = _state().price(opt)
    assert isinstance(no_surface, Failure) and no_surface.reason is FailureReason.MISSING_INPUTS
    assert no_surface.details["field"] == "vol_surface"
    no_rate = _state(vol_surface=FlatSurface(0.6), rate=None).price(opt)
    assert isinstance(no_rate, Failure) and no_rate.details["field"] == "rate"
    bad = _state(vol_surface=FlatSurface(float("nan"))).price(opt)
    assert isinstance(bad, Failure) and bad.reason is FailureReason.NON_FINITE
    no_spot = _state(spot=None).price(parse_instrument("BTCUSDT"))
    assert isinstance(no_spot, Failure) and no_spot.reason is FailureReason.MISSING_PRICE
    no_perp = _state(marks={}).price(parse_instrument("BTC-PERPETUAL"))
    assert isinstance(no_perp, Failure) and no_perp.reason is FailureReason.MISSING_PRICE


# ---- the flat surface (no chain: the vol index level) -------------------------------------------


def test_flat_vol_surface_values_and_errors() -> None:
    flat = FlatVolSurface(0.2542)
    assert flat.implied_vol(2_300.0, "2019-02-01").shape == ()
    v = flat.implied_vol(np.array([[2_000.0, 2_500.0, 3_000.0]]), "2019-03-01")
    assert v.shape == (1, 3) and (v == 0.2542).all()
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(DataError, match=r"The 'vol' of FlatVolSurface must be a finite "
                                            r"fraction > 0 .* Got .* instead"):
            FlatVolSurface(bad)


def test_index_option_off_a_flat_vix_surface_against_quantlib() -> None:
    import QuantLib as ql

    t0 = pd.Timestamp("2018-12-31T21:00Z")
    vix = _q(0.2542, "vix_1d.close[VIX] / 100", unit="fraction", ts=t0)
    spx = UnderlyingState(
        "SP500", spot=_q(2_506.85, "bars_1d.close[SP500]", ts=t0),
        vol_surface=FlatVolSurface(vix.value),
        vol_surface_source=Quote(vix.value, "fraction", "flat at VIX close 2018-12-31 21:00 UTC",
                                 t0),
        vol_index=vix, rate=_q(0.025, "config: rates", unit="fraction", ts=t0),
        dividend_yield=_q(0.02, "config: dividend_yields", unit="fraction", ts=t0))
    ms = MarketState(t0, {"SP500": spx})
    for name, right in (("SP500-1FEB19-2300-P", ql.Option.Put),
                        ("SP500-1MAR19-2800-C", ql.Option.Call)):
        opt = parse_instrument(name)
        t = (opt.expiry - t0).total_seconds() / YEAR_S
        fwd = 2_506.85 * math.exp((0.025 - 0.02) * t)
        ref = ql.blackFormula(right, opt.strike, fwd, 0.2542 * math.sqrt(t), math.exp(-0.025 * t))
        q = ms.price(opt)
        assert q.unit == "USD" and q.value == pytest.approx(ref, rel=1e-10)
        assert "flat at VIX close 2018-12-31 21:00 UTC" in q.source and q.ts == t0
    # without a surface (NASDAQ: no chain, no vol index) the option is a failure, not defaulted
    ndx_spot = _q(6_635.28, "bars_1d.close[NASDAQ]", ts=t0)
    ndx = MarketState(t0, {"NASDAQ": UnderlyingState("NASDAQ", spot=ndx_spot, rate=spx.rate,
                                                     dividend_yield=spx.dividend_yield)})
    f = ndx.price(parse_instrument("NASDAQ-1FEB19-6500-C"))
    assert isinstance(f, Failure) and f.reason is FailureReason.MISSING_INPUTS
    assert f.details["field"] == "vol_surface" and "no vol index" in f.message
