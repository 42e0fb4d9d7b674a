"""The margin backtest: every method's margin day by day over history from what was known each day,
against the clean realized loss over the margin period of risk (``dprm backtest``, the weekly
``backtest`` flow).

Each day ``t`` of the window:

- **forecasts** come from the forecast ledger as issued at ``t`` (the champion's walk-forward
  history and issues, every other evaluated candidate's, the EWMA baseline's); a model without
  history over the window is first walked forward by the same protocol and seeded into the ledger
  (``source = walk_forward``; the output's ``seeded`` says which). The bundle of day ``t`` is
  built from the ledger at ``t`` exactly as the forecast flow builds it (variance scale, residual
  distributions), so no number uses information after ``t``;
- **market state**: the closes at ``t`` (and, for option books, the underlying's vol index as a
  flat surface, the engine's own rule where no chain is stored);
- **reference portfolios** (:func:`reference_portfolios`, rule below) are formed at ``t`` with
  USD 1 M of notional per leg and held frozen through the MPOR;
- **margin** of every method (:data:`METHODS`) by the engine (:func:`margin.methods.compute_method`);
  the pre-anti-procyclicality VaR99 of the same scenarios where the method has scenarios;
- **realized loss**: the positions frozen at ``t`` revalued at the close ``h`` trading days later
  (``h`` the book's MPOR): the end-of-MPOR price and, for options, the end-of-MPOR vol index on a
  flat surface with the options ``h`` days older. Option P&L is therefore **model-reconstructed**
  (``pnl_source``); it uses the observed vol index, not the margin model's spot-vol dynamics (with
  a flat surface sticky-moneyness and sticky-strike coincide). Equity-index books carry no
  funding; dividends and rates enter through the forward only.

Reference portfolios from the dataset's symbols (sorted by history length, then name; ``A`` the
first, ``B`` the second): ``long`` (+1 M of A), ``short`` (-1 M of A), ``pair`` (+1 M A, -1 M B),
``diversified`` (1 M split equally over up to ten symbols), and where A has a vol index: ``straddle``
(short a 30-day at-the-money call and put on 1 M), ``covered_call`` (+1 M A, short a 30-day 5% OTM
call on it), ``calendar`` (short 30-day, long 60-day at-the-money calls on 1 M), ``delta_hedged``
(long a 30-day at-the-money call on 1 M, short its Black delta in A), and where A has a perpetual
with daily marks (``perp_dataset``): ``basis`` (+1 M of A spot, short the same coins of A's USD-M
perpetual; the perpetual revalued at its end-of-MPOR mark, its funding reported apart as
``carry_usd``). Option expiries are the
first day on or after ``t + 30`` (60) days: the book is re-formed each day (a daily roll), frozen
within the MPOR.

The anti-procyclicality tools are replayed over each margin series with
:func:`margin.apc.apc_step` (variants :data:`APC_VARIANTS`), from the first day of the window; the
floor's margin (``floor_usd``) is a second engine run of the day on the bundle with the long-run
variances (:func:`pipelines.apc_state.long_run_bundle`, as the daily cycle computes it).

Outputs under ``$DPRM_HOME/backtest/<dataset>/<run key>/``: ``parts/`` (one parquet per chunk of
days: the checkpoint a killed run resumes from), ``backtest.parquet`` (long format, one row per
date x portfolio x method x APC variant; :data:`COLUMNS`), ``summary.json`` (the statistics of
:func:`score`), all written atomically; a rerun with the same inputs writes the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import ConfigError, DataError
from features.schema import CLOSE, SYMBOL, TS
from features.store import DataStore, atomic_write_bytes, atomic_write_parquet
from margin import backtest as bt
from margin.apc import APCParams, apc_step
from margin.calculator import book_mpor
from margin.instruments import Option, OptionRight, Perpetual, Spot
from margin.market_state import FlatVolSurface, FundingQuote, MarketState, Quote, UnderlyingState
from margin.methods import compute_method
from margin.params import MarginParams
from margin.portfolio import Portfolio, Position
from margin.pricing import black76_price, year_fraction
from models import catalog
from models.bundle_build import ModelRef, build_bundle
from models.corr import returns_panel
from models.ledger import ForecastLedger
from models.run_record import dprm_version
from pipelines import steps
from pipelines.apc_state import long_run_bundle
from pipelines.bundles import BASELINE, ledger_path
from pipelines.market import (
    BINANCE_FUNDING_INTERVAL,
    daily_closes,
    daily_marks,
    day_of,
    funding_events,
    underlying_of_symbol,
    vol_of_vol_at,
)

__all__ = [
    "APC_VARIANTS", "COLUMNS", "CRASHES", "DEMO_METHODS", "DEMO_PORTFOLIOS", "METHODS",
    "BacktestRun", "ChunkInputs", "ChunkJob", "MethodSpec", "reference_portfolios", "run_backtest",
    "run_chunk", "score",
]

NOTIONAL_USD = 1_000_000.0
"""Notional per leg of every reference portfolio."""
CHUNK_DAYS = 60
"""Days per checkpointed chunk."""
SEED_YEARS = 2.0
"""A model seeded by walk-forward issues from this many years before the window (its residual
history; the EWMA baseline from the start of the data, it costs nothing)."""
FLOOR_YEARS = 10.0
"""Look-back of the APC floor's volatility (APCParams.floor_years' default)."""
REFIT_EVERY = 21
"""Days between refits of a backtest bundle's residual distributions and variance scale (the
forecasts themselves are the ledger's, issued every day); 1 refits daily as the forecast flow
does."""


@dataclass(frozen=True)
class MethodSpec:
    """A backtested method: the engine's ``method`` with parameter overrides, driven by the
    forecasts of ledger model ``model`` (a key: "champion", "ewma", or an evaluated candidate such
    as "garch_1_1", "lgbm")."""

    method: str
    model: str = "champion"
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""


METHODS: dict[str, MethodSpec] = {
    "dprm": MethodSpec("dprm", "champion", {}, "DPRM, the champion's forecasts"),
    "dprm_garch": MethodSpec("dprm", "garch_1_1", {}, "DPRM engine, GARCH(1,1) forecasts"),
    "dprm_lgbm": MethodSpec("dprm", "lgbm", {}, "DPRM engine, LightGBM forecasts"),
    "dprm_ewma": MethodSpec("dprm", "ewma", {}, "DPRM engine, EWMA baseline forecasts"),
    "fhs_ewma_94": MethodSpec("fhs_ewma", "ewma", {"ewma_lambda": 0.94}, "FHS-EWMA 0.94"),
    "fhs_ewma_97": MethodSpec("fhs_ewma", "ewma", {"ewma_lambda": 0.97}, "FHS-EWMA 0.97"),
    "fhs_ewma_94_var": MethodSpec("fhs_ewma", "ewma", {"ewma_lambda": 0.94, "measure": "var"},
                                  "FHS-EWMA 0.94 at VaR99 (the yardstick's measure)"),
    "hvar": MethodSpec("hvar", "ewma", {}, "historical ES, unfiltered"),
    "fixed": MethodSpec("fixed", "ewma", {}, "fixed % of notional, tiered"),
    "span": MethodSpec("span", "ewma", {}, "SPAN-style"),
    "deribit": MethodSpec("deribit", "ewma", {}, "Deribit-style"),
}
"""Every backtested method. The legacy methods read only prices from their bundle (their
forecasts are their own): the EWMA baseline's, whose ledger history spans the whole data, so their
return windows are as long as the data allows from the first day of the window."""

DEMO_METHODS = ("dprm", "fhs_ewma_94", "hvar", "fixed")
DEMO_PORTFOLIOS = ("long", "pair", "straddle")
PORTFOLIOS = ("long", "short", "pair", "diversified", "basis", "straddle", "covered_call",
              "calendar", "delta_hedged")
OPTION_BOOKS = ("straddle", "covered_call", "calendar", "delta_hedged")
PERP_BOOKS = ("basis",)

APC_VARIANTS: dict[str, APCParams | None] = {
    "none": None,
    "buffer": APCParams(tools=("buffer",)),
    "buffer_cap": APCParams(tools=("buffer",), max_daily_increase=0.10),
    "buffer_floor": APCParams(tools=("buffer", "floor")),
}
"""Anti-procyclicality replayed on each series: none; a releasable 25% buffer (rebuilt at most 5%
a day); the buffer with a 10% cap on the daily increase; the buffer and the floor at the margin
from a ten-year volatility (the engine's methods only: ``floor_usd``; where the history behind a
day is shorter, all of it is the proxy, as the daily cycle does)."""

CRASHES = ("2008-09-29", "2008-10-15", "2011-08-08", "2015-08-24", "2018-02-05", "2020-03-12",
           "2021-05-19", "2022-06-13", "2022-11-09", "2025-10-10")
"""Named crash days the lead metric looks at where the data covers them."""

COLUMNS = {
    "date": "the day t the margin is called (UTC close)",
    "portfolio": "reference portfolio",
    "method": "key of METHODS",
    "apc": "anti-procyclicality variant (APC_VARIANTS)",
    "margin_usd": "initial margin held over the MPOR (after the APC variant)",
    "base_margin_usd": "initial margin before anti-procyclicality",
    "mm_usd": "maintenance margin before anti-procyclicality",
    "floor_usd": "the same method's IM at the long-run volatility of the history behind t (ten "
                 "years, else all of it: the APC floor; the engine's methods only, else NaN)",
    "var99_usd": "VaR99 of the method's scenarios before anti-procyclicality (NaN: no scenarios)",
    "var975_usd": "VaR97.5 of the same scenarios (the ES test's threshold)",
    "es975_usd": "ES97.5 of the same scenarios",
    "realized_loss_usd": "clean loss over the MPOR (positions frozen, revalued at its end)",
    "carry_usd": "funding the book's perpetual legs received (+) or paid (-) over the MPOR, at the "
                 "day-t mark; reported apart from the clean loss (NaN: no perpetual leg)",
    "breach": "realized_loss_usd > margin_usd",
    "var_breach": "realized_loss_usd > var99_usd",
    "mpor_days": "MPOR in trading days",
    "notional_usd": "gross notional of the book at t",
    "bundle_id": "the forecast bundle of day t",
    "pnl_source": "'market' or 'model-reconstructed: ...' (option books)",
    "n_failures": "positions of the book the method could not margin that day (0 expected)",
    "vol_index": "the first symbol's vol index at t as a fraction (VIX, DVOL; NaN: none)",
    "selection_overlap": "the champion was selected on data overlapping the window",
}
"""The long-format output's columns."""


