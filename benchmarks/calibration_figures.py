"""Calibration of forecasts for margin: variance scale, residual diagnostics, t degrees of freedom.

Usage::

    DPRM_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/calibration_figures.py
    .venv/bin/python benchmarks/calibration_figures.py --datasets sp500_nasdaq,crypto_daily

For every real dataset with prices, every symbol, two forecasters (EWMA 0.94 on the dataset's
realized variance; log-HAR, rolling window, walk-forward out of sample) and the margin horizons
(1, 2, 5 days; 1, 4, 24 hours on the hourly set), against the close-to-close target
(:func:`features.targets.forward_close_to_close`):

- the variance scale ``mean(r^2/h) / mean(forecast)`` at the last origin, expanding, with its
  stationary-bootstrap 95% interval (:mod:`models.scale`; re-estimated every ``every`` origins, each
  estimate from pairs known before it);
- E[z^2] with its 95% interval, the 1% / 99% hit rates (expected 1% each) of a unit-variance
  Student-t fitted out of sample, and the PIT Kolmogorov-Smirnov p-value (:mod:`models.residuals`),
  **before** the scale (z = r / sigma_issued) and **after** it (sigma_issued x sqrt(scale in force at
  the origin), out of sample); both on the same origins (those with a scale);
- the t degrees of freedom of the residuals after the scale (the last out-of-sample refit);
- the DVOL vol-of-vol (:mod:`models.volvol`) and the t-copula nu of BTC/ETH daily residuals.

Datasets (realized variance -> the model input; closes -> the target):

- ``crypto_daily``: Binance BTC/ETH daily realized variance from 5-minute returns, joined to the
  daily spot closes of ``binance_spot_daily_multi_asset_2017_2026`` (the measures carry none);
- ``btc_1h``: the 1-hour BTCUSDT history, Garman-Klass range variance per hour;
- ``perp_daily``: USD-M perpetuals (BTC, ETH, BNB), daily realized variance from 5-minute closes,
  the last 5-minute close of the day as the daily close (2025 .. 2026-02: short, so smaller
  windows, see ``SETTINGS``);
- ``sp500_nasdaq``: the S&P 500 and NASDAQ of ``arch.data``, Garman-Klass range variance of the
  session (no overnight return), session closes (the scale absorbs the overnight return).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.build import squared_return_variance  # noqa: E402
from features.ranges import range_variance  # noqa: E402
from features.readers import read_source  # noqa: E402
from features.readers.arch_data import read_arch_data  # noqa: E402
from features.schema import CLOSE, HIGH, LOW, OPEN, RV, SYMBOL, TS  # noqa: E402
from features.targets import C2C_RET, C2C_VAR, forward_close_to_close, target_name  # noqa: E402
from models.ewma import EWMAVol  # noqa: E402
from models.har import LogHARVol  # noqa: E402
from models.innovations import fit_t_copula  # noqa: E402
from models.residuals import diagnose_residuals, standardized_residuals  # noqa: E402
from models.scale import variance_scale  # noqa: E402
from models.volvol import implied_vol_of_vol  # noqa: E402

DATA = Path(os.environ.get("DPRM_DATA_DIR", ROOT.parent / "shared" / "data"))
SEED = 20261202


@dataclass(frozen=True)
class Settings:
    """Per-dataset protocol: horizons, log-HAR window and refit step, scale/diagnostic history."""

    horizons: tuple[int, ...]
    unit: str
    har_window: int
    har_refit: int
    min_pairs: int
    every: int
    refit_every: int


SETTINGS = {
    "crypto_daily": Settings((1, 2, 5), "1D", 1000, 1, 250, 63, 21),
    "btc_1h": Settings((1, 4, 24), "1h", 2000, 24, 1000, 720, 168),
    "perp_daily": Settings((1, 2, 5), "1D", 120, 1, 100, 21, 21),
    "sp500_nasdaq": Settings((1, 2, 5), "1D", 1000, 1, 250, 63, 21),
}


# ---- data ---------------------------------------------------------------------------------------
def _klines(path: Path, interval: str, columns: list[str]) -> pd.DataFrame:
    d = pd.read_parquet(path, columns=["symbol", "open_time", *columns])
    out = pd.DataFrame({TS: (d["open_time"] + pd.Timedelta(interval)).astype("datetime64[ns, UTC]"),
                        SYMBOL: d["symbol"].astype("str")})
    for c in columns:
        out[c] = d[c].astype("float64").to_numpy()
    return out.drop_duplicates([SYMBOL, TS]).sort_values([SYMBOL, TS]).reset_index(drop=True)


def crypto_daily(data: Path = DATA) -> pd.DataFrame:
    """BTC/ETH daily realized measures with the daily spot close joined by the bar close time."""
    files = [data / "binance_daily_realized_measures_btc_eth_2018_2026" / f
             for f in ("btc_measures.csv", "eth_measures.csv")]
    X = pd.concat([c.frame for f in files for c in read_source(f)], ignore_index=True)
    k = _klines(data / "binance_spot_daily_multi_asset_2017_2026" / "klines_1d.parquet", "1D",
                [CLOSE])
    X = X.merge(k, on=[TS, SYMBOL], how="left")
    return X[X[CLOSE].notna()].reset_index(drop=True)


def btc_1h(data: Path = DATA) -> pd.DataFrame:
    """Hourly BTCUSDT bars with the Garman-Klass variance as ``rv_var``."""
    b = _klines(data / "binance_spot_btcusdt_1h_2017_2024" / "klines_1h.parquet", "1h",
                [OPEN, HIGH, LOW, CLOSE])
    rv = range_variance(b, estimators=("garman_klass",))
    b[RV] = rv["gk_var"].to_numpy()
    b = b[b[RV] > 0]
    return b[[TS, SYMBOL, RV, CLOSE]].reset_index(drop=True)


def perp_daily(data: Path = DATA) -> pd.DataFrame:
    """USD-M perpetuals: daily realized variance of 5-minute closes and the day's last close."""
    b = _klines(data / "binance_usdm_perp_btc_eth_bnb_ltc" / "klines_5m.parquet", "5min", [CLOSE])
    d = squared_return_variance(b, pd.Timedelta("5min"), "1D")
    d = d[d["valid"] & (d[RV] > 0)]
    return d[[TS, SYMBOL, RV, "n_obs", CLOSE]].reset_index(drop=True)


