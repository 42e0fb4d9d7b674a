"""LightGBM realized-variance forecaster: pooled over symbols, direct multi-horizon, bias-corrected.

Target and back-transform
-------------------------
For horizon ``h`` the target at origin ``t`` is ``log`` of the mean ``rv_var`` over ``t+1..t+h``
(the cleaned rows, as in :mod:`models.har`). One booster is trained per horizon on the rows of all
symbols (a ``symbol`` categorical feature tells them apart). A log model predicts the conditional
median-ish log level, not the mean the QLIKE loss rewards, so the forecast is ``exp(pred) x c`` with
``c = mean(exp(residual))`` over a **time-ordered validation slice** (the last ``validation_size``
periods of each symbol before the origin, never seen by the booster that produced those residuals).
The same slice drives early stopping and gives the residual quantiles of the predictive
distribution (``quantile_method="residual"``: ``q_a = exp(pred + Q_a(residual))``) unless LightGBM
quantile boosters are asked for (``quantile_method="lgbm"``: ``objective="quantile"`` at each level,
rearranged so the quantiles increase with the level).

Sample layout at a refit origin ``T`` (positions per symbol; ``e`` = last row at or before ``T``,
``p`` = purge, default ``h``): validation rows ``(e - p - validation_size, e - p]``; training rows
``<= e - p - validation_size - h`` (so no training target overlaps a validation row); with
``window_type="rolling"`` only the last ``window`` rows. With ``refit_full=True`` the booster used
for forecasting is retrained on training + validation rows with the early-stopped number of trees
(``c`` and the quantiles stay those of the validation slice).

Features (per symbol, every one known at the row's close): ``lrv_d`` = log RV; ``lrv_w``,
``lrv_m``, ``lrv_q`` = mean log RV over 5, 22, 66 rows; ``lrv_dev`` = ``lrv_d - lrv_m``; when present
``ljump`` = log(RV / BV), ``rs_neg_share`` = RS- / RV, ``lrq_ratio`` = log(sqrt(RQ) / RV);
``mkt_lrv_d`` (cross-sectional mean of ``lrv_d`` at the same ``ts``) and ``rel_lrv_d``; calendar
terms of the target window (``target_dow`` of its first period, ``weekend_share``); ``symbol``;
and any ``feature_columns`` of ``X`` (context: funding, DVOL, intraday recency; NaN allowed, LightGBM
routes missing values). A subclass may add an *offset* (a baseline's log forecast, see
:mod:`models.combine`): the booster then learns the residual ``target - offset``.

Determinism: ``deterministic=True``, ``force_row_wise=True``, a fixed ``num_threads`` and seeds
derived from ``random_state``: the same data and seed give bit-identical forecasts.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import numbers
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from features.schema import BV, RQ, RS_NEG, RV, SYMBOL, TS
from models.base import (
    BaseForecaster,
    Boolean,
    Horizons,
    Interval,
    Options,
    SymbolPanel,
    backward_mean,
    jsonable,
    prepare_panels,
    reason_series,
    target_mean,
    validate_param,
)
from models.forecast import VolForecast, default_annualization, format_period, row_target_end
from models.schedule import WalkForward, merge

DEFAULT_QUANTILES = (0.005, 0.025, 0.975, 0.995)
QUARTER = 66


NATIVE_LOCK = threading.RLock()
"""Held around every call into LightGBM's native training and prediction: they are not safe to
run from several Python threads at once (shared Booster and predictor initialisation; a segfault
seen when Prefect maps evaluations of several symbols on threads). With one LightGBM thread per
booster the lock costs little: other models' work runs meanwhile."""


