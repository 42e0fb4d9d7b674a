"""Accounts: collateral in several currencies, equity, initial and maintenance margin, the status
(healthy, margin call, liquidation) and the liquidation thresholds of each underlying (pure code:
no I/O).

An :class:`Account` holds a :class:`~margin.portfolio.Portfolio` and collateral balances
(``USD``, stablecoins ``USDT``/``USDC``, coins ``BTC``, ``ETH``, ...; :data:`STABLECOINS`,
:data:`margin.instruments.UNDERLYINGS`), valued at mark. Two collateral modes, never both on the
same asset (that double-counts):

- ``cross``: coin collateral is revalued inside the same scenarios as the positions (it joins the
  margin book as spot holdings, so BTC collateral backing short BTC puts is worth less exactly when
  the puts lose); its haircut covers only its liquidation cost (``liquidation_cost``);
- ``segregated``: coin collateral is haircut by its forecast volatility over the MPOR at
  ``confidence`` plus the liquidation cost, clipped to ``[haircut_floor, haircut_cap]``, and is not
  in the scenarios.

Stablecoins are not cash: each carries a depeg haircut in both modes (``stable_haircut``; USDC
traded at about 0.87 on 2023-03-11, when Silicon Valley Bank failed; USDT at about 0.95 on
2022-05-12, after TerraUSD's collapse). ``USD`` is cash.

Equity = collateral value after haircuts + the positions' mark value: spot holdings at the spot,
futures' and perpetuals' unrealized P&L from their entry price to their mark, options' mark value
(long positive, short negative). IM from the engine (:func:`margin.calculator.compute_margin`) on
the margin book; MM by :class:`MMRule` (the engine's MM, a fraction of IM, or a venue's tiered rate
on each position's notional less a maintenance amount). Status: ``liquidation`` when equity < MM,
``margin_call`` when equity < IM (post ``IM - equity`` within ``cure_hours``), else ``healthy``.

**Liquidation thresholds**: for each underlying ``u``, the price move down and up at which equity
reaches MM, by full revaluation along the move with the day's scenarios and parameters frozen: ``u``
moves by ``x`` (simple return), every other underlying by its forecast beta to ``u`` times ``x``
(from the engine's forecast scenarios; prices kept above 0), implied vols held; equity revalued
by the engine's kernel; MM at the moved point = today's MM x the ratio of the book's expected
shortfall over the forecast scenarios revalued around the moved point to today's (a fixed
seeded subsample of ``mm_path_scenarios`` of them; the tiered rule: exact at the moved
notional). Equity and MM are evaluated at :data:`PATH_POINTS` on both sides in one kernel call,
then the root is found by Brent's method (``scipy.optimize.brentq``) in each side's first
bracket. For one linear perpetual with a fixed-rate MM the
threshold is the closed-form liquidation price (tested to 1e-8).

A bad account (negative or non-finite balance, unknown currency, a collateral coin without a
price, a duplicate id, no position that prices) is a :class:`~features.errors.Failure` of that
account; the other accounts still compute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import brentq
from scipy.stats import norm

from features.errors import DataError, Failure, FailureReason
from margin.calculator import MarginContext, MarginResult, book_mpor, compute_margin, recompute
from margin.instruments import UNDERLYINGS, Future, Instrument, Option, Perpetual, Spot
from margin.market_state import MarketState
from margin.params import MarginParams
from margin.portfolio import Portfolio, Position
from margin.revalue import ScenarioSet, build_book, instrument_pnl
from margin.scenarios import bundle_symbol, horizon_vol, margin_unit
from models.forecast import RiskForecastBundle

__all__ = [
    "STABLECOINS", "Account", "AccountParams", "AccountStatus", "CollateralParams", "MMRule",
    "account_status", "accounts_status", "closed_form_liquidation_price", "parse_accounts",
    "tier_mm",
]

STABLECOINS = ("USDT", "USDC")
"""Collateral currencies valued at 1 USD before their depeg haircut."""

PATH_POINTS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.95)
"""Moves (simple returns, each side) at which equity and MM are evaluated before the root search;
a threshold beyond the last is reported as None (no liquidation within a 95% move)."""


class CollateralParams(BaseModel):
    """How collateral is valued (every field defaulted and documented in the README)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["cross", "segregated"] = Field("cross", description=(
        "cross: coin collateral revalued in the scenarios; segregated: haircut, not in them."))
    confidence: float = Field(0.99, gt=0.5, lt=1.0, description=(
        "Confidence of the segregated haircut (one-sided, normal at the forecast MPOR vol)."))
    haircut_floor: float = Field(0.02, ge=0.0, lt=1.0, description="Smallest segregated haircut.")
    haircut_cap: float = Field(0.5, gt=0.0, le=1.0, description="Largest segregated haircut.")
    liquidation_cost: float = Field(0.001, ge=0.0, lt=1.0, description=(
        "Cost of selling coin collateral, a fraction of its value (the cross-mode haircut; "
        "added to the segregated one). Default: a 10 bp half spread."))
    stable_haircut: Mapping[str, float] = Field(
        default_factory=lambda: {"USDT": 0.05, "USDC": 0.13}, description=(
            "Depeg haircut per stablecoin: its worst observed discount (USDC about 0.87 on "
            "2023-03-11, USDT about 0.95 on 2022-05-12)."))


