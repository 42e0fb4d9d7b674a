"""Diurnal HAR with exogenous regressors, and LightGBM on the diurnal HAR's residual.

:class:`DiurnalHARXVol`
    :class:`models.diurnal.DiurnalHARVol` (profile, adjusted series, HAR on the adjusted scale,
    forecast times the target bucket's shape) with extra regressors ``exog``: columns of ``X``
    whose value at row ``t`` is known at ``t``'s close (e.g. the share of the hour's variance in its
    last 15 minutes, the realized range relative to RV, a volume surprise, the signed return). They
    enter the OLS as they are, next to the trailing means of the (log) adjusted RV; with
    ``log=True`` the model is

        log a_{t+1..t+h} = c + sum_k b_k mean(log a over the last lag_k rows) + g' z_t + e

    so scale-free exogenous terms (log ratios, shares) act multiplicatively on the adjusted
    variance. Rows with a missing exogenous value are left out of the fit and get no forecast.
    ``exog=()`` gives exactly :class:`DiurnalHARVol`.
:class:`DiurnalBoostVol`
    :class:`models.lgbm.LGBMVol` whose offset is the log of a diurnal HAR's (or HAR-X's) own
    walk-forward forecast at every row (re-estimated on the rows before it only), so the trees learn
    ``log(target) - log(diurnal HAR forecast)`` from ``feature_columns``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import pandas as pd

from features.schema import RV
from models.base import (
    Boolean,
    ColumnNames,
    Horizons,
    Interval,
    MissingInputsError,
    Options,
    SymbolPanel,
    attach_columns,
    prepare_panels,
)
from models.diurnal import DiurnalHARVol, LagHAR
from models.lgbm import LGBMVol, PooledDesign


class _LagHARX(LagHAR):
    """:class:`models.diurnal.LagHAR` plus the panel columns ``exog`` as extra regressors."""

    model_id: ClassVar[str] = "lag_har_x"

    def __init__(
        self,
        lags: Sequence[int] = (1, 24, 168),
        log: bool = False,
        exog: Sequence[str] = (),
        horizons: Sequence[int] = (1,),
        window: int = 720,
        window_type: str = "expanding",
        refit_every: int = 1,
        min_obs: float | None = None,
        insanity_filter: bool = True,
    ) -> None:
        self.exog = exog
        super().__init__(
            lags=lags,
            log=log,
            horizons=horizons,
            window=window,
            window_type=window_type,
            refit_every=refit_every,
            min_obs=min_obs,
            insanity_filter=insanity_filter,
        )

    def _regressors(self, panel: SymbolPanel) -> tuple[list[str], np.ndarray]:
        names, Z = super()._regressors(panel)
        if not self.exog:
            return names, Z
        E = np.column_stack([panel.col(c) for c in self.exog])
        return [*names, *self.exog], np.column_stack([Z, E])


class DiurnalHARXVol(DiurnalHARVol):
    """Diurnal HAR with exogenous regressors (see module docs).

    Parameters
    ----------
    exog : columns of ``X`` used as extra regressors (value at row ``t`` known at ``t``).
    Other parameters : as :class:`models.diurnal.DiurnalHARVol`.
    """

    model_id: ClassVar[str] = "diurnal_har_x"
    _parameter_constraints: ClassVar[dict] = {
        "horizons": [Horizons()],
        "lags": [Horizons()],
        "log": [Boolean()],
        "exog": [ColumnNames()],
        "profile_stat": [Options(("mean", "log"))],
        "profile_window": [Interval(int, 1, None), None],
        "min_profile_obs": [Interval(int, 1, None)],
        "window": [Interval(int, 1, None)],
        "window_type": [Options(("rolling", "expanding"))],
        "refit_every": [Interval(int, 1, None)],
        "min_obs": [Interval(float, 0, None), None],
        "insanity_filter": [Boolean()],
    }

    def __init__(
        self,
        horizons: Sequence[int] = (1,),
        lags: Sequence[int] = (1, 24, 168),
        log: bool = False,
        exog: Sequence[str] = (),
        profile_stat: str = "mean",
        profile_window: int | None = None,
        min_profile_obs: int = 5,
        window: int = 720,
        window_type: str = "expanding",
        refit_every: int = 1,
        min_obs: float | None = None,
        insanity_filter: bool = True,
    ) -> None:
        self.exog = exog
        super().__init__(
            horizons=horizons,
            lags=lags,
            log=log,
            profile_stat=profile_stat,
            profile_window=profile_window,
            min_profile_obs=min_profile_obs,
            window=window,
            window_type=window_type,
            refit_every=refit_every,
            min_obs=min_obs,
            insanity_filter=insanity_filter,
        )

    def _panels(
        self, X: pd.DataFrame, period: Mapping[str, pd.Timedelta] | None = None
    ) -> dict[str, SymbolPanel]:
        # exogenous columns may be negative or NaN: they must not drop rows (that would open gaps)
        panels = prepare_panels(
            X,
            (RV,),
            min_obs=self.min_obs,
            period=period,
            owner=type(self).__name__,
        )
        return attach_columns(panels, X, self.exog, type(self).__name__)

    def _inner(self, **over: object) -> _LagHARX:
        params: dict[str, object] = {
            "lags": tuple(int(k) for k in self.lags),
            "log": self.log,
            "exog": tuple(self.exog),
            "horizons": tuple(int(h) for h in self.horizons),
            "window": self.window,
            "window_type": self.window_type,
            "refit_every": self.refit_every,
            "min_obs": None,
            "insanity_filter": self.insanity_filter,
        }
        params.update(over)
        return _LagHARX(**params)  # type: ignore[arg-type]

    def adjust(self, panel: SymbolPanel) -> tuple[SymbolPanel, np.ndarray, np.ndarray]:
        """As :meth:`DiurnalHARVol.adjust`; the adjusted panel also carries the ``exog`` columns
        (unchanged)."""
        adj, shape, b = super().adjust(panel)
        data = dict(adj.data)
        for c in self.exog:
            data[c] = panel.col(c)
        return SymbolPanel(adj.symbol, adj.ts, data, adj.period, adj.n_dropped), shape, b


class DiurnalBoostVol(LGBMVol):
    """LightGBM on a diurnal HAR's residual (see module docs).

    Parameters
    ----------
    base : the baseline (:class:`DiurnalHARVol` or :class:`DiurnalHARXVol`; its ``window`` and
        ``window_type`` are used, re-estimated at every row on the rows before it); None =
        ``DiurnalHARVol(lags=(1, 6, 24), log=True, profile_stat="log", window=120)``.
    Other parameters : as :class:`models.lgbm.LGBMVol` (``offset_feature`` must stay None: the
        base forecast is the offset).
    """

    model_id: ClassVar[str] = "diurnal_boost"

    def __init__(
        self,
        base: DiurnalHARVol | None = None,
        horizons: Sequence[int] = (1,),
        feature_columns: Sequence[str] = (),
        window: int | None = None,
        window_type: str = "expanding",
        refit_every: int = 168,
        min_obs: float | None = None,
        min_train: int = 240,
        validation_size: int = 72,
        n_estimators: int = 300,
        learning_rate: float = 0.02,
        num_leaves: int = 4,
        max_depth: int = -1,
        min_child_samples: int = 100,
        subsample: float = 0.8,
        subsample_freq: int = 1,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 10.0,
        early_stopping_rounds: int = 50,
        refit_full: bool = True,
        bias_correction: bool = True,
        quantile_levels: Sequence[float] = (),
        quantile_method: str = "residual",
        param_grid: Mapping[str, Sequence[object]] | None = None,
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

    def _base(self) -> DiurnalHARVol:
        if self.base is not None:
            return self.base
        return DiurnalHARVol(lags=(1, 6, 24), log=True, profile_stat="log", window=120)

    def _design(
        self,
        panels: Mapping[str, SymbolPanel],
        extra: Mapping[str, Mapping[str, np.ndarray]],
        h: int,
    ) -> PooledDesign:
        self._extra_now = extra  # the base's exogenous columns for _offset (same rows)
        try:
            return super()._design(panels, extra, h)
        finally:
            self._extra_now = {}

    def _offset(self, panel: SymbolPanel, h: int) -> np.ndarray:
        """Log of the base's walk-forward forecast at every row (NaN without enough history)."""
        base = self._base()
        exog = tuple(getattr(base, "exog", ()))
        if exog:
            ex = getattr(self, "_extra_now", {}).get(panel.symbol, {})
            missing = [c for c in exog if c not in ex]
            if missing:
                raise MissingInputsError(
                    f"{type(self).__name__}: the base's exog {missing} must also be "
                    "feature_columns (they are read from X with them)"
                )
            data = dict(panel.data)
            data.update({c: np.asarray(ex[c], dtype="float64") for c in exog})
            panel = SymbolPanel(panel.symbol, panel.ts, data, panel.period, panel.n_dropped)
        f, _ = base.walk_forward_panel(
            panel,
            (h,),
            np.arange(len(panel)),
            window=base.window,
            window_type=base.window_type,
            refit_every=1,
            purge=None,
        )
        f = f[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(f > 0, np.log(np.where(f > 0, f, 1.0)), np.nan)
