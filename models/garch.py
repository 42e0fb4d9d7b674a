"""GARCH-family volatility forecasters: ``arch`` wrapped once (mean x volatility x distribution).

:class:`GarchVol` estimates GARCH, GJR-GARCH or EGARCH with a zero or constant mean and normal,
Student-t or skewed-t innovations on close-to-close log returns, one model per symbol, and forecasts
the per-period average variance over ``t+1..t+h`` (the :class:`models.forecast.VolForecast`
contract; ``arch`` gives per-step variances, which are averaged here).

Returns and units
-----------------
The input is a canonical per-period frame with ``ts``, ``symbol`` and ``close``. Per symbol (rows
sorted by ``ts``), the return of a row is ``log(close_t / close_{t-1})`` of consecutive rows; rows
whose return is not finite (the first row, non-positive or missing closes) are dropped, as are rows
whose ``n_obs`` is below ``min_obs`` (the shared cleaning rule of :mod:`models.base`), and the rest
are used as consecutive observations.

``arch`` estimates best when the returns are of order one, so every estimation multiplies the
returns by the power of ten ``scale`` that ``arch``'s own ``rescale=True`` would choose on the
estimation window (:func:`return_scale`: ``100`` for daily and hourly returns) and passes
``rescale=False`` to ``arch``. The estimated parameters
(``params_``) are in those scaled units (``omega`` and ``mu`` scale with ``scale**2`` and ``scale``);
every variance this module returns (forecasts, ``unconditional_var_``) is converted back exactly:
``variance_data = variance_arch / scale**2``, i.e. squared log-return units of one period.

Forecasts
---------
GARCH and GJR use ``arch``'s analytic multi-step forecasts; EGARCH uses the analytic one-step
forecast and, when the longest horizon is > 1, ``arch``'s simulation method (``simulations`` paths,
innovations drawn from the fitted distribution with a generator seeded from ``random_state``, the
symbol and the origin, so the same ``random_state`` gives the same numbers).

Walk-forward (the honest out-of-sample path)
--------------------------------------------
At every ``refit_every``-th origin the parameters are re-estimated on the trailing ``window``
returns ending at that origin (``window=None``: all returns so far). At the origins in between the
parameters are held fixed and ``arch``'s filter is run on the returns up to that origin only (one
``forecast(params=...)`` call per origin on the data ending at the origin, so no later value enters
any forecast, not even through ``arch``'s data-dependent variance bounds).

Failure is data, never silent
-----------------------------
An estimation fails when there are fewer than ``min_fit_obs`` returns, the returns have zero
variance (constant prices), ``arch`` raises, the optimizer does not converge
(``convergence_flag != 0`` or a ``ConvergenceWarning``), a parameter is not finite or the fitted
process is not stationary (persistence >= 1). A forecast fails when ``arch`` returns a non-finite or
non-positive variance. Each failure is replaced by the EWMA / RiskMetrics forecast (``lambda =
0.94`` on squared returns, flat across horizons) and the reason is recorded in the forecast's
``fallback_reason``; with ``fallback="raise"`` a :class:`GarchFitError` is raised instead. Warnings
raised inside ``arch`` and ``scipy`` while fitting are captured (never propagated) and kept with the
fit (``fit_warnings_``, ``walk_forward_fits_``).
"""

from __future__ import annotations

import math
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd
from arch.univariate import (
    EGARCH,
    GARCH,
    ConstantMean,
    Normal,
    SkewStudent,
    StudentsT,
    ZeroMean,
)
from arch.univariate.base import ARCHModelResult
from arch.utility.exceptions import ConvergenceWarning
from scipy import integrate
from sklearn.utils.validation import check_is_fitted

from features.errors import Failure, FailureReason, ModelError
from features.schema import CLOSE, SYMBOL, TS, TS_DTYPE, to_utc_ns
from models.base import (
    SQ_RET,
    BaseForecaster,
    Horizons,
    Interval,
    MissingInputsError,
    Options,
    SymbolPanel,
    prepare_panels,
    validate_param,
)
from models.ewma import ewma_recursion
from models.forecast import VolForecast
from models.schedule import WalkForward, merge

LOG_RET = "log_ret"
"""Derived column: close-to-close log return of the period (from ``close``), signed."""

EWMA_LAMBDA = 0.94
"""RiskMetrics' daily smoothing factor, used by the fallback forecast."""

_T = TypeVar("_T")
_R = TypeVar("_R")


class GarchFitError(ModelError):
    """A GARCH estimation or forecast failed and ``fallback="raise"`` was asked for."""


# ---- warnings raised inside worker threads ----------------------------------------------------------
_SINK = threading.local()


@contextmanager
def _routed_warnings() -> Iterator[None]:
    """Route every warning to the list of the thread that raised it (see :func:`_captured`).

    Entered once by the calling thread around a (possibly parallel) batch of fits: ``catch_warnings``
    is process-global, so worker threads must not enter it themselves. Warnings from threads that are
    not capturing go to the original ``showwarning``.
    """
    with warnings.catch_warnings():
        original = warnings.showwarning
        warnings.simplefilter("always")

        def route(message, category, filename, lineno, file=None, line=None) -> None:
            sink = getattr(_SINK, "records", None)
            if sink is None:
                original(message, category, filename, lineno, file, line)
            else:
                sink.append((category, str(message)))

        warnings.showwarning = route
        yield