class MMRule(BaseModel):
    """The maintenance margin rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["engine", "fraction", "tiered"] = Field("engine", description=(
        "engine: the engine's MM (a lower confidence); fraction: fraction x IM; tiered: a venue's "
        "bracket rate x each position's notional - its maintenance amount."))
    fraction: float = Field(0.5, gt=0.0, le=1.0, description="MM / IM for kind 'fraction'.")
    tiers: tuple[tuple[float, float, float], ...] = Field(
        ((50_000.0, 0.004, 0.0), (500_000.0, 0.005, 50.0), (8_000_000.0, 0.01, 2_550.0),
         (math.inf, 0.025, 122_550.0)), description=(
            "(notional cap USD, MM rate, maintenance amount USD) per bracket for kind 'tiered' "
            "(Binance's USD-M BTCUSDT brackets' shape; the amount keeps MM continuous)."))


class AccountParams(BaseModel):
    """Parameters of :func:`account_status`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collateral: CollateralParams = Field(default_factory=CollateralParams)
    mm: MMRule = Field(default_factory=MMRule)
    cure_hours: float = Field(24.0, gt=0.0, description="Time to meet a margin call.")
    thresholds: bool = Field(True, description="Compute the liquidation thresholds.")
    xtol: float = Field(1e-10, gt=0.0, description="Root search tolerance on the move.")
    mm_path_scenarios: int = Field(500, ge=40, description=(
        "Forecast scenarios (a fixed seeded subsample of the pool) on which the engine's MM is "
        "rescaled along a liquidation path: MM(x) = MM x ES(x) / ES(0) on the same subsample."))


@dataclass(frozen=True)
class Account:
    """One account: an id, its positions and its collateral balances (currency -> amount)."""

    id: str
    portfolio: Portfolio
    balances: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AccountStatus:
    """An account's status (amounts in USD).

    Attributes
    ----------
    id : the account id; ``mode`` the collateral mode.
    collateral_usd : collateral after haircuts; ``collateral`` per currency: amount, price, haircut,
        value.
    positions_usd : the positions' mark value (spot at the spot, futures/perpetuals unrealized P&L,
        options' mark value).
    equity_usd, im_usd, mm_usd : equity, initial and maintenance margin.
    margin_ratio : MM / equity (>= 1 liquidates; inf when equity <= 0).
    free_collateral_usd : equity - IM.
    status : "healthy", "margin_call" or "liquidation"; ``call_usd`` the amount to post (0 unless
        called) within ``cure_hours``.
    liquidation : underlying -> {"down", "up"} moves (simple returns; None beyond the scan),
        the prices there, and the revaluations the search took.
    failures : the positions that could not be margined (the rest computed).
    """

    id: str
    mode: str
    collateral_usd: float
    collateral: Mapping[str, Mapping[str, float]]
    positions_usd: float
    equity_usd: float
    im_usd: float
    mm_usd: float
    margin_ratio: float
    free_collateral_usd: float
    status: str
    call_usd: float
    cure_hours: float
    liquidation: Mapping[str, Mapping[str, Any]]
    failures: tuple[Failure, ...]
    bundle_id: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"id": self.id, "mode": self.mode, "collateral_usd": self.collateral_usd,
                "collateral": {k: dict(v) for k, v in self.collateral.items()},
                "positions_usd": self.positions_usd, "equity_usd": self.equity_usd,
                "im_usd": self.im_usd, "mm_usd": self.mm_usd,
                "margin_ratio": None if math.isinf(self.margin_ratio) else self.margin_ratio,
                "free_collateral_usd": self.free_collateral_usd, "status": self.status,
                "call_usd": self.call_usd, "cure_hours": self.cure_hours,
                "liquidation": {k: dict(v) for k, v in self.liquidation.items()},
                "failures": [f.to_dict() for f in self.failures], "bundle_id": self.bundle_id}


