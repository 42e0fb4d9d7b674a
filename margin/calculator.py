"""The margin engine: ``compute_margin(portfolio, market_state, bundle, params) -> MarginResult``.

A pure function (no I/O, no clock, no MLflow, no Prefect): the same inputs give the same bytes
(:meth:`MarginResult.to_json`). The recomputation path:

1. **Inputs per position** from the market state (spot/index, perpetual mark, future's mark or
   forward, option forward + smile vol + rate); a position that cannot be priced, or whose
   underlying has no forecast in the bundle, becomes a :class:`~features.errors.Failure` and the
   rest of the book still computes. The portfolio's row failures are carried along.
2. **Scenarios** (:mod:`margin.scenarios`) over the book's MPOR (the longest of the product kinds
   it holds, ``params.mpor_days``): FHS and Monte Carlo scaled by the forecast vols, the same draws
   scaled by stressed vols, Monte Carlo under each correlation matrix, the stress grid.
3. **Full revaluation** of every distinct instrument (one contract) in every scenario through
   :func:`margin.revalue.position_pnl`, in USD, converted to the margin currency at the scenario's
   price. Each option gets its own vol-shift column (its implied-vol dynamics). Instruments are
   kept in name order and positions in (instrument, id) order, so permuting a portfolio's
   positions changes no bit.
4. **The chain** (confidence ``c`` of ``params.measure``; ``rho`` = ES or VaR on a pooled set):

   ========================  ==========================================================
   market_risk   R           rho(forecast pool: FHS + MC under the forecast matrix)
   stress_blend  B - R       B = x R + (1 - x) rho(stressed pool)
   correlation   C - B       C = max(B, rho(pool under each matrix), R + alpha (sum_u R_u - R));
                             R_u = rho of underlying u's positions alone on the forecast pool
   grid_floor    G - C       G = max(C, grid_floor_share x worst grid loss, 0)
                             (G = 0: every component is 0; the chain's measures stay in
                             ``explain``)
   liquidity     L           close-out cost of the net delta and net vega (margin.addons)
   concentration             convex charge on net size beyond a share of capacity
   short_option_minimum      max(0, floor on net short options - everything above)
   apc                       0 (filled by the anti-procyclicality step)
   ========================  ==========================================================

   IM = the sum of the components. MM: ``IM / im_over_mm`` ("ratio") or the same chain at
   ``mm_confidence`` ("confidence").
5. **Attribution**: every step is an Euler allocation on the scenario set that binds (ES: each
   position's mean loss over the tail scenarios; VaR: its loss in the VaR scenario; the grid: its
   loss in the worst grid scenario; the cap: ``(1 - alpha) e_R + alpha e_{R_u}``), so per-position
   contributions sum to each component and to the total (to rounding); per underlying is the sum
   over its positions.

:func:`what_if` adds one trade and reuses the day's scenarios and cached per-instrument P&L
vectors (a new instrument is revalued alone): the result equals a full recompute.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from numba import njit, prange
from numpy.typing import NDArray

from features.errors import ConfigError, DataError, Failure, FailureReason, ModelError
from margin.addons import AddOnInputs, AddOns, UnderlyingLiquidity, compute_addons
from margin.instruments import Future, Instrument, Option, Perpetual, Spot
from margin.market_state import MarketState
from margin.measures import TailMeasure, measure
from margin.params import MarginParams
from margin.portfolio import Portfolio, Position
from margin.revalue import MarketInputs, ScenarioSet, build_book, instrument_pnl
from margin.scenarios import (
    Scenarios,
    build_scenarios,
    bundle_symbol,
    option_vol_shifts,
    tenor_factor,
)
from models.forecast import RiskForecastBundle

__all__ = [
    "COMPONENTS",
    "MarginContext",
    "MarginResult",
    "PricedInstrument",
    "WhatIf",
    "compute_margin",
    "pool_pnl",
    "prepare",
    "recompute",
    "result_frame",
    "what_if",
]

COMPONENTS = ("market_risk", "stress_blend", "correlation_stress", "grid_floor", "liquidity",
              "concentration", "short_option_minimum", "apc")
"""The IM components, in the order they are applied; they sum to the IM."""

_N_WORST = 5
_SMILE_EPS = 0.02


def _kind(inst: Instrument) -> str:
    return {Spot: "spot", Perpetual: "perpetual", Future: "future", Option: "option"}.get(
        type(inst), type(inst).__name__.lower())


@dataclass(frozen=True)
class PricedInstrument:
    """An instrument's valuation inputs at ``as_of`` (``inputs``: price or forward, vol, rate),
    its underlying's spot/index ``spot``, and for an option its smile at the strike (``vol0``, the
    slope and curvature in log-moneyness, central differences at +/- 2%) and days to expiry."""

    inputs: MarketInputs
    spot: float
    vol0: float = 0.0
    slope: float = 0.0
    curvature: float = 0.0
    dte_days: float = 0.0


def _price(inst: Instrument, ms: MarketState, bundle: RiskForecastBundle,
           subject: str, forwards: dict[tuple[str, pd.Timestamp], Any] | None = None
           ) -> PricedInstrument | Failure:
    """Inputs of one instrument at ``ms.as_of``, or why there are none."""
    u = inst.underlying
    sym = bundle_symbol(u)
    if sym not in bundle.symbols:
        return Failure(FailureReason.MISSING_INPUTS, subject,
                       f"no forecast for {u} (bundle symbol {sym!r}) in bundle "
                       f"{bundle.bundle_id[:12]}; it has {list(bundle.symbols)}",
                       {"field": "underlying", "value": u})
    st = ms.underlying(u)
    if isinstance(st, Failure):
        return replace(st, subject=subject)
    ref = st.reference
    if ref is None:
        return Failure(FailureReason.MISSING_PRICE, subject, f"no spot/index price for {u} at "
                       f"{ms.as_of}", {"field": "spot"})
    s0 = float(ref.value)
    if isinstance(inst, Option):
        key = (u, inst.expiry)
        fw = forwards.get(key) if forwards is not None else None
        if fw is None:
            fw = ms.forward(u, inst.expiry)
            if forwards is not None:
                forwards[key] = fw
        if isinstance(fw, Failure):
            return replace(fw, subject=subject)
        if st.vol_surface is None:
            return Failure(FailureReason.MISSING_INPUTS, subject, f"no vol surface for {u} at "
                           f"{ms.as_of}", {"field": "vol_surface"})
        if st.rate is None:
            return Failure(FailureReason.MISSING_INPUTS, subject, f"no interest rate for {u} at "
                           f"{ms.as_of}", {"field": "rate"})
        k = np.array([inst.strike * math.exp(-_SMILE_EPS), inst.strike,
                      inst.strike * math.exp(_SMILE_EPS)])
        v = np.asarray(st.vol_surface.implied_vol(k, inst.expiry), dtype=np.float64).reshape(-1)
        if v.size != 3 or not (np.isfinite(v).all() and (v > 0).all()):
            return Failure(FailureReason.NON_FINITE, subject, f"the vol surface gives {v.tolist()} "
                           f"around strike {inst.strike}", {"field": "vol"})
        slope = float((v[2] - v[0]) / (2 * _SMILE_EPS))
        curv = float((v[2] - 2 * v[1] + v[0]) / _SMILE_EPS**2)
        dte = (inst.expiry - ms.as_of).total_seconds() / 86400.0
        return PricedInstrument(MarketInputs(float(fw.value), float(v[1]), 0, float(st.rate.value)), s0,
                       float(v[1]), slope, curv, dte)
    q = ms.price(inst)
    if isinstance(q, Failure):
        return replace(q, subject=subject)
    p = float(q.value)
    if not (math.isfinite(p) and p > 0):
        return Failure(FailureReason.INVALID_VALUE, subject, f"price {p!r} of {inst.name} is not a "
                       "finite number > 0", {"field": "price", "value": p})
    if isinstance(inst, (Future,)) and inst.expiry <= ms.as_of:
        return Failure(FailureReason.EXPIRED, subject, f"{inst.name} expired at {inst.expiry}",
                       {"field": "expiry"})
    if isinstance(inst, Spot) and inst.inverse:
        return Failure(FailureReason.UNSUPPORTED_INSTRUMENT, subject, "inverse spot")
    if not isinstance(inst, (Spot, Perpetual, Future)):
        return Failure(FailureReason.UNSUPPORTED_INSTRUMENT, subject,
                       f"{type(inst).__name__} is not supported by the revaluation kernel")
    return PricedInstrument(MarketInputs(p), s0)


@njit(cache=True, parallel=True, nogil=True)
def _combine_kernel(weights, unit, lo, hi, out):
    block = 512
    n_blocks = (hi - lo + block - 1) // block
    for b in prange(n_blocks):  # scenario blocks; each sum in instrument order (thread-count free)
        a = lo + b * block
        z = min(a + block, hi)
        for k in range(weights.shape[0]):
            for i in range(weights.shape[1]):
                w = weights[k, i]
                if w == 0.0:
                    continue
                for s in range(a, z):
                    out[k, s - lo] += w * unit[i, s]


def _combine(weights: NDArray[np.float64], unit: NDArray[np.float64],
             cols: slice | NDArray[np.int64] | None = None) -> NDArray[np.float64]:
    """``weights @ unit[:, cols]`` (weights of shape (k, n_instruments)) summed in row order
    (numba threads over scenario blocks, not BLAS): the same bits on any machine and thread
    count (BLAS threads also stall on a shared machine)."""
    if cols is not None and not isinstance(cols, slice):
        unit, cols = np.ascontiguousarray(unit[:, cols]), None
    lo, hi = (0, unit.shape[1]) if cols is None else (cols.start, cols.stop)
    out = np.zeros((weights.shape[0], hi - lo))
    _combine_kernel(np.ascontiguousarray(weights), unit, lo, hi, out)
    return out


# ---- the context (the warm cache) -----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MarginContext:
    """The day's scenarios and per-instrument P&L vectors for one (market state, bundle, params,
    margin currency, underlyings, MPOR): what :func:`what_if` and a warm recompute reuse.

    Attributes
    ----------
    market_state, bundle, params : the inputs.
    margin_currency : "USD" or a coin.
    scenarios : :class:`margin.scenarios.Scenarios`.
    order : names of the scenario sets in the concatenated P&L vectors; ``offsets`` their start.
    index : instrument name -> its row of :attr:`unit` (P&L of one contract in every scenario,
        margin currency); ``priced`` its inputs; ``greeks`` its (delta, vega) per contract in USD
        (per unit log return of its underlying, per unit of implied vol), by central differences
        of the same revaluation kernel (the add-ons' exposures).
    """

    market_state: MarketState
    bundle: RiskForecastBundle
    params: MarginParams
    margin_currency: str
    scenarios: Scenarios
    order: tuple[str, ...]
    offsets: Mapping[str, tuple[int, int]]
    index: dict[str, int] = field(default_factory=dict)
    priced: dict[str, PricedInstrument] = field(default_factory=dict)
    greeks: dict[str, tuple[float, float]] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict, repr=False)
    _store: list[NDArray[np.float64]] = field(default_factory=list, repr=False)
    _stack: list[Any] = field(default_factory=list, repr=False)

    @property
    def n_total(self) -> int:
        """Scenarios in all sets together (the length of every P&L vector)."""
        return self.offsets[self.order[-1]][1]

    @property
    def unit(self) -> NDArray[np.float64]:
        """Array of shape (n_instruments_cached, n_total): row ``index[name]`` is the P&L of one
        contract of that instrument in every scenario (a view; do not write to it)."""
        if not self._store:
            return np.zeros((0, self.n_total))
        return self._store[0][:len(self.index)]

    def add(self, instruments: Sequence[Instrument]) -> dict[str, Failure]:
        """Revalue the instruments not yet cached (one kernel call for all, written straight into
        the cache); returns a failure per instrument whose revaluation is not finite or that the
        kernel rejects."""
        new = [i for i in instruments if i.name not in self.index]
        if not new:
            return {}
        fails: dict[str, Failure] = {}
        n0 = len(self.index)
        out = self._reserve(len(new))
        ok = np.ones(len(new), dtype=bool)
        try:
            self._revalue(new, out)
        except DataError:  # isolate the instrument the kernel rejects
            for k, inst in enumerate(new):
                try:
                    self._revalue([inst], out[k:k + 1])
                except DataError as exc:
                    fails[inst.name] = Failure(FailureReason.INVALID_VALUE, inst.name, str(exc))
                    ok[k] = False
        finite = np.isfinite(out).all(axis=1)
        for k, inst in enumerate(new):
            if ok[k] and not finite[k]:
                fails[inst.name] = Failure(FailureReason.NON_FINITE, inst.name,
                                           "revaluation gave a non-finite P&L in some scenario")
                ok[k] = False
        keep = np.flatnonzero(ok)
        if len(keep) < len(new):
            out[:len(keep)] = out[keep]
        for r, k in enumerate(keep.tolist()):
            self.index[new[k].name] = n0 + r
        kept = [new[k] for k in keep.tolist()]
        if kept:
            self.greeks.update(self._greeks(kept))
        return fails

    def _reserve(self, k: int) -> NDArray[np.float64]:
        """Rows n..n+k of the cache buffer (grown geometrically), C-contiguous, to write into."""
        n = len(self.index)
        buf = self._store[0] if self._store else np.zeros((0, self.n_total))
        if n + k > buf.shape[0]:
            bigger = np.empty((max(n + k + 8, 2 * n), self.n_total))
            bigger[:n] = buf[:n]
            self._store[:] = [bigger]
            buf = bigger
        return buf[n:n + k]

    def _revalue(self, insts: Sequence[Instrument], out: NDArray[np.float64]) -> None:
        """P&L of one contract of each instrument in every scenario, written into ``out`` (rows of
        shape (n_instruments, n_total)): one kernel call over all sets stacked."""
        sc, p = self.scenarios, self.params
        opts = [i for i in insts if isinstance(i, Option)]
        bucket = {o.name: b for b, o in enumerate(opts)}
        inputs = {}
        for inst in insts:
            pr = self.priced[inst.name]
            inputs[inst.name] = (replace(pr.inputs, vol_bucket=bucket[inst.name])
                                 if inst.name in bucket else pr.inputs)
        spot = {u: self.priced_spot(u) for u in {i.underlying for i in insts}}
        book = build_book([(i, 1.0) for i in insts], inputs, spot, self.market_state.as_of)
        x, shock, basis, funding, div = self.stacked
        vs = None
        if opts:
            pr = [self.priced[o.name] for o in opts]
            und = np.array([sc.underlyings.index(o.underlying) for o in opts], dtype=np.int64)
            fac = np.array([tenor_factor(sc.vol_of_vol[u], q.dte_days, p.iv_fallback_tenor_days)
                            for u, q in zip(und.tolist(), pr, strict=True)])
            vs = option_vol_shifts(x, shock, und, np.array([q.vol0 for q in pr]),
                                   np.array([q.slope for q in pr]),
                                   np.array([q.curvature for q in pr]), sc.beta, fac,
                                   p.iv_dynamics, p.iv_floor)
        ss = ScenarioSet(sc.underlyings, x, sc.dt_yr, vs, basis, funding)
        instrument_pnl(book, ss, out=out)
        if div is not None:
            out /= div

    def _greeks(self, insts: Sequence[Instrument]) -> dict[str, tuple[float, float]]:
        """Delta and vega of one contract of each instrument (USD): central differences of the
        revaluation kernel at time 0 (log return +/- 1e-4 on every underlying; implied vol +/- 1e-4
        on every option), so every product kind (inverse too) gets the kernel's own numbers."""
        eps = 1e-4
        opts = [i for i in insts if isinstance(i, Option)]
        bucket = {o.name: b for b, o in enumerate(opts)}
        inputs = {i.name: (replace(self.priced[i.name].inputs, vol_bucket=bucket[i.name])
                           if i.name in bucket else self.priced[i.name].inputs) for i in insts}
        unds = sorted({i.underlying for i in insts})
        spot = {u: self.priced_spot(u) for u in unds}
        book = build_book([(i, 1.0) for i in insts], inputs, spot, self.market_state.as_of)
        x = np.zeros((4, len(unds)))
        x[0], x[1] = eps, -eps
        vs = np.zeros((4, max(len(opts), 1)))
        vs[2], vs[3] = eps, -eps
        pnl = instrument_pnl(book, ScenarioSet(tuple(unds), x, 0.0, vs if opts else None))
        delta = (pnl[:, 0] - pnl[:, 1]) / (2 * eps)
        vega = (pnl[:, 2] - pnl[:, 3]) / (2 * eps)
        return {i.name: (float(delta[k]), float(vega[k]) if i.name in bucket else 0.0)
                for k, i in enumerate(insts)}

    @property
    def stacked(self) -> tuple[NDArray[np.float64], ...]:
        """Every set's factors stacked in :attr:`order` (log return, IV shock, basis, funding) and
        the margin currency's scenario price (None for USD)."""
        if not self._stack:
            sets = [self.scenarios.sets[n] for n in self.order]
            x = np.ascontiguousarray(np.vstack([f.log_return for f in sets]))
            out = [x, np.vstack([f.iv_log_shock for f in sets]),
                   np.vstack([f.basis_shift_ann for f in sets]),
                   np.vstack([f.funding for f in sets])]
            div = None
            if self.margin_currency != "USD":
                j = self.scenarios.underlyings.index(self.margin_currency)
                div = (self.priced_spot(self.margin_currency) * np.exp(x[:, j]))[None, :]
            self._stack.extend([*out, div])
        return tuple(self._stack)

    def priced_spot(self, underlying: str) -> float:
        """The spot/index price S0 of an underlying (the reference the scenarios move)."""
        st = self.market_state.underlying(underlying)
        if isinstance(st, Failure) or st.reference is None:
            raise DataError(f"no spot/index price for {underlying}", column="spot")
        return float(st.reference.value)


def prepare(market_state: MarketState, bundle: RiskForecastBundle, params: MarginParams,
            underlyings: Sequence[str], mpor_days: int, margin_currency: str = "USD"
            ) -> MarginContext:
    """The day's scenarios for these underlyings and MPOR, with an empty instrument cache."""
    unds = set(underlyings) | ({margin_currency} if margin_currency != "USD" else set())
    carry = {}
    for u in unds:
        st = market_state.underlying(u)
        if not isinstance(st, Failure) and st.funding is not None:
            carry[u] = float(st.funding.carry_ann)
    sc = build_scenarios(sorted(unds), bundle, params, mpor_days, as_of=market_state.as_of,
                         funding_carry_ann=carry)
    order = tuple(sc.sets)
    offsets, lo = {}, 0
    for name in order:
        offsets[name] = (lo, lo + sc.sets[name].n)
        lo += sc.sets[name].n
    return MarginContext(market_state, bundle, params, margin_currency, sc, order, offsets)


# ---- the result -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MarginResult:
    """A margin requirement with everything needed to recompute it (see the module docstring).

    Attributes
    ----------
    portfolio : the portfolio's name; ``margin_currency`` the unit of every amount.
    as_of : the market state's time (ISO string).
    im, mm : initial and maintenance margin (>= 0).
    components : :data:`COMPONENTS` -> amount (sums to ``im``); ``mm_components`` likewise for MM.
    measures : the reported measures: ES and VaR of the forecast pool, the stressed pool, each
        correlation matrix, the standalone per-underlying measures and the worst grid loss.
    by_position : position id -> {component: contribution, "total": ...} (sums to the totals).
    by_underlying : underlying -> {component: contribution, "total": ...}.
    worst_scenarios : the forecast pool's worst scenarios (label, portfolio P&L).
    failures : per-position failures (the portfolio's rows and the positions that could not be
        priced or revalued).
    bundle_id, model_versions : the bundle and the models behind it; ``params_hash`` the
        parameters'.
    explain : intermediates (scale factors per underlying, quantile positions, per-position P&L
        in the worst scenarios, notes).
    """

    portfolio: str
    margin_currency: str
    as_of: str
    im: float
    mm: float
    components: Mapping[str, float]
    mm_components: Mapping[str, float]
    measures: Mapping[str, Any]
    by_position: Mapping[str, Mapping[str, float]]
    by_underlying: Mapping[str, Mapping[str, float]]
    worst_scenarios: tuple[Mapping[str, Any], ...]
    failures: tuple[Failure, ...]
    bundle_id: str
    model_versions: Mapping[str, str]
    params_hash: str
    explain: Mapping[str, Any]
    context: MarginContext | None = field(default=None, repr=False, compare=False)
    positions: tuple[Position, ...] = field(default=(), repr=False, compare=False)
    cache: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field except the caches (``context``, ``positions``,
        ``cache``)."""
        return {
            "portfolio": self.portfolio, "margin_currency": self.margin_currency,
            "as_of": self.as_of, "im": self.im, "mm": self.mm,
            "components": dict(self.components), "mm_components": dict(self.mm_components),
            "measures": self.measures, "by_position": {k: dict(v) for k, v in self.by_position.items()},
            "by_underlying": {k: dict(v) for k, v in self.by_underlying.items()},
            "worst_scenarios": list(self.worst_scenarios),
            "failures": [f.to_dict() for f in self.failures],
            "bundle_id": self.bundle_id, "model_versions": dict(self.model_versions),
            "params_hash": self.params_hash, "explain": self.explain,
        }

    def to_json(self) -> str:
        """Deterministic JSON (sorted keys, shortest round-trip floats): same inputs, same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False,
                          default=str)


