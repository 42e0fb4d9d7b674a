"""Issuing the risk-forecast bundle: the forecast flow's last step (no Prefect, no printing).

:func:`issue_bundle` records in the forecast ledger (``$DPRM_HOME/ledger``) what the dataset's
champions issue, then builds the :class:`~models.forecast.RiskForecastBundle` margin consumes at
one ``as_of`` and writes it under ``$DPRM_HOME/bundles/<dataset>/<freq>/`` with ``latest.json``
pointing at it (written atomically):

- volatility: the champion's walk-forward forecasts from its evaluation run (each issued at its
  data cutoff by a model fitted on earlier data: the history margin backtests need) and, after its
  training end, the registered champion's own forecasts at every origin; without a champion, the
  EWMA baseline walked forward (``fallback``); every other candidate of the champion's evaluation
  run is seeded too (``<model>:<candidate>``: GARCH, LightGBM, EWMA... the history the backtests
  compare the champion with);
- fallback: the EWMA baseline walked forward over the same data (``ewma``/``baseline``), used for
  a symbol whose champion forecast is missing or older than the staleness limit while the
  baseline's is fresh (the bundle records the symbol as stale with the reason and the fallback);
- horizons: the configured ones (the margin horizons of the frequency by default) that the
  champions issue;
- correlation: the correlation champion's forecast at the latest origin, issued at ``as_of``
  (EWMA correlation when the dataset has no correlation champion);
- the bundle: variance scale estimated inside it from the ledger and the closes (ratio of means,
  block bootstrap), innovation distributions and the t-copula fitted to the residuals, staleness
  per symbol; for a daily bundle, the vol-of-vol of every symbol whose vol index the dataset holds
  (the S&P 500's VIX, BTC/ETH DVOL: ``pipelines.market.store_vol_of_vol``; the backtest found the
  option books' VaR99 breached 5-10x too often without it). Rerunning on the same data writes nothing new (the ledger and the bundle are
  content-addressed).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import DataError
from features.schema import CLOSE, SYMBOL, TS
from features.store import DataStore, atomic_write_json
from models import catalog, registry
from models.bundle_build import ModelRef as LedgerRef
from models.bundle_build import build_bundle
from models.corr import returns_panel
from models.forecast import RiskForecastBundle
from models.ledger import ForecastLedger
from models.run_record import dprm_version
from pipelines import steps
from pipelines.flow_config import ForecastFlowConfig, corr_model_name_for
from pipelines.market import store_vol_of_vol


def ledger_path(home: Path | str) -> Path:
    """The workspace's forecast ledger."""
    return Path(home) / "ledger"


def bundle_dir(home: Path | str, dataset: str, freq: str) -> Path:
    """Where a dataset's bundles are written (``latest.json`` inside)."""
    return Path(home) / "bundles" / dataset / freq


def _unit(freq: str) -> str:
    return "1D" if pd.Timedelta(freq) == pd.Timedelta("1D") else freq


BASELINE = LedgerRef("ewma", "baseline", "fallback")
"""The baseline forecaster's ledger entry: the volatility forecasts without a champion, and the
fallback of a symbol the champion has no fresh forecast for."""


def _ewma_issues(data: pd.DataFrame, cfg: ForecastFlowConfig) -> pd.DataFrame:
    """EWMA walked forward over ``data`` (every symbol, every origin; a tenth of a second for ten
    thousand rows): the baseline's issues."""
    fcs = catalog.build("ewma", min_obs=None).walk_forward(data, tuple(cfg.horizons), schedule=None)
    table = pd.concat([f.to_frame() for f in fcs.values()], ignore_index=True)
    table["model_id"], table["model_version"] = BASELINE.name, BASELINE.version
    return table


