"""The market state: every market input of a margin calculation, valid for one ``as_of`` time.

A :class:`MarketState` is an immutable value (frozen dataclasses, read-only mappings) built by
``pipelines.market`` from the canonical store using only data stamped at or before ``as_of``. Per
underlying (a key of :data:`margin.instruments.UNDERLYINGS`) it holds:

- ``spot`` and ``index``: the spot price and the index options and futures settle against;
- ``forwards``: one :class:`Forward` per known expiry, from a listed future's price or from
  put-call parity on the option chain (each says which);
- ``marks``: mark (or last) prices per store symbol: perpetuals, futures, options;
- ``funding``: the perpetual's funding rate per funding period (and its annualized carry);
- ``vol_surface``: an object with ``implied_vol(strike, expiry)`` (the smile fit of
  :class:`margin.surface.VolSurface`, or anything with that method; where no option chain
  exists, a :class:`FlatVolSurface` at the vol index level), ``vol_index`` (DVOL/VIX, as a
  fraction);
- ``rate``: the continuously compounded rate options are discounted with (crypto: Deribit's
  convention r = 0; equity indices: only when given, the store holds no rates).

Every value is a :class:`Quote` with its ``source`` (store table/column or method) and the
timestamp of the observation it comes from. An input that is missing is **not defaulted**: it is
absent and a :class:`~features.errors.Failure` in ``failures`` says what is missing and why; code
reads the failure's ``reason``, never its message. Pure code: no I/O.

Forwards for an expiry with no listed point (:meth:`MarketState.forward`): linear interpolation of
``ln F`` in time between the two nearest known points (the spot/index at ``as_of`` is the point at
time 0); beyond the last point, the last point's annualized basis; with no points, the perpetual's
funding carry ``S exp(carry_ann tau)``; for an equity index with a given rate and dividend yield,
``S exp((r - q) tau)``; with none of these, a ``MISSING_PRICE`` failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from features.errors import DataError, Failure, FailureReason
from margin.instruments import Future, Instrument, Option, Perpetual, Spot, underlying_of
from margin.pricing import SECONDS_PER_YEAR, black76_price

__all__ = [
    "FlatVolSurface",
    "Forward",
    "FundingQuote",
    "Liquidity",
    "MarketState",
    "Quote",
    "UnderlyingState",
    "VolSurface",
]


def _utc(ts: object) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


@runtime_checkable
class VolSurface(Protocol):
    """What the market state needs of an implied-volatility surface."""

    def implied_vol(self, strike: Any, expiry: object) -> Any:
        """Annualized Black implied volatility (a fraction) for strikes (USD) at ``expiry``."""
        ...


@dataclass(frozen=True)
class FlatVolSurface:
    """One implied volatility for every strike and expiry: the surface where no option chain
    exists, at the level of the underlying's implied-volatility index (VIX, DVOL).

    A vol index is the 30-day at-the-money-ish level, so a flat surface carries no smile and no
    term structure: a documented approximation, recorded as the state's ``vol_surface_source``.

    Attributes
    ----------
    vol : annualized Black volatility as a fraction (0.25 = 25 vol points); finite and > 0.
    """

    vol: float

    def __post_init__(self) -> None:
        v = float(self.vol)
        if not (math.isfinite(v) and v > 0):
            raise DataError(f"The 'vol' of FlatVolSurface must be a finite fraction > 0 (0.25 = "
                            f"25 vol points). Got {self.vol!r} instead.", column="vol")
        object.__setattr__(self, "vol", v)

    def implied_vol(self, strike: Any, expiry: object) -> np.ndarray:
        """``vol`` for every strike (array of the strikes' shape); ``expiry`` is not used."""
        return np.full(np.shape(strike), self.vol, dtype=np.float64)


@dataclass(frozen=True)
class Quote:
    """One observed value with its provenance.

    Attributes
    ----------
    value : the number, in ``unit``.
    unit : "USD", the coin ("BTC") for coin-quoted prices, "fraction" for vols and rates,
        "per_period" for a funding rate.
    source : where it comes from: ``"<table>.<column>[<symbol>]"`` or the method ("put-call
        parity", "convention: ...").
    ts : the time of the observation (<= the state's ``as_of``).
    """

    value: float
    unit: str
    source: str
    ts: pd.Timestamp

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", _utc(self.ts))
        object.__setattr__(self, "value", float(self.value))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"value": self.value, "unit": self.unit, "source": self.source,
                "ts": self.ts.isoformat()}