# ---- the chain --------------------------------------------------------------------------------


@dataclass
class _Book:
    """Positions that priced, in canonical (instrument, id) order, and the portfolio P&L."""

    positions: list[Position]
    und: NDArray[np.object_]  # underlying per position
    row: NDArray[np.int64]  # row of ctx.unit per position
    q: NDArray[np.float64]  # quantity per position
    unit: NDArray[np.float64]  # ctx.unit
    total: NDArray[np.float64]  # (n_total,) portfolio P&L

    def rows(self, cols: NDArray[np.int64] | slice, mask: NDArray[np.bool_] | None = None
             ) -> NDArray[np.float64]:
        """Per-position P&L in the given scenarios, array of shape (n_positions, n_cols)."""
        r, q = (self.row, self.q) if mask is None else (self.row[mask], self.q[mask])
        if isinstance(cols, slice):
            return q[:, None] * self.unit[r, cols]
        return q[:, None] * self.unit[np.ix_(r, cols)]


def _pool(ctx: MarginContext, names: Sequence[str]) -> NDArray[np.int64] | slice:
    spans = [ctx.offsets[n] for n in names]
    if all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)):
        return slice(spans[0][0], spans[-1][1])
    return np.concatenate([np.arange(*sp) for sp in spans])


def _cols(cols: NDArray[np.int64] | slice, idx: NDArray[np.int64]) -> NDArray[np.int64]:
    """Global scenario columns of positions ``idx`` within a pool."""
    return (cols.start + idx) if isinstance(cols, slice) else cols[idx]


