"""Correlation forecasts: the correlation value every correlation model returns and margin sees.

Units and conventions
---------------------
``CorrForecast.corr`` holds, for each origin ``t`` and horizon ``h``, the forecast correlation
matrix of the returns over ``t+1..t+h`` (the ``h``-period return), symbols in ``symbols`` order.
Every matrix is symmetric, has a unit diagonal and is positive semi-definite; the constructor
checks it and raises otherwise. ``repaired`` flags the matrices that went through
:func:`features.covariance.nearest_correlation` (Higham) before they were stored.

The covariance over a margin period of ``h`` periods combines the correlation with per-symbol
variance forecasts (:class:`models.forecast.VolForecast`, per-period *average* variances):
``Sigma_h = D_h R_h D_h`` with ``D_h = diag(sqrt(h x average_var_h))`` (the cumulative variances),
see :meth:`CorrForecast.covariance`.

``stressed`` is one stressed correlation matrix for the symbol set (e.g. the correlation on the
market's worst days of the estimation window): margin floors hedge and diversification credit
with it.

The long table (:meth:`CorrForecast.to_frame`) has one row per origin, horizon and ordered pair of
symbols (diagonal included): ``model_id, model_version, origin_ts, data_cutoff_ts, horizon,
symbol_a, symbol_b, corr, repaired, stressed_corr``; :meth:`CorrForecast.from_frame` inverts it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from features.schema import TS_DTYPE


class _CumulativeVariance(Protocol):
    """What :meth:`CorrForecast.covariance` needs of a variance forecast (a
    :class:`models.forecast.VolForecast`). A protocol, not an import: ``models.forecast`` imports
    this module at top level, so this module must not import it back (no cycle)."""

    def cumulative_var(self, h: int) -> pd.Series: ...

CORR_FRAME_COLUMNS = (
    "model_id",
    "model_version",
    "origin_ts",
    "data_cutoff_ts",
    "horizon",
    "symbol_a",
    "symbol_b",
    "corr",
    "repaired",
    "stressed_corr",
)
"""Columns of :meth:`CorrForecast.to_frame`."""

SYMMETRY_TOL = 1e-10
"""Largest accepted ``|C - C'|`` and ``|diag(C) - 1|``."""
PSD_TOL = 1e-10
"""Relative eigenvalue tolerance of :func:`features.covariance.is_psd`."""


