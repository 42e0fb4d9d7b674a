"""Forecast losses and comparison tests for variance forecasts.

Per-observation losses (arrays, for averaging, Diebold-Mariano and the Model Confidence Set):

- :func:`qlike`: ``y/f - ln(y/f) - 1`` (Patton 2011; robust to noise in the proxy ``y``, zero at
  ``f = y``, penalizes under-prediction more than over-prediction);
- :func:`mse`: ``(f - y)^2`` on variances; :func:`mse_log`: ``(ln f - ln y)^2``.

Aggregates and tests: :func:`rmspe`, :func:`mincer_zarnowitz` (HAC standard errors),
:func:`diebold_mariano` (Newey-West long-run variance, lag >= h - 1), :func:`model_confidence_set`
(``arch.bootstrap.MCS``, block length >= h, seeded) and :func:`qlike_ratio_ci` (block-bootstrap CI of
a ratio of mean QLIKEs, seeded).

``y`` is always the realized (or true) variance and ``f`` the forecast, both in the same units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from arch.bootstrap import MCS, MovingBlockBootstrap, StationaryBootstrap
from scipy import stats

RandomState = int | np.random.Generator | None


def _positive(name: str, x: np.ndarray) -> None:
    bad = ~np.isfinite(x) | (x <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise ValueError(
            f"{name} must be finite and > 0; got {float(x.reshape(-1)[i])!r} at position {i} "
            f"({int(bad.sum())} bad value(s) of {x.size})"
        )


def _pair(y: object, f: object, *, positive: bool = True) -> tuple[np.ndarray, np.ndarray]:
    ya = np.asarray(y, dtype="float64")
    fa = np.asarray(f, dtype="float64")
    if ya.shape != fa.shape:
        raise ValueError(f"y and f must have the same shape; got {ya.shape} and {fa.shape}")
    if positive:
        _positive("y", ya)
        _positive("f", fa)
    return ya, fa


def qlike(y: object, f: object) -> np.ndarray:
    """QLIKE loss ``y/f - ln(y/f) - 1`` per observation (array of y's shape; y, f > 0)."""
    ya, fa = _pair(y, f)
    r = ya / fa
    return r - np.log(r) - 1.0


def mse(y: object, f: object) -> np.ndarray:
    """Squared error on variances ``(f - y)^2`` per observation."""
    ya, fa = _pair(y, f, positive=False)
    return (fa - ya) ** 2


def mse_log(y: object, f: object) -> np.ndarray:
    """Squared error on log variances ``(ln f - ln y)^2`` per observation (y, f > 0)."""
    ya, fa = _pair(y, f)
    return (np.log(fa) - np.log(ya)) ** 2


def rmspe(y: object, f: object) -> float:
    """Root mean squared percentage error ``sqrt(mean(((f - y) / y)^2))`` (y > 0)."""
    ya, fa = _pair(y, f)
    return float(np.sqrt(np.mean(((fa - ya) / ya) ** 2)))


def newey_west_lrv(x: object, lag: int) -> float:
    """Newey-West (Bartlett kernel) long-run variance of a series.

    ``gamma_0 + 2 sum_{j=1..lag} (1 - j / (lag + 1)) gamma_j`` with autocovariances
    ``gamma_j = (1/n) sum_t (x_t - mean)(x_{t-j} - mean)``.
    """
    a = np.asarray(x, dtype="float64")
    if a.ndim != 1 or a.size < 2:
        raise ValueError(f"x must be a 1-d series of at least 2 values; got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("x must be finite")
    if lag < 0 or lag >= a.size:
        raise ValueError(f"lag must be in [0, {a.size - 1}]; got {lag}")
    e = a - a.mean()
    n = e.size
    lrv = e @ e / n
    for j in range(1, lag + 1):
        lrv += 2.0 * (1.0 - j / (lag + 1)) * (e[j:] @ e[:-j]) / n
    return float(lrv)


@dataclass(frozen=True)
class DMResult:
    """Diebold-Mariano test of equal expected loss, ``d = loss_a - loss_b``.

    Attributes
    ----------
    stat : mean(d) / se; negative when model a has the lower average loss.
    pvalue : two-sided p-value.
    pvalue_less : one-sided p-value of H1 "a has lower expected loss" (mean d < 0).
    pvalue_greater : one-sided p-value of H1 "a has higher expected loss".
    mean_diff, se : mean loss differential and its HAC standard error.
    lag : Newey-West lag used; n : observations.
    """

    stat: float
    pvalue: float
    pvalue_less: float
    pvalue_greater: float
    mean_diff: float
    se: float
    lag: int
    n: int


def diebold_mariano(
    loss_a: object, loss_b: object, *, h: int = 1, lag: int | None = None, harvey: bool = False
) -> DMResult:
    """Diebold-Mariano test with a Newey-West long-run variance.

    Parameters
    ----------
    loss_a, loss_b : per-observation losses of two models on the same targets, shape (n,).
    h : forecast horizon; overlapping h-period targets make ``d`` MA(h-1).
    lag : Newey-West lag, >= h - 1 (default h - 1).
    harvey : apply the Harvey-Leybourne-Newbold small-sample correction and Student-t(n-1)
        p-values instead of normal ones.
    """
    a = np.asarray(loss_a, dtype="float64")
    b = np.asarray(loss_b, dtype="float64")
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"loss_a and loss_b must be 1-d of equal length; got {a.shape}, {b.shape}")
    if h < 1:
        raise ValueError(f"h must be >= 1; got {h}")
    lag = h - 1 if lag is None else int(lag)
    if lag < h - 1:
        raise ValueError(f"lag must be >= h - 1 = {h - 1} for overlapping targets; got {lag}")
    d = a - b
    n = d.size
    lrv = newey_west_lrv(d, lag)
    if not lrv > 0:
        raise ValueError(
            "the loss differential has zero variance; the models' losses are identical"
        )
    se = float(np.sqrt(lrv / n))
    stat = float(d.mean() / se)
    if harvey:
        stat *= float(np.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n))
        dist = stats.t(df=n - 1)
    else:
        dist = stats.norm()
    return DMResult(
        stat=stat,
        pvalue=float(2 * dist.sf(abs(stat))),
        pvalue_less=float(dist.cdf(stat)),
        pvalue_greater=float(dist.sf(stat)),
        mean_diff=float(d.mean()),
        se=se,
        lag=lag,
        n=n,
    )


