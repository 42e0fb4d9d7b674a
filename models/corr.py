"""Correlation forecasters: EWMA, rolling sample, shrinkage, DCC-GARCH and realized-correlation HAR.

Input
-----
Every model works on a :class:`CorrPanel`: synchronized per-period log returns of ``n`` symbols,
array of shape (n_periods, n_symbols), with the period-close timestamps, and optionally realized
covariance matrices of the same periods, array of shape (n_periods, n, n), from intraday data.
:func:`as_panel` builds one from

- a ``CorrPanel`` (used as is);
- a *wide* frame of returns: UTC ``DatetimeIndex`` (period closes), one float column per symbol;
- a *long* canonical frame (``ts``, ``symbol``, ``close``: bars or a feature frame): returns are
  close-to-close log returns ``ln(close_t / close_{t-1})`` of consecutive periods where every
  symbol has a close (see :func:`returns_panel`: with ``freq`` coarser than the bars, closes are
  sampled at each ``freq`` bar close and the realized covariance of the intraday returns of each
  ``freq`` bar is attached via :func:`features.covariance.realized_covariance`).

Forecasts
---------
``predict(X, horizons)`` returns a :class:`~models.corr_forecast.CorrForecast` with every row of
``X`` (with enough history) as an origin, using rows at or before it and the fitted state. The
horizon-``h`` value is the correlation of the ``h``-period return over ``t+1..t+h``; for the
dynamic models it is the average of the per-step correlation forecasts (exact when the per-step
variances are equal over the horizon). Every matrix is symmetrized, given a unit diagonal and, when
it is not PSD (round-off, per-pair models), repaired with
:func:`features.covariance.nearest_correlation`; the repair is reported in ``repaired``. Each
forecast carries the model's stressed correlation (:func:`stressed_correlation` of the fit data).

Models
------
- :class:`EWMACorr`: RiskMetrics ``Q_t = lam Q_{t-1} + (1 - lam) r_t r_t'`` (lam 0.94), flat term
  structure.
- :class:`RollingCorr`: sample correlation of the last ``window`` returns.
- :class:`ShrinkageCorr`: Ledoit-Wolf shrinkage over the last ``window`` returns, toward the
  identity (``sklearn.covariance.LedoitWolf`` on standardized returns) or toward the constant
  correlation matrix (Ledoit and Wolf 2004, "Honey, I shrunk the sample covariance matrix").
- :class:`DCCCorr`: DCC-GARCH(1,1) (Engle 2002): a GARCH(1,1) per symbol (``arch``), then
  ``Q_t = (1 - a - b) Qbar + a e_{t-1} e_{t-1}' + b Q_{t-1}`` on the standardized residuals with
  correlation targeting (``Qbar`` = their sample second moment), ``(a, b)`` by QML; optional
  asymmetric DCC (Cappiello, Engle and Sheppard 2006) adds ``g (n n' - Nbar)`` with
  ``n = min(e, 0)``. Multi-step: ``R_{t+k} ~ (1 - p^(k-1)) Rbar + p^(k-1) R_{t+1}`` (Engle and
  Sheppard 2001), ``p = a + b (+ delta g)``.
- :class:`RealizedCorrHAR`: HAR dynamics on Fisher-z transformed realized correlations (needs
  realized covariances), one set of slopes for all pairs (``pooling="scalar"``, pair fixed effects)
  or one regression per pair (``"pair"``), mapped back with ``tanh`` and repaired to PSD.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numba import njit
from scipy.optimize import minimize
from scipy.signal import lfilter
from sklearn.base import BaseEstimator
from sklearn.covariance import LedoitWolf
from sklearn.utils.validation import check_is_fitted

from features.covariance import is_psd, nearest_correlation, realized_covariance
from features.errors import ModelError
from features.schema import CLOSE, PRICE, SYMBOL, TS
from models.base import Constraint, Horizons, Interval, Options, resolve_horizons, validate_param
from models.corr_forecast import CorrForecast

__all__ = [
    "BaseCorrForecaster",
    "CorrPanel",
    "DCCCorr",
    "EWMACorr",
    "MissingCorrInputsError",
    "RealizedCorrHAR",
    "RollingCorr",
    "ShrinkageCorr",
    "as_panel",
    "cov_to_corr",
    "default_corr_models",
    "ensure_correlation",
    "returns_panel",
    "stressed_correlation",
]

FISHER_CLIP = 0.999
"""Realized correlations are clipped to [-0.999, 0.999] before the Fisher z transform."""


class MissingCorrInputsError(ModelError):
    """The panel lacks an input a correlation model needs (realized covariances)."""


# ---- the input panel --------------------------------------------------------------------------
@dataclass(frozen=True)
class CorrPanel:
    """Synchronized returns of a symbol set (and optional realized covariances).

    Attributes
    ----------
    ts : UTC period closes, sorted and unique, length n_periods.
    symbols : the column order.
    returns : array of shape (n_periods, n_symbols): log return of each period.
    realized_cov : optional array of shape (n_periods, n_symbols, n_symbols): realized covariance
        of each period's intraday returns (variance units of ``returns``).
    period : the length of one period.
    """

    ts: pd.DatetimeIndex
    symbols: tuple[str, ...]
    returns: np.ndarray
    realized_cov: np.ndarray | None
    period: pd.Timedelta

    def __post_init__(self) -> None:
        ts = pd.DatetimeIndex(self.ts)
        if ts.tz is None or str(ts.tz) != "UTC":
            raise ValueError(f"ts must be UTC timestamps; got dtype {ts.dtype}")
        if ts.has_duplicates or not ts.is_monotonic_increasing:
            raise ValueError("ts must be sorted and unique")
        object.__setattr__(self, "ts", ts.as_unit("ns"))
        r = np.asarray(self.returns, dtype="float64")
        n = len(self.symbols)
        if n < 2:
            raise ValueError(
                f"a correlation panel needs at least 2 symbols; got {list(self.symbols)}"
            )
        if r.shape != (len(ts), n):
            raise ValueError(
                f"returns must have shape (n_periods, n_symbols) = {(len(ts), n)}; got {r.shape}"
            )
        if not np.isfinite(r).all():
            raise ValueError("returns must be finite")
        object.__setattr__(self, "returns", r)
        object.__setattr__(self, "symbols", tuple(str(s) for s in self.symbols))
        if self.realized_cov is not None:
            c = np.asarray(self.realized_cov, dtype="float64")
            if c.shape != (len(ts), n, n):
                raise ValueError(
                    f"realized_cov must have shape (n_periods, n, n) = {(len(ts), n, n)}; got {c.shape}"
                )
            if not np.isfinite(c).all():
                raise ValueError("realized_cov must be finite")
            object.__setattr__(self, "realized_cov", c)

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def n_symbols(self) -> int:
        """Number of symbols."""
        return len(self.symbols)

    def slice(self, lo: int, hi: int) -> CorrPanel:
        """Rows ``lo..hi-1`` as a new panel."""
        rc = None if self.realized_cov is None else self.realized_cov[lo:hi]
        return CorrPanel(self.ts[lo:hi], self.symbols, self.returns[lo:hi], rc, self.period)

    def realized_corr(self) -> np.ndarray:
        """Realized correlation of each period, array (n_periods, n, n) (needs ``realized_cov``)."""
        if self.realized_cov is None:
            raise MissingCorrInputsError("the panel has no realized covariances")
        return cov_to_corr(self.realized_cov)

    def select(self, symbols: Sequence[str]) -> CorrPanel:
        """The panel with columns reordered to ``symbols`` (all must be present)."""
        missing = [s for s in symbols if s not in self.symbols]
        if missing:
            raise ValueError(f"symbols {missing} are not in the panel; it has {list(self.symbols)}")
        idx = [self.symbols.index(s) for s in symbols]
        rc = None if self.realized_cov is None else self.realized_cov[:, idx][:, :, idx]
        return CorrPanel(self.ts, tuple(symbols), self.returns[:, idx], rc, self.period)


def _infer_period(ts: pd.DatetimeIndex) -> pd.Timedelta:
    if len(ts) < 2:
        raise ValueError(f"cannot infer the period from {len(ts)} row(s); need at least 2")
    return pd.Timedelta(int(pd.Series(np.diff(ts.asi8)).mode().iloc[0]), unit="ns")


def returns_panel(
    frame: pd.DataFrame,
    *,
    freq: str | None = None,
    symbols: Sequence[str] | None = None,
    realized: bool = True,
    price_col: str = CLOSE,
) -> CorrPanel:
    """A :class:`CorrPanel` from a long canonical frame (``ts``, ``symbol``, ``close``).

    Parameters
    ----------
    frame : long bars or feature frame; ``ts`` is the bar close (UTC).
    freq : the panel's period ("1D"). Each ``freq`` period is the right-closed bin
        ``(E - freq, E]`` stamped ``E``; its close is the last bar close in the bin and its return
        ``ln(close_E / close_{E-freq})`` (NaN, and the period dropped, when either bin is empty).
        None = the rows as they are (daily exchange data with weekends and holidays): returns
        between consecutive rows where every symbol has a close.
    symbols : symbols to keep, in order; None = all, sorted.
    realized : attach the realized covariance of each period from the intraday bar returns
        (:func:`features.covariance.realized_covariance`, previous-tick on the bar grid) when
        ``freq`` is longer than the bar spacing.
    price_col : the price column.

    Periods where any symbol lacks a return (or a realized covariance) are dropped, so the panel
    is synchronized.
    """
    for c in (TS, SYMBOL, price_col):
        if c not in frame.columns:
            raise ValueError(f"frame is missing column {c!r}; got columns {list(frame.columns)}")
    f = frame[[TS, SYMBOL, price_col]].copy()
    f[TS] = pd.to_datetime(f[TS], utc=True)
    f[SYMBOL] = f[SYMBOL].astype(str)
    if symbols is not None:
        f = f[f[SYMBOL].isin(list(symbols))]
    wide = f.pivot_table(index=TS, columns=SYMBOL, values=price_col, aggfunc="last").sort_index()
    syms = sorted(wide.columns) if symbols is None else [s for s in symbols if s in wide.columns]
    if symbols is not None and len(syms) != len(symbols):
        raise ValueError(f"symbols {sorted(set(symbols) - set(syms))} are not in the frame")
    wide = wide[syms]
    if (wide <= 0).any().any():
        raise ValueError(f"{price_col} must be > 0")
    spacing = _infer_period(pd.DatetimeIndex(wide.index))
    period = spacing if freq is None else pd.Timedelta(freq)
    if period < spacing:
        raise ValueError(f"freq {freq!r} is shorter than the bars' spacing {spacing}")
    idx = pd.DatetimeIndex(wide.index)
    if freq is None:  # the rows as they are: returns between consecutive complete rows
        closes = wide.dropna(how="any")
    else:  # a regular grid of freq bins: a return never spans an empty bin
        closes = wide.groupby(idx.ceil(period)).last()
        closes = closes.reindex(pd.date_range(closes.index[0], closes.index[-1], freq=period))
    logp = np.log(closes.to_numpy(dtype="float64"))
    r = np.diff(logp, axis=0)
    ts = pd.DatetimeIndex(closes.index[1:])
    ok = np.isfinite(r).all(axis=1)
    rc = None
    if realized and period > spacing:
        prices = f.rename(columns={price_col: PRICE})[[TS, SYMBOL, PRICE]]
        rcov = realized_covariance(
            prices, bar=_freq_str(period), grid=_freq_str(spacing), sync="previous_tick"
        )
        wide_cov = rcov.pivot_table(
            index=TS, columns=["symbol_a", "symbol_b"], values="cov_var", aggfunc="first"
        )
        cols = pd.MultiIndex.from_product([syms, syms])
        wide_cov = wide_cov.reindex(index=ts, columns=cols)
        rc = wide_cov.to_numpy(dtype="float64").reshape(len(ts), len(syms), len(syms))
        ok &= np.isfinite(rc).all(axis=(1, 2))
        var = np.diagonal(rc, axis1=1, axis2=2)
        ok &= (var > 0).all(axis=1)
        rc = rc[ok]
    return CorrPanel(ts[ok], tuple(syms), r[ok], rc, period)


def _freq_str(p: pd.Timedelta) -> str:
    s = int(p.total_seconds())
    for unit, size in (("D", 86400), ("h", 3600), ("min", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def as_panel(X: object) -> CorrPanel:
    """A :class:`CorrPanel` from a panel, a wide return frame or a long canonical frame."""
    if isinstance(X, CorrPanel):
        return X
    if not isinstance(X, pd.DataFrame):
        raise TypeError(
            f"X must be a CorrPanel or a pandas DataFrame (wide returns or long bars); got {type(X).__name__}"
        )
    if TS in X.columns and SYMBOL in X.columns:
        return returns_panel(X)
    if not isinstance(X.index, pd.DatetimeIndex):
        raise ValueError(
            "X must be a long frame with 'ts', 'symbol', 'close' or a wide return frame with a "
            f"UTC DatetimeIndex; got index {type(X.index).__name__} and columns {list(X.columns)[:5]}"
        )
    idx = X.index if X.index.tz is not None else X.index.tz_localize("UTC")
    keep = X.notna().all(axis=1).to_numpy()
    wide, idx = X[keep], pd.DatetimeIndex(idx[keep]).tz_convert("UTC")
    return CorrPanel(
        idx,
        tuple(str(c) for c in X.columns),
        wide.to_numpy(dtype="float64"),
        None,
        _infer_period(idx),
    )


# ---- matrix helpers ---------------------------------------------------------------------------
def cov_to_corr(cov: np.ndarray) -> np.ndarray:
    """Correlation of covariance matrices ``C / sqrt(diag diag')`` (array (..., n, n)); NaN rows
    where a variance is not > 0; the diagonal is exactly 1."""
    c = np.asarray(cov, dtype="float64")
    d = np.diagonal(c, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.where(d > 0, d, np.nan))
        out = c / (sd[..., :, None] * sd[..., None, :])
    out = 0.5 * (out + np.swapaxes(out, -1, -2))
    n = c.shape[-1]
    out[..., np.arange(n), np.arange(n)] = np.where(np.isfinite(d) & (d > 0), 1.0, np.nan)
    return out


def ensure_correlation(c: np.ndarray) -> tuple[np.ndarray, bool]:
    """Symmetrize, set a unit diagonal and clip to [-1, 1]; repair with
    :func:`features.covariance.nearest_correlation` when the result is not PSD.

    Returns
    -------
    (matrix, repaired) : the valid correlation matrix and whether the repair was applied.
    """
    a = np.asarray(c, dtype="float64")
    a = 0.5 * (a + a.T)
    np.fill_diagonal(a, 1.0)
    a = np.clip(a, -1.0, 1.0)
    if is_psd(a, tol=1e-12):
        return a, False
    return nearest_correlation(a), True


def _ensure_stack(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ensure_correlation` over a stack (..., n, n) of finite matrices, vectorized."""
    shape = c.shape
    a = c.reshape(-1, shape[-2], shape[-1]).copy()
    a = 0.5 * (a + np.swapaxes(a, -1, -2))
    n = shape[-1]
    a[:, np.arange(n), np.arange(n)] = 1.0
    np.clip(a, -1.0, 1.0, out=a)
    w = np.linalg.eigvalsh(a)
    scale = np.maximum(1.0, np.abs(w).max(axis=1))
    bad = w[:, 0] < -1e-12 * scale
    rep = np.zeros(a.shape[0], dtype=bool)
    for i in np.flatnonzero(bad):
        a[i] = nearest_correlation(a[i])
        rep[i] = True
    return a.reshape(shape), rep.reshape(shape[:-2])


def stressed_correlation(returns: np.ndarray, quantile: float = 0.95) -> np.ndarray:
    """Correlation of returns on the market's worst days, repaired to PSD.

    The days kept are those whose equal-weight absolute move ``|mean_i r_t,i|`` is at or above its
    ``quantile`` (the top 5% by default), at least ``n + 2`` days; their sample correlation (a
    pair with a constant leg on those days gets 0) goes through :func:`ensure_correlation`.

    Parameters
    ----------
    returns : array of shape (n_periods, n_symbols).
    quantile : in (0, 1).
    """
    r = np.asarray(returns, dtype="float64")
    if r.ndim != 2 or r.shape[0] < r.shape[1] + 2:
        raise ValueError(
            f"returns must have shape (n_periods, n_symbols) with n_periods >= n_symbols + 2; got {r.shape}"
        )
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1); got {quantile!r}")
    move = np.abs(r.mean(axis=1))
    k = max(int(math.ceil((1.0 - quantile) * len(move) - 1e-9)), r.shape[1] + 2)
    worst = np.argsort(-move, kind="stable")[:k]
    x = r[worst] - r[worst].mean(axis=0)
    cov = x.T @ x
    c = cov_to_corr(cov)
    c = np.where(np.isfinite(c), c, 0.0)
    np.fill_diagonal(c, 1.0)
    return ensure_correlation(c)[0]


