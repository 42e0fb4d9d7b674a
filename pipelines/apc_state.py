"""The anti-procyclicality state step of the daily cycle (before margin is published): reads the
previous day's last state of a portfolio from ``$DPRM_HOME/apc/<dataset>/<portfolio>/`` (one file
per as_of, ``<YYYY-MM-DDTHHMMSSZ>.json``: an hourly cycle computes a day several times, each from
the previous day's state), runs :func:`margin.apc.apc_step` and writes the state once (atomic;
the same inputs again write nothing, different inputs for a recorded as_of are an error, a missing
day is refused).

The floor's ten-year margin is the engine's margin of the same book on a bundle whose forecast
variances are replaced by the long-run variance of each symbol's returns over the last
``floor_years`` of the bundle's residual history (all of it, flagged as a proxy, where the history
is shorter).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.calendar import session_dates
from features.errors import DataError
from features.store import atomic_write_bytes
from features.symbols import symbol_meta
from margin.apc import APCParams, APCState, apc_step
from margin.calculator import MarginResult, compute_margin
from margin.scenarios import bundle_symbol, margin_unit
from models.forecast import RiskForecastBundle, parse_horizon_unit


def state_dir(home: Path | str, dataset: str, portfolio: str) -> Path:
    """Where one portfolio's daily states live."""
    return Path(home) / "apc" / dataset / portfolio


def previous_day(day: pd.Timestamp, underlyings: list[str]) -> str:
    """The business day before ``day``: the calendar day before for a book with a 24/7
    underlying, else the previous session of the exchange calendar of its underlyings."""
    cals = {symbol_meta(bundle_symbol(u)).calendar for u in underlyings} or {"24/7"}
    cal = "24/7" if "24/7" in cals else sorted(cals)[0]
    d = pd.Timestamp(day).tz_localize(None) if pd.Timestamp(day).tzinfo else pd.Timestamp(day)
    days = session_dates(cal, d - pd.Timedelta(days=10), d - pd.Timedelta(days=1))
    return f"{days[-1]:%Y-%m-%d}"


def long_run_bundle(bundle: RiskForecastBundle, years: float) -> tuple[RiskForecastBundle, dict]:
    """The bundle with every forecast variance replaced by the long-run per-period variance of
    the symbol's residual-history returns over the last ``years`` (unit variance scale), and what
    was used per symbol (history length in years; ``proxy`` when shorter than asked)."""
    unit, _ = margin_unit(bundle)
    per_year = pd.Timedelta(days=365.25) / parse_horizon_unit(unit)
    res = bundle.residuals
    vt = bundle.vol_table.copy()
    used = {}
    for s in bundle.symbols:
        r = res[(res["unit"] == unit) & (res["symbol"] == s)].sort_values("ts")
        tail = r["ret"].to_numpy()[-int(round(years * per_year)):]
        if len(tail) < 20:
            raise DataError(f"{s}: {len(tail)} returns in the bundle's history: too few for the "
                            "anti-procyclicality floor", column="residuals")
        var = float(np.mean(tail ** 2))
        got = len(tail) / per_year
        used[s] = {"years": round(got, 3), "proxy": got < years - 1e-9, "long_run_var": var}
        m = vt["symbol"] == s
        vt.loc[m, "forecast_var"] = var
        vt.loc[m, ["scale", "scale_lo", "scale_hi"]] = 1.0
    return dataclasses.replace(bundle, vol_table=vt), used


def run_apc(home: Path | str, dataset: str, result: MarginResult, bundle: RiskForecastBundle,
            market: Any, portfolio: Any, params: APCParams) -> APCState:
    """Today's state of ``result``'s portfolio (the day of its market state) from the stored
    previous one; written once."""
    t = pd.Timestamp(result.as_of).tz_convert("UTC")
    day = t.normalize()
    tag = f"{day:%Y-%m-%d}"
    folder = state_dir(home, dataset, result.portfolio)
    floor, used = None, None
    if "floor" in params.tools:
        lr, used = long_run_bundle(bundle, params.floor_years)
        floor = compute_margin(portfolio, market, lr, result.context.params).im
    inputs = {"bundle_id": result.bundle_id, "margin_params_hash": result.params_hash,
              "base_im": result.im, "floor_history": used}
    # the previous day's state is its last computation (an intraday cycle computes a day
    # several times; each as_of is its own file, the step always starts from the previous day)
    prior = sorted(p for p in folder.glob("*.json") if p.stem[:10] < tag) if folder.is_dir() else []
    prev = APCState.from_json(prior[-1].read_text()) if prior else None
    unds = sorted({q.instrument.underlying for q in result.positions})
    state = apc_step(prev, tag, result.im, params, expected_previous_day=previous_day(day, unds),
                     floor=floor, inputs={**inputs, "as_of": t.isoformat()})
    path = folder / f"{t:%Y-%m-%dT%H%M%SZ}.json"
    data = state.to_json().encode()
    if path.is_file():
        if path.read_bytes() != data:
            raise DataError(f"{path} already holds the state at {t} computed from other inputs; "
                            "a recorded state is never rewritten (remove it and the later ones "
                            "to replay)", column="as_of")
        return state
    atomic_write_bytes(path, data)
    return state


def with_apc(result: MarginResult, state: APCState) -> MarginResult:
    """``result`` with IM = the state's margin: the ``apc`` component is ``M_t - B_t`` (allocated
    to positions in proportion to their totals), MM scaled by the same factor."""
    extra = state.margin - result.im
    comps = {**result.components, "apc": extra}
    f = state.margin / result.im if result.im > 0 else 1.0
    mm_comps = {k: v * f for k, v in result.mm_components.items()}
    tot = sum(v["total"] for v in result.by_position.values())
    by_pos = {k: {**v, "apc": extra * (v["total"] / tot if tot else 0.0),
                  "total": v["total"] + extra * (v["total"] / tot if tot else 0.0),
                  "mm_total": v["mm_total"] * f} for k, v in result.by_position.items()}
    by_und = {k: {**v, "apc": extra * (v["total"] / tot if tot else 0.0),
                  "total": v["total"] + extra * (v["total"] / tot if tot else 0.0),
                  "mm_total": v["mm_total"] * f} for k, v in result.by_underlying.items()}
    explain = {**result.explain, "apc": {"day": state.day, "base": state.base,
                                         "margin": state.margin, "parts": state.parts,
                                         "floor": state.floor, "shortfall": state.shortfall}}
    return dataclasses.replace(result, im=state.margin, mm=result.mm * f, components=comps,
                               mm_components=mm_comps, by_position=by_pos, by_underlying=by_und,
                               explain=explain)
