"""The margin methods risk teams run today, computed on the same instruments, market state and
revaluation kernel as the forecast-driven engine, so a comparison differs only by the method.

``compute_method(method, portfolio, market_state, bundle, params) -> MethodResult``; methods:

- ``dprm``: :func:`margin.calculator.compute_margin` (the forecast-driven requirement).
- ``fixed``: a fixed percentage of notional, tiered by position size as crypto venues publish
  their leverage brackets: per instrument, notional ``|q| x contract notional x price`` in the
  bracket it falls in; ``MM = notional x mmr - maintenance amount`` (the amount that makes the
  requirement continuous across brackets, ``cum_k = cum_{k-1} + cap_{k-1} (mmr_k - mmr_{k-1})``),
  ``IM = notional x imr`` likewise; short options ``max(a - OTM / S, b) x S`` per unit (IM) and
  ``c x S`` (MM) plus their mark value, long options nothing beyond the premium paid
  (:class:`~margin.params.MarginParams` ``fixed_*`` fields). No hedge is credited: every
  instrument is margined alone.
- ``hvar``: unfiltered historical simulation: the underlyings' realized log returns over the
  last ``fhs_lookback_days`` days of the bundle's residual history (``ret``, not ``z``), summed
  over the MPOR in overlapping windows, with implied vols moving by the engine's dynamics; the
  measure (ES 97.5% by default) of the revalued book; ``MM = IM / im_over_mm``.
- ``fhs_ewma``: filtered historical simulation with an EWMA volatility (``ewma_lambda``, 0.94 or
  0.97): ``sigma_t^2 = lambda sigma_{t-1}^2 + (1 - lambda) r_{t-1}^2`` (issued before each
  return, started at the variance of the first 30), ``z_t = r_t / sigma_t``, rescaled by the
  current ``sigma_{T+1}``; otherwise as ``hvar``.
- ``span``: SPAN-style risk array per underlying: 14 scenarios (price 0, +/-1/3, +/-2/3, +/-1 of
  the price scan range, each with vol up and down by the vol scan range) plus two extreme moves
  (+/- ``extreme_multiple`` x the range, vol unchanged) counted at ``extreme_cover`` (35%), over
  the MPOR; scanning risk = the worst weighted loss; an intra-commodity spread charge per unit of
  delta spread across expiries (so a calendar spread does not scan to zero), inter-commodity
  credits between offsetting underlyings, and the short-option minimum (``IM = max(scan + intra -
  credit, SOM)``); ``MM = IM / im_over_mm``. The scan range is the exchange's parameter:
  ``span.price_scan`` per underlying, else a historical stand-in (the 99% quantile of the
  absolute MPOR moves over the lookback).
- ``deribit``: Deribit-style portfolio margin, parameters from Deribit's public API
  (``private/pme/simulate``, BTC/USD) and help pages: per underlying alone (segregated), the
  index moved across +/- ``price_range`` 16% in 9 points, each with implied vol up, same and down:
  ``vol_up = max(vol (1 + 0.5 f), 0.5)``, ``vol_down = max(vol (1 - 0.25 f), 0)`` (the floor
  at 0 prices a near-expiry option at intrinsic rather than a negative vol), ``f = (30 /
  max(DTE, 1))^p``, ``p = 0.30`` under 30 days, ``0.13`` above; instantaneous (no time decay);
  the extended table (-66%, -33%, +50%, +100%, +200%, +300%, +400%, +500%, vol up only) counts
  ``price_range / |move|`` of each loss, dampened by **our** formula ``D ln(1 + L / D)`` with
  ``D`` = the extended dampener (Deribit does not publish its dampener: hence "Deribit-style");
  a delta shock of ``max_delta_shock`` times the net delta beyond its threshold (our reading of
  the published parameter names); ``IM = sum_u max(standard loss, extended, 0) + delta shock``,
  ``MM = mm_factor x IM``.

Every method returns IM and MM, per-position contributions that sum to the IM (Euler on the
tail scenarios for the simulation methods; each instrument's own requirement for ``fixed``) and
the failures of the positions it could not price (the rest computes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from features.errors import ConfigError, Failure
from margin.calculator import (
    MarginContext,
    book_mpor,
    compute_margin,
    pool_pnl,
    price_positions,
)
from margin.instruments import Future, Option, Perpetual, Spot
from margin.market_state import MarketState
from margin.measures import measure
from margin.params import MarginParams
from margin.portfolio import Portfolio, Position
from margin.pricing import black76_price, year_fraction
from margin.revalue import ScenarioSet, build_book, instrument_pnl
from margin.scenarios import (
    FactorSet,
    build_scenarios,
    fhs_standardized,
    margin_unit,
    residual_panel,
)
from models.forecast import RiskForecastBundle

__all__ = ["METHODS", "MethodResult", "compute_method", "ewma_issued_vol", "span_scanning_risk",
           "tier_margin"]

METHODS = ("dprm", "fixed", "span", "deribit", "hvar", "fhs_ewma")
"""The methods :func:`compute_method` knows."""


@dataclass(frozen=True)
class MethodResult:
    """One method's requirement for one portfolio (amounts in ``margin_currency``)."""

    method: str
    portfolio: str
    margin_currency: str
    im: float
    mm: float
    by_position: Mapping[str, Mapping[str, float]]
    failures: tuple[Failure, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)
    scenario_pnl: NDArray[np.float64] | None = field(default=None, repr=False, compare=False)
    """The portfolio P&L per scenario of a simulation method (hvar, fhs_ewma; the dprm method's
    forecast pool): the predictive distribution a backtest draws from. Not serialized."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"method": self.method, "portfolio": self.portfolio,
                "margin_currency": self.margin_currency, "im": self.im, "mm": self.mm,
                "by_position": {k: dict(v) for k, v in self.by_position.items()},
                "failures": [f.to_dict() for f in self.failures], "detail": dict(self.detail)}


# ---- fixed percentage, tiered ------------------------------------------------------------------


def tier_margin(notional: float, tiers: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """(IM, MM) of one notional (USD, >= 0) under leverage brackets ``(cap, imr, mmr)`` (caps
    increasing; the last bracket also covers anything above its cap): the bracket's rates times
    the notional less the maintenance amounts that make both continuous in the notional."""
    cum_i = cum_m = 0.0
    prev_cap, prev_i, prev_m = 0.0, 0.0, 0.0
    for k, (cap, imr, mmr) in enumerate(tiers):
        if k:
            cum_i += prev_cap * (imr - prev_i)
            cum_m += prev_cap * (mmr - prev_m)
        if notional <= cap or k == len(tiers) - 1:
            return notional * imr - cum_i, notional * mmr - cum_m
        prev_cap, prev_i, prev_m = cap, imr, mmr
    return 0.0, 0.0


def _option_value_usd(ctx: MarginContext, inst: Option) -> float:
    """Black-76 value of one contract in USD at the market state's time (inverse: the coin
    price F-discounted and converted at the spot)."""
    pr = ctx.priced[inst.name]
    mi = pr.inputs
    t = year_fraction(ctx.market_state.as_of, inst.expiry)
    v = float(black76_price(mi.price, inst.strike, t, mi.vol, inst.is_call, mi.rate))
    return inst.contract_size * (v / mi.price * pr.spot if inst.inverse else v)


def _fixed(ctx: MarginContext, pos: Sequence[Position], p: MarginParams, usd: float
           ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    out: dict[str, dict[str, float]] = {}
    members: dict[str, list[Position]] = {}
    for q in pos:
        members.setdefault(q.instrument.name, []).append(q)
    net = {name: sum(q.quantity for q in qs) for name, qs in members.items()}
    per_inst: dict[str, tuple[float, float, float]] = {}
    for name, qn in sorted(net.items()):
        inst = members[name][0].instrument
        pr = ctx.priced[name]
        s0 = pr.spot
        if isinstance(inst, Option):
            units = abs(qn) * inst.contract_size
            mark = _option_value_usd(ctx, inst) * abs(qn)
            if qn >= 0:
                im = mm = 0.0
            else:
                otm = max(0.0, (inst.strike - s0) if inst.is_call else (s0 - inst.strike))
                a, b, c = p.fixed_short_option
                im = units * max(a - otm / s0, b) * s0 + mark
                mm = units * c * s0 + mark
            per_inst[name] = (im, mm, units * s0)
            continue
        if isinstance(inst, (Perpetual, Future)) and inst.inverse:
            notional = abs(qn) * inst.contract_size  # USD face value
        elif isinstance(inst, (Spot, Perpetual, Future)):
            notional = abs(qn) * inst.contract_size * float(pr.inputs.price)
        else:  # pragma: no cover - every kernel instrument is one of the above
            raise ConfigError(f"fixed margin does not know {type(inst).__name__}")
        im, mm = tier_margin(notional, p.fixed_tiers)
        per_inst[name] = (im, mm, notional)
    for name, (im, mm, _) in per_inst.items():
        tot = sum(abs(q.quantity) for q in members[name]) or 1.0
        for q in members[name]:
            w = abs(q.quantity) / tot
            out[q.id] = {"total": im * w / usd, "mm_total": mm * w / usd}
    return out, {"notional_usd": {k: v[2] for k, v in per_inst.items()}}


# ---- historical simulation ---------------------------------------------------------------------


def ewma_issued_vol(r: NDArray[np.float64], lam: float, n_init: int = 30
                    ) -> tuple[NDArray[np.float64], float]:
    """EWMA volatility issued before each return of ``r`` (array of shape (n,) oldest first) and
    the one issued after the last: ``s_t^2 = lam s_{t-1}^2 + (1 - lam) r_{t-1}^2``, ``s_0^2`` the
    mean square of the first ``n_init`` returns."""
    r = np.asarray(r, dtype=np.float64)
    s2 = np.empty(len(r) + 1)
    s2[0] = float(np.mean(r[:max(1, min(n_init, len(r)))] ** 2))
    for t in range(len(r)):
        s2[t + 1] = lam * s2[t] + (1.0 - lam) * r[t] * r[t]
    return np.sqrt(s2[:-1]), float(math.sqrt(s2[-1]))


def _historical(ctx: MarginContext, unds: Sequence[str], method: str, p: MarginParams
                ) -> tuple[NDArray[np.float64], tuple[str, ...], dict[str, Any]]:
    """The method's log-return scenarios (n, n_underlyings) over the MPOR, labels, detail."""
    sc = ctx.scenarios
    hp = sc.mpor_days * sc.periods_per_day
    ret, _ = residual_panel(ctx.bundle, sc.symbols, ctx.market_state.as_of,
                            p.fhs_lookback_days * sc.periods_per_day, sc.unit, value="ret")
    wide = ret.to_numpy()
    if method == "hvar":
        x = fhs_standardized(wide, hp, "overlapping") * math.sqrt(hp)
        det = {"returns": "raw"}
    else:
        lam = p.ewma_lambda
        z = np.empty_like(wide)
        now = np.empty(wide.shape[1])
        for j in range(wide.shape[1]):
            s, now[j] = ewma_issued_vol(wide[:, j], lam)
            z[:, j] = wide[:, j] / s
        x = fhs_standardized(z, hp, "overlapping") * now * math.sqrt(hp)
        det = {"ewma_lambda": lam, "ewma_vol_now": dict(zip(sc.underlyings, now.tolist(),
                                                            strict=True))}
    ends = ret.index[hp - 1:]
    labels = tuple(f"{method} {t:%Y-%m-%d %H:%M}" for t in ends)
    return x, labels, {**det, "n_scenarios": int(x.shape[0]), "mpor_periods": hp}