def _vol_issues(home: Path, cfg: ForecastFlowConfig, data: pd.DataFrame
                ) -> tuple[pd.DataFrame, LedgerRef, str, pd.DataFrame | None]:
    """The champion's issued volatility forecasts (walk-forward history + post-training) as a long
    table, its ledger reference, a one-line source description, and the walk-forward forecasts of
    every other candidate of its evaluation run (``<model>:<candidate>``, the champion's version:
    the history a backtest compares the champion with), or None."""
    name = cfg.registered_model
    info = steps.check_champion(home, cfg)
    if info is None:
        return (_ewma_issues(data, cfg), BASELINE, "EWMA baseline (no champion)", None)
    champion = registry.load_champion(home=home, name=name)
    version = str(champion.ref.version)
    label = f"{name}:{champion.primary}"
    end = info["tags"].get("data.end_ts")
    train_end = pd.Timestamp(end) if end else None
    parts, others = [], None
    ev = steps.evaluation_forecasts(home, info.get("evaluation_run_id"))
    if ev is not None and not ev.empty:
        ev = ev.drop(columns=[c for c in ev.columns if c in ("realized_var", "evaluated",
                                                             "stressed")])
        if train_end is not None:
            ev = ev[pd.to_datetime(ev["origin_ts"], utc=True) <= train_end]
        mine = ev["model_id"].astype(str) == champion.primary
        parts.append(ev[mine])
        others = ev[~mine].copy()
        others["model_id"] = name + ":" + others["model_id"].astype(str)
        others["model_version"] = version
    known = json.loads(info["tags"].get("dprm.symbols") or "null")
    served = data if known is None else data[data[SYMBOL].astype(str).isin(known)]
    table = champion.predict(served, origins="all")  # others: the baseline's (issue_bundle)
    table = table[table["model_id"].astype(str) == champion.primary]
    if train_end is not None:
        table = table[pd.to_datetime(table["origin_ts"], utc=True) > train_end]
    parts.append(table)
    out = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    out["model_id"], out["model_version"] = label, version
    return (out, LedgerRef(label, version, "champion"), f"{name} v{version} ({champion.primary})",
            others)


def _corr_issue(home: Path, dataset: str, freq: str, symbols: list[str],
                as_of: pd.Timestamp, horizons: tuple[int, ...]) -> tuple[Any, LedgerRef, str]:
    """The correlation forecast at the latest origin at or before ``as_of``: the correlation
    champion's, else EWMA's."""
    name = corr_model_name_for(dataset)
    prices, panel_freq = steps.correlation_prices(home, dataset, freq)
    prices = prices[prices[SYMBOL].isin(symbols) & (prices[TS] <= as_of)]
    if registry.champion_version(home, name) is not None:
        package = registry.load_package("champion", home=home, name=name)
        if set(package.symbols) == set(symbols):
            version = registry.champion_version(home, name)
            label = f"{name}:{package.name}"
            fc = dataclasses.replace(package.forecast(prices, origins="last"), model_id=label,
                                     model_version=str(version))
            return fc, LedgerRef(label, str(version), "champion"), f"{name} v{version} ({package.name})"
    panel = returns_panel(prices, freq=panel_freq, realized=False)
    model = catalog.build("ewma_corr").fit(panel)
    fc = dataclasses.replace(model.predict(panel, horizons, origins=panel.ts[-1:]),
                             model_id="ewma_corr", model_version="baseline")
    return fc, LedgerRef("ewma_corr", "baseline", "fallback"), "EWMA correlation (no champion)"


