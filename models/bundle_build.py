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
- **Variance scale** (``scale_n_boot``): per unit, symbol and horizon ``h``, the pairs
  ``(y_j, f_j)`` of origins ``j`` whose target close ``j+h`` is at or before as_of: ``y_j`` the
  per-period squared close-to-close log return over ``j+1..j+h`` (consecutive closes, the gap
  rule above), ``f_j`` the horizon-``h`` forecast issued at ``j`` (earliest issue, before the
  target was known); :func:`models.scale.ratio_of_means_interval` (stationary bootstrap, seeded)
  gives the scale and its 95% interval, expanding over all pairs. Fewer than ``scale_min_pairs``
  pairs: unscaled (1, 1, 1). Or pass precomputed :class:`models.scale.VarianceScale` paths through
  :func:`scale_from` (their ``at(as_of)``: each estimate uses only pairs complete at its origin).
- **Innovations** (``fit_residual_distribution=True``): :func:`models.innovations.fit_innovations` (normal,
  t, skewed-t by BIC) on each symbol's residuals of the first unit; ``copula_df`` from
  :func:`models.innovations.fit_t_copula` on the residual panel (dates where every symbol has one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import DataError, Failure, FailureReason, ModelError
from features.symbols import CALENDARS, symbol_meta
from models.corr_stress import StressedCorrelations
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
from models.innovations import InnovationModel, fit_innovations, fit_t_copula
from models.ledger import ForecastLedger
from models.scale import VarianceScale, ratio_of_means_interval
from models.volvol import VolOfVol as VolOfVolEstimate

__all__ = [
    "ModelRef",
    "build_bundle",
    "c2c_pairs",
    "default_max_age",
    "innovation_from",
    "residual_history",
    "scale_from",
    "stressed_from",
    "vol_of_vol_from",
]

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
    scale_n_boot: int | None = None,
    scale_min_pairs: int = 250,
    fit_residual_distribution: bool = False,
    random_state: int = 0,
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
    innovations, copula_df, stressed, vol_of_vol : the calibration pieces (see the bundle);
        :func:`innovation_from`, :func:`stressed_from`, :func:`vol_of_vol_from` convert the
        results of ``models.innovations``, ``models.corr_stress`` and ``models.volvol``.
    data_fingerprints, code_version : provenance.
    scale_n_boot : estimate the variance scale here from the ledger and closes with this many
        bootstrap replications (None: use ``scale`` or unscaled). Excludes ``scale``.
    scale_min_pairs : pairs needed for a scale estimate.
    fit_residual_distribution : fit the innovation distributions and the t-copula df to the residuals
        (replaces ``innovations`` and ``copula_df``).
    random_state : seed of the scale bootstrap (the bundle is a deterministic function of it).
    """
    t = _utc(as_of)
    symbols = tuple(symbols)
    corr_models = dict(corr_models or {})
    fallback_models = dict(fallback_models or {})
    if scale_n_boot is not None and scale is not None:
        raise ModelError("pass either scale or scale_n_boot (estimate it here), not both")
    ledger.refresh()
    vol_rows, res_rows, members, stale = [], [], [], {}
    scale_rows: list[dict[str, object]] = []
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
                fb_arrays = ledger.issued_arrays(s, fb.name, fb.version, t, unit=unit,
                                                 refresh=False)
                fb_last = _last_issue(fb_arrays, hs, fb, s, unit)
                if fb_last is not None and t - pd.Timestamp(
                        int(fb_last["data_cutoff_ts"][0]), tz="UTC") <= limit:
                    # the fallback's own history gives the symbol's residuals and scale
                    last, source, arrays = fb_last, fb, fb_arrays
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
            if scale_n_boot is not None:
                gen = np.random.default_rng([random_state, len(scale_rows)])
                scale_rows.extend(_estimate_scale(arrays, tc, px, hs, symbol=s, unit=unit,
                                                  n_boot=scale_n_boot, min_pairs=scale_min_pairs,
                                                  rng=gen))
        if used_fallback:
            fb = fallback_models[unit]
            members.append(Member(f"fallback:{unit}", fb.name, fb.version, fb.alias))
    if not vol_rows:
        raise ModelError("vol_models is empty: a bundle needs at least one unit")
    vol = pd.concat(vol_rows, ignore_index=True)
    if scale_n_boot is not None:
        scale = pd.DataFrame(scale_rows)
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
    if fit_residual_distribution and residuals is not None:
        innovations, copula_df = _fit_innovations(residuals, symbols, sorted(vol_models)[0])
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


# ---- calibration pieces --------------------------------------------------------------------------


def c2c_pairs(a: Mapping[str, np.ndarray], t: np.ndarray, px: np.ndarray, h: int, *,
              symbol: str, unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scale's pairs at horizon ``h``: (origin ns, ``y`` = per-period squared close-to-close
    log return over the next ``h`` closes, ``f`` = the horizon-``h`` forecast issued at the
    origin, earliest issue, issued before the target close). Closes must be consecutive (the
    residuals' gap rule) across the whole window; ``t``/``px`` are already cut at as_of."""
    period = parse_horizon_unit(unit)
    if len(t) <= h:
        empty = np.empty(0)
        return empty.astype("int64"), empty, empty
    gap = np.diff(t)
    if period >= pd.Timedelta(days=1) and _exchange(symbol):
        bad = ~((gap > 0) & (gap <= _EXCHANGE_DAILY_GAP.value))
    else:
        bad = gap != period.value
    nbad = np.concatenate([[0], np.cumsum(bad)])
    ok = (nbad[h:] - nbad[:-h]) == 0
    lx = np.log(px)
    start, end = t[:-h][ok], t[h:][ok]
    y = (lx[h:] - lx[:-h])[ok] ** 2 / h
    rows = np.flatnonzero(a["horizon"] == h)
    order = rows[np.argsort(a["origin_ts"][rows], kind="stable")]
    origin = a["origin_ts"][order]
    first = np.ones(len(origin), dtype=bool)
    first[1:] = origin[1:] != origin[:-1]
    order, origin = order[first], origin[first]
    if len(origin) == 0:
        empty = np.empty(0)
        return empty.astype("int64"), empty, empty
    pos = np.searchsorted(origin, start)
    pos_c = np.minimum(pos, len(origin) - 1)
    hit = (pos < len(origin)) & (origin[pos_c] == start) & (a["as_of"][order[pos_c]] < end)
    return start[hit], y[hit], a["forecast_var"][order[pos_c[hit]]]


def _estimate_scale(a: Mapping[str, np.ndarray], t: np.ndarray, px: np.ndarray,
                    horizons: Sequence[int], *, symbol: str, unit: str, n_boot: int,
                    min_pairs: int, rng: np.random.Generator) -> list[dict[str, object]]:
    out = []
    for h in horizons:
        _, y, f = c2c_pairs(a, t, px, h, symbol=symbol, unit=unit)
        if len(y) < max(min_pairs, 10):
            s, lo, hi = 1.0, 1.0, 1.0
        else:
            s, lo, hi, _ = ratio_of_means_interval(y, f, horizon=h, n_boot=n_boot,
                                                   random_state=rng)
        out.append({"unit": unit, "symbol": symbol, "horizon": int(h), "scale": s,
                    "scale_lo": lo, "scale_hi": hi})
    return out


def _fit_innovations(residuals: pd.DataFrame, symbols: Sequence[str],
                     unit: str) -> tuple[dict[str, Innovation], float | None]:
    res = residuals[residuals["unit"] == unit]
    inn = {}
    for s in symbols:
        z = res.loc[res["symbol"] == s, "z"].to_numpy()
        if len(z) >= 30:
            inn[s] = innovation_from(fit_innovations(z), source="bic over normal,t,skewt on z "
                                     "before as_of")
    copula_df = None
    if len(symbols) > 1:
        panel = res.pivot(index="ts", columns="symbol", values="z").reindex(columns=list(symbols))
        if len(panel.dropna()) >= 100:
            copula_df = float(fit_t_copula(panel).nu)
    return inn, copula_df


def innovation_from(model: InnovationModel, *, source: str | None = None) -> Innovation:
    """The bundle's :class:`Innovation` from :func:`models.innovations.fit_innovations`' result
    (the chosen fit)."""
    best = model.best
    return Innovation(best.name, dict(best.params), int(best.n_obs),
                      source or f"{model.criterion} over {','.join(f.name for f in model.fits)}")


def stressed_from(result: StressedCorrelations, *,
                  forecast: np.ndarray | None = None) -> StressedCorrelation:
    """The bundle's :class:`StressedCorrelation` from
    :func:`models.corr_stress.stressed_correlations`' result; ``forecast`` = the matrix to set
    next to the stressed ones (None: the panel's usual matrix)."""
    return StressedCorrelation(
        forecast=result.usual.corr if forecast is None else forecast,
        high=result.high.corr, low=result.low.corr,
        high_dates=result.high.dates, low_dates=result.low.dates,
        source=f"high: {result.high.rule}; low: {result.low.rule}")


def vol_of_vol_from(estimates: Sequence[VolOfVolEstimate]) -> VolOfVol:
    """The bundle's :class:`VolOfVol` of one underlying from :mod:`models.volvol` results (one
    per MPOR; the spot-vol beta and window of the shortest MPOR)."""
    est = sorted(estimates, key=lambda e: e.mpor_days)
    if not est or len({e.symbol for e in est}) != 1 or len({e.source for e in est}) != 1:
        raise ModelError("vol_of_vol_from needs estimates of one underlying and one source")
    e0 = est[0]
    return VolOfVol(
        underlying=e0.symbol, quantiles={int(e.mpor_days): dict(e.quantiles) for e in est},
        spot_vol_beta=e0.spot_vol_beta,
        tenor_rule=f"({e0.tenor_days:g}/max(DTE,{e0.min_tenor_days:g}))^p",
        tenor_exponent=e0.tenor_power, reference_tenor_days=e0.tenor_days, source=e0.source,
        start=min(e.start for e in est), end=max(e.end for e in est),
        min_tenor_days=e0.min_tenor_days)


def scale_from(scales: Mapping[tuple[str, str, int], VarianceScale], as_of: object) -> pd.DataFrame:
    """The ``scale`` table for :func:`build_bundle` from precomputed
    :class:`models.scale.VarianceScale` paths keyed by (unit, symbol, horizon): the estimate in
    force at ``as_of`` (``at``), which used only pairs complete before it."""
    t = _utc(as_of)
    rows = []
    for (unit, symbol, h), vs in sorted(scales.items()):
        try:
            est = vs.at(t)
        except KeyError as exc:
            raise ModelError(f"no variance scale for {symbol} {unit} h={h} at or before {t}: "
                             f"{exc}") from None
        rows.append({"unit": unit, "symbol": symbol, "horizon": int(h),
                     "scale": float(est["scale"]), "scale_lo": float(est["lower"]),
                     "scale_hi": float(est["upper"])})
    return pd.DataFrame(rows)
