"""Volatility forecasts: the value every forecaster returns and all that margin sees of a model.

Units
-----
``VolForecast.variance`` holds, for each origin ``t`` (a row) and horizon ``h`` (a column), the
**per-period average** variance over the periods ``t+1..t+h``, in the data's period units (for daily
realized data: daily log-return variance). Two derived quantities follow and must not be confused:

- the **cumulative** variance over a margin period of ``h`` periods is ``h x average``
  (:meth:`VolForecast.cumulative_var`); its square root is the ``h``-period volatility
  (:meth:`VolForecast.vol`), the number a margin model scales scenarios with;
- the **annualized** volatility is ``sqrt(average x periods per year)``
  (:meth:`VolForecast.annualized_vol`), the same for every ``h`` when the term structure is flat.

The long table (:meth:`VolForecast.to_frame`) is the format evaluation writes and the registry
returns: one row per model, symbol, origin and horizon.

:class:`RiskForecastBundle` is the one value margin consumes: every forecast, calibration and
stress input for a set of symbols at one ``as_of`` (see its docstring). ``CorrForecast`` is defined
in :mod:`models.corr_forecast` and re-exported here, so margin imports only this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.calendar import add_sessions
from features.errors import DataError, Failure, ModelError
from features.schema import TS_DTYPE
from features.symbols import CALENDARS, symbol_meta
from models.corr_forecast import CorrForecast, check_correlation

FRAME_COLUMNS = (
    "model_id",
    "model_version",
    "symbol",
    "origin_ts",
    "data_cutoff_ts",
    "horizon",
    "target_start",
    "target_end",
    "forecast_var",
    "realized_var",
    "fallback_reason",
)
"""Columns of :meth:`VolForecast.to_frame`; quantile columns ``q_<level>`` sit between
``forecast_var`` and ``realized_var``."""

_QPREFIX = "q_"


def parse_horizon_unit(horizon_unit: str) -> pd.Timedelta:
    """The length of one period, e.g. "1D" -> 1 day, "1h" -> 1 hour, "5min" -> 5 minutes.

    Raises ``ValueError`` naming the value when it is not a positive duration.
    """
    try:
        period = pd.Timedelta(horizon_unit)
    except (ValueError, TypeError):
        raise ValueError(
            f"horizon_unit must be a pandas duration string such as '1D' or '1h'; "
            f"got {horizon_unit!r}"
        ) from None
    if period <= pd.Timedelta(0):
        raise ValueError(f"horizon_unit must be a positive duration; got {horizon_unit!r}")
    return period


def format_period(period: pd.Timedelta) -> str:
    """A compact label for a period length: 1 day -> "1D", 1 hour -> "1h", 5 minutes -> "5min"."""
    seconds = int(period.total_seconds())
    if seconds <= 0 or pd.Timedelta(seconds=seconds) != period:
        raise ValueError(f"period must be a positive whole number of seconds; got {period!r}")
    for unit, size in (("D", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def default_annualization(symbol: str, period: pd.Timedelta) -> float:
    """Periods per year: the symbol's trading days per year (365 on 24/7 venues, 252 on exchanges)
    times the number of periods per day."""
    return float(symbol_meta(symbol).annualization) * (pd.Timedelta(days=1) / period)


def _session_calendar(symbol: str, period: pd.Timedelta) -> str | None:
    """The exchange calendar whose sessions are the periods of daily data of ``symbol``, or None
    (24/7 venues, intraday periods: a period is a fixed length of time)."""
    cal = symbol_meta(symbol).calendar
    return cal if CALENDARS[cal].weekdays_only and period == pd.Timedelta(days=1) else None


def calendar_target_end(
    origins: pd.DatetimeIndex, horizons: Iterable[int], symbol: str, period: pd.Timedelta
) -> pd.DataFrame:
    """End of each origin's ``h``-period target window from the symbol's calendar alone.

    Daily data of an exchange-calendar symbol (an equity index on ``XNYS``): the close ``h``
    trading sessions after the origin (:func:`features.calendar.add_sessions`: weekends and
    holidays skipped). Otherwise (24/7 venues, intraday periods): ``origin + h x period``.

    Returns
    -------
    DataFrame of UTC timestamps, index = ``origins``, one column per horizon.
    """
    origins = pd.DatetimeIndex(origins)
    cal = _session_calendar(symbol, period)
    cols = {}
    for h in horizons:
        h = int(h)
        cols[h] = (
            add_sessions(origins, h, cal)
            if cal is not None
            else (origins + h * period).as_unit("ns")
        )
    return pd.DataFrame(cols, index=origins)


def row_target_end(
    data_ts: pd.DatetimeIndex,
    origins: pd.DatetimeIndex,
    horizons: Iterable[int],
    symbol: str,
    period: pd.Timedelta,
) -> pd.DataFrame:
    """End of each origin's ``h``-period target window: the ``h``-th next row of the data.

    Parameters
    ----------
    data_ts : the symbol's row times (UTC, sorted): the data the forecasts were made from.
    origins : the origin times (each at or after the first row; an origin between rows counts from
        the last row at or before it).
    horizons : the h values, in periods (rows).
    symbol, period : for the windows that run past the last row, which continue from the last row
        by the symbol's calendar (:func:`calendar_target_end`).

    Returns
    -------
    DataFrame of UTC timestamps, index = ``origins``, one column per horizon. Across a weekend or
    a holiday of an exchange-calendar series the next row is the next trading day, as in the
    realized targets of :func:`features.targets.forward_mean`.
    """
    data_ts = pd.DatetimeIndex(data_ts).as_unit("ns")
    origins = pd.DatetimeIndex(origins)
    n = len(data_ts)
    pos = np.searchsorted(data_ts.asi8, origins.as_unit("ns").asi8, side="right") - 1
    if n == 0 or (pos < 0).any():
        raise ValueError("row_target_end: every origin must be at or after the first data row")
    last = data_ts[-1:]
    cols = {}
    for h in horizons:
        h = int(h)
        k = pos + h
        inside = k < n
        out = np.empty(len(origins), dtype="int64")
        out[inside] = data_ts.asi8[k[inside]]
        for extra in np.unique(k[~inside] - (n - 1)):
            out[k - (n - 1) == extra] = (
                calendar_target_end(last, [int(extra)], symbol, period)[int(extra)].iloc[0].value
            )
        cols[h] = pd.DatetimeIndex(out.view("datetime64[ns]"), tz="UTC")
    return pd.DataFrame(cols, index=origins)


def infer_unit(
    target_start: pd.Series, target_end: pd.Series, horizon: pd.Series, symbol: pd.Series | str
) -> np.ndarray:
    """The period (a :func:`format_period` label) of each long-table row from its target span.

    ``(target_end - target_start) / horizon``, except on exchange calendars, whose daily target
    windows are sessions: a span of whole local days (wall-clock, so a daylight-saving change
    inside does not count) of at least ``horizon`` days, a window across a weekend or a holiday,
    is "1D" there.
    """
    start = pd.DatetimeIndex(target_start)
    end = pd.DatetimeIndex(target_end)
    h = np.asarray(horizon, dtype="int64")
    span = (end - start).asi8
    day = pd.Timedelta(days=1).value
    syms = np.broadcast_to(np.asarray(symbol, dtype=object), h.shape).astype(str)
    sessions = np.zeros(len(h), dtype=bool)
    for sym in np.unique(syms):
        cal = CALENDARS[symbol_meta(str(sym)).calendar]
        if not cal.weekdays_only:
            continue
        m = syms == sym
        wall = (
            end[m].tz_convert(cal.tz).tz_localize(None)
            - start[m].tz_convert(cal.tz).tz_localize(None)
        ).asi8
        sessions[m] = (wall >= h[m] * day) & (wall % day == 0)
    per = span // np.maximum(h, 1)
    labels = {int(p): format_period(pd.Timedelta(int(p), "ns")) for p in np.unique(per[~sessions])}
    return np.array(
        ["1D" if ok else labels[int(p)] for ok, p in zip(sessions, per, strict=True)], dtype=object
    )


def _stack_ts(frame: pd.DataFrame) -> np.ndarray:
    """A frame of UTC timestamp columns, row-major, as ``datetime64[ns]`` (UTC wall-clock)."""
    cols = [pd.DatetimeIndex(frame[c]).as_unit("ns").asi8 for c in frame.columns]
    return np.column_stack(cols).reshape(-1).view("datetime64[ns]")


def _check_utc_index(index: pd.Index, name: str) -> None:
    if not isinstance(index, pd.DatetimeIndex) or str(index.tz) != "UTC":
        raise ValueError(
            f"{name} index must be a UTC DatetimeIndex of origin timestamps; "
            f"got {type(index).__name__} with dtype {index.dtype}"
        )
    if index.has_duplicates:
        dup = index[index.duplicated()][0]
        raise ValueError(f"{name} index has duplicate origin {dup}; expected unique origins")
    if not index.is_monotonic_increasing:
        raise ValueError(f"{name} index must be sorted by origin; it is not")


def _check_values(frame: pd.DataFrame, name: str, *, positive: bool) -> None:
    values = frame.to_numpy(dtype="float64")
    bad = ~np.isfinite(values) | ((values <= 0) if positive else (values < 0))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        expected = "finite and > 0" if positive else "finite and >= 0"
        raise ValueError(
            f"{name} must be {expected}; got {float(values[r, c])!r} at origin {frame.index[r]}, "
            f"horizon {frame.columns[c]} ({int(bad.sum())} bad value(s) of {values.size})"
        )


@dataclass(frozen=True)
class VolForecast:
    """Variance forecasts of one model for one symbol, at one or many origins and horizons.

    Attributes
    ----------
    variance : DataFrame of shape (n_origins, n_horizons); index = origin timestamps (UTC, the close
        of the origin period, sorted, unique), columns = horizons in periods (ints >= 1, increasing),
        values = per-period average variance over ``t+1..t+h`` (finite, > 0).
    symbol : the instrument.
    horizon_unit : the length of one period as a pandas duration string ("1D", "1h").
    annualization : periods per year (365 for daily crypto data).
    model_id, model_version : which model produced the numbers.
    data_cutoff_ts : the latest data time any forecast used; either one UTC timestamp for all origins
        or a Series indexed like ``variance`` (walk-forward forecasts: each origin's own cutoff).
        A Series with a single value is stored as that timestamp.
    quantiles : optional mapping level (0 < level < 1) -> DataFrame shaped like ``variance`` with
        quantiles of the per-period average variance.
    fallback_reason : optional Series indexed like ``variance``: why the model's own forecast was
        replaced at that origin (None where it was not). A Series without any reason is stored as None.
    target_end : optional DataFrame shaped like ``variance`` of UTC timestamps: the close of the
        last target period of each origin and horizon, the ``h``-th next row of the data the
        forecast was made from (:func:`row_target_end`). None = from the symbol's calendar
        (:func:`calendar_target_end`: ``origin + h`` periods on 24/7 venues, ``h`` trading
        sessions on exchange calendars). See :meth:`target_ends`.
    """

    variance: pd.DataFrame
    symbol: str
    horizon_unit: str
    annualization: float
    model_id: str
    model_version: str
    data_cutoff_ts: pd.Timestamp | pd.Series
    quantiles: Mapping[float, pd.DataFrame] | None = field(default=None)
    fallback_reason: pd.Series | None = field(default=None)
    target_end: pd.DataFrame | None = field(default=None)

    def __post_init__(self) -> None:
        v = self.variance
        if not isinstance(v, pd.DataFrame):
            raise ValueError(f"variance must be a pandas DataFrame; got {type(v).__name__}")
        if v.shape[0] == 0 or v.shape[1] == 0:
            raise ValueError(
                f"variance must have at least one origin and one horizon; got shape {v.shape}"
            )
        _check_utc_index(v.index, "variance")
        if str(v.index.dtype) != TS_DTYPE:  # store origins at nanosecond resolution, like ``ts``
            v = v.set_axis(v.index.as_unit("ns"))
            object.__setattr__(self, "variance", v)
        hs = list(v.columns)
        if not all(
            isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in hs
        ):
            raise ValueError(f"variance columns must be horizons as ints >= 1; got {hs}")
        if hs != sorted(set(hs)):
            raise ValueError(f"variance columns must be unique increasing horizons; got {hs}")
        _check_values(v, "variance", positive=True)
        if not isinstance(self.symbol, str) or not self.symbol:
            raise ValueError(f"symbol must be a non-empty string; got {self.symbol!r}")
        parse_horizon_unit(self.horizon_unit)
        ann = self.annualization
        if not isinstance(ann, (int, float, np.number)) or not np.isfinite(ann) or ann <= 0:
            raise ValueError(f"annualization must be finite and > 0; got {ann!r}")
        for name in ("model_id", "model_version"):
            val = getattr(self, name)
            if not isinstance(val, str) or not val:
                raise ValueError(f"{name} must be a non-empty string; got {val!r}")
        self._init_cutoff()
        self._init_quantiles()
        self._init_fallback()
        self._init_target_end()

    def _init_target_end(self) -> None:
        te = self.target_end
        if te is None:
            return
        v = self.variance
        if (
            not isinstance(te, pd.DataFrame)
            or te.shape != v.shape
            or list(te.columns) != list(v.columns)
        ):
            raise ValueError(
                "target_end must be a DataFrame with variance's origins and horizons, or None"
            )
        cols = {}
        for h in v.columns:
            col = pd.DatetimeIndex(te[h])
            if col.tz is None or str(col.tz) != "UTC" or col.hasnans:
                raise ValueError("target_end must hold UTC timestamps without gaps")
            cols[h] = col.as_unit("ns")
        te = pd.DataFrame(cols, index=v.index)
        early = te.lt(pd.Series(v.index, index=v.index), axis=0).to_numpy() | (
            te.to_numpy() == np.asarray(v.index)[:, None]
        )
        if early.any():
            r, c = np.argwhere(early)[0]
            raise ValueError(
                f"target_end {te.iat[r, c]} of origin {v.index[r]}, horizon {v.columns[c]} is not "
                "after its origin"
            )
        object.__setattr__(self, "target_end", te)

    def target_ends(self) -> pd.DataFrame:
        """The end of each origin's target window: DataFrame shaped like ``variance`` of UTC
        timestamps (the stored ``target_end``, else :func:`calendar_target_end`)."""
        if self.target_end is not None:
            return self.target_end
        return calendar_target_end(self.variance.index, self.horizons, self.symbol, self.period)

    def _init_cutoff(self) -> None:
        cut = self.data_cutoff_ts
        last = self.variance.index[-1]
        if isinstance(cut, pd.Series):
            if not cut.index.equals(self.variance.index):
                raise ValueError(
                    "data_cutoff_ts Series must be indexed like variance (the origins)"
                )
            values = pd.DatetimeIndex(cut)
            if values.tz is None or str(values.tz) != "UTC" or values.hasnans:
                raise ValueError("data_cutoff_ts Series must hold UTC timestamps without gaps")
            if (values < self.variance.index).any():
                i = int(np.flatnonzero(values < self.variance.index)[0])
                raise ValueError(
                    f"data_cutoff_ts {values[i]} is before its origin {self.variance.index[i]}; "
                    "a forecast cannot be made before the data it uses"
                )
            if values.nunique() == 1:
                object.__setattr__(self, "data_cutoff_ts", values[0].as_unit("ns"))
            else:
                object.__setattr__(
                    self,
                    "data_cutoff_ts",
                    pd.Series(values.as_unit("ns"), index=self.variance.index),
                )
            return
        if not isinstance(cut, pd.Timestamp) or cut.tz is None or str(cut.tz) != "UTC":
            raise ValueError(f"data_cutoff_ts must be a UTC pandas Timestamp; got {cut!r}")
        object.__setattr__(self, "data_cutoff_ts", cut.as_unit("ns"))
        if cut < last:
            raise ValueError(
                f"data_cutoff_ts {cut} is before the last origin {last}; "
                "a forecast cannot be made before the data it uses"
            )

    def _init_quantiles(self) -> None:
        if self.quantiles is None:
            return
        if not isinstance(self.quantiles, Mapping) or not self.quantiles:
            raise ValueError("quantiles must be a non-empty mapping level -> DataFrame or None")
        clean: dict[float, pd.DataFrame] = {}
        for level, frame in sorted(self.quantiles.items()):
            if not 0 < float(level) < 1:
                raise ValueError(f"quantile level must be in (0, 1); got {level!r}")
            if not isinstance(frame, pd.DataFrame) or not (
                frame.index.equals(self.variance.index)
                and list(frame.columns) == list(self.variance.columns)
            ):
                raise ValueError(
                    f"quantiles[{level}] must be a DataFrame with variance's origins and horizons"
                )
            _check_values(frame, f"quantiles[{level}]", positive=False)
            clean[float(level)] = frame.set_axis(self.variance.index)
        object.__setattr__(self, "quantiles", clean)

    def _init_fallback(self) -> None:
        fb = self.fallback_reason
        if fb is None:
            return
        if not isinstance(fb, pd.Series) or not fb.index.equals(self.variance.index):
            raise ValueError("fallback_reason must be a Series indexed like variance, or None")
        present = fb.notna().to_numpy()
        if not present.any():
            object.__setattr__(self, "fallback_reason", None)
            return
        values = np.where(present, fb.astype(object).to_numpy(), None).astype(object)
        object.__setattr__(
            self,
            "fallback_reason",
            pd.Series(values, index=self.variance.index, name="fallback_reason"),
        )

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def origins(self) -> pd.DatetimeIndex:
        """The origin timestamps."""
        return self.variance.index

    @property
    def horizons(self) -> list[int]:
        """The horizons, in periods."""
        return [int(h) for h in self.variance.columns]

    @property
    def period(self) -> pd.Timedelta:
        """The length of one period."""
        return parse_horizon_unit(self.horizon_unit)

    def _column(self, h: int) -> pd.Series:
        if h not in self.variance.columns:
            raise KeyError(
                f"horizon {h!r} is not in this forecast; available horizons {self.horizons}"
            )
        return self.variance[h]

    def average_var(self, h: int) -> pd.Series:
        """Per-period average variance over ``t+1..t+h``, per origin (the stored value)."""
        return self._column(h)

    def cumulative_var(self, h: int) -> pd.Series:
        """Variance of the ``h``-period return (the variance over a margin period of ``h`` periods).

        Equals ``h x average_var(h)``: the stored values are per-period averages, so the cumulative
        variance is *not* the stored value for ``h > 1``.
        """
        return (h * self._column(h)).rename(f"cumulative_var_{h}")

    def vol(self, h: int) -> pd.Series:
        """Volatility of the ``h``-period return: ``sqrt(cumulative_var(h))``."""
        return np.sqrt(self.cumulative_var(h)).rename(f"vol_{h}")

    def annualized_vol(self, h: int) -> pd.Series:
        """Annualized volatility implied by the horizon-``h`` forecast:
        ``sqrt(average_var(h) x annualization)``."""
        return np.sqrt(self._column(h) * self.annualization).rename(f"vol_ann_{h}")

    def cutoff_per_origin(self) -> pd.Series:
        """The data cutoff of each origin as a Series of UTC timestamps."""
        if isinstance(self.data_cutoff_ts, pd.Series):
            return self.data_cutoff_ts
        return pd.Series(
            pd.DatetimeIndex([self.data_cutoff_ts] * len(self.variance)),
            index=self.variance.index,
        )

    # ---- long table ------------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """The long table: one row per origin and horizon, columns :data:`FRAME_COLUMNS` with the
        quantile columns ``q_<level>`` after ``forecast_var``; ``realized_var`` is NaN (filled by
        evaluation), ``target_start`` = origin, ``target_end`` = :meth:`target_ends` (the h-th
        next row of the data; ``origin + h`` periods on 24/7 venues, ``h`` sessions on exchange
        calendars)."""
        v = self.variance
        n, k = v.shape
        hs = np.asarray(self.horizons, dtype="int64")
        horizon = np.tile(hs, n)
        origin_idx = v.index.repeat(k)
        cut = pd.DatetimeIndex(self.cutoff_per_origin()).repeat(k)
        out = {
            "model_id": np.full(n * k, self.model_id, dtype=object),
            "model_version": np.full(n * k, self.model_version, dtype=object),
            "symbol": np.full(n * k, self.symbol, dtype=object),
            "origin_ts": origin_idx,
            "data_cutoff_ts": cut,
            "horizon": horizon,
            "target_start": origin_idx,
            "target_end": pd.DatetimeIndex(_stack_ts(self.target_ends()), tz="UTC"),
            "forecast_var": v.to_numpy(dtype="float64").reshape(-1),
        }
        for level, frame in (self.quantiles or {}).items():
            out[f"{_QPREFIX}{level:g}"] = frame.to_numpy(dtype="float64").reshape(-1)
        out["realized_var"] = np.full(n * k, np.nan)
        if self.fallback_reason is None:
            out["fallback_reason"] = np.full(n * k, None, dtype=object)
        else:
            out["fallback_reason"] = np.repeat(self.fallback_reason.to_numpy(dtype=object), k)
        frame = pd.DataFrame(out)
        for c in ("origin_ts", "data_cutoff_ts", "target_start", "target_end"):
            frame[c] = frame[c].astype(TS_DTYPE)
        for c in ("model_id", "model_version", "symbol"):
            frame[c] = frame[c].astype("str")
        frame["fallback_reason"] = frame["fallback_reason"].astype(object)
        return frame

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        annualization: float | None = None,
        horizon_unit: str | None = None,
    ) -> VolForecast:
        """Rebuild a forecast from its long table (the inverse of :meth:`to_frame`).

        Parameters
        ----------
        frame : rows of one model and one symbol with the columns of :meth:`to_frame`.
        annualization : periods per year; None uses :func:`default_annualization` for the symbol.
        horizon_unit : the period; None infers it from ``(target_end - target_start) / horizon``.
        """
        missing = [c for c in FRAME_COLUMNS if c not in frame.columns and c != "realized_var"]
        if missing:
            raise ValueError(
                f"forecast frame is missing column(s) {missing}; got columns {list(frame.columns)}"
            )
        for c in ("model_id", "model_version", "symbol"):
            values = frame[c].unique()
            if len(values) != 1:
                raise ValueError(
                    f"forecast frame must hold one {c}; got {len(values)}: {list(values)[:5]}"
                )
        if frame.duplicated(["origin_ts", "horizon"]).any():
            raise ValueError("forecast frame has duplicate (origin_ts, horizon) rows")
        f = frame.sort_values(["origin_ts", "horizon"])
        origins = pd.DatetimeIndex(f["origin_ts"].drop_duplicates())
        variance = f.pivot(index="origin_ts", columns="horizon", values="forecast_var")
        if variance.isna().any().any():
            raise ValueError("forecast frame must hold every horizon at every origin")
        variance.index = pd.DatetimeIndex(variance.index, name="origin_ts")
        variance.columns = [int(h) for h in variance.columns]
        variance = variance.reindex(origins)
        if horizon_unit is None:
            units = pd.unique(
                infer_unit(f["target_start"], f["target_end"], f["horizon"], f["symbol"].iloc[0])
            )
            if len(units) != 1:
                raise ValueError(
                    f"cannot infer horizon_unit: target spans per horizon differ ({list(units)[:5]})"
                )
            horizon_unit = str(units[0])
        symbol = str(f["symbol"].iloc[0])
        if annualization is None:
            annualization = default_annualization(symbol, parse_horizon_unit(horizon_unit))
        per_origin = f.drop_duplicates("origin_ts").set_index("origin_ts")
        cutoff = pd.Series(pd.DatetimeIndex(per_origin["data_cutoff_ts"]), index=variance.index)
        quantiles = None
        qcols = [c for c in f.columns if c.startswith(_QPREFIX)]
        if qcols:
            quantiles = {}
            for c in qcols:
                q = f.pivot(index="origin_ts", columns="horizon", values=c).reindex(origins)
                q.index = variance.index
                q.columns = variance.columns
                quantiles[float(c[len(_QPREFIX) :])] = q
        reasons = per_origin["fallback_reason"].astype(object)
        fallback = pd.Series(
            np.where(reasons.notna().to_numpy(), reasons.to_numpy(), None).astype(object),
            index=variance.index,
        )
        ends = f.assign(target_end=pd.to_datetime(f["target_end"], utc=True)).pivot(
            index="origin_ts", columns="horizon", values="target_end"
        )
        ends = ends.reindex(origins).set_axis(variance.index).set_axis(variance.columns, axis=1)
        return cls(
            variance=variance,
            symbol=symbol,
            horizon_unit=horizon_unit,
            annualization=float(annualization),
            model_id=str(f["model_id"].iloc[0]),
            model_version=str(f["model_version"].iloc[0]),
            data_cutoff_ts=cutoff,
            quantiles=quantiles,
            fallback_reason=fallback,
            target_end=ends,
        )


def only(forecasts: Mapping[str, VolForecast]) -> VolForecast:
    """The one forecast of a single-symbol mapping (what every volatility forecaster's ``predict``
    and ``walk_forward`` return: symbol -> :class:`VolForecast`).

    Raises ``ValueError`` naming the symbols when ``forecasts`` does not hold exactly one; index
    by symbol (``forecasts["BTCUSDT"]``) to pick one of many.
    """
    if len(forecasts) != 1:
        raise ValueError(
            f"expected forecasts for exactly one symbol; got {len(forecasts)}: "
            f"{list(forecasts)}. Index the mapping by symbol to pick one."
        )
    return next(iter(forecasts.values()))


# =================================================================================================
# The risk-forecast bundle
# =================================================================================================

__all__ = [
    "BUNDLE_FORMAT",
    "FRAME_COLUMNS",
    "MARGIN_HORIZONS",
    "RESIDUAL_COLUMNS",
    "VOL_COLUMNS",
    "CorrForecast",
    "Innovation",
    "Member",
    "Provenance",
    "RiskForecastBundle",
    "StressedCorrelation",
    "VolForecast",
    "VolOfVol",
    "calendar_target_end",
    "canonical_digest",
    "default_annualization",
    "format_period",
    "infer_unit",
    "margin_horizons",
    "only",
    "parse_horizon_unit",
    "row_target_end",
]

BUNDLE_FORMAT = 1
"""Version of the on-disk layout written by :meth:`RiskForecastBundle.save`."""

MARGIN_HORIZONS: dict[str, tuple[int, ...]] = {"1D": (1, 2, 5), "1h": (1, 4, 24)}
"""The margin horizons per time unit: 1, 2, 5 days (crypto venues, EMIR's 2-day floor, 5-day
OTC) and 1, 4, 24 hours (venue maintenance margin)."""

_INTRADAY_MARGIN = (pd.Timedelta(hours=1), pd.Timedelta(hours=4), pd.Timedelta(hours=24))
_DAILY_MARGIN_DAYS = (1, 2, 5)


def margin_horizons(freq: str) -> tuple[int, ...]:
    """The margin horizons in periods of ``freq`` (what the cycle trains and the bundle carries):
    1, 2 and 5 periods of daily data; 1 period plus 1, 4 and 24 hours for intraday data, those
    that are whole numbers of periods ("1h" -> (1, 4, 24), "15min" -> (1, 4, 16, 96), "4h" ->
    (1, 6)); (1,) for data coarser than a day.

    Raises ``ValueError`` naming the value when ``freq`` is not a positive duration.
    """
    period = parse_horizon_unit(freq)
    if period == pd.Timedelta(days=1):
        return _DAILY_MARGIN_DAYS
    if period > pd.Timedelta(days=1):
        return (1,)
    hs = {1} | {int(h // period) for h in _INTRADAY_MARGIN
                if h >= period and h % period == pd.Timedelta(0)}
    return tuple(sorted(hs))

VOL_COLUMNS = (
    "unit",
    "symbol",
    "horizon",
    "model_id",
    "model_version",
    "origin_ts",
    "data_cutoff_ts",
    "forecast_var",
    "scale",
    "scale_lo",
    "scale_hi",
)
"""Columns of :attr:`RiskForecastBundle.vol` (one row per unit, symbol and horizon)."""

RESIDUAL_COLUMNS = ("unit", "symbol", "ts", "ret", "sigma_issued", "z")
"""Columns of :attr:`RiskForecastBundle.residuals` (one row per unit, symbol and return)."""

_Z_RTOL = 1e-9


# ---- canonical serialization (the bundle_id and the ledger's part names) -----------------------


def _chunk(h: Any, tag: str, payload: bytes) -> None:
    h.update(tag.encode())
    h.update(len(payload).to_bytes(8, "little"))
    h.update(payload)


def _canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def _array_bytes(values: np.ndarray) -> tuple[str, bytes]:
    a = np.asarray(values)
    if a.dtype.kind == "M":
        return f"M8{a.shape}", np.ascontiguousarray(a.astype("datetime64[ns]").view("<i8")).tobytes()
    if a.dtype.kind == "f":
        a = np.ascontiguousarray(a.astype("<f8") + 0.0)  # -0.0 -> 0.0: equal numbers, equal bytes
        return f"f8{a.shape}", a.tobytes()
    if a.dtype.kind in "iu":
        return f"i8{a.shape}", np.ascontiguousarray(a.astype("<i8")).tobytes()
    if a.dtype.kind == "b":
        return f"b1{a.shape}", np.ascontiguousarray(a.astype("u1")).tobytes()
    return _string_bytes(pd.Series(a.reshape(-1), dtype=object), shape=a.shape)


def _string_bytes(values: pd.Series, shape: tuple[int, ...] | None = None) -> tuple[str, bytes]:
    """Strings: the distinct values (in order of first appearance) as JSON, then one int64 code
    per element (-1 = missing); equal sequences give equal bytes, any change changes them."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    items = [str(v) for v in uniques]
    shape = (len(values),) if shape is None else shape
    return f"O{shape}", _canonical_json(items) + np.asarray(codes, dtype="<i8").tobytes()


def canonical_digest(
    meta: Mapping[str, object], tables: Mapping[str, pd.DataFrame | np.ndarray] | None = None
) -> str:
    """SHA-256 (hex) of a canonical serialization: ``meta`` as sorted-key JSON, then each table
    (in name order) column by column as little-endian bytes (floats as float64 with -0.0 folded
    to 0.0, timestamps as int64 nanoseconds, strings as JSON). Not pickle, not repr: the digest
    depends only on the names, dtypes and values."""
    h = hashlib.sha256()
    _chunk(h, "meta", _canonical_json(meta))
    for name in sorted(tables or {}):
        table = (tables or {})[name]
        _chunk(h, "table", name.encode())
        if isinstance(table, pd.DataFrame):
            for col in table.columns:
                values = table[col]
                if isinstance(values.dtype, pd.DatetimeTZDtype):
                    ns = pd.DatetimeIndex(values).as_unit("ns").asi8  # UTC epoch ns
                    tag, payload = f"M8{ns.shape}", np.ascontiguousarray(ns, "<i8").tobytes()
                elif values.dtype.kind in "fiubM":
                    tag, payload = _array_bytes(values.to_numpy())
                else:
                    tag, payload = _string_bytes(values)
                _chunk(h, f"col:{col}:{tag}", payload)
        else:
            tag, payload = _array_bytes(np.asarray(table))
            _chunk(h, f"array:{tag}", payload)
    return h.hexdigest()


# ---- small values ------------------------------------------------------------------------------


def _utc(ts: object, name: str) -> pd.Timestamp:
    try:
        t = pd.Timestamp(ts)
    except (ValueError, TypeError):
        raise DataError(f"{name} must be a timestamp; got {ts!r}", column=name) from None
    if t is pd.NaT or pd.isna(t):
        raise DataError(f"{name} must be a timestamp; got NaT", column=name)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.as_unit("ns")


def _finite(value: object, name: str, *, lo: float | None = None, strict: bool = False) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a number; got {value!r}", column=name) from None
    if not np.isfinite(x):
        raise DataError(f"{name} must be finite; got {x!r}", column=name)
    if lo is not None and (x <= lo if strict else x < lo):
        raise DataError(f"{name} must be {'>' if strict else '>='} {lo}; got {x!r}", column=name)
    return x


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise DataError(f"{name} must be a non-empty string; got {value!r}", column=name)
    return value


@dataclass(frozen=True)
class Member:
    """One model behind a bundle: its role ("vol:1D", "corr:1D", "fallback:1h"), registered name,
    version and alias (``champion``, ``challenger`` or None)."""

    role: str
    name: str
    version: str
    alias: str | None = None

    def __post_init__(self) -> None:
        for f in ("role", "name", "version"):
            _text(getattr(self, f), f"provenance.members.{f}")
        if self.alias is not None:
            _text(self.alias, "provenance.members.alias")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"role": self.role, "name": self.name, "version": self.version, "alias": self.alias}


