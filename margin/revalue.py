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
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic
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
    "ncdf",
    "instrument_pnl",
    "position_pnl",
    "revalue",
    "revalue_scalar",
]

KIND_SPOT, KIND_FUTURE, KIND_PERPETUAL, KIND_OPTION = 0, 1, 2, 3
_KINDS = {Spot: KIND_SPOT, Future: KIND_FUTURE, Perpetual: KIND_PERPETUAL, Option: KIND_OPTION}


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


def _as_float(x: object) -> float:
    """float(x), NaN for anything that is not a number (the caller's check then names it)."""
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _finite_pos(x: object, what: str, name: str) -> float:
    v = _as_float(x)
    if not (math.isfinite(v) and v > 0):
        shown = v if isinstance(x, int | float | np.number) else x
        raise DataError(f"{what} of {name!r} must be a finite number > 0. Got {shown!r} instead.",
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
        qf = _as_float(q)
        if not math.isfinite(qf):
            raise DataError(f"quantity of position {j} ({inst.name!r}) must be a finite number. "
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
            v = _as_float(mi.vol)
            if not (math.isfinite(v) and v >= 0):
                raise DataError(f"vol of option {inst.name!r} must be a finite number >= 0. "
                                f"Got {mi.vol!r} instead.", column="vol")
            if not (isinstance(mi.vol_bucket, int | np.integer) and mi.vol_bucket >= 0):
                raise DataError(f"vol_bucket of option {inst.name!r} must be an integer >= 0. "
                                f"Got {mi.vol_bucket!r} instead.", column="vol_bucket")
            if not math.isfinite(_as_float(mi.rate)):
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
# The inner loops run over the scenarios of a block for one instrument, branch-free, so LLVM
# vectorizes them (AVX2/AVX-512). That needs the exponential and the normal CDF without libm
# calls (``_exp``, ``ncdf`` below) and ``error_model="numpy"`` (no zero-division checks).


@intrinsic
def _bits_to_f64(typingctx, x):
    """Reinterpret an int64's bits as a float64 (LLVM bitcast)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # Cody-Waite split of ln 2 (Cephes exp.c)
_LN2_LO = 1.42860682030941723212e-6
_SQRTH = 0.7071067811865476


@njit(cache=True, inline="always", error_model="numpy")
def _exp(x: float) -> float:
    """exp(x) (2 ulp) for x in [-708, 709], x clamped to that range: x = n ln2 + r,
    |r| <= ln2/2, degree-12 Taylor in r, 2^n from the exponent bits. Vectorizable (no libm)."""
    x = min(max(x, -708.0), 709.0)
    nf = math.floor(x * _LOG2E + 0.5)
    r = x - nf * _LN2_HI - nf * _LN2_LO
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _bits_to_f64((np.int64(nf) + 1023) << 52)


@njit(cache=True, inline="always", error_model="numpy")
def ncdf(a: float) -> float:
    """Standard normal CDF, branch-free and vectorizable (the kernel's; the benchmark's floor
    uses it too). Cephes ``ndtr``'s rational approximations (S. L. Moshier; the algorithm of
    scipy.special.ndtr): erf by T/U for |a| < sqrt 2, else erfc by P/Q times exp(-a^2/2), both
    computed and blended. Cephes switches to a third fit (R/S) beyond |a| = 8 sqrt 2, where the
    tail is below 1e-29; P/Q is kept there (absolute error still ~1e-16: the kernel needs
    absolute, not tail-relative, accuracy). Tested against scipy: absolute error <= 3e-16, and
    relative 5e-15 down to a = -11."""
    x = a * _SQRTH
    z = abs(x)
    zz = z * z
    t = 9.60497373987051638749e0
    t = t * zz + 9.00260197203842689217e1
    t = t * zz + 2.23200534594684319226e3
    t = t * zz + 7.00332514112805075473e3
    t = t * zz + 5.55923013010394962768e4
    u = zz + 3.35617141647503099647e1
    u = u * zz + 5.21357949780152679795e2
    u = u * zz + 4.59432382970980127987e3
    u = u * zz + 2.26290000613890934246e4
    u = u * zz + 4.92673942608635921086e4
    p = 2.46196981473530512524e-10
    p = p * z + 5.64189564831068821977e-1
    p = p * z + 7.46321056442269912687e0
    p = p * z + 4.86371970985681366614e1
    p = p * z + 1.96520832956077098242e2
    p = p * z + 5.26445194995477358631e2
    p = p * z + 9.34528527171957607540e2
    p = p * z + 1.02755188689515710272e3
    p = p * z + 5.57535335369399327526e2
    q = z + 1.32281951154744992508e1
    q = q * z + 8.67072140885989742329e1
    q = q * z + 3.54937778887819891062e2
    q = q * z + 9.75708501743205489753e2
    q = q * z + 1.82390916687909736289e3
    q = q * z + 2.24633760818710981792e3
    q = q * z + 1.65666309194161350182e3
    q = q * z + 5.57535340817727675546e2
    wc = (z < 1.0) * 1.0  # erf branch
    ratio = (x * t * wc + p * (1.0 - wc)) / (u * wc + q * (1.0 - wc))
    tail = 0.5 * _exp(-zz) * ratio  # 0.5 erfc(z); exp clamps at exp(-708)
    wp = (x > 0.0) * 1.0
    tail = tail * (1.0 - wp) + (1.0 - tail) * wp
    return (0.5 + 0.5 * ratio) * wc + tail * (1.0 - wc)


@njit(cache=True, nogil=True, error_model="numpy")
def _fill(rows, s0, lns0, log_ret, vol_shift, basis, funding, lns1, s1, vs, bs, fu):
    """The block's scenario inputs, one row per underlying (bucket), one column per scenario."""
    has_vs, has_b, has_f = vol_shift.shape[0] > 0, basis.shape[0] > 0, funding.shape[0] > 0
    for j in range(rows.shape[0]):
        s = rows[j]
        for u in range(s0.shape[0]):
            lns1[u, j] = lns0[u] + log_ret[s, u]
            s1[u, j] = s0[u] * math.exp(log_ret[s, u])
            bs[u, j] = basis[s, u] if has_b else 0.0
            fu[u, j] = funding[s, u] if has_f else 0.0
        for k in range(vs.shape[0]):
            vs[k, j] = vol_shift[s, k] if has_vs else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _inst_row(i, kind, inverse, und, bucket, size, strike, lnk, sign, tau1, sqtau1, bt1, disc1,
              vol0, price0, value0, ratio, lns1, s1, vs, bs, fu, tmp, fwd):
    """tmp[j] = USD P&L of one contract of instrument i in the block's scenario j (fwd: scratch
    for the options' forwards)."""
    nb = tmp.shape[0]
    u = und[i]
    k = kind[i]
    sz = size[i]
    p0 = price0[i]
    srow, lrow, brow, frow = s1[u], lns1[u], bs[u], fu[u]
    if k == 0:  # spot
        m = ratio[i]
        for j in range(nb):
            tmp[j] = sz * (m * srow[j] - p0)
    elif k == 2:  # perpetual: premium to the index kept, funding paid by longs
        m = ratio[i]
        if inverse[i]:
            for j in range(nb):
                p1 = m * srow[j]
                tmp[j] = (sz * (1.0 / p0 - 1.0 / p1) - sz / p1 * frow[j]) * srow[j]
        else:
            for j in range(nb):
                p1 = m * srow[j]
                tmp[j] = sz * (p1 - p0) - sz * p1 * frow[j]
    elif k == 1:  # future
        t1, b = tau1[i], bt1[i]
        if inverse[i]:
            for j in range(nb):
                f1 = _exp(lrow[j] + b + brow[j] * t1)
                tmp[j] = sz * (1.0 / p0 - 1.0 / f1) * srow[j]
        else:
            for j in range(nb):
                tmp[j] = sz * (_exp(lrow[j] + b + brow[j] * t1) - p0)
    else:  # option, Black-76 on the forward at the end of the period
        t1, b, sg, kk, lk = tau1[i], bt1[i], sign[i], strike[i], lnk[i]
        sqt, d, v0, val0 = sqtau1[i], disc1[i], vol0[i], value0[i]
        vrow = vs[bucket[i]]
        inv = inverse[i]
        for j in range(nb):
            lnf = lrow[j] + b + brow[j] * t1
            f1 = _exp(lnf)
            fwd[j] = f1
            sq = max(v0 + vrow[j], 0.0) * sqt
            wl = (sq > 0.0) * 1.0  # alive (time and vol left); else intrinsic
            sqs = sq + (1.0 - wl)
            d1 = (lnf - lk) / sqs + 0.5 * sqs
            d2 = d1 - sqs
            live = sg * (f1 * ncdf(sg * d1) - kk * ncdf(sg * d2))
            v = d * (live * wl + max(sg * (f1 - kk), 0.0) * (1.0 - wl))
            tmp[j] = v
        if inv:
            for j in range(nb):
                tmp[j] = sz * (tmp[j] / fwd[j] - val0) * srow[j]
        else:
            for j in range(nb):
                tmp[j] = sz * (tmp[j] - val0)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _portfolio_kernel(qty, kind, inverse, und, bucket, size, strike, lnk, sign, tau1, sqtau1, bt1,
                      disc1, vol0, price0, value0, ratio, s0, lns0, n_buckets, log_ret, vol_shift,
                      basis, funding, ccy, block, out):
    n_s = log_ret.shape[0]
    n_u = s0.shape[0]
    n_blocks = (n_s + block - 1) // block
    for bi in prange(n_blocks):
        lo = bi * block
        hi = min(lo + block, n_s)
        nb = hi - lo
        rows = np.arange(lo, hi)
        lns1, s1 = np.empty((n_u, nb)), np.empty((n_u, nb))
        bs, fu = np.empty((n_u, nb)), np.empty((n_u, nb))
        vs = np.empty((n_buckets, nb))
        _fill(rows, s0, lns0, log_ret, vol_shift, basis, funding, lns1, s1, vs, bs, fu)
        tmp, fwd = np.empty(nb), np.empty(nb)
        acc = np.zeros(nb)
        for i in range(qty.shape[0]):  # fixed order: identical sums for any thread count
            q = qty[i]
            if q == 0.0:
                continue
            _inst_row(i, kind, inverse, und, bucket, size, strike, lnk, sign, tau1, sqtau1, bt1,
                      disc1, vol0, price0, value0, ratio, lns1, s1, vs, bs, fu, tmp, fwd)
            for j in range(nb):
                acc[j] += q * tmp[j]
        for j in range(nb):
            out[lo + j] = acc[j] / s1[ccy, j] if ccy >= 0 else acc[j]


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def _unit_kernel(scen, kind, inverse, und, bucket, size, strike, lnk, sign, tau1, sqtau1, bt1,
                 disc1, vol0, price0, value0, ratio, s0, lns0, n_buckets, log_ret, vol_shift,
                 basis, funding, ccy, block, out):
    n_s = scen.shape[0]
    n_u = s0.shape[0]
    n_blocks = (n_s + block - 1) // block
    for bi in prange(n_blocks):
        lo = bi * block
        hi = min(lo + block, n_s)
        nb = hi - lo
        lns1, s1 = np.empty((n_u, nb)), np.empty((n_u, nb))
        bs, fu = np.empty((n_u, nb)), np.empty((n_u, nb))
        vs = np.empty((n_buckets, nb))
        _fill(scen[lo:hi], s0, lns0, log_ret, vol_shift, basis, funding, lns1, s1, vs, bs, fu)
        tmp, fwd = np.empty(nb), np.empty(nb)
        for i in range(kind.shape[0]):
            _inst_row(i, kind, inverse, und, bucket, size, strike, lnk, sign, tau1, sqtau1, bt1,
                      disc1, vol0, price0, value0, ratio, lns1, s1, vs, bs, fu, tmp, fwd)
            for j in range(nb):
                out[i, lo + j] = tmp[j] / s1[ccy, j] if ccy >= 0 else tmp[j]


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
    n_buckets = max(int(book.bucket.max(initial=0)) + 1, 1 if vs is None else vs.shape[1])
    return (book.kind, book.inverse, book.und, book.bucket, book.size, book.strike, lnk,
            np.where(book.is_call, 1.0, -1.0), tau1, np.sqrt(tau1), bt1,
            np.exp(-book.rate * tau1), book.vol, book.price, book.value, book.price / s0_i,
            book.spot, np.log(book.spot), n_buckets, np.ascontiguousarray(x),
            _EMPTY if vs is None else vs, basis, funding, ccy)


def revalue(book: Book, scenarios: ScenarioSet, *, margin_currency: str = "USD",
            block: int = 256) -> NDArray[np.float64]:
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
    _unit_kernel(idx, *args, 64, unit)
    return book.position_quantity[:, None] * unit[book.position_index]


def instrument_pnl(book: Book, scenarios: ScenarioSet, *, margin_currency: str = "USD",
                   out: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    """P&L of one contract of each distinct instrument in every scenario.

    Returns
    -------
    Array of shape (n_instruments, n_scenarios) in ``margin_currency`` (written into ``out``
    when given: a C-contiguous float64 array of that shape, e.g. rows of a larger buffer).
    """
    shape = (book.n_instruments, scenarios.n_scenarios)
    if out is None:
        out = np.empty(shape)
    elif out.shape != shape or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise DataError(f"out must be a C-contiguous float64 array of shape {shape}. Got "
                        f"{out.shape} {out.dtype} instead.", column="out")
    args = _kernel_args(book, scenarios, margin_currency)
    _unit_kernel(np.arange(scenarios.n_scenarios, dtype=np.int64), *args, 64, out)
    return out


def revalue_scalar(book: Book, scenarios: ScenarioSet, s: int, *,
                   margin_currency: str = "USD") -> float:
    """Reference: the portfolio P&L in scenario ``s``, in pure Python with
    :func:`~margin.pricing.black76_scalar` (slow; for tests and the benchmark's baseline)."""
    _kernel_args(book, scenarios, margin_currency)  # the same checks as the kernel
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