def sp500_nasdaq() -> pd.DataFrame:
    """The arch.data S&P 500 and NASDAQ sessions with the Garman-Klass variance as ``rv_var``."""
    b = pd.concat([c.frame for n in ("sp500", "nasdaq") for c in read_arch_data(name=n)],
                  ignore_index=True)
    b[RV] = range_variance(b, estimators=("garman_klass",))["gk_var"].to_numpy()
    b = b[b[RV] > 0]
    return b[[TS, SYMBOL, RV, CLOSE]].reset_index(drop=True)


LOADERS = {"crypto_daily": crypto_daily, "btc_1h": btc_1h, "perp_daily": perp_daily,
           "sp500_nasdaq": lambda data=DATA: sp500_nasdaq()}


# ---- one dataset --------------------------------------------------------------------------------
def forecasts(X: pd.DataFrame, s: Settings) -> dict[str, dict]:
    """Walk-forward out-of-sample forecasts: EWMA 0.94 and log-HAR (rolling window)."""
    ewma = EWMAVol(lam=0.94, min_obs=None).walk_forward(X, s.horizons)
    har = LogHARVol(horizons=s.horizons, window=s.har_window, refit_every=s.har_refit,
                    min_obs=None).walk_forward(X, s.horizons, window=s.har_window,
                                               refit_every=s.har_refit)
    return {"ewma": ewma, "log_har": har}


def _fmt_ci(v: float, lo: float, hi: float) -> str:
    return f"{v:5.2f} [{lo:4.2f},{hi:4.2f}]"


