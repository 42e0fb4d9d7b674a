"""The forecaster contract: scikit-learn estimators that turn realized measures into VolForecasts.

Every volatility forecaster in :mod:`models` subclasses :class:`BaseForecaster`:

- hyperparameters are stored as given by ``__init__`` (no logic there) and validated at fit time
  against ``_parameter_constraints``, with scikit-learn's message shape
  ("The 'half_life' parameter of EWMAVol must be > 0. Got -3 instead.");
- ``fit(X, y=None) -> self`` learns state into attributes ending in ``_``;
- ``predict(X, horizons=None)`` forecasts from each row's ``ts`` as origin, using only the rows of
  ``X`` at or before that origin (and the fitted state), and returns a dict symbol ->
  :class:`VolForecast` (sorted by symbol; one entry when ``X`` holds one symbol:
  :func:`models.forecast.only` unwraps it);
- ``walk_forward(X, horizons, ...)`` is the honest out-of-sample path: at every origin the model is
  (re)estimated on data available at that origin only. The default implementation refits a clone
  with ``fit``/``predict``; fast models override :meth:`BaseForecaster._walk_forward_panel`.

``X`` is a canonical *realized* frame (see :mod:`features.schema`), long format with columns ``ts``
(UTC, the period's close), ``symbol``, ``rv_var`` and optionally ``bv_var``, ``rq_var2``,
``rs_pos_var``, ``rs_neg_var``, ``n_obs``, ``close``. A model lists the columns it needs in
``required_inputs``; a frame without them raises :class:`MissingInputsError`, which
:func:`models.evaluation.walk_forward` catches to skip the model and say so.

Cleaning, shared by all models: per symbol, rows whose required inputs are not finite and >= 0,
whose ``rv_var`` is not > 0, or (when ``n_obs`` is present and the model has ``min_obs``) whose ``n_obs``
is below ``min_obs`` are dropped from the sample entirely; the remaining rows are used as
consecutive observations.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from features.errors import ConfigError, DataError, ModelError
from features.schema import CLOSE, N_OBS, RV, SYMBOL, TS, TS_DTYPE, to_utc_ns
from models.forecast import VolForecast, default_annualization, format_period, row_target_end
from models.schedule import WalkForward, merge

SQ_RET = "sq_ret_var"
"""Derived column: squared close-to-close log return of the period (needs ``close``)."""


def resolve_horizons(est: Any, horizons: Sequence[int] | None) -> tuple[int, ...]:
    """The sorted horizons a fitted estimator should predict: ``horizons`` validated, or (None) the
    fitted ``horizons_`` of a horizon-specific model; a horizon the model was not fitted for is an
    error naming it. Shared by the volatility and correlation forecasters."""
    name = type(est).__name__
    specific = getattr(est, "horizon_specific", False)
    if horizons is None:
        if specific:
            return est.horizons_
        raise ConfigError(f"{name}.predict needs horizons, e.g. (1, 5, 22)")
    validate_param(name, "horizons", list(horizons), [Horizons()])
    hs = tuple(sorted(int(h) for h in horizons))
    if specific:
        unknown = [h for h in hs if h not in est.horizons_]
        if unknown:
            raise ConfigError(
                f"{name} was fitted for horizons {list(est.horizons_)}; "
                f"got horizon(s) {unknown}. Set horizons={tuple(sorted(set(hs)))} and refit."
            )
    return hs


class MissingInputsError(ModelError):
    """The data lack columns a model needs (its ``required_inputs``)."""


class InsufficientHistoryError(ModelError):
    """Too few observations to fit or forecast.

    Attributes
    ----------
    periods : how many periods (rows) there are.
    needed : how many would do, when known (else None).
    """

    def __init__(self, message: str, *, periods: int, needed: int | None = None) -> None:
        self.periods = int(periods)
        self.needed = None if needed is None else int(needed)
        super().__init__(message)


# ---- declarative parameter validation ------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """A real (or integer) interval constraint; ``None`` bounds are infinite."""

    kind: type
    left: float | None
    right: float | None
    closed: str = "both"

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is a number of the right kind inside the interval."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if not np.isfinite(float(value)):
            return False
        lo_ok = self.left is None or (
            value >= self.left if self.closed in ("both", "left") else value > self.left
        )
        hi_ok = self.right is None or (
            value <= self.right if self.closed in ("both", "right") else value < self.right
        )
        return bool(lo_ok and hi_ok)

    def describe(self) -> str:
        """Human wording, e.g. "> 0", "an int >= 1", "in (0, 1)"."""
        prefix = "an int " if self.kind is int else ""
        if self.right is None:
            op = ">=" if self.closed in ("both", "left") else ">"
            return f"{prefix}{op} {self.left}"
        if self.left is None:
            op = "<=" if self.closed in ("both", "right") else "<"
            return f"{prefix}{op} {self.right}"
        lb = "[" if self.closed in ("both", "left") else "("
        rb = "]" if self.closed in ("both", "right") else ")"
        return f"{prefix}in {lb}{self.left}, {self.right}{rb}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple[object, ...]

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is one of the options."""
        return any(value == v and type(value) is type(v) for v in self.values)

    def describe(self) -> str:
        """Human wording, e.g. "one of ('rolling', 'expanding')"."""
        return f"one of {self.values}"