@dataclass(frozen=True)
class Provenance:
    """Where a bundle's numbers came from.

    Attributes
    ----------
    members : the models (one :class:`Member` per role).
    data_fingerprints : dataset name -> content fingerprint (e.g. the store manifest's hash).
    code_version : the code that built the bundle (package version, git commit).
    """

    members: tuple[Member, ...] = ()
    data_fingerprints: Mapping[str, str] = field(default_factory=dict)
    code_version: str = "unknown"

    def __post_init__(self) -> None:
        members = tuple(self.members)
        if not all(isinstance(m, Member) for m in members):
            raise DataError("provenance.members must hold Member values", column="provenance")
        roles = [m.role for m in members]
        if len(set(roles)) != len(roles):
            raise DataError(f"provenance.members has duplicate roles: {roles}",
                            column="provenance.members")
        object.__setattr__(self, "members", tuple(sorted(members, key=lambda m: m.role)))
        fp = {_text(k, "provenance.data_fingerprints"): _text(v, f"provenance.data_fingerprints[{k}]")
              for k, v in dict(self.data_fingerprints).items()}
        object.__setattr__(self, "data_fingerprints", dict(sorted(fp.items())))
        _text(self.code_version, "provenance.code_version")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"members": [m.to_dict() for m in self.members],
                "data_fingerprints": dict(self.data_fingerprints),
                "code_version": self.code_version}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(Member(**m) for m in d["members"]), dict(d["data_fingerprints"]),
                   str(d["code_version"]))