DERIBIT_EXTENDED = (-0.66, -0.33, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0)
"""The extended table's price moves (Deribit's help page)."""


def deribit_vol(vol0: float, dte_days: float, state: str, p: MarginParams) -> float:
    """An option's implied vol in one Deribit-style vol state ("up", "same", "down")."""
    if state == "same":
        return vol0
    d = p.deribit
    f = (30.0 / max(dte_days, 1.0)) ** (d.short_term_vega_power if dte_days < 30.0
                                        else d.long_term_vega_power)
    if state == "up":
        return max(vol0 * (1.0 + d.volatility_range_up * f), d.min_volatility_for_shock_up)
    return max(vol0 * (1.0 - d.volatility_range_down * f), 0.0)


def _deribit(ctx: MarginContext, pos: Sequence[Position], p: MarginParams
             ) -> tuple[dict[str, dict[str, float]], float, dict[str, Any]]:
    """Deribit-style IM per position (sums to the IM), the IM and the explain record."""
    d = p.deribit
    grid = np.linspace(-d.price_range, d.price_range, d.price_points)
    std = [(m, v) for m in grid for v in ("up", "same", "down")]
    ext = [(m, "up") for m in DERIBIT_EXTENDED]
    scen = std + ext
    ns = len(std)
    weights = np.array([d.price_range / abs(m) * d.extended_table_factor for m, _ in ext])
    usd = 1.0 if ctx.margin_currency == "USD" else ctx.priced_spot(ctx.margin_currency)
    dd = d.extended_dampener / usd  # the dampener is in USD

    def shift(o: Option, k: int) -> float:
        pr = ctx.priced[o.name]
        return deribit_vol(pr.vol0, pr.dte_days, scen[k][1], p) - pr.vol0

    by_pos = {q.id: {"total": 0.0} for q in pos}
    detail: dict[str, Any] = {}
    im = 0.0
    for u in sorted({q.instrument.underlying for q in pos}):
        mine, pnl = _scan(ctx, pos, u, [m for m, _ in scen], shift)
        loss = -pnl.sum(axis=0)
        ks = int(np.argmax(loss[:ns]))
        raw = np.maximum(loss[ns:], 0.0) * weights
        damp = dd * np.log1p(raw / dd)
        ke = int(np.argmax(damp))
        std_loss, ext_loss = float(loss[ks]), float(damp[ke])
        if max(std_loss, ext_loss) <= 0:
            alloc = np.zeros(len(mine))
        elif std_loss >= ext_loss:
            alloc = -pnl[:, ks]
        else:  # the dampened extended loss, shared like the undampened one
            alloc = -pnl[:, ns + ke] * weights[ke] * (ext_loss / raw[ke])
        # delta shock on the net delta (USD) beyond the threshold
        dl = np.array([q.quantity * ctx.greeks[q.instrument.name][0] for q in mine])
        delta = float(dl.sum())
        shock = d.max_delta_shock * max(0.0, abs(delta) - d.delta_total_liq_shock_threshold) / usd
        if shock:
            alloc = alloc + shock * dl / delta
        im += max(std_loss, ext_loss, 0.0) + shock
        for q, a in zip(mine, alloc.tolist(), strict=True):
            by_pos[q.id]["total"] += a
        m_s, v_s = std[ks]
        detail[u] = {"standard_loss": std_loss, "binding_standard": f"{m_s:+.0%} vol {v_s}",
                     "extended_loss": ext_loss, "binding_extended": f"{ext[ke][0]:+.0%} vol up",
                     "delta_shock": shock, "net_delta_usd": delta}
    for v in by_pos.values():
        v["mm_total"] = v["total"] * d.mm_factor
    return by_pos, im, detail