def evaluate(name: str, X: pd.DataFrame, s: Settings, rng: np.random.Generator,
             residual_panel: dict | None = None) -> list[dict]:
    """Scale and diagnostics per symbol, model and horizon of one dataset."""
    interval = pd.Timedelta(s.unit)
    rows = []
    fcs = forecasts(X, s)
    for sym, g in X.groupby(SYMBOL, sort=True):
        g = g.sort_values(TS).reset_index(drop=True)
        tg = forward_close_to_close(g, s.horizons, interval=interval)
        idx = pd.DatetimeIndex(g[TS])
        for model, fc_by_sym in fcs.items():
            fc = fc_by_sym.get(sym)
            if fc is None:
                continue
            for h in s.horizons:
                y = pd.Series(tg[target_name(C2C_VAR, h)].to_numpy(), index=idx)
                ret = pd.Series(tg[target_name(C2C_RET, h)].to_numpy(), index=idx)
                f = fc.variance[h].reindex(idx)
                vs = variance_scale(y, f, h, symbol=str(sym), min_pairs=s.min_pairs,
                                    every=s.every, n_boot=499, random_state=rng)
                if vs.estimates.empty:
                    continue
                f_scaled = vs.apply(f)
                have = f_scaled.notna()
                z0 = standardized_residuals(ret, f.where(have), h)
                z1 = standardized_residuals(ret, f_scaled, h)
                kw = {"min_history": s.min_pairs, "refit_every": s.refit_every, "n_boot": 499}
                d0 = diagnose_residuals(z0, h, random_state=rng, **kw)
                d1 = diagnose_residuals(z1, h, random_state=rng, **kw)
                last = vs.latest()
                rows.append({
                    "dataset": name, "symbol": str(sym), "model": model, "h": h, "n": d1.n,
                    "scale": last["scale"], "scale_lo": last["lower"], "scale_hi": last["upper"],
                    "ez2_0": d0.ez2, "ez2_0_lo": d0.ez2_lower, "ez2_0_hi": d0.ez2_upper,
                    "ez2_1": d1.ez2, "ez2_1_lo": d1.ez2_lower, "ez2_1_hi": d1.ez2_upper,
                    "hit1_0": d0.hit_rate_low, "hit99_0": d0.hit_rate_high,
                    "hit1_1": d1.hit_rate_low, "hit99_1": d1.hit_rate_high,
                    "kup1_1": d1.kupiec_p_low, "kup99_1": d1.kupiec_p_high,
                    "pit_0": d0.pit_pvalue, "pit_1": d1.pit_pvalue, "nu": d1.dist_params["nu"],
                    "n_tested": d1.n_tested,
                })
                if residual_panel is not None and model == "log_har" and h == 1:
                    residual_panel[str(sym)] = z1
    return rows


def print_tables(df: pd.DataFrame) -> None:
    """Two tables of at most 80 columns: scales, then diagnostics before/after the scale."""
    print("\nVariance scale (last origin, expanding, 95% bootstrap interval) and t nu after it")
    print(f"{'dataset':<13}{'symbol':<9}{'model':<8}{'h':>3}{'n':>6}  {'scale [95% CI]':<19}"
          f"{'nu':>6}")
    for r in df.itertuples():
        print(f"{r.dataset:<13}{r.symbol:<9}{r.model:<8}{r.h:>3}{r.n:>6}  "
              f"{_fmt_ci(r.scale, r.scale_lo, r.scale_hi):<19}{r.nu:>6.1f}")
    print("\nE[z^2] with its 95% interval, before and after the scale")
    print(f"{'dataset':<13}{'symbol':<9}{'model':<8}{'h':>3}  {'before':<19}{'after':<19}")
    for r in df.itertuples():
        print(f"{r.dataset:<13}{r.symbol:<9}{r.model:<8}{r.h:>3}  "
              f"{_fmt_ci(r.ez2_0, r.ez2_0_lo, r.ez2_0_hi):<19}"
              f"{_fmt_ci(r.ez2_1, r.ez2_1_lo, r.ez2_1_hi):<19}")
    print("\nHit rates (%, expected 1.0) before > after the scale, Kupiec p after, PIT KS p")
    print(f"{'symbol':<9}{'model':<8}{'h':>3}{'n_test':>7}  {'1% hits':<11}{'99% hits':<11}"
          f"{'Kupiec p':<12}{'PIT p':<10}")
    for r in df.itertuples():
        print(f"{r.symbol[:8]:<9}{r.model:<8}{r.h:>3}{r.n_tested:>7}  "
              f"{100 * r.hit1_0:>4.1f}>{100 * r.hit1_1:<4.1f}  {100 * r.hit99_0:>4.1f}>"
              f"{100 * r.hit99_1:<4.1f}  {r.kup1_1:.2f}/{r.kup99_1:.2f}   "
              f"{r.pit_0:.2f}>{r.pit_1:.2f}")


