"""Intraday HAR with a diurnal (time-of-day) adjustment, estimated without look-ahead.

Intraday realized variance has a strong time-of-day pattern (on crypto venues: the US/EU overlap
is busy, the Asian night quiet). :class:`DiurnalHARVol` removes it before the HAR regression and
puts it back on the forecast:

1. **Profile.** For each time-of-day bucket ``b`` (the period ending at ``ts``: an hourly bar
   closing 10:00 is bucket 9), ``P_i(b)`` is the mean of ``rv_var`` over the rows at or before row
   ``i`` in bucket ``b`` (the last ``profile_window`` of them, or all), or with
   ``profile_stat="log"`` the geometric mean (robust to a crash hour). The *shape* is
   ``s_i(b) = P_i(b) / mean_b' P_i(b')`` (mean 1 over the day), NaN until every bucket has
   ``min_profile_obs`` values.
2. **Adjusted series.** ``a_j = rv_j / s_{j-1}(b(j))``: each row is divided by the shape known
   *before* it (strictly earlier rows only).
3. **HAR.** OLS (or log-OLS with ``log=True``) of the mean of ``a`` over ``t+1..t+h`` on the trailing
   means of ``a`` over ``lags`` rows (e.g. 1 hour, 1 day, 1 week), with the estimation window,
   purge and insanity filter of :mod:`models.har` (the filter acts on the adjusted scale).
4. **Forecast.** ``f_i(h) = a_hat_i(h) x mean_{k=1..h} s_i(b(ts_i + k x period))``: the adjusted
   forecast times the shape, known at the origin, of the target periods' buckets (calendar
   arithmetic on the target window).

The series must be contiguous (one row per ``period``, no missing periods): a target or lag that
spans a gap in the data would mix two market regimes, so a gap raises ``ValueError`` (evaluate each
contiguous window separately).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pandas as pd

from features.schema import RV
from models.base import (
    BaseForecaster,
    Boolean,
    Horizons,
    Interval,
    Options,
    SymbolPanel,
    backward_mean,
    validate_param,
)
from models.har import HARBase, HorizonFit

_DAY_NS = 86_400_000_000_000


class LagHAR(HARBase):
    """HAR on ``rv_var`` with trailing means over arbitrary ``lags`` (rows), level or log."""

    model_id: ClassVar[str] = "lag_har"

    def __init__(
        self,
        lags: Sequence[int] = (1, 24, 168),
        log: bool = False,
        horizons: Sequence[int] = (1,),
        window: int = 720,
        window_type: str = "expanding",
        refit_every: int = 1,
        min_obs: float | None = None,
        insanity_filter: bool = True,
    ) -> None:
        self.lags = lags
        self.log = log
        super().__init__(
            horizons=horizons,
            window=window,
            window_type=window_type,
            refit_every=refit_every,
            min_obs=min_obs,
            insanity_filter=insanity_filter,
        )

    @property
    def _log(self) -> bool:  # type: ignore[override]
        return bool(self.log)

    def _regressors(self, panel: SymbolPanel) -> tuple[list[str], np.ndarray]:
        x = panel.col(RV)
        if self.log:
            with np.errstate(invalid="ignore", divide="ignore"):
                x = np.log(x)
        prefix = "la" if self.log else "a"
        cols = [backward_mean(x, int(k)) for k in self.lags]
        return [f"{prefix}_{int(k)}" for k in self.lags], np.column_stack(cols)


def bucket_ids(ts: pd.DatetimeIndex, period: pd.Timedelta) -> np.ndarray:
    """Time-of-day bucket (0 .. day/period - 1, UTC) of the period ending at each ``ts``.

    Parameters
    ----------
    ts : UTC close times; period : the bar length (must divide one day).

    Returns
    -------
    int array of shape (n,).
    """
    p = int(pd.Timedelta(period).value)
    if p <= 0 or _DAY_NS % p != 0:
        raise ValueError(
            f"The 'period' must be a positive duration dividing one day. Got {period!r} instead."
        )
    return ((pd.DatetimeIndex(ts).as_unit("ns").asi8 - 1) % _DAY_NS) // p


def diurnal_shape(
    rv_var: np.ndarray,
    buckets: np.ndarray,
    n_buckets: int,
    *,
    stat: str = "mean",
    window: int | None = None,
    min_obs: int = 5,
) -> np.ndarray:
    """The diurnal shape known at each row (rows at or before it only).

    Parameters
    ----------
    rv_var : realized variances, shape (n,), > 0.
    buckets : time-of-day bucket of each row, ints in [0, n_buckets), shape (n,).
    n_buckets : buckets per day.
    stat : "mean" (arithmetic mean per bucket) or "log" (geometric mean).
    window : use the last ``window`` values of each bucket; None = all.
    min_obs : fewer values than this in any bucket -> NaN row.

    Returns
    -------
    array of shape (n, n_buckets): ``s[i, b] = P_i(b) / mean_b' P_i(b')``.
    """
    validate_param("diurnal_shape", "stat", stat, [Options(("mean", "log"))])
    n = len(rv_var)
    v = np.log(rv_var) if stat == "log" else np.asarray(rv_var, dtype="float64")
    prof = np.full((n, n_buckets), np.nan)
    idx = np.arange(n)
    for b in range(n_buckets):
        rows = np.flatnonzero(buckets == b)
        cs = np.concatenate([[0.0], np.cumsum(v[rows])])
        cnt = np.searchsorted(rows, idx, side="right")
        lo = np.zeros(n, dtype=np.int64) if window is None else np.maximum(cnt - window, 0)
        m = cnt - lo
        ok = m >= min_obs
        prof[ok, b] = (cs[cnt[ok]] - cs[lo[ok]]) / m[ok]
    if stat == "log":
        prof = np.exp(prof)
    return prof / prof.mean(axis=1, keepdims=True)


class DiurnalHARVol(BaseForecaster):
    """Intraday HAR on diurnally adjusted realized variance (see module docs).

    Parameters
    ----------
    horizons : horizons fitted (periods).
    lags : trailing-mean lengths of the HAR regressors in periods (e.g. 1 h, 1 day, 1 week).
    log : regress log targets on log regressors (lognormal bias correction as in ``LogHARVol``).
    profile_stat : "mean" or "log" (geometric mean) per time-of-day bucket.
    profile_window : days (values per bucket) in the trailing profile; None = all past days.
    min_profile_obs : values needed in every bucket before the profile (and a forecast) exists.
    window, window_type, refit_every, min_obs, insanity_filter : as :class:`models.har.HARBase`.
    """

    model_id: ClassVar[str] = "diurnal_har"
    horizon_specific: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict] = {
        "horizons": [Horizons()],
        "lags": [Horizons()],
        "log": [Boolean()],
        "profile_stat": [Options(("mean", "log"))],
        "profile_window": [Interval(int, 1, None), None],
        "min_profile_obs": [Interval(int, 1, None)],
        "window": [Interval(int, 1, None)],
        "window_type": [Options(("rolling", "expanding"))],
        "refit_every": [Interval(int, 1, None)],
        "min_obs": [Interval(float, 0, None), None],
        "insanity_filter": [Boolean()],
    }

    def __init__(
        self,
        horizons: Sequence[int] = (1,),
        lags: Sequence[int] = (1, 24, 168),
        log: bool = False,
        profile_stat: str = "mean",
        profile_window: int | None = None,
        min_profile_obs: int = 5,
        window: int = 720,
        window_type: str = "expanding",
        refit_every: int = 1,
        min_obs: float | None = None,
        insanity_filter: bool = True,
    ) -> None:
        self.horizons = horizons
        self.lags = lags
        self.log = log
        self.profile_stat = profile_stat
        self.profile_window = profile_window
        self.min_profile_obs = min_profile_obs
        self.window = window
        self.window_type = window_type
        self.refit_every = refit_every
        self.min_obs = min_obs
        self.insanity_filter = insanity_filter

    def _inner(self, **over: object) -> LagHAR:
        params = {
            "lags": tuple(int(k) for k in self.lags),
            "log": self.log,
            "horizons": tuple(int(h) for h in self.horizons),
            "window": self.window,
            "window_type": self.window_type,
            "refit_every": self.refit_every,
            "min_obs": None,
            "insanity_filter": self.insanity_filter,
        }
        params.update(over)
        return LagHAR(**params)  # type: ignore[arg-type]

    def adjust(self, panel: SymbolPanel) -> tuple[SymbolPanel, np.ndarray, np.ndarray]:
        """The adjusted panel, the shape known at each row and the row buckets.

        Returns
        -------
        adjusted : a panel whose ``rv_var`` is ``rv_j / s_{j-1}(b(j))`` (NaN where unknown).
        shape : array (n, buckets per day) from :func:`diurnal_shape`.
        buckets : int array (n,).
        """
        ts = panel.ts
        if len(ts) > 1:
            gaps = np.flatnonzero(np.diff(ts.as_unit("ns").asi8) != panel.period.value)
            if gaps.size:
                g = int(gaps[0])
                raise ValueError(
                    f"{type(self).__name__}: symbol {panel.symbol} is not contiguous: {ts[g]} is "
                    f"followed by {ts[g + 1]}, expected one row every {panel.period}; evaluate each "
                    "contiguous window separately (no lag or target may span a gap)"
                )
        b = bucket_ids(ts, panel.period)
        nb = int(_DAY_NS // panel.period.value)
        shape = diurnal_shape(
            panel.col(RV),
            b,
            nb,
            stat=self.profile_stat,
            window=self.profile_window,
            min_obs=self.min_profile_obs,
        )
        prev = np.full(len(ts), np.nan)
        if len(ts) > 1:
            prev[1:] = shape[np.arange(len(ts) - 1), b[1:]]
        adj = panel.col(RV) / prev
        data = {RV: adj}
        return SymbolPanel(panel.symbol, ts, data, panel.period, panel.n_dropped), shape, b

    @staticmethod
    def target_factor(
        ts: pd.DatetimeIndex, period: pd.Timedelta, shape: np.ndarray, rows: np.ndarray, h: int
    ) -> np.ndarray:
        """Mean shape, known at each origin row, of the buckets of the ``h`` target periods."""
        nb = shape.shape[1]
        out = np.zeros(len(rows))
        for k in range(1, h + 1):
            bk = bucket_ids(ts[rows] + k * period, period) % nb
            out += shape[rows, bk]
        return out / h

    def _fit_panel(self, panel: SymbolPanel) -> dict[int, HorizonFit]:
        adj, _, _ = self.adjust(panel)
        return self._inner()._fit_panel(adj)

    def _predict_panel(
        self, panel: SymbolPanel, state: dict[int, HorizonFit], horizons: Sequence[int]
    ) -> tuple[np.ndarray, list[str | None] | None]:
        adj, shape, _ = self.adjust(panel)
        out, reasons = self._inner()._predict_panel(adj, state, horizons)
        rows = np.arange(len(panel))
        for c, h in enumerate(horizons):
            out[:, c] *= self.target_factor(panel.ts, panel.period, shape, rows, int(h))
        return out, reasons

    def _walk_forward_panel(
        self,
        panel: SymbolPanel,
        horizons: Sequence[int],
        origins: np.ndarray,
        *,
        window: int,
        window_type: str,
        refit_every: int,
        purge: int | None,
    ) -> tuple[np.ndarray, list[str | None] | None]:
        adj, shape, _ = self.adjust(panel)
        out, reasons = self._inner()._walk_forward_panel(
            adj,
            horizons,
            origins,
            window=window,
            window_type=window_type,
            refit_every=refit_every,
            purge=purge,
        )
        for c, h in enumerate(horizons):
            out[:, c] *= self.target_factor(panel.ts, panel.period, shape, origins, int(h))
        return out, reasons