SPAN_SCENARIOS = ((0.0, 1), (0.0, -1), (1 / 3, 1), (1 / 3, -1), (-1 / 3, 1), (-1 / 3, -1),
                  (2 / 3, 1), (2 / 3, -1), (-2 / 3, 1), (-2 / 3, -1), (1.0, 1), (1.0, -1),
                  (-1.0, 1), (-1.0, -1))
"""SPAN's 14 regular scenarios: (price move as a share of the scan range, vol up +1 / down -1);
scenarios 15 and 16 are the extreme moves (+/- ``extreme_multiple`` x the range, vol unchanged)."""


def _scan(ctx: MarginContext, pos: Sequence[Position], u: str, moves: Sequence[float],
          vol_shift: Any, dt_yr: float = 0.0) -> tuple[list[Position], NDArray[np.float64]]:
    """Per-position P&L (margin currency) of ``u``'s positions when ``u`` alone moves by each
    simple return in ``moves``; ``vol_shift(option, k)`` the absolute vol change of an option in
    scenario ``k``. Returns the positions and an array of shape (n_positions, n_moves)."""
    mine = [q for q in pos if q.instrument.underlying == u]
    insts = sorted({q.instrument.name: q.instrument for q in mine}.values(), key=lambda i: i.name)
    opts = [i for i in insts if isinstance(i, Option)]
    bucket = {o.name: b for b, o in enumerate(opts)}
    inputs = {i.name: (dataclasses.replace(ctx.priced[i.name].inputs, vol_bucket=bucket[i.name])
                       if i.name in bucket else ctx.priced[i.name].inputs) for i in insts}
    ccy = ctx.margin_currency
    unds = sorted({u} | ({ccy} if ccy != "USD" else set()))
    bk = build_book([(i, 1.0) for i in insts], inputs, {v: ctx.priced_spot(v) for v in unds},
                    ctx.market_state.as_of)
    n = len(moves)
    x = np.zeros((n, len(unds)))
    x[:, unds.index(u)] = np.log1p(np.asarray(moves, dtype=np.float64))
    vs = np.zeros((n, max(len(opts), 1)))
    for o in opts:
        for k in range(n):
            vs[k, bucket[o.name]] = vol_shift(o, k)
    unit = instrument_pnl(bk, ScenarioSet(tuple(unds), x, dt_yr, vs if opts else None))
    if ccy != "USD":
        unit = unit / (ctx.priced_spot(ccy) * np.exp(x[:, unds.index(ccy)]))[None, :]
    row = {i.name: k for k, i in enumerate(insts)}
    return mine, np.array([q.quantity * unit[row[q.instrument.name]] for q in mine])