def _flat_terms(p: float, horizons: Sequence[int]) -> np.ndarray:
    """Mean over k = 1..h of ``p^(k-1)`` for each horizon (the weight of ``R_{t+1}``)."""
    out = []
    for h in horizons:
        k = np.arange(int(h))
        out.append(float(np.mean(p**k)))
    return np.asarray(out)


# ---- the estimator base -----------------------------------------------------------------------
class BaseCorrForecaster(BaseEstimator):
    """Base class of correlation forecasters (scikit-learn estimator contract).

    Class attributes
    ----------------
    model_id, model_version : written into every forecast.
    needs_realized : the model needs realized covariances in the panel.
    horizon_specific : ``fit`` estimates one model per horizon (``predict`` serves ``horizons``).
    state_from_data : ``predict`` uses a state estimated on the fit data, so each forecast's data
        cutoff is the later of its origin and the end of the fit data.
    """

    model_id: ClassVar[str] = "corr_base"
    model_version: ClassVar[str] = "1"
    needs_realized: ClassVar[bool] = False
    horizon_specific: ClassVar[bool] = False
    state_from_data: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {}

    # -- hooks ------------------------------------------------------------------------------------
    def _min_fit_rows(self, n: int) -> int:
        return n + 2

    def _fit_panel(self, panel: CorrPanel) -> Any:
        raise NotImplementedError

    def _path(
        self, panel: CorrPanel, state: Any, horizons: Sequence[int], rows: np.ndarray
    ) -> np.ndarray:
        """Forecasts at row positions ``rows``: array (len(rows), n_horizons, n, n); NaN where a
        row lacks history."""
        raise NotImplementedError

    # -- contract ---------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        params = self.get_params(deep=False)
        for name, constraints in self._parameter_constraints.items():
            validate_param(type(self).__name__, name, params[name], constraints)

    def _check_panel(self, panel: CorrPanel) -> None:
        if self.needs_realized and panel.realized_cov is None:
            raise MissingCorrInputsError(
                f"{type(self).__name__} needs realized covariances (intraday data); the panel has "
                "only returns. Build it with returns_panel(frame, freq=...) from intraday bars."
            )

    def fit(self, X: object, y: None = None) -> BaseCorrForecaster:
        """Learn the model's state from the returns (and realized covariances) in ``X``.

        Parameters
        ----------
        X : a :class:`CorrPanel`, a wide return frame or a long canonical frame (see :func:`as_panel`).
        y : ignored.

        Returns
        -------
        self
        """
        self._validate_params()
        panel = as_panel(X)
        self._check_panel(panel)
        need = self._min_fit_rows(panel.n_symbols)
        if len(panel) < need:
            raise ValueError(
                f"{type(self).__name__} needs at least {need} periods to fit; got {len(panel)}"
            )
        self.symbols_ = panel.symbols
        self.period_ = panel.period
        self.n_obs_ = len(panel)
        self.data_cutoff_ts_ = panel.ts[-1]
        self.state_ = self._fit_panel(panel)
        self.stressed_ = stressed_correlation(panel.returns, self.stress_quantile)
        if self.horizon_specific:
            self.horizons_ = tuple(sorted(int(h) for h in self.horizons))
        return self

    def _resolve_horizons(self, horizons: Sequence[int] | None) -> tuple[int, ...]:
        return resolve_horizons(self, horizons)

    def predict(
        self,
        X: object,
        horizons: Sequence[int] | None = None,
        *,
        origins: Sequence[pd.Timestamp] | pd.DatetimeIndex | None = None,
    ) -> CorrForecast:
        """Forecast from each row's ``ts`` of ``X`` as origin, using rows at or before it.

        Parameters
        ----------
        X : panel or frame holding the history the model needs (same symbols as the fit).
        horizons : horizons in periods; None = the fitted ``horizons`` (horizon-specific models).
        origins : restrict the forecasts to these ``ts`` of ``X`` (None = every row).

        Returns
        -------
        :class:`CorrForecast`; rows without enough history are left out; ``data_cutoff_ts`` per
        origin is the later of the origin and the end of the fit data (for models with state).
        """
        check_is_fitted(self, "state_")
        hs = self._resolve_horizons(horizons)
        panel = as_panel(X)
        if set(panel.symbols) != set(self.symbols_):
            raise ValueError(
                f"{type(self).__name__} was fitted on symbols {list(self.symbols_)}; got {list(panel.symbols)}"
            )
        panel = panel.select(self.symbols_)
        self._check_panel(panel)
        if origins is None:
            rows = np.arange(len(panel))
        else:
            want = pd.DatetimeIndex(origins)
            rows = panel.ts.get_indexer(want)
            if (rows < 0).any():
                raise ValueError(
                    f"origin {want[int(np.flatnonzero(rows < 0)[0])]} is not a ts of X"
                )
        corr = self._path(panel, self.state_, hs, rows)
        ok = np.isfinite(corr).all(axis=(1, 2, 3))
        if not ok.any():
            raise ValueError(
                f"{type(self).__name__}: no origin has enough history to forecast ({len(panel)} rows)"
            )
        fixed, rep = _ensure_stack(corr[ok])
        ts = panel.ts[rows[ok]]
        cut = ts
        if self.state_from_data:
            cut = ts.where(ts >= self.data_cutoff_ts_, self.data_cutoff_ts_)
        return CorrForecast(
            corr=fixed,
            symbols=self.symbols_,
            origins=ts,
            horizons=hs,
            model_id=self.model_id,
            model_version=self.model_version,
            data_cutoff_ts=pd.Series(pd.DatetimeIndex(cut), index=ts),
            horizon_unit=_freq_str(panel.period),
            repaired=rep,
            stressed=self.stressed_,
        )