def _utc(ts: object) -> pd.Timestamp:
    t = pd.Timestamp(ts)  # type: ignore[arg-type]
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


# ---- reference portfolios ------------------------------------------------------------------------


def _expiry(t: pd.Timestamp, days: int) -> pd.Timestamp:
    return (t + pd.Timedelta(days=days)).normalize() + pd.Timedelta(hours=21)


def _opt(u: str, t: pd.Timestamp, days: int, k: float, right: str) -> Option:
    e = _expiry(t, days)
    return Option(f"{u}-{e:%Y%m%d}-{k:.6g}-{right}", u, expiry_ts=e, strike=float(k),
                  right=OptionRight(right))


def _fwd(s: float, r: float, q: float, tau: float) -> float:
    return s * math.exp((r - q) * tau)


def reference_portfolios(names: Sequence[str], symbols: Sequence[str], t: pd.Timestamp,
                         spot: Mapping[str, float], vol: Mapping[str, float],
                         rate: float, dividend: Mapping[str, float],
                         perp: Mapping[str, str] | None = None) -> dict[str, Portfolio]:
    """The reference portfolios ``names`` at ``t`` (see the module docstring for the rule); an
    option book is left out where the first symbol has no implied vol ``vol`` that day, the basis
    book where it has no perpetual with a mark that day (``perp``: spot symbol -> perpetual)."""
    a = symbols[0]
    out: dict[str, list[tuple[Any, float]]] = {}
    q_a = NOTIONAL_USD / spot[a]
    for n in names:
        if n == "long":
            out[n] = [(Spot(a, a), q_a)]
        elif n == "short":
            out[n] = [(Spot(a, a), -q_a)]
        elif n == "pair" and len(symbols) > 1:
            b = symbols[1]
            out[n] = [(Spot(a, a), q_a), (Spot(b, b), -NOTIONAL_USD / spot[b])]
        elif n == "diversified":
            pick = list(symbols[:10])
            out[n] = [(Spot(s, s), NOTIONAL_USD / len(pick) / spot[s]) for s in pick]
        elif n == "basis" and perp and a in perp:
            out[n] = [(Spot(a, a), q_a), (Perpetual(perp[a], a, venue="binance"), -q_a)]
        elif n in OPTION_BOOKS and a in vol:
            s0 = spot[a]
            if n == "straddle":
                out[n] = [(_opt(a, t, 30, round(s0), "C"), -q_a), (_opt(a, t, 30, round(s0), "P"), -q_a)]
            elif n == "covered_call":
                out[n] = [(Spot(a, a), q_a), (_opt(a, t, 30, round(1.05 * s0), "C"), -q_a)]
            elif n == "calendar":
                out[n] = [(_opt(a, t, 30, round(s0), "C"), -q_a), (_opt(a, t, 60, round(s0), "C"), q_a)]
            elif n == "delta_hedged":
                o = _opt(a, t, 30, round(s0), "C")
                tau = year_fraction(t, o.expiry)
                from margin.pricing import black76_greeks
                g = black76_greeks(_fwd(s0, rate, dividend.get(a, 0.0), tau), o.strike, tau,
                                   vol[a], True, rate)
                d_spot = float(np.asarray(g.delta).ravel()[0]) * math.exp(
                    (rate - dividend.get(a, 0.0)) * tau)
                out[n] = [(o, q_a), (Spot(a, a), -q_a * d_spot)]
    res = {}
    for n, legs in out.items():
        pos = tuple(Position(f"{n}{i}", inst, float(qty), None, i, inst.name)
                    for i, (inst, qty) in enumerate(legs))
        res[n] = Portfolio(n, pos, (), t)
    return res