@dataclass(frozen=True)
class Forward:
    """The forward price of an underlying for one expiry, in USD.

    Attributes
    ----------
    expiry : UTC expiry time.
    value : forward price (USD).
    source : "future <name>", "put-call parity (<n> strikes)", "interpolated ...",
        "extrapolated ...", "spot with funding carry".
    ts : time of the observation it comes from (the oldest input).
    """

    expiry: pd.Timestamp
    value: float
    source: str
    ts: pd.Timestamp

    def __post_init__(self) -> None:
        object.__setattr__(self, "expiry", _utc(self.expiry))
        object.__setattr__(self, "ts", _utc(self.ts))
        object.__setattr__(self, "value", float(self.value))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"expiry": self.expiry.isoformat(), "value": self.value, "source": self.source,
                "ts": self.ts.isoformat()}


@dataclass(frozen=True)
class FundingQuote:
    """A perpetual's funding rate.

    Attributes
    ----------
    rate : :class:`Quote` of the rate per funding period (0.0001 = 0.01%; longs pay when > 0).
    interval : the funding period.
    """

    rate: Quote
    interval: pd.Timedelta

    @property
    def carry_ann(self) -> float:
        """The rate annualized (periods per 365-day year x rate per period)."""
        return self.rate.value * (SECONDS_PER_YEAR / self.interval.total_seconds())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**self.rate.to_dict(), "interval": str(self.interval),
                "carry_ann": self.carry_ann}


