"""The add-ons of the margin requirement: liquidity (close-out cost), concentration and the
short-option minimum, each a separate component of :class:`margin.calculator.MarginResult`.

Pure functions of per-position exposures and per-underlying inputs (no I/O). Everything is measured
on the **net** exposure: per underlying the net delta ``N_u`` (USD per unit log return: the P&L of
a 1% move is ``0.01 N_u``), per (underlying, expiry) the net vega ``V_ue`` (USD per unit of
implied vol), so a hedged book pays for what is left to close out, not for both legs.

- **liquidity** ``L = sum_u [ |N_u| hs_u + impact_u ] + sum_ue |V_ue| vega_hs``: the half spread
  ``hs_u`` always; market impact by the square-root law ``impact_u = Y sigma_1d,u sqrt(|N_u| /
  ADV_u) |N_u|`` when ``|N_u| > impact_threshold_adv x ADV_u`` (``sigma_1d`` the forecast 1-day
  vol; no impact without an ADV; with an order book, not while ``|N_u|`` fits in its quoted depth
  either). Allocation: ``L_u`` to the positions of ``u`` in proportion to
  their delta ``d_i / N_u``, each vega bucket in proportion to ``v_i / V_ue`` (sums exactly).
- **concentration** ``C_u = k max(0, share_u / threshold - 1)^p max(R_u, 0)`` with ``share_u =
  |N_u| / capacity_u`` (open interest, else ``capacity_adv_days x ADV``) and ``R_u`` the
  underlying's standalone market-risk measure: zero below the threshold, then increasing and,
  for ``p >= 1``, convex in the position's size (``R_u`` is homogeneous of degree 1).
  Allocated like ``R_u`` (each position's standalone Euler contribution, scaled).
- **short-option minimum** ``SOM = max(0, f sum_u U_u m_u - G)``: ``U_u`` the underlying units
  of every net short option (per instrument, net of longs in the same instrument), ``m_u`` the
  outright margin of one unit of ``u`` (the larger of the long and short 1-unit measures on the
  forecast scenarios), ``G`` the risk-based margin before it (market risk through the grid floor,
  plus liquidity and concentration): a floor, as SPAN's short-option minimum and Deribit's are.
  Allocated to the net short option positions in proportion to their units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from margin.params import MarginParams

__all__ = ["ADDONS", "AddOnInputs", "AddOns", "UnderlyingLiquidity", "compute_addons"]

ADDONS = ("liquidity", "concentration", "short_option_minimum")
"""The add-on components, in the order they are computed."""


@dataclass(frozen=True)
class UnderlyingLiquidity:
    """One underlying's close-out inputs (USD): relative half spread, ADV, capacity and book depth
    (None where unknown), the forecast 1-day vol and where each came from."""

    half_spread: float
    adv_usd: float | None
    capacity_usd: float | None
    sigma_1d: float
    source: str
    depth_usd: float | None = None


@dataclass(frozen=True)
class AddOnInputs:
    """Per position (in the result's position order): underlying, instrument name, expiry key
    ("" for linear), quantity, delta and vega of the position (USD per unit log return / per unit
    of vol), whether it is an option and its underlying units per contract."""

    und: Sequence[str]
    instrument: Sequence[str]
    expiry: Sequence[str]
    quantity: NDArray[np.float64]
    delta_usd: NDArray[np.float64]
    vega_usd: NDArray[np.float64]
    is_option: NDArray[np.bool_]
    units_per_contract: NDArray[np.float64]


@dataclass(frozen=True)
class AddOns:
    """The add-on components (margin currency), their per-position allocation (each sums to its
    component) and the explain record (per underlying: net delta, spread, impact, vega, share of
    capacity, short units, outright margin, sources)."""

    components: Mapping[str, float]
    alloc: Mapping[str, NDArray[np.float64]]
    detail: Mapping[str, object]


def _share(weights: NDArray[np.float64], mask: NDArray[np.bool_], amount: float,
           out: NDArray[np.float64]) -> None:
    """Add ``amount`` to ``out[mask]`` in proportion to ``weights[mask]`` (equally if they sum
    to 0)."""
    if amount == 0.0 or not mask.any():
        return
    w = weights[mask]
    tot = float(w.sum())
    out[mask] += amount * (w / tot if tot != 0.0 else np.full(w.shape, 1.0 / w.size))


def compute_addons(x: AddOnInputs, liquidity: Mapping[str, UnderlyingLiquidity],
                   standalone: Mapping[str, float], standalone_alloc: NDArray[np.float64],
                   outright_unit: Mapping[str, float], risk_margin: float, params: MarginParams,
                   usd_per_ccy: float = 1.0) -> AddOns:
    """The three add-ons (see the module docstring).

    Parameters
    ----------
    x : per-position exposures.
    liquidity : underlying -> its close-out inputs (every underlying of ``x``).
    standalone : underlying -> its standalone market-risk measure (margin currency).
    standalone_alloc : per position, its Euler share of its underlying's standalone measure.
    outright_unit : underlying -> margin of one unit held outright (margin currency).
    risk_margin : the risk-based margin before the add-ons (margin currency).
    params : the parameters (``addons`` False: all zero).
    usd_per_ccy : USD per unit of the margin currency (1 for USD; the coin's price for a coin).
    """
    n = len(x.und)
    zero = {c: 0.0 for c in ADDONS}
    alloc = {c: np.zeros(n) for c in ADDONS}
    if not params.addons or n == 0:
        return AddOns(zero, alloc, {})
    und = np.asarray(x.und, dtype=object)
    detail: dict[str, dict[str, object]] = {}
    comps = dict(zero)
    for u in sorted(set(und.tolist())):
        m = und == u
        liq = liquidity[u]
        net = float(x.delta_usd[m].sum())
        a = abs(net)
        spread = a * liq.half_spread
        impact = 0.0
        if liq.adv_usd is not None:
            free = max(params.impact_threshold_adv * liq.adv_usd, liq.depth_usd or 0.0)
            if a > free:
                impact = params.impact_y * liq.sigma_1d * math.sqrt(a / liq.adv_usd) * a
        _share(x.delta_usd, m, (spread + impact) / usd_per_ccy, alloc["liquidity"])
        vega_cost = 0.0
        buckets = {}
        exp = np.asarray(x.expiry, dtype=object)
        for e in sorted({x.expiry[i] for i in np.flatnonzero(m & x.is_option)}):
            mb = m & x.is_option & (exp == e)
            v = float(x.vega_usd[mb].sum())
            c = abs(v) * params.vega_half_spread_vol
            buckets[e] = {"net_vega_usd": v, "cost_usd": c}
            vega_cost += c
            _share(x.vega_usd, mb, c / usd_per_ccy, alloc["liquidity"])
        liq_u = (spread + impact + vega_cost) / usd_per_ccy
        comps["liquidity"] += liq_u
        # concentration
        share = a / liq.capacity_usd if liq.capacity_usd else 0.0
        excess = max(0.0, share / params.concentration_threshold - 1.0)
        r_u = max(float(standalone.get(u, 0.0)), 0.0)
        conc = params.concentration_k * excess ** params.concentration_power * r_u if excess else 0.0
        if conc:
            _share(standalone_alloc, m, conc, alloc["concentration"])
        comps["concentration"] += conc
        detail[u] = {"net_delta_usd": net, "half_spread": liq.half_spread, "spread_cost_usd": spread,
                     "adv_usd": liq.adv_usd, "depth_usd": liq.depth_usd,
                     "impact_cost_usd": impact, "vega_buckets": buckets,
                     "liquidity": liq_u, "capacity_usd": liq.capacity_usd,
                     "share_of_capacity": share, "concentration": conc, "sigma_1d": liq.sigma_1d,
                     "source": liq.source}
    # short-option minimum, on options net short per instrument
    short_units = np.zeros(n)
    oi = np.flatnonzero(x.is_option)
    if len(oi):
        _, inv = np.unique(np.asarray(x.instrument, dtype=object)[oi], return_inverse=True)
        q = x.quantity[oi]
        q_net = np.bincount(inv, weights=q)
        neg = np.bincount(inv, weights=np.minimum(q, 0.0))
        # an instrument net short: its short positions carry its units, in proportion to size
        take = (q_net[inv] < 0) & (q < 0)
        short_units[oi[take]] = (-q_net[inv] * x.units_per_contract[oi] * q
                                 / np.where(neg[inv] < 0, neg[inv], -1.0))[take]
    floor = 0.0
    for u in sorted(set(und.tolist())):
        su = float(short_units[und == u].sum())
        f_u = params.short_option_min_fraction * su * max(float(outright_unit.get(u, 0.0)), 0.0)
        detail.setdefault(u, {}).update({"short_option_units": su,
                                         "outright_unit_margin": outright_unit.get(u, 0.0),
                                         "short_option_floor": f_u})
        floor += f_u
    before = risk_margin + comps["liquidity"] + comps["concentration"]
    som = max(0.0, floor - before)
    if som > 0:
        _share(short_units, short_units > 0, som, alloc["short_option_minimum"])
    comps["short_option_minimum"] = som
    return AddOns(comps, alloc, {"by_underlying": detail, "short_option_floor": floor})