@dataclass(frozen=True)
class Boolean:
    """A bool."""

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is a bool."""
        return isinstance(value, (bool, np.bool_))

    def describe(self) -> str:
        """Human wording."""
        return "a bool"


@dataclass(frozen=True)
class Horizons:
    """A non-empty sequence of distinct ints >= 1."""

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is a valid horizon sequence."""
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
            return False
        ok = all(
            isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1 for h in value
        )
        return ok and len(set(value)) == len(value)

    def describe(self) -> str:
        """Human wording."""
        return "a non-empty sequence of distinct ints >= 1"


Constraint = Interval | Options | Boolean | Horizons | None


def validate_param(owner: str, name: str, value: object, constraints: Sequence[Constraint]) -> None:
    """Raise :class:`~features.errors.ConfigError` (a ``ValueError``) in scikit-learn's shape
    unless ``value`` meets one of ``constraints``.

    ``None`` in ``constraints`` means the parameter may be None.
    """
    for c in constraints:
        if c is None and value is None:
            return
        if c is not None and c.accepts(value):
            return
    words = [c.describe() if c is not None else "None" for c in constraints]
    must = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    raise ConfigError(f"The '{name}' parameter of {owner} must be {must}. Got {value!r} instead.")


# ---- the per-symbol cleaned panel -----------------------------------------------------------------
@dataclass(frozen=True)
class SymbolPanel:
    """One symbol's cleaned realized series.

    Attributes
    ----------
    symbol : the instrument.
    ts : UTC close times of the kept rows (sorted, unique).
    data : column name -> float array of shape (n_rows,) for the kept rows.
    period : the length of one period (inferred from the raw rows: the most common spacing).
    n_dropped : rows removed by cleaning.
    """

    symbol: str
    ts: pd.DatetimeIndex
    data: Mapping[str, np.ndarray]
    period: pd.Timedelta
    n_dropped: int

    def __len__(self) -> int:
        return len(self.ts)

    def col(self, name: str) -> np.ndarray:
        """The array of column ``name``."""
        return self.data[name]

    def to_frame(self) -> pd.DataFrame:
        """The kept rows as a canonical long frame."""
        frame = pd.DataFrame({TS: self.ts, SYMBOL: self.symbol})
        for k, v in self.data.items():
            if k != SQ_RET:
                frame[k] = v
        return frame


def infer_period(ts: pd.DatetimeIndex) -> pd.Timedelta:
    """The most common spacing of ``ts`` (sorted); :class:`InsufficientHistoryError` (a
    ``ValueError``) with fewer than two rows."""
    if len(ts) < 2:
        raise InsufficientHistoryError(
            f"cannot infer the period from {len(ts)} row(s); need at least 2",
            periods=len(ts), needed=2)
    diffs = pd.Series(np.diff(ts.asi8))
    return pd.Timedelta(int(diffs.mode().iloc[0]), unit="ns")


class ColumnNames:
    """Constraint: a sequence (not a string) of column names."""

    def accepts(self, value: object) -> bool:
        """True for a list/tuple of strings."""
        return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)

    def describe(self) -> str:
        """The constraint in words (for the error message)."""
        return "a sequence of column names"