@dataclass(frozen=True)
class Innovation:
    """The distribution of one symbol's standardized residuals ``z`` (unit variance).

    Attributes
    ----------
    name : "normal", "t" (Student-t scaled to unit variance) or "skewt" (Hansen's skewed-t).
    params : the shape parameters ("nu" > 2 for t; "nu", "lambda" in (-1, 1) for skewt).
    n_obs : number of residuals fitted.
    source : how it was chosen (e.g. "bic over normal,t,skewt on z before as_of").
    """

    name: str
    params: Mapping[str, float] = field(default_factory=dict)
    n_obs: int = 0
    source: str = "unspecified"

    def __post_init__(self) -> None:
        need = {"normal": set(), "t": {"nu"}, "skewt": {"nu", "lambda"}}
        if self.name not in need:
            raise DataError(f"innovation name must be one of {sorted(need)}; got {self.name!r}",
                            column="innovations.name")
        params = {str(k): _finite(v, f"innovations.params[{k}]") for k, v in
                  dict(self.params).items()}
        if set(params) != need[self.name]:
            raise DataError(f"innovation {self.name!r} needs params {sorted(need[self.name])}; "
                            f"got {sorted(params)}", column="innovations.params")
        if "nu" in params and params["nu"] <= 2:
            raise DataError(f"innovations.params[nu] must be > 2 (unit variance); got "
                            f"{params['nu']!r}", column="innovations.params")
        if "lambda" in params and not -1 < params["lambda"] < 1:
            raise DataError(f"innovations.params[lambda] must be in (-1, 1); got "
                            f"{params['lambda']!r}", column="innovations.params")
        object.__setattr__(self, "params", dict(sorted(params.items())))
        if isinstance(self.n_obs, bool) or not isinstance(self.n_obs, (int, np.integer)) or \
                self.n_obs < 0:
            raise DataError(f"innovations.n_obs must be an int >= 0; got {self.n_obs!r}",
                            column="innovations.n_obs")
        object.__setattr__(self, "n_obs", int(self.n_obs))
        _text(self.source, "innovations.source")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"name": self.name, "params": dict(self.params), "n_obs": self.n_obs,
                "source": self.source}