@dataclass(frozen=True)
class MZResult:
    """Mincer-Zarnowitz regression ``y = alpha + beta f + e``.

    Attributes
    ----------
    alpha, beta, r2 : OLS estimates and R^2.
    alpha_se, beta_se : HAC (Newey-West) standard errors.
    wald_stat, wald_pvalue : HAC Wald test of unbiasedness ``alpha = 0, beta = 1`` (chi2(2)).
    n, lag : observations and HAC lag.
    """

    alpha: float
    beta: float
    r2: float
    alpha_se: float
    beta_se: float
    wald_stat: float
    wald_pvalue: float
    n: int
    lag: int


def mincer_zarnowitz(y: object, f: object, *, lag: int = 0, log: bool = False) -> MZResult:
    """Mincer-Zarnowitz regression of realized on forecast variance (on logs when ``log``).

    Parameters
    ----------
    y, f : realized and forecast variance, shape (n,).
    lag : Newey-West lag of the HAC covariance (use h - 1 for h-period targets).
    log : regress ``ln y`` on ``ln f``.
    """
    import statsmodels.api as sm

    ya, fa = _pair(y, f)
    if log:
        ya, fa = np.log(ya), np.log(fa)
    if lag < 0:
        raise ValueError(f"lag must be >= 0; got {lag}")
    res = sm.OLS(ya, sm.add_constant(fa, has_constant="add")).fit(
        cov_type="HAC", cov_kwds={"maxlags": lag}
    )
    params = np.asarray(res.params)
    cov = np.asarray(res.cov_params())
    diff = params - np.array([0.0, 1.0])
    wald = float(diff @ np.linalg.solve(cov, diff))
    return MZResult(
        alpha=float(params[0]),
        beta=float(params[1]),
        r2=float(res.rsquared),
        alpha_se=float(np.sqrt(cov[0, 0])),
        beta_se=float(np.sqrt(cov[1, 1])),
        wald_stat=wald,
        wald_pvalue=float(stats.chi2.sf(wald, 2)),
        n=int(ya.size),
        lag=lag,
    )


def default_block_size(n: int, h: int = 1) -> int:
    """Bootstrap block length: ``max(h, round(n ** (1/3)))``."""
    return max(int(h), int(round(n ** (1.0 / 3.0))))


@dataclass(frozen=True)
class MCSResult:
    """Model Confidence Set (Hansen, Lunde and Nason 2011).

    Attributes
    ----------
    included, excluded : model names in / out of the set.
    pvalues : MCS p-value per model (a model is in the set when its p-value > ``size``).
    size : test size (0.10 -> a 90% set); block_size, reps : bootstrap settings.
    """

    included: tuple[str, ...]
    excluded: tuple[str, ...]
    pvalues: pd.Series
    size: float
    block_size: int
    reps: int