def prepare_panels(
    X: pd.DataFrame,
    required: Sequence[str],
    *,
    min_obs: float | None = None,
    period: pd.Timedelta | Mapping[str, pd.Timedelta] | None = None,
    owner: str = "model",
) -> dict[str, SymbolPanel]:
    """Split a canonical realized frame into cleaned per-symbol panels.

    Parameters
    ----------
    X : long frame with ``ts``, ``symbol`` and the ``required`` columns.
    required : columns the model needs (``sq_ret_var`` is derived from ``close``).
    min_obs : drop rows whose ``n_obs`` is below this (when ``n_obs`` is present); None keeps all.
    period : the period length (or a mapping symbol -> length); None (or a symbol missing from the
        mapping) infers it from the rows.
    owner : the model's name, for error messages.
    """
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"X must be a pandas DataFrame; got {type(X).__name__}")
    raw_needed = [CLOSE if c == SQ_RET else c for c in required]
    missing = [c for c in (TS, SYMBOL, *raw_needed) if c not in X.columns]
    if missing:
        raise MissingInputsError(
            f"{owner} needs column(s) {missing} (required_inputs {list(required)}); "
            f"got columns {list(X.columns)}"
        )
    if len(X) == 0:
        raise DataError(f"{owner}: the data have no rows")
    ts_all = X[TS]
    if str(ts_all.dtype) != TS_DTYPE:
        ts_all = to_utc_ns(ts_all)
    keep_cols = [c for c in dict.fromkeys([*raw_needed, N_OBS]) if c in X.columns]
    frame = pd.DataFrame({TS: ts_all.array, SYMBOL: X[SYMBOL].astype("str").array})
    for c in keep_cols:
        frame[c] = pd.to_numeric(X[c], errors="raise").to_numpy(dtype="float64")
    frame[TS] = frame[TS].astype(TS_DTYPE)
    panels: dict[str, SymbolPanel] = {}
    for sym, g in frame.groupby(SYMBOL, sort=True):
        g = g.sort_values(TS, kind="stable")
        ts = pd.DatetimeIndex(g[TS])
        if ts.has_duplicates:
            dup = ts[ts.duplicated()][0]
            raise DataError(
                f"{owner}: symbol {sym} has duplicate ts {dup}; expected one row per period"
            )
        per = period.get(str(sym)) if isinstance(period, Mapping) else period
        per = per if per is not None else infer_period(ts)
        data = {c: g[c].to_numpy(dtype="float64") for c in keep_cols}
        if SQ_RET in required:
            close = data[CLOSE]
            r = np.full(len(close), np.nan)
            ok = (close[1:] > 0) & (close[:-1] > 0)
            r[1:][ok] = np.log(close[1:][ok] / close[:-1][ok])
            data[SQ_RET] = r * r
        mask = np.ones(len(ts), dtype=bool)
        for c in required:
            with np.errstate(invalid="ignore"):
                mask &= np.isfinite(data[c]) & (data[c] >= 0)
        if RV in data:
            with np.errstate(invalid="ignore"):
                mask &= data[RV] > 0
        if min_obs is not None and N_OBS in data:
            with np.errstate(invalid="ignore"):
                mask &= data[N_OBS] >= min_obs
        kept = {c: v[mask] for c, v in data.items()}
        panels[str(sym)] = SymbolPanel(str(sym), ts[mask], kept, per, int((~mask).sum()))
    return panels