_STRESS_Q = [Interval(float, 0, 1, closed="neither")]


# ---- EWMA ---------------------------------------------------------------------------------------
def ewma_covariance(returns: np.ndarray, lam: float, init: np.ndarray) -> np.ndarray:
    """RiskMetrics covariance ``Q_t = lam Q_{t-1} + (1 - lam) r_t r_t'`` with ``Q_{-1} = init``.

    Parameters
    ----------
    returns : array of shape (n_periods, n).
    lam : decay in (0, 1).
    init : array of shape (n, n).

    Returns
    -------
    array of shape (n_periods, n, n): ``Q_t`` after observing ``r_t`` (the forecast for ``t+1``).
    """
    r = np.asarray(returns, dtype="float64")
    t, n = r.shape
    outer = (r[:, :, None] * r[:, None, :]).reshape(t, n * n)
    zi = (lam * np.asarray(init, dtype="float64")).reshape(1, n * n)
    q, _ = lfilter([1.0 - lam], [1.0, -lam], outer, axis=0, zi=zi)
    return q.reshape(t, n, n)


class EWMACorr(BaseCorrForecaster):
    """RiskMetrics EWMA correlation (zero-mean returns), flat across horizons.

    Parameters
    ----------
    lam : decay factor in (0, 1) (0.94: RiskMetrics daily).
    stress_quantile : quantile of the equal-weight absolute move defining the stressed days.

    The recursion starts from the second moment of the fit data (``Q_{-1}``), so its data cutoff is
    the end of the fit data for origins before it.
    """

    model_id: ClassVar[str] = "ewma_corr"
    _parameter_constraints: ClassVar[dict] = {
        "lam": [Interval(float, 0, 1, closed="neither")],
        "stress_quantile": _STRESS_Q,
    }

    def __init__(self, lam: float = 0.94, stress_quantile: float = 0.95) -> None:
        self.lam = lam
        self.stress_quantile = stress_quantile

    def _fit_panel(self, panel: CorrPanel) -> np.ndarray:
        r = panel.returns
        return r.T @ r / len(r)

    def _path(self, panel, state, horizons, rows):
        q = ewma_covariance(panel.returns, float(self.lam), state)[rows]
        c = cov_to_corr(q)
        return np.repeat(c[:, None], len(horizons), axis=1)