def _standalone(ctx: MarginContext, bk: _Book) -> dict[str, NDArray[np.float64]]:
    """Each underlying's positions alone on the forecast pool: P&L vectors per underlying."""
    fc = _pool(ctx, ctx.scenarios.pools["forecast"])
    unds = sorted(set(bk.und.tolist()))
    ui = {u: k for k, u in enumerate(unds)}
    qm = np.zeros((len(unds), bk.unit.shape[0]))
    for u_, r_, q_ in zip(bk.und.tolist(), bk.row.tolist(), bk.q.tolist(), strict=True):
        qm[ui[u_], r_] += q_
    vecs = _combine(qm, bk.unit, fc)
    return {u: vecs[ui[u]] for u in unds}


def _chain(ctx: MarginContext, bk: _Book, confidence: float,
           vecs: Mapping[str, NDArray[np.float64]]) -> dict[str, Any]:
    """The component chain at one confidence, with each step's allocation per position (a book
    without positions gives the values only: the what-if fast path); ``vecs`` from
    :func:`_standalone`."""
    p = ctx.params
    kind = p.measure
    pools = ctx.scenarios.pools
    n_pos = len(bk.positions)

    def rho(cols: NDArray[np.int64] | slice) -> tuple[TailMeasure, NDArray[np.float64]]:
        tm = measure(bk.total[cols], confidence, kind)
        return tm, -bk.rows(_cols(cols, tm.scenarios)).mean(axis=1)

    fc = _pool(ctx, pools["forecast"])
    r_tm, e_r = rho(fc)
    s_tm, e_s = rho(_pool(ctx, pools["stressed"]))
    x = p.blend_x
    blend = x * r_tm.value + (1 - x) * s_tm.value
    e_b = x * e_r + (1 - x) * e_s
    # correlation stress: each matrix, and the correlation-break cap
    corr_vals: dict[str, float] = {}
    best, e_c, binding = blend, e_b, "blend"
    for key in sorted(k for k in pools if k.startswith("corr:")):
        tm, e = rho(_pool(ctx, pools[key]))
        corr_vals[key.split(":", 1)[1]] = tm.value
        if tm.value > best:
            best, e_c, binding = tm.value, e, key
    stand: dict[str, float] = {}
    e_u = np.zeros(n_pos)
    for u in sorted(vecs):
        mask = bk.und == u
        tm = measure(vecs[u], confidence, kind)
        stand[u] = tm.value
        e_u[mask] = -bk.rows(_cols(fc, tm.scenarios), mask).mean(axis=1)
    alpha = p.correlation_break_alpha
    cap = r_tm.value + alpha * (sum(stand.values()) - r_tm.value)
    if cap > best:
        best, e_c, binding = cap, (1 - alpha) * e_r + alpha * e_u, "correlation_break_cap"
    # grid floor
    g_cols = _pool(ctx, pools["grid"])
    g_pnl = bk.total[g_cols]
    gi = int(np.argsort(g_pnl, kind="stable")[0])
    g_col = int(_cols(g_cols, np.array([gi]))[0])
    worst_grid = float(-g_pnl[gi])
    floor = p.grid_floor_share * worst_grid
    g_val, e_g, g_binding = best, e_c, binding
    if floor > g_val:
        g_val, e_g, g_binding = floor, -p.grid_floor_share * bk.rows(np.array([g_col]))[:, 0], "grid"
    if g_val < 0:
        g_val, e_g, g_binding = 0.0, np.zeros(n_pos), "zero"
    comps = {"market_risk": r_tm.value, "stress_blend": blend - r_tm.value,
             "correlation_stress": best - blend, "grid_floor": g_val - best}
    alloc = {"market_risk": e_r, "stress_blend": e_b - e_r, "correlation_stress": e_c - e_b,
             "grid_floor": e_g - e_c}
    if g_binding == "zero":  # the book gains even in its tail scenarios: no margin, no parts
        comps = dict.fromkeys(comps, 0.0)
        alloc = {k: np.zeros(n_pos) for k in alloc}
    for c in COMPONENTS[4:]:
        comps[c], alloc[c] = 0.0, np.zeros(n_pos)
    return {"components": comps, "alloc": alloc, "r": r_tm, "s": s_tm, "corr": corr_vals,
            "standalone": stand, "standalone_alloc": e_u, "cap": cap, "blend": blend,
            "worst_grid": worst_grid,
            "worst_grid_col": g_col, "binding": g_binding, "fc_cols": fc}