@contextmanager
def _captured() -> Iterator[list[tuple[type[Warning], str]]]:
    """Collect the warnings raised by the current thread (inside :func:`_routed_warnings`)."""
    previous = getattr(_SINK, "records", None)
    records: list[tuple[type[Warning], str]] = []
    _SINK.records = records
    try:
        with np.errstate(all="ignore"):
            yield records
    finally:
        _SINK.records = previous


def _call_routed(fn: Callable[[_T], _R], item: _T) -> _R:
    """``fn(item)`` with warnings routed (the entry point of a worker process)."""
    with _routed_warnings():
        return fn(item)


def _parallel_map(
    fn: Callable[[_T], _R], items: Sequence[_T], n_jobs: int, backend: str = "thread"
) -> list[_R]:
    """``[fn(x) for x in items]`` on up to ``n_jobs`` threads or processes, warnings routed.

    Threads share memory but ``arch``'s optimiser (scipy SLSQP driving Python callbacks) holds the
    GIL most of the time, so only processes give a real speed-up on CPU-bound fits.
    """
    if n_jobs <= 1 or len(items) <= 1:
        with _routed_warnings():
            return [fn(x) for x in items]
    workers = min(n_jobs, len(items))
    if backend == "process":
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(partial(_call_routed, fn), items))
    with _routed_warnings(), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


# ---- small pure helpers --------------------------------------------------------------------------
def return_scale(returns: np.ndarray) -> float:
    """The power of ten ``arch`` itself would rescale ``returns`` by (``rescale=True``): the first
    of 1, 10, 100, ... (or 0.1, 0.01, ...) that brings their variance into ``[0.1, 10000)``.

    ``100`` for daily or hourly returns (volatility 0.3 %-100 % per period); ``1.0`` when the
    variance is zero or not finite.
    """
    var = float(np.var(returns)) if len(returns) else 0.0
    scale = 1.0
    if not np.isfinite(var) or var <= 0:
        return scale
    while not 0.1 <= var * scale**2 < 10000.0:
        scale = scale * 10.0 if var * scale**2 < 0.1 else scale / 10.0
    return scale


def average_variance(step_var: np.ndarray, horizons: Sequence[int]) -> np.ndarray:
    """Per-period averages ``mean(step_var[..., :h])`` for each ``h``; ``step_var`` (..., H)."""
    csum = np.cumsum(step_var, axis=-1)
    return np.stack([csum[..., h - 1] / h for h in horizons], axis=-1)


def _param_sum(params: pd.Series, prefix: str) -> float:
    return float(sum(v for k, v in params.items() if str(k).startswith(prefix + "[")))


def _dist_param_dict(dist: str, params: pd.Series) -> dict[str, float]:
    if dist == "t":
        return {"nu": float(params["nu"])}
    if dist == "skewt":
        return {"nu": float(params["eta"]), "lambda": float(params["lambda"])}
    return {}


def _expected_abs(distribution: Any, dist_params: np.ndarray) -> float:
    """``E|z|`` of the standardized innovation distribution (numerically, from arch's density)."""
    if isinstance(distribution, Normal):
        return math.sqrt(2.0 / math.pi)

    def integrand(z: float) -> float:
        ll = distribution.loglikelihood(dist_params, np.array([z]), np.ones(1), individual=True)
        return abs(z) * math.exp(float(np.asarray(ll).reshape(-1)[0]))

    left, _ = integrate.quad(integrand, -np.inf, 0.0)
    right, _ = integrate.quad(integrand, 0.0, np.inf)
    return left + right


def fit_problem(
    *,
    convergence_flag: int,
    optimizer_message: str,
    params: pd.Series,
    loglikelihood: float,
    persistence: float,
    warning_records: Sequence[tuple[type[Warning], str]] = (),
) -> str | None:
    """Why an estimation cannot be used, or None when it can.

    Checks, in order: the optimizer's convergence flag, a captured ``ConvergenceWarning``, finite
    parameters and log-likelihood, and stationarity (``persistence < 1``).
    """
    if convergence_flag != 0:
        return f"optimizer did not converge (code {convergence_flag}: {optimizer_message.strip()})"
    for category, message in warning_records:
        if issubclass(category, ConvergenceWarning):
            return f"optimizer did not converge ({message.strip().splitlines()[0]})"
    bad = [str(k) for k, v in params.items() if not np.isfinite(v)]
    if bad:
        return f"non-finite parameter(s) {bad}"
    if not np.isfinite(loglikelihood):
        return f"non-finite log-likelihood {loglikelihood!r}"
    if not np.isfinite(persistence) or persistence >= 1.0:
        return f"non-stationary fit: persistence {persistence:.6g} >= 1"
    return None