# ---- rolling sample and shrinkage ------------------------------------------------------------------
def _window_moments(
    r: np.ndarray, window: int, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, sum and sum of outer products of the last ``window`` returns at each row."""
    t, n = r.shape
    s1 = np.vstack([np.zeros((1, n)), np.cumsum(r, axis=0)])
    s2 = np.concatenate(
        [np.zeros((1, n, n)), np.cumsum(r[:, :, None] * r[:, None, :], axis=0)], axis=0
    )
    hi = rows + 1
    lo = np.maximum(hi - window, 0)
    m = (hi - lo).astype("float64")
    return m, s1[hi] - s1[lo], s2[hi] - s2[lo]


class RollingCorr(BaseCorrForecaster):
    """Sample correlation of the last ``window`` returns (demeaned), flat across horizons.

    Parameters
    ----------
    window : number of returns (>= 3); rows with fewer than ``min_periods`` returns get no forecast.
    min_periods : minimum returns (None = ``window``).
    stress_quantile : quantile of the equal-weight absolute move defining the stressed days.
    """

    model_id: ClassVar[str] = "rolling_corr"
    state_from_data: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict] = {
        "window": [Interval(int, 3, None)],
        "min_periods": [Interval(int, 3, None), None],
        "stress_quantile": _STRESS_Q,
    }

    def __init__(
        self, window: int = 250, min_periods: int | None = None, stress_quantile: float = 0.95
    ) -> None:
        self.window = window
        self.min_periods = min_periods
        self.stress_quantile = stress_quantile

    def _fit_panel(self, panel: CorrPanel) -> None:
        return None

    def _path(self, panel, state, horizons, rows):
        m, s1, s2 = _window_moments(panel.returns, int(self.window), rows)
        den = np.where(m > 1, m - 1.0, np.nan)[:, None, None]
        cov = (s2 - s1[:, :, None] * s1[:, None, :] / m[:, None, None]) / den
        c = cov_to_corr(cov)
        need = self.window if self.min_periods is None else self.min_periods
        c[m < need] = np.nan
        return np.repeat(c[:, None], len(horizons), axis=1)


def constant_correlation_shrinkage(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit and Wolf (2004) shrinkage of the sample covariance toward the constant-correlation
    target.

    Parameters
    ----------
    x : array of shape (n_obs, n) of returns (demeaned inside).

    Returns
    -------
    (covariance, delta) : the shrunk covariance ``delta F + (1 - delta) S`` and the intensity
    ``delta = max(0, min(1, kappa / T))``, ``kappa = (pi - rho) / gamma`` (their eqs. for the
    constant-correlation target ``F``, ``S`` with divisor ``T``).
    """
    x = np.asarray(x, dtype="float64")
    t, n = x.shape
    y = x - x.mean(axis=0)
    s = y.T @ y / t
    var = np.diag(s)
    sd = np.sqrt(var)
    corr = s / np.outer(sd, sd)
    rbar = (corr.sum() - n) / (n * (n - 1))
    f = rbar * np.outer(sd, sd)
    np.fill_diagonal(f, var)
    yy = y[:, :, None] * y[:, None, :]
    pi_mat = ((yy - s) ** 2).mean(axis=0)
    pi_hat = pi_mat.sum()
    # theta_ii,ij = mean_t (y_i^2 - s_ii)(y_i y_j - s_ij)
    y2 = y**2 - var
    theta = np.einsum("ti,tij->ij", y2, yy - s) / t
    rho_off = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                rho_off += (sd[j] / sd[i]) * theta[i, j] + (sd[i] / sd[j]) * theta[j, i]
    rho_hat = np.trace(pi_mat) + 0.5 * rbar * rho_off
    gamma_hat = ((f - s) ** 2).sum()
    if gamma_hat <= 0:
        return s, 1.0
    delta = float(np.clip((pi_hat - rho_hat) / gamma_hat / t, 0.0, 1.0))
    return delta * f + (1.0 - delta) * s, delta


class ShrinkageCorr(BaseCorrForecaster):
    """Ledoit-Wolf shrinkage correlation of the last ``window`` returns, flat across horizons.

    Parameters
    ----------
    window : number of returns (>= 5).
    target : "identity" (``sklearn.covariance.LedoitWolf`` on the window's standardized returns:
        correlations shrink toward 0) or "constant_correlation" (toward the average correlation,
        Ledoit and Wolf 2004).
    stress_quantile : quantile of the equal-weight absolute move defining the stressed days.
    """

    model_id: ClassVar[str] = "shrinkage_corr"
    state_from_data: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict] = {
        "window": [Interval(int, 5, None)],
        "target": [Options(("identity", "constant_correlation"))],
        "stress_quantile": _STRESS_Q,
    }

    def __init__(
        self, window: int = 250, target: str = "constant_correlation", stress_quantile: float = 0.95
    ) -> None:
        self.window = window
        self.target = target
        self.stress_quantile = stress_quantile

    def _fit_panel(self, panel: CorrPanel) -> None:
        return None

    def _one(self, x: np.ndarray) -> np.ndarray:
        sd = x.std(axis=0)
        if not (sd > 0).all():
            return np.full((x.shape[1], x.shape[1]), np.nan)
        if self.target == "identity":
            z = (x - x.mean(axis=0)) / sd
            cov = LedoitWolf(assume_centered=True).fit(z).covariance_
        else:
            cov, _ = constant_correlation_shrinkage(x)
        return cov_to_corr(cov)

    def _path(self, panel, state, horizons, rows):
        n = panel.n_symbols
        out = np.full((len(rows), n, n), np.nan)
        w = int(self.window)
        for k, i in enumerate(rows):
            if i + 1 < w:
                continue
            out[k] = self._one(panel.returns[i + 1 - w : i + 1])
        return np.repeat(out[:, None], len(horizons), axis=1)


