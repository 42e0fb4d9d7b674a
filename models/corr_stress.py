"""Stressed correlation matrices from a returns panel, each with the dates it came from.

A margin model takes, for each portfolio, the worst of several correlation matrices: a directional
portfolio is hurt most when correlations rise in a crash, a hedge (long one asset, short a related
one) when the usual co-movement breaks down. :func:`stressed_correlations` builds three:

- **usual**: every date of the panel;
- **high** (stressed-high): the worst market days, the ``worst_q`` share of dates with the lowest
  equal-weight portfolio return (the mean of the symbols' returns that day);
- **low** (decorrelation): the dates of the rolling ``window``-day windows whose average pairwise
  correlation is in the lowest ``low_q`` share of all windows (the union of their days).

Estimator: the correlation of co-movements **about zero** (``E[x y] / sqrt(E[x^2] E[y^2])``) by
default, because scenario P&L is a move from today's price and its second moment is what a margin
scales; the usual Pearson correlation about the subsample mean (``center=True``) understates
crash co-movement: on days selected for a low portfolio return, the common move is mostly in the
mean, which centering removes. Each pair uses the dates on which both symbols have a return
(pairwise complete); such a matrix need not be positive semi-definite, so it is repaired with
:func:`features.covariance.nearest_correlation` when its smallest eigenvalue is below ``-1e-12``
(the ``repaired`` flag and the raw smallest eigenvalue are recorded).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.covariance import nearest_correlation
from features.errors import ConfigError, DataError

__all__ = ["StressedCorrelations", "StressedMatrix", "co_movement_corr", "stressed_correlations"]


@dataclass(frozen=True)
class StressedMatrix:
    """One correlation matrix and where it came from.

    Attributes
    ----------
    kind : "usual", "high" or "low".
    symbols : the row/column order.
    corr : array of shape (n_symbols, n_symbols), symmetric, unit diagonal, PSD.
    dates : the dates whose returns it was estimated from (sorted).
    rule : how the dates were chosen (for a report).
    repaired : whether the pairwise matrix needed the nearest-correlation repair.
    min_eigenvalue_raw : the smallest eigenvalue before any repair.
    """

    kind: str
    symbols: tuple[str, ...]
    corr: np.ndarray = field(repr=False)
    dates: pd.DatetimeIndex = field(repr=False)
    rule: str
    repaired: bool
    min_eigenvalue_raw: float

    def frame(self) -> pd.DataFrame:
        """The matrix as a labelled DataFrame."""
        return pd.DataFrame(self.corr, index=list(self.symbols), columns=list(self.symbols))


@dataclass(frozen=True)
class StressedCorrelations:
    """The usual, stressed-high and stressed-low matrices of one panel (same symbol order)."""

    usual: StressedMatrix
    high: StressedMatrix
    low: StressedMatrix

    def worst(self, exposure: np.ndarray | pd.Series) -> StressedMatrix:
        """The matrix maximizing ``x' C x`` for volatility-weighted exposures ``x`` (one per symbol,
        e.g. position value times volatility): the worst correlation for that portfolio."""
        x = (exposure.reindex(list(self.usual.symbols)).to_numpy(dtype="float64")
             if isinstance(exposure, pd.Series) else np.asarray(exposure, dtype="float64"))
        if x.shape != (len(self.usual.symbols),) or not np.isfinite(x).all():
            raise ValueError(
                f"exposure must be {len(self.usual.symbols)} finite values for symbols "
                f"{list(self.usual.symbols)}; got shape {x.shape}"
            )
        return max((self.usual, self.high, self.low), key=lambda m: float(x @ m.corr @ x))


def co_movement_corr(returns: pd.DataFrame, *, center: bool = False,
                     min_pairs: int = 2) -> tuple[np.ndarray, float, bool]:
    """Pairwise-complete correlation of a returns panel, PSD-repaired when needed.

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_symbols); NaN = no return that day.
    center : False = about zero (see module docs); True = Pearson.
    min_pairs : dates with both returns required for every pair.

    Returns
    -------
    (corr, smallest eigenvalue before repair, repaired).
    """
    x = returns.to_numpy(dtype="float64")
    d = x.shape[1]
    have = np.isfinite(x)
    out = np.eye(d)
    for i in range(d):
        for j in range(i + 1, d):
            both = have[:, i] & have[:, j]
            nb = int(both.sum())
            if nb < min_pairs:
                raise DataError(
                    f"symbols {returns.columns[i]} and {returns.columns[j]} share {nb} dates; "
                    f"need {min_pairs}"
                )
            a, b = x[both, i], x[both, j]
            if center:
                a, b = a - a.mean(), b - b.mean()
            den = np.sqrt(np.dot(a, a) * np.dot(b, b))
            if not den > 0:
                raise DataError(
                    f"symbol {returns.columns[i] if np.dot(a, a) == 0 else returns.columns[j]} "
                    "has zero variation on the selected dates; a correlation needs moves"
                )
            out[i, j] = out[j, i] = float(np.dot(a, b) / den)
    lam = float(np.linalg.eigvalsh(out).min()) if d else 1.0
    if lam < -1e-12:
        return nearest_correlation(out), lam, True
    return out, lam, False


def _matrix(kind: str, returns: pd.DataFrame, dates: pd.DatetimeIndex, rule: str,
            center: bool) -> StressedMatrix:
    c, lam, rep = co_movement_corr(returns.loc[dates], center=center)
    return StressedMatrix(kind=kind, symbols=tuple(map(str, returns.columns)), corr=c,
                          dates=pd.DatetimeIndex(dates).sort_values(), rule=rule, repaired=rep,
                          min_eigenvalue_raw=lam)


def rolling_mean_correlation(returns: pd.DataFrame, window: int) -> pd.Series:
    """The average pairwise Pearson correlation over each trailing ``window`` dates (indexed by the
    window's last date; NaN until a full window with every pair defined)."""
    rc = returns.rolling(window, min_periods=window).corr()
    d = returns.shape[1]
    vals = rc.to_numpy(dtype="float64").reshape(len(returns), d, d)
    iu = np.triu_indices(d, 1)
    off = vals[:, iu[0], iu[1]]
    with np.errstate(invalid="ignore"):
        m = np.where(np.isfinite(off).all(axis=1), off.mean(axis=1), np.nan)
    return pd.Series(m, index=returns.index, name=f"mean_corr_{window}")


def stressed_correlations(
    returns: pd.DataFrame,
    *,
    worst_q: float = 0.05,
    window: int = 21,
    low_q: float = 0.05,
    center: bool = False,
    min_dates: int = 20,
) -> StressedCorrelations:
    """The usual, stressed-high and stressed-low correlation matrices (see module docs).

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_symbols) of log returns, indexed by date (sorted,
        unique); NaN where a symbol has no return.
    worst_q : share of dates with the lowest equal-weight return (stressed-high).
    window : rolling window (dates) of the average pairwise correlation (stressed-low).
    low_q : share of windows with the lowest average correlation (stressed-low).
    center : False = co-movement about zero; True = Pearson.
    min_dates : each matrix needs at least this many dates.
    """
    for name, q in (("worst_q", worst_q), ("low_q", low_q)):
        if not 0 < q < 0.5:
            raise ConfigError(f"The '{name}' parameter must be in (0, 0.5). Got {q!r} instead.")
    if not isinstance(window, int | np.integer) or window < 5:
        raise ConfigError(f"The 'window' parameter must be an integer >= 5. Got {window!r} instead.")
    if returns.shape[1] < 2:
        raise DataError(f"need at least 2 symbols; got columns {list(returns.columns)}")
    idx = pd.DatetimeIndex(returns.index)
    if not idx.is_monotonic_increasing or idx.has_duplicates:
        raise DataError("the returns index must be unique, increasing dates")
    v = returns.to_numpy(dtype="float64")
    if np.isinf(v).any():
        raise DataError("returns must be finite or NaN; got inf")
    if len(returns) < max(min_dates, window + min_dates):
        raise DataError(
            f"need at least {max(min_dates, window + min_dates)} dates (window + min_dates); "
            f"got {len(returns)}"
        )
    usual = _matrix("usual", returns, idx, "all dates", center)
    n_have = np.isfinite(v).sum(axis=1)
    rows = n_have >= 2  # the equal-weight return of the symbols trading that day
    mkt = pd.Series(np.nanmean(v[rows], axis=1), index=idx[rows])
    thr = float(mkt.quantile(worst_q))
    high_dates = mkt.index[mkt.to_numpy() <= thr]
    if len(high_dates) < min_dates:
        raise DataError(f"the worst {worst_q:.0%} of days are {len(high_dates)} dates; "
                        f"need {min_dates} (more history or a larger worst_q)")
    high = _matrix("high", returns, high_dates,
                   f"equal-weight return <= its {worst_q:.3g} quantile ({thr:.4g})", center)
    rm = rolling_mean_correlation(returns, int(window)).dropna()
    if rm.empty:
        raise DataError(f"no {window}-date window has every pair's correlation defined")
    cut = float(rm.quantile(low_q))
    ends = np.flatnonzero(idx.isin(rm.index[rm.to_numpy() <= cut]))
    sel = np.zeros(len(idx), dtype=bool)
    for e in ends:
        sel[e - window + 1 : e + 1] = True
    low_dates = idx[sel]
    if len(low_dates) < min_dates:
        raise DataError(f"the lowest-correlation windows cover {len(low_dates)} dates; need {min_dates}")
    low = _matrix("low", returns, low_dates,
                  f"{window}-date windows with mean pairwise correlation <= its {low_q:.3g} "
                  f"quantile ({cut:.3f})", center)
    return StressedCorrelations(usual=usual, high=high, low=low)