@dataclass(frozen=True)
class GarchFit:
    """One estimation of the model on one window of returns.

    Attributes
    ----------
    reason : why the fit cannot be used (None when it can).
    n_obs : returns in the estimation window.
    scale : the factor the returns were multiplied by before ``arch`` saw them.
    params : arch's parameters (scaled units); None when estimation did not produce any.
    persistence : GARCH/GJR: ``sum(alpha) + P(z<0) sum(gamma) + sum(beta)``; EGARCH: ``sum(beta)``.
    unconditional_var : long-run variance in data units (GARCH/GJR: ``omega / (1 - persistence)``;
        EGARCH: ``exp(E[ln sigma2])``, the level of the stationary mean of the log variance).
    dist_params : ``{"nu": ..., "lambda": ...}`` as the distribution has them.
    result : arch's result object (None when estimation raised).
    warnings : captured warnings, "Category: message".
    code : the :class:`~features.errors.FailureReason` of ``reason`` (FIT_FAILED unless the
        window was too short or degenerate).
    """

    reason: str | None
    n_obs: int
    scale: float = 1.0
    params: pd.Series | None = None
    persistence: float = float("nan")
    unconditional_var: float = float("nan")
    dist_params: dict[str, float] = field(default_factory=dict)
    result: ARCHModelResult | None = None
    warnings: tuple[str, ...] = ()
    code: FailureReason = FailureReason.FIT_FAILED

    @property
    def ok(self) -> bool:
        """Whether the estimation can be used for forecasting."""
        return self.reason is None

    @property
    def mean_data(self) -> float:
        """The constant mean of the returns in data units (0 for a zero mean)."""
        if self.params is None or "mu" not in self.params.index:
            return 0.0
        return float(self.params["mu"]) / self.scale


@dataclass(frozen=True)
class GarchState:
    """What :meth:`GarchVol.fit` learns for one symbol: the fit and its in-sample residuals."""

    fit: GarchFit
    std_resid: pd.Series


class _GeneratorOrSeed:
    """Constraint: an int >= 0, a numpy Generator, or None (documented in ``describe``)."""

    def accepts(self, value: object) -> bool:
        if isinstance(value, np.random.Generator):
            return True
        return Interval(int, 0, None).accepts(value)

    def describe(self) -> str:
        return "an int >= 0, a numpy.random.Generator"


