"""HAR-family realized-variance forecasters (direct multi-horizon OLS).

For a horizon ``h`` the target at origin ``t`` is the mean realized variance over ``t+1..t+h``
(per-period average, so forecasts at every ``h`` are in the same units) and the regressors are the
HAR components of Corsi (2009): ``RV_t``, the weekly mean ``mean(RV_{t-4..t})`` and the monthly mean
``mean(RV_{t-21..t})``, plus model-specific terms:

=================  ==========================================================================
model              regressors (besides the intercept)
=================  ==========================================================================
HARVol             RV_d, RV_w, RV_m
LogHARVol          the same on log RV (averages taken over the logs); target = log of the mean RV
                   over t+1..t+h; forecast = exp(fit + 0.5 x residual variance of the window)
HARJVol            RV_d, RV_w, RV_m, J_d with J = max(RV - BV, 0) (Andersen, Bollerslev, Diebold)
HARCJVol           C_d, C_w, C_m, J_d, J_w, J_m: J = RV - BV on days the BNS test finds a jump
                   (level 0.999), else 0; C = RV - J (Andersen, Bollerslev, Diebold 2007)
SHARVol            RS+_d, RS-_d, RV_w, RV_m (Patton and Sheppard 2015)
HARQVol            RV_d, RV_d x sqrt(RQ_d), RV_w, RV_m (Bollerslev, Patton, Quaedvlieg 2016)
LogHARDoWVol       log-HAR + calendar terms (below)
HARQDoWVol         HARQ + calendar terms
=================  ==========================================================================

Calendar terms: at ``h = 1`` six weekday dummies of the target period (Monday is the base); at
``h > 1`` the share of Saturday/Sunday periods in the target window. The target periods are taken
on the calendar (origin + k periods), which is known at the origin.

Estimation: the rolling window is the last ``window`` observations up to the origin ``i`` (rows
``i - window + 1 .. i``); of these, the rows whose targets are complete at the origin enter the OLS
(the purge: row ``j`` only if ``j + purge <= i``, ``purge = h`` by default), so a full window holds
``window - purge`` regression rows. ``window_type="expanding"`` uses every row with a complete target
(at least ``window - purge`` of them). Walk-forward forecasts need a full window.
The *insanity filter* replaces a forecast outside the [min, max] of the window's level targets by
the window's mean target and records why in ``fallback_reason``.

Walk-forward speed: regressors and targets are built once per symbol and horizon; at each refit
origin the window's cross-products ``X'X``, ``X'y`` are window sums computed without cancellation
(block prefix/suffix sums), and the small normal equations are solved in one batched
``numpy.linalg.solve`` with diagonal (Jacobi) scaling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import stats

from features.errors import Failure, FailureReason
from features.schema import BV, N_OBS, RQ, RS_NEG, RS_POS, RV
from models.base import (
    BaseForecaster,
    Boolean,
    ColumnNames,
    Horizons,
    Interval,
    Options,
    SymbolPanel,
    attach_columns,
    backward_mean,
    target_mean,
)

WEEK, MONTH = 5, 22


# ---- windowed least squares ---------------------------------------------------------------------
def window_reduce(
    values: np.ndarray, ends: np.ndarray, window: int | None, ufunc: np.ufunc = np.add
) -> np.ndarray:
    """Reduce ``values`` over the windows ``[end - window + 1, end]`` (or ``[0, end]`` when
    ``window`` is None) along axis 0, for every ``end`` in ``ends``.

    Uses block prefix/suffix accumulations (van Herk / Gil-Werman): each result combines at most two
    partial accumulations of elements inside the window, so sums do not suffer the cancellation of
    differenced cumulative sums and min/max are exact.

    Parameters
    ----------
    values : array of shape (m, ...).
    ends : int array of shape (p,), inclusive window ends, each >= window - 1.
    window : window length, or None for expanding windows.
    ufunc : np.add, np.minimum or np.maximum.
    """
    ends = np.asarray(ends, dtype=np.int64)
    if window is None:
        return ufunc.accumulate(values, axis=0)[ends]
    m = values.shape[0]
    if ends.size and (ends.min() < window - 1 or ends.max() >= m):
        raise ValueError(
            f"window ends must be in [{window - 1}, {m - 1}]; got {ends.min()}..{ends.max()}"
        )
    nb = -(-m // window)
    identity = {np.add: 0.0, np.minimum: np.inf, np.maximum: -np.inf}[ufunc]
    padded = np.full((nb * window, *values.shape[1:]), identity)
    padded[:m] = values
    blocks = padded.reshape(nb, window, *values.shape[1:])
    pre = ufunc.accumulate(blocks, axis=1).reshape(padded.shape)
    suf = ufunc.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].reshape(padded.shape)
    starts = ends - window + 1
    out = pre[ends].copy()
    cross = starts % window != 0
    out[cross] = ufunc(suf[starts[cross]], pre[ends[cross]])
    return out


def solve_normal(xtx: np.ndarray, xty: np.ndarray) -> np.ndarray:
    """Solve a stack of normal equations ``xtx @ b = xty`` with Jacobi scaling.

    Parameters
    ----------
    xtx : array of shape (p, k, k); xty : array of shape (p, k).

    Returns
    -------
    Coefficients of shape (p, k); singular systems fall back to the minimum-norm least-squares
    solution.
    """
    diag = np.einsum("pkk->pk", xtx)
    d = np.where(diag > 0, 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0)), 1.0)
    a = xtx * d[:, :, None] * d[:, None, :]
    b = xty * d
    try:
        sol = np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        sol = np.einsum("pkl,pl->pk", np.linalg.pinv(a), b)
    return sol * d


@dataclass(frozen=True)
class HorizonFit:
    """The fitted state of one symbol and horizon.

    Attributes
    ----------
    coef : OLS coefficients, intercept first, shape (k + 1,).
    names : regressor names, "const" first.
    resid_var : residual variance SSR / (n - k - 1) (the log-HAR bias correction uses half of it).
    target_min, target_max, target_mean : range and mean of the window's level targets.
    n : number of observations.
    """

    coef: np.ndarray
    names: tuple[str, ...]
    resid_var: float
    target_min: float
    target_max: float
    target_mean: float
    n: int


class HARBase(BaseForecaster):
    """Common machinery of the linear HAR family (see module docs); subclasses set ``_log`` and
    implement ``_regressors``.

    Parameters
    ----------
    horizons : horizons fitted by ``fit`` (periods).
    window : estimation window in observations (rolling) or minimum sample (expanding).
    window_type : "rolling" or "expanding".
    refit_every : in walk-forward, re-estimate every this many origins.
    min_obs : rows whose ``n_obs`` is below this are dropped (when ``n_obs`` is present); None keeps
        all rows.
    insanity_filter : replace forecasts outside the window's target range by the window mean.
    """

    horizon_specific: ClassVar[bool] = True
    _log: ClassVar[bool] = False
    _dow: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict] = {
        "horizons": [Horizons()],
        "window": [Interval(int, 1, None)],
        "window_type": [Options(("rolling", "expanding"))],
        "refit_every": [Interval(int, 1, None)],
        "min_obs": [Interval(float, 0, None), None],
        "insanity_filter": [Boolean()],
    }

    def __init__(
        self,
        horizons: Sequence[int] = (1, 5, 22),
        window: int = 1000,
        window_type: str = "rolling",
        refit_every: int = 1,
        min_obs: float | None = 250,
        insanity_filter: bool = True,
    ) -> None:
        self.horizons = horizons
        self.window = window
        self.window_type = window_type
        self.refit_every = refit_every
        self.min_obs = min_obs
        self.insanity_filter = insanity_filter

    # -- serving without pickling -------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """:meth:`BaseForecaster.to_state` plus ``"state"``: symbol -> horizon -> the
        :class:`HorizonFit` (coefficients, names, residual variance, target range and mean, n)."""
        out = super().to_state()
        out["state"] = {
            sym: {
                str(h): {
                    "coef": f.coef.tolist(),
                    "names": list(f.names),
                    "resid_var": f.resid_var,
                    "target_min": f.target_min,
                    "target_max": f.target_max,
                    "target_mean": f.target_mean,
                    "n": f.n,
                }
                for h, f in fits.items()
            }
            for sym, fits in self.state_.items()
        }
        return out

    def from_state(self, state: Mapping[str, Any]) -> HARBase:
        """The inverse of :meth:`to_state`; returns self, ready to ``predict``."""
        super().from_state(state)
        self.state_ = {
            sym: {
                int(h): HorizonFit(
                    coef=np.asarray(f["coef"], dtype="float64"),
                    names=tuple(f["names"]),
                    resid_var=float(f["resid_var"]),
                    target_min=float(f["target_min"]),
                    target_max=float(f["target_max"]),
                    target_mean=float(f["target_mean"]),
                    n=int(f["n"]),
                )
                for h, f in fits.items()
            }
            for sym, fits in state["state"].items()
        }
        return self

    # -- design -----------------------------------------------------------------------------------
    def _regressors(self, panel: SymbolPanel) -> tuple[list[str], np.ndarray]:
        """Horizon-free regressors (without intercept): names and array (n_rows, k)."""
        raise NotImplementedError

    def design(
        self, panel: SymbolPanel, h: int
    ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Regressors with intercept, model-space target and level target for horizon ``h``.

        Returns
        -------
        names : regressor names ("const" first).
        X : array (n_rows, k + 1), NaN in rows without enough history.
        y : model-space target (mean RV over t+1..t+h, or its log), NaN where incomplete.
        y_level : mean RV over t+1..t+h, NaN where incomplete.
        """
        names, Z = self._regressors(panel)
        if self._dow:
            dnames, D = calendar_terms(panel.ts, panel.period, h)
            names, Z = [*names, *dnames], np.column_stack([Z, D])
        X = np.column_stack([np.ones(len(panel)), Z])
        rv = panel.col(RV)
        y_level = target_mean(rv, h)
        y = np.log(y_level) if self._log else y_level
        return ["const", *names], X, y, y_level

    def _to_level(self, pred: np.ndarray, resid_var: np.ndarray | float) -> np.ndarray:
        return np.exp(pred + 0.5 * np.asarray(resid_var)) if self._log else pred

    def _filter(
        self, f: np.ndarray, lo: np.ndarray, hi: np.ndarray, mean: np.ndarray, h: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply the insanity filter; returns (forecasts, replaced mask).

        Non-finite or non-positive forecasts are always replaced (a variance must be > 0); with
        ``insanity_filter`` so are forecasts outside the window's target range.
        """
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(f) | (f <= 0)
            if self.insanity_filter:
                bad |= (f < lo) | (f > hi)
        return np.where(bad, mean, f), bad

    # -- fit / predict ---------------------------------------------------------------------------------
    def _fit_panel(self, panel: SymbolPanel) -> dict[int, HorizonFit]:
        fits: dict[int, HorizonFit] = {}
        for h in self.horizons:
            names, X, y, y_level = self.design(panel, int(h))
            ok = np.isfinite(X).all(axis=1) & np.isfinite(y) & np.isfinite(y_level)
            rows = np.flatnonzero(ok)
            if self.window_type == "rolling":
                rows = rows[rows >= len(panel) - self.window]
            k = X.shape[1]
            if len(rows) <= k:
                raise ValueError(
                    f"{type(self).__name__}: symbol {panel.symbol} has {len(rows)} usable row(s) "
                    f"for horizon {h}; need more than {k} (history of {MONTH} rows plus targets)"
                )
            coef, *_ = np.linalg.lstsq(X[rows], y[rows], rcond=None)
            resid = y[rows] - X[rows] @ coef
            yl = y_level[rows]
            fits[int(h)] = HorizonFit(
                coef=coef,
                names=tuple(names),
                resid_var=float(resid @ resid / (len(rows) - k)),
                target_min=float(yl.min()),
                target_max=float(yl.max()),
                target_mean=float(yl.mean()),
                n=len(rows),
            )
        return fits

    @property
    def coef_(self) -> dict[str, pd.DataFrame]:
        """Fitted coefficients per symbol: DataFrame horizons x regressor names."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "state_")
        out = {}
        for sym, fits in self.state_.items():
            out[sym] = pd.DataFrame(
                {h: pd.Series(f.coef, index=list(f.names)) for h, f in fits.items()}
            ).T.rename_axis("horizon")
        return out

    def _predict_panel(
        self, panel: SymbolPanel, state: dict[int, HorizonFit], horizons: Sequence[int]
    ) -> tuple[np.ndarray, list[str | None] | None]:
        out = np.full((len(panel), len(horizons)), np.nan)
        reasons: list[str | None] = [None] * len(panel)
        for c, h in enumerate(horizons):
            fit = state[h]
            _, X, _, _ = self.design(panel, h)
            ok = np.isfinite(X).all(axis=1)
            f = np.full(len(panel), np.nan)
            f[ok] = self._to_level(X[ok] @ fit.coef, fit.resid_var)
            g, bad = self._filter(f[ok], fit.target_min, fit.target_max, fit.target_mean, h)
            f[ok] = g
            for i in np.flatnonzero(ok)[bad]:
                reasons[i] = _join(reasons[i], _reason(h))
            out[:, c] = f
        return out, reasons if any(r is not None for r in reasons) else None

    # -- fast walk-forward ------------------------------------------------------------------------------
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
        out = np.full((len(origins), len(horizons)), np.nan)
        reasons: list[str | None] = [None] * len(origins)
        for c, h in enumerate(horizons):
            names, X, y, y_level = self.design(panel, h)
            f, bad = self.walk_forward_horizon(
                X,
                y,
                y_level,
                origins,
                h=h,
                window=window,
                window_type=window_type,
                refit_every=refit_every,
                purge=h if purge is None else purge,
            )
            out[:, c] = f
            for i in np.flatnonzero(bad):
                reasons[i] = _join(reasons[i], _reason(h))
        return out, reasons if any(r is not None for r in reasons) else None

    def walk_forward_horizon(
        self,
        X: np.ndarray,
        y: np.ndarray,
        y_level: np.ndarray,
        origins: np.ndarray,
        *,
        h: int,
        window: int,
        window_type: str,
        refit_every: int,
        purge: int,
        return_coef: bool = False,
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Walk-forward forecasts of one horizon from a prebuilt design.

        Parameters
        ----------
        X : regressors with intercept, shape (n_rows, k + 1); y : model-space target; y_level : level
            target (both shape (n_rows,), NaN where incomplete).
        origins : row positions to forecast from (sorted).
        h, window, window_type, refit_every, purge : see :meth:`BaseForecaster.walk_forward`.
        return_coef : also return the coefficients used at each origin, shape (n_origins, k + 1).

        Returns
        -------
        forecasts (n_origins,) with NaN where the window is not full or regressors are missing;
        mask (n_origins,) of insanity-filter replacements; optionally the coefficients.
        """
        n, k1 = X.shape
        origins = np.asarray(origins, dtype=np.int64)
        valid = np.isfinite(X).all(axis=1) & np.isfinite(y) & np.isfinite(y_level)
        csum = np.concatenate([[0], np.cumsum(valid)])
        # rows j <= i - purge have targets complete at origin i; the rolling sample is those rows
        # among the last `window` observations (i - window < j), i.e. window - purge rows when full
        n_fit = window - purge
        if n_fit <= k1:
            raise ValueError(
                f"window - purge must exceed the {k1} regressors; got window={window}, purge={purge}"
            )
        n_avail = csum[np.clip(origins - purge + 1, 0, n)]
        in_window = n_avail - csum[np.clip(origins - window + 1, 0, n)]
        full = in_window == n_fit if window_type == "rolling" else n_avail >= n_fit
        x_ok = np.isfinite(X[origins]).all(axis=1)
        feasible = np.flatnonzero(full & x_ok)
        f = np.full(len(origins), np.nan)
        bad = np.zeros(len(origins), dtype=bool)
        coefs = np.full((len(origins), k1), np.nan)
        if feasible.size == 0:
            return (f, bad, coefs) if return_coef else (f, bad)
        refit = feasible[::refit_every]
        ends = n_avail[refit] - 1  # compressed index of the last training row
        Xv, yv, ylv = X[valid], y[valid], y_level[valid]
        w = n_fit if window_type == "rolling" else None
        xtx = window_reduce(Xv[:, :, None] * Xv[:, None, :], ends, w)
        xty = window_reduce(Xv * yv[:, None], ends, w)
        yty = window_reduce(yv * yv, ends, w)
        coef = solve_normal(xtx, xty)
        n_obs = np.full(len(refit), n_fit, dtype=float) if w else (ends + 1).astype(float)
        ssr = np.maximum(yty - np.einsum("pk,pk->p", coef, xty), 0.0)
        resid_var = ssr / (n_obs - k1)
        lo = window_reduce(ylv, ends, w, np.minimum)
        hi = window_reduce(ylv, ends, w, np.maximum)
        mean = window_reduce(ylv, ends, w) / n_obs
        which = np.searchsorted(refit, feasible, side="right") - 1
        Xo = X[origins[feasible]]
        pred = np.einsum("pk,pk->p", Xo, coef[which])
        level = self._to_level(pred, resid_var[which])
        g, b = self._filter(level, lo[which], hi[which], mean[which], h)
        f[feasible] = g
        bad[feasible] = b
        coefs[feasible] = coef[which]
        return (f, bad, coefs) if return_coef else (f, bad)


def _reason(h: int) -> str:
    """The ``fallback_reason`` text of the insanity filter (a :class:`Failure`'s note)."""
    return Failure(
        FailureReason.INVALID_VALUE,
        f"h={h}",
        f"h={h}: forecast outside the window's target range (or not > 0), "
        "replaced by the window mean",
    ).note()


def _join(a: str | None, b: str) -> str:
    return b if a is None else f"{a}; {b}"


def calendar_terms(
    ts: pd.DatetimeIndex, period: pd.Timedelta, h: int
) -> tuple[list[str], np.ndarray]:
    """Calendar regressors of the target window ``t+1..t+h`` (known at the origin).

    At ``h = 1``: six dummies of the target period's weekday (Tuesday..Sunday; Monday is the base).
    At ``h > 1``: the share of target periods starting on a Saturday or Sunday (UTC).
    ``ts`` are the origin closes, so target period ``k`` starts at ``ts + (k - 1) x period``.
    """
    if h == 1:
        wd = ts.day_of_week.to_numpy()
        return [f"dow_{d}" for d in range(1, 7)], (wd[:, None] == np.arange(1, 7)[None, :]).astype(
            float
        )
    share = np.zeros(len(ts))
    for k in range(h):
        share += (ts + k * period).day_of_week.to_numpy() >= 5
    return ["weekend_share"], (share / h)[:, None]


def _har_components(x: np.ndarray) -> list[np.ndarray]:
    return [x, backward_mean(x, WEEK), backward_mean(x, MONTH)]


class HARVol(HARBase):
    """HAR-RV (Corsi 2009): OLS of the mean RV over t+1..t+h on RV_d, RV_w, RV_m."""

    model_id: ClassVar[str] = "har"

    def _regressors(self, panel: SymbolPanel) -> tuple[list[str], np.ndarray]:
        return ["rv_d", "rv_w", "rv_m"], np.column_stack(_har_components(panel.col(RV)))


class LogHARVol(HARBase):
    """Log-HAR: HAR on log RV (averages over logs) for the log of the mean RV over t+1..t+h; the
    forecast is exp(fit + 0.5 x residual variance of the window) (lognormal bias correction)."""

    model_id: ClassVar[str] = "log_har"
    _log: ClassVar[bool] = True

    def _regressors(self, panel: SymbolPanel) -> tuple[list[str], np.ndarray]:
        return ["lrv_d", "lrv_w", "lrv_m"], np.column_stack(_har_components(np.log(panel.col(RV))))


class LogHARDoWVol(LogHARVol):
    """Log-HAR with calendar terms of the target window (weekday dummies at h=1, weekend share)."""

    model_id: ClassVar[str] = "log_har_dow"
    _dow: ClassVar[bool] = True


class LogHARDoWXVol(LogHARDoWVol):
    """Log-HAR-DoW with exogenous regressors (HAR-X): columns of ``X`` known at each origin's close
    (e.g. the log ratio of the last hours' realized variance to the day's, a market-wide surprise).

    The ``exog`` columns enter the log regression as they are, so they must be centred so that 0
    means "no news" (e.g. a log ratio minus its trailing mean); a missing value is that neutral 0
    (the context may exist for part of the history only), never a dropped row. With ``exog=()`` the
    model is exactly :class:`LogHARDoWVol`.

    Parameters
    ----------
    exog : names of the exogenous columns (NaN allowed).
    Others as :class:`HARBase`.
    """

    model_id: ClassVar[str] = "log_har_dow_x"
    _parameter_constraints: ClassVar[dict] = {
        **HARBase._parameter_constraints,
        "exog": [ColumnNames()],
    }

    def __init__(
        self,
        horizons: Sequence[int] = (1, 5, 22),
        window: int = 1000,
        window_type: str = "rolling",
        refit_every: int = 1,
        min_obs: float | None = 250,
        insanity_filter: bool = True,
        exog: Sequence[str] = (),
    ) -> None:
        super().__init__(horizons, window, window_type, refit_every, min_obs, insanity_filter)
        self.exog = exog

    def _panels(
        self, X: pd.DataFrame, period: Mapping[str, pd.Timedelta] | None = None
    ) -> dict[str, SymbolPanel]:
        # exogenous values may be negative or NaN: they must not drop rows
        return attach_columns(super()._panels(X, period), X, self.exog, type(self).__name__)

    def required_columns(self) -> tuple[str, ...]:
        """The realized columns and the ``exog`` context columns (which may hold NaN)."""
        return tuple(dict.fromkeys([*self._required_columns(), *self.exog]))

    def _regressors(self, panel: SymbolPanel) -> tuple[list[str], np.ndarray]:
        names, Z = super()._regressors(panel)
        if not self.exog:
            return names, Z
        ex = [np.nan_to_num(panel.col(c), nan=0.0, posinf=0.0, neginf=0.0) for c in self.exog]
        return [*names, *self.exog], np.column_stack([Z, *ex])


def _jump(panel: SymbolPanel) -> np.ndarray:
    return np.maximum(panel.col(RV) - panel.col(BV), 0.0)


class HARJVol(HARBase):
    """HAR-J: HAR plus the daily jump J = max(RV - BV, 0)."""

    model_id: ClassVar[str] = "har_j"
    required_inputs: ClassVar[tuple[str, ...]] = (RV, BV)

    def _regressors(self, panel: SymbolPanel) -> tuple[list[str], np.ndarray]:
        cols = [*_har_components(panel.col(RV)), _jump(panel)]
        return ["rv_d", "rv_w", "rv_m", "j_d"], np.column_stack(cols)


class HARCJVol(HARBase):
    """HAR-CJ (Andersen, Bollerslev and Diebold 2007): the HAR terms of the continuous part C and
    of the significant jumps J.

    A day's jump is significant when the BNS ratio statistic
    ``z = ((RV - BV) / RV) / sqrt(theta / n * max(1, Q / BV^2))`` (``theta = pi^2/4 + pi - 5``,
    ``n`` = returns in the day, ``Q`` = realized quarticity: jumps inflate it, which makes the test
    conservative; the tri-power version in :mod:`features.realized` is jump-robust) exceeds the standard-normal ``jump_alpha`` quantile; then ``J = RV - BV`` and
    ``C = BV``, otherwise ``J = 0`` and ``C = RV``. ``jump_alpha=None`` is the untested split
    ``J = max(RV - BV, 0)`` (every positive difference counts as a jump).

    Parameters
    ----------
    jump_alpha : significance level of the jump test (e.g. 0.999), or None.
    Others as :class:`HARBase`.
    """

    model_id: ClassVar[str] = "har_cj"
    required_inputs: ClassVar[tuple[str, ...]] = (RV, BV, RQ, N_OBS)
    _parameter_constraints: ClassVar[dict] = {
        **HARBase._parameter_constraints,
        "jump_alpha": [Interval(float, 0.5, 1.0, closed="neither"), None],
    }

    def __init__(
        self,
        horizons: Sequence[int] = (1, 5, 22),
        window: int = 1000,
        window_type: str = "rolling",
        refit_every: int = 1,
        min_obs: float | None = 250,
        insanity_filter: bool = True,
        jump_alpha: float | None = 0.999,
    ) -> None:
        super().__init__(horizons, window, window_type, refit_every, min_obs, insanity_filter)
        self.jump_alpha = jump_alpha

    def _required_columns(self) -> tuple[str, ...]:
        return (RV, BV) if self.jump_alpha is None else (RV, BV, RQ, N_OBS)

    def _regressors(self, panel: SymbolPanel) -> tuple[list[str], np.ndarray]:
        j = significant_jump(panel, self.jump_alpha)
        c = panel.col(RV) - j
        cols = [*_har_components(c), *_har_components(j)]
        return ["c_d", "c_w", "c_m", "j_d", "j_w", "j_m"], np.column_stack(cols)


def bns_ratio_z(
    rv_var: np.ndarray, bv_var: np.ndarray, quarticity_var2: np.ndarray, n_obs: np.ndarray
) -> np.ndarray:
    """The Barndorff-Nielsen-Shephard ratio jump statistic per day (standard normal without jumps).

    ``z = ((RV - BV) / RV) / sqrt(theta / n * max(1, Q / BV^2))``, ``theta = pi^2/4 + pi - 5``;
    NaN where ``RV``, ``BV`` or ``n`` is not positive.
    """
    rv, bv = np.asarray(rv_var, dtype="float64"), np.asarray(bv_var, dtype="float64")
    q, n = np.asarray(quarticity_var2, dtype="float64"), np.asarray(n_obs, dtype="float64")
    theta = np.pi**2 / 4.0 + np.pi - 5.0
    ok = (rv > 0) & (bv > 0) & (n > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        adj = np.maximum(1.0, q / (bv * bv))
        z = ((rv - bv) / rv) / np.sqrt(theta / n * adj)
    return np.where(ok, z, np.nan)


def significant_jump(panel: SymbolPanel, alpha: float | None) -> np.ndarray:
    """The jump part of each day: ``RV - BV`` where the BNS test rejects at ``alpha``, else 0
    (``alpha=None``: ``max(RV - BV, 0)`` on every day)."""
    if alpha is None:
        return _jump(panel)
    rv, bv = panel.col(RV), panel.col(BV)
    z = bns_ratio_z(rv, bv, panel.col(RQ), panel.col(N_OBS))
    crit = float(stats.norm.ppf(alpha))
    return np.where(np.isfinite(z) & (z > crit), np.maximum(rv - bv, 0.0), 0.0)


class SHARVol(HARBase):
    """SHAR: the daily RV split into positive and negative semivariances."""

    model_id: ClassVar[str] = "shar"
    required_inputs: ClassVar[tuple[str, ...]] = (RV, RS_POS, RS_NEG)

    def _regressors(self, panel: SymbolPanel) -> tuple[list[str], np.ndarray]:
        _, w, m = _har_components(panel.col(RV))
        cols = [panel.col(RS_POS), panel.col(RS_NEG), w, m]
        return ["rs_pos_d", "rs_neg_d", "rv_w", "rv_m"], np.column_stack(cols)


class HARQVol(HARBase):
    """HARQ: HAR plus RV_t x sqrt(RQ_t), letting the daily loading fall when RV is measured noisily."""

    model_id: ClassVar[str] = "harq"
    required_inputs: ClassVar[tuple[str, ...]] = (RV, RQ)

    def _regressors(self, panel: SymbolPanel) -> tuple[list[str], np.ndarray]:
        d, w, m = _har_components(panel.col(RV))
        q = d * np.sqrt(panel.col(RQ))
        return ["rv_d", "rv_q", "rv_w", "rv_m"], np.column_stack([d, q, w, m])


class HARQDoWVol(HARQVol):
    """HARQ with calendar terms of the target window."""

    model_id: ClassVar[str] = "harq_dow"
    _dow: ClassVar[bool] = True
