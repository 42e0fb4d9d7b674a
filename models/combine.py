"""Combinations of forecasters: a boosted log-HAR and a trailing-QLIKE-weighted forecast pool.

:class:`HARBoostVol`
    LightGBM on the residuals of a calendar-adjusted log-HAR: the baseline's own walk-forward
    forecast at each row (estimated on data up to that row only) is the booster's offset, so the
    booster learns ``log(target) - log(baseline)`` from the HAR state, cross-asset, calendar and
    context features (intraday recency, funding, basis, DVOL...). With few trees and strong
    regularisation it stays at the baseline where nothing is learnable. Everything else (bias
    factor from validation residuals, quantiles, walk-forward) is :class:`models.lgbm.LGBMVol`'s.
:class:`QLIKEWeightedVol`
    A weighted mean of member forecasts whose weights at origin ``t`` are
    ``w_i ∝ (mean QLIKE_i over the last lookback origins whose targets are known at t)^-power``
    (``power=0``: equal weights). No look-ahead: an origin ``s`` enters the trailing window at
    ``t`` only when its target window ended (``pos(s) + h <= pos(t)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from features.schema import RV
from models.base import (
    BaseForecaster,
    Horizons,
    Interval,
    SymbolPanel,
    prepare_panels,
    target_mean,
    validate_param,
)
from models.forecast import VolForecast, default_annualization, format_period, row_target_end
from models.har import HARBase, LogHARDoWVol
from models.lgbm import DEFAULT_QUANTILES, LGBMVol, utc_or_none
from models.schedule import WalkForward, merge


class HARBoostVol(LGBMVol):
    """LightGBM on a log-HAR baseline's residuals (see module docs).

    Parameters
    ----------
    base : the baseline, a HAR-family forecaster (its ``window``, ``window_type`` and
        ``insanity_filter`` are used; it is re-estimated at every row on the data before it);
        None = ``LogHARDoWVol(window=500, window_type="expanding")``.
    Other parameters : as :class:`models.lgbm.LGBMVol` (defaults tuned to small corrections:
        shallow trees, slow learning rate, large leaves).
    """

    model_id: ClassVar[str] = "har_boost"

    def __init__(
        self,
        base: HARBase | None = None,
        horizons: Sequence[int] = (1, 5),
        feature_columns: Sequence[str] = (),
        window: int | None = None,
        window_type: str = "expanding",
        refit_every: int = 21,
        min_obs: float | None = 250,
        min_train: int = 250,
        validation_size: int = 250,
        n_estimators: int = 500,
        learning_rate: float = 0.02,
        num_leaves: int = 7,
        max_depth: int = 3,
        min_child_samples: int = 100,
        subsample: float = 0.8,
        subsample_freq: int = 1,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 5.0,
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
        self.base = base
        super().__init__(
            horizons=horizons,
            feature_columns=feature_columns,
            window=window,
            window_type=window_type,
            refit_every=refit_every,
            min_obs=min_obs,
            min_train=min_train,
            validation_size=validation_size,
            n_estimators=n_estimators,
            learning_rate=learning_rate,
            num_leaves=num_leaves,
            max_depth=max_depth,
            min_child_samples=min_child_samples,
            subsample=subsample,
            subsample_freq=subsample_freq,
            colsample_bytree=colsample_bytree,
            reg_lambda=reg_lambda,
            early_stopping_rounds=early_stopping_rounds,
            refit_full=refit_full,
            bias_correction=bias_correction,
            quantile_levels=quantile_levels,
            quantile_method=quantile_method,
            param_grid=param_grid,
            offset_feature=offset_feature,
            num_threads=num_threads,
            random_state=random_state,
        )

    def _base(self) -> HARBase:
        return LogHARDoWVol(window=500, window_type="expanding") if self.base is None else self.base

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.base is not None and not isinstance(self.base, HARBase):
            raise ValueError(
                f"The 'base' parameter of {type(self).__name__} must be a HAR-family forecaster "
                f"(models.har) or None. Got {type(self.base).__name__} instead."
            )

    def _required_columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.required_inputs, *self._base()._required_columns()]))

    def _offset(self, panel: SymbolPanel, h: int) -> np.ndarray:
        """Log of the baseline's walk-forward forecast at every row (NaN without enough history)."""
        base = self._base()
        _, Xd, y, y_level = base.design(panel, h)
        f, _ = base.walk_forward_horizon(
            Xd,
            y,
            y_level,
            np.arange(len(panel)),
            h=h,
            window=base.window,
            window_type=base.window_type,
            refit_every=1,
            purge=h,
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(f > 0, np.log(np.where(f > 0, f, 1.0)), np.nan)


class QLIKEWeightedVol(BaseForecaster):
    """Forecast combination weighted by trailing QLIKE (see module docs).

    Parameters
    ----------
    members : sequence of (name, forecaster) pairs.
    horizons : horizons fitted.
    lookback : trailing origins whose losses set the weights.
    power : weights ∝ mean QLIKE^-power (0 = equal weights; large = pick the best).
    min_history : fewer known trailing losses than this -> equal weights.
    min_obs : rows with ``n_obs`` below this are dropped (as in every model; set on the members).
    """

    model_id: ClassVar[str] = "qlike_combo"
    own_schedule: ClassVar[bool] = True
    horizon_specific: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict] = {
        "horizons": [Horizons()],
        "lookback": [Interval(int, 5, None)],
        "power": [Interval(float, 0, None)],
        "min_history": [Interval(int, 1, None)],
        "min_obs": [Interval(float, 0, None), None],
    }

    def __init__(
        self,
        members: Sequence[tuple[str, BaseForecaster]] = (),
        horizons: Sequence[int] = (1, 5),
        lookback: int = 250,
        power: float = 1.0,
        min_history: int = 20,
        min_obs: float | None = 250,
    ) -> None:
        self.members = members
        self.horizons = horizons
        self.lookback = lookback
        self.power = power
        self.min_history = min_history
        self.min_obs = min_obs

    def _validate_params(self) -> None:
        super()._validate_params()
        m = self.members
        ok = (
            isinstance(m, Sequence)
            and len(m) >= 1
            and all(
                isinstance(x, tuple)
                and len(x) == 2
                and isinstance(x[0], str)
                and isinstance(x[1], BaseForecaster)
                for x in m
            )
        )
        if not ok:
            raise ValueError(
                f"The 'members' parameter of {type(self).__name__} must be a non-empty sequence of "
                f"(name, BaseForecaster) pairs. Got {m!r} instead."
            )
        names = [x[0] for x in m]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique; got {names}")

    def _member(self, est: BaseForecaster) -> BaseForecaster:
        e = clone(est)
        params = e.get_params(deep=False)
        if "min_obs" in params:
            e.set_params(min_obs=self.min_obs)
        if "horizons" in params:
            e.set_params(horizons=tuple(sorted(int(h) for h in self.horizons)))
        return e

    def _weights(
        self,
        F: np.ndarray,
        y: np.ndarray,
        pos: np.ndarray,
        h: int,
        at: np.ndarray | None = None,
    ) -> np.ndarray:
        """Weights from trailing losses of origins at panel rows ``pos``.

        ``F`` (n_origins, n_members) holds member forecasts and ``y`` the realized targets at the
        same origins (NaN when unknown). Weights are computed for the panel rows ``at`` (default
        ``pos``): origin ``j`` informs row ``i`` only when ``pos[j] + h <= i``.

        Returns
        -------
        array (len(at), n_members), rows summing to 1.
        """
        at = pos if at is None else np.asarray(at)
        k = F.shape[1]
        n = len(at)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = y[:, None] / F
            L = r - np.log(r) - 1.0
        known = np.isfinite(L).all(axis=1)
        Lz = np.where(known[:, None], L, 0.0)
        cL = np.vstack([np.zeros((1, k)), np.cumsum(Lz, axis=0)])
        cn = np.concatenate([[0], np.cumsum(known)])
        hi = np.searchsorted(pos, at - h, side="right")  # origins with pos <= i - h
        lo = np.searchsorted(pos, at - h - self.lookback, side="right")
        cnt = cn[hi] - cn[lo]
        mean = (cL[hi] - cL[lo]) / np.maximum(cnt, 1)[:, None]
        w = np.full((n, k), 1.0 / k)
        ok = cnt >= self.min_history
        if ok.any():
            raw = np.maximum(mean[ok], 1e-12) ** (-float(self.power))
            w[ok] = raw / raw.sum(axis=1, keepdims=True)
        return w

    def _combine(
        self,
        fcs: Mapping[str, VolForecast],
        panel: SymbolPanel,
        hs: Sequence[int],
        weights: Mapping[int, np.ndarray] | None,
    ) -> tuple[pd.DatetimeIndex, np.ndarray, dict[float, np.ndarray], dict[int, np.ndarray]]:
        names = list(fcs)
        common = fcs[names[0]].variance.index
        for n in names[1:]:
            common = common.intersection(fcs[n].variance.index)
        pos = np.searchsorted(panel.ts.asi8, common.asi8)
        rv = panel.col(RV)
        var = np.full((len(common), len(hs)), np.nan)
        levels = None
        for f in fcs.values():
            lv = set(f.quantiles) if f.quantiles else set()
            levels = lv if levels is None else levels & lv
        qs = {q: np.zeros((len(common), len(hs))) for q in sorted(levels or ())}
        used: dict[int, np.ndarray] = {}
        for c, h in enumerate(hs):
            F = np.column_stack([fcs[n].variance[h].reindex(common).to_numpy() for n in names])
            if weights is None:
                y = target_mean(rv, h)[pos]
                w = self._weights(F, y, pos, h)
            else:
                w = np.broadcast_to(weights[h], F.shape)
            used[h] = w
            var[:, c] = (w * F).sum(axis=1)
            for q in qs:
                Q = np.column_stack(
                    [fcs[n].quantiles[q][h].reindex(common).to_numpy() for n in names]
                )
                qs[q][:, c] = (w * Q).sum(axis=1)
        return common, var, qs, used

    def fit(self, X: pd.DataFrame, y: None = None) -> QLIKEWeightedVol:
        """Fit every member on ``X`` and set the weights from the members' walk-forward losses over
        the last ``lookback`` origins of ``X`` whose targets are known.

        Returns
        -------
        self
        """
        self._validate_params()
        hs = tuple(sorted(int(h) for h in self.horizons))
        panels = prepare_panels(X, [RV], min_obs=self.min_obs, owner=type(self).__name__)
        self.members_ = {n: self._member(e).fit(X) for n, e in self.members}
        tail = {s: p.ts[max(0, len(p) - self.lookback - max(hs) - 1)] for s, p in panels.items()}
        start = min(tail.values())
        self.weights_: dict[str, dict[int, np.ndarray]] = {}
        wf = {n: self._member(e).walk_forward(X, hs, start=start) for n, e in self.members}
        for s, p in panels.items():
            fcs = {n: f[s] for n, f in wf.items() if s in f}
            if len(fcs) < len(self.members):
                raise ValueError(
                    f"{type(self).__name__}: member(s) {[n for n in wf if s not in wf[n]]} could not "
                    f"forecast symbol {s} over the last {self.lookback} origins; give more history"
                )
            names = list(fcs)
            common = fcs[names[0]].variance.index
            for n in names[1:]:
                common = common.intersection(fcs[n].variance.index)
            pos = np.searchsorted(p.ts.asi8, common.asi8)
            self.weights_[s] = {}
            for h in hs:
                F = np.column_stack([fcs[n].variance[h].reindex(common).to_numpy() for n in names])
                yk = target_mean(p.col(RV), h)[pos]
                # the weights in force after the data's last row (every trailing target known)
                w = self._weights(F, yk, pos, h, at=np.array([len(p) - 1]))
                self.weights_[s][h] = w[0]
        self.symbols_ = list(panels)
        self.period_ = {s: p.period for s, p in panels.items()}
        self.data_cutoff_ts_ = {s: p.ts[-1] for s, p in panels.items()}
        self.horizons_ = hs
        self.state_ = {s: None for s in panels}
        return self

    def predict(
        self, X: pd.DataFrame, horizons: Sequence[int] | None = None
    ) -> dict[str, VolForecast]:
        """Weighted mean of the fitted members' forecasts with the weights learned at fit.

        Returns
        -------
        dict symbol -> :class:`VolForecast` (every symbol of ``X``, sorted; also for one symbol).
        """
        check_is_fitted(self, "members_")
        hs = self._resolve_horizons(horizons)
        panels = prepare_panels(X, [RV], min_obs=self.min_obs, owner=type(self).__name__)
        preds = {}
        for n, m in self.members_.items():
            preds[n] = m.predict(X, horizons=hs)
        out = {}
        for s, p in panels.items():
            if s not in self.weights_:
                raise ValueError(
                    f"{type(self).__name__} was fitted on symbols {self.symbols_}; got symbol {s!r}"
                )
            fcs = {n: preds[n][s] for n in preds}
            w = {h: self.weights_[s][h] for h in hs}
            common, var, qs, _ = self._combine(fcs, p, hs, w)
            cut_end = self.data_cutoff_ts_[s]
            cut = common.where(common >= cut_end, cut_end)
            out[s] = self._vf(s, p, common, var, qs, hs, cut)
        return out

    def _vf(
        self,
        s: str,
        p: SymbolPanel,
        idx: pd.DatetimeIndex,
        var: np.ndarray,
        qs: Mapping[float, np.ndarray],
        hs: Sequence[int],
        cut: pd.DatetimeIndex,
    ) -> VolForecast:
        ix = idx.rename("origin_ts")
        return VolForecast(
            variance=pd.DataFrame(var, index=ix, columns=list(hs)),
            symbol=s,
            horizon_unit=format_period(p.period),
            annualization=default_annualization(s, p.period),
            model_id=self.model_id,
            model_version=self.model_version,
            data_cutoff_ts=pd.Series(pd.DatetimeIndex(cut), index=ix),
            quantiles={q: pd.DataFrame(v, index=ix, columns=list(hs)) for q, v in qs.items()}
            or None,
            target_end=row_target_end(p.ts, ix, hs, s, p.period),
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
        """Members' out-of-sample forecasts (each with its own settings unless given here),
        combined at each origin with weights from the trailing losses known at that origin.

        The members start ``lookback + max(h)`` periods before ``start`` so that the weights at
        ``start`` already have a full trailing window.

        Returns
        -------
        dict symbol -> :class:`VolForecast` with ``data_cutoff_ts`` = each origin.
        """
        window, window_type, refit_every, purge = merge(
            schedule, window, window_type, refit_every, purge
        )
        self._validate_params()
        validate_param(type(self).__name__, "horizons", list(horizons), [Horizons()])
        hs = tuple(sorted(int(h) for h in horizons))
        panels = prepare_panels(X, [RV], min_obs=self.min_obs, owner=type(self).__name__)
        lo = utc_or_none(start)
        hi = utc_or_none(end)
        early = None
        if lo is not None:
            starts = []
            for p in panels.values():
                i = int(np.searchsorted(p.ts.asi8, lo.value))
                starts.append(p.ts[max(0, i - self.lookback - max(hs) - 1)])
            early = min(starts)
        kw = {
            k: v
            for k, v in (
                ("window", window),
                ("window_type", window_type),
                ("refit_every", refit_every),
                ("purge", purge),
            )
            if v is not None
        }
        wf = {
            n: self._member(e).walk_forward(X, hs, start=early, end=end, **kw)
            for n, e in self.members
        }
        out: dict[str, VolForecast] = {}
        for s, p in panels.items():
            fcs = {n: f[s] for n, f in wf.items() if s in f}
            if len(fcs) < len(self.members):
                continue
            common, var, qs, _ = self._combine(fcs, p, hs, None)
            keep = np.ones(len(common), dtype=bool)
            if lo is not None:
                keep &= common >= lo
            if hi is not None:
                keep &= common <= hi
            if not keep.any():
                continue
            idx = common[keep]
            out[s] = self._vf(s, p, idx, var[keep], {q: v[keep] for q, v in qs.items()}, hs, idx)
        return out