def _labels(ctx: MarginContext, col: int) -> str:
    for name in ctx.order:
        lo, hi = ctx.offsets[name]
        if lo <= col < hi:
            return ctx.scenarios.sets[name].labels[col - lo]
    raise IndexError(col)


def _r(x: float) -> float:
    return float(x)


def _liquidity(ctx: MarginContext, u: str) -> UnderlyingLiquidity:
    """An underlying's close-out inputs from the market state (defaults where it has none)."""
    sc, p = ctx.scenarios, ctx.params
    sigma_1d = float(sc.sigma[sc.underlyings.index(u)]) / math.sqrt(sc.mpor_days)
    st = ctx.market_state.underlying(u)
    liq = None if isinstance(st, Failure) else st.liquidity
    if liq is None:
        return UnderlyingLiquidity(p.default_half_spread, None, None, sigma_1d,
                                   "default_half_spread (the market state has no liquidity for "
                                   f"{u}): no impact, no concentration")
    adv = None if liq.adv_usd is None else liq.adv_usd.value
    if liq.open_interest_usd is not None:
        cap, cap_src = liq.open_interest_usd.value, liq.open_interest_usd.source
    elif adv is not None:
        cap, cap_src = p.capacity_adv_days * adv, f"{p.capacity_adv_days:g} x ADV"
    else:
        cap, cap_src = None, "none"
    depth = None if liq.depth_usd is None else liq.depth_usd.value
    src = (f"half spread: {liq.half_spread.source}; ADV: "
           f"{'none' if liq.adv_usd is None else liq.adv_usd.source}; capacity: {cap_src}; "
           f"depth: {'none' if liq.depth_usd is None else liq.depth_usd.source}")
    return UnderlyingLiquidity(liq.half_spread.value, adv, cap, sigma_1d, src, depth)