# ---- DCC-GARCH ----------------------------------------------------------------------------------
@njit(cache=True)
def _dcc_core(e, neg, qbar, nbar, a, b, g, store):  # pragma: no cover - numba
    """DCC recursion from ``Q_0 = qbar``: returns (sum of ``log det R_t + e_t' R_t^-1 e_t``, the
    correlations ``R_t`` for t = 0..T (``R_T`` = the one-step forecast after the last row) when
    ``store``, else an empty array)."""
    t_len, n = e.shape
    q = qbar.copy()
    ll = 0.0
    out = np.empty((t_len + 1 if store else 0, n, n))
    r = np.empty((n, n))
    for t in range(t_len + 1):
        d = np.sqrt(np.diag(q))
        for i in range(n):
            for j in range(n):
                r[i, j] = q[i, j] / (d[i] * d[j])
        if store:
            out[t] = r
        if t == t_len:
            break
        chol = np.linalg.cholesky(r)
        logdet = 0.0
        for i in range(n):
            logdet += 2.0 * np.log(chol[i, i])
        # solve L z = e_t: quadratic form = z'z
        z = np.zeros(n)
        for i in range(n):
            s = e[t, i]
            for k in range(i):
                s -= chol[i, k] * z[k]
            z[i] = s / chol[i, i]
        ll += logdet + np.dot(z, z)
        for i in range(n):
            for j in range(n):
                q[i, j] = (
                    (1.0 - a - b) * qbar[i, j]
                    - g * nbar[i, j]
                    + a * e[t, i] * e[t, j]
                    + g * neg[t, i] * neg[t, j]
                    + b * q[i, j]
                )
    return ll, out