def _value(inst: Any, t: pd.Timestamp, s: float, vol: float | None, rate: float, q: float,
           mark: float | None = None) -> float:
    """Value per unit of an instrument at ``t`` (spot: the price; a linear perpetual: its
    ``mark``; option: discounted Black-76 on the forward at the flat ``vol``; at or after expiry,
    the intrinsic value at ``s``)."""
    if isinstance(inst, Perpetual):
        if mark is None:
            raise DataError(f"no mark for {inst.name} at {t}", column="mark")
        return mark
    if isinstance(inst, Option):
        tau = year_fraction(t, inst.expiry)
        if tau <= 0:
            return max(0.0, (s - inst.strike) if inst.is_call else (inst.strike - s))
        f = _fwd(s, rate, q, tau)
        return float(np.asarray(black76_price(f, inst.strike, tau, vol, inst.is_call, rate)).ravel()[0])
    return s


def realized_loss(pf: Portfolio, t0: pd.Timestamp, t1: pd.Timestamp, s0: Mapping[str, float],
                  s1: Mapping[str, float], v0: Mapping[str, float], v1: Mapping[str, float],
                  rate: float, dividend: Mapping[str, float],
                  m0: Mapping[str, float] | None = None, m1: Mapping[str, float] | None = None
                  ) -> float:
    """The clean loss from ``t0`` to ``t1`` of the frozen positions: each revalued at ``t1`` at
    the end price ``s1``, vol ``v1`` and perpetual mark ``m1`` (by instrument name; time
    advanced), minus its value at ``t0``. Funding is not in it (:func:`funding_carry`)."""
    pnl = 0.0
    for p in pf.positions:
        u = p.instrument.underlying
        q = dividend.get(u, 0.0)
        n = p.instrument.name
        a = _value(p.instrument, t0, s0[u], v0.get(u), rate, q, (m0 or {}).get(n))
        b = _value(p.instrument, t1, s1[u], v1.get(u), rate, q, (m1 or {}).get(n))
        pnl += p.quantity * (b - a)
    return -pnl


def funding_carry(pf: Portfolio, t0: pd.Timestamp, t1: pd.Timestamp, m0: Mapping[str, float],
                  funding: Mapping[str, pd.Series | None]) -> float:
    """Funding the book's linear perpetuals receive (+) or pay (-) from the close ``t0`` to the
    close ``t1``: ``-quantity x mark_t0 x`` the sum of the funding rates of the events after
    ``t0`` up to and including ``t1`` (longs pay a positive rate; the events as
    :func:`pipelines.market.funding_events` gives them, on the minute). NaN where a leg has no
    funding events in the window; 0 for a book without perpetuals."""
    c0 = day_of(t0) + pd.Timedelta(days=1)
    c1 = day_of(t1) + pd.Timedelta(days=1)
    total = 0.0
    for p in pf.positions:
        if not isinstance(p.instrument, Perpetual):
            continue
        ev = funding.get(p.instrument.name)
        if ev is None:
            return float("nan")
        w = ev[(ev.index > c0) & (ev.index <= c1)]
        if w.empty:
            return float("nan")
        total += -p.quantity * m0[p.instrument.name] * float(w.sum())
    return total


def _notional(pf: Portfolio, s: Mapping[str, float]) -> float:
    return float(sum(abs(p.quantity) * s[p.instrument.underlying] for p in pf.positions))


# ---- inputs ------------------------------------------------------------------------------------


@dataclass
class BacktestRun:
    """A finished backtest: the long table, its statistics, where they were written, and what was
    seeded into the ledger."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    out_dir: Path
    seeded: list[str]
    resumed_chunks: int = 0


def _ledger_refs(ledger: ForecastLedger, unit: str, symbols: Sequence[str]
                 ) -> dict[str, ModelRef]:
    """Model key -> ledger ref: "champion" (the model with alias champion in the latest bundle,
    else the highest-version ``<name>:<candidate>`` entry... resolved by the caller), candidates
    by suffix, "ewma" the baseline."""
    m = ledger.models()
    m = m[(m["kind"] == "vol") & (m["unit"] == unit) & m["symbols"].isin(list(symbols))]
    refs: dict[str, ModelRef] = {}
    for mid, ver in sorted(set(zip(m["model_id"].astype(str), m["model_version"].astype(str),
                                   strict=True))):
        if (mid, ver) == (BASELINE.name, BASELINE.version):
            refs["ewma"] = BASELINE
        elif ":" in mid:
            refs.setdefault(mid.split(":", 1)[1], ModelRef(mid, ver, None))
    return refs


def _champion(home: Path, dataset: str, freq: str) -> tuple[str, str] | None:
    """(ledger model id, version) of the champion member of the dataset's latest bundle."""
    from pipelines.margin_run import bundle_path
    try:
        p = bundle_path(home, dataset, "latest", freq)
    except ConfigError:
        return None
    if not (p / "bundle.json").is_file():
        return None
    from models.forecast import RiskForecastBundle
    b = RiskForecastBundle.load(p)
    for mem in b.provenance.members:
        if mem.alias == "champion" and mem.role.startswith("vol"):
            return mem.name, mem.version
    return None


def _first_issue(ledger: ForecastLedger, ref: ModelRef, unit: str, symbols: Sequence[str]
                 ) -> pd.Timestamp | None:
    """The latest of the symbols' first issue times of ``ref`` in the ledger (None: a symbol has
    none)."""
    m = ledger.models()
    rows = m[(m["kind"] == "vol") & (m["model_id"] == ref.name) & (m["model_version"] == ref.version)
             & (m["unit"] == unit)]
    firsts = []
    for s in symbols:
        r = rows[rows["symbols"] == s]
        if r.empty:
            return None
        firsts.append(pd.Timestamp(r["first_as_of"].min()))
    return max(firsts)


def _seed(home: Path, ledger: ForecastLedger, key: str, data: pd.DataFrame, unit: str,
          horizons: tuple[int, ...], before: pd.Timestamp | None, progress: Callable[[str], None],
          origins_from: pd.Timestamp | None = None) -> ModelRef:
    """Walk model ``key`` forward over ``data`` (fitted on the data before each origin; origins
    from ``origins_from`` and before ``before``, where the ledger's own history starts) and seed
    the ledger; the reference it is seeded under."""
    from pipelines.flow_config import TrainFlowConfig

    if key == "ewma":
        ref = BASELINE
        model = catalog.build("ewma", min_obs=None)
    else:
        spec = TrainFlowConfig().candidates.get(key)
        if spec is None:
            raise ConfigError(f"cannot seed model {key!r}: not a training candidate "
                              f"({sorted(TrainFlowConfig().candidates)})")
        model = steps.build_model(spec)
        ref = ModelRef(f"backtest-seed:{key}", "wf", None)
    lo = data[TS].min() if origins_from is None else max(data[TS].min(), origins_from)
    progress(f"seeding the ledger: walking {key} forward over {lo:%Y-%m-%d}.."
             f"{data[TS].max():%Y-%m-%d}")
    start = None if origins_from is None else origins_from
    fcs = model.walk_forward(data, horizons, start=start)
    table = pd.concat([f.to_frame() for f in fcs.values()], ignore_index=True)
    table["model_id"], table["model_version"], table["unit"] = ref.name, ref.version, unit
    if before is not None:
        table = table[pd.to_datetime(table["origin_ts"], utc=True) < before]
    ledger.seed_walk_forward(table)
    return ref