def model_confidence_set(
    losses: pd.DataFrame,
    *,
    size: float = 0.10,
    h: int = 1,
    block_size: int | None = None,
    reps: int = 1000,
    method: str = "R",
    bootstrap: str = "stationary",
    random_state: RandomState = None,
) -> MCSResult:
    """The Model Confidence Set of the columns of ``losses`` via :class:`arch.bootstrap.MCS`.

    Parameters
    ----------
    losses : DataFrame of shape (n_obs, n_models), one column of per-observation losses per model.
    size : test size in (0, 1).
    h : forecast horizon; the block length must be >= h.
    block_size : bootstrap block length; None = :func:`default_block_size`.
    reps : bootstrap replications.
    method : "R" (range) or "max" statistic.
    bootstrap : "stationary", "circular" or "moving block".
    random_state : seed or generator for the bootstrap.
    """
    if not isinstance(losses, pd.DataFrame) or losses.shape[1] < 1:
        raise ValueError("losses must be a DataFrame with one column per model")
    if not 0 < size < 1:
        raise ValueError(f"size must be in (0, 1); got {size}")
    if not np.isfinite(losses.to_numpy(dtype="float64")).all():
        raise ValueError("losses must be finite; drop observations where any model is missing")
    n = len(losses)
    bs = default_block_size(n, h) if block_size is None else int(block_size)
    if bs < h:
        raise ValueError(f"block_size must be >= h = {h} for overlapping targets; got {bs}")
    # identical loss columns (e.g. two models falling back to the same forecast, or equal up to
    # round-off: Ledoit-Wolf toward constant correlation of two symbols is the sample matrix) make
    # the loss differentials degenerate and arch's MCS fail (tied statistics): test one
    # representative per group and give every member the representative's verdict and p-value
    rep_of: dict[object, object] = {}
    reps_seen: list[object] = []
    for c in losses.columns:
        col = losses[c].to_numpy(dtype="float64")
        same = next(
            (
                r
                for r in reps_seen
                if np.allclose(losses[r].to_numpy(dtype="float64"), col, rtol=1e-9, atol=0.0)
            ),
            None,
        )
        rep_of[c] = c if same is None else same
        if same is None:
            reps_seen.append(c)
    if len(reps_seen) == 1:
        pv = pd.Series(1.0, index=losses.columns, dtype=float, name="pvalue")
        names = tuple(str(c) for c in losses.columns)
        return MCSResult(names, (), pv, size, bs, reps)
    mcs = MCS(
        losses[reps_seen],
        size,
        reps=reps,
        block_size=bs,
        method=method,
        bootstrap=bootstrap,
        seed=random_state,
    )
    mcs.compute()
    rep_pv = mcs.pvalues["Pvalue"].astype(float)
    pv = pd.Series(
        [float(rep_pv[rep_of[c]]) for c in losses.columns], index=losses.columns, name="pvalue"
    )
    inc, exc = set(mcs.included), set(mcs.excluded)
    return MCSResult(
        included=tuple(str(c) for c in losses.columns if rep_of[c] in inc),
        excluded=tuple(str(c) for c in losses.columns if rep_of[c] in exc),
        pvalues=pv,
        size=size,
        block_size=bs,
        reps=reps,
    )


@dataclass(frozen=True)
class RatioCI:
    """A ratio of mean losses with a bootstrap percentile confidence interval."""

    ratio: float
    lower: float
    upper: float
    level: float
    block_size: int
    reps: int


def qlike_ratio_ci(
    y: object,
    f_model: object,
    f_bench: object,
    *,
    level: float = 0.95,
    h: int = 1,
    block_size: int | None = None,
    reps: int = 1000,
    bootstrap: str = "stationary",
    random_state: RandomState = None,
) -> RatioCI:
    """Mean QLIKE of ``f_model`` over mean QLIKE of ``f_bench`` with a block-bootstrap CI.

    Parameters
    ----------
    y : realized variance; f_model, f_bench : forecasts (all shape (n,)).
    level : confidence level in (0, 1).
    h : horizon (block length must be >= h); block_size : None = :func:`default_block_size`.
    reps : bootstrap replications; bootstrap : "stationary" or "moving_block".
    random_state : seed or generator.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    lm = qlike(y, f_model)
    lb = qlike(y, np.asarray(f_bench, dtype="float64").reshape(lm.shape))
    bs = default_block_size(lm.size, h) if block_size is None else int(block_size)
    if bs < h:
        raise ValueError(f"block_size must be >= h = {h}; got {bs}")
    kinds = {"stationary": StationaryBootstrap, "moving_block": MovingBlockBootstrap}
    if bootstrap not in kinds:
        raise ValueError(f"bootstrap must be one of {sorted(kinds)}; got {bootstrap!r}")
    boot = kinds[bootstrap](bs, lm, lb, seed=random_state)

    def ratio(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(a) / np.mean(b))

    ci = boot.conf_int(ratio, reps=reps, method="percentile", size=level)
    return RatioCI(
        ratio=ratio(lm, lb),
        lower=float(ci[0, 0]),
        upper=float(ci[1, 0]),
        level=level,
        block_size=bs,
        reps=reps,
    )
