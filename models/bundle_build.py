"""``build_bundle``: the :class:`~models.forecast.RiskForecastBundle` for one as_of, rebuilt from the
forecast ledger and the closes alone.

Every input is cut at ``as_of`` before it is used: ledger rows issued at or before ``as_of``
(:meth:`ForecastLedger.issued`), closes stamped at or before ``as_of``. Nothing after ``as_of``
can change a value of the bundle or its ``bundle_id`` (tested by perturbing everything after it).

Rules
-----
- **Forecast per symbol and unit**: the last issue (ledger ``as_of`` <= bundle as_of) of the
  unit's model/version; it must hold every requested horizon.
- **Staleness**: a forecast whose ``data_cutoff_ts`` is older than ``max_age[unit]`` (default: 2
  periods for 24/7 symbols, 5 days for exchange-calendar symbols in "1D") is stale: recorded as a
  :class:`~features.errors.Failure` (``STALE``) in ``bundle.stale``; where a fallback model is
  configured for the unit and its own last issue is not stale, the fallback's forecast is used and
  the failure says so. A symbol without any issued forecast uses the fallback
  (``MISSING_INPUTS``) or raises :class:`~features.errors.ModelError`.
- **Residuals**: for each origin ``t`` of the unit's model (horizon 1, the earliest issue of each
  origin, issued before the return it standardizes was known), ``ret`` = log(close at the next
  close / close at ``t``), ``sigma_issued = sqrt(forecast_var)``, ``z = ret / sigma_issued``. The
  next close must be one period later (24/7 calendars), or within 5 days for exchange calendars
  in "1D" (weekends, holidays); other pairs are skipped (gaps are not one return).
- **Correlation**: the last issue of the unit's correlation model estimated on exactly the
  bundle's symbols (in that order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import DataError, Failure, FailureReason, ModelError
from features.symbols import CALENDARS, symbol_meta
from models.forecast import (
    MARGIN_HORIZONS,
    RESIDUAL_COLUMNS,
    VOL_COLUMNS,
    Innovation,
    Member,
    Provenance,
    RiskForecastBundle,
    StressedCorrelation,
    VolOfVol,
    parse_horizon_unit,
)
from models.ledger import ForecastLedger

__all__ = ["ModelRef", "build_bundle", "default_max_age", "residual_history"]

_EXCHANGE_DAILY_GAP = pd.Timedelta(days=5)


@dataclass(frozen=True)
class ModelRef:
    """A model in the ledger: ``name`` (the ledger's model_id), ``version`` and the registry alias
    it served under (recorded in the bundle's provenance)."""

    name: str
    version: str
    alias: str | None = None


def _utc(ts: object) -> pd.Timestamp:
    t = pd.Timestamp(ts)  # type: ignore[arg-type]
    if pd.isna(t):
        raise DataError(f"as_of must be a timestamp; got {ts!r}", column="as_of")
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).as_unit("ns")


def _exchange(symbol: str) -> bool:
    return CALENDARS[symbol_meta(symbol).calendar].weekdays_only


def default_max_age(symbol: str, unit: str) -> pd.Timedelta:
    """The default staleness limit: 2 periods of ``unit``, or 5 days for an exchange-calendar
    symbol in daily data (a Friday close is not stale on Monday)."""
    period = parse_horizon_unit(unit)
    if period >= pd.Timedelta(days=1) and _exchange(symbol):
        return max(_EXCHANGE_DAILY_GAP, 2 * period)
    return 2 * period


def _empty_residuals() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=t) for k, t in zip(
        RESIDUAL_COLUMNS, ["str", "str", "datetime64[ns, UTC]", "float64", "float64", "float64"],
        strict=True)})


def _closes_arrays(closes: pd.Series, as_of_ns: int) -> tuple[np.ndarray, np.ndarray]:
    t = pd.DatetimeIndex(closes.index)
    if t.tz is None:
        raise DataError(f"closes of {closes.name!r} must be indexed by UTC timestamps",
                        column=str(closes.name))
    t = t.tz_convert("UTC").as_unit("ns").asi8
    px = closes.to_numpy(dtype="float64")
    keep = (t <= as_of_ns) & np.isfinite(px) & (px > 0)
    return t[keep], px[keep]