def _fail(account: str, fld: str, value: object, expected: str,
          reason: FailureReason = FailureReason.INVALID_VALUE) -> Failure:
    return Failure(reason, account, f"account {account}: {fld} = {value!r}; expected {expected}",
                   {"field": fld, "value": value if isinstance(value, (int, float, str)) else
                    repr(value), "expected": expected})


def tier_mm(notional: float, tiers: Sequence[tuple[float, float, float]]) -> float:
    """A venue's MM of one position of ``notional`` USD: the bracket's rate x notional - its
    maintenance amount (the bracket the notional falls in)."""
    n = abs(float(notional))
    for cap, rate, amount in tiers:
        if n <= cap:
            return max(rate * n - amount, 0.0)
    cap, rate, amount = tiers[-1]
    return max(rate * n - amount, 0.0)


def closed_form_liquidation_price(quantity: float, entry: float, collateral_usd: float,
                                  mm_rate: float, *, inverse: bool = False,
                                  contract_usd: float = 1.0) -> float:
    """The price at which one perpetual's equity meets a fixed-rate MM (no maintenance amount).

    Linear (``quantity`` coins): ``C + q (P - E) = m |q| P`` -> ``P = (C - q E) / (m |q| - q)``.
    Inverse (``quantity`` contracts of ``contract_usd`` face, collateral in USD at the moved
    price: ``C`` coins worth ``C P``): the coin P&L ``q F (1/E - 1/P)`` plus ``C`` coins must equal
    ``m |q| F / P`` coins -> ``P = (q F + m |q| F) / (C + q F / E)``."""
    q, m = float(quantity), float(mm_rate)
    if not inverse:
        return (collateral_usd - q * entry) / (m * abs(q) - q)
    f = contract_usd
    return (q * f + m * abs(q) * f) / (collateral_usd + q * f / entry)


# ---- valuation --------------------------------------------------------------------------------


def _collateral(account: Account, ms: MarketState, bundle: RiskForecastBundle,
                p: AccountParams, mpor_days: int) -> tuple[dict[str, dict[str, float]], list[
                    Position]] | Failure:
    """Each balance's price, haircut and value, and (cross mode) the coin balances as spot
    positions of the margin book."""
    cp = p.collateral
    out: dict[str, dict[str, float]] = {}
    spots: list[Position] = []
    for ccy, amount in sorted(account.balances.items()):
        a = float(amount) if isinstance(amount, (int, float)) else float("nan")
        if not math.isfinite(a) or a < 0:
            return _fail(account.id, f"balances.{ccy}", amount, "a finite amount >= 0")
        if ccy == "USD" or ccy in STABLECOINS:
            h = 0.0 if ccy == "USD" else float(cp.stable_haircut.get(ccy, 0.0))
            out[ccy] = {"amount": a, "price": 1.0, "haircut": h, "value": a * (1 - h)}
            continue
        if ccy not in UNDERLYINGS or UNDERLYINGS[ccy].spot is None:
            return _fail(account.id, "balances", ccy,
                         f"USD, a stablecoin {list(STABLECOINS)} or a coin with a spot market "
                         f"({sorted(k for k, v in UNDERLYINGS.items() if v.spot)})",
                         FailureReason.UNKNOWN_INSTRUMENT)
        st = ms.underlying(ccy)
        if isinstance(st, Failure) or st.reference is None:
            return _fail(account.id, f"balances.{ccy}", a, f"a spot price for {ccy} in the market "
                         f"state at {ms.as_of}", FailureReason.MISSING_PRICE)
        px = float(st.reference.value)
        if cp.mode == "cross":
            h = cp.liquidation_cost
            if a > 0:
                inst = Spot(f"collateral:{ccy}", ccy)
                spots.append(Position(f"collateral:{ccy}", inst, a, None, -1, inst.name))
        else:
            sym = bundle_symbol(ccy)
            if sym not in bundle.symbols:
                return _fail(account.id, f"balances.{ccy}", a, f"a forecast for {sym} in the "
                             f"bundle to haircut it (segregated mode)", FailureReason.MISSING_INPUTS)
            unit, per_day = margin_unit(bundle)
            vol, _ = horizon_vol(bundle, sym, mpor_days * per_day, unit)
            h = min(max(float(norm.ppf(cp.confidence)) * vol + cp.liquidation_cost,
                        cp.haircut_floor), cp.haircut_cap)
        out[ccy] = {"amount": a, "price": px, "haircut": h, "value": a * px * (1 - h)}
    return out, spots