def check_correlation(c: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``c`` (n, n) is a valid correlation matrix:
    finite, symmetric, unit diagonal, entries in [-1, 1] and positive semi-definite."""
    from features.covariance import is_psd  # here, not at import: that module loads numba

    a = np.asarray(c, dtype="float64")
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square matrix; got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite; got NaN or inf entries")
    asym = float(np.max(np.abs(a - a.T))) if a.size else 0.0
    if asym > SYMMETRY_TOL:
        raise ValueError(f"{name} must be symmetric; got max |C - C'| = {asym:.3g}")
    diag = float(np.max(np.abs(np.diag(a) - 1.0))) if a.size else 0.0
    if diag > SYMMETRY_TOL:
        raise ValueError(f"{name} must have a unit diagonal; got max |diag - 1| = {diag:.3g}")
    if a.size and float(np.max(np.abs(a))) > 1.0 + SYMMETRY_TOL:
        raise ValueError(f"{name} entries must lie in [-1, 1]; got {float(np.max(np.abs(a)))!r}")
    if not is_psd(a, tol=PSD_TOL):
        w = float(np.linalg.eigvalsh(0.5 * (a + a.T))[0])
        raise ValueError(
            f"{name} must be positive semi-definite; got smallest eigenvalue {w:.3g} "
            "(repair it with features.covariance.nearest_correlation)"
        )


def _utc_index(values: object, name: str) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(values)
    if idx.tz is None or str(idx.tz) != "UTC":
        raise ValueError(f"{name} must hold UTC timestamps; got dtype {idx.dtype}")
    return idx.as_unit("ns")


@dataclass(frozen=True)
class CorrForecast:
    """Correlation forecasts of one model for one symbol set, at many origins and horizons.

    Attributes
    ----------
    corr : array of shape (n_origins, n_horizons, n_symbols, n_symbols): the forecast correlation
        of the ``h``-period return from each origin; symmetric, unit diagonal, PSD.
    symbols : the symbol order of the matrices (unique, non-empty strings).
    origins : UTC origin timestamps (the close of the origin period), sorted and unique.
    horizons : horizons in periods (ints >= 1, increasing).
    model_id, model_version : which model produced the numbers.
    data_cutoff_ts : the latest data time any forecast used: one UTC timestamp or a Series
        indexed by ``origins`` (never before its origin).
    horizon_unit : the length of one period as a pandas duration string ("1D", "15min").
    repaired : bool array of shape (n_origins, n_horizons): the matrix was repaired to the PSD
        cone (None = none was).
    stressed : optional stressed correlation matrix of shape (n_symbols, n_symbols), a valid
        correlation matrix.
    """

    corr: np.ndarray
    symbols: tuple[str, ...]
    origins: pd.DatetimeIndex
    horizons: tuple[int, ...]
    model_id: str
    model_version: str
    data_cutoff_ts: pd.Timestamp | pd.Series
    horizon_unit: str = "1D"
    repaired: np.ndarray | None = field(default=None)
    stressed: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        syms = tuple(self.symbols) if not isinstance(self.symbols, str) else None
        if not syms or not all(isinstance(s, str) and s for s in syms):
            raise ValueError(
                f"symbols must be a non-empty sequence of strings; got {self.symbols!r}"
            )
        if len(set(syms)) != len(syms):
            raise ValueError(f"symbols must be unique; got {list(syms)}")
        object.__setattr__(self, "symbols", syms)
        origins = _utc_index(self.origins, "origins")
        if len(origins) == 0:
            raise ValueError("origins must hold at least one origin; got none")
        if origins.has_duplicates or not origins.is_monotonic_increasing:
            raise ValueError("origins must be sorted and unique")
        object.__setattr__(self, "origins", origins.rename("origin_ts"))
        hs = list(self.horizons)
        if not hs or not all(
            isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in hs
        ):
            raise ValueError(f"horizons must be a non-empty sequence of ints >= 1; got {hs}")
        if hs != sorted(set(hs)):
            raise ValueError(f"horizons must be unique and increasing; got {hs}")
        object.__setattr__(self, "horizons", tuple(int(h) for h in hs))
        n, k, m = len(origins), len(hs), len(syms)
        c = np.array(self.corr, dtype="float64")
        if c.shape != (n, k, m, m):
            raise ValueError(
                f"corr must have shape (n_origins, n_horizons, n_symbols, n_symbols) = "
                f"{(n, k, m, m)}; got {c.shape}"
            )
        self._check_matrices(c)
        c.setflags(write=False)
        object.__setattr__(self, "corr", c)
        for name in ("model_id", "model_version"):
            val = getattr(self, name)
            if not isinstance(val, str) or not val:
                raise ValueError(f"{name} must be a non-empty string; got {val!r}")
        try:
            period = pd.Timedelta(self.horizon_unit)
        except (ValueError, TypeError):
            raise ValueError(
                f"horizon_unit must be a pandas duration string such as '1D'; "
                f"got {self.horizon_unit!r}"
            ) from None
        if period <= pd.Timedelta(0):
            raise ValueError(f"horizon_unit must be a positive duration; got {self.horizon_unit!r}")
        self._init_cutoff()
        rep = self.repaired
        if rep is not None:
            rep = np.array(rep, dtype=bool)
            if rep.shape != (n, k):
                raise ValueError(
                    f"repaired must have shape (n_origins, n_horizons) = {(n, k)}; got {rep.shape}"
                )
            rep.setflags(write=False)
            object.__setattr__(self, "repaired", rep)
        if self.stressed is not None:
            s = np.array(self.stressed, dtype="float64")
            if s.shape != (m, m):
                raise ValueError(
                    f"stressed must have shape (n_symbols, n_symbols) = {(m, m)}; got {s.shape}"
                )
            check_correlation(s, "stressed")
            s.setflags(write=False)
            object.__setattr__(self, "stressed", s)

    def _check_matrices(self, c: np.ndarray) -> None:
        if not np.isfinite(c).all():
            i, j = np.argwhere(~np.isfinite(c).reshape(c.shape[0], c.shape[1], -1).all(axis=2))[0]
            raise ValueError(
                f"corr must be finite; got NaN or inf at origin {self.origins[i]}, "
                f"horizon {self.horizons[j]}"
            )
        m = c.shape[-1]
        asym = np.abs(c - np.swapaxes(c, -1, -2)).reshape(*c.shape[:2], -1).max(axis=2)
        diag = np.abs(np.diagonal(c, axis1=-2, axis2=-1) - 1.0).max(axis=2)
        big = np.abs(c).reshape(*c.shape[:2], -1).max(axis=2)
        checks = (
            (asym > SYMMETRY_TOL, "symmetric", "max |C - C'|", asym),
            (diag > SYMMETRY_TOL, "unit-diagonal", "max |diag - 1|", diag),
            (big > 1.0 + SYMMETRY_TOL, "within [-1, 1]", "max |C|", big),
        )
        for bad, what, label, val in checks:
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise ValueError(
                    f"corr must be {what}; got {label} = {val[i, j]:.3g} at origin "
                    f"{self.origins[i]}, horizon {self.horizons[j]}"
                )
        if m:
            w = np.linalg.eigvalsh(0.5 * (c + np.swapaxes(c, -1, -2)))
            scale = np.maximum(1.0, np.abs(w).max(axis=-1))
            bad = w[..., 0] < -PSD_TOL * scale
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise ValueError(
                    f"corr must be positive semi-definite; got smallest eigenvalue "
                    f"{w[i, j, 0]:.3g} at origin {self.origins[i]}, horizon {self.horizons[j]} "
                    "(repair it with features.covariance.nearest_correlation)"
                )

    def _init_cutoff(self) -> None:
        cut = self.data_cutoff_ts
        if isinstance(cut, pd.Series):
            if len(cut) != len(self.origins) or not pd.DatetimeIndex(cut.index).equals(
                self.origins
            ):
                raise ValueError("data_cutoff_ts Series must be indexed by the origins")
            values = _utc_index(cut, "data_cutoff_ts")
            if values.hasnans:
                raise ValueError("data_cutoff_ts Series must not have gaps")
            if (values < self.origins).any():
                i = int(np.flatnonzero(values < self.origins)[0])
                raise ValueError(
                    f"data_cutoff_ts {values[i]} is before its origin {self.origins[i]}; "
                    "a forecast cannot be made before the data it uses"
                )
            if values.nunique() == 1:
                object.__setattr__(self, "data_cutoff_ts", values[0])
            else:
                object.__setattr__(
                    self,
                    "data_cutoff_ts",
                    pd.Series(values, index=self.origins, name="data_cutoff_ts"),
                )
            return
        if not isinstance(cut, pd.Timestamp) or cut.tz is None or str(cut.tz) != "UTC":
            raise ValueError(
                f"data_cutoff_ts must be a UTC pandas Timestamp or Series; got {cut!r}"
            )
        if cut < self.origins[-1]:
            raise ValueError(
                f"data_cutoff_ts {cut} is before the last origin {self.origins[-1]}; "
                "a forecast cannot be made before the data it uses"
            )
        object.__setattr__(self, "data_cutoff_ts", cut.as_unit("ns"))

    # ---- access ------------------------------------------------------------------------------
    @property
    def n_symbols(self) -> int:
        """Number of symbols."""
        return len(self.symbols)

    def _h_index(self, h: int) -> int:
        if h not in self.horizons:
            raise KeyError(
                f"horizon {h!r} is not in this forecast; available horizons {list(self.horizons)}"
            )
        return self.horizons.index(h)

    def at(self, h: int) -> np.ndarray:
        """Correlation matrices of horizon ``h``: array of shape (n_origins, n, n)."""
        return self.corr[:, self._h_index(h)]

    def matrix(self, origin: pd.Timestamp | str, h: int) -> pd.DataFrame:
        """The forecast correlation matrix at one origin and horizon, labelled by symbol."""
        t = pd.Timestamp(origin)
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        pos = self.origins.get_indexer([t])[0]
        if pos < 0:
            raise KeyError(
                f"origin {t} is not in this forecast ({self.origins[0]} .. {self.origins[-1]})"
            )
        return pd.DataFrame(self.at(h)[pos], index=list(self.symbols), columns=list(self.symbols))

    def cutoff_per_origin(self) -> pd.Series:
        """The data cutoff of each origin as a Series of UTC timestamps."""
        if isinstance(self.data_cutoff_ts, pd.Series):
            return self.data_cutoff_ts
        return pd.Series(
            pd.DatetimeIndex([self.data_cutoff_ts] * len(self.origins)), index=self.origins
        )

    def covariance(self, vol: Mapping[str, _CumulativeVariance], h: int) -> np.ndarray:
        """Covariance of the ``h``-period return at every origin.

        ``Sigma = D R D`` with ``R`` the horizon-``h`` correlation and ``D = diag(sqrt(h x
        average_var_h))`` the cumulative ``h``-period volatilities of ``vol`` (one
        :class:`~models.forecast.VolForecast` per symbol, each covering every origin of this
        forecast at horizon ``h``).

        Returns
        -------
        array of shape (n_origins, n_symbols, n_symbols) (variance units of the returns).
        """
        missing = [s for s in self.symbols if s not in vol]
        if missing:
            raise KeyError(
                f"vol lacks a forecast for symbol(s) {missing}; need {list(self.symbols)}"
            )
        cols = []
        for s in self.symbols:
            cum = vol[s].cumulative_var(h).reindex(self.origins)
            if cum.isna().any():
                t = self.origins[int(np.flatnonzero(cum.isna().to_numpy())[0])]
                raise ValueError(
                    f"vol[{s!r}] has no horizon-{h} forecast at origin {t}; the variance "
                    "forecasts must cover every origin of the correlation forecast"
                )
            cols.append(cum.to_numpy(dtype="float64"))
        sd = np.sqrt(np.column_stack(cols))
        return self.at(h) * sd[:, :, None] * sd[:, None, :]

    # ---- long table --------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """The long table: one row per origin, horizon and ordered symbol pair (columns
        :data:`CORR_FRAME_COLUMNS`; ``stressed_corr`` is NaN when there is no stressed matrix)."""
        n, k, m = len(self.origins), len(self.horizons), self.n_symbols
        per = k * m * m
        ia, ib = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        ia, ib = ia.ravel(), ib.ravel()
        syms = np.asarray(self.symbols, dtype=object)
        rep = np.zeros((n, k), dtype=bool) if self.repaired is None else self.repaired
        stressed = np.full(m * m, np.nan) if self.stressed is None else self.stressed[ia, ib]
        frame = pd.DataFrame(
            {
                "model_id": np.full(n * per, self.model_id, dtype=object),
                "model_version": np.full(n * per, self.model_version, dtype=object),
                "origin_ts": self.origins.repeat(per),
                "data_cutoff_ts": pd.DatetimeIndex(self.cutoff_per_origin()).repeat(per),
                "horizon": np.tile(np.repeat(np.asarray(self.horizons, dtype="int64"), m * m), n),
                "symbol_a": np.tile(syms[ia], n * k),
                "symbol_b": np.tile(syms[ib], n * k),
                "corr": self.corr.reshape(-1),
                "repaired": np.repeat(rep.reshape(-1), m * m),
                "stressed_corr": np.tile(stressed, n * k),
            }
        )
        for c in ("origin_ts", "data_cutoff_ts"):
            frame[c] = frame[c].astype(TS_DTYPE)
        for c in ("model_id", "model_version", "symbol_a", "symbol_b"):
            frame[c] = frame[c].astype("str")
        return frame

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        horizon_unit: str = "1D",
        symbols: Sequence[str] | None = None,
    ) -> CorrForecast:
        """Rebuild a forecast from its long table (the inverse of :meth:`to_frame`).

        Parameters
        ----------
        frame : rows of one model with the columns of :meth:`to_frame` (``repaired`` and
            ``stressed_corr`` optional); every ordered pair at every origin and horizon.
        horizon_unit : the period length (the table does not carry it).
        symbols : the symbol order; None = order of first appearance in ``symbol_a``.
        """
        need = [c for c in CORR_FRAME_COLUMNS if c not in ("repaired", "stressed_corr")]
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise ValueError(
                f"correlation frame is missing column(s) {missing}; got columns {list(frame.columns)}"
            )
        for c in ("model_id", "model_version"):
            values = frame[c].unique()
            if len(values) != 1:
                raise ValueError(
                    f"correlation frame must hold one {c}; got {len(values)}: {list(values)[:5]}"
                )
        keys = ["origin_ts", "horizon", "symbol_a", "symbol_b"]
        if frame.duplicated(keys).any():
            raise ValueError(
                "correlation frame has duplicate (origin_ts, horizon, symbol_a, symbol_b) rows"
            )
        syms = list(pd.unique(frame["symbol_a"])) if symbols is None else list(symbols)
        origins = pd.DatetimeIndex(sorted(pd.unique(frame["origin_ts"])))
        horizons = sorted(int(h) for h in pd.unique(frame["horizon"]))
        full = pd.MultiIndex.from_product([origins, horizons, syms, syms], names=keys)
        f = frame.set_index(keys)
        try:
            corr = f["corr"].reindex(full)
        except (KeyError, ValueError, TypeError) as exc:  # pragma: no cover - defensive
            raise ValueError(f"cannot align correlation frame: {exc}") from None
        if corr.isna().any():
            raise ValueError(
                "correlation frame must hold every ordered symbol pair at every origin and horizon; "
                f"{int(corr.isna().sum())} value(s) are missing"
            )
        n, k, m = len(origins), len(horizons), len(syms)
        repaired = None
        if "repaired" in f.columns:
            repaired = (
                f["repaired"].reindex(full).to_numpy(dtype=bool).reshape(n, k, m * m).any(axis=2)
            )
        stressed = None
        if "stressed_corr" in f.columns and f["stressed_corr"].notna().any():
            first = f.xs((origins[0], horizons[0]), level=["origin_ts", "horizon"])["stressed_corr"]
            stressed = (
                first.reindex(pd.MultiIndex.from_product([syms, syms]))
                .to_numpy(dtype="float64")
                .reshape(m, m)
            )
        cut = frame.drop_duplicates("origin_ts").set_index("origin_ts")["data_cutoff_ts"]
        cut = pd.Series(pd.DatetimeIndex(cut.reindex(origins)), index=origins)
        return cls(
            corr=corr.to_numpy(dtype="float64").reshape(n, k, m, m),
            symbols=tuple(str(s) for s in syms),
            origins=origins,
            horizons=tuple(horizons),
            model_id=str(frame["model_id"].iloc[0]),
            model_version=str(frame["model_version"].iloc[0]),
            data_cutoff_ts=cut,
            horizon_unit=horizon_unit,
            repaired=repaired,
            stressed=stressed,
        )
