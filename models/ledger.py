"""The forecast ledger: an append-only, content-addressed record of every issued forecast.

What it holds
-------------
- **Volatility forecasts**: one row per (model_id, model_version, unit, symbol, as_of, origin_ts,
  horizon):
  ``forecast_var`` (the per-period average variance over ``t+1..t+h``, as in
  :class:`models.forecast.VolForecast`), its quantile columns ``q_<level>`` when the model gives
  them (NaN otherwise), ``origin_ts``, ``data_cutoff_ts``, ``fallback_reason`` and ``source``
  ("walk_forward" for seeded history, "issued" for a live cycle).
- **Correlation forecasts**: one row per (model_id, model_version, unit, symbol_set, as_of,
  origin_ts, horizon, symbol_a, symbol_b): ``corr`` and ``repaired``; ``symbol_set`` is the model's symbol
  order joined by ``|`` (a pair's correlation depends on the set it was estimated with).

``as_of`` is the issue time: a forecast is issued at or after its data cutoff (seeded
walk-forward forecasts are issued at their cutoff). Reads return only what was issued at or
before the ``as_of`` asked for, so a backtest reading the ledger cannot look ahead.

On disk
-------
``<root>/vol/model=<id>/version=<v>/<sha256>.parquet`` and the same under ``corr/``; ids are
percent-encoded. A part file's name is the SHA-256 of its canonical content
(:func:`models.forecast.canonical_digest`), it is written to a temporary file and renamed
(atomic), and it is never rewritten or deleted. ``<root>/.lock`` serializes appends between
processes (:mod:`filelock`).

Guarantees
----------
- A rerun for keys already held with the same values (within rtol 1e-10) writes nothing.
- A value differing beyond rtol 1e-10 for a key already held raises
  :class:`LedgerConflictError` naming the key and both values; nothing is written.
- New keys are written as one new part; old parts are never touched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from features.errors import DataError, ModelError, StoreError
from models.forecast import (
    CorrForecast,
    VolForecast,
    canonical_digest,
    format_period,
    infer_unit,
    parse_horizon_unit,
)

__all__ = ["RTOL", "ForecastLedger", "LedgerConflictError"]

RTOL = 1e-10
"""Relative tolerance within which a re-issued value counts as the same value."""

VOL_KEY = ("model_id", "model_version", "unit", "symbol", "as_of", "origin_ts", "horizon")
VOL_BASE = (
    "as_of", "model_id", "model_version", "unit", "symbol", "origin_ts", "data_cutoff_ts",
    "horizon", "forecast_var",
)
CORR_KEY = (
    "model_id", "model_version", "unit", "symbol_set", "as_of", "origin_ts", "horizon", "symbol_a",
    "symbol_b",
)
CORR_COLUMNS = (
    "as_of", "model_id", "model_version", "unit", "symbol_set", "origin_ts", "data_cutoff_ts",
    "horizon", "symbol_a", "symbol_b", "corr", "repaired", "source",
)
_QPREFIX = "q_"
_SET_SEP = "|"
_LOCK_TIMEOUT_S = 120.0


class LedgerConflictError(ModelError):
    """A forecast already in the ledger was issued again with a different value.

    Attributes
    ----------
    key : the key (column -> value) of the conflicting row.
    column : the value column that differs.
    existing, new : the two values.
    """

    def __init__(self, kind: str, key: dict[str, object], column: str, existing: object,
                 new: object) -> None:
        self.key = key
        self.column = column
        self.existing = existing
        self.new = new
        shown = ", ".join(f"{k}={v}" for k, v in key.items())
        super().__init__(
            f"the ledger already holds the {kind} forecast ({shown}) with {column}={existing!r}; "
            f"the new value {new!r} differs beyond rtol {RTOL:g}. Issued forecasts are never "
            "rewritten: issue the changed model under a new model_version"
        )


@dataclass(frozen=True)
class _Group:
    """Rows of one (model, version, unit, symbol or symbol_set), sorted by as_of, with the
    columns a bundle reads as numpy arrays (times as int64 ns)."""

    frame: pd.DataFrame
    as_of_ns: np.ndarray
    arrays: dict[str, np.ndarray]

    @classmethod
    def of(cls, kind: str, g: pd.DataFrame) -> _Group:
        arrays = {
            "as_of": pd.DatetimeIndex(g["as_of"]).as_unit("ns").asi8,
            "origin_ts": pd.DatetimeIndex(g["origin_ts"]).as_unit("ns").asi8,
            "data_cutoff_ts": pd.DatetimeIndex(g["data_cutoff_ts"]).as_unit("ns").asi8,
            "horizon": g["horizon"].to_numpy(dtype="int64"),
        }
        if kind == "vol":
            arrays["forecast_var"] = g["forecast_var"].to_numpy(dtype="float64")
        else:
            arrays["corr"] = g["corr"].to_numpy(dtype="float64")
            arrays["repaired"] = g["repaired"].to_numpy(dtype=bool)
            arrays["symbol_a"] = g["symbol_a"].to_numpy(dtype=object)
            arrays["symbol_b"] = g["symbol_b"].to_numpy(dtype=object)
        for a in arrays.values():
            a.setflags(write=False)
        return cls(g, arrays["as_of"], arrays)


def _utc_col(values: object, name: str) -> pd.DatetimeIndex:
    try:
        idx = pd.DatetimeIndex(values)
    except (TypeError, ValueError):
        raise DataError(f"{name} must hold timestamps", column=name) from None
    if idx.tz is None or str(idx.tz) != "UTC":
        raise DataError(f"{name} must hold UTC timestamps; got dtype {idx.dtype}", column=name)
    if idx.hasnans:
        raise DataError(f"{name} must not hold NaT", column=name)
    return idx.as_unit("ns")


def _utc_ts(ts: object, name: str = "as_of") -> pd.Timestamp:
    t = pd.Timestamp(ts)  # type: ignore[arg-type]
    if pd.isna(t):
        raise DataError(f"{name} must be a timestamp; got {ts!r}", column=name)
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).as_unit("ns")


def _canon_unit(u: object) -> str:
    try:
        return format_period(parse_horizon_unit(str(u)))
    except ValueError as exc:
        raise DataError(f"unit: {exc}", column="unit") from None


def _check_times(f: pd.DataFrame, kind: str) -> None:
    late = f["data_cutoff_ts"] > f["as_of"]
    if late.any():
        i = int(np.flatnonzero(late.to_numpy())[0])
        raise DataError(
            f"{kind} forecast of {f['model_id'].iloc[i]} issued at as_of {f['as_of'].iloc[i]} "
            f"uses data up to {f['data_cutoff_ts'].iloc[i]}: a forecast cannot be issued before "
            "its data cutoff", column="data_cutoff_ts")
    early = f["data_cutoff_ts"] < f["origin_ts"]
    if early.any():
        i = int(np.flatnonzero(early.to_numpy())[0])
        raise DataError(f"data_cutoff_ts {f['data_cutoff_ts'].iloc[i]} is before origin_ts "
                        f"{f['origin_ts'].iloc[i]}", column="data_cutoff_ts")


def _normalize_vol(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"vol forecasts must be a DataFrame; got {type(frame).__name__}")
    need = ["model_id", "model_version", "symbol", "origin_ts", "data_cutoff_ts", "horizon",
            "forecast_var"]
    missing = [c for c in need if c not in frame.columns]
    if "unit" not in frame.columns and not {"target_start", "target_end"} <= set(frame.columns):
        missing.append("unit (or target_start and target_end)")
    if missing:
        raise DataError(f"vol forecasts are missing column(s) {missing}; got {list(frame.columns)}")
    f = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for c in ("model_id", "model_version", "symbol"):
        col = frame[c].astype(object).to_numpy()
        if not all(isinstance(x, str) and x for x in col):
            raise DataError(f"{c} must hold non-empty strings", column=c)
        f[c] = col.astype(str)
    for c in ("origin_ts", "data_cutoff_ts"):
        f[c] = _utc_col(frame[c], c)
    h = pd.to_numeric(frame["horizon"], errors="coerce").to_numpy(dtype="float64")
    if not (np.isfinite(h) & (h >= 1) & (h == np.round(h))).all():
        raise DataError("horizon must hold ints >= 1", column="horizon")
    f["horizon"] = h.astype("int64")
    if "unit" in frame.columns:
        units = {u: _canon_unit(u) for u in pd.unique(frame["unit"])}
        f["unit"] = frame["unit"].map(units).to_numpy().astype(str)
    else:
        # a daily exchange-calendar window spans sessions (a weekend or holiday inside): "1D"
        f["unit"] = infer_unit(_utc_col(frame["target_start"], "target_start"),
                               _utc_col(frame["target_end"], "target_end"), f["horizon"],
                               f["symbol"]).astype(str)
    f["as_of"] = (_utc_col(frame["as_of"], "as_of") if "as_of" in frame.columns
                  else f["data_cutoff_ts"])
    v = pd.to_numeric(frame["forecast_var"], errors="coerce").to_numpy(dtype="float64")
    bad = ~np.isfinite(v) | (v <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"forecast_var must be finite and > 0; got {float(v[i])!r} for "
                        f"{f['symbol'].iloc[i]} at {f['origin_ts'].iloc[i]}, horizon "
                        f"{f['horizon'].iloc[i]}", column="forecast_var")
    f["forecast_var"] = v
    for c in sorted(c for c in frame.columns if str(c).startswith(_QPREFIX)):
        q = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64")
        bad = np.isinf(q) | (q < 0)
        if bad.any():
            raise DataError(f"{c} must be finite and >= 0 (or NaN when absent); got "
                            f"{float(q[np.flatnonzero(bad)[0]])!r}", column=c)
        f[c] = q
    fb = frame["fallback_reason"] if "fallback_reason" in frame.columns else None
    f["fallback_reason"] = (np.full(len(f), None, dtype=object) if fb is None else
                            np.where(fb.notna().to_numpy(), fb.astype(object).to_numpy(), None))
    f["source"] = source
    _check_times(f, "vol")
    if f.duplicated(list(VOL_KEY)).any():
        i = int(np.flatnonzero(f.duplicated(list(VOL_KEY)).to_numpy())[0])
        shown = ", ".join(f"{k}={f.loc[i, k]}" for k in VOL_KEY)
        raise DataError(f"vol forecasts hold the key ({shown}) twice; expected one row per key")
    qcols = sorted(c for c in f.columns if c.startswith(_QPREFIX))
    cols = [*VOL_BASE, *qcols, "fallback_reason", "source"]
    return f[cols].sort_values(list(VOL_KEY)).reset_index(drop=True)


def _normalize_corr(cf: CorrForecast, as_of: pd.Timestamp | None, source: str) -> pd.DataFrame:
    if not isinstance(cf, CorrForecast):
        raise DataError(f"expected a CorrForecast; got {type(cf).__name__}")
    f = cf.to_frame().drop(columns=["stressed_corr"])
    f["unit"] = _canon_unit(cf.horizon_unit)
    f["symbol_set"] = _SET_SEP.join(cf.symbols)
    f["as_of"] = f["data_cutoff_ts"] if as_of is None else as_of
    f["as_of"] = _utc_col(f["as_of"], "as_of")
    f["source"] = source
    f["repaired"] = f["repaired"].astype(bool)
    _check_times(f, "correlation")
    return f[list(CORR_COLUMNS)].sort_values(list(CORR_KEY)).reset_index(drop=True)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype="float64")
    b = np.asarray(b, dtype="float64")
    both_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        close = np.abs(a - b) <= RTOL * np.maximum(np.abs(a), np.abs(b))
    return both_nan | close


class ForecastLedger:
    """The forecast ledger under ``root`` (created on first append). See the module docstring.

    Parameters
    ----------
    root : the directory holding the ledger (no global default: pass it in).
    lock_timeout_s : how long an append waits for another process's append.
    """

    def __init__(self, root: str | os.PathLike[str], *, lock_timeout_s: float = _LOCK_TIMEOUT_S):
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s
        self._parts: dict[str, dict[Path, pd.DataFrame]] = {"vol": {}, "corr": {}}
        self._groups: dict[str, dict[tuple[str, ...], _Group]] = {"vol": {}, "corr": {}}
        self._stamp: dict[str, tuple[str, ...]] = {"vol": (), "corr": ()}

    # ---- files -----------------------------------------------------------------------------
    def _dir(self, kind: str, model: str, version: str) -> Path:
        return (self.root / kind / f"model={quote(model, safe='')}"
                / f"version={quote(version, safe='')}")

    def _list(self, kind: str) -> list[Path]:
        base = self.root / kind
        if not base.is_dir():
            return []
        out = []
        for mdir in os.scandir(base):
            if not mdir.is_dir() or not mdir.name.startswith("model="):
                continue
            for vdir in os.scandir(mdir.path):
                if not vdir.is_dir() or not vdir.name.startswith("version="):
                    continue
                out.extend(Path(e.path) for e in os.scandir(vdir.path)
                           if e.name.endswith(".parquet") and not e.name.startswith("."))
        return sorted(out)

    def refresh(self) -> None:
        """Read part files written since the last read (parts are immutable: each is read once,
        and its rows are merged into the in-memory index of the groups it touches)."""
        for kind in ("vol", "corr"):
            paths = self._list(kind)
            stamp = tuple(p.name for p in paths)
            if stamp == self._stamp[kind]:
                continue
            parts = self._parts[kind]
            fresh = []
            for p in paths:
                if p not in parts:
                    try:
                        parts[p] = pd.read_parquet(p)
                    except (OSError, ValueError) as exc:
                        raise StoreError(f"{p}: cannot read ledger part: {exc}") from None
                    fresh.append(parts[p])
            self._stamp[kind] = stamp
            self._merge(kind, fresh)

    def _merge(self, kind: str, frames: list[pd.DataFrame]) -> None:
        if not frames:
            return
        new = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        by = (["model_id", "model_version", "unit", "symbol"] if kind == "vol"
              else ["model_id", "model_version", "unit", "symbol_set"])
        order = [c for c in (VOL_KEY if kind == "vol" else CORR_KEY) if c not in by]
        groups = self._groups[kind]
        for k, g in new.groupby(by, sort=False):
            key = tuple(str(x) for x in k)
            if key in groups:
                g = pd.concat([groups[key].frame, g], ignore_index=True)
            g = g.sort_values(order).reset_index(drop=True)
            groups[key] = _Group.of(kind, g)

    def _write_part(self, kind: str, model: str, version: str, frame: pd.DataFrame) -> Path:
        digest = canonical_digest({"kind": kind}, {"rows": frame})
        d = self._dir(kind, model, version)
        d.mkdir(parents=True, exist_ok=True)
        target = d / f"{digest}.parquet"
        if target.exists():
            return target
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=d)
        os.close(fd)
        try:
            frame.to_parquet(tmp, index=False)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / ".lock"), timeout=self.lock_timeout_s)
        try:
            with lock:
                yield
        except Timeout:
            raise StoreError(f"{self.root}: another process holds the ledger lock for more than "
                             f"{self.lock_timeout_s:g} s") from None

    # ---- appends ----------------------------------------------------------------------------
    def _append(self, kind: str, new: pd.DataFrame) -> int:
        key = list(VOL_KEY if kind == "vol" else CORR_KEY)
        written = 0
        with self._lock():
            self.refresh()
            plans = []
            for (model, version), chunk in new.groupby(["model_id", "model_version"], sort=True):
                frames = [g.frame for k, g in self._groups[kind].items()
                          if k[0] == model and k[1] == version]
                fresh = chunk
                if frames:
                    old = pd.concat(frames, ignore_index=True)
                    fresh = self._check(kind, old, chunk, key)
                if len(fresh):
                    plans.append((str(model), str(version), fresh.reset_index(drop=True)))
            for model, version, fresh in plans:  # every check passed: write
                self._write_part(kind, model, version, fresh)
                written += len(fresh)
            self.refresh()
        return written

    @staticmethod
    def _check(kind: str, old: pd.DataFrame, new: pd.DataFrame, key: list[str]) -> pd.DataFrame:
        both = new.merge(old, on=key, how="left", suffixes=("", "_old"), indicator=True)
        hit = (both["_merge"] == "both").to_numpy()
        label = "vol" if kind == "vol" else "correlation"
        if hit.any():
            b = both[hit]
            if kind == "vol":
                values = [c for c in new.columns if c == "forecast_var" or c.startswith(_QPREFIX)]
            else:
                values = ["corr"]
            for c in values:
                old_c = b[f"{c}_old"] if f"{c}_old" in b.columns else pd.Series(np.nan, index=b.index)
                ok = _same(b[c].to_numpy(), old_c.to_numpy())
                if not ok.all():
                    i = int(np.flatnonzero(~ok)[0])
                    row = b.iloc[i]
                    raise LedgerConflictError(label, {k: row[k] for k in key}, c,
                                              float(old_c.iloc[i]), float(row[c]))
            for c in ("data_cutoff_ts",):
                diff = (b[c] != b[f"{c}_old"]).to_numpy()
                if diff.any():
                    i = int(np.flatnonzero(diff)[0])
                    row = b.iloc[i]
                    raise LedgerConflictError(label, {k: row[k] for k in key}, c,
                                              row[f"{c}_old"], row[c])
        return new[~hit]

    def append_vol(self, frame: pd.DataFrame, *, source: str = "issued") -> int:
        """Record volatility forecasts given as the long table of
        :meth:`VolForecast.to_frame` (optionally with ``as_of`` and ``unit`` columns: ``as_of``
        defaults to ``data_cutoff_ts``, ``unit`` to ``(target_end - target_start) / horizon``).
        Columns such as ``realized_var`` are not issued forecasts and are dropped. Returns the
        number of new rows written (0 for a rerun)."""
        return self._append("vol", _normalize_vol(frame, source))

    def append_forecast(self, forecast: VolForecast, *, as_of: object = None,
                        source: str = "issued") -> int:
        """Record a :class:`VolForecast` issued at ``as_of`` (None: at each origin's cutoff)."""
        frame = forecast.to_frame()
        frame["unit"] = forecast.horizon_unit
        if as_of is not None:
            frame["as_of"] = _utc_ts(as_of)
        return self.append_vol(frame, source=source)

    def seed_walk_forward(self, forecasts: pd.DataFrame) -> int:
        """Seed the ledger with walk-forward out-of-sample forecasts (the ``forecasts`` table of
        :func:`models.evaluation.walk_forward` or :meth:`VolForecast.to_frame`), each issued at
        its data cutoff; ``source`` = "walk_forward". Realized targets are not recorded."""
        return self.append_vol(forecasts, source="walk_forward")

    def append_corr(self, forecast: CorrForecast, *, as_of: object = None,
                    source: str = "issued") -> int:
        """Record a :class:`CorrForecast` issued at ``as_of`` (None: at each origin's cutoff).
        Returns the number of new rows written."""
        return self._append("corr", _normalize_corr(
            forecast, None if as_of is None else _utc_ts(as_of), source))

    # ---- reads -------------------------------------------------------------------------------
    def models(self) -> pd.DataFrame:
        """One row per (kind, model_id, model_version, unit, symbol or symbol_set) with the row
        count and the first and last as_of."""
        self.refresh()
        rows = []
        for kind in ("vol", "corr"):
            for k, g in self._groups[kind].items():
                rows.append({"kind": kind, "model_id": k[0], "model_version": k[1], "unit": k[2],
                             "symbols": k[3], "n_rows": len(g.frame),
                             "first_as_of": g.frame["as_of"].min(),
                             "last_as_of": g.frame["as_of"].max()})
        return pd.DataFrame(rows, columns=["kind", "model_id", "model_version", "unit", "symbols",
                                           "n_rows", "first_as_of", "last_as_of"])

    def _slice(self, kind: str, k: tuple[str, ...], as_of: object) -> pd.DataFrame:
        g = self._groups[kind].get(k)
        if g is None:
            return pd.DataFrame(columns=list(VOL_BASE if kind == "vol" else CORR_COLUMNS))
        end = int(np.searchsorted(g.as_of_ns, _utc_ts(as_of).value, side="right"))
        return g.frame.iloc[:end]

    def _versions(self, kind: str, model: str, unit: str, sub: str) -> list[str]:
        return sorted(k[1] for k in self._groups[kind] if k[0] == model and k[2] == unit
                      and k[3] == sub)

    def issued(self, symbol: str, model: str, as_of: object, *, version: str | None = None,
               unit: str = "1D") -> pd.DataFrame:
        """The volatility forecasts of ``model`` (all versions, or ``version``) for ``symbol`` in
        ``unit`` issued at or before ``as_of``, sorted by (as_of, horizon); empty when none."""
        self.refresh()
        unit = _canon_unit(unit)
        versions = [version] if version is not None else self._versions("vol", model, unit, symbol)
        parts = [self._slice("vol", (model, v, unit, symbol), as_of) for v in versions]
        parts = [p for p in parts if len(p)]
        if not parts:
            return pd.DataFrame(columns=list(VOL_BASE))
        out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].copy()
        return out.sort_values(["as_of", "model_version", "horizon"]).reset_index(drop=True)

    def issued_corr(self, model: str, as_of: object, *, symbols: Sequence[str],
                    version: str | None = None, unit: str = "1D") -> pd.DataFrame:
        """The correlation forecasts of ``model`` estimated on ``symbols`` (in that order) issued
        at or before ``as_of``, in the long format of :meth:`CorrForecast.to_frame`."""
        self.refresh()
        unit = _canon_unit(unit)
        sset = _SET_SEP.join(symbols)
        versions = [version] if version is not None else self._versions("corr", model, unit, sset)
        parts = [self._slice("corr", (model, v, unit, sset), as_of) for v in versions]
        parts = [p for p in parts if len(p)]
        if not parts:
            return pd.DataFrame(columns=list(CORR_COLUMNS))
        return pd.concat(parts, ignore_index=True).sort_values(
            ["as_of", "model_version", "horizon", "symbol_a", "symbol_b"]).reset_index(drop=True)

    def issued_arrays(self, symbol: str, model: str, version: str, as_of: object, *,
                      unit: str = "1D", refresh: bool = True) -> dict[str, np.ndarray]:
        """The columns of :meth:`issued` for one version as read-only numpy arrays (times as
        int64 UTC nanoseconds): as_of, origin_ts, data_cutoff_ts, horizon, forecast_var, sorted
        by (as_of, origin_ts, horizon). The fast path :func:`~models.bundle_build.build_bundle`
        uses; ``refresh=False`` skips re-listing the parts (the caller just did)."""
        if refresh:
            self.refresh()
        g = self._groups["vol"].get((model, version, _canon_unit(unit), symbol))
        if g is None:
            return {k: np.empty(0, dtype=d) for k, d in (
                ("as_of", "int64"), ("origin_ts", "int64"), ("data_cutoff_ts", "int64"),
                ("horizon", "int64"), ("forecast_var", "float64"))}
        end = int(np.searchsorted(g.as_of_ns, _utc_ts(as_of).value, side="right"))
        return {k: v[:end] for k, v in g.arrays.items()}

    def latest_corr(self, model: str, version: str, as_of: object, *, symbols: Sequence[str],
                    unit: str = "1D", refresh: bool = True) -> CorrForecast | None:
        """The last correlation forecast of ``model``/``version`` on ``symbols`` issued at or
        before ``as_of`` (its latest origin), as a one-origin :class:`CorrForecast` (None when
        there is none)."""
        if refresh:
            self.refresh()
        unit = _canon_unit(unit)
        syms = list(symbols)
        g = self._groups["corr"].get((model, version, unit, _SET_SEP.join(syms)))
        if g is None:
            return None
        end = int(np.searchsorted(g.as_of_ns, _utc_ts(as_of).value, side="right"))
        if end == 0:
            return None
        a = g.arrays
        start = int(np.searchsorted(g.as_of_ns, g.as_of_ns[end - 1], side="left"))
        sl = slice(start, end)
        origin = a["origin_ts"][sl]
        rows = np.flatnonzero(origin == origin.max()) + start
        hs = np.unique(a["horizon"][rows])
        m = len(syms)
        pos = {s: i for i, s in enumerate(syms)}
        ia = np.fromiter((pos[x] for x in a["symbol_a"][rows]), dtype="int64", count=len(rows))
        ib = np.fromiter((pos[x] for x in a["symbol_b"][rows]), dtype="int64", count=len(rows))
        ih = np.searchsorted(hs, a["horizon"][rows])
        corr = np.full((1, len(hs), m, m), np.nan)
        corr[0, ih, ia, ib] = a["corr"][rows]
        rep = np.zeros((1, len(hs)), dtype=bool)
        np.logical_or.at(rep[0], ih, a["repaired"][rows])
        if np.isnan(corr).any():
            raise StoreError(f"{self.root}: the correlation forecast of {model} {version} at "
                             f"{pd.Timestamp(int(origin.max()), tz='UTC')} lacks symbol pairs")
        origin_ts = pd.DatetimeIndex([int(origin.max())], tz="UTC").as_unit("ns")
        return CorrForecast(
            corr=corr, symbols=tuple(syms), origins=origin_ts,
            horizons=tuple(int(h) for h in hs), model_id=model, model_version=version,
            data_cutoff_ts=pd.Timestamp(int(a["data_cutoff_ts"][rows[0]]), tz="UTC").as_unit("ns"),
            horizon_unit=unit, repaired=rep if rep.any() else None)

    def verify(self) -> int:
        """Re-hash every part file against its name; raises ``StoreError`` naming the first file
        whose content changed. Returns the number of parts checked."""
        n = 0
        for kind in ("vol", "corr"):
            for p in self._list(kind):
                frame = pd.read_parquet(p)
                if canonical_digest({"kind": kind}, {"rows": frame}) != p.stem:
                    raise StoreError(f"{p}: content does not match its hash name (altered)")
                n += 1
        return n

    def __repr__(self) -> str:
        return f"ForecastLedger({str(self.root)!r})"

