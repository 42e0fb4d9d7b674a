"""Innovation distributions of standardized residuals, and a t-copula for the multivariate case.

Univariate (:func:`fit_innovations`): the normal, Student-t and Hansen's skewed-t, each with **zero
mean and unit variance** (``arch.univariate.Normal`` / ``StudentsT`` / ``SkewStudent``), fitted by
maximum likelihood to residuals ``z = r / sigma_issued``. Only the shape is estimated (nu; nu and
lambda): the scale belongs to the variance forecast and its variance scale (:mod:`models.scale`),
so pass residuals after the scale. The choice among candidates is by an information criterion
(BIC by default, or AIC), recorded with every candidate's log-likelihood.

Multivariate (:func:`fit_t_copula`): the degrees of freedom of a t-copula of a residual panel, by
maximum likelihood over nu with the correlation fixed (the "Kendall's tau route", Lindskog, McNeil
and Schmock 2003; McNeil, Frey and Embrechts 2015, sec. 7.5.1): the correlation is
``R = sin(pi tau / 2)`` from pairwise Kendall's tau (PSD-repaired with
:func:`features.covariance.nearest_correlation` when needed), the margins are the pseudo-observations
``u = rank / (n + 1)``, and nu maximizes the copula log-likelihood
``sum_t [log t_{nu,R}(x_t) - sum_i log t_nu(x_ti)]``, ``x = t_nu^{-1}(u)``, over ``[2.05, 500]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from arch.univariate import Normal, SkewStudent, StudentsT
from scipy import optimize, stats

from features.covariance import nearest_correlation
from features.errors import ConfigError, DataError

__all__ = [
    "InnovationFit",
    "InnovationModel",
    "TCopulaFit",
    "fit_innovation",
    "fit_innovations",
    "fit_t_copula",
]

_DISTS = {"normal": Normal, "t": StudentsT, "skewt": SkewStudent}
_PARAM_NAMES = {"normal": (), "t": ("nu",), "skewt": ("nu", "lambda")}


@dataclass(frozen=True)
class InnovationFit:
    """One fitted zero-mean, unit-variance distribution.

    Attributes
    ----------
    name : "normal", "t" or "skewt".
    params : shape parameters by name (``nu``; ``nu`` and ``lambda`` for the skewed-t).
    loglik : maximized log-likelihood.
    n_obs : residuals used.
    aic, bic : ``-2 loglik + 2k`` and ``-2 loglik + k log n`` (k = number of shape parameters).
    """

    name: str
    params: dict[str, float]
    loglik: float
    n_obs: int
    aic: float
    bic: float

    def _dist(self) -> Normal | StudentsT | SkewStudent:
        return _DISTS[self.name]()

    def _p(self) -> np.ndarray | None:
        return np.array([self.params[k] for k in _PARAM_NAMES[self.name]]) if self.params else None

    def ppf(self, q: float | np.ndarray) -> np.ndarray:
        """Quantiles of the unit-variance distribution at probabilities ``q``."""
        return np.asarray(self._dist().ppf(np.asarray(q, dtype="float64"), self._p()))

    def cdf(self, x: float | np.ndarray) -> np.ndarray:
        """Distribution function at ``x`` (the PIT of standardized residuals)."""
        return np.asarray(self._dist().cdf(np.asarray(x, dtype="float64"), self._p()))


@dataclass(frozen=True)
class InnovationModel:
    """Candidate fits and the one chosen by ``criterion`` (the lowest value wins).

    Attributes
    ----------
    fits : every candidate's :class:`InnovationFit`, in the order tried.
    criterion : "bic" or "aic".
    chosen : the name of the chosen fit.
    """

    fits: tuple[InnovationFit, ...]
    criterion: str
    chosen: str

    @property
    def best(self) -> InnovationFit:
        """The chosen fit."""
        return next(f for f in self.fits if f.name == self.chosen)

    def summary(self) -> pd.DataFrame:
        """One row per candidate: name, parameters, loglik, aic, bic, chosen."""
        return pd.DataFrame(
            [{"name": f.name, **f.params, "loglik": f.loglik, "aic": f.aic, "bic": f.bic,
              "chosen": f.name == self.chosen} for f in self.fits]
        )


def _clean(z: np.ndarray | pd.Series, name: str = "z") -> np.ndarray:
    x = np.asarray(z, dtype="float64").ravel()
    x = x[np.isfinite(x)]
    if len(x) < 30:
        raise DataError(f"need at least 30 finite residuals to fit a distribution; got {len(x)}",
                        column=name)
    return x


def fit_innovation(z: np.ndarray | pd.Series, name: str = "t") -> InnovationFit:
    """Maximum-likelihood fit of one unit-variance distribution ("normal", "t", "skewt") to ``z``
    (non-finite values are dropped; at least 30 must remain)."""
    if name not in _DISTS:
        raise ConfigError(f"The 'name' parameter must be one of {sorted(_DISTS)}. Got {name!r} instead.")
    x = _clean(z)
    n = len(x)
    dist = _DISTS[name]()
    sigma2 = np.ones(n)
    if name == "normal":
        ll = float(dist.loglikelihood(np.empty(0), x, sigma2))
        params: dict[str, float] = {}
    else:
        bounds = dist.bounds(x)

        def nll(p: np.ndarray) -> float:
            return -float(dist.loglikelihood(p, x, sigma2))

        if name == "t":  # one parameter: a bounded scalar search on log(nu), fast and robust
            r1 = optimize.minimize_scalar(
                lambda lnu: nll(np.array([np.exp(lnu)])),
                bounds=(np.log(bounds[0][0]), np.log(bounds[0][1])),
                method="bounded", options={"xatol": 1e-5},
            )
            ll = -float(r1.fun)
            params = {"nu": float(np.exp(r1.x))}
            return InnovationFit(name=name, params=params, loglik=ll, n_obs=n, aic=-2 * ll + 2,
                                 bic=float(-2 * ll + np.log(n)))
        starts = [np.asarray(dist.starting_values(x), dtype="float64")]
        starts.append(np.array([8.0] + [0.0] * (len(bounds) - 1)))
        best = None
        for s0 in starts:
            s0 = np.clip(s0, [b[0] + 1e-6 for b in bounds], [b[1] - 1e-6 for b in bounds])
            res = optimize.minimize(nll, s0, method="L-BFGS-B", bounds=bounds)
            if best is None or res.fun < best.fun:
                best = res
        assert best is not None
        ll = -float(best.fun)
        params = {k: float(v) for k, v in zip(_PARAM_NAMES[name], best.x, strict=True)}
    k = len(params)
    return InnovationFit(name=name, params=params, loglik=ll, n_obs=n, aic=-2 * ll + 2 * k,
                         bic=float(-2 * ll + k * np.log(n)))


def fit_innovations(
    z: np.ndarray | pd.Series,
    candidates: Sequence[str] = ("normal", "t", "skewt"),
    *,
    criterion: str = "bic",
) -> InnovationModel:
    """Fit every candidate to ``z`` and choose the one with the lowest ``criterion`` ("bic"/"aic")."""
    if criterion not in ("aic", "bic"):
        raise ConfigError(f"The 'criterion' parameter must be 'aic' or 'bic'. Got {criterion!r} instead.")
    if not candidates:
        raise ConfigError("The 'candidates' parameter must name at least one distribution.")
    fits = tuple(fit_innovation(z, c) for c in candidates)
    chosen = min(fits, key=lambda f: getattr(f, criterion)).name
    return InnovationModel(fits=fits, criterion=criterion, chosen=chosen)


@dataclass(frozen=True)
class TCopulaFit:
    """A t-copula fitted to a residual panel (Kendall's tau correlation, ML degrees of freedom).

    Attributes
    ----------
    nu : the degrees of freedom (ML over [2.05, 500] with ``corr`` fixed).
    corr : array of shape (n_symbols, n_symbols): ``sin(pi tau / 2)``, PSD-repaired if needed.
    symbols : the column order of ``corr``.
    loglik : copula log-likelihood at ``nu``.
    loglik_gaussian : the Gaussian copula's log-likelihood with the same ``corr`` (nu -> infinity).
    n_obs : dates used (complete rows).
    repaired : whether ``sin(pi tau / 2)`` needed the nearest-correlation repair.
    method : how it was estimated.
    """

    nu: float
    corr: np.ndarray = field(repr=False)
    symbols: tuple[str, ...]
    loglik: float
    loglik_gaussian: float
    n_obs: int
    repaired: bool
    method: str = "kendall_tau_corr+ml_nu"


def _t_copula_loglik(u: np.ndarray, corr: np.ndarray, nu: float) -> float:
    x = stats.t.ppf(u, nu)
    joint = stats.multivariate_t(shape=corr, df=nu).logpdf(x)
    return float(np.sum(joint) - np.sum(stats.t.logpdf(x, nu)))


def fit_t_copula(panel: pd.DataFrame, *, min_obs: int = 100) -> TCopulaFit:
    """Fit a t-copula's degrees of freedom to a panel of residuals (see module docs).

    Parameters
    ----------
    panel : DataFrame of shape (n_dates, n_symbols) of standardized residuals; rows with any NaN
        are dropped.
    min_obs : complete rows required.
    """
    if panel.shape[1] < 2:
        raise DataError(f"a copula needs at least 2 symbols; got columns {list(panel.columns)}")
    x = panel.dropna(how="any")
    n = len(x)
    if n < min_obs:
        raise DataError(f"need {min_obs} dates with every symbol's residual; got {n}")
    v = x.to_numpy(dtype="float64")
    if not np.isfinite(v).all():
        raise DataError("residuals must be finite (NaN rows are dropped, inf is rejected)")
    d = v.shape[1]
    u = stats.rankdata(v, axis=0) / (n + 1.0)
    tau = np.eye(d)
    for i in range(d):
        for j in range(i + 1, d):
            tau[i, j] = tau[j, i] = stats.kendalltau(v[:, i], v[:, j]).statistic
    corr = np.sin(np.pi * tau / 2.0)
    repaired = bool(np.linalg.eigvalsh(corr).min() < 1e-10)
    if repaired:
        corr = nearest_correlation(corr)
        # keep it strictly positive definite for the t density
        corr = (1 - 1e-8) * corr + 1e-8 * np.eye(d)
    res = optimize.minimize_scalar(
        lambda lnu: -_t_copula_loglik(u, corr, float(np.exp(lnu))),
        bounds=(np.log(2.05), np.log(500.0)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    nu = float(np.exp(res.x))
    g = stats.norm.ppf(u)
    ll_g = float(np.sum(stats.multivariate_normal(cov=corr).logpdf(g)) - np.sum(stats.norm.logpdf(g)))
    return TCopulaFit(nu=nu, corr=corr, symbols=tuple(map(str, x.columns)), loglik=-float(res.fun),
                      loglik_gaussian=ll_g, n_obs=n, repaired=repaired)