def span_price_scan(ctx: MarginContext, u: str, p: MarginParams) -> float:
    """SPAN's price scan range of ``u`` as a simple return: ``span.price_scan`` if set, else the
    ``span.scan_quantile`` of the absolute MPOR log returns over the bundle's residual history
    (``fhs_lookback_days``), the stand-in for an exchange's published range."""
    if u in p.span.price_scan:
        return float(p.span.price_scan[u])
    sc = ctx.scenarios
    sym = sc.symbols[sc.underlyings.index(u)]
    hp = sc.mpor_days * sc.periods_per_day
    ret, _ = residual_panel(ctx.bundle, [sym], ctx.market_state.as_of,
                            p.fhs_lookback_days * sc.periods_per_day, sc.unit, value="ret")
    c = np.concatenate([[0.0], np.cumsum(ret[sym].to_numpy())])
    moves = c[hp:] - c[:-hp]
    return float(np.expm1(np.quantile(np.abs(moves), p.span.scan_quantile)))


def span_scanning_risk(pnl: NDArray[np.float64], extreme_cover: float = 1.0
                       ) -> tuple[float, int, NDArray[np.float64]]:
    """SPAN's scanning risk of a set of risk arrays: ``pnl`` of shape (n_positions, 16), each
    row a position's P&L in SPAN's 16 scenarios (the extremes 15 and 16 unweighted; their weight
    is ``extreme_cover``). The arrays are summed scenario by scenario, then the largest weighted
    loss taken (not the sum of each position's worst). Returns the risk (>= 0), the binding
    scenario (1-based) and the portfolio's weighted array (P&L, gains positive)."""
    arr = np.atleast_2d(np.asarray(pnl, dtype=np.float64)).sum(axis=0)
    if arr.shape != (len(SPAN_SCENARIOS) + 2,):
        raise ValueError(f"risk arrays need {len(SPAN_SCENARIOS) + 2} scenarios; got "
                         f"{arr.shape[-1]}")
    weight = np.array([1.0] * len(SPAN_SCENARIOS) + [extreme_cover] * 2)
    wl = -arr * weight
    k = int(np.argmax(wl))
    return max(float(wl[k]), 0.0), k + 1, arr * weight


