"""The oracle floor on simulated data: forecasts from the simulator's hidden state.

On simulated markets the variance process is known, so the best possible forecast of the future
integrated variance is its conditional expectation given the hidden state at the origin (the OU
log-vol factors and the calm/stress regime), computed by :func:`features.simulate.conditional_iv`.
Its QLIKE against the true integrated variance is the floor no model fed with market data can beat
in expectation (QLIKE is minimized by the conditional mean); evaluation reports each model's QLIKE
relative to it.

This is a **reporting floor, never a usable model**: it reads ``SimResult.truth_state``, which no
real data source has. It is therefore not a :class:`models.base.BaseForecaster` and never enters
model selection or the registry.

Units follow :class:`models.forecast.VolForecast`: at origin ``t`` and horizon ``h`` (periods of
``freq``), the per-period average of the expected ``iv_var`` over ``t+1..t+h``. Jumps are excluded,
as in ``iv_var`` (the target of the ``truth`` scoring of :func:`models.evaluation.walk_forward`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.schema import SYMBOL, TS, TS_DTYPE
from features.simulate import IV, SimResult, conditional_iv
from models.forecast import VolForecast, default_annualization, format_period

__all__ = ["ORACLE_ID", "oracle_forecasts", "oracle_vol_forecasts", "truth_var"]

ORACLE_ID = "oracle"


def _fail(name: str, expected: str, value: object, owner: str) -> ValueError:
    return ValueError(
        f"The '{name}' parameter of {owner} must be {expected}. Got {value!r} instead."
    )


def _period(sim: SimResult, freq: str, owner: str) -> pd.Timedelta:
    if not isinstance(sim, SimResult):
        raise _fail("sim", "a SimResult", type(sim).__name__, owner)
    try:
        period = pd.Timedelta(freq)
    except (ValueError, TypeError):
        raise _fail("freq", "a duration string such as '1h'", freq, owner) from None
    step = pd.Timedelta(sim.config.truth_interval)
    if pd.isna(period) or period <= pd.Timedelta(0) or period.value % step.value:
        raise _fail(
            "freq",
            f"a positive multiple of truth_interval={sim.config.truth_interval}",
            freq,
            owner,
        )
    return period


def truth_var(sim: SimResult, freq: str = "1h") -> pd.DataFrame:
    """The true integrated variance per symbol and ``freq`` period (``ts`` = period close).

    Parameters
    ----------
    sim : a simulation result.
    freq : period length, a multiple of the config's ``truth_interval``.

    Returns
    -------
    DataFrame ``ts, symbol, iv_var`` (sum of the truth bars' ``iv_var`` in each period), sorted by
    ``ts`` then symbol (config order): the ``truth`` argument of :func:`models.evaluation.walk_forward`.
    """
    period = _period(sim, freq, "truth_var")
    tb = sim.truth_bars
    start = sim.config.start_ts
    n_bins = np.ceil((tb[TS] - start) / period).astype("int64")
    close = (start + n_bins * period).astype(TS_DTYPE)
    out = tb.assign(**{TS: close}).groupby([TS, SYMBOL], sort=False, observed=True)[IV].sum()
    return out.reset_index()


def oracle_vol_forecasts(
    sim: SimResult,
    freq: str = "1h",
    horizons: Sequence[int] = (1, 24),
    *,
    origins: Sequence[pd.Timestamp] | pd.DatetimeIndex | None = None,
    method: str = "exact",
    n_paths: int = 1000,
    random_state: int | np.random.Generator | None = None,
    model_id: str = ORACLE_ID,
) -> dict[str, VolForecast]:
    """Oracle variance forecasts per symbol: the true conditional expectation of future ``iv_var``.

    Parameters
    ----------
    sim : a simulation result with its ``truth_state``.
    freq : period length of the forecasts (a multiple of ``truth_interval``); horizons count it.
    horizons : horizons in periods (ints >= 1).
    origins : origin timestamps (period closes); None = every ``freq`` close of the simulation.
    method, n_paths, random_state : see :func:`features.simulate.conditional_iv` ("exact" needs no
        randomness).
    model_id : the label of the forecasts.

    Returns
    -------
    dict symbol -> VolForecast whose ``variance`` holds per-period averages over ``t+1..t+h``.
    """
    owner = "oracle_vol_forecasts"
    period = _period(sim, freq, owner)
    if sim.truth_state is None:
        raise _fail("sim", "a SimResult with truth_state (from simulate())", None, owner)
    hs = tuple(int(h) for h in horizons)
    if not hs or any(h < 1 for h in hs) or len(set(hs)) != len(hs):
        raise _fail("horizons", "distinct ints >= 1", horizons, owner)
    hs = tuple(sorted(hs))
    state = sim.truth_state
    start = sim.config.start_ts
    if origins is None:
        keep = ((state[TS] - start) % period) == pd.Timedelta(0)
    else:
        wanted = pd.DatetimeIndex(pd.to_datetime(list(origins), utc=True))
        unknown = wanted.difference(pd.DatetimeIndex(state[TS].unique()))
        if len(unknown):
            raise _fail("origins", "truth-bar closes of the simulation", unknown[0], owner)
        keep = state[TS].isin(wanted)
    rows = state[keep]
    expected = conditional_iv(
        sim.config,
        rows,
        hs,
        bar=format_period(period),
        method=method,
        n_paths=n_paths,
        random_state=random_state,
    )
    average = expected / np.asarray(hs, dtype=float)[None, :]
    out: dict[str, VolForecast] = {}
    for sym in sim.config.symbols:
        mask = (rows[SYMBOL] == sym).to_numpy()
        if not mask.any():
            continue
        idx = pd.DatetimeIndex(rows.loc[mask, TS], name="origin_ts")
        variance = pd.DataFrame(average.to_numpy()[mask], index=idx, columns=list(hs))
        out[sym] = VolForecast(
            variance=variance,
            symbol=sym,
            horizon_unit=format_period(period),
            annualization=default_annualization(sym, period),
            model_id=model_id,
            model_version=f"{method}-sim-truth",
            data_cutoff_ts=pd.Series(idx, index=idx),
        )
    return out


def oracle_forecasts(
    sim: SimResult,
    freq: str = "1h",
    horizons: Sequence[int] = (1, 24),
    *,
    origins: Sequence[pd.Timestamp] | pd.DatetimeIndex | None = None,
    method: str = "exact",
    n_paths: int = 1000,
    random_state: int | np.random.Generator | None = None,
    model_id: str = ORACLE_ID,
) -> pd.DataFrame:
    """The oracle as a long forecast table (columns of :meth:`VolForecast.to_frame`).

    Same parameters as :func:`oracle_vol_forecasts`; score ``forecast_var`` with
    :func:`models.losses.qlike` against the mean of :func:`truth_var` over ``t+1..t+h``.
    """
    fcs = oracle_vol_forecasts(
        sim,
        freq,
        horizons,
        origins=origins,
        method=method,
        n_paths=n_paths,
        random_state=random_state,
        model_id=model_id,
    )
    if not fcs:
        raise _fail("origins", "a non-empty set of origins", origins, "oracle_forecasts")
    return pd.concat([fc.to_frame() for fc in fcs.values()], ignore_index=True)
