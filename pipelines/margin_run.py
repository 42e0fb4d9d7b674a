"""Margin from the workspace: a portfolio file, the store's market state and a risk-forecast bundle
(``dprm margin`` and the cycle's margin step; no Prefect, no printing).

:func:`margin_for` reads the bundle (``latest``: the one the forecast flow last wrote for the
dataset, ``$DPRM_HOME/bundles/<dataset>/<freq>/latest.json``, its daily bundle where it has one,
else its only one; or a bundle folder),
the portfolio at the bundle's ``as_of`` (or ``as_of``), the market state of the portfolio's
underlyings at that time, and the margin parameters (TOML or the defaults), and calls
:func:`margin.calculator.compute_margin`. :func:`write_margin` stores the result as
``$DPRM_HOME/margin/<dataset>/<as_of>/<portfolio>-<params_hash[:12]>-<bundle_id[:12]>[-apc].json``
(``-apc``: the cycle's published margin after the anti-procyclicality step; atomic, written once
per (as_of, portfolio, parameters, bundle): a rerun finds the same bytes and writes nothing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.errors import ConfigError, DataError
from features.store import DataStore, atomic_write_bytes
from margin.apc import APCParams
from margin.calculator import MarginResult, WhatIf, compute_margin, what_if
from margin.instruments import parse_instrument
from margin.methods import compute_method
from margin.params import MarginParams, load_params
from models.forecast import RiskForecastBundle
from pipelines.apc_state import run_apc, with_apc
from pipelines.bundles import bundle_dir
from pipelines.market import MarketStateConfig, build_market_state, read_portfolio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "portfolios"
"""The shipped example portfolios."""


def load_bundle_at(home: Path | str, dataset: str, bundle: str = "latest",
                   freq: str | None = None, as_of: object = None
                   ) -> tuple[Path, RiskForecastBundle, pd.Timestamp]:
    """The bundle (:func:`bundle_path`), loaded, and the time to compute at: ``as_of`` (UTC),
    default the bundle's own; a ConfigError when the folder is no bundle or ``as_of`` is before
    the bundle (its forecasts would hold later information)."""
    bpath = bundle_path(home, dataset, bundle, freq)
    if not (bpath / "bundle.json").is_file():
        raise ConfigError(f"{bpath} is not a risk-forecast bundle (no bundle.json)")
    b = RiskForecastBundle.load(bpath)
    t = b.as_of if as_of is None else pd.Timestamp(as_of)  # type: ignore[arg-type]
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    if t < b.as_of:
        raise ConfigError(f"--as-of {t} is before the bundle's as_of {b.as_of}: the bundle "
                          "holds later information; pick an earlier bundle with --bundle")
    return bpath, b, t


def bundle_path(home: Path | str, dataset: str, bundle: str = "latest",
                freq: str | None = None) -> Path:
    """The bundle folder: ``bundle`` itself, or for "latest" the one ``latest.json`` of the
    dataset's bundles at ``freq`` names (None: its daily bundle if there is one, else the only
    frequency it has); a ConfigError saying how to make one when there is none, or which
    frequencies to choose from."""
    if bundle != "latest":
        return Path(bundle)
    if freq is None:
        root = Path(home) / "bundles" / dataset
        found = sorted(p.name for p in root.iterdir() if (p / "latest.json").is_file()) \
            if root.is_dir() else []
        if "1D" in found or not found:
            freq = "1D"
        elif len(found) == 1:
            freq = found[0]
        else:
            raise ConfigError(f"dataset '{dataset}' has bundles at {found} and none daily: pass "
                              "--freq to choose one, or --bundle PATH")
    pointer = bundle_dir(home, dataset, freq) / "latest.json"
    if not pointer.is_file():
        raise ConfigError(f"no risk-forecast bundle for dataset '{dataset}' at {freq} ({pointer} "
                          f"is missing): run `dprm forecast --dataset {dataset} --freq {freq}` "
                          "(or `dprm demo`) first, or pass --bundle PATH")
    return Path(json.loads(pointer.read_text())["path"])


@dataclass(frozen=True)
class MarginRun:
    """A margin computation and where its inputs came from."""

    result: MarginResult
    bundle_path: Path
    dataset: str
    portfolio_path: Path
    what_if: WhatIf | None = None


def parse_trade(text: str) -> tuple[Any, float]:
    """``INSTRUMENT,QUANTITY`` (e.g. ``BTCUSDT-PERP,-2``) -> (instrument, quantity); ConfigError
    naming the value otherwise."""
    name, sep, qty = str(text).rpartition(",")
    try:
        q = float(qty)
    except ValueError:
        q = math.nan
    if not sep or not name.strip() or not math.isfinite(q):
        raise ConfigError(f"--what-if must be INSTRUMENT,QUANTITY such as SP500-PERP,-2. "
                          f"Got {text!r} instead.")
    return parse_instrument(name.strip()), q


def margin_for(home: Path | str, portfolio: Path | str, *, dataset: str,
               trade: str | None = None, **inputs: Any) -> MarginRun:
    """Margin of ``portfolio`` from the store's market state and the bundle (see the module
    docs); ``inputs`` are :func:`margin_inputs`' (``bundle``, ``freq``, ``as_of``, ``params``,
    ``rates``, ``dividend_yields``); ``trade`` a what-if ``INSTRUMENT,QUANTITY``."""
    inp = margin_inputs(home, portfolio, dataset=dataset, **inputs)
    result = compute_margin(inp.portfolio, inp.market, inp.bundle, inp.params)
    wi = what_if(result, parse_trade(trade)) if trade else None
    return MarginRun(result, inp.bundle_path, dataset, Path(portfolio), wi)


@dataclass(frozen=True)
class MarginInputs:
    """What one margin computation reads: the portfolio at the bundle's time, the market state of
    its underlyings, the bundle and the parameters."""

    portfolio: Any
    market: Any
    bundle: RiskForecastBundle
    params: MarginParams
    bundle_path: Path


def margin_inputs(
    home: Path | str,
    portfolio: Path | str,
    *,
    dataset: str,
    bundle: str = "latest",
    freq: str | None = None,
    as_of: object = None,
    params: MarginParams | str | None = None,
    rates: Mapping[str, float] | None = None,
    dividend_yields: Mapping[str, float] | None = None,
) -> MarginInputs:
    """Read the inputs of :func:`margin_for` (and of the comparison methods) once: the bundle
    (``latest``, or a folder; ``freq`` picks the latest's frequency, see :func:`bundle_path`), the
    portfolio at the bundle's time or ``as_of``, the market state with ``rates`` and
    ``dividend_yields``, and ``params`` (a :class:`MarginParams`, TOML text or None)."""
    home = Path(home)
    bpath, b, t = load_bundle_at(home, dataset, bundle, freq, as_of)
    pf = read_portfolio(Path(portfolio), t)
    unds = tuple(sorted({p.instrument.underlying for p in pf.positions}))
    if not unds:
        raise DataError(f"portfolio {portfolio} has no valid position: "
                        + "; ".join(str(f) for f in pf.failures), source=str(portfolio))
    cfg = MarketStateConfig(rates=dict(rates or {}), dividend_yields=dict(dividend_yields or {}),
                            underlyings=unds)
    market = build_market_state(DataStore(home / "data"), dataset, t, cfg)
    p = params if isinstance(params, MarginParams) else (
        load_params(params) if isinstance(params, str) else MarginParams())
    return MarginInputs(pf, market, b, p, bpath)


def stress_for(inp: MarginInputs, home: Path | str, dataset: str) -> Any:
    """The stress-loss report of ``inp``'s portfolio: its underlyings' worst historical days in the
    dataset (:func:`pipelines.market.historical_stress`) and the parameters' hypothetical moves."""
    from margin.stress import stress_report
    from pipelines.market import historical_stress

    unds = sorted({q.instrument.underlying for q in inp.portfolio.positions})
    hist = historical_stress(DataStore(Path(home) / "data"), dataset, unds, inp.market.as_of)
    return stress_report(inp.portfolio, inp.market, inp.bundle, hist, inp.params)


COMPARE = (("dprm", {}), ("fixed", {}), ("span", {}), ("deribit", {}), ("hvar", {}),
           ("fhs_ewma", {"ewma_lambda": 0.94}), ("fhs_ewma", {"ewma_lambda": 0.97}))
"""The methods ``dprm margin --compare`` puts side by side (label = method, with lambda for FHS)."""


def compare_methods(inp: MarginInputs, methods: Sequence[tuple[str, Mapping[str, Any]]] = COMPARE
                    ) -> list[dict[str, Any]]:
    """Every method on the same portfolio, market state and bundle: one JSON-ready row each
    (IM with IM, MM with MM; the ratios to the forecast-driven ``dprm``)."""
    rows = []
    for name, upd in methods:
        r = compute_method(name, inp.portfolio, inp.market, inp.bundle,
                           inp.params.model_copy(update=dict(upd)))
        label = name + (f" {upd['ewma_lambda']:g}" if "ewma_lambda" in upd else "")
        rows.append({"method": label, "im": r.im, "mm": r.mm, "margin_currency": r.margin_currency,
                     "failures": [str(f) for f in r.failures], "detail": r.to_dict()["detail"]})
    base = next((x for x in rows if x["method"] == "dprm"), None)
    for x in rows:
        x["im_vs_dprm"] = x["im"] / base["im"] if base and base["im"] > 0 else None
        x["mm_vs_dprm"] = x["mm"] / base["mm"] if base and base["mm"] > 0 else None
    return rows


def write_margin(home: Path | str, run: MarginRun, tag: str = "") -> tuple[Path, bool]:
    """Store ``run``'s result (see the module docs; ``tag`` ends the name, "apc" for the cycle's
    published margin after the anti-procyclicality step); returns the path and whether it was
    written now (False: the same result was already there)."""
    r = run.result
    stamp = pd.Timestamp(r.as_of).strftime("%Y%m%dT%H%M%SZ")
    name = (f"{run.portfolio_path.stem}-{r.params_hash[:12]}-{r.bundle_id[:12]}"
            f"{'-' + tag if tag else ''}.json")
    path = Path(home) / "margin" / run.dataset / stamp / name
    data = r.to_json().encode()
    if path.is_file() and path.read_bytes() == data:
        return path, False
    atomic_write_bytes(path, data)
    return path, True


def margin_summary(run: MarginRun, path: Path | None = None, *, top: int = 5) -> dict[str, Any]:
    """A JSON-ready summary: IM, MM, components, attribution by underlying, the top positions by
    contribution, the worst scenarios, failures, and the what-if's increments."""
    r = run.result
    pos = sorted(r.by_position.items(), key=lambda kv: -abs(kv[1].get("total", 0.0)))
    out: dict[str, Any] = {
        "portfolio": r.portfolio, "as_of": r.as_of, "margin_currency": r.margin_currency,
        "im": r.im, "mm": r.mm, "components": dict(r.components),
        "by_underlying": {k: dict(v) for k, v in r.by_underlying.items()},
        "top_positions": [{"id": k, **dict(v)} for k, v in pos[:top]],
        "worst_scenarios": list(r.worst_scenarios)[:top],
        "failures": [str(f) for f in r.failures], "bundle_id": r.bundle_id,
        "bundle": str(run.bundle_path), "params_hash": r.params_hash,
    }
    if path is not None:
        out["path"] = str(path)
    if run.what_if is not None:
        w = run.what_if
        out["what_if"] = {"im": w.im, "mm": w.mm, "incremental_im": w.incremental_im,
                          "incremental_mm": w.incremental_mm,
                          "failure": None if w.failure is None else str(w.failure)}
    return out


@dataclass(frozen=True)
class ExampleBook:
    """A shipped example the cycle margins on a dataset (with the rates the store lacks)."""

    file: str
    rates: Mapping[str, float]
    dividend_yields: Mapping[str, float]


_CRYPTO_BOOKS = ("basis_trade.csv", "long_short_btc_eth.csv", "naked_options.csv",
                 "short_straddle.csv", "covered_call.csv", "calendar_spread.csv",
                 "hedged_options.json", "delta_hedged_options.json")

CYCLE_BOOKS: dict[str, Sequence[ExampleBook]] = {
    "embedded": (ExampleBook("index_futures_options.csv", {"SP500": 0.025, "NASDAQ": 0.025},
                             {"SP500": 0.02, "NASDAQ": 0.01}),),
    "sim": tuple(ExampleBook(f, {}, {}) for f in _CRYPTO_BOOKS),
}
"""The example books the cycle's margin step computes per dataset: the equity-index book on the
embedded indices (daily bundle), every crypto example on the simulator's BTC/ETH spot, perpetuals,
futures and option chains (hourly bundle: a 1-day MPOR is 24 hourly periods)."""


def cycle_margin(home: Path | str, dataset: str, freq: str | None = None,
                 apc_params: APCParams | None = None) -> list[dict[str, Any]]:
    """The cycle's margin step: every :data:`CYCLE_BOOKS` example of ``dataset`` from its latest
    bundle at ``freq`` (see :func:`bundle_path`), written with :func:`write_margin`; one summary
    per book, with every comparison method's IM and MM on the same inputs (``methods``). The
    anti-procyclicality state step (:mod:`pipelines.apc_state`, default tools: buffer and floor)
    runs first: the written result's IM is the day's APC margin, ``apc`` its component."""
    apc_params = APCParams() if apc_params is None else apc_params
    out = []
    for book in CYCLE_BOOKS.get(dataset, ()):
        inp = margin_inputs(home, EXAMPLES / book.file, dataset=dataset, freq=freq,
                            rates=book.rates, dividend_yields=book.dividend_yields)
        result = compute_margin(inp.portfolio, inp.market, inp.bundle, inp.params)
        apc = None
        if apc_params.tools and result.im > 0:
            state = run_apc(home, dataset, result, inp.bundle, inp.market, inp.portfolio,
                            apc_params)
            result = with_apc(result, state)
            apc = {"base_im": state.base, "im": state.margin, "parts": state.parts,
                   "floor": state.floor, "day": state.day}
        run = MarginRun(result, inp.bundle_path, dataset, EXAMPLES / book.file)
        path, written = write_margin(home, run, "apc" if apc else "")
        methods = {x["method"]: {"im": x["im"], "mm": x["mm"]} for x in compare_methods(inp)}
        out.append({**margin_summary(run, path), "written": written, "methods": methods,
                    "apc": apc})
    return out