def _span(ctx: MarginContext, pos: Sequence[Position], p: MarginParams
          ) -> tuple[dict[str, dict[str, float]], float, dict[str, Any]]:
    """SPAN-style IM per position (sums to the IM), the IM and the explain record."""
    sp = p.span
    unds = sorted({q.instrument.underlying for q in pos})
    by_pos = {q.id: {"total": 0.0} for q in pos}
    detail: dict[str, Any] = {}
    scan: dict[str, float] = {}
    delta: dict[str, float] = {}
    usd = 1.0 if ctx.margin_currency == "USD" else ctx.priced_spot(ctx.margin_currency)
    dt = ctx.scenarios.dt_yr
    vols = [v for _, v in SPAN_SCENARIOS] + [0, 0]

    def shift(o: Option, k: int) -> float:
        return vols[k] * sp.vol_scan

    for u in unds:
        psr = span_price_scan(ctx, u, p)
        moves = [m * psr for m, _ in SPAN_SCENARIOS] + [sp.extreme_multiple * psr,
                                                          -sp.extreme_multiple * psr]
        mine, pnl = _scan(ctx, pos, u, moves, shift, dt)
        risk, kb, array = span_scanning_risk(pnl, sp.extreme_cover)
        k = kb - 1
        wk = 1.0 if k < len(SPAN_SCENARIOS) else sp.extreme_cover
        alloc = -pnl[:, k] * wk if risk > 0 else np.zeros(len(mine))
        # intra-commodity (calendar) spread charge on delta across expiries
        by_exp: dict[str, float] = {}
        d_u = 0.0
        for q in mine:
            dl = q.quantity * ctx.greeks[q.instrument.name][0] / ctx.priced_spot(u)  # units of u
            e = "" if q.instrument.expiry is None else f"{q.instrument.expiry:%Y-%m-%d}"
            by_exp[e] = by_exp.get(e, 0.0) + dl
            d_u += dl
        longs = sum(v for v in by_exp.values() if v > 0)
        shorts = -sum(v for v in by_exp.values() if v < 0)
        spreads = min(longs, shorts) if len(by_exp) > 1 else 0.0
        intra = spreads * sp.intra_spread_rate * ctx.priced_spot(u) / usd
        if intra > 0:
            w = np.array([abs(q.quantity * ctx.greeks[q.instrument.name][0]) for q in mine])
            alloc = alloc + intra * w / w.sum()
        scan[u], delta[u] = risk + intra, d_u
        for q, a in zip(mine, alloc.tolist(), strict=True):
            by_pos[q.id]["total"] += a
        detail[u] = {"price_scan_range": psr, "vol_scan_range": sp.vol_scan,
                     "scanning_risk": risk, "binding_scenario": kb,
                     "risk_array_pnl": [float(v) for v in array],
                     "intra_spread_charge": intra, "spreads_units": spreads,
                     "net_delta_units": d_u}
    # inter-commodity credits between offsetting deltas
    credit_total = 0.0
    for pair, rate in sorted(sp.inter_credits.items()):
        a, b = pair.split("/")
        if a in scan and b in scan and delta[a] * delta[b] < 0:
            c = rate * min(scan[a], scan[b])
            credit_total += c
            for u in (a, b):
                share = scan[u] and c / 2 / scan[u]
                for q in pos:
                    if q.instrument.underlying == u:
                        by_pos[q.id]["total"] -= by_pos[q.id]["total"] * share
            detail[f"credit {a}/{b}"] = {"rate": rate, "credit": c}
    im_risk = sum(scan.values()) - credit_total
    # short option minimum per net short option contract
    net: dict[str, float] = {}
    for q in pos:
        if isinstance(q.instrument, Option):
            net[q.instrument.name] = net.get(q.instrument.name, 0.0) + q.quantity
    som = 0.0
    for name, qn in net.items():
        if qn < 0:
            inst = next(q.instrument for q in pos if q.instrument.name == name)
            som += -qn * inst.contract_size * sp.short_option_minimum * ctx.priced_spot(
                inst.underlying) / usd
    im = max(im_risk, som, 0.0)
    if im > im_risk and im > 0:
        extra = im - max(im_risk, 0.0)
        shorts = [q for q in pos if isinstance(q.instrument, Option) and q.quantity < 0]
        tot = sum(-q.quantity for q in shorts)
        for q in shorts:
            by_pos[q.id]["total"] += extra * -q.quantity / tot
    tot_alloc = sum(v["total"] for v in by_pos.values())
    if tot_alloc and abs(tot_alloc - im) > 1e-9 * max(1.0, im):  # credits split pro rata
        for v in by_pos.values():
            v["total"] *= im / tot_alloc
    for v in by_pos.values():
        v["mm_total"] = v["total"] / sp.im_over_mm
    detail["short_option_minimum"] = som
    detail["inter_credit"] = credit_total
    return by_pos, im, detail