def _dates(values: object, name: str) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(values)
    if idx.tz is None:
        raise DataError(f"{name} must hold UTC timestamps; got naive dtype {idx.dtype}", column=name)
    idx = idx.tz_convert("UTC").as_unit("ns")
    if idx.hasnans:
        raise DataError(f"{name} must not hold NaT", column=name)
    return idx.sort_values().rename(None)


def _corr_matrix(values: object, m: int, name: str) -> np.ndarray:
    a = np.array(values, dtype="float64")
    if a.shape != (m, m):
        raise ModelError(f"{name} must have shape (n_symbols, n_symbols) = {(m, m)}; got {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{name} must be finite; got NaN or inf", column=name)
    try:
        check_correlation(a, name)
    except ValueError as exc:
        raise DataError(str(exc), column=name) from None
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class StressedCorrelation:
    """The correlation matrices margin takes the worst of, in the bundle's symbol order.

    Attributes
    ----------
    forecast : the forecast correlation (n_symbols, n_symbols).
    high : stressed-high correlation (the market's worst days).
    low : stressed-low / decorrelation matrix (days the usual co-movement broke down): the one
        that hurts a hedge.
    high_dates, low_dates : the dates (UTC) each stressed matrix was estimated from.
    source : how they were estimated.
    """

    forecast: np.ndarray
    high: np.ndarray
    low: np.ndarray
    high_dates: pd.DatetimeIndex
    low_dates: pd.DatetimeIndex
    source: str = "unspecified"

    def __post_init__(self) -> None:
        m = np.shape(self.forecast)[0] if np.ndim(self.forecast) == 2 else -1
        for f in ("forecast", "high", "low"):
            object.__setattr__(self, f, _corr_matrix(getattr(self, f), m, f"stressed.{f}"))
        for f in ("high_dates", "low_dates"):
            idx = _dates(getattr(self, f), f"stressed.{f}")
            if len(idx) == 0:
                raise DataError(f"stressed.{f} must name at least one date", column=f"stressed.{f}")
            object.__setattr__(self, f, idx)
        _text(self.source, "stressed.source")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StressedCorrelation):
            return NotImplemented
        return (all(np.array_equal(getattr(self, f), getattr(other, f))
                    for f in ("forecast", "high", "low"))
                and self.high_dates.equals(other.high_dates)
                and self.low_dates.equals(other.low_dates) and self.source == other.source)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class VolOfVol:
    """Vol-of-vol of one underlying: how much its implied volatility moves over a margin period.

    Attributes
    ----------
    underlying : e.g. "BTC".
    quantiles : horizon in days -> {level: quantile of the change in log implied vol over that
        horizon} (levels in (0, 1)).
    spot_vol_beta : slope of d log IV on the spot log return (None: no spot series was used).
    tenor_rule : how a shock at the reference tenor maps to other tenors, e.g.
        "(30/max(DTE,7))^p".
    tenor_exponent : the ``p`` of the rule.
    reference_tenor_days : the tenor the quantiles refer to (30 for DVOL).
    source : "implied:<index>" (e.g. "implied:DVOL") or "realized:<model>" (changes in log
        forecast vol).
    start, end : the data window the estimate used (UTC).
    min_tenor_days : tenors below it are treated as it (the rule does not explode at expiry).
    """

    underlying: str
    quantiles: Mapping[int, Mapping[float, float]]
    spot_vol_beta: float | None
    tenor_rule: str
    tenor_exponent: float
    reference_tenor_days: float
    source: str
    start: pd.Timestamp
    end: pd.Timestamp
    min_tenor_days: float = 0.0

    def __post_init__(self) -> None:
        _text(self.underlying, "vol_of_vol.underlying")
        if not isinstance(self.quantiles, Mapping) or not self.quantiles:
            raise DataError("vol_of_vol.quantiles must map horizon -> {level: value}",
                            column="vol_of_vol.quantiles")
        clean: dict[int, dict[float, float]] = {}
        for h, levels in sorted(self.quantiles.items()):
            if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
                raise DataError(f"vol_of_vol.quantiles horizon must be an int >= 1; got {h!r}",
                                column="vol_of_vol.quantiles")
            row = {}
            for q, v in sorted(dict(levels).items()):
                q = float(q)
                if not 0 < q < 1:
                    raise DataError(f"vol_of_vol.quantiles level must be in (0, 1); got {q!r}",
                                    column="vol_of_vol.quantiles")
                row[q] = _finite(v, f"vol_of_vol.quantiles[{h}][{q:g}]")
            if not row:
                raise DataError(f"vol_of_vol.quantiles[{h}] is empty", column="vol_of_vol.quantiles")
            vals = list(row.values())
            if vals != sorted(vals):
                raise DataError(f"vol_of_vol.quantiles[{h}] must increase with the level; got "
                                f"{row}", column="vol_of_vol.quantiles")
            clean[int(h)] = row
        object.__setattr__(self, "quantiles", clean)
        if self.spot_vol_beta is not None:
            object.__setattr__(self, "spot_vol_beta", _finite(self.spot_vol_beta,
                                                              "vol_of_vol.spot_vol_beta"))
        object.__setattr__(self, "min_tenor_days", _finite(self.min_tenor_days,
                                                           "vol_of_vol.min_tenor_days", lo=0.0))
        _text(self.tenor_rule, "vol_of_vol.tenor_rule")
        object.__setattr__(self, "tenor_exponent", _finite(self.tenor_exponent,
                                                           "vol_of_vol.tenor_exponent"))
        object.__setattr__(self, "reference_tenor_days", _finite(
            self.reference_tenor_days, "vol_of_vol.reference_tenor_days", lo=0.0, strict=True))
        _text(self.source, "vol_of_vol.source")
        if self.source.split(":")[0] not in ("implied", "realized"):
            raise DataError(f"vol_of_vol.source must start with 'implied' or 'realized'; got "
                            f"{self.source!r}", column="vol_of_vol.source")
        start, end = _utc(self.start, "vol_of_vol.start"), _utc(self.end, "vol_of_vol.end")
        if end < start:
            raise DataError(f"vol_of_vol.end {end} is before start {start}", column="vol_of_vol.end")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    def tenor_factor(self, dte_days: float) -> float:
        """Multiplier of the reference-tenor shock at ``dte_days``:
        ``(reference_tenor_days / max(dte_days, min_tenor_days)) ** tenor_exponent``."""
        dte = max(_finite(dte_days, "dte_days", lo=0.0, strict=True), self.min_tenor_days)
        return float((self.reference_tenor_days / dte) ** self.tenor_exponent)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (quantile keys as strings: horizon, then repr of the level)."""
        return {"underlying": self.underlying,
                "quantiles": {str(h): {repr(q): v for q, v in row.items()}
                              for h, row in self.quantiles.items()},
                "spot_vol_beta": self.spot_vol_beta, "tenor_rule": self.tenor_rule,
                "tenor_exponent": self.tenor_exponent,
                "reference_tenor_days": self.reference_tenor_days, "source": self.source,
                "start": self.start.isoformat(), "end": self.end.isoformat(),
                "min_tenor_days": self.min_tenor_days}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VolOfVol:
        """Inverse of :meth:`to_dict`."""
        q = {int(h): {float(k): float(v) for k, v in row.items()}
             for h, row in d["quantiles"].items()}
        beta = None if d["spot_vol_beta"] is None else float(d["spot_vol_beta"])
        return cls(d["underlying"], q, beta, d["tenor_rule"],
                   float(d["tenor_exponent"]), float(d["reference_tenor_days"]), d["source"],
                   pd.Timestamp(d["start"]), pd.Timestamp(d["end"]), float(d["min_tenor_days"]))


def _codes(values: pd.Series, categories: tuple[str, ...]) -> np.ndarray:
    """Position of each value in ``categories`` (all values are known to be in it)."""
    codes, uniques = pd.factorize(values)
    pos = {c: i for i, c in enumerate(categories)}
    return np.asarray([pos[str(u)] for u in uniques], dtype="int64")[codes]


def _failure_dict(f: Failure) -> dict[str, object]:
    d = f.to_dict()
    d["details"] = json.loads(json.dumps(d["details"], default=str, sort_keys=True))
    return d


@dataclass(frozen=True, eq=False)
class RiskForecastBundle:
    """Everything margin needs from the models for a set of symbols at one ``as_of``.

    Units: variances are of log returns in the unit's periods (``"1D"``: daily, ``"1h"``: hourly),
    never annualized; ``forecast_var`` is the per-period **average** variance over ``t+1..t+h`` as
    issued (see :class:`VolForecast`), the ``h``-period variance is ``h x forecast_var x scale``.

    Attributes
    ----------
    as_of : the UTC time the bundle is valid for; every cutoff, origin and date in it is <= as_of.
    symbols : the symbol order of every matrix (unique).
    vol_table : tidy table, one row per (unit, symbol, horizon), columns :data:`VOL_COLUMNS`:
        ``forecast_var`` (issued, > 0), ``scale`` (the variance scale applied by :meth:`vol` and
        :meth:`covariance`, > 0) and its 95% interval ``scale_lo <= scale <= scale_hi``
        (1, 1, 1 when no scale was estimated), the model and the origin/cutoff it came from.
        A table, not ``VolForecast`` objects: the bundle holds one origin per symbol, the scale
        and its interval sit next to the number they scale, and the table serializes to one
        parquet file; :meth:`vol_forecast` rebuilds a ``VolForecast`` when one is wanted.
    corr : unit -> :class:`CorrForecast` with one origin (<= as_of), ``symbols`` equal to the
        bundle's and every horizon of that unit in ``vol``. May be empty for one symbol.
    residuals : tidy table of the out-of-sample residual history, columns
        :data:`RESIDUAL_COLUMNS`: per unit and symbol, ``ts`` (the close ending the return),
        ``ret`` (log return over the period ending at ``ts``), ``sigma_issued`` (> 0, the
        1-period volatility issued at the previous close), ``z = ret / sigma_issued``.
    innovations : symbol -> :class:`Innovation` (the marginal distribution of ``z``).
    copula_df : t-copula degrees of freedom (> 2) or None (Gaussian dependence).
    stressed : :class:`StressedCorrelation` or None.
    vol_of_vol : underlying -> :class:`VolOfVol`.
    stale : symbol -> :class:`~features.errors.Failure` for each symbol whose forecast is older
        than allowed (or fell back to a baseline), with the reason.
    provenance : :class:`Provenance`.
    bundle_id : SHA-256 of the canonical serialization of all of the above (computed at
        construction; treat the tables as read-only: build a new bundle to change a value).
    """

    as_of: pd.Timestamp
    symbols: tuple[str, ...]
    vol_table: pd.DataFrame
    corr: Mapping[str, CorrForecast] = field(default_factory=dict)
    residuals: pd.DataFrame | None = None
    innovations: Mapping[str, Innovation] = field(default_factory=dict)
    copula_df: float | None = None
    stressed: StressedCorrelation | None = None
    vol_of_vol: Mapping[str, VolOfVol] = field(default_factory=dict)
    stale: Mapping[str, Failure] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    bundle_id: str = field(init=False)

    # ---- validation ------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        as_of = _utc(self.as_of, "as_of")
        object.__setattr__(self, "as_of", as_of)
        syms = (tuple(self.symbols) if not isinstance(self.symbols, str) else ())
        if not syms or not all(isinstance(s, str) and s for s in syms):
            raise ModelError(f"symbols must be a non-empty sequence of strings; got {self.symbols!r}")
        if len(set(syms)) != len(syms):
            raise ModelError(f"symbols must be unique; got {list(syms)}")
        object.__setattr__(self, "symbols", syms)
        object.__setattr__(self, "vol_table", self._init_vol(self.vol_table))
        self._init_corr()
        object.__setattr__(self, "residuals", self._init_residuals(self.residuals))
        self._init_innovations()
        if self.copula_df is not None:
            df = _finite(self.copula_df, "copula_df", lo=2.0, strict=True)
            object.__setattr__(self, "copula_df", df)
        if self.stressed is not None:
            self._init_stressed()
        self._init_volvol()
        self._init_stale()
        if not isinstance(self.provenance, Provenance):
            raise ModelError(f"provenance must be a Provenance; got {type(self.provenance).__name__}")
        object.__setattr__(self, "bundle_id", canonical_digest(*self._canonical()))

    def _symbol_check(self, found: Iterable[str], name: str, *, exact: bool = False) -> None:
        found = list(found)
        unknown = sorted(set(found) - set(self.symbols))
        if unknown:
            raise ModelError(f"{name} names symbol(s) {unknown} not in the bundle's symbols "
                             f"{list(self.symbols)}")
        if exact and set(found) != set(self.symbols):
            missing = [s for s in self.symbols if s not in set(found)]
            raise ModelError(f"{name} lacks symbol(s) {missing}; every bundle symbol needs one")

    def _init_vol(self, vol: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(vol, pd.DataFrame):
            raise ModelError(f"vol must be a DataFrame with columns {list(VOL_COLUMNS)}; got "
                             f"{type(vol).__name__}")
        missing = [c for c in VOL_COLUMNS if c not in vol.columns]
        if missing:
            raise ModelError(f"vol is missing column(s) {missing}; got {list(vol.columns)}")
        if len(vol) == 0:
            raise ModelError("vol must hold at least one forecast; got an empty table")
        v = vol.loc[:, list(VOL_COLUMNS)].copy()
        for c in ("unit", "symbol", "model_id", "model_version"):
            if v[c].isna().any() or not all(isinstance(x, str) and x for x in v[c]):
                raise DataError(f"vol.{c} must hold non-empty strings", column=f"vol.{c}")
            v[c] = v[c].astype(str)
        for u in v["unit"].unique():
            try:
                canon = format_period(parse_horizon_unit(u))
            except ValueError as exc:
                raise DataError(f"vol.unit: {exc}", column="vol.unit") from None
            if canon != u:
                raise DataError(f"vol.unit must be canonical ({canon!r} for {u!r})",
                                column="vol.unit")
        self._symbol_check(v["symbol"], "vol")
        h = v["horizon"]
        if h.isna().any() or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool)
                                     and x >= 1 for x in h):
            raise DataError(f"vol.horizon must hold ints >= 1; got {h.tolist()[:10]}",
                            column="vol.horizon")
        v["horizon"] = h.astype("int64")
        for c in ("origin_ts", "data_cutoff_ts"):
            try:
                ts = pd.DatetimeIndex(v[c])
            except (TypeError, ValueError):
                raise DataError(f"vol.{c} must hold UTC timestamps", column=f"vol.{c}") from None
            if ts.tz is None or str(ts.tz) != "UTC" or ts.hasnans:
                raise DataError(f"vol.{c} must hold UTC timestamps without NaT",
                                column=f"vol.{c}")
            v[c] = ts.as_unit("ns")
            late = ts > self.as_of
            if late.any():
                i = int(np.flatnonzero(late)[0])
                raise DataError(
                    f"vol.{c} {ts[i]} of {v['symbol'].iloc[i]} ({v['unit'].iloc[i]}) is after "
                    f"as_of {self.as_of}; a bundle may use only data up to as_of",
                    column=f"vol.{c}")
        if (v["data_cutoff_ts"] < v["origin_ts"]).any():
            raise DataError("vol.data_cutoff_ts is before its origin_ts",
                            column="vol.data_cutoff_ts")
        for c in ("forecast_var", "scale", "scale_lo", "scale_hi"):
            x = pd.to_numeric(v[c], errors="coerce").to_numpy(dtype="float64")
            bad = ~np.isfinite(x) | (x <= 0)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                what = "a negative or zero variance" if x[i] <= 0 else "NaN or inf"
                raise DataError(
                    f"vol.{c} must be finite and > 0; got {float(x[i])!r} ({what}) for "
                    f"{v['symbol'].iloc[i]} {v['unit'].iloc[i]} h={v['horizon'].iloc[i]}",
                    column=f"vol.{c}")
            v[c] = x
        if ((v["scale_lo"] > v["scale"]) | (v["scale"] > v["scale_hi"])).any():
            i = int(np.flatnonzero((v["scale_lo"] > v["scale"]) | (v["scale"] > v["scale_hi"]))[0])
            raise DataError(f"vol.scale must lie in [scale_lo, scale_hi]; got "
                            f"{v['scale_lo'].iloc[i]!r} <= {v['scale'].iloc[i]!r} <= "
                            f"{v['scale_hi'].iloc[i]!r}", column="vol.scale")
        units, syms, hs = (v["unit"].to_numpy(dtype=object), v["symbol"].to_numpy(dtype=object),
                           v["horizon"].to_numpy(dtype="int64"))
        per: dict[str, dict[str, list[int]]] = {}
        for u, s, h in zip(units, syms, hs, strict=True):
            per.setdefault(u, {}).setdefault(s, []).append(int(h))
        for u in sorted(per):
            for s, lst in per[u].items():
                if len(set(lst)) != len(lst):
                    raise DataError(f"vol has duplicate (unit, symbol, horizon) rows for {s} "
                                    f"{u}", column="vol")
            if set(per[u]) != set(self.symbols):
                missing = [s for s in self.symbols if s not in per[u]]
                raise ModelError(f"vol[{u!r}] lacks symbol(s) {missing}; every unit covers every "
                                 "bundle symbol")
            sets = {s: tuple(sorted(lst)) for s, lst in per[u].items()}
            if len(set(sets.values())) != 1:
                raise ModelError(f"vol[{u!r}] horizons differ between symbols: {sets}")
        order = np.lexsort((hs, pd.Categorical(syms, categories=list(self.symbols)).codes,
                            pd.Categorical(units, categories=sorted(per)).codes))
        out = v.take(order).reset_index(drop=True)
        object.__setattr__(self, "_units", tuple(sorted(per)))
        object.__setattr__(self, "_horizons", {u: tuple(sorted(set(next(iter(per[u].values())))))
                                               for u in per})
        return out

    @property
    def units(self) -> tuple[str, ...]:
        """The time units with forecasts ("1D", "1h"), sorted."""
        return self._units  # type: ignore[attr-defined]

    def horizons(self, unit: str) -> tuple[int, ...]:
        """The horizons (in periods of ``unit``) the bundle holds."""
        self._unit(unit)
        return self._horizons[unit]  # type: ignore[attr-defined]

    def _unit(self, unit: str) -> None:
        if unit not in self.units:
            raise KeyError(f"unit {unit!r} is not in this bundle; units {list(self.units)}")

    def _init_corr(self) -> None:
        if not isinstance(self.corr, Mapping):
            raise ModelError("corr must be a mapping unit -> CorrForecast")
        clean = {}
        for u in sorted(self.corr):
            cf = self.corr[u]
            name = f"corr[{u!r}]"
            if u not in self.units:
                raise ModelError(f"{name}: unit {u!r} has no volatility forecasts (units "
                                 f"{list(self.units)})")
            if not isinstance(cf, CorrForecast):
                raise ModelError(f"{name} must be a CorrForecast; got {type(cf).__name__}")
            if tuple(cf.symbols) != self.symbols:
                raise ModelError(f"{name}.symbols {list(cf.symbols)} differ from the bundle's "
                                 f"symbols {list(self.symbols)} (same symbols, same order)")
            if len(cf.origins) != 1:
                raise ModelError(f"{name} must hold exactly one origin; got {len(cf.origins)}")
            if format_period(parse_horizon_unit(cf.horizon_unit)) != u:
                raise ModelError(f"{name}.horizon_unit {cf.horizon_unit!r} is not {u!r}")
            missing = [h for h in self.horizons(u) if h not in cf.horizons]
            if missing:
                raise ModelError(f"{name} lacks horizon(s) {missing} of vol[{u!r}]")
            cut = cf.cutoff_per_origin().iloc[0]
            for what, t in (("origin", cf.origins[0]), ("data_cutoff_ts", cut)):
                if t > self.as_of:
                    raise DataError(f"{name} {what} {t} is after as_of {self.as_of}",
                                    column=f"{name}.{what}")
            clean[u] = cf
        if len(self.symbols) > 1:
            lacking = [u for u in self.units if u not in clean]
            if lacking:
                raise ModelError(f"corr lacks unit(s) {lacking}: with {len(self.symbols)} symbols "
                                 "every unit needs a correlation forecast")
        object.__setattr__(self, "corr", clean)

    def _init_residuals(self, res: pd.DataFrame | None) -> pd.DataFrame:
        if res is None:
            res = pd.DataFrame({c: [] for c in RESIDUAL_COLUMNS})
        if not isinstance(res, pd.DataFrame):
            raise ModelError(f"residuals must be a DataFrame; got {type(res).__name__}")
        missing = [c for c in RESIDUAL_COLUMNS if c not in res.columns]
        if missing:
            raise ModelError(f"residuals is missing column(s) {missing}; got {list(res.columns)}")
        r = res
        cols: dict[str, np.ndarray] = {}
        for c in ("unit", "symbol"):
            if r[c].isna().any() or not all(isinstance(x, str) and x for x in pd.unique(r[c])):
                raise DataError(f"residuals.{c} must hold non-empty strings",
                                column=f"residuals.{c}")
        self._symbol_check(pd.unique(r["symbol"]), "residuals")
        unknown = sorted(set(pd.unique(r["unit"])) - set(self.units))
        if unknown:
            raise ModelError(f"residuals name unit(s) {unknown} without volatility forecasts")
        ts = pd.DatetimeIndex(r["ts"]) if len(r) else pd.DatetimeIndex([], tz="UTC")
        if ts.tz is None or str(ts.tz) != "UTC" or ts.hasnans:
            raise DataError("residuals.ts must hold UTC timestamps without NaT",
                            column="residuals.ts")
        ts = ts.as_unit("ns")
        if len(r) and ts.max() > self.as_of:
            raise DataError(f"residuals.ts {ts.max()} is after as_of {self.as_of}; a bundle may "
                            "use only data up to as_of", column="residuals.ts")
        sym = r["symbol"]
        for c in ("ret", "sigma_issued", "z"):
            x = pd.to_numeric(r[c], errors="coerce").to_numpy(dtype="float64")
            bad = ~np.isfinite(x) | ((x <= 0) if c == "sigma_issued" else False)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(f"residuals.{c} must be finite{' and > 0' if c == 'sigma_issued' else ''}; "
                                f"got {float(x[i])!r} for {sym.iloc[i]} at {ts[i]}",
                                column=f"residuals.{c}")
            cols[c] = x
        if len(r):
            zz = cols["ret"] / cols["sigma_issued"]
            off = ~np.isclose(cols["z"], zz, rtol=_Z_RTOL, atol=1e-300)
            if off.any():
                i = int(np.flatnonzero(off)[0])
                raise DataError(f"residuals.z must equal ret / sigma_issued; got "
                                f"{float(cols['z'][i])!r} vs {float(zz[i])!r} for {sym.iloc[i]} at "
                                f"{ts[i]}", column="residuals.z")
        sym_code = _codes(r["symbol"], self.symbols)
        unit_code = _codes(r["unit"], self.units)
        ts_ns = ts.asi8
        order = np.lexsort((ts_ns, sym_code, unit_code))
        keys = np.column_stack([unit_code, sym_code, ts_ns])[order]
        if len(keys) > 1 and (keys[1:] == keys[:-1]).all(axis=1).any():
            raise DataError("residuals has duplicate (unit, symbol, ts) rows", column="residuals")
        units_arr = np.asarray(self.units, dtype=object)[unit_code[order]]
        syms_arr = np.asarray(self.symbols, dtype=object)[sym_code[order]]
        return pd.DataFrame({
            "unit": pd.array(units_arr, dtype="str"), "symbol": pd.array(syms_arr, dtype="str"),
            "ts": ts.take(order), "ret": cols["ret"][order],
            "sigma_issued": cols["sigma_issued"][order], "z": cols["z"][order]})

    def _init_innovations(self) -> None:
        inn = dict(self.innovations)
        self._symbol_check(inn, "innovations")
        for s, d in inn.items():
            if not isinstance(d, Innovation):
                raise ModelError(f"innovations[{s!r}] must be an Innovation; got {type(d).__name__}")
        object.__setattr__(self, "innovations", {s: inn[s] for s in self.symbols if s in inn})

    def _init_stressed(self) -> None:
        st = self.stressed
        if not isinstance(st, StressedCorrelation):
            raise ModelError(f"stressed must be a StressedCorrelation; got {type(st).__name__}")
        if st.forecast.shape != (len(self.symbols),) * 2:
            raise ModelError(f"stressed matrices are {st.forecast.shape}; the bundle has "
                             f"{len(self.symbols)} symbols")
        for f in ("high_dates", "low_dates"):
            last = getattr(st, f)[-1]
            if last > self.as_of:
                raise DataError(f"stressed.{f} {last} is after as_of {self.as_of}",
                                column=f"stressed.{f}")

    def _init_volvol(self) -> None:
        vv = dict(self.vol_of_vol)
        for u, v in vv.items():
            if not isinstance(v, VolOfVol) or v.underlying != u:
                raise ModelError(f"vol_of_vol[{u!r}] must be a VolOfVol of underlying {u!r}")
            if v.end > self.as_of:
                raise DataError(f"vol_of_vol[{u!r}].end {v.end} is after as_of {self.as_of}",
                                column="vol_of_vol.end")
        object.__setattr__(self, "vol_of_vol", dict(sorted(vv.items())))

    def _init_stale(self) -> None:
        st = dict(self.stale)
        self._symbol_check(st, "stale")
        for s, f in st.items():
            if not isinstance(f, Failure):
                raise ModelError(f"stale[{s!r}] must be a features.errors.Failure; got "
                                 f"{type(f).__name__}")
        object.__setattr__(self, "stale", {s: st[s] for s in self.symbols if s in st})

    # ---- canonical form ------------------------------------------------------------------------------
    def _meta(self) -> dict[str, object]:
        return {
            "format": BUNDLE_FORMAT,
            "as_of": self.as_of.isoformat(),
            "symbols": list(self.symbols),
            "corr": {u: {"model_id": cf.model_id, "model_version": cf.model_version,
                         "horizon_unit": cf.horizon_unit} for u, cf in self.corr.items()},
            "innovations": {s: d.to_dict() for s, d in self.innovations.items()},
            "copula_df": self.copula_df,
            "stressed": None if self.stressed is None else {"source": self.stressed.source},
            "vol_of_vol": {u: v.to_dict() for u, v in self.vol_of_vol.items()},
            "stale": {s: _failure_dict(f) for s, f in self.stale.items()},
            "provenance": self.provenance.to_dict(),
        }

    def _tables(self) -> dict[str, pd.DataFrame]:
        tables = {"vol": self.vol_table, "residuals": self.residuals}
        if self.corr:
            tables["corr"] = pd.concat(
                [cf.to_frame().assign(unit=u) for u, cf in self.corr.items()], ignore_index=True)
        if self.stressed is not None:
            st = self.stressed
            m = len(self.symbols)
            ia, ib = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
            syms = np.asarray(self.symbols, dtype=object)
            tables["stressed"] = pd.DataFrame({
                "symbol_a": syms[ia.ravel()].astype(str), "symbol_b": syms[ib.ravel()].astype(str),
                "forecast": st.forecast.ravel(), "high": st.high.ravel(), "low": st.low.ravel()})
            tables["stressed_dates"] = pd.DataFrame({
                "kind": ["high"] * len(st.high_dates) + ["low"] * len(st.low_dates),
                "date": st.high_dates.append(st.low_dates)})
        return tables

    def _canonical(self) -> tuple[dict[str, object], dict[str, pd.DataFrame]]:
        return self._meta(), self._tables()

    def __eq__(self, other: object) -> bool:
        """Equal when every field is equal to the bit (compared through the content hash of the
        canonical serialization, which covers every number, string and date)."""
        if not isinstance(other, RiskForecastBundle):
            return NotImplemented
        return self.bundle_id == other.bundle_id

    def __hash__(self) -> int:
        return hash(self.bundle_id)

    # ---- access -----------------------------------------------------------------------------
    def _rows(self, unit: str, h: int) -> pd.DataFrame:
        self._unit(unit)
        if h not in self.horizons(unit):
            raise KeyError(f"horizon {h!r} is not in this bundle for unit {unit!r}; horizons "
                           f"{list(self.horizons(unit))}")
        g = self.vol_table[(self.vol_table["unit"] == unit) & (self.vol_table["horizon"] == h)]
        return g.set_index("symbol").loc[list(self.symbols)]

    def variance(self, symbol: str, h: int, unit: str = "1D", *, scaled: bool = True) -> float:
        """Variance of the ``h``-period log return of ``symbol`` (``h`` periods of ``unit``):
        ``h x forecast_var x scale`` (``scale`` = 1 with ``scaled=False``)."""
        if symbol not in self.symbols:
            raise KeyError(f"symbol {symbol!r} is not in this bundle; symbols {list(self.symbols)}")
        row = self._rows(unit, h).loc[symbol]
        return float(h * row["forecast_var"] * (row["scale"] if scaled else 1.0))

    def vol(self, symbol: str, h: int, unit: str = "1D", *, scaled: bool = True) -> float:
        """Volatility of the ``h``-period log return of ``symbol`` in return units (not
        annualized, not in percent): ``sqrt(h x forecast_var x scale)``."""
        return float(np.sqrt(self.variance(symbol, h, unit, scaled=scaled)))

    def covariance(self, h: int, unit: str = "1D", *, scaled: bool = True) -> np.ndarray:
        """Covariance of the ``h``-period log returns, array of shape (n_symbols, n_symbols) in
        ``symbols`` order: ``D R D`` with ``R`` the horizon-``h`` correlation forecast and
        ``D = diag(sqrt(h x forecast_var x scale))``. PSD because ``R`` is (checked at
        construction) and ``D`` is a positive diagonal."""
        rows = self._rows(unit, h)
        var = h * rows["forecast_var"].to_numpy() * (rows["scale"].to_numpy() if scaled else 1.0)
        sd = np.sqrt(var)
        r = self.corr[unit].at(h)[0] if unit in self.corr else np.eye(len(self.symbols))
        cov = r * sd[:, None] * sd[None, :]
        return 0.5 * (cov + cov.T)

    def correlation(self, h: int, unit: str = "1D") -> np.ndarray:
        """The forecast correlation of the ``h``-period returns, (n_symbols, n_symbols)."""
        self._unit(unit)
        if h not in self.horizons(unit):
            raise KeyError(f"horizon {h!r} is not in this bundle for unit {unit!r}; horizons "
                           f"{list(self.horizons(unit))}")
        return np.array(self.corr[unit].at(h)[0]) if unit in self.corr else np.eye(len(self.symbols))

    def vol_forecast(self, symbol: str, unit: str = "1D") -> VolForecast:
        """The issued forecast of ``symbol`` in ``unit`` as a one-origin :class:`VolForecast`
        (unscaled, as issued)."""
        self._unit(unit)
        g = self.vol_table[(self.vol_table["unit"] == unit) & (self.vol_table["symbol"] == symbol)]
        if g.empty:
            raise KeyError(f"symbol {symbol!r} is not in this bundle; symbols {list(self.symbols)}")
        origin = pd.DatetimeIndex([g["origin_ts"].iloc[0]])
        var = pd.DataFrame([g["forecast_var"].to_numpy()], index=origin,
                           columns=[int(h) for h in g["horizon"]])
        return VolForecast(variance=var, symbol=symbol, horizon_unit=unit,
                           annualization=default_annualization(symbol, parse_horizon_unit(unit)),
                           model_id=str(g["model_id"].iloc[0]),
                           model_version=str(g["model_version"].iloc[0]),
                           data_cutoff_ts=pd.Timestamp(g["data_cutoff_ts"].iloc[0]))

    def summary(self) -> pd.DataFrame:
        """One row per unit, symbol and horizon: the issued and scaled ``h``-period vols, the
        scale with its interval, the model and whether the symbol is stale."""
        v = self.vol_table
        out = v[["unit", "symbol", "horizon", "model_id", "model_version"]].copy()
        out["vol"] = np.sqrt(v["horizon"] * v["forecast_var"])
        out["vol_scaled"] = np.sqrt(v["horizon"] * v["forecast_var"] * v["scale"])
        out[["scale", "scale_lo", "scale_hi"]] = v[["scale", "scale_lo", "scale_hi"]]
        out["stale"] = v["symbol"].isin(list(self.stale))
        return out

    # ---- files ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bundle to the directory ``path`` (created): ``bundle.json`` (metadata, the
        bundle_id) and one parquet file per table (``vol``, ``residuals``, ``corr``,
        ``stressed``, ``stressed_dates``). Atomic: written to a temporary sibling directory and
        renamed into place. Saving the same bundle again is a no-op; a different bundle at
        ``path`` raises ``DataError`` (bundles are never overwritten). No pickle."""
        target = Path(path)
        if target.exists():
            existing = _read_id(target)
            if existing == self.bundle_id:
                return target
            if existing is None:
                raise DataError("the path exists and holds no bundle (no readable bundle.json); "
                                "refusing to write into it", source=str(target))
            raise DataError(f"a different bundle ({existing}) is already saved there; bundles are "
                            f"never overwritten (this one is {self.bundle_id})", source=str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            meta, tables = self._canonical()
            files = {}
            for name, table in tables.items():
                table.to_parquet(tmp / f"{name}.parquet", index=False)
                files[name] = f"{name}.parquet"
            doc = {"bundle_id": self.bundle_id, "meta": meta, "files": files}
            with open(tmp / "bundle.json", "w", encoding="utf-8") as fh:
                fh.write(json.dumps(doc, sort_keys=True, indent=1, allow_nan=False))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.rename(tmp, target)
            except OSError:
                if _read_id(target) != self.bundle_id:  # a concurrent writer of another bundle
                    raise DataError(f"a different bundle appeared at {target} while saving",
                                    source=str(target)) from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RiskForecastBundle:
        """Read a bundle written by :meth:`save`; checks its recorded bundle_id against the
        content (``DataError`` if the files were altered)."""
        p = Path(path)
        try:
            doc = json.loads((p / "bundle.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError("no bundle here (bundle.json is missing)", source=str(p)) from None
        except json.JSONDecodeError as exc:
            raise DataError(f"bundle.json is not valid JSON: {exc}", source=str(p)) from None
        meta = doc["meta"]
        if meta.get("format") != BUNDLE_FORMAT:
            raise DataError(f"bundle format {meta.get('format')!r} is not {BUNDLE_FORMAT}",
                            source=str(p))
        tables = {name: pd.read_parquet(p / f) for name, f in doc["files"].items()}
        symbols = tuple(meta["symbols"])
        corr = {}
        for u, info in meta["corr"].items():
            frame = tables["corr"][tables["corr"]["unit"] == u].drop(columns="unit")
            corr[u] = CorrForecast.from_frame(frame, horizon_unit=info["horizon_unit"],
                                              symbols=symbols)
        stressed = None
        if meta["stressed"] is not None:
            st, d = tables["stressed"], tables["stressed_dates"]
            m = len(symbols)
            stressed = StressedCorrelation(
                forecast=st["forecast"].to_numpy().reshape(m, m),
                high=st["high"].to_numpy().reshape(m, m), low=st["low"].to_numpy().reshape(m, m),
                high_dates=pd.DatetimeIndex(d.loc[d["kind"] == "high", "date"]),
                low_dates=pd.DatetimeIndex(d.loc[d["kind"] == "low", "date"]),
                source=meta["stressed"]["source"])
        bundle = cls(
            as_of=pd.Timestamp(meta["as_of"]),
            symbols=symbols,
            vol_table=tables["vol"],
            corr=corr,
            residuals=tables["residuals"],
            innovations={s: Innovation(**d) for s, d in meta["innovations"].items()},
            copula_df=meta["copula_df"],
            stressed=stressed,
            vol_of_vol={u: VolOfVol.from_dict(d) for u, d in meta["vol_of_vol"].items()},
            stale={s: Failure.from_dict(d) for s, d in meta["stale"].items()},
            provenance=Provenance.from_dict(meta["provenance"]),
        )
        if bundle.bundle_id != doc["bundle_id"]:
            raise DataError(f"content hash {bundle.bundle_id} differs from the recorded bundle_id "
                            f"{doc['bundle_id']}: the files were altered", source=str(p))
        return bundle


def _read_id(path: Path) -> str | None:
    try:
        return str(json.loads((path / "bundle.json").read_text(encoding="utf-8"))["bundle_id"])
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, KeyError):
        return None