def issue_bundle(home: Path | str, cfg: ForecastFlowConfig, *, as_of: object = None) -> dict[str, Any]:
    """Ledger the champions' issues and write the bundle at ``as_of`` (None: the data's last
    time); returns a JSON-ready summary (see the module docs)."""
    home = Path(home).resolve()
    data = steps.model_frame(home, cfg.dataset, cfg.freq)
    if data.empty:
        raise DataError(f"no valid feature rows in {cfg.dataset}/{cfg.freq} for a bundle")
    unit = _unit(cfg.freq)
    t = pd.Timestamp(data[TS].max()) if as_of is None else pd.Timestamp(as_of)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    data = data[data[TS] <= t]
    ledger = ForecastLedger(ledger_path(home))
    table, vol_ref, vol_src, others = _vol_issues(home, cfg, data)
    table["unit"] = unit
    added = ledger.append_vol(table, source="issued")
    if others is not None and not others.empty:
        others["unit"] = unit
        added += ledger.seed_walk_forward(others)
    fallback, served = {}, set(table[SYMBOL].astype(str))
    if vol_ref != BASELINE:  # the baseline's issues, for symbols the champion cannot serve
        base = _ewma_issues(data, cfg)
        base["unit"] = unit
        added += ledger.append_vol(base, source="issued")
        fallback = {unit: BASELINE}
        served |= set(base[SYMBOL].astype(str))
    symbols = sorted(served)
    issued = set(int(h) for h in table["horizon"].unique())
    hs = tuple(h for h in cfg.horizons if h in issued)
    corr_models, corr_src, added_corr = {}, "", 0
    if len(symbols) > 1:
        fc, corr_ref, corr_src = _corr_issue(home, cfg.dataset, cfg.freq, symbols, t, hs)
        added_corr = ledger.append_corr(fc, as_of=t)
        corr_models = {unit: corr_ref}
        hs = tuple(h for h in hs if h in fc.horizons)
    if not hs:
        raise DataError(f"{cfg.dataset}/{cfg.freq}: the forecasts issued (horizons "
                        f"{sorted(issued)}) share none of the configured horizons "
                        f"{list(cfg.horizons)}", column="horizons")
    if CLOSE not in data.columns or data[CLOSE].isna().all():
        raise DataError(f"{cfg.dataset}/{cfg.freq} has no close prices: the bundle's residuals "
                        "need them", column=CLOSE)
    closes = data.pivot_table(index=TS, columns=SYMBOL, values=CLOSE, aggfunc="last")[symbols]
    vov = store_vol_of_vol(DataStore(home / "data"), cfg.dataset, closes, t) \
        if unit == "1D" else {}
    bundle = build_bundle(
        ledger, t, symbols=symbols, vol_models={unit: vol_ref}, closes={unit: closes},
        corr_models=corr_models, horizons={unit: hs}, fallback_models=fallback,
        vol_of_vol=vov or None,
        data_fingerprints={cfg.dataset: steps.feature_fingerprint(home, cfg.dataset, cfg.freq,
                                                                  symbols)},
        code_version=dprm_version(), scale_n_boot=199,
        fit_residual_distribution=True, random_state=0,
    )
    out_dir = bundle_dir(home, cfg.dataset, cfg.freq)
    path = bundle.save(out_dir / f"{t.strftime('%Y%m%dT%H%M%SZ')}-{bundle.bundle_id[:12]}")
    atomic_write_json(out_dir / "latest.json", {"bundle_id": bundle.bundle_id, "path": str(path),
                                                "as_of": t.isoformat()})
    return summarize(bundle, path=path, sources={"vol": vol_src, "corr": corr_src},
                     ledger_rows={"vol": int(added), "corr": int(added_corr)})


def summarize(bundle: RiskForecastBundle, **extra: Any) -> dict[str, Any]:
    """A JSON-ready view of a bundle: as_of, id, members, the scaled vols per symbol and horizon,
    the variance scale, the correlation at the shortest horizon and the stale symbols."""
    s = bundle.summary()
    vols = [{"unit": r.unit, "symbol": r.symbol, "horizon": int(r.horizon),
             "vol": float(r.vol), "vol_scaled": float(r.vol_scaled), "scale": float(r.scale),
             "scale_lo": float(r.scale_lo), "scale_hi": float(r.scale_hi), "stale": bool(r.stale)}
            for r in s.itertuples()]
    corr = {}
    for unit, fc in bundle.corr.items():
        m = fc.at(fc.horizons[0])[-1]
        corr[unit] = {f"{a}/{b}": float(m[i, j]) for i, a in enumerate(fc.symbols)
                      for j, b in enumerate(fc.symbols) if i < j}
    return {
        "as_of": bundle.as_of.isoformat(), "bundle_id": bundle.bundle_id,
        "symbols": list(bundle.symbols),
        "members": {m.role: f"{m.name} v{m.version}" + (f" @{m.alias}" if m.alias else "")
                    for m in bundle.provenance.members},
        "vols": vols, "corr": corr, "stale": {k: str(v.message) for k, v in bundle.stale.items()},
        "copula_df": None if bundle.copula_df is None or not np.isfinite(bundle.copula_df)
        else float(bundle.copula_df),
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in extra.items()},
    }