def _outright_unit(ctx: MarginContext, u: str, fc: slice | NDArray[np.int64], confidence: float
                   ) -> float:
    """Margin of one unit of ``u`` held outright (the larger of long and short) on the forecast
    pool, in the margin currency (book-independent: computed once per context)."""
    key = ("outright", u, confidence)
    if key in ctx.memo:
        return ctx.memo[key]
    x, _, _, _, div = ctx.stacked
    j = ctx.scenarios.underlyings.index(u)
    pnl = ctx.priced_spot(u) * np.expm1(x[fc, j])
    if div is not None:
        pnl = pnl / div[0, fc]
    kind = ctx.params.measure
    ctx.memo[key] = max(measure(pnl, confidence, kind).value, measure(-pnl, confidence, kind).value)
    return ctx.memo[key]


def _addons(ctx: MarginContext, pos: Sequence[Position], ch: Mapping[str, Any],
            confidence: float) -> AddOns:
    """The add-ons of ``pos`` (see :mod:`margin.addons`) on top of chain ``ch``."""
    insts = [q.instrument for q in pos]
    qv = np.array([q.quantity for q in pos], dtype=np.float64)
    g = np.array([ctx.greeks[i.name] for i in insts], dtype=np.float64).reshape(-1, 2)
    is_opt = np.array([isinstance(i, Option) for i in insts], dtype=bool)
    x = AddOnInputs(
        [i.underlying for i in insts], [i.name for i in insts],
        [i.expiry.isoformat() if isinstance(i, Option) else "" for i in insts], qv,
        qv * g[:, 0], qv * g[:, 1], is_opt,
        np.array([i.contract_size if isinstance(i, Option) else 0.0 for i in insts]))
    unds = sorted({i.underlying for i in insts})
    fc = _pool(ctx, ctx.scenarios.pools["forecast"])
    risk = math.fsum(ch["components"][c] for c in COMPONENTS[:4])
    usd = 1.0 if ctx.margin_currency == "USD" else ctx.priced_spot(ctx.margin_currency)
    e_u = ch.get("standalone_alloc")
    return compute_addons(x, {u: _liquidity(ctx, u) for u in unds}, ch["standalone"],
                          np.zeros(len(pos)) if e_u is None or len(e_u) != len(pos) else e_u,
                          {u: _outright_unit(ctx, u, fc, confidence) for u in unds}, risk,
                          ctx.params, usd)