def _residuals(a: Mapping[str, np.ndarray], t: np.ndarray, px: np.ndarray, *, symbol: str,
               unit: str) -> pd.DataFrame:
    period = parse_horizon_unit(unit)
    h1 = np.flatnonzero(a["horizon"] == 1)
    if len(t) < 2 or len(h1) == 0:
        return _empty_residuals()
    lx = np.log(px)
    gap = np.diff(t)
    if period >= pd.Timedelta(days=1) and _exchange(symbol):
        ok = (gap > 0) & (gap <= _EXCHANGE_DAILY_GAP.value)
    else:
        ok = gap == period.value
    start, end, ret = t[:-1][ok], t[1:][ok], np.diff(lx)[ok]
    # the earliest issue of each origin (rows are sorted by as_of, so a stable sort on origin
    # keeps the earliest first)
    order = h1[np.argsort(a["origin_ts"][h1], kind="stable")]
    origin = a["origin_ts"][order]
    first = np.ones(len(origin), dtype=bool)
    first[1:] = origin[1:] != origin[:-1]
    order, origin = order[first], origin[first]
    pos = np.searchsorted(origin, start)
    pos_c = np.minimum(pos, len(origin) - 1)
    hit = (pos < len(origin)) & (origin[pos_c] == start) & (a["as_of"][order[pos_c]] < end)
    sigma = np.sqrt(a["forecast_var"][order[pos_c[hit]]])
    r = ret[hit]
    return pd.DataFrame({
        "unit": unit, "symbol": symbol,
        "ts": pd.DatetimeIndex(end[hit], tz="UTC").as_unit("ns"),
        "ret": r, "sigma_issued": sigma, "z": r / sigma,
    })


def residual_history(issued: pd.DataFrame, closes: pd.Series, *, symbol: str, unit: str,
                     as_of: pd.Timestamp) -> pd.DataFrame:
    """The out-of-sample residuals of one symbol (columns :data:`RESIDUAL_COLUMNS`).

    Parameters
    ----------
    issued : ledger rows (:meth:`ForecastLedger.issued`) of one model, issued at or before as_of
        (columns as_of, origin_ts, horizon, forecast_var).
    closes : close prices indexed by UTC close time.
    symbol, unit : what the rows are.
    as_of : nothing stamped after it is used.
    """
    t_as_of = _utc(as_of).value
    if issued.empty:
        return _empty_residuals()
    a = {"horizon": issued["horizon"].to_numpy(dtype="int64"),
         "forecast_var": issued["forecast_var"].to_numpy(dtype="float64")}
    for c in ("as_of", "origin_ts"):
        a[c] = pd.DatetimeIndex(issued[c]).as_unit("ns").asi8
    srt = np.lexsort((a["as_of"],))
    a = {k: v[srt] for k, v in a.items()}
    keep = a["as_of"] <= t_as_of
    a = {k: v[keep] for k, v in a.items()}
    t, px = _closes_arrays(closes, t_as_of)
    return _residuals(a, t, px, symbol=symbol, unit=unit)


def _last_issue(a: Mapping[str, np.ndarray], horizons: Sequence[int], model: ModelRef,
                symbol: str, unit: str) -> dict[str, np.ndarray] | None:
    n = len(a["as_of"])
    if n == 0:
        return None
    start = int(np.searchsorted(a["as_of"], a["as_of"][-1], side="left"))
    origin = a["origin_ts"][start:]
    rows = np.flatnonzero(origin == origin.max()) + start
    hs = a["horizon"][rows]
    idx = []
    for h in horizons:
        k = np.flatnonzero(hs == h)
        if len(k) == 0:
            missing = [x for x in horizons if x not in set(hs.tolist())]
            raise ModelError(
                f"the ledger's last issue of {model.name} {model.version} for {symbol} ({unit}, "
                f"as_of {pd.Timestamp(int(a['as_of'][-1]), tz='UTC')}) lacks horizon(s) "
                f"{missing}")
        idx.append(rows[k[0]])
    sel = np.asarray(idx, dtype="int64")
    return {k: v[sel] for k, v in a.items()}