# ---- the estimator ---------------------------------------------------------------------------------
class GarchVol(BaseForecaster):
    """GARCH / GJR / EGARCH variance forecasts from close-to-close log returns (see module docs).

    Parameters
    ----------
    vol : "GARCH", "GJR" or "EGARCH".
    p : ARCH (shock) lags, int >= 1.
    o : asymmetric (leverage) lags; None = 0 for "GARCH", 1 for "GJR" and "EGARCH". "GARCH" needs
        ``o in (None, 0)`` and "GJR" needs ``o >= 1``.
    q : variance (GARCH) lags, int >= 0.
    dist : innovation distribution, "normal", "t" or "skewt".
    mean : "Zero" or "Constant".
    window : estimation window in returns (rolling, the trailing ``window`` returns), or None for
        all returns so far (expanding).
    refit_every : in the walk-forward, re-estimate every this many origins; in between the filter is
        updated on the new data with the parameters held fixed.
    min_fit_obs : fewer returns than this in the estimation window -> EWMA fallback.
    min_obs : rows whose ``n_obs`` is below this are dropped (when ``n_obs`` is present); None keeps
        all rows (the shared cleaning rule of :mod:`models.base`).
    simulations : paths for EGARCH multi-step forecasts.
    max_iter : optimizer iteration cap passed to ``arch`` (``options={"maxiter": ...}``); None =
        arch's default.
    random_state : int, numpy Generator or None; seeds the EGARCH simulations.
    fallback : "ewma" (replace a failed fit or forecast by EWMA and record why) or "raise".
    n_jobs : workers for the per-symbol fits (``fit`` and ``walk_forward``).
    backend : "thread" (ThreadPoolExecutor) or "process" (ProcessPoolExecutor). arch's optimiser
        holds the GIL most of the time, so threads barely overlap; processes scale with cores at
        the cost of pickling each symbol's data and results.

    Attributes
    ----------
    state_ : dict symbol -> :class:`GarchState`.
    params_ : dict symbol -> arch's parameter Series of the last fit (scaled units, see
        ``return_scale_``); None when it failed before producing parameters.
    return_scale_ : dict symbol -> the factor returns were multiplied by.
    dist_params_ : dict symbol -> {"nu": ..., "lambda": ...} (empty for the normal).
    persistence_, unconditional_var_ : dict symbol -> float (variance in data units).
    result_ : dict symbol -> arch's ``ARCHModelResult`` (None when estimation raised).
    fallback_reason_ : dict symbol -> why the fit cannot be used (None when it can).
    fit_warnings_ : dict symbol -> captured warnings of the fit.
    standardized_residuals_ : dict symbol -> Series of standardized residuals: in-sample after
        ``fit``; after ``walk_forward``, the out-of-sample ones ``(r_{t+1} - mu) / sigma_{t+1|t}`` of
        the forecasts actually issued (fallback origins included), indexed by the return's ``ts``.
    walk_forward_fits_ : dict symbol -> DataFrame, one row per estimation of the last walk-forward.
    seed_entropy_ : the entropy the simulation generators are derived from.
    """

    required_inputs: ClassVar[tuple[str, ...]] = (CLOSE,)
    model_id: ClassVar[str] = "garch"
    own_schedule: ClassVar[bool] = True
    model_version: ClassVar[str] = "1"
    horizon_specific: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict] = {
        "vol": [Options(("GARCH", "GJR", "EGARCH"))],
        "p": [Interval(int, 1, None)],
        "o": [Interval(int, 0, None), None],
        "q": [Interval(int, 0, None)],
        "dist": [Options(("normal", "t", "skewt"))],
        "mean": [Options(("Zero", "Constant"))],
        "window": [Interval(int, 2, None), None],
        "refit_every": [Interval(int, 1, None)],
        "min_fit_obs": [Interval(int, 2, None)],
        "min_obs": [Interval(float, 0, None), None],
        "simulations": [Interval(int, 1, None)],
        "max_iter": [Interval(int, 1, None), None],
        "random_state": [_GeneratorOrSeed(), None],
        "fallback": [Options(("ewma", "raise"))],
        "n_jobs": [Interval(int, 1, None)],
        "backend": [Options(("thread", "process"))],
    }

    def min_history(self) -> int:
        """``min_fit_obs``: each row of the estimation window carries one return."""
        return int(self.min_fit_obs)

    def __init__(
        self,
        vol: str = "GARCH",
        p: int = 1,
        o: int | None = None,
        q: int = 1,
        dist: str = "normal",
        mean: str = "Zero",
        window: int | None = 1000,
        refit_every: int = 5,
        min_fit_obs: int = 250,
        min_obs: float | None = None,
        simulations: int = 1000,
        max_iter: int | None = None,
        random_state: int | np.random.Generator | None = None,
        fallback: str = "ewma",
        n_jobs: int = 1,
        backend: str = "thread",
    ) -> None:
        self.vol = vol
        self.p = p
        self.o = o
        self.q = q
        self.dist = dist
        self.mean = mean
        self.window = window
        self.refit_every = refit_every
        self.min_fit_obs = min_fit_obs
        self.min_obs = min_obs
        self.simulations = simulations
        self.max_iter = max_iter
        self.random_state = random_state
        self.fallback = fallback
        self.n_jobs = n_jobs
        self.backend = backend

    # -- configuration ----------------------------------------------------------------------------
    def _validate_params(self) -> None:
        super()._validate_params()
        name = type(self).__name__
        if self.vol == "GARCH" and self.o not in (None, 0):
            raise ValueError(
                f"The 'o' parameter of {name} must be 0 or None when vol='GARCH' "
                f"(use vol='GJR' for asymmetric terms). Got {self.o!r} instead."
            )
        if self.vol == "GJR" and self.o == 0:
            raise ValueError(
                f"The 'o' parameter of {name} must be >= 1 or None when vol='GJR'. Got 0 instead."
            )

    def _o(self) -> int:
        if self.o is not None:
            return int(self.o)
        return 0 if self.vol == "GARCH" else 1

    def _distribution(self, seed: np.random.Generator | None = None) -> Any:
        cls = {"normal": Normal, "t": StudentsT, "skewt": SkewStudent}[self.dist]
        return cls(seed=seed)

    def _arch_model(self, y_scaled: np.ndarray, seed: np.random.Generator | None = None) -> Any:
        """The arch model (mean x volatility x distribution) on already scaled returns."""
        vol_cls = EGARCH if self.vol == "EGARCH" else GARCH
        volatility = vol_cls(p=self.p, o=self._o(), q=self.q)
        mean_cls = ZeroMean if self.mean == "Zero" else ConstantMean
        return mean_cls(
            y_scaled,
            volatility=volatility,
            distribution=self._distribution(seed),
            rescale=False,
        )

    def _seed_entropy(self) -> int:
        rs = self.random_state
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(0, 2**63))
        if rs is None:
            return int(np.random.SeedSequence().entropy)
        return int(rs)

    @staticmethod
    def _generator(entropy: int, symbol: str, ts: pd.Timestamp) -> np.random.Generator:
        key = (zlib.crc32(symbol.encode()), int(ts.value) & (2**64 - 1))
        return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))

    # -- input -------------------------------------------------------------------------------------
    def _panels(
        self, X: pd.DataFrame, period: Mapping[str, pd.Timedelta] | None = None
    ) -> dict[str, SymbolPanel]:
        """Per-symbol panels with the signed log return ``log_ret`` of consecutive rows."""
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"X must be a pandas DataFrame; got {type(X).__name__}")
        missing = [c for c in (TS, SYMBOL, CLOSE) if c not in X.columns]
        if missing:
            raise MissingInputsError(
                f"{type(self).__name__} needs column(s) {missing} (required_inputs "
                f"{list(self.required_inputs)}); got columns {list(X.columns)}"
            )
        if len(X) == 0:
            raise ValueError(f"{type(self).__name__}: X has no rows")
        panels = prepare_panels(
            X, (SQ_RET,), min_obs=self.min_obs, period=period, owner=type(self).__name__
        )
        # The cleaning above (shared with every model) keeps the rows whose squared return of
        # consecutive raw rows is finite; GJR/EGARCH need the sign, recomputed here by the same rule.
        ts = X[TS] if str(X[TS].dtype) == TS_DTYPE else to_utc_ns(X[TS])
        ts_ns = pd.DatetimeIndex(ts).asi8
        codes, names = pd.factorize(X[SYMBOL].astype("str"), sort=True)
        close = pd.to_numeric(X[CLOSE], errors="raise").to_numpy(dtype="float64")
        order = np.lexsort((ts_ns, codes))
        c, s, t_sorted = close[order], codes[order], ts_ns[order]
        ret = np.full(len(c), np.nan)
        ok = (s[1:] == s[:-1]) & (c[1:] > 0) & (c[:-1] > 0)
        ret[1:][ok] = np.log(c[1:][ok] / c[:-1][ok])
        first = np.searchsorted(s, np.arange(len(names)))
        last = np.searchsorted(s, np.arange(len(names)), side="right")
        bounds = {str(n): (int(a), int(b)) for n, a, b in zip(names, first, last, strict=True)}
        out: dict[str, SymbolPanel] = {}
        for name, panel in panels.items():
            a, b = bounds[name]
            pos = a + np.searchsorted(t_sorted[a:b], panel.ts.asi8)
            out[name] = SymbolPanel(
                name, panel.ts, {**panel.data, LOG_RET: ret[pos]}, panel.period, panel.n_dropped
            )
        return out

    # -- one estimation ----------------------------------------------------------------------------
    def _fit_returns(self, r: np.ndarray, warm: GarchFit | None = None) -> GarchFit:
        """Estimate on the returns ``r`` (data units); never raises for bad data, see ``reason``."""
        n = len(r)
        if n < self.min_fit_obs:
            return GarchFit(
                f"too few observations: {n} returns < min_fit_obs={self.min_fit_obs}", n,
                code=FailureReason.INSUFFICIENT_HISTORY,
            )
        if not np.var(r) > 0:
            return GarchFit("degenerate returns: zero variance (constant prices)", n,
                            code=FailureReason.INVALID_VALUE)
        scale = return_scale(r)
        model = self._arch_model(r * scale)
        start = None
        if warm is not None and warm.ok and warm.scale == scale and warm.params is not None:
            start = warm.params.to_numpy()
        options = None if self.max_iter is None else {"maxiter": int(self.max_iter)}
        with _captured() as records:
            try:
                res = model.fit(
                    disp="off", show_warning=True, starting_values=start, options=options
                )
            except (ValueError, np.linalg.LinAlgError, ZeroDivisionError) as exc:
                msgs = tuple(f"{c.__name__}: {m}" for c, m in records)
                return GarchFit(
                    f"arch fit raised {type(exc).__name__}: {exc}", n, scale, warnings=msgs
                )
            params = res.params
            dp = params.to_numpy()[len(params) - res.model.distribution.num_params :]
            persistence = self._persistence(params, model.distribution, dp)
        msgs = tuple(f"{c.__name__}: {m}" for c, m in records)
        reason = fit_problem(
            convergence_flag=int(res.convergence_flag),
            optimizer_message=str(getattr(res.optimization_result, "message", "")),
            params=params,
            loglikelihood=float(res.loglikelihood),
            persistence=persistence,
            warning_records=records,
        )
        uvar = float("nan")
        if reason is None:
            uvar = self._unconditional_var(params, persistence, model.distribution, dp) / scale**2
        return GarchFit(
            reason,
            n,
            scale,
            params,
            persistence,
            uvar,
            _dist_param_dict(self.dist, params),
            res,
            msgs,
        )

    def _persistence(self, params: pd.Series, distribution: Any, dp: np.ndarray) -> float:
        if self.vol == "EGARCH":
            return _param_sum(params, "beta")
        gamma = _param_sum(params, "gamma")
        kappa = 0.5
        if gamma != 0.0 and self.dist == "skewt":
            kappa = float(np.asarray(distribution.cdf(np.array([0.0]), dp)).reshape(-1)[0])
        return _param_sum(params, "alpha") + kappa * gamma + _param_sum(params, "beta")

    def _unconditional_var(
        self, params: pd.Series, persistence: float, distribution: Any, dp: np.ndarray
    ) -> float:
        omega = float(params["omega"])
        if self.vol != "EGARCH":
            return omega / (1.0 - persistence)
        e_abs = _expected_abs(distribution, dp)
        alpha = _param_sum(params, "alpha")
        return math.exp((omega + alpha * (e_abs - math.sqrt(2.0 / math.pi))) / (1.0 - persistence))

    # -- forecasts with fixed parameters --------------------------------------------------------------
    def _step_var(
        self,
        fit: GarchFit,
        r: np.ndarray,
        start: int,
        horizon: int,
        seed: np.random.Generator | None,
    ) -> np.ndarray:
        """Per-step variance forecasts (data units), array (len(r) - start, horizon): row ``i`` is
        made at return ``start + i`` from ``r[: start + i + 1]`` and the parameters of ``fit``."""
        model = self._arch_model(r * fit.scale, seed)
        method = "simulation" if self.vol == "EGARCH" and horizon > 1 else "analytic"
        with _captured():
            fc = model.forecast(
                fit.params,
                horizon=horizon,
                start=start,
                method=method,
                simulations=self.simulations,
                reindex=False,
            )
        return fc.residual_variance.to_numpy(dtype="float64") / fit.scale**2

    def _fail(self, symbol: str, reason: str, code: FailureReason) -> str:
        """The ``fallback_reason`` text of an EWMA fallback (a :class:`Failure`'s note), or
        :class:`GarchFitError` with ``fallback="raise"``."""
        if self.fallback == "raise":
            raise GarchFitError(f"{type(self).__name__} failed for symbol {symbol}: {reason}")
        return Failure(code, symbol, f"ewma fallback (lambda {EWMA_LAMBDA}): {reason}").note()

    # -- the BaseForecaster hooks ----------------------------------------------------------------------
    def _fit_panel(self, panel: SymbolPanel) -> GarchState:
        r = panel.col(LOG_RET)
        lo = 0 if self.window is None else max(0, len(r) - int(self.window))
        fit = self._fit_returns(r[lo:])
        if not fit.ok:
            self._fail(panel.symbol, fit.reason or "", fit.code)
        z = pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype="float64", name="std_resid")
        if fit.result is not None and fit.ok:
            z = pd.Series(
                np.asarray(fit.result.std_resid, dtype="float64"),
                index=panel.ts[lo:],
                name="std_resid",
            )
        return GarchState(fit, z)

    def _predict_panel(
        self, panel: SymbolPanel, state: GarchState, horizons: Sequence[int]
    ) -> tuple[np.ndarray, list[str | None] | None]:
        """Forecasts at every row with the fitted parameters (one filter pass over ``panel``).

        arch's loose variance bounds (a safeguard 1e6 away from the EWMA level) are computed on the
        whole ``panel``; :meth:`walk_forward` runs one pass per origin instead.
        """
        r = panel.col(LOG_RET)
        n, hs = len(r), list(horizons)
        ewma = ewma_recursion(r * r, EWMA_LAMBDA)
        fallback = np.repeat(ewma[:, None], len(hs), axis=1)
        fit = state.fit
        if not fit.ok:
            reason = self._fail(panel.symbol, fit.reason or "", fit.code)
            return fallback, [reason] * n
        H = max(hs)
        chunk = n if (self.vol != "EGARCH" or H == 1) else 128
        out = np.empty((n, len(hs)))
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            seed = self._generator(self.seed_entropy_, panel.symbol, panel.ts[s])
            out[s:e] = average_variance(self._step_var(fit, r[:e], s, H, seed), hs)
        bad = ~(np.isfinite(out) & (out > 0)).all(axis=1)
        reasons: list[str | None] = [None] * n
        if bad.any():
            msg = self._fail(panel.symbol, "garch forecast not finite and > 0",
                             FailureReason.NON_FINITE)
            out[bad] = fallback[bad]
            for i in np.flatnonzero(bad):
                reasons[i] = msg
        return out, reasons if bad.any() else None

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
        """Out-of-sample forecasts at ``origins`` (see module docs); the base class's hook."""
        with _routed_warnings():
            res = self.walk_forward_symbol(
                panel,
                horizons,
                origins,
                window=window,
                window_type=window_type,
                refit_every=refit_every,
                purge=purge,
                entropy=self._seed_entropy(),
            )
        return res.variance, res.reasons

    def walk_forward_symbol(
        self,
        panel: SymbolPanel,
        horizons: Sequence[int],
        origins: np.ndarray,
        *,
        window: int,
        window_type: str,
        refit_every: int,
        purge: int | None,
        entropy: int,
    ) -> _WalkForwardResult:
        """One symbol's walk-forward: forecasts at row positions ``origins`` of ``panel`` (array of
        shape (len(origins), len(horizons))), fallback reasons, standardized residuals and fits."""
        r = panel.col(LOG_RET)
        n, hs, H = len(r), list(horizons), max(horizons)
        ewma = ewma_recursion(r * r, EWMA_LAMBDA)
        extra = 0 if purge is None else max(0, purge - min(hs))
        out = np.full((len(origins), len(hs)), np.nan)
        reasons: list[str | None] = [None] * len(origins)
        z_ts: list[pd.Timestamp] = []
        z_val: list[float] = []
        fits: list[dict[str, Any]] = []
        warm: GarchFit | None = None
        for k0 in range(0, len(origins), refit_every):
            block = [int(t) for t in origins[k0 : k0 + refit_every]]
            train_end = block[0] - extra
            if window_type == "expanding":
                if train_end + 1 < window:
                    continue
                lo = 0
            else:
                lo = max(0, train_end + 1 - window)
            fit = (
                self._fit_returns(r[lo : train_end + 1], warm)
                if train_end >= 0
                else GarchFit("too few observations: 0 returns", 0,
                              code=FailureReason.INSUFFICIENT_HISTORY)
            )
            warm = fit if fit.ok else warm
            fits.append(self._fit_record(panel, fit, block[0], lo, train_end))
            fit_reason = (
                None if fit.ok else self._fail(panel.symbol, fit.reason or "", fit.code)
            )
            for j, t in enumerate(block, start=k0):
                one, mu = float("nan"), 0.0
                if fit_reason is None:
                    seed = self._generator(entropy, panel.symbol, panel.ts[t]) if H > 1 else None
                    step = self._step_var(fit, r[lo : t + 1], t - lo, H, seed)[-1]
                    avg = average_variance(step, hs)
                    if np.isfinite(avg).all() and (avg > 0).all() and step[0] > 0:
                        out[j], one, mu = avg, float(step[0]), fit.mean_data
                    else:
                        reasons[j] = self._fail(
                            panel.symbol, "garch forecast not finite and > 0",
                            FailureReason.NON_FINITE,
                        )
                else:
                    reasons[j] = fit_reason
                if reasons[j] is not None:
                    out[j] = ewma[t]
                    one = float(ewma[t])
                if t + 1 < n and one > 0 and np.isfinite(one):
                    z_ts.append(panel.ts[t + 1])
                    z_val.append((r[t + 1] - mu) / math.sqrt(one))
        z = pd.Series(
            z_val, index=pd.DatetimeIndex(z_ts, tz="UTC"), name="std_resid", dtype="float64"
        )
        any_reason = any(x is not None for x in reasons)
        return _WalkForwardResult(out, reasons if any_reason else None, z, pd.DataFrame(fits))

    def _fit_record(
        self, panel: SymbolPanel, fit: GarchFit, origin: int, lo: int, train_end: int
    ) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "origin_ts": panel.ts[origin],
            "fit_start_ts": panel.ts[lo] if train_end >= lo else pd.NaT,
            "fit_end_ts": panel.ts[train_end] if train_end >= 0 else pd.NaT,
            "n_obs": fit.n_obs,
            "converged": fit.ok,
            "reason": fit.reason,
            "scale": fit.scale,
            "persistence": fit.persistence,
            "unconditional_var": fit.unconditional_var,
            "warnings": "; ".join(fit.warnings) or None,
        }
        if fit.params is not None:
            rec.update({str(k): float(v) for k, v in fit.params.items()})
        return rec

    # -- the public contract ---------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: None = None) -> GarchVol:
        """Estimate one model per symbol on its trailing ``window`` returns.

        Parameters
        ----------
        X : long frame with ``ts``, ``symbol`` and ``close`` (one or many symbols).
        y : ignored.

        Returns
        -------
        self
        """
        self._validate_params()
        panels = self._panels(X)
        self.seed_entropy_ = self._seed_entropy()
        states = _parallel_map(
            self._fit_panel, list(panels.values()), int(self.n_jobs), self.backend
        )
        self.symbols_ = list(panels)
        self.period_ = {s: p.period for s, p in panels.items()}
        self.n_dropped_ = {s: p.n_dropped for s, p in panels.items()}
        self.data_cutoff_ts_ = {s: p.ts[-1] if len(p) else None for s, p in panels.items()}
        self.state_ = dict(zip(panels, states, strict=True))
        self._set_fit_attributes()
        return self

    def to_state(self) -> dict[str, Any]:
        """:meth:`BaseForecaster.to_state` plus ``"state"``: the seed entropy and, per symbol, the
        fit (reason, code, n_obs, return scale, arch's parameters, persistence, long-run variance,
        distribution parameters, warnings); no ``arch`` object is kept."""
        out = super().to_state()
        state: dict[str, Any] = {"__seed_entropy__": str(int(self.seed_entropy_))}
        for sym, st in self.state_.items():
            f = st.fit
            state[sym] = {
                "reason": f.reason,
                "code": f.code.value,
                "n_obs": f.n_obs,
                "scale": f.scale,
                "params": None
                if f.params is None
                else [[str(k), float(v)] for k, v in f.params.items()],
                "persistence": f.persistence,
                "unconditional_var": f.unconditional_var,
                "dist_params": dict(f.dist_params),
                "warnings": list(f.warnings),
            }
        out["state"] = state
        return out

    def from_state(self, state: Mapping[str, Any]) -> GarchVol:
        """The inverse of :meth:`to_state` (the parameters held fixed, ``result_`` None per symbol);
        returns self, ready to ``predict``."""
        super().from_state(state)
        doc = state["state"]
        self.seed_entropy_ = int(doc["__seed_entropy__"])
        self.state_ = {}
        for sym, s in doc.items():
            if sym == "__seed_entropy__":
                continue
            params = None
            if s["params"] is not None:
                params = pd.Series({k: v for k, v in s["params"]}, dtype="float64", name="params")
            fit = GarchFit(
                reason=s["reason"],
                n_obs=int(s["n_obs"]),
                scale=float(s["scale"]),
                params=params,
                persistence=float(s["persistence"]),
                unconditional_var=float(s["unconditional_var"]),
                dist_params=dict(s["dist_params"]),
                result=None,
                warnings=tuple(s["warnings"]),
                code=FailureReason(s.get("code", FailureReason.FIT_FAILED.value)),
            )
            self.state_[sym] = GarchState(
                fit=fit, std_resid=pd.Series(dtype="float64", name="std_resid")
            )
        self._set_fit_attributes()
        return self

    def _set_fit_attributes(self) -> None:
        """The per-symbol views of ``state_`` (``params_``, ``return_scale_``, ``result_`` ...)."""
        fits = {s: st.fit for s, st in self.state_.items()}
        self.params_ = {s: f.params for s, f in fits.items()}
        self.return_scale_ = {s: f.scale for s, f in fits.items()}
        self.dist_params_ = {s: dict(f.dist_params) for s, f in fits.items()}
        self.persistence_ = {s: f.persistence for s, f in fits.items()}
        self.unconditional_var_ = {s: f.unconditional_var for s, f in fits.items()}
        self.result_ = {s: f.result for s, f in fits.items()}
        self.fallback_reason_ = {s: f.reason for s, f in fits.items()}
        self.fit_warnings_ = {s: list(f.warnings) for s, f in fits.items()}
        self.standardized_residuals_ = {s: st.std_resid for s, st in self.state_.items()}

    def predict(
        self, X: pd.DataFrame, horizons: Sequence[int] | None = None
    ) -> dict[str, VolForecast]:
        """Forecast from each row's ``ts`` with the fitted parameters (see BaseForecaster.predict)."""
        check_is_fitted(self, "state_")
        with _routed_warnings():
            return super().predict(X, horizons)

    def walk_forward(
        self,
        X: pd.DataFrame,
        horizons: Sequence[int] = (1, 5),
        *,
        start: pd.Timestamp | str | None = None,
        end: pd.Timestamp | str | None = None,
        schedule: WalkForward | None = None,
        window: int | None = None,
        window_type: str | None = None,
        refit_every: int | None = None,
        purge: int | None = None,
    ) -> dict[str, VolForecast]:
        """Out-of-sample forecasts at every origin in ``[start, end]`` (see module docs).

        Parameters are those of :meth:`models.base.BaseForecaster.walk_forward`; ``window=None``
        takes the model's ``window`` (rolling) or, when that is None, an expanding window starting
        once ``min_fit_obs`` returns exist. Symbols run in parallel on ``n_jobs`` threads.
        Sets ``standardized_residuals_`` (out-of-sample) and ``walk_forward_fits_``.

        Returns
        -------
        dict symbol -> :class:`VolForecast`, ``data_cutoff_ts`` = each origin.
        """
        window, window_type, refit_every, purge = merge(
            schedule, window, window_type, refit_every, purge
        )
        self._validate_params()
        name = type(self).__name__
        validate_param(name, "horizons", list(horizons), [Horizons()])
        hs = tuple(sorted(int(h) for h in horizons))
        if window_type is None:
            window_type = (
                "rolling" if (window is not None or self.window is not None) else "expanding"
            )
        if window is None:
            window = self.window if self.window is not None else self.min_fit_obs
        refit_every = self.refit_every if refit_every is None else refit_every
        validate_param(name, "window", window, [Interval(int, 1, None)])
        validate_param(name, "window_type", window_type, [Options(("rolling", "expanding"))])
        validate_param(name, "refit_every", refit_every, [Interval(int, 1, None)])
        if purge is not None:
            validate_param(name, "purge", purge, [Interval(int, 1, None)])
        lo_ts = None if start is None else pd.Timestamp(start)
        hi_ts = None if end is None else pd.Timestamp(end)
        lo_ts = lo_ts.tz_localize("UTC") if lo_ts is not None and lo_ts.tz is None else lo_ts
        hi_ts = hi_ts.tz_localize("UTC") if hi_ts is not None and hi_ts.tz is None else hi_ts
        entropy = self._seed_entropy()
        jobs: list[tuple[SymbolPanel, np.ndarray]] = []
        for panel in self._panels(X).values():
            sel = np.ones(len(panel), dtype=bool)
            if lo_ts is not None:
                sel &= panel.ts >= lo_ts
            if hi_ts is not None:
                sel &= panel.ts <= hi_ts
            origins = np.flatnonzero(sel)
            if len(origins):
                jobs.append((panel, origins))

        results = _parallel_map(
            partial(_run_walk_forward, self, hs, window, window_type, refit_every, purge, entropy),
            jobs,
            int(self.n_jobs),
            self.backend,
        )
        out: dict[str, VolForecast] = {}
        self.standardized_residuals_ = {}
        self.walk_forward_fits_ = {}
        for (panel, origins), res in zip(jobs, results, strict=True):
            sym = panel.symbol
            self.standardized_residuals_[sym] = res.std_resid
            self.walk_forward_fits_[sym] = res.fits
            sub = SymbolPanel(sym, panel.ts[origins], {}, panel.period, 0)
            if not (np.isfinite(res.variance).all(axis=1) & (res.variance > 0).all(axis=1)).any():
                continue
            out[sym] = self._build(
                sub, res.variance, res.reasons, hs, sub.ts, data_ts=panel.ts
            )
        return out


@dataclass(frozen=True)
class _WalkForwardResult:
    variance: np.ndarray
    reasons: list[str | None] | None
    std_resid: pd.Series
    fits: pd.DataFrame


def _run_walk_forward(
    model: GarchVol,
    horizons: tuple[int, ...],
    window: int,
    window_type: str,
    refit_every: int,
    purge: int | None,
    entropy: int,
    job: tuple[SymbolPanel, np.ndarray],
) -> _WalkForwardResult:
    """One symbol's walk-forward (module level so that worker processes can unpickle it)."""
    panel, origins = job
    return model.walk_forward_symbol(
        panel,
        horizons,
        origins,
        window=int(window),
        window_type=str(window_type),
        refit_every=int(refit_every),
        purge=purge,
        entropy=entropy,
    )