def native(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` holding :data:`NATIVE_LOCK`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with NATIVE_LOCK:
            return fn(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class HorizonModel:
    """The fitted state of one horizon.

    Attributes
    ----------
    booster : the LightGBM booster used for forecasts (log space, residual of the offset if any).
    bias_factor : ``c = mean(exp(validation residual))``; forecasts are ``exp(pred) x c``.
    resid_quantiles : level -> quantile of the validation log residuals.
    quantile_boosters : level -> LightGBM quantile booster (``quantile_method="lgbm"``), else empty.
    best_iteration : trees kept by early stopping.
    n_train, n_valid : rows used.
    valid_qlike : mean QLIKE of the bias-corrected forecasts on the validation slice.
    params : the LightGBM parameters used.
    """

    booster: lgb.Booster
    bias_factor: float
    resid_quantiles: Mapping[float, float]
    quantile_boosters: Mapping[float, lgb.Booster]
    best_iteration: int
    n_train: int
    n_valid: int
    valid_qlike: float
    params: Mapping[str, Any]


@dataclass(frozen=True)
class PooledDesign:
    """Features and targets of all symbols for one horizon, rows stacked symbol by symbol.

    Attributes
    ----------
    X : float array (n_rows, n_features) (NaN = missing); names : the feature names.
    y : log target (NaN where the target window passes the data's end).
    offset : log baseline forecast per row (zeros when the model has none; NaN where missing).
    symbol : symbol name per row; pos : row position within its symbol; ts : UTC ns per row.
    """

    X: np.ndarray
    names: list[str]
    y: np.ndarray
    offset: np.ndarray
    symbol: np.ndarray
    pos: np.ndarray
    ts: np.ndarray


def _qlike_mean(y_level: np.ndarray, f: np.ndarray) -> float:
    r = y_level / f
    return float(np.mean(r - np.log(r) - 1.0))


BOOSTER_CONSTRAINTS: dict[str, list] = {
    "n_estimators": [Interval(int, 1, None)],
    "learning_rate": [Interval(float, 0, None, "neither")],
    "num_leaves": [Interval(int, 2, None)],
    "max_depth": [Interval(int, -1, None)],
    "min_child_samples": [Interval(int, 1, None)],
    "subsample": [Interval(float, 0, 1, "right")],
    "subsample_freq": [Interval(int, 0, None)],
    "colsample_bytree": [Interval(float, 0, 1, "right")],
    "reg_lambda": [Interval(float, 0, None)],
    "early_stopping_rounds": [Interval(int, 1, None)],
}
"""Constraints of the LightGBM booster hyperparameters, shared by the volatility and correlation boosters."""


class LGBMVol(BaseForecaster):
    """LightGBM forecaster of the mean realized variance over ``t+1..t+h`` (see module docs).

    Parameters
    ----------
    horizons : horizons fitted (one booster each).
    feature_columns : extra numeric columns of ``X`` used as features (context; NaN allowed).
    window : rolling window in rows per symbol (``window_type="rolling"``); the minimum history for
        ``"expanding"``. None = no limit / 1 row.
    window_type : "expanding" (default) or "rolling".
    refit_every : in walk-forward, retrain every this many origins (trading days of the union
        calendar of the symbols).
    min_obs : rows with ``n_obs`` below this are dropped (as in every model); None keeps all.
    min_train : fewer training rows than this (pooled) -> no forecast at that refit.
    validation_size : periods per symbol in the time-ordered validation slice.
    n_estimators, learning_rate, num_leaves, max_depth, min_child_samples, subsample,
    subsample_freq, colsample_bytree, reg_lambda : LightGBM hyperparameters (``num_boost_round``,
        ``learning_rate``, ``num_leaves``, ``max_depth``, ``min_data_in_leaf``,
        ``bagging_fraction``, ``bagging_freq``, ``feature_fraction``, ``lambda_l2``).
    early_stopping_rounds : patience of early stopping on the validation slice (L2 on log target).
    refit_full : retrain on training + validation rows with the early-stopped tree count.
    bias_correction : multiply ``exp(pred)`` by ``c`` from validation residuals (else ``c = 1``).
    quantile_levels : levels of the predictive quantiles written into the forecasts; () = none.
    quantile_method : "residual" (validation residual quantiles) or "lgbm" (quantile boosters).
    param_grid : optional mapping hyperparameter -> candidate values; at each fit every combination
        is trained and the one with the lowest validation QLIKE is kept (time-ordered validation).
    offset_feature : a log-variance feature (``"lrv_w"``, ``"lrv_m"``, ``"lrv_q"``) subtracted from
        the target (and added back to the forecast): trees then learn a stationary log ratio and
        are not bound to the range of levels seen in training. None = model the log level.
    num_threads : LightGBM threads (fixed for determinism).
    random_state : int seed (or a ``numpy.random.Generator`` to draw one at fit).
    """

    model_id: ClassVar[str] = "lgbm"
    own_schedule: ClassVar[bool] = True
    horizon_specific: ClassVar[bool] = True
    required_inputs: ClassVar[tuple[str, ...]] = (RV,)
    _TUNABLE: ClassVar[tuple[str, ...]] = (
        "learning_rate",
        "num_leaves",
        "max_depth",
        "min_child_samples",
        "subsample",
        "colsample_bytree",
        "reg_lambda",
        "n_estimators",
    )
    _parameter_constraints: ClassVar[dict] = {
        **BOOSTER_CONSTRAINTS,
        "horizons": [Horizons()],
        "window": [Interval(int, 1, None), None],
        "window_type": [Options(("rolling", "expanding"))],
        "refit_every": [Interval(int, 1, None)],
        "min_obs": [Interval(float, 0, None), None],
        "min_train": [Interval(int, 10, None)],
        "validation_size": [Interval(int, 5, None)],
        "refit_full": [Boolean()],
        "bias_correction": [Boolean()],
        "quantile_method": [Options(("residual", "lgbm"))],
        "offset_feature": [Options(("lrv_d", "lrv_w", "lrv_m", "lrv_q")), None],
        "num_threads": [Interval(int, 1, None)],
    }

    def __init__(
        self,
        horizons: Sequence[int] = (1, 5),
        feature_columns: Sequence[str] = (),
        window: int | None = None,
        window_type: str = "expanding",
        refit_every: int = 21,
        min_obs: float | None = 250,
        min_train: int = 250,
        validation_size: int = 250,
        n_estimators: int = 1000,
        learning_rate: float = 0.03,
        num_leaves: int = 15,
        max_depth: int = -1,
        min_child_samples: int = 40,
        subsample: float = 0.8,
        subsample_freq: int = 1,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int = 50,
        refit_full: bool = True,
        bias_correction: bool = True,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILES,
        quantile_method: str = "residual",
        param_grid: Mapping[str, Sequence[Any]] | None = None,
        offset_feature: str | None = None,
        num_threads: int = 1,
        random_state: int | np.random.Generator | None = 0,
    ) -> None:
        self.horizons = horizons
        self.feature_columns = feature_columns
        self.window = window
        self.window_type = window_type
        self.refit_every = refit_every
        self.min_obs = min_obs
        self.min_train = min_train
        self.validation_size = validation_size
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.subsample_freq = subsample_freq
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.refit_full = refit_full
        self.bias_correction = bias_correction
        self.quantile_levels = quantile_levels
        self.quantile_method = quantile_method
        self.param_grid = param_grid
        self.offset_feature = offset_feature
        self.num_threads = num_threads
        self.random_state = random_state

    # ---- validation ---------------------------------------------------------------------------
    def _validate_params(self) -> None:
        super()._validate_params()
        name = type(self).__name__
        fc = self.feature_columns
        if (
            isinstance(fc, str)
            or not isinstance(fc, Sequence)
            or not all(isinstance(c, str) for c in fc)
        ):
            raise ValueError(
                f"The 'feature_columns' parameter of {name} must be a sequence of column names. "
                f"Got {fc!r} instead."
            )
        ql = self.quantile_levels
        ok = (
            isinstance(ql, Sequence)
            and not isinstance(ql, str)
            and all(isinstance(q, numbers.Real) and 0 < float(q) < 1 for q in ql)
            and len(set(ql)) == len(ql)
        )
        if not ok:
            raise ValueError(
                f"The 'quantile_levels' parameter of {name} must be a sequence of distinct levels "
                f"in (0, 1). Got {ql!r} instead."
            )
        rs = self.random_state
        if not (
            rs is None
            or isinstance(rs, np.random.Generator)
            or (isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and rs >= 0)
        ):
            raise ValueError(
                f"The 'random_state' parameter of {name} must be an int >= 0, a numpy Generator "
                f"or None. Got {rs!r} instead."
            )
        if self.param_grid is not None:
            if not isinstance(self.param_grid, Mapping) or not self.param_grid:
                raise ValueError(
                    f"The 'param_grid' parameter of {name} must be a non-empty mapping or None. "
                    f"Got {self.param_grid!r} instead."
                )
            for key, values in self.param_grid.items():
                if key not in self._TUNABLE:
                    raise ValueError(
                        f"param_grid key {key!r} of {name} is not tunable; expected one of "
                        f"{self._TUNABLE}"
                    )
                if isinstance(values, str) or not isinstance(values, Sequence) or not values:
                    raise ValueError(
                        f"param_grid[{key!r}] of {name} must be a non-empty sequence of values; "
                        f"got {values!r}"
                    )
                for v in values:
                    validate_param(name, key, v, self._parameter_constraints[key])

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return 0
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(0, 2**31 - 1))
        return int(rs)

    def _lgb_params(self, seed: int, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        p = {k: getattr(self, k) for k in self._TUNABLE}
        if overrides:
            p.update(overrides)
        return {
            "objective": "regression",
            "learning_rate": float(p["learning_rate"]),
            "num_leaves": int(p["num_leaves"]),
            "max_depth": int(p["max_depth"]),
            "min_data_in_leaf": int(p["min_child_samples"]),
            "bagging_fraction": float(p["subsample"]),
            "bagging_freq": int(self.subsample_freq),
            "feature_fraction": float(p["colsample_bytree"]),
            "lambda_l2": float(p["reg_lambda"]),
            "num_boost_round_": int(p["n_estimators"]),
            "num_threads": int(self.num_threads),
            "seed": seed,
            "bagging_seed": seed + 1,
            "feature_fraction_seed": seed + 2,
            "data_random_seed": seed + 3,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    # ---- design -------------------------------------------------------------------------------
    def _needed_columns(self) -> list[str]:
        return list(self.feature_columns)

    def required_columns(self) -> tuple[str, ...]:
        """The realized columns and the context ``feature_columns`` (which may hold NaN)."""
        return tuple(dict.fromkeys([*self._required_columns(), *self._needed_columns()]))

    def _panels_and_extra(
        self, X: pd.DataFrame
    ) -> tuple[dict[str, SymbolPanel], dict[str, dict[str, np.ndarray]]]:
        """Cleaned panels (rows as in every model) plus optional inputs and context per symbol."""
        panels = prepare_panels(
            X, self._required_columns(), min_obs=self.min_obs, owner=type(self).__name__
        )
        optional = [c for c in (BV, RQ, RS_NEG) if c in X.columns]
        wanted = self._needed_columns()
        missing = [c for c in wanted if c not in X.columns]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: feature_columns {missing} are not columns of X; got "
                f"columns {list(X.columns)}"
            )
        cols = list(dict.fromkeys([*optional, *wanted]))
        extra: dict[str, dict[str, np.ndarray]] = {}
        if cols:
            frame = X[[TS, SYMBOL, *cols]].copy()
            frame[TS] = pd.to_datetime(frame[TS], utc=True).astype("datetime64[ns, UTC]")
            frame[SYMBOL] = frame[SYMBOL].astype("str")
            for sym, g in frame.groupby(SYMBOL, sort=True):
                if str(sym) not in panels:
                    continue
                g = g.set_index(TS).reindex(panels[str(sym)].ts)
                extra[str(sym)] = {
                    c: pd.to_numeric(g[c], errors="raise").to_numpy(dtype="float64") for c in cols
                }
        else:
            extra = {s: {} for s in panels}
        return panels, extra

    def _offset(self, panel: SymbolPanel, h: int) -> np.ndarray | None:
        """Log baseline forecast per row of ``panel`` (the booster learns the residual), or None."""
        return None

    def _design(
        self,
        panels: Mapping[str, SymbolPanel],
        extra: Mapping[str, Mapping[str, np.ndarray]],
        h: int,
    ) -> PooledDesign:
        syms = list(panels)
        codes = {s: float(i) for i, s in enumerate(self._symbol_order(syms))}
        # cross-sectional mean of log RV at each ts (symbols present at that ts)
        all_ts = np.concatenate([panels[s].ts.asi8 for s in syms])
        all_l = np.concatenate([np.log(panels[s].col(RV)) for s in syms])
        mkt = pd.Series(all_l).groupby(all_ts).mean()
        blocks, ys, offs, sy, ps, tss = [], [], [], [], [], []
        names: list[str] | None = None
        opt_present = [c for c in (BV, RQ, RS_NEG) if any(c in extra[s] for s in syms)]
        for s in syms:
            p = panels[s]
            rv = p.col(RV)
            lrv = np.log(rv)
            cols: dict[str, np.ndarray] = {
                "lrv_d": lrv,
                "lrv_w": backward_mean(lrv, 5),
                "lrv_m": backward_mean(lrv, 22),
                "lrv_q": backward_mean(lrv, QUARTER),
            }
            cols["lrv_dev"] = lrv - cols["lrv_m"]
            ex = extra.get(s, {})
            with np.errstate(divide="ignore", invalid="ignore"):
                if BV in opt_present:
                    bv = ex.get(BV, np.full(len(p), np.nan))
                    cols["ljump"] = np.where(bv > 0, np.log(rv / np.where(bv > 0, bv, 1.0)), np.nan)
                if RS_NEG in opt_present:
                    cols["rs_neg_share"] = ex.get(RS_NEG, np.full(len(p), np.nan)) / rv
                if RQ in opt_present:
                    rq = ex.get(RQ, np.full(len(p), np.nan))
                    cols["lrq_ratio"] = np.where(
                        rq > 0, 0.5 * np.log(np.where(rq > 0, rq, 1.0)) - lrv, np.nan
                    )
            m = mkt.reindex(p.ts.asi8).to_numpy(dtype="float64")
            cols["mkt_lrv_d"] = m
            cols["rel_lrv_d"] = lrv - m
            cols["target_dow"] = p.ts.day_of_week.to_numpy().astype("float64")
            share = np.zeros(len(p))
            for k in range(h):
                share += (p.ts + k * p.period).day_of_week.to_numpy() >= 5
            cols["weekend_share"] = share / h
            for c in self.feature_columns:
                cols[c] = ex[c]
            off = self._offset(p, h)
            if off is not None:
                cols["base_lvar"] = off
            if self.offset_feature is not None:
                lvl = cols[self.offset_feature]
                off = lvl if off is None else off
                if self.offset_feature != "lrv_d":
                    cols["lrv_d_rel"] = lrv - lvl
            cols["symbol"] = np.full(len(p), codes[s])
            if names is None:
                names = list(cols)
            blocks.append(np.column_stack([cols[n] for n in names]))
            ys.append(np.log(target_mean(rv, h)))
            offs.append(np.zeros(len(p)) if off is None else off)
            sy.append(np.full(len(p), s, dtype=object))
            ps.append(np.arange(len(p)))
            tss.append(p.ts.asi8)
        return PooledDesign(
            X=np.vstack(blocks),
            names=list(names or []),
            y=np.concatenate(ys),
            offset=np.concatenate(offs),
            symbol=np.concatenate(sy),
            pos=np.concatenate(ps),
            ts=np.concatenate(tss),
        )

    def _symbol_order(self, syms: Sequence[str]) -> list[str]:
        known = getattr(self, "_symbol_codes", None)
        return list(known) if known is not None else sorted(syms)

    # ---- training at one cutoff ------------------------------------------------------------------
    def _masks(
        self, d: PooledDesign, ends: Mapping[str, int], h: int, purge: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Training and validation row masks for per-symbol last positions ``ends``."""
        end = np.array([ends.get(s, -1) for s in d.symbol], dtype=np.int64)
        ok = np.isfinite(d.y) & np.isfinite(d.offset)
        last = end - purge
        val = ok & (d.pos <= last) & (d.pos > last - self.validation_size)
        tr = ok & (d.pos <= last - self.validation_size - h)
        if self.window_type == "rolling" and self.window is not None:
            tr &= d.pos > end - self.window
        if self.window_type == "expanding" and self.window is not None:
            enough = end + 1 >= self.window
            tr &= enough
            val &= enough
        return tr, val

    @native
    def _train_one(
        self,
        d: PooledDesign,
        tr: np.ndarray,
        val: np.ndarray,
        seed: int,
        overrides: Mapping[str, Any] | None = None,
    ) -> HorizonModel | None:
        if tr.sum() < self.min_train or val.sum() < 5:
            return None
        params = self._lgb_params(seed, overrides)
        rounds = params.pop("num_boost_round_")
        cat = [d.names.index("symbol")]
        Xtr, ytr = d.X[tr], d.y[tr] - d.offset[tr]
        Xva, yva = d.X[val], d.y[val] - d.offset[val]
        dtr = lgb.Dataset(
            Xtr,
            ytr,
            feature_name=d.names,
            categorical_feature=cat,
            free_raw_data=False,
            params={"verbosity": -1},
        )
        dva = lgb.Dataset(
            Xva,
            yva,
            reference=dtr,
            feature_name=d.names,
            categorical_feature=cat,
            free_raw_data=False,
        )
        booster = lgb.train(
            params,
            dtr,
            num_boost_round=rounds,
            valid_sets=[dva],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        best = int(booster.best_iteration) or rounds
        resid = yva - booster.predict(Xva, num_iteration=best)
        c = float(np.mean(np.exp(resid))) if self.bias_correction else 1.0
        level_val = np.exp(d.offset[val] + yva + 0.0)  # realized mean RV of the validation rows
        f_val = np.exp(d.offset[val] + yva - resid) * c
        vq = _qlike_mean(level_val, f_val)
        rq = {float(q): float(np.quantile(resid, q)) for q in self.quantile_levels}
        qb: dict[float, lgb.Booster] = {}
        if self.quantile_method == "lgbm":
            for q in self.quantile_levels:
                qp = {**params, "objective": "quantile", "alpha": float(q)}
                qbst = lgb.train(
                    qp,
                    dtr,
                    num_boost_round=rounds,
                    valid_sets=[dva],
                    valid_names=["valid"],
                    callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
                )
                qb[float(q)] = qbst
        if self.refit_full:
            both = tr | val
            dall = lgb.Dataset(
                d.X[both],
                d.y[both] - d.offset[both],
                feature_name=d.names,
                categorical_feature=cat,
                free_raw_data=False,
                params={"verbosity": -1},
            )
            booster = lgb.train(params, dall, num_boost_round=best)
            if self.quantile_method == "lgbm":
                qb = {
                    q: lgb.train(
                        {**params, "objective": "quantile", "alpha": q},
                        dall,
                        num_boost_round=int(b.best_iteration) or rounds,
                    )
                    for q, b in qb.items()
                }
        return HorizonModel(
            booster=booster,
            bias_factor=c,
            resid_quantiles=rq,
            quantile_boosters=qb,
            best_iteration=best,
            n_train=int(tr.sum()),
            n_valid=int(val.sum()),
            valid_qlike=vq,
            params={**params, "num_boost_round": best},
        )

    def _train(
        self, d: PooledDesign, ends: Mapping[str, int], h: int, purge: int, seed: int
    ) -> HorizonModel | None:
        tr, val = self._masks(d, ends, h, purge)
        if self.param_grid is None:
            return self._train_one(d, tr, val, seed)
        keys = list(self.param_grid)
        best: HorizonModel | None = None
        for combo in itertools.product(*(self.param_grid[k] for k in keys)):
            m = self._train_one(d, tr, val, seed, dict(zip(keys, combo, strict=True)))
            if m is not None and (best is None or m.valid_qlike < best.valid_qlike):
                best = m
        return best

    @native
    def _apply(
        self, m: HorizonModel, d: PooledDesign, rows: np.ndarray
    ) -> tuple[np.ndarray, dict[float, np.ndarray]]:
        """Level forecasts and quantiles at ``rows`` of the design."""
        Xr = d.X[rows]
        off = d.offset[rows]
        lp = off + m.booster.predict(Xr)
        f = np.exp(lp) * m.bias_factor
        qs: dict[float, np.ndarray] = {}
        if m.quantile_boosters:
            levels = sorted(m.quantile_boosters)
            raw = np.column_stack([off + m.quantile_boosters[q].predict(Xr) for q in levels])
            raw = np.sort(raw, axis=1)  # rearrangement: quantiles increase with the level
            for j, q in enumerate(levels):
                qs[q] = np.exp(raw[:, j])
        else:
            for q, r in sorted(m.resid_quantiles.items()):
                qs[q] = np.exp(lp + r)
        return f, qs

    # ---- the contract ---------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: None = None) -> LGBMVol:
        """Train one booster per horizon on every row of ``X`` with a complete target.

        Parameters
        ----------
        X : long realized frame (``ts``, ``symbol``, ``rv_var``, optional ``bv_var``, ``rq_var2``,
            ``rs_neg_var``, ``n_obs`` and the ``feature_columns``), one or many symbols.
        y : ignored (targets are forward means of ``rv_var``).

        Returns
        -------
        self
        """
        self._validate_params()
        self._symbol_codes = None
        panels, extra = self._panels_and_extra(X)
        self._symbol_codes = sorted(panels)
        self.symbols_ = list(panels)
        self.period_ = {s: p.period for s, p in panels.items()}
        self.n_dropped_ = {s: p.n_dropped for s, p in panels.items()}
        self.data_cutoff_ts_ = {s: p.ts[-1] for s, p in panels.items()}
        self.horizons_ = tuple(sorted(int(h) for h in self.horizons))
        seed = self._seed()
        ends = {s: len(p) - 1 for s, p in panels.items()}
        models: dict[int, HorizonModel] = {}
        for h in self.horizons_:
            d = self._design(panels, extra, h)
            m = self._train(d, ends, h, h, seed)
            if m is None:
                raise ValueError(
                    f"{type(self).__name__}: too few rows to train horizon {h}: need at least "
                    f"{self.min_train} training rows plus {self.validation_size} validation "
                    f"periods per symbol; got {len(d.y)} rows over {len(panels)} symbol(s)"
                )
            models[h] = m
            self.feature_names_ = d.names
        self.models_ = models
        self.state_ = {s: None for s in panels}
        return self

    @property
    def bias_factor_(self) -> dict[int, float]:
        """The validation bias factor ``c`` per horizon."""
        check_is_fitted(self, "models_")
        return {h: m.bias_factor for h, m in self.models_.items()}

    @property
    def feature_importance_(self) -> pd.DataFrame:
        """Gain importance per feature (rows) and horizon (columns), each column summing to 1."""
        check_is_fitted(self, "models_")
        out = {}
        for h, m in self.models_.items():
            g = m.booster.feature_importance(importance_type="gain")
            tot = g.sum()
            out[h] = g / tot if tot > 0 else g
        return pd.DataFrame(out, index=pd.Index(self.feature_names_, name="feature"))

    @native
    def shap_values(self, X: pd.DataFrame, horizon: int | None = None) -> pd.DataFrame:
        """SHAP contributions (``pred_contrib=True``) of each feature to the log forecast.

        Parameters
        ----------
        X : frame as for :meth:`predict`.
        horizon : which booster; None = the shortest fitted horizon.

        Returns
        -------
        DataFrame indexed by (symbol, ts) with one column per feature plus ``bias`` (the expected
        value); each row sums to the booster's raw prediction (log space, excluding any offset and
        the bias factor).
        """
        check_is_fitted(self, "models_")
        h = self.horizons_[0] if horizon is None else int(horizon)
        if h not in self.models_:
            raise ValueError(f"horizon {h} was not fitted; fitted horizons {list(self.horizons_)}")
        panels, extra = self._panels_and_extra(X)
        self._check_symbols(panels)
        d = self._design(panels, extra, h)
        contrib = self.models_[h].booster.predict(d.X, pred_contrib=True)
        idx = pd.MultiIndex.from_arrays(
            [d.symbol.astype(str), pd.to_datetime(d.ts, utc=True)], names=[SYMBOL, TS]
        )
        return pd.DataFrame(contrib, index=idx, columns=[*d.names, "bias"])

    # ---- serving without pickling: boosters by reference, the rest as JSON -----------------------
    def feature_matrices(self, X: pd.DataFrame) -> dict[int, pd.DataFrame]:
        """Each fitted horizon's booster input built from ``X``: horizon -> frame (rows stacked
        symbol by symbol, columns ``feature_names_``); feature columns ``X`` lacks are NaN."""
        check_is_fitted(self, "models_")
        X = X.copy()
        for c in self.feature_columns:
            if c not in X.columns:
                X[c] = np.nan
        panels, extra = self._panels_and_extra(X)
        out = {}
        for h in sorted(self.models_):
            d = self._design(panels, extra, h)
            out[int(h)] = pd.DataFrame(d.X, columns=d.names)
        return out

    def boosters_to_log(
        self, member: str, X: pd.DataFrame, rows: int = 5
    ) -> list[tuple[int, float | None, str, Any, pd.DataFrame]]:
        """What the registry logs of this member: (horizon, quantile level or None, logged name
        "<member>-h<h>[-q<level>]" without dots, booster, input example = the last ``rows`` rows
        of its feature matrix built from ``X``), one per booster; :meth:`set_booster_uris` records
        where they were logged."""
        matrices = self.feature_matrices(X)
        out = []
        for h, m in sorted(self.models_.items()):
            if len(matrices[h]) == 0:
                raise ValueError(
                    f"member {member!r}: the input example leaves no row for the horizon-{h} "
                    "booster's example (all rows dropped by min_obs?)"
                )
            ex = matrices[h].iloc[-rows:].reset_index(drop=True)
            for level, booster in [(None, m.booster), *sorted(m.quantile_boosters.items())]:
                out.append((int(h), level, logged_booster_name(member, h, level), booster, ex))
        return out

    def set_booster_uris(self, logged: Sequence[tuple[int, float | None, str]]) -> None:
        """Record ``booster_uris_`` (horizon -> {"booster": {uri, sha256}, "quantiles": {level:
        {uri, sha256}}}) from (horizon, level, model URI) of every logged booster."""
        uris: dict[int, dict[str, Any]] = {}
        for h, level, uri in logged:
            m = self.models_[h]
            entry = uris.setdefault(int(h), {"booster": None, "quantiles": {}})
            booster = m.booster if level is None else m.quantile_boosters[level]
            ref = {"uri": uri, "sha256": booster_sha256(booster)}
            if level is None:
                entry["booster"] = ref
            else:
                entry["quantiles"][repr(float(level))] = ref
        self.booster_uris_ = uris

    def to_state(self) -> dict[str, Any]:
        """:meth:`BaseForecaster.to_state` plus ``"state"``: feature names, symbol codes and per
        horizon the bias factor, residual quantiles, training figures and LightGBM parameters,
        with the boosters by reference: ``booster_uris_`` (horizon -> {"booster": {uri, sha256},
        "quantiles": {level: {uri, sha256}}}) must name the fitted boosters (checked by SHA-256).
        """
        out = super().to_state()
        uris = getattr(self, "booster_uris_", None)
        if uris is None or set(uris) != set(self.models_):
            raise ValueError(
                f"LGBMVol member: booster_uris_ covers horizons "
                f"{None if uris is None else sorted(uris)}; expected {sorted(self.models_)}. The "
                "boosters are logged through mlflow.lightgbm by register_challenger (the codec's "
                "on_log hook) before the bundle is written"
            )
        horizons = {}
        for h, m in sorted(self.models_.items()):
            logged = uris[h]
            pairs = [("booster", m.booster, logged["booster"])] + [
                (f"quantile {q}", b, logged["quantiles"].get(repr(float(q))))
                for q, b in sorted(m.quantile_boosters.items())
            ]
            for what, booster, ref in pairs:
                if ref is None or ref["sha256"] != booster_sha256(booster):
                    raise ValueError(
                        f"LGBMVol member: the logged {what} booster of horizon {h} "
                        f"({None if ref is None else ref['uri']}) is not the fitted one (refit "
                        "after logging?); register the bundle again"
                    )
            horizons[str(h)] = {
                "booster_uri": logged["booster"]["uri"],
                "booster_sha256": logged["booster"]["sha256"],
                "quantile_boosters": {
                    repr(float(q)): logged["quantiles"][repr(float(q))]
                    for q in sorted(m.quantile_boosters)
                },
                "bias_factor": float(m.bias_factor),
                "resid_quantiles": [
                    [float(q), float(v)] for q, v in sorted(m.resid_quantiles.items())
                ],
                "best_iteration": int(m.best_iteration),
                "n_train": int(m.n_train),
                "n_valid": int(m.n_valid),
                "valid_qlike": float(m.valid_qlike),
                "params": jsonable(dict(m.params)),
            }
        out["state"] = {
            "feature_names": list(self.feature_names_),
            "symbol_codes": list(self._symbol_codes),
            "horizons": horizons,
        }
        return out

    def from_state(
        self,
        state: Mapping[str, Any],
        *,
        load_booster: Callable[[str], lgb.Booster] | None = None,
    ) -> LGBMVol:
        """The inverse of :meth:`to_state`: ``load_booster(uri)`` brings each booster back (the
        registry passes ``mlflow.lightgbm.load_model``); ``booster_uris_`` names them again, so
        a re-save refers to the same logged boosters. Returns self, ready to ``predict``."""
        if load_booster is None:
            raise ValueError(
                "LGBMVol.from_state needs load_booster=<uri -> lightgbm.Booster>: the state "
                "refers to its boosters by URI"
            )
        super().from_state(state)
        doc = state["state"]
        models = {}
        for h, s in doc["horizons"].items():
            models[int(h)] = HorizonModel(
                booster=load_booster(s["booster_uri"]),
                bias_factor=float(s["bias_factor"]),
                resid_quantiles={float(q): float(v) for q, v in s["resid_quantiles"]},
                quantile_boosters={
                    float(q): load_booster(ref["uri"]) for q, ref in s["quantile_boosters"].items()
                },
                best_iteration=int(s["best_iteration"]),
                n_train=int(s["n_train"]),
                n_valid=int(s["n_valid"]),
                valid_qlike=float(s["valid_qlike"]),
                params=dict(s["params"]),
            )
        self.models_ = models
        self.feature_names_ = list(doc["feature_names"])
        self._symbol_codes = list(doc["symbol_codes"])
        self.booster_uris_ = {
            h: {
                "booster": {
                    "uri": doc["horizons"][str(h)]["booster_uri"],
                    "sha256": booster_sha256(m.booster),
                },
                "quantiles": {
                    repr(float(q)): {
                        "uri": doc["horizons"][str(h)]["quantile_boosters"][repr(float(q))]["uri"],
                        "sha256": booster_sha256(b),
                    }
                    for q, b in m.quantile_boosters.items()
                },
            }
            for h, m in models.items()
        }
        self.state_ = {sym: None for sym in self.symbols_}
        return self

    def _check_symbols(self, panels: Mapping[str, SymbolPanel]) -> None:
        unknown = [s for s in panels if s not in self.symbols_]
        if unknown:
            raise ValueError(
                f"{type(self).__name__} was fitted on symbols {self.symbols_}; got symbol(s) {unknown}"
            )

    def predict(
        self, X: pd.DataFrame, horizons: Sequence[int] | None = None
    ) -> dict[str, VolForecast]:
        """Forecast from every row of ``X`` (its features use rows at or before it).

        Parameters
        ----------
        X : frame as for :meth:`fit` (history for the 66-row features; missing history gives NaN
            features, which LightGBM routes like any missing value).
        horizons : a subset of the fitted horizons; None = all.

        Returns
        -------
        dict symbol -> :class:`VolForecast` (every symbol of ``X``, sorted; also for one symbol),
        with the quantiles of ``quantile_levels``; ``data_cutoff_ts`` is the later of the origin and the fit data's end.
        """
        check_is_fitted(self, "models_")
        hs = self._resolve_horizons(horizons)
        panels, extra = self._panels_and_extra(X)
        self._check_symbols(panels)
        res = {s: (np.full((len(p), len(hs)), np.nan), {}) for s, p in panels.items()}
        for c, h in enumerate(hs):
            d = self._design(panels, extra, h)
            rows = np.flatnonzero(np.isfinite(d.offset))
            f, qs = self._apply(self.models_[h], d, rows)
            for s in panels:
                sel = d.symbol[rows] == s
                pos = d.pos[rows][sel]
                res[s][0][pos, c] = f[sel]
                for q, v in qs.items():
                    res[s][1].setdefault(q, np.full((len(panels[s]), len(hs)), np.nan))[pos, c] = v[
                        sel
                    ]
        cut_end = max(self.data_cutoff_ts_.values())
        out = {}
        for s, p in panels.items():
            cut = p.ts.where(p.ts >= cut_end, cut_end)
            out[s] = self._build_q(p.symbol, p.ts, p.period, res[s][0], res[s][1], hs, cut)
        return out

    def _build_q(
        self,
        symbol: str,
        ts: pd.DatetimeIndex,
        period: pd.Timedelta,
        var: np.ndarray,
        qs: Mapping[float, np.ndarray],
        hs: Sequence[int],
        cutoff: pd.DatetimeIndex,
        *,
        data_ts: pd.DatetimeIndex | None = None,
    ) -> VolForecast:
        ok = np.isfinite(var).all(axis=1) & (var > 0).all(axis=1)
        for v in qs.values():
            ok &= np.isfinite(v).all(axis=1)
        if not ok.any():
            raise ValueError(
                f"{type(self).__name__}: no origin of symbol {symbol} could be forecast "
                f"({len(ts)} rows)"
            )
        idx = ts[ok].rename("origin_ts")
        cols = list(hs)
        quant = {q: pd.DataFrame(v[ok], index=idx, columns=cols) for q, v in qs.items()} or None
        return VolForecast(
            variance=pd.DataFrame(var[ok], index=idx, columns=cols),
            symbol=symbol,
            horizon_unit=format_period(period),
            annualization=default_annualization(symbol, period),
            model_id=self.model_id,
            model_version=self.model_version,
            data_cutoff_ts=pd.Series(pd.DatetimeIndex(cutoff)[ok], index=idx),
            quantiles=quant,
            fallback_reason=reason_series(idx, None),
            target_end=row_target_end(ts if data_ts is None else data_ts, idx, hs, symbol, period),
        )

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
        """Out-of-sample forecasts, pooled over symbols, retraining every ``refit_every`` origins.

        At each refit date ``T`` (every ``refit_every``-th origin of the union calendar of the
        symbols in ``[start, end]``), boosters are trained on the rows whose targets are complete
        at ``T`` (minus the purge) and forecast every origin in ``[T, next refit)`` from that
        origin's own features. Arguments as in :meth:`BaseForecaster.walk_forward`; None = the
        model's own ``window``, ``window_type`` and ``refit_every``. After the call,
        ``walk_forward_importance_`` holds the mean gain share of each feature over the refits.

        Returns
        -------
        dict symbol -> :class:`VolForecast` (with quantiles) whose ``data_cutoff_ts`` is each origin.
        """
        window, window_type, refit_every, purge = merge(
            schedule, window, window_type, refit_every, purge
        )
        self._validate_params()
        name = type(self).__name__
        validate_param(name, "horizons", list(horizons), [Horizons()])
        hs = tuple(sorted(int(h) for h in horizons))
        est = clone(self)
        if window is not None:
            validate_param(name, "window", window, [Interval(int, 1, None)])
            est.window = window
        if window_type is not None:
            validate_param(name, "window_type", window_type, [Options(("rolling", "expanding"))])
            est.window_type = window_type
        if refit_every is not None:
            validate_param(name, "refit_every", refit_every, [Interval(int, 1, None)])
            est.refit_every = refit_every
        if purge is not None:
            validate_param(name, "purge", purge, [Interval(int, 1, None)])
            if purge < max(hs):
                raise ValueError(
                    f"purge must be >= the longest horizon {max(hs)} so that no training target "
                    f"overlaps the origin; got purge={purge}"
                )
        est._validate_params()
        est._symbol_codes = None
        panels, extra = est._panels_and_extra(X)
        est._symbol_codes = sorted(panels)
        lo = utc_or_none(start)
        hi = utc_or_none(end)
        origin_ts = np.unique(np.concatenate([p.ts.asi8 for p in panels.values()]))
        sel = np.ones(len(origin_ts), dtype=bool)
        if lo is not None:
            sel &= origin_ts >= lo.value
        if hi is not None:
            sel &= origin_ts <= hi.value
        origin_ts = origin_ts[sel]
        if len(origin_ts) == 0:
            return {}
        refits = origin_ts[:: est.refit_every]
        seed = est._seed()
        var = {s: np.full((len(p), len(hs)), np.nan) for s, p in panels.items()}
        qv: dict[str, dict[float, np.ndarray]] = {s: {} for s in panels}
        gains: list[pd.Series] = []
        for c, h in enumerate(hs):
            d = est._design(panels, extra, h)
            pg = h if purge is None else purge
            for k, T in enumerate(refits):
                T_next = refits[k + 1] if k + 1 < len(refits) else origin_ts[-1] + 1
                ends = {
                    s: int(np.searchsorted(p.ts.asi8, T, side="right")) - 1
                    for s, p in panels.items()
                }
                m = est._train(d, ends, h, pg, seed)
                if m is None:
                    continue
                g = m.booster.feature_importance(importance_type="gain")
                if g.sum() > 0:
                    gains.append(pd.Series(g / g.sum(), index=d.names, name=h))
                rows = np.flatnonzero((d.ts >= T) & (d.ts < T_next) & np.isfinite(d.offset))
                if rows.size == 0:
                    continue
                f, qs = est._apply(m, d, rows)
                for s in panels:
                    sm = d.symbol[rows] == s
                    pos = d.pos[rows][sm]
                    var[s][pos, c] = f[sm]
                    for q, v in qs.items():
                        qv[s].setdefault(q, np.full((len(panels[s]), len(hs)), np.nan))[pos, c] = v[
                            sm
                        ]
        if gains:
            self.walk_forward_importance_ = (
                pd.concat(gains, axis=1).T.groupby(level=0).mean().T.rename_axis("feature")
            )
        out: dict[str, VolForecast] = {}
        for s, p in panels.items():
            in_range = np.isin(p.ts.asi8, origin_ts)
            if not in_range.any():
                continue
            idx = np.flatnonzero(in_range)
            sub_q = {q: v[idx] for q, v in qv[s].items()}
            if not (np.isfinite(var[s][idx]).all(axis=1)).any():
                continue
            out[s] = est._build_q(
                s, p.ts[idx], p.period, var[s][idx], sub_q, hs, p.ts[idx], data_ts=p.ts
            )
        return out


def logged_booster_name(member: str, h: int, level: float | None = None) -> str:
    """MLflow logged-model name of a booster: "<member>-h<h>[-q<level>]" (MLflow forbids dots)."""
    name = f"{member}-h{h}" if level is None else f"{member}-h{h}-q{level:g}"
    return name.replace(".", "p")


def booster_sha256(booster: lgb.Booster) -> str:
    """SHA-256 (hex) of a booster's model text: identifies the fitted booster a URI must hold."""
    return hashlib.sha256(booster.model_to_string().encode()).hexdigest()


def utc_or_none(value: pd.Timestamp | str | None) -> pd.Timestamp | None:
    """``value`` as a UTC timestamp (naive values are UTC); None stays None."""
    if value is None:
        return None
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