def build_bundle(
    ledger: ForecastLedger,
    as_of: object,
    *,
    symbols: Sequence[str],
    vol_models: Mapping[str, ModelRef],
    closes: Mapping[str, pd.DataFrame],
    corr_models: Mapping[str, ModelRef] | None = None,
    horizons: Mapping[str, Sequence[int]] | None = None,
    max_age: Mapping[str, pd.Timedelta] | None = None,
    fallback_models: Mapping[str, ModelRef] | None = None,
    scale: pd.DataFrame | None = None,
    innovations: Mapping[str, Innovation] | None = None,
    copula_df: float | None = None,
    stressed: StressedCorrelation | None = None,
    vol_of_vol: Mapping[str, VolOfVol] | None = None,
    data_fingerprints: Mapping[str, str] | None = None,
    code_version: str = "unknown",
) -> RiskForecastBundle:
    """Build the bundle at ``as_of`` from ledger entries and closes at or before it.

    Parameters
    ----------
    ledger : the forecast ledger.
    as_of : the bundle's time (UTC).
    symbols : the symbol order.
    vol_models : unit ("1D", "1h") -> the volatility model whose issues to use.
    closes : unit -> wide close prices (index: UTC close times, one column per symbol).
    corr_models : unit -> the correlation model (required for every unit with > 1 symbol).
    horizons : unit -> horizons in periods (default :data:`MARGIN_HORIZONS`).
    max_age : unit -> staleness limit (default :func:`default_max_age` per symbol).
    fallback_models : unit -> the baseline used for a stale or missing symbol.
    scale : variance scales, columns unit, symbol, horizon, scale, scale_lo, scale_hi (estimated
        from data before as_of); None = unscaled (1, 1, 1).
    innovations, copula_df, stressed, vol_of_vol : the calibration pieces (see the bundle).
    data_fingerprints, code_version : provenance.
    """
    t = _utc(as_of)
    symbols = tuple(symbols)
    corr_models = dict(corr_models or {})
    fallback_models = dict(fallback_models or {})
    ledger.refresh()
    vol_rows, res_rows, members, stale = [], [], [], {}
    for unit in sorted(vol_models):
        model = vol_models[unit]
        hs = tuple(int(h) for h in (horizons or {}).get(unit, MARGIN_HORIZONS.get(unit, (1,))))
        members.append(Member(f"vol:{unit}", model.name, model.version, model.alias))
        if unit not in closes:
            raise ModelError(f"closes lack unit {unit!r}; residuals need the closes of every unit")
        wide = closes[unit]
        used_fallback = False
        for s in symbols:
            if s not in wide.columns:
                raise ModelError(f"closes[{unit!r}] lack symbol {s!r}; columns {list(wide.columns)}")
            arrays = ledger.issued_arrays(s, model.name, model.version, t, unit=unit,
                                          refresh=False)
            last = _last_issue(arrays, hs, model, s, unit)
            limit = (max_age or {}).get(unit, default_max_age(s, unit))
            failure = None
            if last is None:
                failure = Failure(FailureReason.MISSING_INPUTS, s,
                                  f"no {unit} forecast of {model.name} {model.version} issued at "
                                  f"or before {t}", {"unit": unit, "model": model.name})
            else:
                cutoff = pd.Timestamp(int(last["data_cutoff_ts"][0]), tz="UTC")
                age = t - cutoff
                if age > limit:
                    failure = Failure(FailureReason.STALE, s,
                                      f"{unit} forecast data cutoff {cutoff} is {age} old at {t} "
                                      f"(allowed {limit})",
                                      {"unit": unit, "age_s": age.total_seconds(),
                                       "max_age_s": limit.total_seconds()})
            source = model
            if failure is not None and unit in fallback_models:
                fb = fallback_models[unit]
                fb_last = _last_issue(ledger.issued_arrays(s, fb.name, fb.version, t, unit=unit,
                                                           refresh=False), hs, fb, s, unit)
                if fb_last is not None and t - pd.Timestamp(
                        int(fb_last["data_cutoff_ts"][0]), tz="UTC") <= limit:
                    last, source = fb_last, fb
                    used_fallback = True
                    failure = Failure(failure.reason, s, f"{failure.message}; fell back to "
                                      f"{fb.name} {fb.version}",
                                      {**failure.details, "fallback": fb.name})
            if last is None:
                raise ModelError(f"no {unit} forecast for {s} issued at or before {t} by "
                                 f"{model.name} {model.version} (and no usable fallback)")
            if failure is not None:
                prev = stale.get(s)
                stale[s] = failure if prev is None else Failure(
                    prev.reason, s, f"{prev.message}; {failure.message}", prev.details)
            vol_rows.append(pd.DataFrame({
                "unit": unit, "symbol": s, "horizon": last["horizon"],
                "model_id": source.name, "model_version": source.version,
                "origin_ts": pd.DatetimeIndex(last["origin_ts"], tz="UTC").as_unit("ns"),
                "data_cutoff_ts": pd.DatetimeIndex(last["data_cutoff_ts"], tz="UTC").as_unit("ns"),
                "forecast_var": last["forecast_var"]}))
            tc, px = _closes_arrays(wide[s], t.value)
            res_rows.append(_residuals(arrays, tc, px, symbol=s, unit=unit))
        if used_fallback:
            fb = fallback_models[unit]
            members.append(Member(f"fallback:{unit}", fb.name, fb.version, fb.alias))
    if not vol_rows:
        raise ModelError("vol_models is empty: a bundle needs at least one unit")
    vol = pd.concat(vol_rows, ignore_index=True)
    vol = _apply_scale(vol, scale)
    corr = {}
    for unit in sorted(corr_models):
        ref = corr_models[unit]
        cf = ledger.latest_corr(ref.name, ref.version, t, symbols=symbols, unit=unit,
                                refresh=False)
        if cf is None:
            raise ModelError(f"no {unit} correlation forecast of {ref.name} {ref.version} on "
                             f"{list(symbols)} issued at or before {t}")
        corr[unit] = cf
        members.append(Member(f"corr:{unit}", ref.name, ref.version, ref.alias))
    residuals = pd.concat(res_rows, ignore_index=True) if res_rows else None
    return RiskForecastBundle(
        as_of=t, symbols=symbols, vol_table=vol, corr=corr, residuals=residuals,
        innovations=dict(innovations or {}), copula_df=copula_df, stressed=stressed,
        vol_of_vol=dict(vol_of_vol or {}), stale=stale,
        provenance=Provenance(tuple(members), dict(data_fingerprints or {}), code_version),
    )


def _apply_scale(vol: pd.DataFrame, scale: pd.DataFrame | None) -> pd.DataFrame:
    if scale is None:
        return vol.assign(scale=1.0, scale_lo=1.0, scale_hi=1.0)[list(VOL_COLUMNS)]
    need = ["unit", "symbol", "horizon", "scale", "scale_lo", "scale_hi"]
    missing = [c for c in need if c not in scale.columns]
    if missing:
        raise ModelError(f"scale is missing column(s) {missing}; got {list(scale.columns)}")
    s = scale[need].copy()
    s["horizon"] = s["horizon"].astype("int64")
    out = vol.merge(s, on=["unit", "symbol", "horizon"], how="left", validate="one_to_one")
    if out["scale"].isna().any():
        r = out[out["scale"].isna()].iloc[0]
        raise ModelError(f"scale has no row for {r['symbol']} {r['unit']} h={r['horizon']}")
    return out[list(VOL_COLUMNS)]