def dcc_loglik(
    e: np.ndarray, a: float, b: float, g: float = 0.0, *, qbar: np.ndarray | None = None
) -> float:
    """Correlation part of the DCC Gaussian log-likelihood,
    ``-0.5 sum_t (log det R_t + e_t' R_t^-1 e_t - e_t' e_t)``, with correlation targeting
    (``qbar`` = ``e'e / T`` unless given); ``g`` is the asymmetric term."""
    e = np.ascontiguousarray(e, dtype="float64")
    neg = np.minimum(e, 0.0)
    qb = e.T @ e / len(e) if qbar is None else np.asarray(qbar, dtype="float64")
    nb = neg.T @ neg / len(e)
    ll, _ = _dcc_core(e, neg, qb, nb, float(a), float(b), float(g), False)
    return float(-0.5 * (ll - float((e * e).sum())))


def garch_filter(
    y: np.ndarray, mu: float, omega: float, alpha: float, beta: float, var0: float
) -> np.ndarray:
    """GARCH(1,1) conditional variances ``s_t = omega + alpha (y_{t-1} - mu)^2 + beta s_{t-1}``,
    ``s_0 = var0``, for an array ``y`` of shape (n,)."""
    eps2 = (np.asarray(y, dtype="float64") - mu) ** 2
    x = np.empty_like(eps2)
    x[0] = var0
    x[1:] = omega + alpha * eps2[:-1]
    return lfilter([1.0], [1.0, -beta], x)


@dataclass(frozen=True)
class DCCState:
    """Fitted DCC-GARCH state: per-symbol GARCH parameters (on returns scaled by ``scale``), the
    variance that starts each GARCH recursion, the DCC parameters and the targets."""

    scale: np.ndarray
    garch: np.ndarray  # (n, 4): mu, omega, alpha, beta
    var0: np.ndarray
    a: float
    b: float
    g: float
    qbar: np.ndarray
    nbar: np.ndarray
    delta: float
    converged: bool
    loglik: float