def _values(positions: Sequence[Position], result: MarginResult) -> dict[str, float]:
    """Each instrument's price at the result's market state in its quote unit: spot, the
    future's or perpetual's mark (the engine's priced input), an option's mark or model premium
    (:meth:`MarketState.price`; coin for an inverse option)."""
    ctx = result.context
    assert ctx is not None
    out = {}
    for q in positions:
        inst = q.instrument
        if isinstance(inst, Option):
            key = ("account_mark", inst.name)  # one pricing per option across the accounts
            if key not in ctx.memo:
                px = ctx.market_state.price(inst)
                ctx.memo[key] = None if isinstance(px, Failure) else float(px.value)
            if ctx.memo[key] is not None:
                out[inst.name] = ctx.memo[key]
        elif inst.name in ctx.priced:
            out[inst.name] = float(ctx.priced[inst.name].inputs.price)
    return out


def _position_value(q: Position, price: float, spot: float) -> float:
    """A position's mark value in USD: spot q S; a linear future/perpetual q c (P - entry); an
    inverse one q c (1/entry - 1/P) coins x S; an option q c x premium (coin premium x S when
    inverse)."""
    inst, n = q.instrument, q.quantity * q.instrument.contract_size
    if isinstance(inst, (Perpetual, Future)):
        e = float(q.entry_price)  # parse_portfolio requires it
        if inst.inverse:
            return n * (1.0 / e - 1.0 / price) * spot
        return n * (price - e)
    if isinstance(inst, Option):
        return n * price * (spot if inst.inverse else 1.0)
    return q.quantity * price


# ---- the path ---------------------------------------------------------------------------------


def _es(pnl: NDArray[np.float64], alpha: float = 0.025) -> float:
    """Expected shortfall (a loss, positive) of a P&L sample at ``alpha``."""
    loss = np.sort(-np.asarray(pnl, dtype=np.float64))
    k = max(int(math.ceil(alpha * loss.size)), 1)
    return float(np.mean(loss[-k:]))


@dataclass
class _Path:
    """Equity minus MM along moves of one underlying (the search's evaluator).

    ``w`` the book's quantities per instrument (cross coins net of their liquidation cost);
    ``const`` the equity that does not move (cash, stablecoins after haircut, every collateral
    value at today's price), ``pos0`` the positions' value today; ``seg`` the USD amounts that
    scale with one underlying's price (segregated coins after haircut, inverse futures' accrued
    coin P&L) and their scenario column; ``tiered`` each trading position's (|quantity| x
    notional per contract today, the columns its notional moves with)."""

    book: Any
    unds: tuple[str, ...]
    w: NDArray[np.float64]
    const: float
    pos0: float
    mm0: float
    pool: NDArray[np.float64]
    es0: float
    beta: NDArray[np.float64]
    rule: MMRule
    tiered: list[tuple[float, NDArray[np.float64]]]
    seg: list[tuple[float, int]]
    evals: int = 0

    def gaps(self, xs: Sequence[float]) -> NDArray[np.float64]:
        """Equity minus MM for each move in ``xs`` (simple returns of the underlying, the others
        by their beta times it; prices kept above 0): one kernel call for all of them."""
        xs = np.asarray(xs, dtype=np.float64)
        self.evals += xs.size
        lx = np.log(np.maximum(1.0 + xs[:, None] * self.beta[None, :], 1e-9))
        base = self.w @ instrument_pnl(self.book, ScenarioSet(self.unds, lx))
        equity = self.const + self.pos0 + base
        for v0, k in self.seg:
            equity = equity + v0 * np.expm1(lx[:, k])
        if self.rule.kind == "tiered":
            mm = np.array([sum(tier_mm(n0 * math.exp(float(row @ m)), self.rule.tiers)
                               for n0, m in self.tiered) for row in lx])
        elif self.es0 > 0:
            n = self.pool.shape[0]
            stacked = (lx[:, None, :] + self.pool[None, :, :]).reshape(-1, lx.shape[1])
            pnl = (self.w @ instrument_pnl(self.book, ScenarioSet(self.unds, stacked))
                   ).reshape(xs.size, n) - base[:, None]
            mm = self.mm0 * np.array([_es(r) for r in pnl]) / self.es0
        else:
            mm = np.full(xs.size, self.mm0)
        return equity - mm

    def gap(self, x: float) -> float:
        """:meth:`gaps` of one move."""
        return float(self.gaps([x])[0])


