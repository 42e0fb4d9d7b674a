"""Predictive quantiles from a model's own past out-of-sample errors (for any forecaster).

Margin needs a predictive distribution of future variance, not only its mean, and a model whose
quantiles come from in-sample or validation residuals tends to under-cover after a regime change.
:func:`empirical_quantiles` gives any walk-forward :class:`models.forecast.VolForecast` (HAR,
GARCH, a combination, LightGBM) quantiles built from the log errors ``log(y_j / f_j)`` of the same
model at earlier origins ``j`` whose targets were complete by the origin ``i`` (row ``j + h <= i``:
no look-ahead), the last ``window`` of them:

    q_i(level) = f_i x exp(Q_level{ log(y_j / f_j) : j + h <= i, the last ``window`` such j })

This is the empirical forecast-error method (Williams and Goodman 1971), i.e. split-conformal
prediction with a rolling calibration set of genuine out-of-sample errors; with overlapping
``h``-period targets the errors are serially dependent, which widens the sampling error of the
quantiles but does not bias them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.base import target_mean
from models.forecast import VolForecast

DEFAULT_LEVELS: tuple[float, ...] = (0.005, 0.025, 0.975, 0.995)


def empirical_quantiles(
    fc: VolForecast,
    ts: pd.DatetimeIndex,
    rv_var: np.ndarray,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    window: int = 500,
    min_history: int = 100,
) -> VolForecast:
    """``fc`` with quantiles from its own past out-of-sample log errors (see module docs).

    Parameters
    ----------
    fc : walk-forward forecasts of one symbol (origins are rows of ``ts``).
    ts, rv_var : the symbol's cleaned rows (close times) and realized per-period variance; the
        h-period target of the row at position ``p`` is the mean of ``rv_var[p+1 .. p+h]``.
    levels : quantile levels in (0, 1).
    window : the most recent usable errors used at each origin.
    min_history : fewer usable errors than this -> the origin is left out.

    Returns
    -------
    A :class:`VolForecast` over the origins with at least ``min_history`` usable errors at every
    horizon (same variance, model id and cutoffs; ``quantiles`` replaced).
    """
    lv = [float(q) for q in levels]
    if not lv or any(not 0 < q < 1 for q in lv) or len(set(lv)) != len(lv):
        raise ValueError(f"levels must be distinct values in (0, 1); got {list(levels)!r}")
    if window < 1 or min_history < 1 or min_history > window:
        raise ValueError(
            f"need 1 <= min_history <= window; got min_history={min_history}, window={window}"
        )
    ts = pd.DatetimeIndex(ts)
    rv = np.asarray(rv_var, dtype="float64")
    if len(ts) != len(rv):
        raise ValueError(f"ts has {len(ts)} rows but rv_var has {len(rv)}")
    origins = fc.variance.index
    pos = ts.get_indexer(origins)
    if (pos < 0).any():
        bad = origins[pos < 0][0]
        raise ValueError(f"origin {bad} of {fc.symbol} is not a row of ts")
    keep = np.ones(len(origins), dtype=bool)
    out: dict[float, dict[int, np.ndarray]] = {q: {} for q in lv}
    for h in fc.variance.columns:
        h = int(h)
        f = fc.variance[h].to_numpy(dtype="float64")
        y = target_mean(rv, h)[pos]
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.log(y / f)
        q_rows = np.full((len(origins), len(lv)), np.nan)
        known_at = pos + h  # the row at which origin j's target is complete
        for i in range(len(origins)):
            usable = np.flatnonzero((known_at <= pos[i]) & np.isfinite(err))
            if len(usable) < min_history:
                continue
            e = err[usable[-window:]]
            q_rows[i] = np.quantile(e, lv)
        keep &= np.isfinite(q_rows).all(axis=1)
        for k, q in enumerate(lv):
            out[q][h] = f * np.exp(q_rows[:, k])
    if not keep.any():
        raise ValueError(
            f"no origin of {fc.symbol} has {min_history} earlier out-of-sample errors; "
            "start the walk-forward earlier or lower min_history"
        )
    idx = origins[keep]
    quantiles = {q: pd.DataFrame({h: v[keep] for h, v in out[q].items()}, index=idx) for q in lv}
    cutoff = fc.data_cutoff_ts
    if isinstance(cutoff, pd.Series):
        cutoff = cutoff[keep]
    reason = fc.fallback_reason[keep] if fc.fallback_reason is not None else None
    ends = fc.target_end.loc[idx] if fc.target_end is not None else None
    return VolForecast(
        variance=fc.variance.loc[idx],
        symbol=fc.symbol,
        horizon_unit=fc.horizon_unit,
        annualization=fc.annualization,
        model_id=fc.model_id,
        model_version=fc.model_version,
        data_cutoff_ts=cutoff,
        quantiles=quantiles,
        fallback_reason=reason,
        target_end=ends,
    )