def _frozen_map(m: Mapping[Any, Any] | None) -> Mapping[Any, Any]:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True)
class Liquidity:
    """What it costs to close out an underlying: the inputs of the liquidity and concentration
    add-ons (filled by the pipeline from the store; margin does not estimate them).

    Attributes
    ----------
    half_spread : the relative half bid-ask spread (fraction of price, > 0) as a :class:`Quote`,
        its source the quotes' median or a bar estimator (Corwin-Schultz, Abdi-Ranaldo).
    adv_usd : average daily traded value in USD (> 0), or None (no volume in the data).
    open_interest_usd : open interest (or market capacity) in USD, or None (the concentration
        add-on then uses ``capacity_adv_days`` x ADV, recorded).
    depth_usd : value resting in the order book's quoted levels on the thinner side (USD), or
        None (no book in the data): net exposure up to it closes at the half spread, impact is
        charged only beyond it.
    """

    half_spread: Quote
    adv_usd: Quote | None = None
    open_interest_usd: Quote | None = None
    depth_usd: Quote | None = None

    def __post_init__(self) -> None:
        for name in ("half_spread", "adv_usd", "open_interest_usd", "depth_usd"):
            q = getattr(self, name)
            if q is None:
                continue
            if not isinstance(q, Quote):
                raise TypeError(f"Liquidity.{name} must be a Quote; got {type(q).__name__}")
            if not (math.isfinite(q.value) and q.value > 0):
                raise DataError(f"Liquidity.{name} must be finite and > 0; got {q.value!r} "
                                f"({q.source})", column=name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {k: None if getattr(self, k) is None else getattr(self, k).to_dict()
                for k in ("half_spread", "adv_usd", "open_interest_usd", "depth_usd")}


@dataclass(frozen=True)
class UnderlyingState:
    """Market inputs of one underlying (see the module docstring).

    Attributes
    ----------
    underlying : a key of :data:`margin.instruments.UNDERLYINGS`.
    spot, index : :class:`Quote` in USD, or None when missing (a failure says so).
    forwards : expiry -> :class:`Forward`, the points known from the data.
    marks : store symbol -> :class:`Quote` (perpetual marks in USD, futures in USD, options in
        the venue's quote unit).
    funding : the perpetual's :class:`FundingQuote`, or None.
    vol_surface : a :class:`VolSurface`, or None; ``vol_surface_source`` says where it comes
        from (and its time).
    vol_index : implied-volatility index (DVOL/VIX) as a fraction, or None.
    rate : discount rate (fraction, continuously compounded), or None when unknown.
    dividend_yield : continuous dividend yield of an equity index (fraction), or None.
    liquidity : :class:`Liquidity`, or None (the add-ons then use the parameters' defaults and
        say so).
    """

    underlying: str
    spot: Quote | None = None
    index: Quote | None = None
    forwards: Mapping[pd.Timestamp, Forward] = field(default_factory=dict)
    marks: Mapping[str, Quote] = field(default_factory=dict)
    funding: FundingQuote | None = None
    vol_surface: VolSurface | None = None
    vol_surface_source: Quote | None = None
    vol_index: Quote | None = None
    rate: Quote | None = None
    dividend_yield: Quote | None = None
    liquidity: Liquidity | None = None

    def __post_init__(self) -> None:
        fw = {_utc(k): v for k, v in dict(self.forwards).items()}
        object.__setattr__(self, "forwards", _frozen_map(dict(sorted(fw.items()))))
        object.__setattr__(self, "marks", _frozen_map(self.marks))
        if self.vol_surface is not None and not isinstance(self.vol_surface, VolSurface):
            raise TypeError(f"vol_surface of {self.underlying} must have implied_vol(strike, "
                            f"expiry); got {type(self.vol_surface).__name__}")

    @property
    def reference(self) -> Quote | None:
        """The index if known, else the spot: the price at time 0 of the forward curve."""
        return self.index if self.index is not None else self.spot

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the surface by its source only)."""
        def q(x: Any) -> Any:
            return None if x is None else x.to_dict()

        return {
            "underlying": self.underlying, "spot": q(self.spot), "index": q(self.index),
            "forwards": [f.to_dict() for f in self.forwards.values()],
            "marks": {k: v.to_dict() for k, v in sorted(self.marks.items())},
            "funding": q(self.funding), "vol_surface": q(self.vol_surface_source),
            "vol_index": q(self.vol_index), "rate": q(self.rate),
            "dividend_yield": q(self.dividend_yield),
        }


@dataclass(frozen=True)
class MarketState:
    """All market inputs valid at ``as_of`` (see the module docstring).

    Attributes
    ----------
    as_of : UTC time the state is valid for; no input is stamped later.
    underlyings : underlying -> :class:`UnderlyingState`.
    failures : what is missing or stale (:class:`~features.errors.Failure`, subject
        ``"<underlying>/<input>"``).
    source : where the inputs come from (e.g. ``"store:sim"``).
    """

    as_of: pd.Timestamp
    underlyings: Mapping[str, UnderlyingState]
    failures: tuple[Failure, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "as_of", _utc(self.as_of))
        object.__setattr__(self, "underlyings", _frozen_map(self.underlyings))
        object.__setattr__(self, "failures", tuple(self.failures))
        for u in self.underlyings.values():
            for q in (u.spot, u.index, u.vol_index, u.vol_surface_source,
                      None if u.funding is None else u.funding.rate, *u.marks.values(),
                      *u.forwards.values()):
                if q is not None and q.ts > self.as_of:
                    raise ValueError(f"{u.underlying}: an input from {q.source} is stamped "
                                     f"{q.ts}, after as_of={self.as_of}")

    # ---- look-ups -----------------------------------------------------------------------
    def underlying(self, name: str) -> UnderlyingState | Failure:
        """The state of one underlying, or a ``MISSING_INPUTS`` failure naming the known ones."""
        if name in self.underlyings:
            return self.underlyings[name]
        return Failure(FailureReason.MISSING_INPUTS, name,
                       f"no market data for underlying {name!r} at {self.as_of}; the state has "
                       f"{sorted(self.underlyings)}", {"field": "underlying", "value": name})

    def failures_for(self, underlying: str) -> tuple[Failure, ...]:
        """The failures recorded for one underlying."""
        return tuple(f for f in self.failures if f.subject.split("/")[0] == underlying)

    def forward(self, underlying: str, expiry: object) -> Forward | Failure:
        """The forward for any expiry after ``as_of`` (rules in the module docstring)."""
        u = self.underlying(underlying)
        if isinstance(u, Failure):
            return u
        exp = _utc(expiry)
        subject = f"{underlying}/forward {exp:%Y-%m-%d %H:%M}"
        if exp <= self.as_of:
            return Failure(FailureReason.EXPIRED, subject, f"expiry {exp} is not after as_of "
                           f"{self.as_of}", {"field": "expiry", "value": str(exp)})
        if exp in u.forwards:
            return u.forwards[exp]
        ref = u.reference
        tau = (exp - self.as_of).total_seconds() / SECONDS_PER_YEAR
        if u.forwards:
            pts = [(0.0, ref)] if ref is not None else []
            pts += [((k - self.as_of).total_seconds() / SECONDS_PER_YEAR, f)
                    for k, f in u.forwards.items()]
            before = [p for p in pts if p[0] < tau]
            after = [p for p in pts if p[0] > tau]
            if before and after:
                (t0, a), (t1, b) = before[-1], after[0]
                w = (tau - t0) / (t1 - t0)
                value = math.exp((1 - w) * math.log(a.value) + w * math.log(b.value))
                name_a = "spot" if t0 == 0.0 else f"{a.expiry:%Y-%m-%d}"
                return Forward(exp, value, f"interpolated ln F between {name_a} and "
                               f"{b.expiry:%Y-%m-%d}", min(a.ts, b.ts))
            if ref is not None and before:
                t1, last = before[-1]
                basis = math.log(last.value / ref.value) / t1
                return Forward(exp, ref.value * math.exp(basis * tau),
                               f"extrapolated with the {last.expiry:%Y-%m-%d} basis "
                               f"{basis:.4f}/yr", min(ref.ts, last.ts))
            if ref is None:
                return Failure(FailureReason.MISSING_PRICE, subject,
                               f"expiry {exp} is outside the known forwards and no spot/index "
                               "price is known", {"field": "expiry", "value": str(exp)})
        if ref is not None and u.funding is not None:
            carry = u.funding.carry_ann
            return Forward(exp, ref.value * math.exp(carry * tau),
                           f"spot with funding carry {carry:.4f}/yr", min(ref.ts, u.funding.rate.ts))
        if ref is not None and u.rate is not None and u.dividend_yield is not None:
            carry = u.rate.value - u.dividend_yield.value
            return Forward(exp, ref.value * math.exp(carry * tau),
                           f"spot with carry rate - dividend yield = {carry:.4f}/yr",
                           min(ref.ts, u.rate.ts, u.dividend_yield.ts))
        missing = ("spot/index price" if ref is None else
                   "future, option chain, funding rate or rate and dividend yield")
        return Failure(FailureReason.MISSING_PRICE, subject,
                       f"no forward for {underlying} expiring {exp}: no {missing} at "
                       f"{self.as_of}", {"field": "expiry", "value": str(exp)})

    def price(self, instrument: Instrument) -> Quote | Failure:
        """The current price of an instrument in its quote unit.

        Spot: the spot price (USD). Perpetual: its mark (by name, else the underlying's
        perpetual mark; USD). Future: its mark, else the forward for its expiry (USD). Option:
        its mark (the venue's unit: coin for Deribit), else Black-76 off the vol surface at the
        forward (an inverse option in the coin). A failure says what is missing.
        """
        und = instrument.underlying
        u = self.underlying(und)
        if isinstance(u, Failure):
            return u
        name = instrument.name
        if instrument.is_expired(self.as_of):
            return Failure(FailureReason.EXPIRED, name, f"expired at {instrument.expiry}, before "
                           f"as_of {self.as_of}", {"field": "expiry", "value": str(instrument.expiry)})
        if name in u.marks:
            return u.marks[name]
        if isinstance(instrument, Spot):
            if u.spot is None:
                return Failure(FailureReason.MISSING_PRICE, name, f"no spot price for {und} at "
                               f"{self.as_of}", {"field": "spot"})
            return u.spot
        if isinstance(instrument, Perpetual):
            perp = underlying_of(instrument).perpetual
            if perp is not None and perp in u.marks:
                q = u.marks[perp]
                return Quote(q.value, q.unit, f"{q.source} (the {und} perpetual's mark)", q.ts)
            return Failure(FailureReason.MISSING_PRICE, name, f"no perpetual mark for {und} at "
                           f"{self.as_of}", {"field": "mark", "value": perp})
        if isinstance(instrument, Future):
            fw = self.forward(und, instrument.expiry)
            if isinstance(fw, Failure):
                return Failure(fw.reason, name, fw.message, fw.details)
            return Quote(fw.value, "USD", f"forward: {fw.source}", fw.ts)
        if isinstance(instrument, Option):
            return self._model_price(instrument, u)
        return Failure(FailureReason.UNSUPPORTED_INSTRUMENT, name,
                       f"no pricing rule for {type(instrument).__name__}")

    def _model_price(self, opt: Option, u: UnderlyingState) -> Quote | Failure:
        name = opt.name
        fw = self.forward(opt.underlying, opt.expiry)
        if isinstance(fw, Failure):
            return Failure(fw.reason, name, fw.message, fw.details)
        if u.vol_surface is None:
            return Failure(FailureReason.MISSING_INPUTS, name, f"no mark and no vol surface (no "
                           f"fitted option chain, no vol index) for {opt.underlying} at "
                           f"{self.as_of}", {"field": "vol_surface"})
        if u.rate is None:
            return Failure(FailureReason.MISSING_INPUTS, name, f"no mark and no interest rate "
                           f"for {opt.underlying} at {self.as_of}", {"field": "rate"})
        vol = float(np.asarray(u.vol_surface.implied_vol(opt.strike, opt.expiry)).reshape(-1)[0])
        if not (math.isfinite(vol) and vol >= 0):
            return Failure(FailureReason.NON_FINITE, name, f"the vol surface gives {vol!r} for "
                           f"strike {opt.strike} expiring {opt.expiry}", {"field": "vol"})
        t_yr = (opt.expiry - self.as_of).total_seconds() / SECONDS_PER_YEAR
        px = float(black76_price(fw.value, opt.strike, t_yr, vol, opt.is_call, u.rate.value,
                                 inverse=opt.inverse))
        src = u.vol_surface_source.source if u.vol_surface_source is not None else "vol surface"
        ts = min(fw.ts, u.vol_surface_source.ts) if u.vol_surface_source is not None else fw.ts
        return Quote(px, opt.underlying if opt.inverse else "USD",
                     f"Black-76 at vol {vol:.4f} ({src}), forward {fw.value:.6g} ({fw.source})",
                     ts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole state."""
        return {"as_of": self.as_of.isoformat(), "source": self.source,
                "underlyings": {k: v.to_dict() for k, v in sorted(self.underlyings.items())},
                "failures": [f.to_dict() for f in self.failures]}