def _thresholds_of(path: _Path, xtol: float) -> dict[str, Any]:
    """The first move down and up where equity meets MM: equity and MM evaluated at 0 and at
    every :data:`PATH_POINTS` on both sides in one call, then Brent's root in each side's first
    bracket; 0 when already at or below MM; None beyond the last point."""
    path.evals = 0
    pts = np.asarray(PATH_POINTS)
    xs = np.concatenate([[0.0], -pts, pts])
    g = path.gaps(xs)
    scan = path.evals
    row: dict[str, Any] = {}
    for key, sl in (("down", slice(1, 1 + pts.size)), ("up", slice(1 + pts.size, None))):
        path.evals = 0
        gx, xx = np.concatenate([[g[0]], g[sl]]), np.concatenate([[0.0], xs[sl]])
        if gx[0] <= 0:
            x = 0.0
        elif not (gx <= 0).any():
            x = None
        else:
            k = int(np.flatnonzero(gx <= 0)[0])
            a, b = sorted((float(xx[k - 1]), float(xx[k])))
            x = float(brentq(path.gap, a, b, xtol=xtol, rtol=4 * np.finfo(float).eps,
                             maxiter=200))
        row[key] = x
        row[f"{key}_evaluations"] = scan + path.evals
    return row


def _mm(result: MarginResult, rule: MMRule, positions: Sequence[Position],
        values: Mapping[str, float], spots: Mapping[str, float]) -> float:
    if rule.kind == "engine":
        return float(result.mm)
    if rule.kind == "fraction":
        return rule.fraction * float(result.im)
    return float(sum(tier_mm(_notional(q, values, spots), rule.tiers) for q in positions
                     if not q.id.startswith("collateral:")))


def _notional(q: Position, values: Mapping[str, float], spots: Mapping[str, float]) -> float:
    """USD notional of a position: |q| x contract x its price (linear derivatives, spot), the
    face value for inverse contracts, |q| x contract x the underlying's price for options."""
    inst = q.instrument
    if isinstance(inst, Option):
        return abs(q.quantity) * inst.contract_size * spots[inst.underlying]
    if inst.inverse:
        return abs(q.quantity) * inst.contract_size
    return abs(q.quantity) * inst.contract_size * values[inst.name]


# ---- the status -------------------------------------------------------------------------------


def account_status(account: Account, market_state: MarketState, bundle: RiskForecastBundle,
                   params: AccountParams | None = None,
                   margin_params: MarginParams | None = None,
                   contexts: dict[Any, MarginContext] | None = None) -> AccountStatus | Failure:
    """The status of one account (see the module docstring), or the failure that prevents it.
    ``contexts`` (shared across accounts by :func:`accounts_status`): the day's scenario sets and
    per-instrument P&L vectors per (underlyings, MPOR), reused by
    :func:`margin.calculator.recompute` instead of being built again for every account."""
    p = params or AccountParams()
    mp = margin_params or MarginParams()
    try:
        col = _collateral(account, market_state, bundle, p, mp.mpor("spot"))
    except DataError as exc:
        return _fail(account.id, "balances", str(exc), "valid balances")
    if isinstance(col, Failure):
        return col
    coll, coll_pos = col
    pf = account.portfolio
    book = replace(pf, positions=tuple(pf.positions) + tuple(coll_pos))
    if not book.positions:
        return _fail(account.id, "positions", 0, "at least one position or a coin balance")
    key = (frozenset(q.instrument.underlying for q in book.positions),
           book_mpor(book.positions, mp), book.margin_currency)
    if contexts is not None and key in contexts:
        result = recompute(contexts[key], book)
    else:
        result = compute_margin(book, market_state, bundle, mp)
        if contexts is not None and result.context is not None:
            contexts[key] = result.context
    ok = list(result.positions)
    if not ok:
        return _fail(account.id, "positions", [str(f) for f in result.failures][:3],
                     "a position that prices", FailureReason.MISSING_INPUTS)
    ctx = result.context
    assert ctx is not None
    vals = _values(ok, result)
    spots = {u: ctx.priced_spot(u) for u in {q.instrument.underlying for q in ok}}
    trading = [q for q in ok if not q.id.startswith("collateral:")]
    pos_usd = float(sum(_position_value(q, vals[q.instrument.name], spots[q.instrument.underlying])
                        for q in trading))
    collateral_usd = float(sum(v["value"] for v in coll.values()))
    equity = collateral_usd + pos_usd
    im = float(result.im)
    mm = _mm(result, p.mm, trading, vals, spots)
    status = "liquidation" if equity < mm else "margin_call" if equity < im else "healthy"
    call = max(im - equity, 0.0) if status != "healthy" else 0.0
    liq: dict[str, dict[str, Any]] = {}
    if p.thresholds:
        liq = _thresholds(result, ok, trading, coll, p, mm, pos_usd, vals, spots)
    return AccountStatus(
        account.id, p.collateral.mode, collateral_usd, coll, pos_usd, equity, im, mm,
        math.inf if equity <= 0 else mm / equity, equity - im, status, call, p.cure_hours, liq,
        tuple(result.failures), result.bundle_id)