def _with_addons(ch: dict[str, Any], ad: AddOns) -> dict[str, Any]:
    """The chain's components and allocations with the add-ons filled in."""
    comps = {**ch["components"], **{c: _r(v) for c, v in ad.components.items()}}
    alloc = {**ch["alloc"], **ad.alloc}
    return {**ch, "components": comps, "alloc": alloc}


def _assemble(ctx: MarginContext, portfolio: Portfolio, positions: Sequence[Position],
              failures: list[Failure]) -> MarginResult:
    p = ctx.params
    pos = sorted(positions, key=lambda q: (q.instrument.name, q.id))
    unit = ctx.unit
    row = np.array([ctx.index[q.instrument.name] for q in pos], dtype=np.int64)
    qv = np.array([q.quantity for q in pos], dtype=np.float64)
    # the portfolio P&L: quantities summed per instrument in (name, id) order, one matrix-vector
    # product over the cached instruments (unheld ones weigh 0)
    qty = np.zeros(unit.shape[0])
    for r_, x_ in zip(row.tolist(), qv.tolist(), strict=True):
        qty[r_] += x_
    total = _combine(qty[None, :], unit)[0]
    bk = _Book(pos, np.array([q.instrument.underlying for q in pos], dtype=object), row, qv, unit,
               total)
    vecs = _standalone(ctx, bk)
    ch = _chain(ctx, bk, p.confidence(), vecs)
    ad = _addons(ctx, pos, ch, p.confidence())
    ch = _with_addons(ch, ad)
    comps = {c: _r(ch["components"][c]) for c in COMPONENTS}
    im = math.fsum(comps.values())
    if p.mm_rule == "ratio":
        mm_comps = {c: v / p.im_over_mm for c, v in comps.items()}
        mm_alloc = {c: a / p.im_over_mm for c, a in ch["alloc"].items()}
    else:
        chm = _chain(ctx, bk, p.mm_confidence, vecs)
        chm = _with_addons(chm, _addons(ctx, pos, chm, p.mm_confidence))
        mm_comps = {c: _r(chm["components"][c]) for c in COMPONENTS}
        mm_alloc = chm["alloc"]
    mm = math.fsum(mm_comps.values())
    keys = (*COMPONENTS, "total", "mm_total")
    a = np.column_stack([ch["alloc"][c] for c in COMPONENTS])
    am = np.column_stack([mm_alloc[c] for c in COMPONENTS])
    table = np.column_stack([a, a.sum(axis=1), am.sum(axis=1)])
    by_pos = {q.id: dict(zip(keys, vals, strict=True))
              for q, vals in zip(pos, table.tolist(), strict=True)}
    by_und: dict[str, dict[str, float]] = {}
    for u in sorted(set(bk.und.tolist())):
        by_und[u] = dict(zip(keys, table[bk.und == u].sum(axis=0).tolist(), strict=True))
    # worst scenarios of the forecast pool, with each position's P&L in them
    fc = ch["fc_cols"]
    worst = _cols(fc, np.argsort(total[fc], kind="stable")[:_N_WORST])
    wrows = bk.rows(worst)
    worst_list = tuple({"scenario": _labels(ctx, int(c)), "pnl": _r(total[c])} for c in worst)
    sc = ctx.scenarios
    explain = {
        "mpor_days": sc.mpor_days, "dt_yr": sc.dt_yr,
        "forecast_unit": sc.unit, "mpor_periods": sc.mpor_days * sc.periods_per_day,
        "measure": p.measure, "confidence": p.confidence(),
        "scale_factors": {u: {"symbol": s, "sigma_mpor": _r(sc.sigma[k]),
                              "sigma_stressed_mpor": _r(sc.sigma_stressed[k]),
                              "forecast_horizon_used": sc.sigma_source_horizon[k],
                              "variance_scale": _r(sc.variance_scale[k]),
                              "spot_vol_beta": _r(sc.beta[k]),
                              "vol_of_vol": None if sc.vol_of_vol[k] is None else
                              sc.vol_of_vol[k].source}
                          for k, (u, s) in enumerate(zip(sc.underlyings, sc.symbols, strict=True))},
        "quantile_positions": {
            "forecast_pool": list(sc.pools["forecast"]), "n_scenarios": int(ch["r"].n_scenarios),
            "tail_scenarios": [_labels(ctx, int(c)) for c in _cols(fc, ch["r"].scenarios)],
            "stressed_pool_n": int(ch["s"].n_scenarios),
            "worst_grid_scenario": _labels(ctx, ch["worst_grid_col"]),
            "binding": ch["binding"],
        },
        "chain": {"market_risk": _r(ch["r"].value), "stressed_measure": _r(ch["s"].value),
                  "blend": _r(ch["blend"]), "correlation_break_cap": _r(ch["cap"]),
                  "worst_grid_loss": _r(ch["worst_grid"])},
        "worst_scenario_pnl_by_position": {
            q.id: v for q, v in zip(pos, wrows.tolist(), strict=True)},
        "n_scenarios": {n: ctx.scenarios.sets[n].n for n in ctx.order},
        "addons": ad.detail,
        "notes": list(sc.notes),
    }
    measures = {
        "es_forecast": _r(measure(total[fc], p.es_confidence, "es").value),
        "var_forecast": _r(measure(total[fc], p.var_confidence, "var").value),
        "stressed": _r(ch["s"].value), "by_matrix": {k: _r(v) for k, v in ch["corr"].items()},
        "standalone_by_underlying": {k: _r(v) for k, v in ch["standalone"].items()},
        "worst_grid_loss": _r(ch["worst_grid"]),
    }
    b = ctx.bundle
    versions = {m.role: f"{m.name}:{m.version}" for m in b.provenance.members}
    if not versions:
        versions = {f"vol:{r.unit}:{r.symbol}": f"{r.model_id}:{r.model_version}"
                    for r in b.vol_table.itertuples() if r.symbol in sc.symbols}
    fails = tuple(sorted(failures, key=lambda f: (f.subject, f.reason.value, f.message)))
    return MarginResult(portfolio.name, ctx.margin_currency, ctx.market_state.as_of.isoformat(),
                        _r(im), _r(mm), comps, mm_comps, measures, by_pos, by_und, worst_list,
                        fails, b.bundle_id, versions, p.params_hash, explain, ctx, tuple(pos),
                        {"total": total, "vecs": vecs})