def dvol_table(data: Path = DATA) -> None:
    """DVOL vol-of-vol at MPOR 1, 2, 5 days with the spot-vol beta."""
    path = data / "deribit_dvol_daily_2021_2025h1" / "dvol_daily.parquet"
    dv = pd.read_parquet(path)
    k = _klines(data / "binance_spot_daily_multi_asset_2017_2026" / "klines_1d.parquet", "1D",
                [CLOSE])
    print("\nVol-of-vol from DVOL (30-day tenor): quantiles of d log IV over the MPOR, beta on "
          "d log S")
    print(f"{'sym':<5}{'mpor':>5}{'n':>6}{'q1%':>8}{'q5%':>8}{'q95%':>8}{'q99%':>8}"
          f"{'beta':>8}{'se':>7}")
    for sym in ("BTC", "ETH"):
        d = dv[dv["symbol"] == sym]
        iv = pd.Series(d["close"].to_numpy(), index=pd.DatetimeIndex(d["date"]).tz_localize("UTC"))
        s = k[k[SYMBOL] == f"{sym}USDT"]
        # the daily bar of date D closes at D + 1 day: index the spot by its date D
        spot = pd.Series(s[CLOSE].to_numpy(), index=pd.DatetimeIndex(s[TS]) - pd.Timedelta("1D"))
        for m in (1, 2, 5):
            v = implied_vol_of_vol(iv, spot, symbol=sym, mpor_days=m)
            q = v.quantiles
            print(f"{sym:<5}{m:>5}{v.n_obs:>6}{q[0.01]:>8.3f}{q[0.05]:>8.3f}{q[0.95]:>8.3f}"
                  f"{q[0.99]:>8.3f}{v.spot_vol_beta:>8.3f}{v.beta_se:>7.3f}")


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the chosen datasets and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default=",".join(LOADERS))
    ap.add_argument("--csv", default=None, help="also write every number to this CSV file")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(SEED)
    rows: list[dict] = []
    panel: dict = {}
    for name in args.datasets.split(","):
        if name not in LOADERS:
            raise SystemExit(f"unknown dataset {name!r}; choose from {list(LOADERS)}")
        t0 = time.perf_counter()
        X = LOADERS[name]()
        rows += evaluate(name, X, SETTINGS[name], rng,
                         residual_panel=panel if name == "crypto_daily" else None)
        print(f"{name}: {len(X)} rows, {X[SYMBOL].nunique()} symbols, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    print_tables(df)
    if len(panel) >= 2:
        cop = fit_t_copula(pd.DataFrame(panel))
        print(f"\nt-copula of BTC/ETH daily log-HAR residuals after the scale: nu = {cop.nu:.1f}, "
              f"Kendall-tau correlation {cop.corr[0, 1]:.3f}, n = {cop.n_obs}, "
              f"loglik {cop.loglik:.1f} vs Gaussian {cop.loglik_gaussian:.1f}")
    if "crypto_daily" in args.datasets:
        dvol_table()
    if args.csv:
        df.to_csv(args.csv, index=False)
    return df


if __name__ == "__main__":
    main()