def _thresholds(result: MarginResult, ok: Sequence[Position], trading: Sequence[Position],
                coll: Mapping[str, Mapping[str, float]], p: AccountParams, mm0: float,
                pos_usd: float, vals: Mapping[str, float], spots: Mapping[str, float]
                ) -> dict[str, dict[str, Any]]:
    """Each trading underlying's liquidation moves (see the module docstring)."""
    ctx = result.context
    assert ctx is not None
    insts: dict[str, Instrument] = {q.instrument.name: q.instrument for q in ok}
    names = sorted(insts)
    unds = tuple(ctx.scenarios.underlyings)
    opts = [insts[n] for n in names if isinstance(insts[n], Option)]
    bucket = {o.name: b for b, o in enumerate(opts)}
    inputs = {n: (replace(ctx.priced[n].inputs, vol_bucket=bucket[n]) if n in bucket
                  else ctx.priced[n].inputs) for n in names}
    bk = build_book([(insts[n], 1.0) for n in names], inputs,
                    {u: ctx.priced_spot(u) for u in unds}, ctx.market_state.as_of)
    w = np.zeros(len(names))
    for q in ok:
        cut = p.collateral.liquidation_cost if q.id.startswith("collateral:") else 0.0
        w[names.index(q.instrument.name)] += q.quantity * (1.0 - cut)
    # the forecast pool's price scenarios (implied vols held) and the betas they imply
    pool = np.vstack([ctx.scenarios.sets[s].log_return for s in ctx.scenarios.pools["forecast"]])
    cov = np.atleast_2d(np.cov(pool, rowvar=False))
    if pool.shape[0] > p.mm_path_scenarios:  # the MM's path ratio on a fixed subsample
        pick = np.sort(np.random.default_rng(0).choice(pool.shape[0], p.mm_path_scenarios,
                                                       replace=False))
        pool = pool[pick]
    es0 = _es(w @ instrument_pnl(bk, ScenarioSet(unds, pool)))
    const = float(sum(v["value"] for v in coll.values()))
    seg = [(float(v["value"]), unds.index(c)) for c, v in coll.items()
           if p.collateral.mode == "segregated" and c in unds]
    # an inverse future's accrued coin P&L (entry to today's mark) is worth S(x) / S0 of itself
    for q in trading:
        inst = q.instrument
        if isinstance(inst, (Perpetual, Future)) and inst.inverse:
            seg.append((_position_value(q, vals[inst.name], spots[inst.underlying]),
                        unds.index(inst.underlying)))
    tiered = []
    for q in trading:
        mask = np.zeros(len(unds))
        if isinstance(q.instrument, Option) or not q.instrument.inverse:
            mask[unds.index(q.instrument.underlying)] = 1.0
        tiered.append((_notional(q, vals, spots), mask))
    out: dict[str, dict[str, Any]] = {}
    for u in sorted({q.instrument.underlying for q in trading}):
        j = unds.index(u)
        beta = cov[:, j] / cov[j, j] if cov[j, j] > 0 else np.eye(len(unds))[j]
        beta = np.array(beta, dtype=np.float64)
        beta[j] = 1.0
        path = _Path(bk, unds, w, const, pos_usd, mm0, pool, es0, beta, p.mm, tiered, seg)
        row = _thresholds_of(path, p.xtol)
        for key in ("down", "up"):
            row[f"{key}_price"] = None if row[key] is None else spots[u] * (1.0 + row[key])
        out[u] = row
    return out