def attach_columns(
    panels: dict[str, SymbolPanel], X: pd.DataFrame, columns: Sequence[str], owner: str
) -> dict[str, SymbolPanel]:
    """Add the ``columns`` of ``X`` (aligned on ``symbol`` and ``ts``) to each panel's data.

    Parameters
    ----------
    panels : cleaned panels from :func:`models.base.prepare_panels`.
    X : the long frame the panels came from; columns : names to attach (NaN allowed).
    owner : the model's name, for error messages.

    Returns
    -------
    New panels (same rows) whose ``data`` also holds ``columns`` as float arrays.
    """
    cols = list(columns)
    if not cols:
        return panels
    missing = [c for c in cols if c not in X.columns]
    if missing:
        raise MissingInputsError(
            f"{owner} needs exogenous column(s) {missing}; got columns {list(X.columns)}"
        )
    ts = X[TS] if str(X[TS].dtype) == TS_DTYPE else to_utc_ns(X[TS])
    frame = pd.DataFrame(
        {c: pd.to_numeric(X[c], errors="raise").to_numpy(dtype="float64") for c in cols}
    )
    frame.index = pd.MultiIndex.from_arrays(
        [X[SYMBOL].astype("str").to_numpy(), pd.DatetimeIndex(ts.array)]
    )
    out = {}
    for sym, p in panels.items():
        sub = frame.xs(sym, level=0) if sym in frame.index.get_level_values(0) else frame.iloc[:0]
        sub = sub[~sub.index.duplicated(keep="last")].reindex(p.ts)
        data = dict(p.data)
        for c in cols:
            data[c] = sub[c].to_numpy(dtype="float64")
        out[sym] = SymbolPanel(sym, p.ts, data, p.period, p.n_dropped)
    return out


def target_mean(x: np.ndarray, h: int) -> np.ndarray:
    """Forward mean ``(x[t+1] + ... + x[t+h]) / h`` per row; NaN where the window passes the end."""
    n = len(x)
    out = np.full(n, np.nan)
    if n > h:
        out[: n - h] = np.lib.stride_tricks.sliding_window_view(x[1:], h).mean(axis=1)
    return out


def backward_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Trailing mean ``(x[t-k+1] + ... + x[t]) / k`` per row; NaN for the first ``k-1`` rows."""
    n = len(x)
    out = np.full(n, np.nan)
    if n >= k:
        win = np.lib.stride_tricks.sliding_window_view(x, k)
        out[k - 1 :] = win.mean(axis=1)
    return out


def jsonable(v: Any) -> Any:
    """``v`` as JSON values: numpy scalars to Python, tuples and arrays to lists, mapping keys to
    str, a numpy Generator to None; anything else but None and str is a TypeError."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, (list, tuple, np.ndarray)):
        return [jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, np.random.Generator):
        return None
    if v is None or isinstance(v, str):
        return v
    raise TypeError(f"cannot store {type(v).__name__} value {v!r} as JSON")


def reason_series(
    index: pd.DatetimeIndex, reasons: Sequence[str | None] | None
) -> pd.Series | None:
    """Per-origin fallback reasons as a ``fallback_reason`` series on ``index`` (None: no reasons)."""
    if reasons is None:
        return None
    return pd.Series(np.asarray(reasons, dtype=object), index=index, name="fallback_reason")