class DCCCorr(BaseCorrForecaster):
    """DCC-GARCH(1,1) correlation (Engle 2002), optionally asymmetric (Cappiello et al. 2006).

    Parameters
    ----------
    asymmetric : add the asymmetric term ``g (n_{t-1} n_{t-1}' - Nbar)``, ``n = min(e, 0)``.
    stress_quantile : quantile of the equal-weight absolute move defining the stressed days.

    Fit: a constant-mean GARCH(1,1) per symbol with normal errors (``arch``, returns scaled to unit
    variance), standardized residuals ``e`` from the GARCH recursion started at the sample
    variance, then ``(a, b[, g])`` by maximizing the correlation log-likelihood (SLSQP) subject to
    ``a, b, g >= 0`` and ``a + b + delta g <= 0.999`` (``delta`` = largest eigenvalue of
    ``Qbar^-1/2 Nbar Qbar^-1/2``). Attributes after fit: ``state_`` (:class:`DCCState`).
    """

    model_id: ClassVar[str] = "dcc_corr"
    _parameter_constraints: ClassVar[dict] = {
        "asymmetric": [Options((True, False))],
        "stress_quantile": _STRESS_Q,
    }

    def __init__(self, asymmetric: bool = False, stress_quantile: float = 0.95) -> None:
        self.asymmetric = asymmetric
        self.stress_quantile = stress_quantile

    def _min_fit_rows(self, n: int) -> int:
        return max(100, 10 * n)

    def _fit_panel(self, panel: CorrPanel) -> DCCState:
        from arch import arch_model

        r = panel.returns
        n = r.shape[1]
        scale = r.std(axis=0)
        if not (scale > 0).all():
            bad = [panel.symbols[i] for i in np.flatnonzero(~(scale > 0))]
            raise ValueError(f"DCCCorr needs returns that vary; symbol(s) {bad} are constant")
        y = r / scale
        params = np.empty((n, 4))
        var0 = np.empty(n)
        converged = True
        for i in range(n):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence is recorded in state_.converged
                res = arch_model(
                    y[:, i], mean="Constant", vol="GARCH", p=1, q=1, dist="normal", rescale=False
                ).fit(disp="off", show_warning=False)
            converged &= res.convergence_flag == 0
            p = res.params
            params[i] = [p["mu"], p["omega"], p["alpha[1]"], p["beta[1]"]]
            var0[i] = float(np.mean((y[:, i] - p["mu"]) ** 2))
        e = self._std_resid(y, params, var0)
        neg = np.minimum(e, 0.0)
        qbar = e.T @ e / len(e)
        nbar = neg.T @ neg / len(e)
        if self.asymmetric:
            w, v = np.linalg.eigh(qbar)
            inv_half = (v / np.sqrt(w)) @ v.T
            delta = float(np.linalg.eigvalsh(inv_half @ nbar @ inv_half)[-1])
        else:
            delta = 0.0
        e = np.ascontiguousarray(e)

        def nll(theta: np.ndarray) -> float:
            a, b = theta[0], theta[1]
            g = theta[2] if self.asymmetric else 0.0
            try:
                ll, _ = _dcc_core(e, neg, qbar, nbar, a, b, g, False)
            except np.linalg.LinAlgError:
                return 1e12
            return 0.5 * ll / len(e)

        x0s = [np.array([0.03, 0.95]), np.array([0.10, 0.80]), np.array([0.01, 0.50])]
        bounds = [(0.0, 0.999), (0.0, 0.999)]
        cons_vec = np.array([1.0, 1.0])
        if self.asymmetric:
            x0s = [np.append(x, 0.0) for x in x0s]
            bounds.append((0.0, 0.999))
            cons_vec = np.array([1.0, 1.0, delta])
        best = None
        for x0 in x0s:
            res = minimize(
                nll,
                x0,
                method="SLSQP",
                bounds=bounds,
                constraints=[{"type": "ineq", "fun": lambda th: 0.999 - cons_vec @ th}],
                options={"maxiter": 200, "ftol": 1e-10},
            )
            if best is None or res.fun < best.fun:
                best = res
        th = np.clip(best.x, 0.0, 0.999)
        return DCCState(
            scale=scale,
            garch=params,
            var0=var0,
            a=float(th[0]),
            b=float(th[1]),
            g=float(th[2]) if self.asymmetric else 0.0,
            qbar=qbar,
            nbar=nbar,
            delta=delta,
            converged=bool(converged and best.success),
            loglik=float(-best.fun * len(e)),
        )

    @staticmethod
    def _std_resid(y: np.ndarray, params: np.ndarray, var0: np.ndarray) -> np.ndarray:
        cols = []
        for i in range(y.shape[1]):
            mu, om, al, be = params[i]
            s2 = garch_filter(y[:, i], mu, om, al, be, var0[i])
            cols.append((y[:, i] - mu) / np.sqrt(s2))
        return np.column_stack(cols)

    @property
    def params_(self) -> dict[str, float]:
        """The fitted DCC parameters ``a``, ``b`` (and ``g`` when asymmetric)."""
        check_is_fitted(self, "state_")
        out = {"a": self.state_.a, "b": self.state_.b}
        if self.asymmetric:
            out["g"] = self.state_.g
        return out

    def _path(self, panel, state: DCCState, horizons, rows):
        y = panel.returns / state.scale
        e = np.ascontiguousarray(self._std_resid(y, state.garch, state.var0))
        neg = np.minimum(e, 0.0)
        _, r_all = _dcc_core(e, neg, state.qbar, state.nbar, state.a, state.b, state.g, True)
        r_next = r_all[rows + 1]  # forecast for t+1 made at origin t
        rbar = cov_to_corr(state.qbar)
        p = min(state.a + state.b + state.delta * state.g, 0.999)
        w = _flat_terms(p, horizons)
        return rbar[None, None] + w[None, :, None, None] * (r_next[:, None] - rbar[None, None])


