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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.schema import TS_DTYPE
from features.symbols import symbol_meta

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
        evaluation), ``target_start`` = origin, ``target_end`` = origin + h periods."""
        v = self.variance
        n, k = v.shape
        hs = np.asarray(self.horizons, dtype="int64")
        horizon = np.tile(hs, n)
        period = self.period
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
            "target_end": origin_idx + pd.to_timedelta(horizon * period.value, unit="ns"),
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
            span = pd.to_timedelta(f["target_end"] - f["target_start"]) / f["horizon"].astype(
                "int64"
            )
            periods = span.unique()
            if len(periods) != 1:
                raise ValueError(
                    f"cannot infer horizon_unit: target spans per horizon differ ({periods[:5]})"
                )
            horizon_unit = format_period(pd.Timedelta(periods[0]))
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
        )


def __getattr__(name: str) -> object:
    """``CorrForecast`` lives in :mod:`models.corr_forecast` (it pulls in numba for the PSD check);
    it is re-exported here lazily so the forecast types have one import path."""
    if name == "CorrForecast":
        from models.corr_forecast import CorrForecast

        return CorrForecast
    raise AttributeError(f"module 'models.forecast' has no attribute {name!r}")
