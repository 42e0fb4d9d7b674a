"""The compiled full-revaluation kernel: a book of instruments under a scenario set -> P&L vector.

A :class:`Book` holds the distinct instruments of a portfolio with their summed quantities and
their valuation inputs at ``as_of`` (:class:`MarketInputs`); a :class:`ScenarioSet` holds, per
scenario,

- ``log_return`` (n_scenarios, n_underlyings): the log-return x of each underlying's index over
  the margin period, S1 = S0 exp(x) (log-returns, so any x keeps prices positive);
- ``vol_shift`` (n_scenarios, n_buckets), optional: the absolute change of implied vol per expiry
  bucket, in vol units (0.05 = +5 vol points); an option's vol is max(vol0 + shift, 0); each
  option names its bucket in its :class:`MarketInputs`;
- ``dt_yr``: the elapsed time of the margin period (years, ACT/365), the same for all scenarios:
  every option and future ages by it; one that expires inside the period is worth its intrinsic
  value at S1 (futures settle at S1);
- ``basis_shift_ann`` (n_scenarios, n_underlyings), optional: the change of the annualized log
  basis b = ln(F/S) / T of dated futures and options' forwards, F1 = S1 exp((b0 + shift) T1);
- ``funding`` (n_scenarios, n_underlyings), optional: the funding longs pay over the period, as a
  fraction of the perpetual's notional at the scenario price (shorts receive it).

Revaluation, per contract (quantity 1), in USD:

==================  ==================================================================
spot                size (P1 - P0), P1 = P0 S1 / S0
linear future       size (F1 - F0)
inverse future      size (1/F0 - 1/F1) coin, x S1
linear perpetual    size (P1 - P0) - size P1 funding,  P1 = P0 S1 / S0 (premium kept)
inverse perpetual   [size (1/P0 - 1/P1) - size / P1 funding] coin, x S1
linear option       size (V(F1, K, T1, vol1) - V0), Black-76
inverse option      size (V1 / F1 - V0 / F0) coin, x S1
==================  ==================================================================

Coin P&L is converted at the scenario's index price S1 (the inverse contracts' convexity). The
P&L is then expressed in the book's margin currency: USD, or an underlying's coin (P&L USD / S1 of
that underlying). The portfolio P&L is sum_i quantity_i x pnl_i, per scenario.

The kernel (:func:`revalue`) is numba ``@njit(parallel=True)``: ``prange`` over blocks of
scenarios; each scenario's sum runs over instruments in their fixed book order, so the result is
bit-identical for any thread count; memory is the output vector plus a few numbers per
underlying per block (no positions x scenarios matrix). :func:`position_pnl` gives per-position
P&L for the scenarios asked for only; :func:`revalue_scalar` is the pure-Python reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

from features.errors import ConfigError, DataError
from margin.instruments import Future, Instrument, Option, Perpetual, Spot
from margin.pricing import black76_price, black76_scalar, year_fraction

__all__ = [
    "KIND_FUTURE",
    "KIND_OPTION",
    "KIND_PERPETUAL",
    "KIND_SPOT",
    "Book",
    "MarketInputs",
    "ScenarioSet",
    "build_book",
    "position_pnl",
    "revalue",
    "revalue_scalar",
]

KIND_SPOT, KIND_FUTURE, KIND_PERPETUAL, KIND_OPTION = 0, 1, 2, 3
_KINDS = {Spot: KIND_SPOT, Future: KIND_FUTURE, Perpetual: KIND_PERPETUAL, Option: KIND_OPTION}
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


@dataclass(frozen=True)
class MarketInputs:
    """Valuation inputs of one instrument at ``as_of``.

    Attributes
    ----------
    price : USD; the forward for the instrument's expiry (futures, options), the mark price
        (perpetuals) or the price (spot).
    vol : the option's Black implied vol (fraction); unused for other instruments.
    vol_bucket : the option's column in :attr:`ScenarioSet.vol_shift`.
    rate : continuously compounded discount rate of the option's premium.
    """

    price: float
    vol: float = float("nan")
    vol_bucket: int = 0
    rate: float = 0.0


@dataclass(frozen=True, eq=False)
class Book:
    """Distinct instruments with summed quantities and the kernel's arrays (one entry each).

    Built by :func:`build_book`. ``position_index[j]`` is the instrument of position ``j`` and
    ``position_quantity[j]`` its quantity; ``quantity`` sums them per instrument.
    """

    as_of: pd.Timestamp
    instruments: tuple[Instrument, ...]
    underlyings: tuple[str, ...]
    quantity: NDArray[np.float64]
    position_index: NDArray[np.int64]
    position_quantity: NDArray[np.float64]
    spot: NDArray[np.float64]
    kind: NDArray[np.int64]
    inverse: NDArray[np.bool_]
    und: NDArray[np.int64]
    bucket: NDArray[np.int64]
    size: NDArray[np.float64]
    strike: NDArray[np.float64]
    is_call: NDArray[np.bool_]
    t_yr: NDArray[np.float64]
    basis_ann: NDArray[np.float64]
    vol: NDArray[np.float64]
    rate: NDArray[np.float64]
    price: NDArray[np.float64]
    value: NDArray[np.float64]

    @property
    def n_instruments(self) -> int:
        """Number of distinct instruments."""
        return len(self.instruments)

    @property
    def n_positions(self) -> int:
        """Number of positions."""
        return len(self.position_index)


def _finite_pos(x: float, what: str, name: str) -> float:
    v = float(x)
    if not (math.isfinite(v) and v > 0):
        raise DataError(f"{what} of {name!r} must be a finite number > 0. Got {x!r} instead.",
                        column=what)
    return v


def build_book(
    positions: Sequence[tuple[Instrument, float]],
    inputs: Mapping[str, MarketInputs],
    spot: Mapping[str, float],
    as_of: object,
) -> Book:
    """Collect positions into a :class:`Book` of distinct instruments with their inputs.

    Parameters
    ----------
    positions : (instrument, signed quantity in contracts) pairs; the same instrument may
        appear in several positions (quantities are summed for the kernel).
    inputs : :class:`MarketInputs` per instrument name.
    spot : the index/spot price S0 (USD) of every underlying the positions name.
    as_of : valuation time (UTC); options' and futures' time to expiry is measured from it.

    Raises
    ------
    DataError : a quantity is not finite, two instruments share a name, an input or a spot price
        is missing or not a finite positive number, an option's vol is negative or not finite, an
        instrument has expired at ``as_of`` or is of an unsupported type.
    """
    t0 = pd.Timestamp(as_of)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    index: dict[str, int] = {}
    insts: list[Instrument] = []
    pos_idx = np.empty(len(positions), dtype=np.int64)
    pos_q = np.empty(len(positions), dtype=np.float64)
    for j, (inst, q) in enumerate(positions):
        qf = float(q)
        if not math.isfinite(qf):
            raise DataError(f"quantity of position {j} ({inst.name!r}) must be finite. "
                            f"Got {q!r} instead.", column="quantity")
        i = index.get(inst.name)
        if i is None:
            i = index[inst.name] = len(insts)
            insts.append(inst)
        elif insts[i] != inst:
            raise DataError(f"two different instruments are named {inst.name!r}: {insts[i]!r} "
                            f"and {inst!r}", column="instrument")
        pos_idx[j], pos_q[j] = i, qf
    unds = tuple(sorted({i.underlying for i in insts}))
    u_index = {u: k for k, u in enumerate(unds)}
    s0 = np.empty(len(unds))
    for k, u in enumerate(unds):
        if u not in spot:
            raise DataError(f"no spot/index price for underlying {u!r}", column="spot")
        s0[k] = _finite_pos(spot[u], "spot", u)
    n = len(insts)
    arr = {key: np.zeros(n) for key in ("size", "strike", "t_yr", "basis_ann", "vol", "rate",
                                        "price", "value")}
    kind = np.zeros(n, dtype=np.int64)
    inverse = np.zeros(n, dtype=np.bool_)
    und = np.zeros(n, dtype=np.int64)
    bucket = np.zeros(n, dtype=np.int64)
    is_call = np.zeros(n, dtype=np.bool_)
    for i, inst in enumerate(insts):
        k = _KINDS.get(type(inst))
        if k is None:
            raise DataError(f"instrument {inst.name!r} of type {type(inst).__name__} is not "
                            "supported by the revaluation kernel", column="instrument")
        if inst.name not in inputs:
            raise DataError(f"no market inputs for instrument {inst.name!r}", column="instrument")
        mi = inputs[inst.name]
        kind[i], inverse[i], und[i] = k, inst.inverse, u_index[inst.underlying]
        if k == KIND_SPOT and inst.inverse:
            raise DataError(f"spot instrument {inst.name!r} cannot be inverse", column="settlement")
        arr["size"][i] = inst.contract_size
        p = arr["price"][i] = _finite_pos(mi.price, "price", inst.name)
        if k in (KIND_FUTURE, KIND_OPTION):
            exp = inst.expiry
            t = year_fraction(t0, exp)
            if t <= 0:
                raise DataError(f"instrument {inst.name!r} expired at {exp} (as_of {t0})",
                                column="expiry")
            arr["t_yr"][i] = t
            arr["basis_ann"][i] = math.log(p / s0[und[i]]) / t
        if k == KIND_OPTION:
            assert isinstance(inst, Option)
            v = float(mi.vol)
            if not (math.isfinite(v) and v >= 0):
                raise DataError(f"vol of option {inst.name!r} must be a finite number >= 0. "
                                f"Got {mi.vol!r} instead.", column="vol")
            if not (isinstance(mi.vol_bucket, int | np.integer) and mi.vol_bucket >= 0):
                raise DataError(f"vol_bucket of option {inst.name!r} must be an integer >= 0. "
                                f"Got {mi.vol_bucket!r} instead.", column="vol_bucket")
            if not math.isfinite(float(mi.rate)):
                raise DataError(f"rate of option {inst.name!r} must be finite. Got {mi.rate!r}.",
                                column="rate")
            arr["vol"][i], arr["rate"][i] = v, float(mi.rate)
            arr["strike"][i], is_call[i], bucket[i] = inst.strike, inst.is_call, int(mi.vol_bucket)
    opt = kind == KIND_OPTION
    v0 = np.zeros(n)
    if opt.any():
        v0[opt] = black76_price(arr["price"][opt], arr["strike"][opt], arr["t_yr"][opt],
                                arr["vol"][opt], is_call[opt], arr["rate"][opt])
    # value per unit in the settlement currency: option premium (coin for inverse), else unused
    arr["value"] = np.where(opt & inverse, v0 / arr["price"], v0)
    qty = np.zeros(n)
    np.add.at(qty, pos_idx, pos_q)
    return Book(t0, tuple(insts), unds, qty, pos_idx, pos_q, s0, kind, inverse, und, bucket,
                arr["size"], arr["strike"], is_call, arr["t_yr"], arr["basis_ann"], arr["vol"],
                arr["rate"], arr["price"], arr["value"])


@dataclass(frozen=True, eq=False)
class ScenarioSet:
    """Scenario inputs over one margin period (see the module docstring for units).

    Attributes
    ----------
    underlyings : names of the ``log_return`` (and basis, funding) columns.
    log_return : array of shape (n_scenarios, n_underlyings), S1 = S0 exp(x).
    dt_yr : elapsed time of the margin period, years (ACT/365), >= 0.
    vol_shift : array of shape (n_scenarios, n_buckets), absolute vol change, or None (zero).
    basis_shift_ann : array of shape (n_scenarios, n_underlyings), or None (zero).
    funding : array of shape (n_scenarios, n_underlyings), fraction of notional paid by longs
        over the period, or None (zero).
    """

    underlyings: tuple[str, ...]
    log_return: NDArray[np.float64]
    dt_yr: float = 0.0
    vol_shift: NDArray[np.float64] | None = None
    basis_shift_ann: NDArray[np.float64] | None = None
    funding: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "underlyings", tuple(self.underlyings))
        x = np.ascontiguousarray(self.log_return, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.underlyings):
            raise DataError(f"log_return must have shape (n_scenarios, {len(self.underlyings)}) "
                            f"(one column per underlying). Got {x.shape} instead.",
                            column="log_return")
        object.__setattr__(self, "log_return", x)
        for name, cols in (("vol_shift", None), ("basis_shift_ann", x.shape[1]),
                           ("funding", x.shape[1])):
            a = getattr(self, name)
            if a is None:
                continue
            a = np.ascontiguousarray(a, dtype=np.float64)
            if a.ndim != 2 or a.shape[0] != x.shape[0] or (cols is not None and a.shape[1] != cols):
                want = f"({x.shape[0]}, {cols if cols is not None else 'n_buckets'})"
                raise DataError(f"{name} must have shape {want}. Got {a.shape} instead.",
                                column=name)
            object.__setattr__(self, name, a)
        for name in ("log_return", "vol_shift", "basis_shift_ann", "funding"):
            a = getattr(self, name)
            if a is not None and not np.isfinite(a).all():
                bad = np.argwhere(~np.isfinite(a))[0]
                raise DataError(f"{name} holds a non-finite value {float(a[tuple(bad)])!r} at scenario "
                                f"{bad[0]}, column {bad[1]}", column=name)
        dt = float(self.dt_yr)
        if not (math.isfinite(dt) and dt >= 0):
            raise DataError(f"dt_yr must be a finite number >= 0. Got {self.dt_yr!r} instead.",
                            column="dt_yr")
        object.__setattr__(self, "dt_yr", dt)

    @property
    def n_scenarios(self) -> int:
        """Number of scenarios."""
        return self.log_return.shape[0]


# ---- the kernel --------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _ncdf(x: float) -> float:
    return 0.5 * math.erfc(-x * _INV_SQRT2)


@njit(cache=True, inline="always")
def _unit_pnl(i, s, kind, inverse, und, bucket, size, strike, lnk, sign, tau1, sqtau1, bt1, growth,
              disc1, vol0, price0, value0, ratio, s1, lns1, vol_shift, basis, funding):
    """USD P&L of one contract of instrument i in scenario s (s1/lns1: that scenario's S1)."""
    u = und[i]
    k = kind[i]
    S1 = s1[u]
    if k == 0:  # spot
        return size[i] * (ratio[i] * S1 - price0[i])
    if k == 2:  # perpetual
        p1 = ratio[i] * S1
        f = funding[s, u] if funding.shape[0] > 0 else 0.0
        if inverse[i]:
            return (size[i] * (1.0 / price0[i] - 1.0 / p1) - size[i] / p1 * f) * S1
        return size[i] * (p1 - price0[i]) - size[i] * p1 * f
    # dated: forward at the end of the period
    t1 = tau1[i]
    lnf1 = lns1[u] + bt1[i]
    if basis.shape[0] > 0:
        db = basis[s, u] * t1
        lnf1 += db
        f1 = S1 * growth[i] * math.exp(db)
    else:
        f1 = S1 * growth[i]
    if k == 1:  # future
        if inverse[i]:
            return size[i] * (1.0 / price0[i] - 1.0 / f1) * S1
        return size[i] * (f1 - price0[i])
    # option
    vol = vol0[i]
    if vol_shift.shape[0] > 0:
        vol += vol_shift[s, bucket[i]]
    sg = sign[i]
    kk = strike[i]
    if t1 > 0.0 and vol > 0.0:
        sq = vol * sqtau1[i]
        d1 = (lnf1 - lnk[i]) / sq + 0.5 * sq
        d2 = d1 - sq
        v = disc1[i] * sg * (f1 * _ncdf(sg * d1) - kk * _ncdf(sg * d2))
    else:
        v = disc1[i] * max(sg * (f1 - kk), 0.0)
    if inverse[i]:
        return size[i] * (v / f1 - value0[i]) * S1
    return size[i] * (v - value0[i])


@njit(cache=True, parallel=True)
def _portfolio_kernel(qty, kind, inverse, und, bucket, size, strike, lnk, sign, tau1, sqtau1, bt1,
                      growth, disc1, vol0, price0, value0, ratio, lns0, log_ret, vol_shift, basis,
                      funding, ccy, block, out):
    n_s = log_ret.shape[0]
    n_u = lns0.shape[0]
    n_i = qty.shape[0]
    n_blocks = (n_s + block - 1) // block
    for b in prange(n_blocks):
        lo = b * block
        hi = min(lo + block, n_s)
        s1 = np.empty(n_u)
        lns1 = np.empty(n_u)
        for s in range(lo, hi):
            for u in range(n_u):
                lns1[u] = lns0[u] + log_ret[s, u]
                s1[u] = math.exp(lns1[u])
            acc = 0.0
            for i in range(n_i):  # fixed order: identical sums for any thread count
                acc += qty[i] * _unit_pnl(i, s, kind, inverse, und, bucket, size, strike, lnk,
                                          sign, tau1, sqtau1, bt1, growth, disc1, vol0, price0,
                                          value0, ratio, s1, lns1, vol_shift, basis, funding)
            out[s] = acc / s1[ccy] if ccy >= 0 else acc


@njit(cache=True, parallel=True)
def _unit_kernel(scen, kind, inverse, und, bucket, size, strike, lnk, sign, tau1, sqtau1, bt1,
                 growth, disc1, vol0, price0, value0, ratio, lns0, log_ret, vol_shift, basis,
                 funding, ccy, out):
    n_u = lns0.shape[0]
    n_i = kind.shape[0]
    for j in prange(scen.shape[0]):
        s = scen[j]
        s1 = np.empty(n_u)
        lns1 = np.empty(n_u)
        for u in range(n_u):
            lns1[u] = lns0[u] + log_ret[s, u]
            s1[u] = math.exp(lns1[u])
        for i in range(n_i):
            p = _unit_pnl(i, s, kind, inverse, und, bucket, size, strike, lnk, sign, tau1, sqtau1,
                          bt1, growth, disc1, vol0, price0, value0, ratio, s1, lns1, vol_shift,
                          basis, funding)
            out[i, j] = p / s1[ccy] if ccy >= 0 else p


_EMPTY = np.zeros((0, 0))


def _kernel_args(book: Book, scenarios: ScenarioSet, margin_currency: str) -> tuple:
    """Per-instrument constants of this margin period, and the scenario arrays in book order."""
    missing = [u for u in book.underlyings if u not in scenarios.underlyings]
    if missing:
        raise DataError(f"the scenario set has no log_return column for underlyings {missing} "
                        f"(it has {list(scenarios.underlyings)})", column="log_return")
    cols = np.array([scenarios.underlyings.index(u) for u in book.underlyings], dtype=np.int64)
    if margin_currency == "USD":
        ccy = -1
    elif margin_currency in book.underlyings:
        ccy = book.underlyings.index(margin_currency)
    else:
        raise ConfigError(f"margin_currency must be 'USD' or one of the book's underlyings "
                          f"{list(book.underlyings)}. Got {margin_currency!r} instead.")
    opt = book.kind == KIND_OPTION
    vs = scenarios.vol_shift
    if opt.any() and vs is not None and int(book.bucket[opt].max()) >= vs.shape[1]:
        raise DataError(f"an option names vol bucket {int(book.bucket[opt].max())} but vol_shift "
                        f"has {vs.shape[1]} columns", column="vol_shift")
    dated = (book.kind == KIND_FUTURE) | opt
    tau1 = np.where(dated, np.maximum(book.t_yr - scenarios.dt_yr, 0.0), 0.0)
    bt1 = book.basis_ann * tau1
    s0_i = book.spot[book.und]
    lnk = np.where(opt, np.log(np.where(opt, book.strike, 1.0)), 0.0)
    x = scenarios.log_return[:, cols]
    basis = _EMPTY if scenarios.basis_shift_ann is None else np.ascontiguousarray(
        scenarios.basis_shift_ann[:, cols])
    funding = _EMPTY if scenarios.funding is None else np.ascontiguousarray(scenarios.funding[:, cols])
    return (book.kind, book.inverse, book.und, book.bucket, book.size, book.strike, lnk,
            np.where(book.is_call, 1.0, -1.0), tau1, np.sqrt(tau1), bt1, np.exp(bt1),
            np.exp(-book.rate * tau1), book.vol, book.price, book.value, book.price / s0_i,
            np.log(book.spot), np.ascontiguousarray(x), _EMPTY if vs is None else vs, basis,
            funding, ccy)


def revalue(book: Book, scenarios: ScenarioSet, *, margin_currency: str = "USD",
            block: int = 64) -> NDArray[np.float64]:
    """Portfolio P&L per scenario: sum over instruments of quantity x P&L, full revaluation.

    Parameters
    ----------
    book : from :func:`build_book`.
    scenarios : the scenario set; it must have a column for each of the book's underlyings.
    margin_currency : "USD" or one of the book's underlyings (P&L in that coin).
    block : scenarios per parallel work item (results do not depend on it).

    Returns
    -------
    Array of shape (n_scenarios,), P&L in ``margin_currency``.
    """
    if not (isinstance(block, int) and block >= 1):
        raise ConfigError(f"The 'block' parameter of revalue must be an int >= 1. Got {block!r}.")
    args = _kernel_args(book, scenarios, margin_currency)
    out = np.empty(scenarios.n_scenarios)
    _portfolio_kernel(book.quantity, *args, block, out)
    return out


def position_pnl(book: Book, scenarios: ScenarioSet, scenario_idx: ArrayLike, *,
                 margin_currency: str = "USD") -> NDArray[np.float64]:
    """Per-position P&L for the scenarios asked for only (e.g. the tail scenarios).

    Returns
    -------
    Array of shape (n_positions, len(scenario_idx)), P&L in ``margin_currency``; rows sum to
    :func:`revalue`'s values at those scenarios (up to rounding).
    """
    idx = np.asarray(scenario_idx, dtype=np.int64).ravel()
    n = scenarios.n_scenarios
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise DataError(f"scenario_idx must lie in [0, {n}). Got values {idx.min()}..{idx.max()}.",
                        column="scenario_idx")
    idx = np.where(idx < 0, idx + n, idx)
    args = _kernel_args(book, scenarios, margin_currency)
    unit = np.empty((book.n_instruments, idx.size))
    _unit_kernel(idx, *args, unit)
    return book.position_quantity[:, None] * unit[book.position_index]


def revalue_scalar(book: Book, scenarios: ScenarioSet, s: int, *,
                   margin_currency: str = "USD") -> float:
    """Reference: the portfolio P&L in scenario ``s``, in pure Python with
    :func:`~margin.pricing.black76_scalar` (slow; for tests and the benchmark's baseline)."""
    cols = {u: scenarios.underlyings.index(u) for u in book.underlyings}
    s1 = {u: book.spot[k] * math.exp(scenarios.log_return[s, cols[u]])
          for k, u in enumerate(book.underlyings)}
    total = 0.0
    for i, inst in enumerate(book.instruments):
        u = inst.underlying
        S0, S1 = book.spot[book.und[i]], s1[u]
        p0, size = book.price[i], book.size[i]
        if isinstance(inst, Spot | Perpetual):
            p1 = p0 * S1 / S0
            f = 0.0 if scenarios.funding is None else scenarios.funding[s, cols[u]]
            if isinstance(inst, Spot):
                pnl = size * (p1 - p0)
            elif inst.inverse:
                pnl = (size * (1 / p0 - 1 / p1) - size / p1 * f) * S1
            else:
                pnl = size * (p1 - p0) - size * p1 * f
        else:
            tau1 = max(book.t_yr[i] - scenarios.dt_yr, 0.0)
            db = 0.0 if scenarios.basis_shift_ann is None else scenarios.basis_shift_ann[s, cols[u]]
            f1 = S1 * math.exp((book.basis_ann[i] + db) * tau1)
            if isinstance(inst, Future):
                pnl = size * ((1 / p0 - 1 / f1) * S1 if inst.inverse else f1 - p0)
            else:
                assert isinstance(inst, Option)
                dv = 0.0 if scenarios.vol_shift is None else scenarios.vol_shift[s, book.bucket[i]]
                vol1 = max(book.vol[i] + dv, 0.0)
                r = book.rate[i]
                v0 = black76_scalar(p0, inst.strike, book.t_yr[i], book.vol[i], inst.is_call, r,
                                    inverse=inst.inverse)
                v1 = black76_scalar(f1, inst.strike, tau1, vol1, inst.is_call, r,
                                    inverse=inst.inverse)
                pnl = size * (v1 - v0) * (S1 if inst.inverse else 1.0)
        total += book.quantity[i] * pnl
    if margin_currency != "USD":
        total /= s1[margin_currency]
    return total