# ---- realized-correlation HAR -----------------------------------------------------------------------
def _har_features(z: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """Trailing means of ``z`` (n_periods, n_pairs) over each lag: array (n_periods, n_pairs, k);
    NaN where the window is incomplete."""
    t = z.shape[0]
    c = np.vstack([np.zeros((1, z.shape[1])), np.cumsum(z, axis=0)])
    out = np.full((t, z.shape[1], len(lags)), np.nan)
    for j, lag in enumerate(lags):
        if t >= lag:
            out[lag - 1 :, :, j] = (c[lag:] - c[:-lag]) / lag
    return out


def _fisher(c: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(c, -FISHER_CLIP, FISHER_CLIP))


class RealizedCorrHAR(BaseCorrForecaster):
    """HAR on Fisher-z realized correlations, mapped back and repaired to PSD.

    Parameters
    ----------
    pooling : "scalar" (common slopes for all pairs, pair fixed effects: ``z_{h} - zbar_p =
        b'(x - zbar_p)``) or "pair" (an OLS with intercept per pair).
    horizons : horizons fitted (one regression per horizon).
    lags : HAR averaging windows in periods (default daily, weekly, monthly: 1, 5, 22).
    stress_quantile : quantile of the equal-weight absolute move defining the stressed days.

    The regressors at row ``t`` are trailing means of ``z = atanh(realized corr)`` over each lag;
    the target of horizon ``h`` is the Fisher z of the realized correlation of the ``h``-period
    covariance ``sum_{k=1..h} RCov_{t+k}``. Realized correlations are clipped to +-0.999 first.
    """

    model_id: ClassVar[str] = "har_corr"
    needs_realized: ClassVar[bool] = True
    horizon_specific: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict] = {
        "pooling": [Options(("scalar", "pair"))],
        "horizons": [Horizons()],
        "lags": [Horizons()],
        "stress_quantile": _STRESS_Q,
    }

    def __init__(
        self,
        pooling: str = "scalar",
        horizons: Sequence[int] = (1, 5),
        lags: Sequence[int] = (1, 5, 22),
        stress_quantile: float = 0.95,
    ) -> None:
        self.pooling = pooling
        self.horizons = horizons
        self.lags = lags
        self.stress_quantile = stress_quantile

    def _min_fit_rows(self, n: int) -> int:
        return max(self.lags) + max(self.horizons) + 30

    @staticmethod
    def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.triu_indices(n, 1)

    def _fit_panel(self, panel: CorrPanel) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        n = panel.n_symbols
        iu, ju = self._pairs(n)
        rc = panel.realized_corr()
        z = _fisher(rc[:, iu, ju])
        x = _har_features(z, list(self.lags))
        zbar = z.mean(axis=0)
        cov = panel.realized_cov
        csum = np.concatenate([np.zeros((1, n, n)), np.cumsum(cov, axis=0)])
        state = {}
        t_len = len(panel)
        for h in sorted(int(h) for h in self.horizons):
            tgt = np.full((t_len, len(iu)), np.nan)
            if t_len > h:
                agg = csum[1 + h : t_len + 1] - csum[1 : t_len + 1 - h]
                tgt[: t_len - h] = _fisher(cov_to_corr(agg)[:, iu, ju])
            ok = np.isfinite(x).all(axis=(1, 2)) & np.isfinite(tgt).all(axis=1)
            if ok.sum() < len(self.lags) + 2:
                raise ValueError(
                    f"RealizedCorrHAR needs more history for horizon {h}; got {int(ok.sum())} usable rows"
                )
            xs, ys = x[ok], tgt[ok]
            if self.pooling == "scalar":
                xd = (xs - zbar[None, :, None]).reshape(-1, len(self.lags))
                yd = (ys - zbar[None, :]).reshape(-1)
                beta = np.linalg.lstsq(xd, yd, rcond=None)[0]
                state[h] = (zbar * (1.0 - beta.sum()), np.tile(beta, (len(iu), 1)))
            else:
                inter = np.empty(len(iu))
                slopes = np.empty((len(iu), len(self.lags)))
                for p in range(len(iu)):
                    design = np.column_stack([np.ones(len(xs)), xs[:, p, :]])
                    coef = np.linalg.lstsq(design, ys[:, p], rcond=None)[0]
                    inter[p], slopes[p] = coef[0], coef[1:]
                state[h] = (inter, slopes)
        return state

    def _path(self, panel, state, horizons, rows):
        n = panel.n_symbols
        iu, ju = self._pairs(n)
        z = _fisher(panel.realized_corr()[:, iu, ju])
        x = _har_features(z, list(self.lags))[rows]
        out = np.full((len(rows), len(horizons), n, n), np.nan)
        for k, h in enumerate(horizons):
            inter, slopes = state[h]
            zh = inter[None, :] + np.einsum("tpk,pk->tp", x, slopes)
            c = np.tanh(zh)
            m = np.repeat(np.eye(n)[None], len(rows), axis=0)
            m[:, iu, ju] = c
            m[:, ju, iu] = c
            m[~np.isfinite(c).all(axis=1)] = np.nan
            out[:, k] = m
        return out


# ---- defaults -----------------------------------------------------------------------------------
def default_corr_models(window: int = 250) -> dict[str, BaseCorrForecaster]:
    """The comparison set of the evaluation: configuration name -> unfitted model."""
    return {
        "ewma": EWMACorr(lam=0.94),
        "rolling": RollingCorr(window=window),
        "lw_identity": ShrinkageCorr(window=window, target="identity"),
        "lw_constant": ShrinkageCorr(window=window, target="constant_correlation"),
        "dcc": DCCCorr(),
        "adcc": DCCCorr(asymmetric=True),
        "har_scalar": RealizedCorrHAR(pooling="scalar"),
        "har_pair": RealizedCorrHAR(pooling="pair"),
    }