def compute_method(method: str, portfolio: Portfolio, market_state: MarketState,
                   bundle: RiskForecastBundle, params: MarginParams | None = None) -> MethodResult:
    """The requirement of one method (see the module docstring); the same positions fail as in
    :func:`~margin.calculator.compute_margin` (one bad position never stops the rest)."""
    p = params or MarginParams()
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {list(METHODS)}. Got {method!r} instead.")
    if method == "dprm":
        r = compute_margin(portfolio, market_state, bundle, p)
        return MethodResult("dprm", r.portfolio, r.margin_currency, r.im, r.mm,
                            {k: {"total": v["total"], "mm_total": v["mm_total"]}
                             for k, v in r.by_position.items()}, r.failures,
                            {"components": dict(r.components),
                             "var": r.measures.get("var_forecast")}, pool_pnl(r))
    ok, priced, fails = price_positions(portfolio.positions, market_state, bundle)
    failures = [*portfolio.failures, *fails]
    ccy = portfolio.margin_currency
    if not ok:
        return MethodResult(method, portfolio.name, ccy, 0.0, 0.0, {}, tuple(failures))
    unds = sorted({q.instrument.underlying for q in ok} | ({ccy} if ccy != "USD" else set()))
    base = build_scenarios(unds, bundle, p.model_copy(update={"scenario_sources": ("mc",),
                                                              "mc_n_scenarios": 10}),
                           book_mpor(ok, p), as_of=market_state.as_of)
    unit, _ = margin_unit(bundle)
    if method in ("fixed", "deribit", "span"):
        fs = {"none": FactorSet("none", np.zeros((1, len(unds))), np.zeros((1, len(unds))),
                                np.zeros((1, len(unds))), np.zeros((1, len(unds))), ("none",))}
    else:
        ctx0 = MarginContext(market_state, bundle, p, ccy, base, (), {})
        x, labels, det = _historical(ctx0, unds, method, p)
        z0 = np.zeros_like(x)
        fs = {"hist": FactorSet("hist", x, z0, z0, z0, labels)}
    sc = dataclasses.replace(base, sets=fs, pools={"forecast": tuple(fs)})
    name = next(iter(fs))
    ctx = MarginContext(market_state, bundle, p, ccy, sc, (name,), {name: (0, fs[name].n)})
    for k, v in priced.items():
        ctx.priced.setdefault(k, v)
    bad = ctx.add(sorted({q.instrument.name: q.instrument for q in ok}.values(),
                         key=lambda i: i.name))
    good = [q for q in ok if q.instrument.name not in bad]
    failures += [Failure(f.reason, q.id, f.message, f.details) for q in ok
                 if (f := bad.get(q.instrument.name)) is not None]
    pos = sorted(good, key=lambda q: (q.instrument.name, q.id))
    usd = 1.0 if ccy == "USD" else ctx.priced_spot(ccy)
    fails_t = tuple(sorted(failures, key=lambda f: (f.subject, f.reason.value, f.message)))
    if method == "span":
        by_pos, im, detail = _span(ctx, pos, p)
        return MethodResult(method, portfolio.name, ccy, im, im / p.span.im_over_mm, by_pos,
                            fails_t, {"by_underlying": detail})
    if method == "deribit":
        by_pos, im, detail = _deribit(ctx, pos, p)
        return MethodResult(method, portfolio.name, ccy, im, im * p.deribit.mm_factor, by_pos,
                            fails_t, {"by_underlying": detail})
    if method == "fixed":
        by_pos, detail = _fixed(ctx, pos, p, usd)
        im = math.fsum(v["total"] for v in by_pos.values())
        mm = math.fsum(v["mm_total"] for v in by_pos.values())
        return MethodResult(method, portfolio.name, ccy, im, mm, by_pos, fails_t,
                            {**detail, "unit": unit})
    unit_pnl = ctx.unit
    rows = np.array([ctx.index[q.instrument.name] for q in pos], dtype=np.int64)
    qv = np.array([q.quantity for q in pos])
    per = qv[:, None] * unit_pnl[rows]
    total = per.sum(axis=0)
    tm = measure(total, p.confidence(), p.measure)
    im = max(tm.value, 0.0)
    e = -per[:, tm.scenarios].mean(axis=1) if im > 0 else np.zeros(len(pos))
    by_pos = {}
    for q, v in zip(pos, e.tolist(), strict=True):
        d = by_pos.setdefault(q.id, {"total": 0.0, "mm_total": 0.0})
        d["total"] += v
        d["mm_total"] += v / p.im_over_mm
    det = {**det, "measure": p.measure, "confidence": p.confidence(),
           "var": measure(total, p.var_confidence, "var").value,
           "tail_scenarios": [labels[int(i)] for i in tm.scenarios[:10]]}
    return MethodResult(method, portfolio.name, ccy, im, im / p.im_over_mm, by_pos, fails_t, det,
                        total)