def _empty(portfolio: Portfolio, ms: MarketState, bundle: RiskForecastBundle, params: MarginParams,
           failures: list[Failure]) -> MarginResult:
    zero = {c: 0.0 for c in COMPONENTS}
    return MarginResult(portfolio.name, portfolio.margin_currency, ms.as_of.isoformat(), 0.0, 0.0,
                        zero, dict(zero), {}, {}, {}, (), tuple(sorted(
                            failures, key=lambda f: (f.subject, f.reason.value, f.message))),
                        bundle.bundle_id, {}, params.params_hash, {"notes": ["no position priced"]})


def price_positions(positions: Sequence[Position], ms: MarketState, bundle: RiskForecastBundle,
                    cache: Mapping[str, PricedInstrument] | None = None
                    ) -> tuple[list[Position], dict[str, PricedInstrument], list[Failure]]:
    """The positions that price at the market state's time, each distinct instrument's inputs
    (``cache`` reused) and a failure per position that does not."""
    ok, priced, fails = [], dict(cache or {}), []
    forwards: dict[tuple[str, pd.Timestamp], Any] = {}
    for q in positions:
        name = q.instrument.name
        if name not in priced:
            pr = _price(q.instrument, ms, bundle, q.id, forwards)
            if isinstance(pr, Failure):
                fails.append(pr)
                continue
            priced[name] = pr
        ok.append(q)
    return ok, priced, fails


def book_mpor(positions: Sequence[Position], params: MarginParams) -> int:
    """The book's MPOR in days: the longest of its product kinds'."""
    return max((params.mpor(_kind(q.instrument)) for q in positions), default=1)


def compute_margin(portfolio: Portfolio, market_state: MarketState, bundle: RiskForecastBundle,
                   params: MarginParams | None = None) -> MarginResult:
    """Initial and maintenance margin of a portfolio (see the module docstring).

    Parameters
    ----------
    portfolio : positions (and row failures) from :func:`margin.portfolio.parse_portfolio`.
    market_state : the market inputs at ``as_of``.
    bundle : the risk-forecast bundle (residuals after ``market_state.as_of`` are ignored).
    params : :class:`~margin.params.MarginParams` (defaults if None).

    Returns
    -------
    MarginResult; positions that cannot be priced or revalued are failures in it, the rest
    computes.

    Raises
    ------
    ModelError : the bundle is from after ``market_state.as_of`` (look-ahead) or cannot scale
        any scenario (neither "1D" forecasts nor an intraday unit dividing a day).
    """
    params = params or MarginParams()
    if bundle.as_of > market_state.as_of:
        raise ModelError(f"the bundle's as_of {bundle.as_of} is after the market state's "
                         f"{market_state.as_of}: its forecasts may use later data (look-ahead)")
    failures = list(portfolio.failures)
    ok, priced, fails = price_positions(portfolio.positions, market_state, bundle)
    failures += fails
    if not ok:
        return _empty(portfolio, market_state, bundle, params, failures)
    ctx = prepare(market_state, bundle, params, [q.instrument.underlying for q in ok],
                  book_mpor(ok, params), portfolio.margin_currency)
    return _finish(ctx, portfolio, ok, priced, failures)


def _finish(ctx: MarginContext, portfolio: Portfolio, ok: list[Position],
            priced: Mapping[str, PricedInstrument], failures: list[Failure]) -> MarginResult:
    for name, pr in priced.items():
        ctx.priced.setdefault(name, pr)
    insts = sorted({q.instrument.name: q.instrument for q in ok}.values(), key=lambda i: i.name)
    bad = ctx.add(insts)
    good = []
    for q in ok:
        if q.instrument.name in bad:
            f = bad[q.instrument.name]
            failures.append(Failure(f.reason, q.id, f.message, f.details))
        else:
            good.append(q)
    if not good:
        return _empty(portfolio, ctx.market_state, ctx.bundle, ctx.params, failures)
    return _assemble(ctx, portfolio, good, failures)


def recompute(context: MarginContext, portfolio: Portfolio) -> MarginResult:
    """Margin of ``portfolio`` from a context's cached scenarios and per-instrument P&L (the warm
    path: only instruments not yet cached are priced and revalued). When the portfolio's
    underlyings or MPOR differ from the context's the scenarios differ, so it computes from
    scratch. Equals :func:`compute_margin` (to rounding: cached instruments are summed in cache
    order)."""
    ctx = context
    ok, priced, fails = price_positions(portfolio.positions, ctx.market_state, ctx.bundle, ctx.priced)
    failures = [*portfolio.failures, *fails]
    if not ok:
        return _empty(portfolio, ctx.market_state, ctx.bundle, ctx.params, failures)
    want = {q.instrument.underlying for q in ok} | (
        {ctx.margin_currency} if ctx.margin_currency != "USD" else set())
    if (portfolio.margin_currency != ctx.margin_currency or want != set(ctx.scenarios.underlyings)
            or book_mpor(ok, ctx.params) != ctx.scenarios.mpor_days):
        return compute_margin(portfolio, ctx.market_state, ctx.bundle, ctx.params)
    return _finish(ctx, portfolio, ok, priced, failures)


