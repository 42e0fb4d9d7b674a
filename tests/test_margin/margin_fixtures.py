"""Small, real inputs for the margin engine's tests: a synthetic RiskForecastBundle (known vols,
residuals, copula, stressed matrices, vol-of-vol) and a hand-built MarketState for BTC, ETH, SOL,
SP500 and NASDAQ."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from margin.market_state import (
    FlatVolSurface,
    Forward,
    FundingQuote,
    MarketState,
    Quote,
    UnderlyingState,
)
from margin.portfolio import Portfolio, parse_portfolio
from models.forecast import (
    CorrForecast,
    Innovation,
    Member,
    Provenance,
    RiskForecastBundle,
    StressedCorrelation,
    VolOfVol,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "portfolios"
AS_OF = pd.Timestamp("2025-03-03T00:00Z")
SYMS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "SP500", "NASDAQ")
DAILY_VOL = {"BTCUSDT": 0.03, "ETHUSDT": 0.04, "SOLUSDT": 0.05, "SP500": 0.01, "NASDAQ": 0.012}
SPOT = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0, "SP500": 2_500.0, "NASDAQ": 6_600.0}
HORIZONS = (1, 2, 5)


def corr_matrix(rho: float, m: int = len(SYMS)) -> np.ndarray:
    """Equicorrelation matrix."""
    c = np.full((m, m), rho)
    np.fill_diagonal(c, 1.0)
    return c


def make_bundle(*, vols: dict[str, float] | None = None, rho: float = 0.6, n_days: int = 400,
                seed: int = 0, issued_vol: dict[str, float] | None = None,
                innovation: Innovation | None = None, copula_df: float | None = 6.0,
                residual_z: np.ndarray | None = None, as_of: pd.Timestamp = AS_OF,
                stressed: bool = True, scale: float = 1.0) -> RiskForecastBundle:
    """A bundle with flat per-day variance ``vols[s]**2`` at every horizon, equicorrelation
    ``rho``, ``n_days`` of t(5) residuals with issued vol ``issued_vol`` (default = ``vols``)."""
    vols = dict(DAILY_VOL if vols is None else vols)
    issued = dict(vols if issued_vol is None else issued_vol)
    rng = np.random.default_rng(seed)
    rows = []
    origin = as_of - pd.Timedelta(days=1) if as_of.hour == 0 else as_of
    for s in SYMS:
        for h in HORIZONS:
            rows.append({"unit": "1D", "symbol": s, "horizon": h, "model_id": "garch",
                         "model_version": "7", "origin_ts": origin, "data_cutoff_ts": origin,
                         "forecast_var": vols[s] ** 2, "scale": scale, "scale_lo": scale,
                         "scale_hi": scale})
    m = len(SYMS)
    corr = {"1D": CorrForecast(corr=np.stack([corr_matrix(rho)] * len(HORIZONS))[None],
                               symbols=SYMS, origins=pd.DatetimeIndex([origin]),
                               horizons=HORIZONS, model_id="dcc", model_version="2",
                               data_cutoff_ts=origin, horizon_unit="1D")}
    ts = pd.date_range(end=origin, periods=n_days, freq="1D", tz="UTC")
    if residual_z is None:
        lc = np.linalg.cholesky(corr_matrix(rho))
        z = rng.standard_normal((n_days, m)) @ lc.T
        w = rng.chisquare(5.0, n_days) / 5.0
        z = z / np.sqrt(w)[:, None] * np.sqrt(3.0 / 5.0)
    else:
        z = residual_z
    res = []
    for j, s in enumerate(SYMS):
        sig = np.full(n_days, issued[s])
        r = z[:, j] * sig
        res.append(pd.DataFrame({"unit": "1D", "symbol": s, "ts": ts, "ret": r,
                                 "sigma_issued": sig, "z": r / sig}))
    dates = pd.date_range("2022-05-01", periods=5, freq="7D", tz="UTC")
    vov = {u: VolOfVol(u, {1: {0.01: -0.15, 0.5: 0.0, 0.99: 0.2},
                           2: {0.01: -0.2, 0.5: 0.0, 0.99: 0.28}},
                       -0.2, "(30/max(DTE,7))^p", 0.5, 30.0, "implied:DVOL",
                       pd.Timestamp("2021-03-24", tz="UTC"), origin, 7.0) for u in ("BTC", "ETH")}
    return RiskForecastBundle(
        as_of=as_of, symbols=SYMS, vol_table=pd.DataFrame(rows), corr=corr,
        residuals=pd.concat(res, ignore_index=True),
        innovations={s: innovation or Innovation("t", {"nu": 6.0}, n_days, "test") for s in SYMS},
        copula_df=copula_df,
        stressed=StressedCorrelation(corr_matrix(rho), corr_matrix(min(0.95, rho + 0.3)),
                                     corr_matrix(max(-0.2, rho - 0.6)), dates,
                                     dates + pd.Timedelta(days=1), "test") if stressed else None,
        vol_of_vol=vov,
        provenance=Provenance((Member("vol:1D", "garch", "7", "champion"),
                               Member("corr:1D", "dcc", "2", None)), {"sim": "ab12"}, "test"))


HOURLY_HORIZONS = (1, 4, 24)


def hourly_bundle(daily: RiskForecastBundle, *, n_hours: int = 24 * 60, seed: int = 3,
                  day_var_factor: float = 1.0) -> RiskForecastBundle:
    """The daily bundle's forecasts in hours (what an hourly crypto cycle issues): per-hour
    variance = the 1-day variance x ``day_var_factor`` / 24 at 1, 4 and 24 hours, the 1-day
    correlation at every hourly horizon, ``n_hours`` of t(5) hourly residuals issued at the
    per-hour vol; the same innovations, copula, stressed matrices and vol-of-vol."""
    rng = np.random.default_rng(seed)
    vt = daily.vol_table[(daily.vol_table["unit"] == "1D") & (daily.vol_table["horizon"] == 1)]
    rows = [{**r, "unit": "1h", "horizon": h,
             "forecast_var": r["forecast_var"] * r["scale"] * day_var_factor / 24,
             "scale": 1.0, "scale_lo": 1.0, "scale_hi": 1.0}
            for r in vt.to_dict("records") for h in HOURLY_HORIZONS]
    origin = pd.Timestamp(vt["origin_ts"].iloc[0])
    c1 = np.asarray(daily.correlation(1, "1D"))
    corr = {"1h": CorrForecast(corr=np.stack([c1] * len(HOURLY_HORIZONS))[None],
                               symbols=daily.symbols, origins=pd.DatetimeIndex([origin]),
                               horizons=HOURLY_HORIZONS, model_id="dcc", model_version="2",
                               data_cutoff_ts=origin, horizon_unit="1h")}
    ts = pd.date_range(end=origin, periods=n_hours, freq="1h", tz="UTC")
    m = len(daily.symbols)
    z = rng.standard_normal((n_hours, m)) @ np.linalg.cholesky(c1).T
    z = z / np.sqrt(rng.chisquare(5.0, n_hours) / 5.0)[:, None] * np.sqrt(3.0 / 5.0)
    res = []
    for j, r in enumerate(vt.to_dict("records")):
        sig = np.full(n_hours, math.sqrt(r["forecast_var"] * r["scale"] / 24))
        res.append(pd.DataFrame({"unit": "1h", "symbol": r["symbol"], "ts": ts, "ret": z[:, j] * sig,
                                 "sigma_issued": sig, "z": z[:, j]}))
    return RiskForecastBundle(
        as_of=daily.as_of, symbols=daily.symbols, vol_table=pd.DataFrame(rows), corr=corr,
        residuals=pd.concat(res, ignore_index=True), innovations=daily.innovations,
        copula_df=daily.copula_df, stressed=daily.stressed, vol_of_vol=daily.vol_of_vol,
        provenance=Provenance((Member("vol:1h", "garch", "7", "champion"),
                               Member("corr:1h", "dcc", "2", None)), {"sim": "ab12"}, "test"))


def _q(v: float, unit: str = "USD", src: str = "test", ts: pd.Timestamp = AS_OF) -> Quote:
    return Quote(v, unit, src, ts)


def make_state(spot: dict[str, float] | None = None, vol: float = 0.6,
               funding_rate: float = 0.0001, as_of: pd.Timestamp = AS_OF) -> MarketState:
    """BTC/ETH/SOL with spot = index, a perpetual mark 0.05% above, an 8h funding rate, a flat
    surface (``vol``) and r = 0; SP500/NASDAQ with rate 2.5%, dividend yield 1.5%, flat 20 vol."""
    spot = dict(SPOT if spot is None else spot)

    def q(v: float, unit: str = "USD") -> Quote:
        return _q(v, unit, ts=as_of)

    unds = {}
    for c in ("BTC", "ETH", "SOL"):
        s = spot[c]
        e = as_of + pd.Timedelta(days=90)
        unds[c] = UnderlyingState(
            c, spot=q(s), index=q(s), forwards={e: Forward(e, s * 1.02, "test future", as_of)},
            marks={f"{c}USDT-PERP": q(s * 1.0005)},
            funding=FundingQuote(q(funding_rate, "per_period"), pd.Timedelta("8h")),
            vol_surface=FlatVolSurface(vol), vol_surface_source=q(vol, "fraction"),
            rate=q(0.0, "fraction"))
    for c, v in (("SP500", 0.2), ("NASDAQ", 0.22)):
        unds[c] = UnderlyingState(c, spot=q(spot[c]), index=q(spot[c]),
                                  vol_surface=FlatVolSurface(v), vol_surface_source=q(v, "fraction"),
                                  rate=q(0.025, "fraction"), dividend_yield=q(0.015, "fraction"))
    return MarketState(as_of, unds, (), source="test")


def book(csv_rows: str, name: str = "test", currency: str | None = None,
         as_of: pd.Timestamp = AS_OF) -> Portfolio:
    """A portfolio from CSV rows (header ``id,instrument,quantity,entry_price`` added)."""
    text = "id,instrument,quantity,entry_price\n" + csv_rows.strip() + "\n"
    pf = parse_portfolio(text, "csv", as_of=as_of, name=name)
    if currency is not None:
        from dataclasses import replace

        pf = replace(pf, margin_currency=currency)
    return pf


def example(path: Path, as_of: pd.Timestamp = AS_OF) -> Portfolio:
    """An example portfolio file."""
    return parse_portfolio(path.read_text(), path.suffix[1:], as_of=as_of, source=str(path),
                           name=path.stem)
