"""A Kalman-filtered log-variance forecaster with a calendar shape and an optional activity signal.

:class:`FilteredLogVol` treats the log of the realized measure as a noisy observation of a latent
log-variance made of a deterministic calendar part and a sum of AR(1) components (a fast and a slow
one by default: a discrete stand-in for multi-factor stochastic volatility):

- **Observation.** ``y1_t = log rv_t = c_t' beta_1 + x_t + e1_t`` with ``c_t`` the calendar terms of
  the period (intercept, ``n_harmonics`` time-of-day Fourier pairs on the period's midpoint, UTC,
  and a Saturday/Sunday dummy) and ``x_t = sum_c x_{c,t}``, ``x_{c,t} = phi_c x_{c,t-1} + eta``.
  With ``activity_col`` (e.g. ``trade_count``: on most venues trading activity rises with variance)
  a second observation ``y2_t = activity_power x log(max(activity_t, 0.5))`` with its own calendar
  fit is combined with ``y1`` by inverse noise variance (noise variances by the method of moments:
  the cross-covariance of the two calendar residuals is the signal variance).
- **Parameters** at each re-estimation origin ``i``, from the observed periods in the window ending
  at ``i`` only: calendar OLS per series; the AR half-lives are fixed hyperparameters
  (``half_lives``, in periods) and the component variances are the non-negative least-squares fit of
  the residual autocovariances at lags ``1..window/4`` (log-spaced) to ``sum_c v_c phi_c^k``; the
  observation noise variance is the lag-0 remainder (floored at 5% of the residual variance).
- **Filter.** A Kalman filter over the period grid (periods missing from the data, e.g. cleaned
  rows, are skipped as missing observations) with innovations clipped at ``clip`` standard
  deviations (a jump or a bad print moves the state by at most that much). In walk-forward, the
  filter runs once through the series; each step uses the parameters of the latest re-estimation at
  or before it (state carried over), so the state at an origin depends on data up to it only.
- **Forecast.** The raw level forecast of the mean over ``t+1..t+h`` is
  ``mean_j exp(c_{t+j}' beta_1 + E_t x_{t+j} + Var_t(x_{t+j}) / 2)`` (the calendar of the target
  periods is known at the origin); it is multiplied by a scale: the QLIKE-optimal constant
  ``mean(target / raw)`` over the window's origins whose targets (mean ``rv_var`` over ``h``
  periods) are complete at the origin. The scale absorbs the log-to-level bias of the measure.

The series need not be strictly contiguous, but ``ts`` must lie on the ``period`` grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from numba import njit
from scipy.optimize import nnls

from features.schema import RV
from models.base import (
    BaseForecaster,
    Boolean,
    Horizons,
    Interval,
    Options,
    SymbolPanel,
    target_mean,
)

_DAY_NS = 86_400_000_000_000
_NOISE_FLOOR = 0.05

__all__ = ["FilteredLogVol", "FilterParams", "calendar_terms", "kalman_filter"]


def calendar_terms(
    ts: pd.DatetimeIndex, period: pd.Timedelta, n_harmonics: int, weekend: bool
) -> np.ndarray:
    """Calendar regressors of the periods closing at ``ts``: intercept, ``n_harmonics`` sine/cosine
    pairs of the UTC time of day of the period midpoint, and (``weekend``) a Saturday/Sunday dummy.

    Returns
    -------
    array of shape (n, 1 + 2 n_harmonics + weekend).
    """
    mid = pd.DatetimeIndex(ts) - pd.Timedelta(period) / 2
    frac = (mid.as_unit("ns").asi8 % _DAY_NS) / _DAY_NS
    cols = [np.ones(len(mid))]
    for k in range(1, n_harmonics + 1):
        cols += [np.sin(2 * np.pi * k * frac), np.cos(2 * np.pi * k * frac)]
    if weekend:
        cols.append((mid.day_of_week.to_numpy() >= 5).astype(float))
    return np.column_stack(cols)


@njit(cache=True)
def kalman_filter(u, r, phi, v, m0, p0, clip):  # pragma: no cover - numba
    """Kalman filter of ``u_t = sum_c x_{c,t} + e_t`` with AR(1) components ``x_c``.

    Parameters
    ----------
    u : observations (n,), NaN = missing; r : noise variances (n,).
    phi, v : AR coefficients and stationary variances of the components, shape (n, k) (the
        parameters in force at each step).
    m0, p0 : filtered mean (k,) and covariance (k, k) before the first step.
    clip : innovations are clipped at this many standard deviations (<= 0: no clipping).

    Returns
    -------
    filtered means (n, k) and covariances (n, k, k) after each step.
    """
    n, k = phi.shape
    ms = np.empty((n, k))
    ps = np.empty((n, k, k))
    m = m0.copy()
    p = p0.copy()
    for t in range(n):
        for a in range(k):
            m[a] = phi[t, a] * m[a]
        for a in range(k):
            for b in range(k):
                p[a, b] = phi[t, a] * p[a, b] * phi[t, b]
            p[a, a] += v[t, a] * (1.0 - phi[t, a] * phi[t, a])
        if np.isfinite(u[t]):
            hp = np.zeros(k)
            s = r[t]
            pred = 0.0
            for a in range(k):
                pred += m[a]
                for b in range(k):
                    hp[a] += p[b, a]
                s += hp[a]
            innov = u[t] - pred
            if clip > 0.0:
                c = clip * np.sqrt(s)
                innov = min(max(innov, -c), c)
            for a in range(k):
                m[a] += hp[a] / s * innov
            for a in range(k):
                for b in range(k):
                    p[a, b] -= hp[a] * hp[b] / s
        ms[t] = m
        ps[t] = p
    return ms, ps


@njit(cache=True)
def _raw_forecasts(rows, cal, ms, ps, phi, v, hs):  # pragma: no cover - numba
    """Mean over t+1..t+h of exp(cal_{t+j} + E x_{t+j} + Var x_{t+j} / 2) at each row t."""
    n_rows = rows.shape[0]
    k = ms.shape[1]
    hmax = 0
    for h in hs:
        hmax = max(hmax, h)
    out = np.full((n_rows, hs.shape[0]), np.nan)
    g = cal.shape[0]
    for q in range(n_rows):
        t = rows[q]
        if t + hmax >= g:
            continue
        acc = 0.0
        pw = np.ones(k)
        c = 0
        for j in range(1, hmax + 1):
            mean = cal[t + j, 0]
            var = 0.0
            for a in range(k):
                pw[a] *= phi[t, a]
            for a in range(k):
                mean += pw[a] * ms[t, a]
                var += v[t, a] * (1.0 - pw[a] * pw[a])
                for b in range(k):
                    var += pw[a] * ps[t, a, b] * pw[b]
            acc += np.exp(mean + 0.5 * var)
            if c < hs.shape[0] and j == hs[c]:
                out[q, c] = acc / j
                c += 1
    return out


@dataclass(frozen=True)
class FilterParams:
    """Parameters estimated on one window.

    Attributes
    ----------
    beta : calendar coefficients of ``log rv`` (and of the activity series, or None).
    phi, v : AR coefficients and stationary variances of the components.
    r_both, r_rv, r_act : observation noise variances of the combined, the rv-only and the
        activity-only observation.
    w_rv : weight of the rv residual in the combined observation (1 without activity).
    """

    beta: np.ndarray
    beta_act: np.ndarray | None
    phi: np.ndarray
    v: np.ndarray
    r_both: float
    r_rv: float
    r_act: float
    w_rv: float


class FilteredLogVol(BaseForecaster):
    """Kalman-filtered log-variance forecaster (see module docs).

    Parameters
    ----------
    horizons : horizons fitted (periods).
    half_lives : half-lives of the AR(1) log-variance components, in periods.
    n_harmonics : time-of-day Fourier pairs of the calendar shape (0 = none).
    weekend : add a Saturday/Sunday dummy to the calendar.
    activity_col : optional activity column (e.g. ``trade_count``) used as a second observation.
    activity_power : loading of ``log activity`` on log variance (2 when activity is proportional to
        volatility).
    clip : innovation clipping in standard deviations (0 = none).
    window : estimation window in periods of the grid (rolling) or minimum history (expanding).
    window_type : "rolling" or "expanding".
    refit_every : re-estimate the parameters every this many origins (the filter runs every period).
    min_obs : rows whose ``n_obs`` is below this are dropped; None keeps all.
    """

    model_id: ClassVar[str] = "filtered_logvol"
    horizon_specific: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict] = {
        "horizons": [Horizons()],
        "half_lives": [Horizons()],
        "n_harmonics": [Interval(int, 0, None)],
        "weekend": [Boolean()],
        "activity_power": [Interval(float, 0, None, closed="neither")],
        "clip": [Interval(float, 0, None)],
        "window": [Interval(int, 50, None)],
        "window_type": [Options(("rolling", "expanding"))],
        "refit_every": [Interval(int, 1, None)],
        "min_obs": [Interval(float, 0, None), None],
    }

    def __init__(
        self,
        horizons: Sequence[int] = (1,),
        half_lives: Sequence[int] = (12, 576),
        n_harmonics: int = 6,
        weekend: bool = True,
        activity_col: str | None = None,
        activity_power: float = 2.0,
        clip: float = 3.0,
        window: int = 6000,
        window_type: str = "rolling",
        refit_every: int = 12,
        min_obs: float | None = None,
    ) -> None:
        self.horizons = horizons
        self.half_lives = half_lives
        self.n_harmonics = n_harmonics
        self.weekend = weekend
        self.activity_col = activity_col
        self.activity_power = activity_power
        self.clip = clip
        self.window = window
        self.window_type = window_type
        self.refit_every = refit_every
        self.min_obs = min_obs

    def _validate_params(self) -> None:
        ac = self.activity_col
        if ac is not None and not (isinstance(ac, str) and ac):
            raise ValueError(
                f"The 'activity_col' parameter of {type(self).__name__} must be a non-empty str or "
                f"None. Got {ac!r} instead."
            )
        super()._validate_params()

    def _required_columns(self) -> tuple[str, ...]:
        return (RV,) if self.activity_col is None else (RV, self.activity_col)

    # -- data on the period grid -------------------------------------------------------------------
    def _grid(self, panel: SymbolPanel) -> dict[str, np.ndarray]:
        """Panel rows placed on the full period grid (NaN in missing periods)."""
        ts = panel.ts.as_unit("ns").asi8
        p = panel.period.value
        off = ts - ts[0]
        if np.any(off % p):
            raise ValueError(
                f"{type(self).__name__}: symbol {panel.symbol} has ts off the {panel.period} grid"
            )
        pos = off // p
        g = int(pos[-1]) + 1
        grid_ts = pd.DatetimeIndex(ts[0] + np.arange(g, dtype=np.int64) * p, tz="UTC")
        horizon_pad = max(int(h) for h in self.horizons) if self.horizons else 0
        cal_ts = pd.DatetimeIndex(
            ts[0] + np.arange(g + horizon_pad + 1, dtype=np.int64) * p, tz="UTC"
        )
        y1 = np.full(g, np.nan)
        rv = np.full(g, np.nan)
        rv[pos] = panel.col(RV)
        with np.errstate(divide="ignore", invalid="ignore"):
            y1[pos] = np.log(panel.col(RV))
        y2 = None
        if self.activity_col is not None:
            y2 = np.full(g, np.nan)
            a = np.maximum(panel.col(self.activity_col), 0.5)
            y2[pos] = float(self.activity_power) * np.log(a)
        cal = calendar_terms(cal_ts, panel.period, int(self.n_harmonics), bool(self.weekend))
        return {"pos": pos, "ts": grid_ts, "y1": y1, "y2": y2, "rv": rv, "cal": cal}

    # -- estimation ------------------------------------------------------------------------------------
    def estimate(
        self, y1: np.ndarray, y2: np.ndarray | None, cal: np.ndarray, lo: int, hi: int
    ) -> FilterParams:
        """Parameters from grid positions ``lo..hi`` (inclusive) of the observations."""
        sl = slice(lo, hi + 1)
        c = cal[sl]
        ok1 = np.isfinite(y1[sl])
        beta = np.linalg.lstsq(c[ok1], y1[sl][ok1], rcond=None)[0]
        u1 = y1[sl] - c @ beta
        beta_act = None
        w_rv = 1.0
        r_rv = r_act = np.nan
        u = u1
        if y2 is not None:
            ok2 = np.isfinite(y2[sl])
            beta_act = np.linalg.lstsq(c[ok2], y2[sl][ok2], rcond=None)[0]
            u2 = y2[sl] - c @ beta_act
            both = np.isfinite(u1) & np.isfinite(u2)
            a, b = u1[both], u2[both]
            cov = float(np.mean(a * b))
            var1, var2 = float(np.mean(a * a)), float(np.mean(b * b))
            signal = max(cov, 0.0)
            r_rv = max(var1 - signal, _NOISE_FLOOR * var1)
            r_act = max(var2 - signal, _NOISE_FLOOR * var2)
            w_rv = (1.0 / r_rv) / (1.0 / r_rv + 1.0 / r_act)
            u = np.where(both, w_rv * u1 + (1.0 - w_rv) * u2, np.where(np.isfinite(u1), u1, u2))
        phi = 0.5 ** (1.0 / np.asarray(self.half_lives, dtype=float))
        n = len(u)
        fin = np.isfinite(u)
        uz = np.where(fin, u - np.nanmean(u), 0.0)
        lags = np.unique(np.geomspace(1, max(2, n // 4), 30).astype(np.int64))
        gam = np.empty(len(lags))
        for q, k in enumerate(lags):
            cnt = np.sum(fin[k:] & fin[:-k])
            gam[q] = np.sum(uz[k:] * uz[:-k]) / max(cnt, 1)
        g0 = float(np.sum(uz * uz) / max(fin.sum(), 1))
        design = phi[None, :] ** lags[:, None]
        v, _ = nnls(design, gam)
        r_both = max(g0 - float(v.sum()), _NOISE_FLOOR * g0)
        if y2 is None:
            r_rv = r_both
        else:
            # the single-series noise variances on the scale of the combined one
            ratio = r_both / (1.0 / (1.0 / r_rv + 1.0 / r_act))
            r_rv, r_act = r_rv * ratio, r_act * ratio
        return FilterParams(beta, beta_act, phi, v, r_both, r_rv, r_act, w_rv)

    def _observations(
        self, grid: dict, prm: FilterParams, lo: int, hi: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Combined residual observations and their noise variances on positions lo..hi."""
        sl = slice(lo, hi + 1)
        c = grid["cal"][sl]
        u1 = grid["y1"][sl] - c @ prm.beta
        if grid["y2"] is None or prm.beta_act is None:
            return u1, np.full(len(u1), prm.r_rv)
        u2 = grid["y2"][sl] - c @ prm.beta_act
        f1, f2 = np.isfinite(u1), np.isfinite(u2)
        u = np.where(f1 & f2, prm.w_rv * u1 + (1 - prm.w_rv) * u2, np.where(f1, u1, u2))
        r = np.where(f1 & f2, prm.r_both, np.where(f1, prm.r_rv, prm.r_act))
        return u, r

    # -- the engine: filter + raw forecasts + scale, with re-estimation at given origins --------------
    def _run(
        self,
        grid: dict,
        refit_at: np.ndarray,
        hs: Sequence[int],
        window: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw forecasts and scales at every grid position (NaN before the first re-estimation).

        ``refit_at`` are grid positions (sorted) where parameters are re-estimated from the window
        ending there; the first re-estimation also filters its window with its own parameters.
        """
        g = len(grid["y1"])
        k = len(self.half_lives)
        harr = np.asarray(sorted(int(h) for h in hs), dtype=np.int64)
        raw = np.full((g, len(harr)), np.nan)
        first = int(refit_at[0])
        lo0 = 0 if window is None else max(0, first - window + 1)
        bounds = [*refit_at.tolist(), g - 1]
        m = np.zeros(k)
        p = np.zeros((k, k))
        for q, i in enumerate(refit_at):
            i = int(i)
            lo = 0 if window is None else max(0, i - window + 1)
            prm = self.estimate(grid["y1"], grid["y2"], grid["cal"], lo, i)
            if q == 0:
                p = np.diag(prm.v.copy())
                seg_lo = lo0
            else:
                seg_lo = i + 1
            seg_hi = int(bounds[q + 1]) if q + 1 < len(refit_at) else g - 1
            if q == 0:
                seg_hi_first = i
                u, r = self._observations(grid, prm, seg_lo, seg_hi_first)
                ph = np.tile(prm.phi, (len(u), 1))
                vv = np.tile(prm.v, (len(u), 1))
                ms, ps = kalman_filter(u, r, ph, vv, m, p, float(self.clip))
                rows = np.arange(seg_lo, seg_hi_first + 1)
                raw[rows] = self._raw(grid, prm, rows, ms, ps, harr)
                m, p = ms[-1].copy(), ps[-1].copy()
                seg_lo = i + 1
            if seg_hi < seg_lo:
                continue
            u, r = self._observations(grid, prm, seg_lo, seg_hi)
            ph = np.tile(prm.phi, (len(u), 1))
            vv = np.tile(prm.v, (len(u), 1))
            ms, ps = kalman_filter(u, r, ph, vv, m, p, float(self.clip))
            rows = np.arange(seg_lo, seg_hi + 1)
            raw[rows] = self._raw(grid, prm, rows, ms, ps, harr)
            m, p = ms[-1].copy(), ps[-1].copy()
        return raw, harr

    def _raw(
        self,
        grid: dict,
        prm: FilterParams,
        rows: np.ndarray,
        ms: np.ndarray,
        ps: np.ndarray,
        harr: np.ndarray,
    ) -> np.ndarray:
        calmean = (grid["cal"] @ prm.beta)[:, None]
        n = len(rows)
        # index the filter outputs by their own position 0..n-1, the calendar by grid position
        local = np.arange(n, dtype=np.int64)
        cal_shift = calmean[rows[0] :]
        ph = np.tile(prm.phi, (n, 1))
        vv = np.tile(prm.v, (n, 1))
        return _raw_forecasts(local, cal_shift, ms, ps, ph, vv, harr)

    @staticmethod
    def _scales(
        raw: np.ndarray, rv: np.ndarray, harr: np.ndarray, window: int | None
    ) -> np.ndarray:
        """Scale at each position: mean(target / raw) over the window's rows j with j + h <= t."""
        g = len(rv)
        out = np.full(raw.shape, np.nan)
        rv0 = np.where(np.isfinite(rv), rv, np.nan)
        for c, h in enumerate(harr):
            tgt = target_mean(rv0, int(h))
            ratio = tgt / raw[:, c]
            ok = np.isfinite(ratio)
            cs = np.concatenate([[0.0], np.cumsum(np.where(ok, ratio, 0.0))])
            cn = np.concatenate([[0], np.cumsum(ok)])
            t = np.arange(g)
            hi = np.clip(t - h + 1, 0, g)  # rows j <= t - h
            lo = np.zeros(g, dtype=np.int64) if window is None else np.clip(t - window + 1, 0, g)
            lo = np.minimum(lo, hi)
            num = cs[hi] - cs[lo]
            den = cn[hi] - cn[lo]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, c] = np.where(den > 0, num / den, np.nan)
        return out

    # -- BaseForecaster hooks -----------------------------------------------------------------------
    def _fit_panel(self, panel: SymbolPanel) -> dict:
        grid = self._grid(panel)
        g = len(grid["y1"])
        w = None if self.window_type == "expanding" else int(self.window)
        if g < (50 if w is None else w):
            raise ValueError(
                f"{type(self).__name__}: symbol {panel.symbol} spans {g} periods; "
                f"need at least window={self.window}"
            )
        raw, harr = self._run(grid, np.array([g - 1]), self.horizons, w)
        scale = self._scales(raw, grid["rv"], harr, w)[g - 1]
        lo = 0 if w is None else g - w
        prm = self.estimate(grid["y1"], grid["y2"], grid["cal"], lo, g - 1)
        return {"params": prm, "scale": dict(zip(harr.tolist(), scale.tolist(), strict=True))}

    def _predict_panel(
        self, panel: SymbolPanel, state: dict, horizons: Sequence[int]
    ) -> tuple[np.ndarray, list[str | None] | None]:
        grid = self._grid(panel)
        prm: FilterParams = state["params"]
        harr = np.asarray(sorted(int(h) for h in horizons), dtype=np.int64)
        u, r = self._observations(grid, prm, 0, len(grid["y1"]) - 1)
        n = len(u)
        ms, ps = kalman_filter(
            u,
            r,
            np.tile(prm.phi, (n, 1)),
            np.tile(prm.v, (n, 1)),
            np.zeros(len(prm.phi)),
            np.diag(prm.v.copy()),
            float(self.clip),
        )
        grid = dict(grid)
        need = n + int(harr.max()) + 1
        if grid["cal"].shape[0] < need:
            p = panel.period.value
            ts0 = panel.ts.as_unit("ns").asi8[0]
            cal_ts = pd.DatetimeIndex(ts0 + np.arange(need, dtype=np.int64) * p, tz="UTC")
            grid["cal"] = calendar_terms(
                cal_ts, panel.period, int(self.n_harmonics), bool(self.weekend)
            )
        raw = self._raw(grid, prm, np.arange(n), ms, ps, harr)
        scale = np.array([state["scale"][int(h)] for h in harr])
        out = raw * scale[None, :]
        order = np.argsort(np.argsort([int(h) for h in horizons]))
        return out[grid["pos"]][:, order], None

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
        old = self.horizons
        self.horizons = tuple(int(h) for h in horizons)
        try:
            grid = self._grid(panel)
        finally:
            self.horizons = old
        w = None if window_type == "expanding" else int(window)
        opos = grid["pos"][origins]
        need = 50 if w is None else w - 1
        feasible = opos[opos >= need]
        out = np.full((len(origins), len(horizons)), np.nan)
        if feasible.size == 0:
            return out, None
        refit_at = feasible[::refit_every]
        raw, harr = self._run(grid, refit_at, horizons, w)
        scales = self._scales(raw, grid["rv"], harr, w)
        f = raw * scales
        order = np.argsort(np.argsort([int(h) for h in horizons]))
        ok = opos >= need
        out[ok] = f[opos[ok]][:, order]
        return out, None