@dataclass(frozen=True)
class WhatIf:
    """The margin before and after a trade.

    Attributes
    ----------
    before : the base result.
    after : the full result of the combined book (None on the fast path, ``full=False``).
    im, mm, components : the combined book's IM, MM and components.
    incremental_im, incremental_mm : ``im - before.im``, ``mm - before.mm``.
    failure : why the trade could not be priced or revalued (then ``im == before.im``).
    """

    before: MarginResult
    after: MarginResult | None
    im: float
    mm: float
    components: Mapping[str, float]
    incremental_im: float
    incremental_mm: float
    failure: Failure | None = None


def _as_position(base: MarginResult, trade: Position | tuple[Instrument, float]) -> Position:
    if isinstance(trade, Position):
        return trade
    inst, qv = trade
    ids = {q.id for q in base.positions}
    tid = "what-if"
    while tid in ids:
        tid += "'"
    return Position(tid, inst, float(qv), None, -1, inst.name)


def what_if(base: MarginResult, trade: Position | tuple[Instrument, float], *,
            full: bool = True) -> WhatIf:
    """Margin of ``base``'s portfolio plus one trade, reusing the day's scenarios and cached
    per-instrument P&L (a new instrument is revalued alone and added to ``base.context``'s
    cache, which only grows). When the trade brings a new
    underlying or a longer MPOR the scenarios differ, so everything is recomputed. Either way the
    result equals :func:`compute_margin` on the combined portfolio (within 1e-9 of the IM).

    Parameters
    ----------
    base : a result of :func:`compute_margin` (it carries its context).
    trade : a :class:`~margin.portfolio.Position`, or (instrument, signed quantity) (id
        ``"what-if"``).
    full : also build the combined book's full :class:`MarginResult` (attribution, explain);
        False: the IM, MM and components only, from the base's P&L vectors plus the trade's
        (the pre-trade check).
    """
    ctx = base.context
    if ctx is None:
        raise DataError("this MarginResult carries no context (it computed no position); use "
                        "compute_margin on the combined portfolio", column="context")
    trade = _as_position(base, trade)
    name = trade.instrument.name
    positions = [*base.positions, trade]
    pf = Portfolio(base.portfolio, tuple(positions), (), ctx.market_state.as_of, ctx.margin_currency)
    pr = ctx.priced.get(name) or _price(trade.instrument, ctx.market_state, ctx.bundle, trade.id)
    if isinstance(pr, Failure):
        return WhatIf(base, base if full else None, base.im, base.mm, base.components, 0.0, 0.0, pr)
    ctx.priced.setdefault(name, pr)
    same = (set(ctx.scenarios.underlyings) == (
        {q.instrument.underlying for q in positions}
        | ({ctx.margin_currency} if ctx.margin_currency != "USD" else set()))
        and ctx.params.mpor(_kind(trade.instrument)) <= ctx.scenarios.mpor_days)
    # (the context's MPOR is its book's: the combined book keeps it unless the trade's is longer)
    if same:
        bad = ctx.add([trade.instrument])
        if name in bad:
            f = bad[name]
            fail = Failure(f.reason, trade.id, f.message, f.details)
            return WhatIf(base, base if full else None, base.im, base.mm, base.components, 0.0,
                          0.0, fail)
        if not full and base.cache is not None:
            return _fast_what_if(base, ctx, trade)
        after = _finish(ctx, pf, positions, {}, list(base.failures))
    else:
        ok, priced, fails = price_positions(positions, ctx.market_state, ctx.bundle)
        nctx = prepare(ctx.market_state, ctx.bundle, ctx.params,
                       [q.instrument.underlying for q in ok], book_mpor(ok, ctx.params),
                       ctx.margin_currency)
        after = _finish(nctx, pf, ok, priced, [*base.failures, *fails])
    return WhatIf(base, after if full else None, after.im, after.mm, after.components,
                  after.im - base.im, after.mm - base.mm)


def _fast_what_if(base: MarginResult, ctx: MarginContext, trade: Position) -> WhatIf:
    """IM/MM of base + trade from the base's cached P&L vectors plus the trade's: O(scenarios)."""
    assert base.cache is not None
    u = ctx.unit[ctx.index[trade.instrument.name]]
    total = base.cache["total"] + trade.quantity * u
    fc = _pool(ctx, ctx.scenarios.pools["forecast"])
    vecs = dict(base.cache["vecs"])
    und = trade.instrument.underlying
    vecs[und] = vecs[und] + trade.quantity * u[fc] if und in vecs else trade.quantity * u[fc]
    empty = _Book([], np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), np.zeros(0),
                  ctx.unit, total)
    p = ctx.params
    pos = sorted([*base.positions, trade], key=lambda q: (q.instrument.name, q.id))
    ch = _chain(ctx, empty, p.confidence(), vecs)
    comps = _with_addons(ch, _addons(ctx, pos, ch, p.confidence()))["components"]
    im = math.fsum(comps.values())
    if p.mm_rule == "ratio":
        mm = im / p.im_over_mm
    else:
        chm = _chain(ctx, empty, p.mm_confidence, vecs)
        mm = math.fsum(_with_addons(chm, _addons(ctx, pos, chm, p.mm_confidence))
                       ["components"].values())
    return WhatIf(base, None, im, mm, {c: float(comps[c]) for c in COMPONENTS}, im - base.im,
                  mm - base.mm)


def pool_pnl(result: MarginResult, pool: str = "forecast") -> NDArray[np.float64]:
    """The portfolio P&L in every scenario of one pool ("forecast", "stressed", "grid", ...) of a
    result computed here (its context and positions; the predictive distribution a backtest draws
    from). Empty for a result without positions."""
    ctx = result.context
    if ctx is None or not result.positions:
        return np.zeros(0)
    if pool not in ctx.scenarios.pools:
        raise ConfigError(f"pool must be one of {sorted(ctx.scenarios.pools)}; got {pool!r}")
    unit = ctx.unit
    qty = np.zeros(unit.shape[0])
    for q in result.positions:
        qty[ctx.index[q.instrument.name]] += q.quantity
    return _combine(qty[None, :], unit, _pool(ctx, ctx.scenarios.pools[pool]))[0]


def result_frame(result: MarginResult) -> pd.DataFrame:
    """Per-position attribution as a table (one row per position, one column per component)."""
    return pd.DataFrame.from_dict(dict(result.by_position), orient="index").sort_index()