def _seed_corr(ledger: ForecastLedger, home: Path, dataset: str, symbols: Sequence[str],
               horizons: tuple[int, ...], days: pd.DatetimeIndex) -> ModelRef:
    """EWMA correlation issued at every day of the window (seeded once; the correlation
    champion is not walked forward daily)."""
    ref = ModelRef("ewma_corr", "baseline", "fallback")
    key = "|".join(sorted(symbols))
    m = ledger.models()
    row = m[(m["kind"] == "corr") & (m["model_id"] == ref.name) & (m["symbols"] == key)]
    if not row.empty and pd.Timestamp(row["first_as_of"].iloc[0]) <= days[0] and pd.Timestamp(
            row["last_as_of"].iloc[0]) >= days[-1]:
        return ref
    prices, panel_freq = steps.correlation_prices(home, dataset, "1D")
    prices = prices[prices[SYMBOL].isin(list(symbols)) & (prices[TS] <= days[-1])]
    panel = returns_panel(prices, freq=panel_freq, realized=False)
    ts = pd.DatetimeIndex(panel.ts)
    # fitted on the data before the window only (its recursion starts from that second moment),
    # so each day's cutoff is its own origin
    fit_panel = returns_panel(prices[prices[TS] <= days[0]], freq=panel_freq, realized=False)
    model = catalog.build("ewma_corr").fit(fit_panel)
    fc = model.predict(panel, horizons, origins=ts[(ts >= days[0]) & (ts <= days[-1])])
    import dataclasses
    fc = dataclasses.replace(fc, model_id=ref.name, model_version=ref.version)
    ledger.append_corr(fc, source="walk_forward")
    return ref