# ---- the estimator base class -------------------------------------------------------------------
class BaseForecaster(BaseEstimator):
    """Base class of volatility forecasters (scikit-learn estimator contract; see module docs).

    Class attributes
    ----------------
    required_inputs : canonical columns the model needs besides ``ts`` and ``symbol``.
    model_id, model_version : written into every forecast.
    horizon_specific : True when ``fit`` estimates one model per horizon (``predict`` then only
        serves the fitted ``horizons``); False for horizon-free models (random walk, EWMA).
    state_from_data : False when ``predict`` uses nothing estimated from the fit data (random walk,
        EWMA), so each forecast's data cutoff is its origin.
    own_schedule : True when the model keeps its own walk-forward schedule wherever models are
        compared (GARCH re-estimated weekly, LightGBM retrained every 21 periods, their
        combinations): an evaluation, the training cycle and the promotion gate run it on
        ``WalkForward()`` (its own ``window``/``refit_every``) instead of the shared schedule.
    """

    required_inputs: ClassVar[tuple[str, ...]] = (RV,)
    model_id: ClassVar[str] = "base"
    model_version: ClassVar[str] = "1"
    horizon_specific: ClassVar[bool] = False
    state_from_data: ClassVar[bool] = True
    own_schedule: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {}

    # -- hooks for subclasses -----------------------------------------------------------------
    def min_history(self) -> int:
        """Rows an estimation window needs for the model's own estimate (fewer: the model can
        only fall back or leave the origin out). Default 1; GARCH needs ``min_fit_obs``."""
        return 1

    def _required_columns(self) -> tuple[str, ...]:
        """Columns needed with the current hyperparameters (default: ``required_inputs``)."""
        return tuple(self.required_inputs)

    def required_columns(self) -> tuple[str, ...]:
        """Canonical columns this forecaster needs with its current hyperparameters."""
        return self._required_columns()

    # -- serving without pickling (in the spirit of arch's ``fix(params)``) -----------------------
    def to_state(self) -> dict[str, Any]:
        """The learned state as a JSON-able dict: ``{"common": ...}`` here (symbols, periods, dropped
        rows, data cutoffs, fitted horizons); families that can be rebuilt without pickling add
        ``"state"`` (their per-symbol fitted parameters). :meth:`from_state` is the inverse."""
        check_is_fitted(self, "state_")
        common: dict[str, Any] = {
            "symbols": list(self.symbols_),
            "period_ns": {s: int(p.value) for s, p in self.period_.items()},
            "n_dropped": {s: int(n) for s, n in self.n_dropped_.items()},
            "data_cutoff_ns": {
                s: None if t is None else int(t.value) for s, t in self.data_cutoff_ts_.items()
            },
        }
        if getattr(self, "horizons_", None) is not None:
            common["horizons"] = [int(h) for h in self.horizons_]
        return {"common": common}

    def from_state(self, state: Mapping[str, Any]) -> BaseForecaster:
        """Set the learned attributes from :meth:`to_state`'s dict (on an estimator with the same
        hyperparameters); returns self, ready to ``predict``. The base class restores ``"common"``;
        families extend it with their ``"state"``."""
        common = state["common"]
        self.symbols_ = list(common["symbols"])
        self.period_ = {s: pd.Timedelta(int(v), unit="ns") for s, v in common["period_ns"].items()}
        self.n_dropped_ = {s: int(v) for s, v in common["n_dropped"].items()}
        self.data_cutoff_ts_ = {
            s: None if v is None else pd.Timestamp(int(v), unit="ns", tz="UTC")
            for s, v in common["data_cutoff_ns"].items()
        }
        if "horizons" in common:
            self.horizons_ = tuple(int(h) for h in common["horizons"])
        return self

    def _fit_panel(self, panel: SymbolPanel) -> Any:
        """Learn the state of one symbol."""
        raise NotImplementedError

    def _predict_panel(
        self, panel: SymbolPanel, state: Any, horizons: Sequence[int]
    ) -> tuple[np.ndarray, list[str | None] | None]:
        """Forecasts at every row of ``panel``: array (n_rows, n_horizons), NaN where the row lacks
        history, and optional per-row fallback reasons."""
        raise NotImplementedError

    def walk_forward_panel(
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
        """Out-of-sample forecasts at row positions ``origins`` of one symbol's ``panel``: array of
        shape (len(origins), len(horizons)), NaN where the model could not be fitted, and optional
        per-origin fallback reasons (the public entry to each model's walk-forward hook)."""
        return self._walk_forward_panel(panel, horizons, origins, window=window,
                                        window_type=window_type, refit_every=refit_every,
                                        purge=purge)

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
        """Out-of-sample forecasts at row positions ``origins`` of ``panel``.

        Default: refit a clone on the rows at or before each refit origin (minus any extra purge
        beyond the shortest horizon) and predict until the next refit. Returns an array of shape
        (len(origins), len(horizons)) with NaN where the model could not be fitted, and optional
        per-origin fallback reasons.
        """
        est = clone(self)
        names = est.get_params(deep=False)
        updates = {"window": window, "window_type": window_type, "refit_every": refit_every}
        est.set_params(**{k: v for k, v in updates.items() if k in names})
        if "horizons" in names:
            est.set_params(horizons=tuple(horizons))
        extra = 0 if purge is None else max(0, purge - min(horizons))
        frame = panel.to_frame()
        out = np.full((len(origins), len(horizons)), np.nan)
        reasons: list[str | None] = [None] * len(origins)
        any_reason = False
        for k0 in range(0, len(origins), refit_every):
            block = origins[k0 : k0 + refit_every]
            train_end = int(block[0]) - extra
            if train_end < 1:
                continue
            try:
                m = clone(est).fit(frame.iloc[: train_end + 1])
            except (ValueError, np.linalg.LinAlgError):
                continue
            sub = frame.iloc[: int(block[-1]) + 1]
            fc = m.predict(sub, horizons=horizons)[panel.symbol]
            wanted = panel.ts[block]
            got = fc.variance.reindex(wanted)
            out[k0 : k0 + len(block)] = got.to_numpy(dtype="float64")
            if fc.fallback_reason is not None:
                fb = fc.fallback_reason.reindex(wanted)
                for j, r in enumerate(fb.to_numpy(dtype=object)):
                    if isinstance(r, str):
                        reasons[k0 + j] = r
                        any_reason = True
        return out, reasons if any_reason else None

    # -- the contract -----------------------------------------------------------------------------
    def _validate_params(self) -> None:
        """Check every hyperparameter against ``_parameter_constraints`` (scikit-learn wording)."""
        params = self.get_params(deep=False)
        for name, constraints in self._parameter_constraints.items():
            validate_param(type(self).__name__, name, params[name], constraints)

    def _panels(
        self, X: pd.DataFrame, period: Mapping[str, pd.Timedelta] | None = None
    ) -> dict[str, SymbolPanel]:
        return prepare_panels(
            X,
            self._required_columns(),
            min_obs=getattr(self, "min_obs", None),
            period=period,
            owner=type(self).__name__,
        )

    def fit(self, X: pd.DataFrame, y: None = None) -> BaseForecaster:
        """Learn per-symbol state from a canonical realized frame.

        Parameters
        ----------
        X : long realized frame (``ts``, ``symbol``, ``rv_var``, ...), one or many symbols.
        y : ignored (targets are built from ``X``: forward averages of ``rv_var``).

        Returns
        -------
        self
        """
        self._validate_params()
        panels = self._panels(X)
        self.symbols_ = list(panels)
        self.period_ = {s: p.period for s, p in panels.items()}
        self.n_dropped_ = {s: p.n_dropped for s, p in panels.items()}
        self.data_cutoff_ts_ = {s: p.ts[-1] if len(p) else None for s, p in panels.items()}
        self.state_ = {s: self._fit_panel(p) for s, p in panels.items()}
        if self.horizon_specific:
            self.horizons_ = tuple(int(h) for h in self.horizons)
        return self

    def _resolve_horizons(self, horizons: Sequence[int] | None) -> tuple[int, ...]:
        return resolve_horizons(self, horizons)

    def predict(
        self, X: pd.DataFrame, horizons: Sequence[int] | None = None
    ) -> dict[str, VolForecast]:
        """Forecast from each row's ``ts`` as origin, using rows of ``X`` at or before it.

        Parameters
        ----------
        X : long realized frame with the history the model needs (at least 22 rows for HAR).
        horizons : horizons in periods; None = the fitted ``horizons`` (horizon-specific models).

        Returns
        -------
        dict symbol -> :class:`VolForecast`, one entry per symbol of ``X`` (sorted by symbol),
        also when ``X`` holds one symbol (:func:`models.forecast.only` unwraps that case).
        Rows without enough history are left out. ``data_cutoff_ts`` per origin is the later of the
        origin and the end of the fit data (coefficients estimated on later data are look-ahead).
        """
        check_is_fitted(self, "state_")
        hs = self._resolve_horizons(horizons)
        panels = self._panels(X, period=self.period_)
        out: dict[str, VolForecast] = {}
        for sym, panel in panels.items():
            if sym not in self.state_:
                raise ModelError(
                    f"{type(self).__name__} was fitted on symbols {self.symbols_}; got symbol {sym!r}"
                )
            var, reasons = self._predict_panel(panel, self.state_[sym], hs)
            fit_cut = self.data_cutoff_ts_[sym]
            cut = panel.ts
            if self.state_from_data:
                cut = panel.ts.where(panel.ts >= fit_cut, fit_cut)
            out[sym] = self._build(panel, var, reasons, hs, cut)
        return out

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
        """Out-of-sample forecasts at every origin in ``[start, end]``, re-estimating on the data
        available at each origin (at most every ``refit_every`` origins).

        Parameters
        ----------
        X : long realized frame, one or many symbols (the full history: rows before ``start`` are
            training data).
        horizons : horizons in periods.
        start, end : first and last origin ``ts`` (inclusive); None = the data's ends.
        schedule : the :class:`~models.schedule.WalkForward` to run on; its None fields (and
            ``schedule=None``) = the model's own. The keywords below override its fields.
        window : estimation window in observations (rolling) or the minimum history (expanding);
            None = the model's ``window`` (or 1000).
        window_type : "rolling" or "expanding"; None = the model's.
        refit_every : re-estimate every this many origins; None = the model's (or 1).
        purge : training rows must have targets ending at least ``purge`` periods before the
            origin; None = each horizon ``h`` (the minimum: targets complete at the origin).

        Returns
        -------
        dict symbol -> :class:`VolForecast` with ``data_cutoff_ts`` = each origin. Origins where
        some horizon could not be forecast (too little history) are left out.
        """
        self._validate_params()
        name = type(self).__name__
        validate_param(name, "horizons", list(horizons), [Horizons()])
        hs = tuple(sorted(int(h) for h in horizons))
        window, window_type, refit_every, purge = merge(
            schedule, window, window_type, refit_every, purge
        )
        window = getattr(self, "window", 1000) if window is None else window
        window_type = (
            getattr(self, "window_type", "rolling") if window_type is None else window_type
        )
        refit_every = getattr(self, "refit_every", 1) if refit_every is None else refit_every
        validate_param(name, "window", window, [Interval(int, 1, None)])
        validate_param(name, "window_type", window_type, [Options(("rolling", "expanding"))])
        validate_param(name, "refit_every", refit_every, [Interval(int, 1, None)])
        if purge is not None:
            validate_param(name, "purge", purge, [Interval(int, 1, None)])
            if purge < max(hs):
                raise ConfigError(
                    f"purge must be >= the longest horizon {max(hs)} so that no training target "
                    f"overlaps the origin; got purge={purge}"
                )
        lo = None if start is None else pd.Timestamp(start)
        hi = None if end is None else pd.Timestamp(end)
        lo = lo.tz_localize("UTC") if lo is not None and lo.tz is None else lo
        hi = hi.tz_localize("UTC") if hi is not None and hi.tz is None else hi
        out: dict[str, VolForecast] = {}
        for sym, panel in self._panels(X).items():
            sel = np.ones(len(panel), dtype=bool)
            if lo is not None:
                sel &= panel.ts >= lo
            if hi is not None:
                sel &= panel.ts <= hi
            origins = np.flatnonzero(sel)
            if len(origins) == 0:
                continue
            var, reasons = self._walk_forward_panel(
                panel,
                hs,
                origins,
                window=window,
                window_type=window_type,
                refit_every=refit_every,
                purge=purge,
            )
            sub = SymbolPanel(sym, panel.ts[origins], {}, panel.period, 0)
            try:
                out[sym] = self._build(sub, var, reasons, hs, sub.ts, data_ts=panel.ts)
            except InsufficientHistoryError:
                continue
        return out

    def _build(
        self,
        panel: SymbolPanel,
        var: np.ndarray,
        reasons: Sequence[str | None] | None,
        horizons: Sequence[int],
        cutoff: pd.DatetimeIndex,
        *,
        data_ts: pd.DatetimeIndex | None = None,
    ) -> VolForecast:
        """The forecast at the rows of ``panel`` with finite positive values; ``target_end`` is
        the h-th next row of ``data_ts`` (default ``panel.ts``), the data's own calendar."""
        ok = np.isfinite(var).all(axis=1) & (var > 0).all(axis=1)
        if not ok.any():
            raise InsufficientHistoryError(
                f"{type(self).__name__}: no origin of symbol {panel.symbol} has enough history "
                f"to forecast ({len(panel)} rows)",
                periods=len(panel),
            )
        idx = panel.ts[ok].rename("origin_ts")
        variance = pd.DataFrame(var[ok], index=idx, columns=list(horizons))
        rs = None if reasons is None else [r for r, k in zip(reasons, ok, strict=True) if k]
        return VolForecast(
            variance=variance,
            symbol=panel.symbol,
            horizon_unit=format_period(panel.period),
            annualization=default_annualization(panel.symbol, panel.period),
            model_id=self.model_id,
            model_version=self.model_version,
            data_cutoff_ts=pd.Series(pd.DatetimeIndex(cutoff)[ok], index=idx),
            fallback_reason=reason_series(idx, rs),
            target_end=row_target_end(
                panel.ts if data_ts is None else data_ts, idx, horizons, panel.symbol, panel.period
            ),
        )
