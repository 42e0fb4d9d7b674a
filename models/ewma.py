"""Horizon-free baselines: the random walk (last RV) and EWMA / RiskMetrics.

Both forecast a flat term structure: the per-period average variance over ``t+1..t+h`` equals the
one-period forecast at every horizon (RiskMetrics' square-root-of-time rule for the cumulative
variance, ``h x`` the average; see :meth:`models.forecast.VolForecast.cumulative_var`).

EWMA recursion (RiskMetrics 1996), on realized variance (the default, for daily realized data) or on
squared close-to-close log returns:

    s_0 = x_0,    s_t = lam * s_{t-1} + (1 - lam) * x_t,

and the forecast made at origin ``t`` (after observing ``x_t``) is ``s_t``. ``half_life`` (in periods),
when given, sets ``lam = 0.5 ** (1 / half_life)``. Nothing is estimated, so the walk-forward is the
recursion itself: the forecast at each origin uses the rows up to that origin only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from features.schema import RV
from models.base import SQ_RET, BaseForecaster, Interval, Options, SymbolPanel


def ewma_recursion(x: np.ndarray, lam: float) -> np.ndarray:
    """``s_0 = x_0``, ``s_t = lam s_{t-1} + (1 - lam) x_t`` for an array ``x`` of shape (n,)."""
    x = np.asarray(x, dtype="float64")
    if x.size == 0:
        return x.copy()
    out, _ = lfilter([1.0 - lam], [1.0, -lam], x, zi=[lam * x[0]])
    return out


class _LevelState:
    """``to_state``/``from_state`` of the level models: ``"state"`` is symbol -> last level."""

    state_: dict[str, float]

    def to_state(self) -> dict[str, Any]:
        """:meth:`BaseForecaster.to_state` plus ``"state"``: symbol -> the fitted level."""
        out = super().to_state()  # type: ignore[misc]
        out["state"] = {sym: float(v) for sym, v in self.state_.items()}
        return out

    def from_state(self, state: Mapping[str, Any]) -> Any:
        """The inverse of :meth:`to_state`; returns self, ready to ``predict``."""
        super().from_state(state)  # type: ignore[misc]
        self.state_ = {sym: float(v) for sym, v in state["state"].items()}
        return self


class RandomWalkVol(_LevelState, BaseForecaster):
    """Random walk: the forecast at every horizon is the last realized variance ``RV_t``.

    Parameters
    ----------
    min_obs : rows whose ``n_obs`` is below this are dropped (when ``n_obs`` is present).
    """

    model_id: ClassVar[str] = "random_walk"
    state_from_data: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict] = {"min_obs": [Interval(float, 0, None), None]}

    def __init__(self, min_obs: float | None = 250) -> None:
        self.min_obs = min_obs

    def _fit_panel(self, panel: SymbolPanel) -> float:
        return float(panel.col(RV)[-1]) if len(panel) else float("nan")

    def _predict_panel(
        self, panel: SymbolPanel, state: float, horizons: Sequence[int]
    ) -> tuple[np.ndarray, None]:
        return np.repeat(panel.col(RV)[:, None], len(horizons), axis=1), None

    def _walk_forward_panel(
        self, panel: SymbolPanel, horizons: Sequence[int], origins: np.ndarray, **_: object
    ) -> tuple[np.ndarray, None]:
        var, _ = self._predict_panel(panel, 0.0, horizons)
        return var[origins], None


class EWMAVol(_LevelState, BaseForecaster):
    """EWMA / RiskMetrics variance (see module docs).

    Parameters
    ----------
    lam : smoothing factor in (0, 1); 0.94 is RiskMetrics' daily value.
    half_life : half-life in periods; when given it overrides ``lam``.
    on : "rv" (realized variance, the default for realized data) or "squared_returns" (squared
        close-to-close log returns; needs a ``close`` column).
    min_obs : rows whose ``n_obs`` is below this are dropped (when ``n_obs`` is present).

    Attributes
    ----------
    lam_ : the smoothing factor used.
    level_ : dict symbol -> the last EWMA variance of the fit data.
    """

    model_id: ClassVar[str] = "ewma"
    state_from_data: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict] = {
        "lam": [Interval(float, 0, 1, closed="neither")],
        "half_life": [Interval(float, 0, None, closed="neither"), None],
        "on": [Options(("rv", "squared_returns"))],
        "min_obs": [Interval(float, 0, None), None],
    }

    def __init__(
        self,
        lam: float = 0.94,
        half_life: float | None = None,
        on: str = "rv",
        min_obs: float | None = 250,
    ) -> None:
        self.lam = lam
        self.half_life = half_life
        self.on = on
        self.min_obs = min_obs

    def _required_columns(self) -> tuple[str, ...]:
        return (RV,) if self.on == "rv" else (SQ_RET,)

    def _lam(self) -> float:
        return float(self.lam) if self.half_life is None else 0.5 ** (1.0 / float(self.half_life))

    def from_state(self, state: Mapping[str, Any]) -> EWMAVol:
        """The inverse of :meth:`to_state` (also sets ``lam_`` and ``level_`` as ``fit`` does)."""
        super().from_state(state)
        self.lam_ = self._lam()
        self.level_ = dict(self.state_)
        return self

    def _series(self, panel: SymbolPanel) -> np.ndarray:
        return ewma_recursion(panel.col(self._required_columns()[0]), self._lam())

    def fit(self, X: pd.DataFrame, y: None = None) -> EWMAVol:
        """Validate the parameters and record ``lam_`` and each symbol's last level ``level_``."""
        super().fit(X, y)
        self.lam_ = self._lam()
        self.level_ = dict(self.state_)
        return self

    def _fit_panel(self, panel: SymbolPanel) -> float:
        s = self._series(panel)
        return float(s[-1]) if s.size else float("nan")

    def _predict_panel(
        self, panel: SymbolPanel, state: float, horizons: Sequence[int]
    ) -> tuple[np.ndarray, None]:
        return np.repeat(self._series(panel)[:, None], len(horizons), axis=1), None

    def _walk_forward_panel(
        self, panel: SymbolPanel, horizons: Sequence[int], origins: np.ndarray, **_: object
    ) -> tuple[np.ndarray, None]:
        var, _ = self._predict_panel(panel, 0.0, horizons)
        return var[origins], None
