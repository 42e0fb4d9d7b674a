"""Gradient-boosted correlation forecaster: LightGBM on the Fisher z of realized pair correlations.

Target
------
For horizon ``h`` the target at origin ``t`` of the pair ``(i, j)`` is
``z = atanh(corr(sum_{k=1..H} C_{t+k}))`` (clipped to +-0.999 before ``atanh``), ``C`` the
per-period covariance: the panel's realized covariances (intraday data), or, for a panel of
returns only, the outer products ``r r'``. ``H = max(h, min_target_periods)``; with outer products
the correlation of one period is +-1, so the default ``min_target_periods`` is 1 with realized
covariances and 22 without (the forecast of a short horizon is then the correlation expected over
the next 22 periods). One booster per horizon is trained on the rows of **all pairs** (pooled).

Features (pair ``(i, j)`` at row ``t``, every one from rows ``<= t``)
-------------------------------------------------------------------
- ``z_lag{L}``: Fisher z of the realized correlation of ``sum_{k=0..L-1} C_{t-k}`` for each
  ``L`` in ``lags`` (1, 5, 22 periods); ``z_long``: the same over ``long_window`` periods (NaN
  until the window is complete; LightGBM routes missing values);
- ``z_ewma``: Fisher z of the pair's EWMA correlation of returns (``Q_t = lam Q_{t-1} + (1 - lam)
  r_t r_t'``, bias-corrected from the panel's first row, so it is causal);
- both legs' volatility, ordered by size (``_hi``, ``_lo``: the features do not depend on the
  order of the pair): ``lrv`` = log mean ``C_ii`` over the last 5 periods (realized), ``lfv`` =
  log EWMA (``lam``) forecast of ``C_ii`` (forecast), ``shock`` = log(``C_ii,t`` / forecast at
  ``t-1``);
- market-wide (the same for every pair at ``t``): ``mkt_z_lag{L}`` (mean over pairs of the
  shortest and middle lag), ``mkt_z_ewma``, ``mkt_lfv`` (mean log variance forecast),
  ``mkt_shock`` (log of the mean ``C_ii,t`` over the mean forecast), ``mkt_disp`` (log
  cross-sectional std of the returns at ``t`` over the mean forecast volatility, 5-period mean:
  dispersion), ``mkt_ret`` (equal-weight return over its forecast volatility: stress).

Offset
------
``offset="linear"`` (default): a pooled least-squares line of the target on
``[1, z_lag{L}..., z_ewma]`` (training rows) is the baseline and the booster learns the residual;
with early stopping on a time-ordered validation slice the model falls back to that linear
(HAR-like) baseline when the trees do not help. ``offset=None``: the booster models ``z`` itself.

Layout at a fit (positions ``0..T-1`` with a target): the validation rows are the last
``validation_size`` positions; training rows end ``H`` positions before the first validation row
(no training target overlaps a validation row). Early stopping on the validation L2; with
``refit_full`` the forecasting booster (and the offset line) is refitted on training + validation
rows with the early-stopped number of trees.

Output: ``tanh`` of the predicted z, assembled into matrices; the base class symmetrizes, sets the
unit diagonal and projects a non-PSD matrix to the nearest correlation matrix (Higham 2002,
:func:`features.covariance.nearest_correlation`); ``CorrForecast.repaired`` flags them and
:func:`repaired_share` reports their share.

Determinism: ``deterministic=True``, ``force_row_wise=True``, ``num_threads`` fixed (1) and seeds
derived from ``random_state``: the same data and seed give bit-identical forecasts.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
from scipy.signal import lfilter

from models.base import Boolean, Horizons, Interval, Options
from models.corr import FISHER_CLIP, BaseCorrForecaster, CorrPanel, cov_to_corr
from models.corr_forecast import CorrForecast
from models.lgbm import BOOSTER_CONSTRAINTS, native

__all__ = ["LGBMCorr", "LGBMCorrHorizon", "LGBMCorrState", "make_lgbm_corr", "repaired_share"]

_VAR_FLOOR = 1e-16
_Z_MAX = float(np.arctanh(FISHER_CLIP))


def _z(c: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(c, -FISHER_CLIP, FISHER_CLIP))


def _ewma_causal(x: np.ndarray, lam: float) -> np.ndarray:
    """Bias-corrected EWMA along axis 0: ``sum_k lam^k x_{t-k} / sum_k lam^k`` over rows <= t."""
    num = lfilter([1.0], [1.0, -lam], x, axis=0)
    den = lfilter([1.0], [1.0, -lam], np.ones(len(x)))
    shape = (len(x),) + (1,) * (x.ndim - 1)
    return num / den.reshape(shape)


def _trailing_sum(cs: np.ndarray, window: int) -> np.ndarray:
    """Sum over the last ``window`` rows from cumulative sums ``cs`` (length T + 1); NaN before."""
    t = len(cs) - 1
    out = np.full((t,) + cs.shape[1:], np.nan)
    if t >= window:
        out[window - 1 :] = cs[window:] - cs[: t + 1 - window]
    return out


@dataclass(frozen=True)
class LGBMCorrHorizon:
    """The fitted state of one horizon.

    Attributes
    ----------
    booster : LightGBM booster on the Fisher z (residual of the offset line when there is one).
    offset_coef : coefficients of the offset line on ``[1, z_lag..., z_ewma]`` (zeros: no offset).
    target_periods : ``H``, the periods the target correlation aggregates.
    best_iteration : trees kept by early stopping.
    n_train, n_valid : pooled rows (pairs x periods) used.
    valid_rmse_z : RMSE of the validation forecasts in z units; valid_rmse_z_offset : the same for
        the offset line alone (how much the trees add).
    """

    booster: lgb.Booster
    offset_coef: np.ndarray
    target_periods: int
    best_iteration: int
    n_train: int
    n_valid: int
    valid_rmse_z: float
    valid_rmse_z_offset: float


@dataclass(frozen=True)
class LGBMCorrState:
    """Fitted state: one :class:`LGBMCorrHorizon` per horizon and the feature names."""

    horizons: Mapping[int, LGBMCorrHorizon]
    feature_names: tuple[str, ...]
    realized: bool


class LGBMCorr(BaseCorrForecaster):
    """LightGBM on the Fisher z of realized pairwise correlation, pooled across pairs (module docs).

    Parameters
    ----------
    horizons : horizons fitted (one booster each).
    lags : windows (periods) of the lagged realized correlations (default 1, 5, 22).
    long_window : window of the long realized correlation feature ``z_long`` (periods).
    lam : EWMA decay of the pair correlation and the variance forecasts (0.94).
    min_target_periods : the target aggregates ``max(h, this)`` periods; None = 1 with realized
        covariances, 22 with returns only.
    offset : "linear" (boost the residual of a pooled linear baseline) or None.
    validation_size : periods in the time-ordered validation slice (early stopping).
    min_train : fewer pooled training rows than this -> fit raises ``ValueError``.
    n_estimators : maximum boosting rounds; learning_rate, num_leaves, max_depth,
    min_child_samples (``min_data_in_leaf``), subsample (``bagging_fraction``), subsample_freq,
    colsample_bytree (``feature_fraction``), reg_lambda (``lambda_l2``) : LightGBM
        hyperparameters.
    early_stopping_rounds : patience on the validation L2.
    refit_full : refit on training + validation rows with the early-stopped tree count.
    min_eigenvalue : a matrix repaired to the nearest correlation matrix lies on the PSD boundary
        (singular: no Stein loss, no GMV weights), so it is blended ``(1 - d) C + d I`` with
        ``d = min_eigenvalue``: still a correlation matrix, smallest eigenvalue >= ``d``. 0 keeps
        the plain Higham projection.
    num_threads : LightGBM threads (fixed for determinism; keep small on shared machines).
    random_state : int seed >= 0 (or a ``numpy.random.Generator`` to draw one at fit).
    stress_quantile : quantile of the equal-weight absolute move defining the stressed days.

    Attributes after fit: ``state_`` (:class:`LGBMCorrState`), ``symbols_``, ``stressed_``.
    """

    model_id: ClassVar[str] = "lgbm_corr"
    horizon_specific: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict] = {
        **BOOSTER_CONSTRAINTS,
        "horizons": [Horizons()],
        "lags": [Horizons()],
        "long_window": [Interval(int, 2, None)],
        "lam": [Interval(float, 0, 1, closed="neither")],
        "min_target_periods": [Interval(int, 1, None), None],
        "offset": [Options(("linear",)), None],
        "validation_size": [Interval(int, 5, None)],
        "min_train": [Interval(int, 10, None)],
        "refit_full": [Boolean()],
        "min_eigenvalue": [Interval(float, 0, 1, closed="left")],
        "num_threads": [Interval(int, 1, None)],
        "stress_quantile": [Interval(float, 0, 1, closed="neither")],
    }

    def __init__(
        self,
        horizons: Sequence[int] = (1, 5),
        lags: Sequence[int] = (1, 5, 22),
        long_window: int = 66,
        lam: float = 0.94,
        min_target_periods: int | None = None,
        offset: str | None = "linear",
        validation_size: int = 40,
        min_train: int = 100,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 7,
        max_depth: int = -1,
        min_child_samples: int = 50,
        subsample: float = 0.8,
        subsample_freq: int = 1,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int = 30,
        refit_full: bool = True,
        min_eigenvalue: float = 0.01,
        num_threads: int = 1,
        random_state: int | np.random.Generator | None = 0,
        stress_quantile: float = 0.95,
    ) -> None:
        self.horizons = horizons
        self.lags = lags
        self.long_window = long_window
        self.lam = lam
        self.min_target_periods = min_target_periods
        self.offset = offset
        self.validation_size = validation_size
        self.min_train = min_train
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
        self.min_eigenvalue = min_eigenvalue
        self.num_threads = num_threads
        self.random_state = random_state
        self.stress_quantile = stress_quantile

    # ---- validation and settings ------------------------------------------------------------------
    def _validate_params(self) -> None:
        super()._validate_params()
        rs = self.random_state
        if not (
            rs is None
            or isinstance(rs, np.random.Generator)
            or (isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and rs >= 0)
        ):
            raise ValueError(
                f"The 'random_state' parameter of {type(self).__name__} must be an int >= 0, a "
                f"numpy Generator or None. Got {rs!r} instead."
            )

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return 0
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(0, 2**31 - 1))
        return int(rs)

    def _target_periods(self, h: int, realized: bool) -> int:
        m = self.min_target_periods
        if m is None:
            m = 1 if realized else 22
        return max(int(h), int(m))

    def _min_fit_rows(self, n: int) -> int:
        hs = [int(h) for h in self.horizons]
        m = self.min_target_periods or 1
        return max(self.lags) + max(max(hs), m) + 2 * int(self.validation_size)

    def _lgb_params(self, seed: int) -> dict[str, Any]:
        return {
            "objective": "regression",
            "learning_rate": float(self.learning_rate),
            "num_leaves": int(self.num_leaves),
            "max_depth": int(self.max_depth),
            "min_data_in_leaf": int(self.min_child_samples),
            "bagging_fraction": float(self.subsample),
            "bagging_freq": int(self.subsample_freq),
            "feature_fraction": float(self.colsample_bytree),
            "lambda_l2": float(self.reg_lambda),
            "num_threads": int(self.num_threads),
            "seed": seed,
            "bagging_seed": seed + 1,
            "feature_fraction_seed": seed + 2,
            "data_random_seed": seed + 3,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    # ---- design -----------------------------------------------------------------------------------
    @staticmethod
    def _cov_proxy(panel: CorrPanel) -> np.ndarray:
        if panel.realized_cov is not None:
            return panel.realized_cov
        r = panel.returns
        return r[:, :, None] * r[:, None, :]

    def _features(self, panel: CorrPanel) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Features of every row and pair: array (n_periods, n_pairs, n_features), the names, and
        the rows whose lag features are complete (bool, n_periods)."""
        c = self._cov_proxy(panel)
        r = panel.returns
        t_len, n = r.shape
        iu, ju = np.triu_indices(n, 1)
        cs = np.concatenate([np.zeros((1, n, n)), np.cumsum(c, axis=0)])
        cols: list[np.ndarray] = []
        names: list[str] = []
        lag_z = {}
        for lag in sorted(int(x) for x in self.lags):
            agg = _trailing_sum(cs, lag)
            with np.errstate(invalid="ignore"):
                z = _z(cov_to_corr(agg)[:, iu, ju])
            lag_z[lag] = z
            cols.append(z)
            names.append(f"z_lag{lag}")
        agg = _trailing_sum(cs, int(self.long_window))
        with np.errstate(invalid="ignore"):
            cols.append(_z(cov_to_corr(agg)[:, iu, ju]))
        names.append("z_long")
        lam = float(self.lam)
        q = _ewma_causal((r[:, :, None] * r[:, None, :]).reshape(t_len, n * n), lam)
        q = q.reshape(t_len, n, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            z_ewma = _z(cov_to_corr(q)[:, iu, ju])
        cols.append(z_ewma)
        names.append("z_ewma")
        # legs' volatility
        var = np.maximum(np.diagonal(c, axis1=1, axis2=2), _VAR_FLOOR)  # (T, n)
        vcs = np.vstack([np.zeros((1, n)), np.cumsum(var, axis=0)])
        lrv = np.log(np.maximum(_trailing_sum(vcs, 5) / 5.0, _VAR_FLOOR))
        fv = np.maximum(_ewma_causal(var, lam), _VAR_FLOOR)
        lfv = np.log(fv)
        prev_fv = np.vstack([fv[:1], fv[:-1]])
        shock = np.log(var / prev_fv)
        for label, leg in (("lrv", lrv), ("lfv", lfv), ("shock", shock)):
            a, b = leg[:, iu], leg[:, ju]
            cols += [np.fmax(a, b), np.fmin(a, b)]
            names += [f"{label}_hi", f"{label}_lo"]
        # market-wide
        n_pairs = len(iu)
        sorted_lags = sorted(lag_z)
        mkt = {}
        for lag in sorted_lags[: min(2, len(sorted_lags))]:
            mkt[f"mkt_z_lag{lag}"] = lag_z[lag].mean(axis=1)
        mkt["mkt_z_ewma"] = z_ewma.mean(axis=1)
        mkt["mkt_lfv"] = lfv.mean(axis=1)
        mkt["mkt_shock"] = np.log(var.mean(axis=1) / prev_fv.mean(axis=1))
        mvol = np.sqrt(fv.mean(axis=1))
        disp = np.log(np.maximum(r.std(axis=1), 1e-12) / mvol)
        dcs = np.concatenate([[0.0], np.cumsum(disp)])
        mkt["mkt_disp"] = _trailing_sum(dcs, 5) / 5.0
        mkt["mkt_ret"] = r.mean(axis=1) / np.sqrt(prev_fv.mean(axis=1))
        for k, v in mkt.items():
            cols.append(np.repeat(v[:, None], n_pairs, axis=1))
            names.append(k)
        x = np.stack(cols, axis=2)
        need = [names.index(f"z_lag{lag}") for lag in sorted_lags] + [names.index("z_ewma")]
        ok = np.isfinite(x[:, :, need]).all(axis=(1, 2)) & np.isfinite(
            x[:, :, names.index("mkt_disp")]
        ).all(axis=1)
        return x, names, ok

    def _offset_design(self, x: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """``[1, z_lag..., z_ewma]`` of feature rows (..., n_features) -> (..., k)."""
        idx = [i for i, nm in enumerate(names) if nm.startswith("z_lag") or nm == "z_ewma"]
        return np.concatenate([np.ones(x.shape[:-1] + (1,)), x[..., idx]], axis=-1)

    def _offset_fit(self, d: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.offset is None:
            return np.zeros(d.shape[-1])
        return np.linalg.lstsq(d, y, rcond=None)[0]

    # ---- hooks ------------------------------------------------------------------------------------
    @native
    def _fit_panel(self, panel: CorrPanel) -> LGBMCorrState:
        x, names, ok = self._features(panel)
        c = self._cov_proxy(panel)
        t_len, n = panel.returns.shape
        iu, ju = np.triu_indices(n, 1)
        cs = np.concatenate([np.zeros((1, n, n)), np.cumsum(c, axis=0)])
        seed = self._seed()
        params = self._lgb_params(seed)
        realized = panel.realized_cov is not None
        out: dict[int, LGBMCorrHorizon] = {}
        for h in sorted(int(h) for h in self.horizons):
            big_h = self._target_periods(h, realized)
            y = np.full((t_len, len(iu)), np.nan)
            if t_len > big_h:
                agg = cs[1 + big_h : t_len + 1] - cs[1 : t_len + 1 - big_h]
                with np.errstate(invalid="ignore"):
                    y[: t_len - big_h] = _z(cov_to_corr(agg)[:, iu, ju])
            usable = np.flatnonzero(ok & np.isfinite(y).all(axis=1))
            v = int(self.validation_size)
            if len(usable) < v + 1:
                raise ValueError(
                    f"LGBMCorr needs more history for horizon {h}: {len(usable)} periods with "
                    f"complete features and a target; validation alone takes {v}"
                )
            val_pos = usable[-v:]
            tr_pos = usable[usable <= val_pos[0] - big_h]
            if len(tr_pos) * len(iu) < self.min_train:
                raise ValueError(
                    f"LGBMCorr needs at least {self.min_train} pooled training rows for horizon "
                    f"{h}; got {len(tr_pos) * len(iu)} ({len(tr_pos)} periods x {len(iu)} pairs)"
                )
            xtr, ytr = x[tr_pos].reshape(-1, len(names)), y[tr_pos].reshape(-1)
            xva, yva = x[val_pos].reshape(-1, len(names)), y[val_pos].reshape(-1)
            dtr_o, dva_o = self._offset_design(xtr, names), self._offset_design(xva, names)
            coef = self._offset_fit(dtr_o, ytr)
            otr, ova = dtr_o @ coef, dva_o @ coef
            dtr = lgb.Dataset(
                xtr,
                ytr - otr,
                feature_name=list(names),
                free_raw_data=False,
                params={"verbosity": -1},
            )
            dva = lgb.Dataset(
                xva, yva - ova, reference=dtr, feature_name=list(names), free_raw_data=False
            )
            booster = lgb.train(
                params,
                dtr,
                num_boost_round=int(self.n_estimators),
                valid_sets=[dva],
                valid_names=["valid"],
                callbacks=[lgb.early_stopping(int(self.early_stopping_rounds), verbose=False)],
            )
            best = int(booster.best_iteration) or int(self.n_estimators)
            pva = ova + booster.predict(xva, num_iteration=best)
            rmse = float(np.sqrt(np.mean((yva - pva) ** 2)))
            rmse_off = float(np.sqrt(np.mean((yva - ova) ** 2)))
            if self.refit_full:
                both = np.concatenate([tr_pos, val_pos])
                xall, yall = x[both].reshape(-1, len(names)), y[both].reshape(-1)
                dall_o = self._offset_design(xall, names)
                coef = self._offset_fit(dall_o, yall)
                dall = lgb.Dataset(
                    xall,
                    yall - dall_o @ coef,
                    feature_name=list(names),
                    free_raw_data=False,
                    params={"verbosity": -1},
                )
                booster = lgb.train(params, dall, num_boost_round=best)
            out[h] = LGBMCorrHorizon(
                booster=booster,
                offset_coef=coef,
                target_periods=big_h,
                best_iteration=best,
                n_train=int(len(tr_pos) * len(iu)),
                n_valid=int(len(val_pos) * len(iu)),
                valid_rmse_z=rmse,
                valid_rmse_z_offset=rmse_off,
            )
        return LGBMCorrState(horizons=out, feature_names=tuple(names), realized=realized)

    @native
    def _path(self, panel, state: LGBMCorrState, horizons, rows):
        x, names, ok = self._features(panel)
        n = panel.n_symbols
        iu, ju = np.triu_indices(n, 1)
        xr = x[rows]
        good = ok[rows]
        out = np.full((len(rows), len(horizons), n, n), np.nan)
        if not good.any():
            return out
        flat = xr[good].reshape(-1, len(names))
        d_off = self._offset_design(flat, names)
        for k, h in enumerate(horizons):
            hm = state.horizons[int(h)]
            z = d_off @ hm.offset_coef
            if hm.booster.num_trees() > 0:
                z = z + hm.booster.predict(
                    flat, num_iteration=hm.best_iteration if not self.refit_full else None
                )
            z = np.clip(z, -_Z_MAX, _Z_MAX)  # the targets' range
            cval = np.tanh(z).reshape(int(good.sum()), len(iu))
            m = np.repeat(np.eye(n)[None], int(good.sum()), axis=0)
            m[:, iu, ju] = cval
            m[:, ju, iu] = cval
            out[np.flatnonzero(good), k] = m
        return out

    def predict(
        self,
        X: object,
        horizons: Sequence[int] | None = None,
        *,
        origins: Sequence[Any] | None = None,
    ) -> CorrForecast:
        """Forecast from each row of ``X`` as origin (see
        :meth:`models.corr.BaseCorrForecaster.predict`); repaired matrices are moved off the PSD
        boundary by ``min_eigenvalue`` (class docs) and stay flagged in ``repaired``."""
        fc = super().predict(X, horizons, origins=origins)
        d = float(self.min_eigenvalue)
        if fc.repaired is None or not fc.repaired.any() or d == 0.0:
            return fc
        corr = fc.corr.copy()
        corr[fc.repaired] = (1.0 - d) * corr[fc.repaired] + d * np.eye(fc.n_symbols)
        return dataclasses.replace(fc, corr=corr)


def repaired_share(forecast: CorrForecast) -> float:
    """Share of the forecast's matrices (origins x horizons) projected to the nearest correlation
    matrix (0.0 when the forecast records no repair)."""
    if forecast.repaired is None or forecast.repaired.size == 0:
        return 0.0
    return float(np.mean(forecast.repaired))


def make_lgbm_corr(
    horizons: Sequence[int] = (1, 5), random_state: int = 0, num_threads: int = 1, **params: Any
) -> LGBMCorr:
    """The catalog factory: an unfitted :class:`LGBMCorr` with the given horizons, seed, threads
    and any other hyperparameters (``LGBMCorr`` keyword arguments)."""
    return LGBMCorr(
        horizons=tuple(horizons), random_state=random_state, num_threads=num_threads, **params
    )
