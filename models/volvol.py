"""Vol-of-vol: how far implied (or forecast) volatility moves over a margin period of risk.

Option margin shocks implied volatility as well as the price. :func:`implied_vol_of_vol` measures,
from a constant-tenor implied-volatility index (Deribit DVOL: 30 days):

- the quantiles of ``d log IV = log IV_{t+m} - log IV_t`` over the MPOR of ``m`` days (overlapping
  windows, every date whose ``t+m`` is exactly ``m`` days later);
- the **spot-vol beta**: the OLS slope of ``d log IV`` on the spot log return over the same window
  (with an intercept; Newey-West standard error, ``m - 1`` lags), so a scenario can move the vol
  with the price (``d log IV = beta x d log S + residual``) as well as on its own.

Other tenors (rule): options of ``T`` days to expiry get the 30-day shocks scaled by
``(tenor / max(T, min_tenor_days)) ** p`` with **p = 0.5** by default: short-dated implied vols move
more than long-dated ones, and the square-root decay is the common convention for it (e.g. the
"Vega x T^-1/2" adjustment of Interactive Brokers' Risk Navigator, whose note reports that the first
principal component of daily percentage changes of implied vol falls monotonically with maturity).
There is only one tenor in the data, so ``p`` cannot be estimated here; it is a parameter. Tenors
under ``min_tenor_days`` (7) are treated as 7 days so that the rule does not explode at expiry.

Where no implied-volatility index exists, :func:`realized_vol_of_vol` uses the change in log
forecast volatility (``0.5 x d log forecast_var``) of a volatility model, the source recorded as
``realized:<model>``; its tenor is the forecast's horizon in days.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import statsmodels.api as sm

from features.errors import ConfigError, DataError

__all__ = ["VolOfVol", "implied_vol_of_vol", "realized_vol_of_vol"]

DEFAULT_LEVELS: tuple[float, ...] = (0.005, 0.01, 0.05, 0.5, 0.95, 0.99, 0.995)


@dataclass(frozen=True)
class VolOfVol:
    """Distribution of the change in log volatility over an MPOR, with the spot-vol beta.

    Attributes
    ----------
    symbol : the underlying ("BTC").
    source : "implied:<index>" (e.g. "implied:DVOL") or "realized:<model id>".
    mpor_days : the margin period of risk in days.
    tenor_days : the tenor the quantiles are measured at (30 for DVOL; the forecast horizon in days
        for a realized source).
    quantiles : level -> quantile of ``d log vol`` over ``mpor_days``.
    spot_vol_beta, beta_se : OLS slope of ``d log vol`` on the spot log return and its Newey-West
        standard error (None when no spot series was given).
    n_obs : windows used.
    start, end : first and last date of the data used.
    tenor_power, min_tenor_days : the tenor rule (module docs).
    """

    symbol: str
    source: str
    mpor_days: int
    tenor_days: float
    quantiles: dict[float, float] = field(repr=False)
    spot_vol_beta: float | None
    beta_se: float | None
    n_obs: int
    start: pd.Timestamp
    end: pd.Timestamp
    tenor_power: float = 0.5
    min_tenor_days: float = 7.0

    def tenor_factor(self, dte_days: float) -> float:
        """``(tenor_days / max(dte_days, min_tenor_days)) ** tenor_power``."""
        if not np.isfinite(dte_days) or dte_days <= 0:
            raise ValueError(f"dte_days must be finite and > 0; got {dte_days!r}")
        return float((self.tenor_days / max(float(dte_days), self.min_tenor_days)) ** self.tenor_power)

    def quantiles_for_tenor(self, dte_days: float) -> dict[float, float]:
        """The ``d log vol`` quantiles scaled to an option of ``dte_days`` days to expiry."""
        k = self.tenor_factor(dte_days)
        return {q: v * k for q, v in self.quantiles.items()}


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    lv = tuple(float(q) for q in levels)
    if not lv or any(not 0 < q < 1 for q in lv) or len(set(lv)) != len(lv):
        raise ConfigError(f"The 'levels' parameter must be distinct values in (0, 1). Got {levels!r}.")
    return tuple(sorted(lv))


def _daily(s: pd.Series, name: str) -> pd.Series:
    if not isinstance(s.index, pd.DatetimeIndex):
        raise DataError(f"{name} must be indexed by dates; got {type(s.index).__name__}", column=name)
    x = pd.to_numeric(s, errors="coerce").astype("float64")
    bad = x.notna() & ~(np.isfinite(x) & (x > 0))
    if bad.any():
        t = x.index[bad.to_numpy()][0]
        raise DataError(f"{name} must be finite and > 0; got {float(x[t])!r} at {t}", column=name)
    x = x.dropna()
    if x.index.has_duplicates:
        raise DataError(f"{name} has duplicate date {x.index[x.index.duplicated()][0]}", column=name)
    return x.sort_index()


def _change(logx: pd.Series, m: int) -> pd.Series:
    """``logx[t+m] - logx[t]`` for dates exactly ``m`` days apart, indexed by ``t``."""
    shifted = logx.copy()
    shifted.index = shifted.index - pd.Timedelta(days=m)
    return (shifted - logx).reindex(logx.index).dropna()


def _beta(dv: pd.Series, ds: pd.Series, m: int) -> tuple[float, float, int]:
    j = pd.concat([dv, ds], axis=1, join="inner").dropna()
    if len(j) < 30:
        raise DataError(f"need 30 windows with both the vol and the spot change; got {len(j)}")
    x = sm.add_constant(j.iloc[:, 1].to_numpy())
    cov = {"maxlags": max(m - 1, 0)}
    res = sm.OLS(j.iloc[:, 0].to_numpy(), x).fit(cov_type="HAC", cov_kwds=cov)
    return float(res.params[1]), float(res.bse[1]), len(j)


def implied_vol_of_vol(
    iv: pd.Series,
    spot: pd.Series | None = None,
    *,
    symbol: str,
    mpor_days: int = 1,
    levels: Sequence[float] = DEFAULT_LEVELS,
    index_name: str = "DVOL",
    tenor_days: float = 30.0,
    tenor_power: float = 0.5,
    min_tenor_days: float = 7.0,
    min_obs: int = 250,
) -> VolOfVol:
    """Vol-of-vol from a daily constant-tenor implied-volatility index (see module docs).

    Parameters
    ----------
    iv : implied volatility (any positive units, e.g. DVOL in percent) indexed by date.
    spot : the underlying's close indexed by the same dates; None = no spot-vol beta.
    symbol : the underlying.
    mpor_days : the margin period of risk in days (>= 1).
    levels : quantile levels.
    index_name : recorded in ``source`` as ``implied:<index_name>``.
    tenor_days, tenor_power, min_tenor_days : the tenor rule.
    min_obs : windows required.
    """
    if not isinstance(mpor_days, int | np.integer) or mpor_days < 1:
        raise ConfigError(f"The 'mpor_days' parameter must be an integer >= 1. Got {mpor_days!r}.")
    if not tenor_power >= 0 or not tenor_days > 0 or not min_tenor_days > 0:
        raise ConfigError(
            "tenor_days and min_tenor_days must be > 0 and tenor_power >= 0; got "
            f"{tenor_days!r}, {min_tenor_days!r}, {tenor_power!r}"
        )
    lv = _check_levels(levels)
    x = _daily(iv, "iv")
    dv = _change(np.log(x), int(mpor_days))
    if len(dv) < min_obs:
        raise DataError(f"need {min_obs} {mpor_days}-day changes of {symbol}'s implied vol; "
                        f"got {len(dv)}")
    beta = se = None
    if spot is not None:
        ds = _change(np.log(_daily(spot, "spot")), int(mpor_days))
        beta, se, _ = _beta(dv, ds, int(mpor_days))
    q = dict(zip(lv, np.quantile(dv.to_numpy(), lv).tolist(), strict=True))
    return VolOfVol(symbol=symbol, source=f"implied:{index_name}", mpor_days=int(mpor_days),
                    tenor_days=float(tenor_days), quantiles=q, spot_vol_beta=beta, beta_se=se,
                    n_obs=len(dv), start=x.index[0], end=x.index[-1],
                    tenor_power=float(tenor_power), min_tenor_days=float(min_tenor_days))


def realized_vol_of_vol(
    forecast_var: pd.Series,
    spot: pd.Series | None = None,
    *,
    symbol: str,
    model_id: str,
    horizon_days: float = 1.0,
    mpor_days: int = 1,
    levels: Sequence[float] = DEFAULT_LEVELS,
    tenor_power: float = 0.5,
    min_tenor_days: float = 7.0,
    min_obs: int = 250,
) -> VolOfVol:
    """Vol-of-vol from a volatility model's daily forecasts where no implied-vol index exists.

    ``d log vol = 0.5 x (log f_{t+m} - log f_t)`` over the MPOR of ``m`` days; ``f`` = the
    forecast variance indexed by origin date (any per-period units). Source ``realized:<model_id>``,
    tenor = ``horizon_days``.
    """
    v = _daily(forecast_var, "forecast_var")
    vol = pd.Series(np.sqrt(v.to_numpy()), index=v.index)
    out = implied_vol_of_vol(
        vol, spot, symbol=symbol, mpor_days=mpor_days, levels=levels, index_name=model_id,
        tenor_days=horizon_days, tenor_power=tenor_power, min_tenor_days=min_tenor_days,
        min_obs=min_obs,
    )
    return replace(out, source=f"realized:{model_id}")