def _run_key(dataset: str, days: pd.DatetimeIndex, methods: Sequence[str],
             portfolios: Sequence[str], params_hash: str, models: Mapping[str, ModelRef]) -> str:
    doc = json.dumps({"dataset": dataset, "start": str(days[0]), "end": str(days[-1]),
                      "methods": list(methods), "portfolios": list(portfolios),
                      "params": params_hash, "models": {k: [v.name, v.version]
                                                        for k, v in sorted(models.items())}},
                     sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


# ---- the replay ----------------------------------------------------------------------------------


def _tail(pnl: np.ndarray | None) -> tuple[float, float, float, np.ndarray]:
    """(VaR99, VaR97.5, ES97.5, the losses at or beyond VaR97.5 as float32) of a scenario P&L."""
    from margin.measures import measure

    if pnl is None or pnl.size < 40:
        return float("nan"), float("nan"), float("nan"), np.zeros(0, np.float32)
    v99 = measure(pnl, 0.99, "var").value
    t975 = measure(pnl, 0.975, "es")
    v975 = measure(pnl, 0.975, "var").value
    losses = -pnl
    tail = np.sort(losses[losses >= v975])[::-1].astype(np.float32)
    return v99, v975, t975.value, tail


def _chunk(days: pd.DatetimeIndex, closes: pd.DataFrame, vix: Mapping[str, pd.Series],
           ledger: ForecastLedger, refs: Mapping[str, ModelRef], corr_ref: ModelRef | None,
           symbols: Sequence[str], methods: Sequence[str], portfolios: Sequence[str],
           params: MarginParams, rate: float, dividend: Mapping[str, float],
           horizons: tuple[int, ...], selection_overlap: bool,
           switch: Mapping[str, tuple[pd.Timestamp, ModelRef]] | None = None,
           all_days: pd.DatetimeIndex | None = None, refit_every: int = 1,
           perp: Mapping[str, PerpData] | None = None) -> pd.DataFrame:
    """The rows of one chunk of days (before anti-procyclicality). The bundle's residual
    distributions and variance scale are fitted on the window's days ``0, refit_every, ...``
    (``all_days``) and reused until the next fit day (1: every day, as the forecast flow does).
    ``perp``: spot symbol -> its perpetual's daily marks and funding events (the basis book)."""
    perp = perp or {}
    funding = {d.symbol: d.funding for d in perp.values()}
    long_run: dict[tuple[str, str], Any] = {}
    idx = closes.index
    rows: list[dict[str, Any]] = []
    need = sorted({METHODS[m].model for m in methods})
    mp = {m: params.model_copy(update=dict(METHODS[m].params)) for m in methods}
    fits: dict[tuple[str, str, pd.Timestamp], tuple[pd.DataFrame, dict, float | None]] = {}
    vovs: dict[pd.Timestamp, dict[str, Any]] = {}
    syms = sorted(symbols)

    def bundle_at(t: pd.Timestamp, ref: ModelRef, **fit: Any) -> Any:
        return build_bundle(
            ledger, t, symbols=syms, vol_models={"1D": ref}, closes={"1D": closes.loc[:t, syms]},
            corr_models={"1D": corr_ref} if corr_ref is not None else None,
            horizons={"1D": horizons}, fallback_models={"1D": BASELINE}
            if ref != BASELINE else None, code_version=dprm_version(), random_state=0, **fit)

    for t in days:
        k = int(idx.get_loc(t))
        i = int(all_days.get_loc(t)) if all_days is not None else 0
        r = all_days[(i // refit_every) * refit_every] if all_days is not None else t
        bundles = {}
        for key in need:
            ref = refs[key]
            if switch and key in switch and t < switch[key][0]:
                ref = switch[key][1]
            ck = (key, ref.name, r)
            if r not in vovs:
                vovs[r] = vol_of_vol_at(vix, closes, r)
            if ck not in fits:  # the residual distributions and the variance scale, fitted at r
                fb = bundle_at(r, ref, scale_n_boot=199, fit_residual_distribution=True,
                               vol_of_vol=vovs[r])
                fits[ck] = (fb.vol_table[["unit", "symbol", "horizon", "scale", "scale_lo",
                                          "scale_hi"]].copy(), dict(fb.innovations), fb.copula_df)
                if r == t:
                    bundles[key] = fb
                    continue
            sc, inn, cdf = fits[ck]
            bundles[key] = bundle_at(t, ref, scale=sc, innovations=inn, copula_df=cdf,
                                     vol_of_vol=vovs[r])
        s0 = {s: float(closes.at[t, s]) for s in symbols}
        day = day_of(t)
        v0 = {u: float(v.loc[day]) / 100.0 for u, v in vix.items() if day in v.index}
        unds = {}
        for s in symbols:
            st = UnderlyingState(s, spot=Quote(s0[s], "USD", "close", t),
                                 rate=Quote(rate, "rate", "backtest", t),
                                 dividend_yield=Quote(dividend.get(s, 0.0), "yield", "backtest", t))
            if s in v0:
                st = UnderlyingState(s, spot=st.spot, rate=st.rate, dividend_yield=st.dividend_yield,
                                     vol_surface=FlatVolSurface(v0[s]),
                                     vol_index=Quote(v0[s], "vol", "vol index", t))
            pd_ = perp.get(s)
            if pd_ is not None and day in pd_.marks.index:
                fq = None
                if pd_.funding is not None:
                    last = pd_.funding[pd_.funding.index <= day + pd.Timedelta(days=1)]
                    if len(last):
                        fq = FundingQuote(Quote(float(last.iloc[-1]), "per_period",
                                                f"funding[{pd_.symbol}]", t),
                                          BINANCE_FUNDING_INTERVAL)
                st = dataclasses.replace(st, marks={pd_.symbol: Quote(
                    float(pd_.marks.loc[day]), "USD", f"{pd_.source}[{pd_.symbol}]", t)},
                    funding=fq)
            unds[s] = st
        ms = MarketState(t, unds, source="backtest")
        m0 = {d.symbol: float(d.marks.loc[day]) for d in perp.values() if day in d.marks.index}
        names = {s: d.symbol for s, d in perp.items() if d.symbol in m0}
        books = reference_portfolios(portfolios, symbols, t, s0, v0, rate, dividend, names)
        for name, pf in books.items():
            h = book_mpor(pf.positions, params)
            if k + h >= len(idx):
                continue
            t1 = idx[k + h]
            s1 = {s: float(closes.at[t1, s]) for s in symbols}
            d1 = day_of(t1)
            v1 = {u: float(v.loc[d1]) / 100.0 for u, v in vix.items() if d1 in v.index}
            is_opt = any(isinstance(p.instrument, Option) for p in pf.positions)
            if is_opt and not all(p.instrument.underlying in v1 for p in pf.positions
                                  if isinstance(p.instrument, Option)):
                continue
            is_perp = any(isinstance(p.instrument, Perpetual) for p in pf.positions)
            m1 = {d.symbol: float(d.marks.loc[d1]) for d in perp.values() if d1 in d.marks.index}
            if is_perp and not all(p.instrument.name in m1 for p in pf.positions
                                   if isinstance(p.instrument, Perpetual)):
                continue
            loss = realized_loss(pf, t, t1, s0, s1, v0, v1, rate, dividend, m0, m1)
            carry = funding_carry(pf, t, t1, m0, funding) if is_perp else float("nan")
            src = ("model-reconstructed: Black-76 on a flat surface at the vol index, end-of-MPOR "
                   "vol index and spot" if is_opt else
                   "market: spot close and perpetual mark" if is_perp else "market")
            for m in methods:
                spec = METHODS[m]
                b = bundles[spec.model]
                r = compute_method(spec.method, pf, ms, b, mp[m])
                fl = float("nan")
                if spec.method == "dprm":
                    if (spec.model, b.bundle_id) not in long_run:
                        long_run[(spec.model, b.bundle_id)] = long_run_bundle(b, FLOOR_YEARS)[0]
                    fl = float(compute_method("dprm", pf, ms, long_run[(spec.model, b.bundle_id)],
                                              mp[m]).im)
                v99, v975, e975, tail = _tail(r.scenario_pnl)
                rows.append({
                    "date": t, "portfolio": name, "method": m, "base_margin_usd": float(r.im),
                    "mm_usd": float(r.mm), "floor_usd": fl, "var99_usd": v99, "var975_usd": v975,
                    "es975_usd": e975, "realized_loss_usd": float(loss), "carry_usd": carry,
                    "mpor_days": h,
                    "notional_usd": _notional(pf, s0), "bundle_id": b.bundle_id,
                    "pnl_source": src, "n_failures": len(r.failures),
                    "selection_overlap": selection_overlap,
                    "n_scenarios": 0 if r.scenario_pnl is None else int(r.scenario_pnl.size),
                    "vol_index": float(v0.get(symbols[0], float("nan"))),
                    "tail": tail.tobytes()})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PerpData:
    """A spot symbol's perpetual for the basis book: its store symbol, daily marks (keyed by
    :func:`day_of`), the mark tables they come from, and its funding events (None: none)."""

    symbol: str
    marks: pd.Series
    source: str
    funding: pd.Series | None


@dataclass(frozen=True)
class ChunkInputs:
    """What every chunk of one backtest reads (picklable: a Dask worker gets a copy)."""

    ledger_root: str
    closes: pd.DataFrame
    vix: Mapping[str, pd.Series]
    refs: Mapping[str, ModelRef]
    corr_ref: ModelRef | None
    symbols: tuple[str, ...]
    methods: tuple[str, ...]
    portfolios: tuple[str, ...]
    params: MarginParams
    rate: float
    dividend: Mapping[str, float]
    horizons: tuple[int, ...]
    overlap: bool
    switch: Mapping[str, tuple[pd.Timestamp, ModelRef]]
    all_days: pd.DatetimeIndex
    refit_every: int
    perp: Mapping[str, PerpData] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkJob:
    """One checkpointed chunk: its days and the parquet part it writes."""

    inputs: ChunkInputs
    days: pd.DatetimeIndex
    path: str
    label: str


def run_chunk(job: ChunkJob) -> str:
    """Compute one chunk and write its part atomically (a part already there is kept: a resumed
    run recomputes nothing it finished); returns the part's path."""
    p = Path(job.path)
    if p.is_file():
        return job.path
    x = job.inputs
    f = _chunk(job.days, x.closes, x.vix, ForecastLedger(x.ledger_root), x.refs, x.corr_ref,
               x.symbols, x.methods, x.portfolios, x.params, x.rate, x.dividend, x.horizons,
               x.overlap, x.switch, x.all_days, x.refit_every, x.perp)
    atomic_write_parquet(p, f)
    return job.path


def _apc(frame: pd.DataFrame) -> pd.DataFrame:
    """Every APC variant replayed over each (portfolio, method) series, in date order."""
    out = []
    for variant, ap in APC_VARIANTS.items():
        f = frame.copy()
        floor = ap is not None and "floor" in ap.tools
        if floor:  # the floor's variant only where the method has one
            f = f[f["floor_usd"].notna()].copy()
            if f.empty:
                continue
        f["apc"] = variant
        if ap is None:
            f["margin_usd"] = f["base_margin_usd"]
        else:
            vals = np.empty(len(f))
            for _, g in f.groupby(["portfolio", "method"], sort=True):
                prev = None
                for i, d, base, fl in zip(g.index, g["date"], g["base_margin_usd"],
                                          g["floor_usd"], strict=True):
                    st = apc_step(prev, d.strftime("%Y-%m-%d"), max(float(base), 0.0), ap,
                                  floor=max(float(fl), 0.0) if floor else None)
                    vals[f.index.get_loc(i)] = st.margin
                    prev = st
            f["margin_usd"] = vals
        out.append(f)
    res = pd.concat(out, ignore_index=True)
    res["breach"] = res["realized_loss_usd"] > res["margin_usd"]
    res["var_breach"] = res["realized_loss_usd"] > res["var99_usd"]
    return res


def run_backtest(home: Path | str, dataset: str, *, start: object = None, end: object = None,
                 methods: Sequence[str] = DEMO_METHODS,
                 portfolios: Sequence[str] = DEMO_PORTFOLIOS,
                 params: MarginParams | None = None, symbols: Sequence[str] | None = None,
                 rate: float = 0.025, history_years: float = 6.0, refit_every: int = REFIT_EVERY,
                 dividend: Mapping[str, float] | None = None,
                 progress: Callable[[str], None] | None = None,
                 chunk_days: int = CHUNK_DAYS,
                 chunk_runner: Callable[[Sequence[ChunkJob]], object] | None = None,
                 perp_dataset: str | None = None) -> BacktestRun:
    """Backtest ``methods`` x ``portfolios`` on ``dataset``'s daily data over [start, end] (default:
    the span where the champion has issued history, else the whole data after a year of warm-up),
    each day's history at most ``history_years`` long, the bundles' distribution fits renewed every
    ``refit_every`` days.
    Writes the outputs (module docstring) and returns them. ``chunk_runner`` runs the chunk
    jobs with :func:`run_chunk` (default: in order; the flow maps them on Prefect's task runner, so
    they also run on Dask workers). The basis book reads the first symbol's perpetual marks and
    funding from ``perp_dataset`` (default: ``dataset`` itself)."""
    home = Path(home)
    say = progress or (lambda s: None)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ConfigError(f"unknown method(s) {bad}; choose from {list(METHODS)}")
    badp = [p for p in portfolios if p not in PORTFOLIOS]
    if badp:
        raise ConfigError(f"unknown portfolio(s) {badp}; choose from {list(PORTFOLIOS)}")
    params = params or MarginParams()
    dividend = dict({"SP500": 0.02, "NASDAQ": 0.01} if dividend is None else dividend)
    data = steps.model_frame(home, dataset, "1D")
    if data.empty or CLOSE not in data.columns:
        raise DataError(f"{dataset}/1D has no feature rows with closes: build features first "
                        "(`dprm data ingest`, `dprm features build`)", source=dataset)
    closes = data.pivot_table(index=TS, columns=SYMBOL, values=CLOSE, aggfunc="last").sort_index()
    if symbols is not None:
        missing = sorted(set(symbols) - set(closes.columns))
        if missing:
            raise ConfigError(f"symbols {missing} are not in {dataset}; it has "
                              f"{sorted(closes.columns)}")
        closes = closes[list(symbols)]
        data = data[data[SYMBOL].isin(list(symbols))]
    lengths = closes.notna().sum()
    def has_vol(s: str) -> bool:
        u = underlying_of_symbol(s)
        return u is not None and u.vol_index is not None

    symbols = sorted(closes.columns, key=lambda s: (-int(lengths[s]), not has_vol(s), str(s)))
    if "pair" in portfolios and len(symbols) < 2:
        portfolios = [p for p in portfolios if p != "pair"]
    closes = closes[symbols].dropna()
    ledger = ForecastLedger(ledger_path(home))
    horizons = (1, 2, 5)
    refs = _ledger_refs(ledger, "1D", symbols)
    champ = _champion(home, dataset, "1D")
    if champ is not None:
        refs["champion"] = ModelRef(champ[0], champ[1], "champion")
    first_ok = closes.index[min(len(closes) - 1, 260)]
    t0 = _utc(start) if start is not None else None
    if t0 is None:
        r = refs.get("champion")
        m = ledger.models()
        if r is not None:
            row = m[(m["model_id"] == r.name) & (m["kind"] == "vol")]
            t0 = max(pd.Timestamp(row["first_as_of"].min()), first_ok)
        else:
            t0 = first_ok
    t1 = _utc(end) if end is not None else closes.index[-1]
    days = closes.index[(closes.index >= t0) & (closes.index <= t1)]
    if len(days) < 30:
        raise DataError(f"the window {t0:%Y-%m-%d}..{t1:%Y-%m-%d} holds {len(days)} days of "
                        f"{dataset}; need >= 30", source=dataset)
    # the history behind each day: at most history_years before the window (the seeded
    # walk-forward, the residuals and the scale start there; thin early data does not leak in)
    h0 = days[0] - pd.Timedelta(days=round(365.25 * history_years))
    data = data[data[TS] >= h0]
    closes = closes[closes.index >= h0]
    seeded: list[str] = []
    if "champion" not in refs:
        forecast = [m for m in methods if METHODS[m].method == "dprm" and METHODS[m].model ==
                    "champion"]
        if forecast:
            raise ConfigError(f"{dataset} has no champion (no bundle from `dprm forecast`): train "
                              f"one (`dprm train --data {dataset}`, then `dprm forecast`) or "
                              "backtest the engine on a named model's walk-forward "
                              "(dprm_ewma, dprm_garch, dprm_lgbm)")
    need = sorted({METHODS[m].model for m in methods})
    switch: dict[str, tuple[pd.Timestamp, ModelRef]] = {}
    hist = data[data[TS] <= days[-1]]
    done: set[str] = set()
    for key in sorted(need, key=lambda k: k != "ewma"):
        ref = refs.get(key)
        first = None if ref is None else _first_issue(ledger, ref, "1D", symbols)
        if ref is not None and first is not None and first <= days[0] + pd.Timedelta(days=4):
            continue
        cand = key if ref is None or key != "champion" else ref.name.split(":")[-1]
        if cand == "ewma" and "ewma" in done:
            continue
        seed_ref = _seed(home, ledger, cand, hist, "1D", horizons, first, say,
                         origins_from=None if cand == "ewma" else days[0] - pd.Timedelta(
                             days=round(365.25 * SEED_YEARS)))
        done.add(cand)
        if ref is None or first is None:
            refs[key] = seed_ref
            seeded.append(f"{key}: walked forward over the whole window")
        else:
            switch[key] = (first, seed_ref)
            seeded.append(f"{key}: walked forward before its first issue {first:%Y-%m-%d}")
    ledger.refresh()
    corr_ref = _seed_corr(ledger, home, dataset, symbols, horizons, days) \
        if len(symbols) > 1 else None
    ledger.refresh()
    vix: dict[str, pd.Series] = {}
    store = DataStore(home / "data")
    if any(p in OPTION_BOOKS for p in portfolios):
        u = underlying_of_symbol(symbols[0])
        if u is not None and u.vol_index:
            got = daily_closes(store, dataset, u.vol_index, days[-1] + pd.Timedelta(days=10))
            if got is not None:
                vix[symbols[0]] = got[0]
        if not vix:
            say(f"no vol index for {symbols[0]}: the option books are left out")
            portfolios = [p for p in portfolios if p not in OPTION_BOOKS]
    perp: dict[str, PerpData] = {}
    if any(p in PERP_BOOKS for p in portfolios):
        pds = perp_dataset or dataset
        u = underlying_of_symbol(symbols[0])
        psym = None if u is None else u.perpetual
        got = None
        if psym is not None and store.exists(pds):
            got = daily_marks(store, pds, psym, days[-1] + pd.Timedelta(days=10))
        if got is None:
            say(f"no perpetual marks for {symbols[0]} in {pds}: the basis book is left out")
            portfolios = [p for p in portfolios if p not in PERP_BOOKS]
        else:
            perp[symbols[0]] = PerpData(psym, got[0], got[1], funding_events(
                store, pds, psym, days[-1] + pd.Timedelta(days=10)))
    overlap = "champion" in need and champ is not None
    pkey = "" if not perp else f"/perp:{perp_dataset or dataset}"
    key = _run_key(dataset, days, methods, portfolios,
                   params.params_hash + f"/refit{refit_every}" + pkey,
                   {**{k: refs[k] for k in need}, **{f"{k}@seed": v[1] for k, v in switch.items()}})
    out_dir = home / "backtest" / dataset / key
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    chunks = [days[i:i + chunk_days] for i in range(0, len(days), chunk_days)]
    resumed = 0
    inputs = ChunkInputs(str(ledger_path(home)), closes, vix, refs, corr_ref, tuple(symbols),
                         tuple(methods), tuple(portfolios), params, rate, dividend, horizons,
                         overlap, switch, days, refit_every, perp)
    jobs: list[ChunkJob] = []
    paths = []
    for i, c in enumerate(chunks):
        path = parts_dir / f"{i:05d}.parquet"
        paths.append(path)
        if path.is_file():
            resumed += 1
            continue
        jobs.append(ChunkJob(inputs, c, str(path), f"chunk {i + 1}/{len(chunks)}: "
                             f"{c[0]:%Y-%m-%d}..{c[-1]:%Y-%m-%d}"))
    if chunk_runner is None:
        for j in jobs:
            run_chunk(j)
            say(j.label)
    else:
        chunk_runner(jobs)
    raw = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    frame = _apc(raw.drop(columns=["tail"]))
    frame = frame[["date", "portfolio", "method", "apc", "margin_usd", "base_margin_usd", "mm_usd",
                   "floor_usd",
                   "var99_usd", "var975_usd", "es975_usd", "realized_loss_usd", "carry_usd", "breach",
                   "var_breach", "mpor_days", "notional_usd", "bundle_id", "pnl_source",
                   "n_failures", "selection_overlap", "vol_index"]].sort_values(
        ["portfolio", "method", "apc", "date"], kind="stable").reset_index(drop=True)
    tails = {(r.portfolio, r.method, r.date): np.frombuffer(r.tail, np.float32).astype(float)
             for r in raw[["portfolio", "method", "date", "tail"]].itertuples(index=False)}
    nsc = {(r.portfolio, r.method, r.date): int(r.n_scenarios)
           for r in raw[["portfolio", "method", "date", "n_scenarios"]].itertuples(index=False)}
    summary = score(frame, tails, nsc)
    summary["meta"] = {"dataset": dataset, "start": str(days[0].date()), "end": str(days[-1].date()),
                       "n_days": int(len(days)), "methods": list(methods),
                       "portfolios": sorted(set(frame["portfolio"])), "symbols": list(symbols),
                       "seeded": seeded, "models": {k: [refs[k].name, refs[k].version]
                                                    for k in need},
                       "correlation": None if corr_ref is None else corr_ref.name,
                       "selection_overlap": (
                           "the champion was selected on an evaluation window that overlaps the "
                           "backtest window" if overlap else "none"),
                       "params_hash": params.params_hash, "run_key": key}
    atomic_write_parquet(out_dir / "backtest.parquet", frame)
    atomic_write_bytes(out_dir / "summary.json",
                       json.dumps(summary, indent=2, sort_keys=True, default=_jsonable).encode())
    atomic_write_bytes(home / "backtest" / dataset / "latest.json",
                       json.dumps({"run_key": key, "path": str(out_dir)}, indent=2).encode())
    return BacktestRun(frame, summary, out_dir, seeded, resumed)


def ingest_only(home: Path | str, path: Path, dataset: str | None = None) -> str:
    """Ingest ``path`` (a file or folder any reader detects) into the store without building
    features (a perpetuals folder for the basis book: its marks and funding are read as stored);
    returns the dataset name. Idempotent."""
    from features.ingest import ingest_file
    from features.readers import list_sources

    store = DataStore(Path(home) / "data")
    files = [f for f, fmt, _ in list_sources(path) if fmt is not None] if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no data files a reader recognizes", source=str(path))
    names = {ingest_file(store, f, dataset=dataset).dataset for f in files}
    if len(names) != 1:
        raise ConfigError(f"{path} went into several datasets {sorted(names)}; pass --dataset")
    return names.pop()


def prepare_dataset(home: Path | str, path: Path, dataset: str | None = None) -> str:
    """Ingest ``path`` (a file or folder any reader detects) into the store and build its daily
    features; returns the dataset name (``dataset``, else the file's folder name). Idempotent:
    a source already stored adds nothing."""
    from pipelines.config import FeaturesConfig

    ds = ingest_only(home, path, dataset)
    steps.build_feature_frame(Path(home), ds, FeaturesConfig(freq="1D"))
    return ds


def step_path(n_before: int, n_after: int, multiplier: float, *, vol_1d: float = 0.02,
              seed: int = 0, noise: bool = True) -> pd.DataFrame:
    """A synthetic daily OHLCV path (24/7 days from 2000-01-01) whose daily log-return volatility
    steps from ``vol_1d`` to ``multiplier x vol_1d`` after ``n_before`` days: Gaussian returns, or
    with ``noise=False`` returns of exactly the day's vol with random signs (the step without
    sampling noise); high/low from a half-normal excursion of the day's own vol, so range
    estimators see the step."""
    rng = np.random.default_rng(seed)
    sig = np.r_[np.full(n_before, vol_1d), np.full(n_after, multiplier * vol_1d)]
    z = rng.standard_normal(sig.size)
    r = sig * (z if noise else np.sign(z))
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.r_[100.0, close[:-1]]
    ex = np.abs(rng.standard_normal((2, sig.size))) * sig * 0.5
    high = np.maximum(open_, close) * np.exp(ex[0])
    low = np.minimum(open_, close) * np.exp(-ex[1])
    dates = pd.date_range("2000-01-01", periods=sig.size, freq="D")
    return pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "open": open_, "high": high,
                         "low": low, "close": close, "volume": 1.0})


def impulse_response(home: Path | str, *, multipliers: Sequence[float] = (2.0, 3.0),
                     methods: Sequence[str] = ("dprm_ewma", "fhs_ewma_94", "hvar"),
                     n_before: int = 1000, n_after: int = 120, window: int = 60,
                     horizons: Sequence[int] = (1, 5, 20, 60), seed: int = 0,
                     noise: bool = True,
                     progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The margin's response to a synthetic step in volatility: for each multiplier a path
    (:func:`step_path`) is ingested as its own dataset, backtested over ``window`` days either side
    of the step on the ``long`` book, and each method's margin ``k`` days after the step is
    reported relative to its margin the day before (the true vol ratio is the multiplier; the ES
    of a scale family moves by exactly that)."""
    home = Path(home)
    out = []
    for k in multipliers:
        name = f"step{str(k).replace('.', 'p')}x{'' if noise else 'exact'}"
        src = home / "synthetic" / f"{name}_1d.parquet"
        src.parent.mkdir(parents=True, exist_ok=True)
        path = step_path(n_before, n_after, float(k), seed=seed, noise=noise)
        atomic_write_parquet(src, path)
        ds = prepare_dataset(home, src, name)
        step = pd.Timestamp(path["date"].iloc[n_before], tz="UTC")
        run = run_backtest(home, ds, start=step - pd.Timedelta(days=window),
                           end=step + pd.Timedelta(days=window), methods=methods,
                           portfolios=("long",), progress=progress)
        f = run.frame[run.frame["apc"].isin(["none", "buffer"])]
        for (m, ap), g in f.groupby(["method", "apc"], sort=True):
            g = g.sort_values("date").reset_index(drop=True)
            dates = pd.DatetimeIndex(g["date"]).tz_convert("UTC").normalize()
            # the first day whose MPOR return is drawn at the new vol: the close of the step day
            at = int(np.searchsorted(dates.values, step.normalize().to_datetime64()))
            resp = bt.step_response(g["margin_usd"].to_numpy(), at, horizons=horizons)
            out.append({"multiplier": float(k), "noise": noise, "method": m, "apc": ap,
                        **{f"after_{h}d": v for h, v in resp.items()}})
    atomic_write_bytes(home / "backtest" / "impulse.json",
                       json.dumps(out, indent=2, sort_keys=True).encode())
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return str(x)


# ---- statistics ----------------------------------------------------------------------------------


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def score(frame: pd.DataFrame, tails: Mapping[tuple, np.ndarray] | None = None,
          n_scenarios: Mapping[tuple, int] | None = None, *, p: float = 0.01,
          reference: str = "fhs_ewma_94", n_sim: int = 1000) -> dict[str, Any]:
    """The statistics of a backtest table (:data:`COLUMNS`), per portfolio x method x APC variant:
    coverage of VaR99 (Kupiec, Christoffersen; pre-APC, so only for variant "none") and of the
    final margin (one-sided, traffic light per 250-day block and the yellow band), the ES test
    (Z2 with a simulated 5% critical value, where the method has scenarios), shortfall and excess,
    procyclicality, the crash leads, and the cost at equal coverage against ``reference``."""
    rows = []
    tails = tails or {}
    n_scenarios = n_scenarios or {}
    ref_mult: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    groups = list(frame.groupby(["portfolio", "method", "apc"], sort=True))
    for (pf, m, ap), g in groups:
        g = g.sort_values("date")
        lo = g["realized_loss_usd"].to_numpy()
        mg = g["margin_usd"].to_numpy()
        h = int(g["mpor_days"].max())
        fin = bt.coverage_tests(g["breach"].to_numpy(), p, h=h)
        zones = bt.window_zones(g["breach"].to_numpy(), 250, p)
        rec: dict[str, Any] = {
            "portfolio": pf, "method": m, "apc": ap, "n": int(len(g)),
            "expected": len(g) * p, "breaches": fin.n_breaches, "p_upper": fin.p_pof_upper,
            "mean_margin_pct": float(np.mean(mg / g["notional_usd"].to_numpy()) * 100),
            "red_windows": sum(z["zone"] == "red" for z in zones),
            "yellow_windows": sum(z["zone"] == "yellow" for z in zones),
            "n_windows": len(zones), "yellow_band": list(bt.yellow_band(len(zones))) if zones
            else [0, 0], **{f"sf_{k}": v for k, v in bt.shortfall(lo, mg).items()},
            **{f"excess_{k}": v for k, v in bt.excess(lo, mg).items()},
            **{f"pc_{k}": v for k, v in bt.procyclicality(mg).items()},
        }
        v = g["var99_usd"].to_numpy()
        if ap == "none" and np.isfinite(v).all():
            ct = bt.coverage_tests(g["var_breach"].to_numpy(), p, h=h)
            rec.update({"var_breaches": ct.n_breaches, "p_pof": ct.p_pof, "p_ind": ct.p_ind,
                        "p_cc": ct.p_cc, "null": ct.null})
            e, v975 = g["es975_usd"].to_numpy(), g["var975_usd"].to_numpy()
            if np.all(e > 0):
                z2 = bt.az_z2(lo, v975, e, 0.025)
                keys = [(pf, m, d) for d in g["date"]]
                if all(k in tails for k in keys):
                    null = bt.az_z2_null([tails[k] for k in keys],
                                         [n_scenarios.get(k, 0) for k in keys], v975, e, 0.025,
                                         n_sim=n_sim, seed=0)
                    rec.update({"z2": z2, "z2_crit5": float(np.quantile(null, 0.05)),
                                "z2_p": float((1 + np.sum(null <= z2)) / (1 + null.size))})
                else:
                    rec["z2"] = z2
        leads = {}
        for c in CRASHES:
            x = bt.crash_lead(list(g["date"]), mg, c)
            if x is not None:
                leads[c] = x
        rec["crash_leads"] = leads
        rec["multiplier_mean"] = float(np.mean(bt.cost_multiplier(lo, mg, p)))
        if m == reference:
            ref_mult[(pf, ap)] = (bt.cost_multiplier(lo, mg, p) * mg, g["date"].to_numpy())
        rows.append((rec, lo, mg, g["date"].to_numpy()))
    out = []
    for rec, lo, mg, dates in rows:
        r = ref_mult.get((rec["portfolio"], rec["apc"]))
        if r is not None and len(r[0]) == len(mg) and np.array_equal(r[1], dates) and len(mg) >= 40:
            adj = bt.cost_multiplier(lo, mg, p) * mg
            ratio, lo_ci, hi_ci = bt.ratio_interval(adj, r[0], block=20, n_boot=499, seed=0)
            rec.update({"cost_ratio": ratio, "cost_ratio_lo": lo_ci, "cost_ratio_hi": hi_ci})
        out.append({k: (_finite(v) if isinstance(v, float) else v) for k, v in rec.items()})
    terciles = _mm_by_tercile(frame, "deribit")
    by = {"mm_vs_deribit_by_vol_tercile": terciles}
    if out:
        pv = [(i, r["p_cc"]) for i, r in enumerate(out) if r.get("p_cc") is not None]
        for (i, _), adj in zip(pv, bt.holm([x for _, x in pv]), strict=True):
            out[i]["p_cc_holm"] = adj
        pv = [(i, r["p_pof"]) for i, r in enumerate(out) if r.get("p_pof") is not None]
        for (i, _), adj in zip(pv, bt.holm([x for _, x in pv]), strict=True):
            out[i]["p_pof_holm"] = adj
    by["rows"] = out
    return by


def _mm_by_tercile(frame: pd.DataFrame, reference: str) -> list[dict[str, Any]]:
    """Option books: each method's mean MM over ``reference``'s (MM with MM, before APC) within
    each tercile of the vol index (terciles of the book's own days)."""
    out: list[dict[str, Any]] = []
    f = frame[(frame["apc"] == "none") & frame["portfolio"].isin(OPTION_BOOKS)]
    if f.empty or reference not in set(f["method"]) or f["vol_index"].isna().all():
        return out
    for pf, g in f.groupby("portfolio", sort=True):
        ref = g[g["method"] == reference].set_index("date")
        edges = np.quantile(ref["vol_index"], [1 / 3, 2 / 3])
        band = pd.Series(np.digitize(ref["vol_index"], edges), index=ref.index)
        for m, x in g[g["method"] != reference].groupby("method", sort=True):
            x = x.set_index("date").reindex(ref.index)
            for k, name in enumerate(("low", "mid", "high")):
                sel = band == k
                if sel.any():
                    out.append({"portfolio": pf, "method": m, "tercile": name,
                                "vol_index_max": float(ref["vol_index"][sel].max()),
                                "mm_ratio": float(x["mm_usd"][sel].mean()
                                                  / ref["mm_usd"][sel].mean()),
                                "n": int(sel.sum())})
    return out


def summary_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """The per-method table of a summary (one row per portfolio x method x APC variant)."""
    return pd.DataFrame([{k: v for k, v in r.items() if k != "crash_leads"}
                         for r in summary.get("rows", [])])