def accounts_status(accounts: Sequence[Account], market_state: MarketState,
                    bundle: RiskForecastBundle, params: AccountParams | None = None,
                    margin_params: MarginParams | None = None
                    ) -> list[AccountStatus | Failure]:
    """Every account's status in order; a duplicate id or a bad account is a failure of its own
    and the others still compute."""
    seen: set[str] = set()
    out: list[AccountStatus | Failure] = []
    contexts: dict[Any, MarginContext] = {}
    for a in accounts:
        if a.id in seen:
            out.append(_fail(a.id, "id", a.id, "a unique account id"))
            continue
        seen.add(a.id)
        out.append(account_status(a, market_state, bundle, params, margin_params, contexts))
    return out


# ---- accounts files ---------------------------------------------------------------------------


def parse_accounts(text: str, fmt: str, *, as_of: object, source: str = "<text>"
                   ) -> tuple[list[Account], list[Failure]]:
    """Accounts from JSON or CSV text (pure; see the README's "Accounts").

    JSON: a list of ``{"id", "balances": {currency: amount}, "positions": [position rows as in a
    portfolio file]}`` (or that list under ``"accounts"``). CSV: header
    ``account,kind,name,quantity,entry_price``, ``kind`` ``balance`` (``name`` the currency,
    ``quantity`` the amount) or ``position`` (``name`` the instrument). Bad position rows are
    failures inside each account's portfolio; an account without an id, or a balance that is not
    a number, is a failure of its own; a file whose structure is wrong raises DataError."""
    import csv
    import io
    import json

    from margin.portfolio import parse_portfolio

    raw: list[dict[str, Any]] = []
    if fmt == "json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}: not JSON ({exc})", source=source) from exc
        items = doc.get("accounts") if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise DataError(f"{source}: expected a list of accounts (or {{\"accounts\": [...]}}); "
                            f"got {type(items).__name__}", source=source)
        raw = items
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO("\n".join(
            ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")))))
        need = {"account", "kind", "name", "quantity"}
        if not rows or not need <= set(rows[0]):
            raise DataError(f"{source}: the CSV header must hold {sorted(need)} (and entry_price)",
                            source=source)
        by: dict[str, dict[str, Any]] = {}
        for i, r in enumerate(rows, start=2):
            a = by.setdefault(r["account"], {"id": r["account"], "balances": {},
                                              "positions": []})
            if r["kind"] == "balance":
                try:
                    a["balances"][r["name"]] = float(r["quantity"])
                except ValueError:
                    a["balances"][r["name"]] = r["quantity"]
            elif r["kind"] == "position":
                pos = {"instrument": r["name"], "quantity": r["quantity"], "id": f"line {i}"}
                if r.get("entry_price"):
                    pos["entry_price"] = r["entry_price"]
                a["positions"].append(pos)
            else:
                raise DataError(f"{source} line {i}: kind = {r['kind']!r}; expected 'balance' "
                                "or 'position'", source=source, column="kind")
        raw = list(by.values())
    else:
        raise DataError(f"unknown accounts format {fmt!r}; expected 'json' or 'csv'",
                        source=source)
    accounts: list[Account] = []
    failures: list[Failure] = []
    for k, item in enumerate(raw):
        aid = item.get("id") if isinstance(item, dict) else None
        if not isinstance(aid, str) or not aid.strip():
            failures.append(_fail(f"#{k}", "id", aid, "a non-empty account id"))
            continue
        bal = item.get("balances") or {}
        if not isinstance(bal, dict):
            failures.append(_fail(aid, "balances", bal, "an object {currency: amount}"))
            continue
        bad = {c: v for c, v in bal.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
        if bad:
            c, v = next(iter(bad.items()))
            failures.append(_fail(aid, f"balances.{c}", v, "a number"))
            continue
        pos = item.get("positions") or []
        pf = parse_portfolio(json.dumps(pos), "json", as_of=as_of, source=f"{source}:{aid}",
                             name=aid)
        accounts.append(Account(aid, pf, {c: float(v) for c, v in bal.items()}))
    return accounts, failures

