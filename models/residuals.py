"""Out-of-sample standardized residuals of issued forecasts and their calibration diagnostics.

``z_t = r_{t,h} / sqrt(h f_t)``: the cumulative close-to-close log return over ``t+1..t+h``
(``target_c2c_ret_h<h>`` of :func:`features.targets.forward_close_to_close`) divided by the
``h``-period volatility issued at origin ``t`` (``f_t`` = per-period average variance, so the
cumulative variance is ``h f_t``). A calibrated forecast has ``E[z^2] = 1``.

Diagnostics (:func:`diagnose_residuals`), all out of sample:

- **E[z^2]** with a stationary-bootstrap interval (:func:`models.scale.ratio_of_means_interval` of
  ``z^2`` over 1; mean block length at least ``h``). No fixed tolerance: a calibrated fat-tailed
  model's sample E[z^2] wanders far from 1 in a few hundred days, and the interval says how far is
  still consistent with 1.
- **1% / 99% hit rates**: at each origin a unit-variance distribution (:mod:`models.innovations`,
  Student-t by default; only its shape is estimated, so a wrong scale shows) is fitted on the
  residuals whose targets were complete before the origin (``j + h <= i``), refitted every
  ``refit_every`` origins once ``min_history`` residuals exist; a low hit is ``z < q_0.01``, a high
  hit ``z > q_0.99``. Each rate has Kupiec's (1995) proportion-of-failures likelihood-ratio p-value
  (chi-square, 1 degree of freedom; scipy).
- **PIT uniformity**: ``u = F(z)`` under the same out-of-sample fits, Kolmogorov-Smirnov test of
  uniformity (``scipy.stats.kstest``).

With ``h > 1`` consecutive residuals share ``h - 1`` periods; the hit and PIT tests, which assume
independence, use every ``h``-th origin only (non-overlapping targets); E[z^2] uses all of them with
the block bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from features.errors import ConfigError, DataError
from models.innovations import fit_innovation
from models.scale import ratio_of_means_interval

__all__ = ["ResidualDiagnostics", "diagnose_residuals", "kupiec_pof", "standardized_residuals"]


def standardized_residuals(ret: pd.Series, forecast_var: pd.Series, horizon: int) -> pd.Series:
    """``z = ret / sqrt(horizon x forecast_var)`` on the common index (NaN where either is missing).

    Parameters
    ----------
    ret : cumulative log return over ``t+1..t+h`` indexed by origin ``t``.
    forecast_var : per-period average variance issued at ``t`` (> 0).
    horizon : h in periods.
    """
    if not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ConfigError(f"The 'horizon' parameter must be an integer >= 1. Got {horizon!r} instead.")
    f = forecast_var.reindex(ret.index).to_numpy(dtype="float64")
    if (f[np.isfinite(f)] <= 0).any():
        k = int(np.flatnonzero(np.isfinite(f) & (f <= 0))[0])
        raise DataError(f"forecast_var must be > 0; got {float(f[k])!r} at {ret.index[k]}",
                        column="forecast_var")
    z = ret.to_numpy(dtype="float64") / np.sqrt(horizon * f)
    return pd.Series(z, index=ret.index, name=f"z_h{horizon}")


def kupiec_pof(hits: int, n: int, p: float) -> float:
    """Kupiec's proportion-of-failures test: the p-value of ``hits`` exceedances in ``n`` trials
    against a true rate ``p`` (likelihood ratio, chi-square with 1 degree of freedom)."""
    if n < 1 or not 0 <= hits <= n or not 0 < p < 1:
        raise ValueError(f"need n >= 1, 0 <= hits <= n and 0 < p < 1; got hits={hits}, n={n}, p={p}")
    pi = hits / n
    ll0 = (n - hits) * np.log1p(-p) + hits * np.log(p)
    ll1 = (n - hits) * np.log1p(-pi) if hits < n else 0.0
    ll1 += hits * np.log(pi) if hits > 0 else 0.0
    lr = max(0.0, -2.0 * (ll0 - ll1))
    return float(stats.chi2.sf(lr, 1))


@dataclass(frozen=True)
class ResidualDiagnostics:
    """Calibration diagnostics of one symbol's standardized residuals at one horizon.

    Attributes
    ----------
    horizon : h in periods.
    n : residuals in the E[z^2] estimate.
    ez2, ez2_lower, ez2_upper : sample E[z^2] and its bootstrap interval at ``level``.
    level : the interval's coverage.
    dist : the distribution fitted for the hit and PIT tests ("t", "skewt", "normal").
    dist_params : its shape parameters at the last refit.
    n_tested : non-overlapping out-of-sample residuals in the hit and PIT tests.
    hit_levels : (low, high) probabilities, e.g. (0.01, 0.99).
    hit_rate_low, hit_rate_high : shares of ``z < q_low`` and ``z > q_high`` (each expected
        ``low`` and ``1 - high``).
    kupiec_p_low, kupiec_p_high : Kupiec p-values of the two rates.
    pit_pvalue : Kolmogorov-Smirnov p-value of the PIT's uniformity.
    """

    horizon: int
    n: int
    ez2: float
    ez2_lower: float
    ez2_upper: float
    level: float
    dist: str
    dist_params: dict[str, float]
    n_tested: int
    hit_levels: tuple[float, float]
    hit_rate_low: float
    hit_rate_high: float
    kupiec_p_low: float
    kupiec_p_high: float
    pit_pvalue: float

    def accepts(self, alpha: float = 0.05) -> bool:
        """True when the E[z^2] interval holds 1 and no test rejects at ``alpha``."""
        return bool(
            self.ez2_lower <= 1.0 <= self.ez2_upper
            and min(self.kupiec_p_low, self.kupiec_p_high, self.pit_pvalue) > alpha
        )

    def summary(self) -> dict[str, object]:
        """A flat JSON-ready record (dist_params as ``dist_<name>``)."""
        d = asdict(self)
        params = d.pop("dist_params")
        d["hit_levels"] = list(self.hit_levels)
        return {**d, **{f"dist_{k}": v for k, v in params.items()}}


def diagnose_residuals(
    z: pd.Series,
    horizon: int,
    *,
    dist: str = "t",
    min_history: int = 250,
    refit_every: int = 21,
    hit_levels: Sequence[float] = (0.01, 0.99),
    level: float = 0.95,
    n_boot: int = 999,
    random_state: np.random.Generator | int | None = None,
) -> ResidualDiagnostics:
    """Out-of-sample calibration diagnostics of standardized residuals (see module docs).

    Parameters
    ----------
    z : residuals indexed by origin over the symbol's consecutive periods (NaN where missing).
    horizon : h in periods: residual ``j`` is known from position ``j + h``.
    dist : the unit-variance distribution of the hit and PIT tests.
    min_history : residuals needed before the first tested origin.
    refit_every : refit the distribution every this many origins.
    hit_levels : (low, high) probabilities of the hit tests.
    level, n_boot, random_state : the E[z^2] bootstrap.
    """
    if not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ConfigError(f"The 'horizon' parameter must be an integer >= 1. Got {horizon!r} instead.")
    lo_p, hi_p = (float(q) for q in hit_levels)
    if not 0 < lo_p < 0.5 < hi_p < 1:
        raise ConfigError(
            f"The 'hit_levels' parameter must be (low, high) with 0 < low < 0.5 < high < 1. "
            f"Got {tuple(hit_levels)!r} instead."
        )
    if not isinstance(min_history, int | np.integer) or min_history < 30:
        raise ConfigError(
            f"The 'min_history' parameter must be an integer >= 30. Got {min_history!r} instead."
        )
    if not isinstance(refit_every, int | np.integer) or refit_every < 1:
        raise ConfigError(
            f"The 'refit_every' parameter must be an integer >= 1. Got {refit_every!r} instead."
        )
    v = z.to_numpy(dtype="float64")
    if np.isinf(v).any():
        k = int(np.flatnonzero(np.isinf(v))[0])
        raise DataError(f"residuals must be finite or NaN; got {float(v[k])} at {z.index[k]}",
                        column=str(z.name))
    ok = np.isfinite(v)
    if ok.sum() < min_history + 10:
        raise DataError(
            f"need at least {min_history + 10} residuals (min_history + 10); got {int(ok.sum())}",
            column=str(z.name),
        )
    z2 = v[ok] ** 2
    ez2, lo, hi, _ = ratio_of_means_interval(
        z2, np.ones_like(z2), horizon=int(horizon), level=level, n_boot=n_boot,
        random_state=random_state,
    )
    n = len(v)
    pos = np.flatnonzero(ok)
    known = np.searchsorted(pos + horizon, np.arange(n), side="right")  # residuals known at i
    eligible = np.flatnonzero(known >= min_history)
    first = int(eligible[0]) if len(eligible) else n
    q_lo = np.full(n, np.nan)
    q_hi = np.full(n, np.nan)
    pit = np.full(n, np.nan)
    params: dict[str, float] = {}
    for start in range(first, n, refit_every):
        fit = fit_innovation(v[pos[: known[start]]], dist)
        params = fit.params
        stop = min(start + refit_every, n)
        q_lo[start:stop], q_hi[start:stop] = fit.ppf(np.array([lo_p, hi_p]))
        seg = v[start:stop]
        pit[start:stop] = np.where(np.isfinite(seg), fit.cdf(np.nan_to_num(seg)), np.nan)
    tested = np.zeros(n, dtype=bool)
    tested[first::horizon] = True
    tested &= ok & np.isfinite(pit)
    nt = int(tested.sum())
    if nt < 10:
        raise DataError(f"only {nt} non-overlapping out-of-sample residuals to test; need 10")
    low_hits = int((v[tested] < q_lo[tested]).sum())
    high_hits = int((v[tested] > q_hi[tested]).sum())
    return ResidualDiagnostics(
        horizon=int(horizon), n=int(ok.sum()), ez2=ez2, ez2_lower=lo, ez2_upper=hi,
        level=float(level), dist=dist, dist_params=dict(params), n_tested=nt,
        hit_levels=(lo_p, hi_p), hit_rate_low=low_hits / nt, hit_rate_high=high_hits / nt,
        kupiec_p_low=kupiec_pof(low_hits, nt, lo_p), kupiec_p_high=kupiec_pof(high_hits, nt, 1 - hi_p),
        pit_pvalue=float(stats.kstest(pit[tested], "uniform").pvalue),
    )
