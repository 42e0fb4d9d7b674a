"""Walk-forward evaluation of correlation forecasters: covariance losses, DM tests and the MCS.

:func:`walk_forward_corr` re-estimates every model on the data available at each refit origin
(rolling or expanding window, ``refit_every`` origins per fit, optional purge) and forecasts the
correlation of the next ``h`` periods from every origin; all models are scored on the same origins
(per horizon, those every model forecast and whose target is known).

Definitions (origin ``t``, horizon ``h``, ``n`` symbols)
--------------------------------------------------------
- Target covariance ``Y = sum_{k=1..h} C_{t+k}`` with ``C`` the realized covariance of each period
  (intraday data, :func:`models.corr.returns_panel`) or, without it, the outer product ``r r'`` of
  the period's returns; target correlation ``R_Y`` = its correlation; ``r_h = sum r_{t+k}``.
- Forecast covariance ``S = D R D``: the model's correlation ``R`` with a **common** volatility
  forecast for every model, ``D = diag(sqrt(h s_t))``, ``s_t`` the EWMA (``vol_lam``, 0.94) of each
  symbol's realized variance (diagonal of ``C``) at the origin; only the correlation differs
  between models.
- ``frobenius`` = ``||R - R_Y||_F``; ``frobenius_truth`` the same against the mean true
  correlation over ``t+1..t+h`` (simulated data).
- ``stein_qlike`` = ``tr(S^-1 Y) - ln det(S^-1 Y) - n`` (Stein loss, 0 at ``S = Y``) when every
  target ``Y`` of the horizon is non-singular; with singular targets (outer products of fewer than
  ``n`` returns) ``ln det Y`` is ``-inf``, so the column holds ``tr(S^-1 Y) + ln det S - n`` (Stein
  up to a term that does not depend on the model: differences between models, DM tests and the MCS
  are unchanged); ``settings["stein_form"]`` says which form each horizon used.
- ``gmv_var`` = ``w' Y w`` with ``w = S^-1 1 / (1' S^-1 1)`` (realized variance of the
  global-minimum-variance portfolio built from the forecast); lower is better.
- ``mahalanobis`` = ``r_h' S^-1 r_h / n``; its mean (``mahalanobis_ratio``) is 1 for a calibrated
  covariance forecast.
- ``psd`` = the forecast correlation passes :func:`features.covariance.is_psd` (must be 100%).
- Stressed sub-periods: ``stress_periods`` (start, end) intervals, or by default the
  ``n_drawdowns`` largest peak-to-trough drawdowns of the equal-weight cumulative return over the
  evaluation span. An (origin, horizon) row is stressed when a period of its target window lies in
  one; losses are reported for "all", "calm" and "stressed" rows.
- DM: Diebold-Mariano tests (Newey-West lag ``h - 1``) of each model against ``benchmark``
  (EWMA) on stein_qlike, frobenius and gmv_var, ``d = loss_model - loss_benchmark`` (negative =
  better); MCS (``arch``) across models on stein_qlike and gmv_var.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone

from features.covariance import is_psd
from features.errors import Failure, FailureReason, ModelError
from features.schema import TS
from models.base import InsufficientHistoryError
from models.corr import (
    BaseCorrForecaster,
    CorrPanel,
    MissingCorrInputsError,
    as_panel,
    cov_to_corr,
    default_corr_models,
    returns_panel,
)
from models.corr_forecast import CorrForecast
from models.ewma import ewma_recursion
from models.losses import diebold_mariano, model_confidence_set

LOSSES = ("frobenius", "stein_qlike", "gmv_var", "mahalanobis")
DM_LOSSES = ("stein_qlike", "frobenius", "gmv_var")
MCS_LOSSES = ("stein_qlike", "gmv_var")


# ---- losses -----------------------------------------------------------------------------------
def _stack(a: object, name: str) -> np.ndarray:
    x = np.asarray(a, dtype="float64")
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must be square matrices of shape (..., n, n); got {x.shape}")
    return x


def frobenius_loss(forecast: object, target: object) -> np.ndarray:
    """``||F - Y||_F`` per matrix for stacks of shape (..., n, n)."""
    f, y = _stack(forecast, "forecast"), _stack(target, "target")
    if f.shape != y.shape:
        raise ValueError(
            f"forecast and target must have the same shape; got {f.shape} and {y.shape}"
        )
    return np.sqrt(((f - y) ** 2).sum(axis=(-2, -1)))


def stein_loss(forecast_cov: object, target_cov: object, *, full: bool = True) -> np.ndarray:
    """Stein loss ``tr(S^-1 Y) - ln det(S^-1 Y) - n`` per matrix (stacks (..., n, n)).

    Parameters
    ----------
    forecast_cov : positive definite forecasts ``S``.
    target_cov : targets ``Y`` (positive definite when ``full``).
    full : False drops the model-free ``-ln det Y`` term: ``tr(S^-1 Y) + ln det S - n`` (defined
        for singular targets).
    """
    s, y = _stack(forecast_cov, "forecast_cov"), _stack(target_cov, "target_cov")
    if s.shape != y.shape:
        raise ValueError(
            f"forecast_cov and target_cov must have the same shape; got {s.shape} and {y.shape}"
        )
    n = s.shape[-1]
    sign_s, logdet_s = np.linalg.slogdet(s)
    if (sign_s <= 0).any():
        raise ValueError(
            "forecast_cov must be positive definite; got a singular or indefinite matrix"
        )
    tr = np.trace(np.linalg.solve(s, y), axis1=-2, axis2=-1)
    out = tr + logdet_s - n
    if full:
        sign_y, logdet_y = np.linalg.slogdet(y)
        if (sign_y <= 0).any():
            raise ValueError(
                "target_cov must be positive definite for the full Stein loss; pass full=False "
                "for singular targets"
            )
        out = out - logdet_y
    return out


def gmv_weights(cov: object) -> np.ndarray:
    """Global-minimum-variance weights ``S^-1 1 / (1' S^-1 1)`` (stack (..., n, n) -> (..., n))."""
    s = _stack(cov, "cov")
    ones = np.ones(s.shape[:-1] + (1,))
    x = np.linalg.solve(s, ones)[..., 0]
    return x / x.sum(axis=-1, keepdims=True)


def gmv_variance(forecast_cov: object, target_cov: object) -> np.ndarray:
    """Realized variance ``w' Y w`` of the GMV portfolio of each forecast ``S``."""
    w = gmv_weights(forecast_cov)
    y = _stack(target_cov, "target_cov")
    return np.einsum("...i,...ij,...j->...", w, y, w)


def mahalanobis_ratio(forecast_cov: object, returns: object) -> np.ndarray:
    """``r' S^-1 r / n`` per observation (stack S (..., n, n), r (..., n)); mean 1 when calibrated."""
    s = _stack(forecast_cov, "forecast_cov")
    r = np.asarray(returns, dtype="float64")
    if r.shape != s.shape[:-1]:
        raise ValueError(f"returns must have shape {s.shape[:-1]}; got {r.shape}")
    x = np.linalg.solve(s, r[..., None])[..., 0]
    return (r * x).sum(axis=-1) / s.shape[-1]


# ---- the result -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorrEvaluationResult:
    """The outcome of :func:`walk_forward_corr`.

    Attributes
    ----------
    forecasts : configuration name -> its out-of-sample :class:`CorrForecast` (its ``stressed``
        matrix is the one of the last fit).
    per_origin : one row per model, horizon and evaluated origin: the losses, ``stressed``,
        ``psd``, ``repaired`` (and ``frobenius_truth``).
    losses : means per model, horizon and regime ("all", "calm", "stressed"): n, frobenius,
        stein_qlike, gmv_var, mahalanobis_ratio, psd_share, repaired_share (frobenius_truth).
    dm : Diebold-Mariano tests against the benchmark per loss.
    mcs : Model Confidence Set p-values and membership per loss.
    benchmark : the benchmark configuration (None when it was not evaluated).
    skipped : configuration -> why it was not evaluated (the message of its Failure).
    stress_periods : the stressed (start, end) intervals used.
    n_configurations : number of configurations tried.
    settings : the evaluation settings.
    """

    forecasts: Mapping[str, CorrForecast]
    per_origin: pd.DataFrame
    losses: pd.DataFrame
    dm: pd.DataFrame
    mcs: pd.DataFrame
    benchmark: str | None
    skipped: Mapping[str, str]
    stress_periods: tuple[tuple[pd.Timestamp, pd.Timestamp], ...]
    n_configurations: int
    settings: Mapping[str, object] = field(default_factory=dict)
    failures: tuple[Failure, ...] = ()
    """One :class:`~features.errors.Failure` per skipped configuration (MISSING_INPUTS: the data
    lack what it needs; FIT_FAILED: no refit block could be fitted)."""

    def summary(self) -> pd.DataFrame:
        """One row per model and horizon: n, frobenius, stein_qlike, stein_diff (vs the
        benchmark), gmv_var, gmv_ratio (vs the benchmark), mahalanobis_ratio, psd_share,
        repaired_share, DM statistic and p-value vs the benchmark on stein_qlike (``dm_stat``,
        ``dm_pvalue``) and on gmv_var (``dm_gmv_stat``, ``dm_gmv_pvalue``), MCS p-value and
        membership on stein_qlike, and the stressed-period frobenius, stein_qlike and gmv_var."""
        keys = ["model_id", "horizon"]
        base = self.losses[self.losses["regime"] == "all"].drop(columns="regime")
        if self.benchmark is not None:
            ref = base[base["model_id"] == self.benchmark].set_index("horizon")
            h = base["horizon"].to_numpy()
            base = base.assign(
                stein_diff=base["stein_qlike"].to_numpy()
                - ref["stein_qlike"].reindex(h).to_numpy(),
                gmv_ratio=base["gmv_var"].to_numpy() / ref["gmv_var"].reindex(h).to_numpy(),
            )
        else:
            base = base.assign(stein_diff=np.nan, gmv_ratio=np.nan)
        for loss, cols in (
            ("stein_qlike", ("dm_stat", "dm_pvalue")),
            ("gmv_var", ("dm_gmv_stat", "dm_gmv_pvalue")),
        ):
            part = self.dm[self.dm["loss"] == loss][[*keys, "dm_stat", "dm_pvalue"]]
            base = base.merge(
                part.rename(columns=dict(zip(("dm_stat", "dm_pvalue"), cols, strict=True))),
                on=keys,
                how="left",
            )
        mcs = self.mcs[self.mcs["loss"] == "stein_qlike"][[*keys, "mcs_pvalue", "in_mcs"]]
        base = base.merge(mcs, on=keys, how="left")
        stressed = self.losses[self.losses["regime"] == "stressed"][
            [*keys, "frobenius", "stein_qlike", "gmv_var"]
        ].rename(columns=lambda c: c if c in keys else f"{c}_stressed")
        base = base.merge(stressed, on=keys, how="left")
        lead = [
            *keys,
            "n",
            "frobenius",
            "stein_qlike",
            "stein_diff",
            "gmv_var",
            "gmv_ratio",
            "mahalanobis_ratio",
            "psd_share",
            "repaired_share",
            "dm_stat",
            "dm_pvalue",
            "dm_gmv_stat",
            "dm_gmv_pvalue",
            "mcs_pvalue",
            "in_mcs",
        ]
        rest = [c for c in base.columns if c not in lead]
        return base[lead + rest].sort_values(["horizon", "stein_qlike"]).reset_index(drop=True)


# ---- stressed periods --------------------------------------------------------------------------
def drawdown_periods(
    ts: pd.DatetimeIndex, returns: np.ndarray, k: int = 2
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The ``k`` largest non-overlapping peak-to-trough drawdowns of the equal-weight cumulative
    log return, as (first period after the peak, trough) intervals, largest first.

    Parameters
    ----------
    ts : period closes, length n_periods.
    returns : array of shape (n_periods, n_symbols).
    k : number of drawdowns (>= 0).
    """
    r = np.asarray(returns, dtype="float64")
    if r.ndim != 2 or len(r) != len(ts):
        raise ValueError(f"returns must have shape (len(ts), n_symbols); got {r.shape}")
    w = np.concatenate([[0.0], np.cumsum(r.mean(axis=1))])  # wealth before/after each period
    segments = [(0, len(w))]
    out: list[tuple[int, int, float]] = []
    for _ in range(int(k)):
        best = None
        for lo, hi in segments:
            if hi - lo < 2:
                continue
            seg = w[lo:hi]
            dd = np.maximum.accumulate(seg) - seg
            trough = int(np.argmax(dd))
            if dd[trough] <= 0:
                continue
            peak = int(np.argmax(seg[: trough + 1]))
            if best is None or dd[trough] > best[2]:
                best = (lo + peak, lo + trough, float(dd[trough]), (lo, hi))
        if best is None:
            break
        peak, trough, depth, (lo, hi) = best
        out.append((peak, trough, depth))
        segments.remove((lo, hi))
        segments += [(lo, peak + 1), (trough, hi)]
    # wealth index j is after period j-1: the drawdown covers periods peak..trough-1
    return [(ts[p], ts[t - 1]) for p, t, _ in out]


def _stress_flags(
    ts: pd.DatetimeIndex, periods: Sequence[tuple[pd.Timestamp, pd.Timestamp]]
) -> np.ndarray:
    flag = np.zeros(len(ts), dtype=bool)
    for a, b in periods:
        flag |= (ts >= a) & (ts <= b)
    return flag


def _utc(t: object) -> pd.Timestamp:
    x = pd.Timestamp(t)
    return x.tz_localize("UTC") if x.tzinfo is None else x.tz_convert("UTC")


# ---- walk-forward -------------------------------------------------------------------------------
def _model_walk_forward(
    model: BaseCorrForecaster,
    panel: CorrPanel,
    horizons: tuple[int, ...],
    origins: np.ndarray,
    *,
    window: int,
    window_type: str,
    refit_every: int,
    purge: int | None,
) -> tuple[CorrForecast | None, int]:
    est = clone(model)
    if "horizons" in est.get_params(deep=False):
        est.set_params(horizons=horizons)
    extra = 0 if purge is None else max(0, purge - min(horizons))
    parts: list[CorrForecast] = []
    failed = 0
    for k0 in range(0, len(origins), refit_every):
        block = origins[k0 : k0 + refit_every]
        train_end = int(block[0]) - extra
        train_lo = max(0, train_end + 1 - window) if window_type == "rolling" else 0
        if train_end < 1:
            failed += 1
            continue
        try:
            m = clone(est).fit(panel.slice(train_lo, train_end + 1))
            fc = m.predict(
                panel.slice(train_lo, int(block[-1]) + 1), horizons, origins=panel.ts[block]
            )
        except (ValueError, np.linalg.LinAlgError) as exc:
            if isinstance(exc, MissingCorrInputsError):
                raise
            failed += 1
            continue
        parts.append(fc)
    if not parts:
        return None, failed
    last = parts[-1]
    cut = pd.concat([p.cutoff_per_origin() for p in parts])
    return (
        CorrForecast(
            corr=np.concatenate([p.corr for p in parts]),
            symbols=last.symbols,
            origins=pd.DatetimeIndex(np.concatenate([p.origins.asi8 for p in parts])).tz_localize(
                "UTC"
            ),
            horizons=last.horizons,
            model_id=last.model_id,
            model_version=last.model_version,
            data_cutoff_ts=pd.Series(pd.DatetimeIndex(cut), index=pd.DatetimeIndex(cut.index)),
            horizon_unit=last.horizon_unit,
            repaired=np.concatenate(
                [
                    p.repaired if p.repaired is not None else np.zeros(p.corr.shape[:2], bool)
                    for p in parts
                ]
            ),
            stressed=last.stressed,
        ),
        failed,
    )


def _truth_array(truth: pd.DataFrame, panel: CorrPanel) -> np.ndarray:
    need = [c for c in (TS, "symbol_a", "symbol_b", "corr") if c not in truth.columns]
    if need:
        raise ValueError(f"truth is missing column(s) {need}; got {list(truth.columns)}")
    t = truth.assign(**{TS: pd.to_datetime(truth[TS], utc=True)})
    wide = t.pivot_table(index=TS, columns=["symbol_a", "symbol_b"], values="corr", aggfunc="first")
    cols = pd.MultiIndex.from_product([list(panel.symbols), list(panel.symbols)])
    n = panel.n_symbols
    return (
        wide.reindex(index=panel.ts, columns=cols)
        .to_numpy(dtype="float64")
        .reshape(len(panel), n, n)
    )


def _realized_array(realized: pd.DataFrame, panel: CorrPanel) -> np.ndarray:
    need = [c for c in (TS, "symbol_a", "symbol_b", "cov_var") if c not in realized.columns]
    if need:
        raise ValueError(f"realized is missing column(s) {need}; got {list(realized.columns)}")
    t = realized.assign(**{TS: pd.to_datetime(realized[TS], utc=True)})
    wide = t.pivot_table(
        index=TS, columns=["symbol_a", "symbol_b"], values="cov_var", aggfunc="first"
    )
    cols = pd.MultiIndex.from_product([list(panel.symbols), list(panel.symbols)])
    n = panel.n_symbols
    out = (
        wide.reindex(index=panel.ts, columns=cols)
        .to_numpy(dtype="float64")
        .reshape(len(panel), n, n)
    )
    if not np.isfinite(out).all():
        raise ValueError("realized must hold a covariance for every period and pair of the panel")
    return out


def walk_forward_corr(
    models: Mapping[str, BaseCorrForecaster],
    data: object,
    *,
    horizons: Sequence[int] = (1, 5),
    window: int = 500,
    window_type: str = "rolling",
    refit_every: int = 20,
    purge: int | None = None,
    start: pd.Timestamp | str | None = None,
    end: pd.Timestamp | str | None = None,
    realized: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    vol_lam: float = 0.94,
    benchmark: str | None = "ewma",
    stress_periods: Sequence[tuple[object, object]] | None = None,
    n_drawdowns: int = 2,
    mcs_size: float = 0.10,
    mcs_reps: int = 1000,
    random_state: int | np.random.Generator = 0,
) -> CorrEvaluationResult:
    """Evaluate correlation forecasters out of sample (see the module docs for the definitions).

    Parameters
    ----------
    models : configuration name -> unfitted correlation forecaster (cloned, never modified).
    data : a :class:`CorrPanel`, wide return frame or long canonical frame (:func:`as_panel`).
    horizons : horizons in periods.
    window : estimation window in periods (rolling) or the minimum history (expanding).
    window_type : "rolling" or "expanding".
    refit_every : re-estimate every this many origins (forecasts in between use the last fit).
    purge : the last training row is ``purge - min(horizons)`` periods before the block's first
        origin (None: the origin itself; >= max(horizons) when given).
    start, end : first and last origin (inclusive); None = after the first ``window`` periods /
        the last period with a target.
    realized : optional long realized covariance table (``ts, symbol_a, symbol_b, cov_var``, as
        :func:`features.covariance.realized_covariance`) for the targets; None = the panel's
        realized covariances, else outer products of returns.
    truth : optional long true correlation table (``ts, symbol_a, symbol_b, corr``) per period.
    vol_lam : EWMA decay of the common volatility forecast.
    benchmark : the configuration DM tests compare with (None or absent: no DM tests).
    stress_periods : stressed (start, end) intervals; None = the ``n_drawdowns`` largest drawdowns.
    n_drawdowns : number of automatic stressed drawdowns.
    mcs_size, mcs_reps, random_state : Model Confidence Set size, replications and seed.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty dict name -> BaseCorrForecaster")
    for name, m in models.items():
        if not isinstance(m, BaseCorrForecaster):
            raise TypeError(
                f"models[{name!r}] must be a BaseCorrForecaster; got {type(m).__name__}"
            )
    hs = tuple(sorted(int(h) for h in horizons))
    if not hs or hs[0] < 1 or len(set(hs)) != len(hs):
        raise ValueError(f"horizons must be distinct ints >= 1; got {list(horizons)}")
    if not isinstance(window, (int, np.integer)) or window < 10:
        raise ValueError(f"window must be an int >= 10; got {window!r}")
    if window_type not in ("rolling", "expanding"):
        raise ValueError(f"window_type must be 'rolling' or 'expanding'; got {window_type!r}")
    if not isinstance(refit_every, (int, np.integer)) or refit_every < 1:
        raise ValueError(f"refit_every must be an int >= 1; got {refit_every!r}")
    if purge is not None and purge < max(hs):
        raise ValueError(f"purge must be >= the longest horizon {max(hs)}; got {purge}")
    if not 0 < vol_lam < 1:
        raise ValueError(f"vol_lam must be in (0, 1); got {vol_lam!r}")
    panel = as_panel(data)
    n, t_len = panel.n_symbols, len(panel)
    rng = (
        random_state
        if isinstance(random_state, np.random.Generator)
        else np.random.default_rng(random_state)
    )

    # origins: row positions with a full window before and a target after
    lo = window if start is None else int(panel.ts.searchsorted(_utc(start)))
    hi = (
        t_len - 1 - hs[0]
        if end is None
        else int(panel.ts.searchsorted(_utc(end), side="right")) - 1
    )
    hi = min(hi, t_len - 1 - hs[0])
    if lo > hi:
        raise InsufficientHistoryError(
            f"no origin to evaluate: {t_len} periods, window {window}, horizons {list(hs)}; "
            "use a longer sample or a shorter window",
            periods=t_len,
            needed=int(window) + hs[0] + 1,
        )
    origins = np.arange(lo, hi + 1)

    forecasts: dict[str, CorrForecast] = {}
    skipped: dict[str, str] = {}
    failures: list[Failure] = []
    failed_blocks: dict[str, int] = {}
    for name, model in models.items():
        try:
            fc, failed = _model_walk_forward(
                model,
                panel,
                hs,
                origins,
                window=int(window),
                window_type=window_type,
                refit_every=int(refit_every),
                purge=purge,
            )
        except MissingCorrInputsError as exc:
            skipped[name] = str(exc)
            failures.append(Failure(FailureReason.MISSING_INPUTS, name, str(exc)))
            warnings.warn(
                f"walk_forward_corr skips model {name!r}: {exc}", UserWarning, stacklevel=2
            )
            continue
        failed_blocks[name] = failed
        if fc is None:
            skipped[name] = "no refit block could be fitted"
            failures.append(Failure(FailureReason.FIT_FAILED, name, skipped[name]))
            warnings.warn(
                f"walk_forward_corr skips model {name!r}: {skipped[name]}",
                UserWarning,
                stacklevel=2,
            )
            continue
        forecasts[name] = fc
    if not forecasts:
        raise ModelError(f"no model could be evaluated; skipped: {skipped}")

    # targets
    if realized is not None:
        cov = _realized_array(realized, panel)
    elif panel.realized_cov is not None:
        cov = panel.realized_cov
    else:
        cov = panel.returns[:, :, None] * panel.returns[:, None, :]
    ccov = np.concatenate([np.zeros((1, n, n)), np.cumsum(cov, axis=0)])
    cret = np.vstack([np.zeros((1, n)), np.cumsum(panel.returns, axis=0)])
    var_proxy = np.diagonal(cov, axis1=1, axis2=2)
    vol_var = np.column_stack([ewma_recursion(var_proxy[:, i], vol_lam) for i in range(n)])
    truth_arr = None if truth is None else _truth_array(truth, panel)
    ctruth = None
    if truth_arr is not None:
        ctruth = np.concatenate([np.zeros((1, n, n)), np.nancumsum(truth_arr, axis=0)])
        cnan = np.concatenate([[0], np.cumsum(~np.isfinite(truth_arr).all(axis=(1, 2)))])

    # stressed periods over the evaluation span
    span_hi = min(hi + hs[-1], t_len - 1)
    if stress_periods is None:
        periods = drawdown_periods(
            panel.ts[lo : span_hi + 1], panel.returns[lo : span_hi + 1], n_drawdowns
        )
    else:
        periods = [(_utc(a), _utc(b)) for a, b in stress_periods]
    period_flag = _stress_flags(panel.ts, periods)
    cflag = np.concatenate([[0], np.cumsum(period_flag)])

    pos = {t: i for i, t in enumerate(panel.ts.asi8)}
    rows = []
    stein_form: dict[int, str] = {}
    for k, h in enumerate(hs):
        # origins every model forecast and whose target is known
        common = None
        for fc in forecasts.values():
            p = np.array([pos[t] for t in fc.origins.asi8])
            common = set(p) if common is None else common & set(p)
        p = np.array(sorted(q for q in common if q + h <= t_len - 1), dtype=int)
        if truth_arr is not None and len(p):
            p = p[(cnan[p + h + 1] - cnan[p + 1]) == 0]
        if not len(p):
            continue
        y = ccov[p + h + 1] - ccov[p + 1]
        ry = cov_to_corr(y)
        keep = np.isfinite(ry).all(axis=(1, 2))
        p, y, ry = p[keep], y[keep], ry[keep]
        ret = cret[p + h + 1] - cret[p + 1]
        d = np.sqrt(h * vol_var[p])
        w = np.linalg.eigvalsh(y)
        full = bool((w[:, 0] > 1e-12 * np.maximum(w[:, -1], 1e-300)).all())
        stein_form[h] = "full" if full else "reduced (singular targets: -ln det Y dropped)"
        stressed = (cflag[p + h + 1] - cflag[p + 1]) > 0
        truth_h = None
        if ctruth is not None:
            truth_h = (ctruth[p + h + 1] - ctruth[p + 1]) / h
        for name, fc in forecasts.items():
            idx = fc.origins.get_indexer(panel.ts[p])
            r = fc.corr[idx, k]
            s = r * d[:, :, None] * d[:, None, :]
            part = {
                "model_id": name,
                "horizon": h,
                "origin_ts": panel.ts[p],
                "stressed": stressed,
                "frobenius": frobenius_loss(r, ry),
                "stein_qlike": stein_loss(s, y, full=full),
                "gmv_var": gmv_variance(s, y),
                "mahalanobis": mahalanobis_ratio(s, ret),
                "psd": np.array([is_psd(m) for m in r]),
                "repaired": (
                    fc.repaired[idx, k] if fc.repaired is not None else np.zeros(len(p), bool)
                ),
            }
            if truth_h is not None:
                part["frobenius_truth"] = frobenius_loss(r, truth_h)
            rows.append(pd.DataFrame(part))
    if not rows:
        raise ValueError("no origin has forecasts from every model and a known target")
    per_origin = pd.concat(rows, ignore_index=True)

    # aggregates
    metric_cols = ["frobenius", "stein_qlike", "gmv_var", "mahalanobis"] + (
        ["frobenius_truth"] if truth is not None else []
    )
    agg_rows = []
    for regime, mask in (
        ("all", np.ones(len(per_origin), dtype=bool)),
        ("calm", ~per_origin["stressed"].to_numpy()),
        ("stressed", per_origin["stressed"].to_numpy()),
    ):
        sub = per_origin[mask]
        if sub.empty:
            continue
        g = sub.groupby(["model_id", "horizon"])
        a = g[metric_cols].mean()
        a["psd_share"] = g["psd"].mean()
        a["repaired_share"] = g["repaired"].mean()
        a["n"] = g.size()
        a = a.reset_index().rename(columns={"mahalanobis": "mahalanobis_ratio"})
        a["regime"] = regime
        agg_rows.append(a)
    losses = pd.concat(agg_rows, ignore_index=True)
    lead = [
        "model_id",
        "horizon",
        "regime",
        "n",
        "frobenius",
        "stein_qlike",
        "gmv_var",
        "mahalanobis_ratio",
        "psd_share",
        "repaired_share",
    ]
    losses = losses[lead + [c for c in losses.columns if c not in lead]]

    # DM and MCS
    bench = benchmark if benchmark in forecasts else None
    dm_rows, mcs_rows = [], []
    for h, g in per_origin.groupby("horizon"):
        for loss in DM_LOSSES:
            wide = g.pivot(index="origin_ts", columns="model_id", values=loss)
            if bench is not None:
                for mname in wide.columns:
                    if mname == bench:
                        continue
                    try:
                        res = diebold_mariano(
                            wide[mname].to_numpy(), wide[bench].to_numpy(), h=int(h)
                        )
                        stat, pv, pl = res.stat, res.pvalue, res.pvalue_less
                    except ValueError:
                        stat = pv = pl = np.nan
                    dm_rows.append(
                        {
                            "model_id": mname,
                            "horizon": int(h),
                            "loss": loss,
                            "benchmark": bench,
                            "dm_stat": stat,
                            "dm_pvalue": pv,
                            "dm_pvalue_less": pl,
                            "n": len(wide),
                        }
                    )
            if loss in MCS_LOSSES:
                res = model_confidence_set(
                    wide, size=mcs_size, h=int(h), reps=mcs_reps, random_state=rng
                )
                for mname in wide.columns:
                    mcs_rows.append(
                        {
                            "model_id": mname,
                            "horizon": int(h),
                            "loss": loss,
                            "mcs_pvalue": float(res.pvalues[mname]),
                            "in_mcs": mname in res.included,
                        }
                    )
    dm = pd.DataFrame(
        dm_rows,
        columns=[
            "model_id",
            "horizon",
            "loss",
            "benchmark",
            "dm_stat",
            "dm_pvalue",
            "dm_pvalue_less",
            "n",
        ],
    )
    mcs = pd.DataFrame(mcs_rows, columns=["model_id", "horizon", "loss", "mcs_pvalue", "in_mcs"])
    return CorrEvaluationResult(
        forecasts=forecasts,
        per_origin=per_origin,
        losses=losses,
        dm=dm,
        mcs=mcs,
        benchmark=bench,
        skipped=skipped,
        failures=tuple(failures),
        stress_periods=tuple(periods),
        n_configurations=len(models),
        settings={
            "horizons": hs,
            "window": int(window),
            "window_type": window_type,
            "refit_every": int(refit_every),
            "purge": purge,
            "vol_lam": vol_lam,
            "symbols": panel.symbols,
            "period": str(panel.period),
            "target": "realized"
            if (realized is not None or panel.realized_cov is not None)
            else "outer_products",
            "stein_form": stein_form,
            "failed_blocks": failed_blocks,
            "first_origin": panel.ts[lo],
            "last_origin": panel.ts[hi],
            "mcs_size": mcs_size,
            "mcs_reps": mcs_reps,
        },
    )


def evaluate_correlation_frame(
    frame: pd.DataFrame,
    *,
    freq: str | None = "1D",
    horizons: Sequence[int] = (1, 5),
    window: int = 250,
    refit_every: int = 20,
    symbols: Sequence[str] | None = None,
    models: Mapping[str, BaseCorrForecaster] | None = None,
    realized: bool = True,
    **kwargs: object,
) -> CorrEvaluationResult:
    """Walk-forward comparison of the correlation models on a long canonical frame (for the CLI).

    Parameters
    ----------
    frame : long bars or feature frame with ``ts``, ``symbol``, ``close``.
    freq : the evaluation period; with intraday bars the realized covariance of each period is
        built from them (:func:`models.corr.returns_panel`); None = the bars' own spacing.
    horizons, window, refit_every : see :func:`walk_forward_corr`.
    symbols : the symbols (None = all with a close in every period kept).
    models : configurations; None = :func:`models.corr.default_corr_models` with the models'
        own window ``min(250, window)``.
    realized : attach realized covariances from intraday bars (targets and HAR inputs).
    **kwargs : passed to :func:`walk_forward_corr`.

    Returns
    -------
    :class:`CorrEvaluationResult`; ``summary()`` has one row per model and horizon.
    """
    panel = returns_panel(frame, freq=freq, symbols=symbols, realized=realized)
    if models is None:
        models = default_corr_models(window=min(250, int(window)))
    return walk_forward_corr(
        models, panel, horizons=horizons, window=window, refit_every=refit_every, **kwargs
    )


def correlation_response_lag(
    forecast: CorrForecast,
    truth: pd.DataFrame,
    stressed: pd.Series,
    *,
    h: int = 1,
    fraction: float = 0.5,
) -> pd.DataFrame:
    """How many stressed bars the forecast needs to move ``fraction`` of the way to the stressed
    correlation level, for each stress spell.

    Parameters
    ----------
    forecast : forecasts with an origin at every bar (walk-forward output).
    truth : long true correlation (``ts, symbol_a, symbol_b, corr``) per bar.
    stressed : bool Series indexed by bar ``ts``: the bar is in the stress regime.
    h : the horizon of ``forecast`` used.
    fraction : in (0, 1].

    Returns
    -------
    One row per spell whose preceding bar is an origin of ``forecast``: ``start`` (first stressed
    bar), ``n_bars``, ``pre_corr`` (mean off-diagonal forecast made at the bar before the spell),
    ``stress_corr`` (mean off-diagonal true correlation over the spell), ``lag_bars`` (number of
    stressed bars observed when the forecast first crossed ``pre + fraction (stress - pre)``; NaN
    when it did not within the spell) and ``reached``.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    n = forecast.n_symbols
    iu = np.triu_indices(n, 1)
    pred = pd.Series(forecast.at(h)[:, iu[0], iu[1]].mean(axis=1), index=forecast.origins)
    t = truth[truth["symbol_a"].isin(forecast.symbols) & truth["symbol_b"].isin(forecast.symbols)]
    t = t[t["symbol_a"] != t["symbol_b"]]
    true_off = t.assign(**{TS: pd.to_datetime(t[TS], utc=True)}).groupby(TS)["corr"].mean()
    flag = stressed.astype(bool)
    idx = pd.DatetimeIndex(flag.index)
    v = flag.to_numpy()
    out = []
    i = 0
    while i < len(v):
        if not v[i] or (i > 0 and v[i - 1]):
            i += 1
            continue
        j = i
        while j < len(v) and v[j]:
            j += 1
        if i > 0 and idx[i - 1] in pred.index:
            pre = float(pred[idx[i - 1]])
            level = float(true_off.reindex(idx[i:j]).mean())
            thr = pre + fraction * (level - pre)
            lag = np.nan
            for k in range(j - i):
                if idx[i + k] not in pred.index:
                    continue
                x = float(pred[idx[i + k]])
                if (level >= pre and x >= thr) or (level < pre and x <= thr):
                    lag = float(k + 1)
                    break
            out.append(
                {
                    "start": idx[i],
                    "n_bars": j - i,
                    "pre_corr": pre,
                    "stress_corr": level,
                    "lag_bars": lag,
                    "reached": bool(np.isfinite(lag)),
                }
            )
        i = j
    return pd.DataFrame(
        out, columns=["start", "n_bars", "pre_corr", "stress_corr", "lag_bars", "reached"]
    )
