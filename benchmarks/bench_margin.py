"""Latency of the margin engine on one 500-position account (issue 17's performance figures).

Usage::

    python benchmarks/bench_margin.py [--positions 500] [--fhs-days 1100] [--mc 1000]
                                      [--repeat 30] [--threads 2] [--quick] [--seed 3]

Builds (seeded) a synthetic risk-forecast bundle for 5 crypto underlyings (BTC, ETH, SOL, XRP,
ADA: flat per-day variance forecasts, ``--fhs-days`` days of t(5) residuals, a t-copula, stressed
matrices, vol-of-vol) and a market state (spot = index, perpetual marks, funding, a smile with
skew and curvature per underlying, r = 0), and one account of ``--positions`` positions: per
underlying 80% options (linear and inverse, calls and puts, 6 expiries from 7 to 180 days,
strikes 0.7-1.3 x spot), 10% perpetuals (linear and inverse), 10% spot. Default parameters: the
stress grid (5 underlyings alone + all together, 7 moves x 3 IV states = 126 scenarios) plus
``--fhs-days`` FHS scenarios and ``--mc`` Monte Carlo scenarios per correlation matrix (forecast,
high, low), and the same draws at stressed vols.

Timings (JIT excluded by a warm-up; ``--repeat`` runs each; p50 and p99 printed):

1. **cold**: ``compute_margin`` from the market state: pricing every position, building every
   scenario set, revaluing every instrument in every scenario, the chain and the attribution;
   also split into building the day's scenario sets (``prepare``: book-independent, cacheable
   per bundle, parameters and MPOR) and pricing + revaluation + chain on them;
2. **warm**: ``recompute`` of the same account on the context's cached scenarios and
   per-instrument P&L vectors (no revaluation): the chain, attribution and explain;
3. **what-if**: ``what_if(..., full=False)`` (the pre-trade check: IM, MM, components) with one
   new option on a held underlying (revalued alone) and with a held instrument (no
   revaluation); and ``what_if`` with the combined book's full attribution and explain (target
   shown: the warm one).

Targets (issue 17, 2-core machine): cold p99 <= 50 ms, warm p99 <= 10 ms, what-if p99 <= 5 ms.
The machine's load average is printed: the figures are wall times on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np
import pandas as pd

from margin.calculator import compute_margin, prepare, recompute, what_if
from margin.instruments import Option, OptionRight, Perpetual, Settlement, Spot
from margin.market_state import FundingQuote, MarketState, Quote, UnderlyingState
from margin.params import MarginParams
from margin.portfolio import Portfolio, Position
from models.forecast import (
    CorrForecast,
    Innovation,
    Member,
    Provenance,
    RiskForecastBundle,
    StressedCorrelation,
    VolOfVol,
)

AS_OF = pd.Timestamp("2025-03-03T08:00Z")
COINS = ("BTC", "ETH", "SOL", "XRP", "ADA")
SPOT = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0, "XRP": 0.6, "ADA": 0.45}
VOL = {"BTC": 0.03, "ETH": 0.04, "SOL": 0.05, "XRP": 0.05, "ADA": 0.055}
EXPIRIES = (7, 14, 30, 60, 90, 180)


class Smile:
    """A smile in log-moneyness k = ln(K / F): vol(k) = atm + skew k + curv k^2 (floored)."""

    def __init__(self, spot: float, atm: float, skew: float = -0.1, curv: float = 0.4) -> None:
        self.spot, self.atm, self.skew, self.curv = spot, atm, skew, curv

    def implied_vol(self, strike: object, expiry: object) -> np.ndarray:
        k = np.log(np.asarray(strike, dtype=np.float64) / self.spot)
        return np.maximum(self.atm + self.skew * k + self.curv * k * k, 0.05)


def make_bundle(n_days: int, seed: int) -> RiskForecastBundle:
    """The synthetic bundle (see the module docstring)."""
    rng = np.random.default_rng(seed)
    syms = tuple(f"{c}USDT" for c in COINS)
    m = len(syms)
    origin = AS_OF - pd.Timedelta(hours=8)
    rows = [{"unit": "1D", "symbol": s, "horizon": h, "model_id": "garch", "model_version": "1",
             "origin_ts": origin, "data_cutoff_ts": origin, "forecast_var": VOL[c] ** 2,
             "scale": 1.0, "scale_lo": 1.0, "scale_hi": 1.0}
            for c, s in zip(COINS, syms, strict=True) for h in (1, 2, 5)]
    r = np.full((m, m), 0.6)
    np.fill_diagonal(r, 1.0)
    corr = {"1D": CorrForecast(corr=np.stack([r] * 3)[None], symbols=syms,
                               origins=pd.DatetimeIndex([origin]), horizons=(1, 2, 5),
                               model_id="dcc", model_version="1", data_cutoff_ts=origin,
                               horizon_unit="1D")}
    ts = pd.date_range(end=origin, periods=n_days, freq="1D", tz="UTC")
    z = rng.standard_normal((n_days, m)) @ np.linalg.cholesky(r).T
    z = z / np.sqrt(rng.chisquare(5.0, n_days) / 5.0)[:, None] * np.sqrt(3 / 5)
    sig = np.exp(rng.normal(0.0, 0.2, size=(n_days, m))) * np.array([VOL[c] for c in COINS])
    res = pd.concat([pd.DataFrame({"unit": "1D", "symbol": s, "ts": ts, "ret": z[:, j] * sig[:, j],
                                   "sigma_issued": sig[:, j], "z": z[:, j]})
                     for j, s in enumerate(syms)], ignore_index=True)
    hi, lo = np.full((m, m), 0.9), np.full((m, m), 0.1)
    np.fill_diagonal(hi, 1.0)
    np.fill_diagonal(lo, 1.0)
    dates = pd.date_range("2022-05-01", periods=5, freq="7D", tz="UTC")
    vov = {c: VolOfVol(c, {1: {0.01: -0.15, 0.99: 0.2}, 2: {0.01: -0.2, 0.99: 0.28}}, -0.2,
                       "(30/max(DTE,7))^p", 0.5, 30.0, "implied:DVOL",
                       pd.Timestamp("2021-03-24", tz="UTC"), origin, 7.0) for c in COINS}
    return RiskForecastBundle(
        as_of=AS_OF, symbols=syms, vol_table=pd.DataFrame(rows), corr=corr, residuals=res,
        innovations={s: Innovation("t", {"nu": 5.0}, n_days, "bench") for s in syms},
        copula_df=5.0, stressed=StressedCorrelation(r, hi, lo, dates, dates, "bench"),
        vol_of_vol=vov, provenance=Provenance((Member("vol:1D", "garch", "1", "champion"),)))


def make_state() -> MarketState:
    """Spot = index, perpetual marks 0.05% above, 8h funding 1 bp, a smile, r = 0."""
    def q(v: float, unit: str = "USD") -> Quote:
        return Quote(v, unit, "bench", AS_OF)

    unds = {c: UnderlyingState(
        c, spot=q(SPOT[c]), index=q(SPOT[c]), marks={f"{c}USDT-PERP": q(SPOT[c] * 1.0005)},
        funding=FundingQuote(q(0.0001, "per_period"), pd.Timedelta("8h")),
        vol_surface=Smile(SPOT[c], VOL[c] * np.sqrt(365)), vol_surface_source=q(0.6, "fraction"),
        rate=q(0.0, "fraction")) for c in COINS}
    return MarketState(AS_OF, unds, (), source="bench")


def make_account(n: int, seed: int) -> tuple[Portfolio, list[Option]]:
    """The account, and a few options it does not hold (the what-if trades)."""
    rng = np.random.default_rng(seed)
    positions: list[Position] = []
    spare: list[Option] = []
    per = n // len(COINS)
    for c in COINS:
        s0 = SPOT[c]
        n_opt, n_perp = int(0.8 * per), int(0.1 * per)
        for i in range(per + 3):
            exp = AS_OF.normalize() + pd.Timedelta(days=int(rng.choice(EXPIRIES)), hours=8)
            k = float(np.round(s0 * rng.uniform(0.7, 1.3), 6))
            inv = bool(rng.integers(2)) and c in ("BTC", "ETH")
            opt = Option(f"{c}-{exp:%d%b%y}-{k:g}-{'C' if i % 2 else 'P'}-{i}", c, 1.0,
                         Settlement.INVERSE if inv else Settlement.LINEAR, "bench", exp, k,
                         OptionRight.CALL if i % 2 else OptionRight.PUT)
            if i >= n_opt:
                if len(spare) < 8:
                    spare.append(opt)
                continue
            positions.append(Position(f"{c}-o{i}", opt, float(rng.choice([-1, 1]) *
                                                               rng.uniform(1, 20)), None, i, opt.name))
        for i in range(n_perp):
            inv = i % 2 == 1
            inst = Perpetual(f"{c}-PERP-{'INV' if inv else 'LIN'}", c, 10.0 if inv else 1.0,
                             Settlement.INVERSE if inv else Settlement.LINEAR, "bench")
            positions.append(Position(f"{c}-p{i}", inst, float(rng.uniform(-50, 50)) or 1.0,
                                      s0, i, inst.name))
        for i in range(per - n_opt - n_perp):
            inst = Spot(f"{c}USDT", c)
            positions.append(Position(f"{c}-s{i}", inst, float(rng.uniform(0.1, 5)), s0, i,
                                      inst.name))
    return Portfolio("bench-500", tuple(positions), (), AS_OF), spare


def pct(times: list[float], q: float) -> float:
    """Percentile in milliseconds."""
    return float(np.percentile(np.asarray(times) * 1e3, q))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positions", type=int, default=500)
    ap.add_argument("--fhs-days", type=int, default=1100)
    ap.add_argument("--mc", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--threads", type=int, default=min(2, numba.config.NUMBA_NUM_THREADS))
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="5 repeats")
    args = ap.parse_args(argv)
    repeat = 5 if args.quick else args.repeat
    numba.set_num_threads(args.threads)
    bundle, state = make_bundle(args.fhs_days, args.seed), make_state()
    pf, spare = make_account(args.positions, args.seed)
    params = MarginParams(mc_n_scenarios=args.mc)
    t0 = time.perf_counter()
    res = compute_margin(pf, state, bundle, params)  # JIT / cache load
    warmup = time.perf_counter() - t0
    assert not res.failures, res.failures[:3]
    n_s = res.explain["n_scenarios"]
    fhs = n_s.get("fhs", 0)
    print(f"margin engine: {len(pf.positions)} positions ({len(res.context.index)} instruments) on "
          f"{len(COINS)} underlyings; scenarios {sum(n_s.values()):,} ({n_s}); FHS {fhs:,} >= 1,000: "
          f"{fhs >= 1000}; threads={args.threads}, cpus={os.cpu_count()}, "
          f"load avg {os.getloadavg()[0]:.1f}; warm-up {warmup:.1f} s")
    print(f"IM {res.im:,.2f} USD, MM {res.mm:,.2f}; components "
          f"{ {k: round(v, 2) for k, v in res.components.items() if v} }")
    cold, warm, wi_new, wi_held, wi_full, build, reval = [], [], [], [], [], [], []
    unds = sorted({q.instrument.underlying for q in pf.positions})
    for i in range(repeat):
        t0 = time.perf_counter()
        r = compute_margin(pf, state, bundle, params)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ctx = prepare(state, bundle, params, unds, res.context.scenarios.mpor_days)
        build.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        recompute(ctx, pf)
        reval.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        w = recompute(r.context, pf)
        warm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        a = what_if(r, (spare[i % len(spare)], -2.0), full=False)
        wi_new.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        what_if(r, (pf.positions[0].instrument, 1.0), full=False)
        wi_held.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = what_if(r, (spare[i % len(spare)], -2.0))
        wi_full.append(time.perf_counter() - t0)
        assert abs(a.im - b.im) <= 1e-9 * b.im
        assert abs(w.im - r.im) <= 1e-9 * r.im
    for name, ts, target in (("cold (from market state)", cold, 50),
                             ("  of which: scenario sets", build, None),
                             ("  of which: price+revalue+chain", reval, None), ("warm (cached P&L)", warm, 10),
                             ("what-if, new instrument", wi_new, 5),
                             ("what-if, held instrument", wi_held, 5),
                             ("what-if + full attribution", wi_full, 10)):
        p99 = pct(ts, 99)
        verdict = "" if target is None else (f"target {target} ms: "
                                             f"{'ok' if p99 <= target else 'MISSED'}")
        print(f"{name:32s} p50 {pct(ts, 50):7.1f} ms   p99 {p99:7.1f} ms   {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
