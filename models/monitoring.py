"""Monitoring maths for a deployed volatility forecaster: pure functions, no I/O, no engines.

Each check returns a :class:`Check` (name, symbol, value, threshold, breached, detail, unit) and a
:class:`MonitorReport` collects them with a JSON and a markdown rendering. The monitor flow
(:mod:`pipelines.flows`) computes the inputs and decides what a breach does.

What is checked, and on what
----------------------------
Everything about the model is measured on **out-of-sample** forecasts: each forecast was issued by
a model fitted on data strictly before its origin. :func:`forecast_checks` takes one symbol's series
of origins (realized target ``y``, the champion's forecast, the baselines' forecasts) and splits it
(:func:`split_windows`) into the **scored window** (the last ``window`` origins with a known target)
and the **reference** (origins whose targets were complete before the first scored origin).

- **Rolling QLIKE vs the best baseline** (:func:`qlike_check`): mean QLIKE of the champion over the
  scored window divided by the lowest mean QLIKE of the baselines over the same origins. Breach
  when the ratio exceeds ``max_ratio`` (1.10: the champion is 10% worse than the simplest
  alternative).
- **Mincer-Zarnowitz slope** (:func:`mz_check`): OLS slope of realized on forecast variance
  (Newey-West lag ``h - 1``). Breach when it leaves ``[slope_min, slope_max]``.
- **Interval coverage** (:func:`coverage_check`): share of realized values inside a forecast
  interval, with an exact two-sided binomial test against the nominal coverage. Breach when the
  p-value is below ``alpha``.
- **Forecast-error drift** (:func:`forecast_drift_check`): population stability index of
  ``log(realized / forecast)`` over the scored window against the reference. When the model is
  healthy this ratio is stationary (its distribution does not move with the volatility level,
  unlike realized variance itself); a level shift the model does not follow, or forecasts off by a
  factor, move it. Breach above ``max_psi`` (0.25 is the usual "major shift").
- **Feed freshness** (:func:`freshness_check`): age at ``now`` of the latest *live* observation
  (:func:`last_live_ts`: a bar in which the price moved). A feed that stopped (no new rows) and a
  frozen feed (new rows repeating the same price) both age. Breach when the age exceeds ``max_age``.
- **Feature drift** (:func:`psi`, :func:`drift_check`): PSI of a raw feature against a reference
  window. It describes the data, not the model: realized variance moves with every volatility
  regime, so the monitor runs it only on request (``drift_features``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from models.losses import mincer_zarnowitz, qlike

PSI_EPS = 1e-4
"""Floor on bin shares in :func:`psi` (an empty bin would make the index infinite)."""


@dataclass(frozen=True)
class Check:
    """The outcome of one monitoring check.

    Attributes
    ----------
    name : "qlike_ratio", "mz_slope", "coverage", "psi" or "freshness".
    symbol : the instrument, or None for a check over all symbols.
    value : the statistic (NaN when the check could not be computed).
    threshold : the limit as text, e.g. "<= 1.1" or "in [0.5, 1.5]".
    breached : True when ``value`` violates ``threshold``.
    detail : one line a person can act on.
    unit : unit of ``value`` ("hours" for freshness; "" for a plain number).
    """

    name: str
    symbol: str | None
    value: float
    threshold: str
    breached: bool
    detail: str
    unit: str = ""

    @property
    def value_text(self) -> str:
        """``value`` as a person reads it: a duration for hours, else a fixed-point number."""
        if self.unit == "hours" and math.isfinite(self.value):
            return format_duration(pd.Timedelta(hours=self.value))
        return format_number(self.value)

    def line(self) -> str:
        """One line: the check, its symbol, value, limit and detail."""
        return (
            f"{self.name} [{self.symbol or 'all'}] = {self.value_text} "
            f"(limit {self.threshold}): {self.detail}"
        )


def format_number(x: float) -> str:
    """A number without scientific notation: 3 decimals below 1000, thousands separators above."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3f}"


def format_duration(td: pd.Timedelta | str) -> str:
    """A duration as a person reads it: "45 minutes", "7.5 hours", "4 days", "2,893 days (7.9 years)".

    Below 2 hours in minutes, below 2 days in hours, otherwise in days (with years above one year);
    at most one decimal, none when whole.
    """
    t = pd.Timedelta(td)
    sign = "-" if t < pd.Timedelta(0) else ""
    t = abs(t)

    def num(x: float) -> str:
        r = round(x, 1)
        return f"{r:,.0f}" if r == int(r) else f"{r:,.1f}"

    def unit(x: float, word: str) -> str:
        return f"{num(x)} {word}" + ("" if num(x) == "1" else "s")

    minutes = t / pd.Timedelta("1min")
    if minutes < 120:
        return sign + unit(minutes, "minute")
    hours = t / pd.Timedelta("1h")
    if hours < 48:
        return sign + unit(hours, "hour")
    days = t / pd.Timedelta("1D")
    out = sign + unit(days, "day")
    if days >= 365.25:
        out += f" ({num(days / 365.25)} years)"
    return out


def _finite_pairs(name: str, *arrays: object) -> list[np.ndarray]:
    out = [np.asarray(a, dtype="float64") for a in arrays]
    shape = out[0].shape
    for a in out[1:]:
        if a.shape != shape:
            raise ValueError(
                f"{name}: inputs must have the same shape; got {[x.shape for x in out]}"
            )
    if len(shape) != 1:
        raise ValueError(f"{name}: inputs must be one-dimensional; got shape {shape}")
    return out


def rolling_qlike(y: object, f: object, window: int) -> np.ndarray:
    """Trailing mean QLIKE over ``window`` observations.

    Parameters
    ----------
    y, f : realized and forecast variance, shape (n,), finite and > 0.
    window : observations per mean (>= 1).

    Returns
    -------
    Array of shape (n,): the mean of ``qlike(y, f)`` over rows ``t-window+1..t``; NaN for the first
    ``window - 1`` rows.
    """
    if int(window) != window or window < 1:
        raise ValueError(
            f"The 'window' parameter of rolling_qlike must be an int >= 1. Got {window!r} instead."
        )
    loss = qlike(y, f)
    out = np.full(loss.shape, np.nan)
    if loss.size >= window:
        c = np.concatenate([[0.0], np.cumsum(loss)])
        out[window - 1 :] = (c[window:] - c[:-window]) / window
    return out


def qlike_check(
    y: object,
    champion: object,
    baselines: Mapping[str, object],
    *,
    window: int,
    max_ratio: float = 1.10,
    symbol: str | None = None,
) -> Check:
    """Champion's mean QLIKE over the last ``window`` origins relative to the best baseline's.

    Parameters
    ----------
    y : realized variance per origin, shape (n,), in time order.
    champion : the champion's forecasts, shape (n,).
    baselines : baseline name -> forecasts, shape (n,) each (at least one).
    window : origins in the trailing window; fewer available -> all of them are used.
    max_ratio : breach when ``champion QLIKE / best baseline QLIKE > max_ratio``.
    symbol : recorded on the check.
    """
    if not baselines:
        raise ValueError("qlike_check needs at least one baseline; got an empty mapping")
    if not max_ratio > 0:
        raise ValueError(
            f"The 'max_ratio' parameter of qlike_check must be > 0. Got {max_ratio!r} instead."
        )
    ya, fc = _finite_pairs("qlike_check", y, champion)
    if ya.size == 0:
        return Check(
            "qlike_ratio",
            symbol,
            math.nan,
            f"<= {max_ratio:g}",
            False,
            "no origin with a known realized variance yet",
        )
    w = int(min(window, ya.size))
    champ_q = float(rolling_qlike(ya, fc, w)[-1])
    base_q = {}
    for name, fb in baselines.items():
        (fb_a,) = _finite_pairs("qlike_check", fb)
        if fb_a.shape != ya.shape:
            raise ValueError(
                f"qlike_check: baseline {name!r} has shape {fb_a.shape}; expected {ya.shape}"
            )
        base_q[name] = float(rolling_qlike(ya, fb_a, w)[-1])
    best = min(base_q, key=base_q.__getitem__)
    ratio = champ_q / base_q[best] if base_q[best] > 0 else math.inf
    breached = bool(ratio > max_ratio)
    detail = (
        f"champion QLIKE {champ_q:.4g} vs best baseline {best!r} {base_q[best]:.4g} "
        f"over the last {w} origins"
    )
    if breached:
        detail += f": the champion is {100 * (ratio - 1):.1f}% worse than the baseline"
    return Check("qlike_ratio", symbol, ratio, f"<= {max_ratio:g}", breached, detail)


def mz_check(
    y: object,
    f: object,
    *,
    horizon: int = 1,
    slope_min: float = 0.5,
    slope_max: float = 1.5,
    min_obs: int = 30,
    log: bool = False,
    symbol: str | None = None,
) -> Check:
    """Mincer-Zarnowitz slope of realized on forecast variance (HAC lag ``horizon - 1``).

    A calibrated forecast has slope 1; a slope far below 1 means forecasts move too much, far above
    1 that they move too little. With ``log`` the regression is of ``ln y`` on ``ln f`` (slope 1
    too for a calibrated forecast with multiplicative errors; not dominated by a few jump periods
    as the levels regression is). Fewer than ``min_obs`` pairs -> a non-breaching check with NaN.
    """
    if not slope_min < 1 < slope_max:
        raise ValueError(
            f"mz_check needs slope_min < 1 < slope_max; got [{slope_min!r}, {slope_max!r}]"
        )
    ya, fa = _finite_pairs("mz_check", y, f)
    thr = f"in [{slope_min:g}, {slope_max:g}]"
    if ya.size < min_obs:
        return Check(
            "mz_slope",
            symbol,
            math.nan,
            thr,
            False,
            f"only {ya.size} forecast/realized pairs (< {min_obs}); slope not estimated",
        )
    res = mincer_zarnowitz(ya, fa, lag=max(int(horizon) - 1, 0), log=log)
    breached = bool(not slope_min <= res.beta <= slope_max)
    detail = (
        f"{'log ' if log else ''}slope {res.beta:.3f} (HAC s.e. {res.beta_se:.3f}), "
        f"intercept {format_number(res.alpha) if log else f'{res.alpha:.3g}'}, "
        f"R^2 {res.r2:.3f}, n {res.n}"
    )
    return Check("mz_slope", symbol, res.beta, thr, breached, detail)


def interval_coverage(y: object, lower: object, upper: object) -> tuple[float, int]:
    """Share of ``y`` inside ``[lower, upper]`` and the number of observations."""
    ya, lo, hi = _finite_pairs("interval_coverage", y, lower, upper)
    if (lo > hi).any():
        i = int(np.flatnonzero(lo > hi)[0])
        raise ValueError(
            f"interval_coverage: lower must be <= upper; got lower={float(lo[i])!r} > upper={float(hi[i])!r} "
            f"at position {i}"
        )
    if ya.size == 0:
        return math.nan, 0
    inside = (ya >= lo) & (ya <= hi)
    return float(inside.mean()), int(ya.size)


def coverage_check(
    y: object,
    lower: object,
    upper: object,
    *,
    nominal: float,
    alpha: float = 0.01,
    min_obs: int = 30,
    symbol: str | None = None,
) -> Check:
    """Interval coverage with an exact two-sided binomial test against ``nominal``.

    Breach when the test rejects at level ``alpha`` (too few or too many hits).
    """
    if not 0 < nominal < 1:
        raise ValueError(
            f"The 'nominal' parameter of coverage_check must be in (0, 1). Got {nominal!r} instead."
        )
    if not 0 < alpha < 1:
        raise ValueError(
            f"The 'alpha' parameter of coverage_check must be in (0, 1). Got {alpha!r} instead."
        )
    share, n = interval_coverage(y, lower, upper)
    thr = f"binomial p >= {alpha:g} vs nominal {nominal:g}"
    if n < min_obs:
        return Check(
            "coverage",
            symbol,
            share,
            thr,
            False,
            f"only {n} realized values inside the window (< {min_obs}); not tested",
        )
    hits = int(round(share * n))
    p = float(stats.binomtest(hits, n, nominal, alternative="two-sided").pvalue)
    breached = bool(p < alpha)
    detail = (
        f"coverage {share:.3f} over {n} origins (nominal {nominal:g}), binomial p-value {p:.3g}"
    )
    return Check("coverage", symbol, share, thr, breached, detail)


def psi(reference: object, current: object, *, bins: int = 10) -> float:
    """Population stability index ``sum((c_i - r_i) ln(c_i / r_i))`` of ``current`` vs ``reference``.

    Bin edges are the reference's order-statistic quantiles (``inverted_cdf``: unchanged by any
    increasing transform; at most ``bins`` bins ``(e_{k-1}, e_k]``, tied quantiles merged), with open
    outer bins; shares are floored at :data:`PSI_EPS`. Non-finite values are ignored.

    Parameters
    ----------
    reference, current : samples, any length >= 1 after dropping non-finite values.
    bins : number of quantile bins (>= 2).
    """
    if int(bins) != bins or bins < 2:
        raise ValueError(f"The 'bins' parameter of psi must be an int >= 2. Got {bins!r} instead.")
    r = np.asarray(reference, dtype="float64").reshape(-1)
    c = np.asarray(current, dtype="float64").reshape(-1)
    r, c = r[np.isfinite(r)], c[np.isfinite(c)]
    if r.size == 0 or c.size == 0:
        raise ValueError(
            f"psi needs finite values in both samples; got {r.size} reference and {c.size} current"
        )
    levels = np.arange(1, int(bins)) / int(bins)  # k / bins exactly (linspace drifts by an ulp)
    inner = np.unique(np.quantile(r, levels, method="inverted_cdf"))
    r_share = np.bincount(np.searchsorted(inner, r, side="left"), minlength=inner.size + 1) / r.size
    c_share = np.bincount(np.searchsorted(inner, c, side="left"), minlength=inner.size + 1) / c.size
    r_share = np.maximum(r_share, PSI_EPS)
    c_share = np.maximum(c_share, PSI_EPS)
    return float(np.sum((c_share - r_share) * np.log(c_share / r_share)))


def drift_check(
    reference: object,
    current: object,
    *,
    feature: str,
    max_psi: float = 0.25,
    bins: int = 10,
    min_obs: int = 20,
    symbol: str | None = None,
) -> Check:
    """PSI of one feature's current window against its training window; breach above ``max_psi``."""
    if not max_psi > 0:
        raise ValueError(
            f"The 'max_psi' parameter of drift_check must be > 0. Got {max_psi!r} instead."
        )
    r = np.asarray(reference, dtype="float64")
    c = np.asarray(current, dtype="float64")
    nr, nc = int(np.isfinite(r).sum()), int(np.isfinite(c).sum())
    name = f"psi:{feature}"
    if min(nr, nc) < min_obs:
        return Check(
            name,
            symbol,
            math.nan,
            f"<= {max_psi:g}",
            False,
            f"{feature}: {nr} reference and {nc} current values (< {min_obs}); not tested",
        )
    value = psi(r, c, bins=bins)
    breached = bool(value > max_psi)
    detail = f"{feature}: PSI {value:.3f} of {nc} current vs {nr} training values"
    return Check(name, symbol, value, f"<= {max_psi:g}", breached, detail)


def last_live_ts(ts: object, rv_var: object) -> pd.Timestamp | None:
    """The latest time the feed showed new information: the last bar whose realized variance is
    finite and > 0 (the price moved in it). None when there is no such bar.

    A frozen feed that keeps publishing the last price produces bars with zero realized variance;
    they do not count as live.
    """
    t = pd.DatetimeIndex(pd.to_datetime(np.asarray(ts)))
    v = np.asarray(rv_var, dtype="float64")
    if t.shape != v.shape:
        raise ValueError(f"last_live_ts: ts has shape {t.shape} but rv_var has shape {v.shape}")
    live = np.isfinite(v) & (v > 0)
    if not live.any():
        return None
    return pd.Timestamp(t[live].max())


def freshness_check(
    latest_ts: pd.Timestamp | None,
    now: pd.Timestamp,
    max_age: pd.Timedelta | str,
    *,
    last_row_ts: pd.Timestamp | None = None,
    symbol: str | None = None,
) -> Check:
    """Age of the latest live observation at ``now`` (``value`` in hours); breach above ``max_age``.

    Parameters
    ----------
    latest_ts : the latest live observation (:func:`last_live_ts`); None = none at all.
    now : the monitoring clock.
    max_age : the longest acceptable age (the schedule's period plus a grace period).
    last_row_ts : the latest row of the feed, live or not; when it is later than ``latest_ts``
        the detail says the rows since repeat the same price (a frozen feed).
    symbol : recorded on the check.
    """
    limit = pd.Timedelta(max_age)
    if limit <= pd.Timedelta(0):
        raise ValueError(
            f"The 'max_age' parameter of freshness_check must be > 0. Got {max_age!r} instead."
        )
    thr = f"age <= {format_duration(limit)}"
    if latest_ts is None or pd.isna(latest_ts):
        return Check("freshness", symbol, math.inf, thr, True, "no live data at all", "hours")
    latest, ref = pd.Timestamp(latest_ts), pd.Timestamp(now)
    if (latest.tz is None) != (ref.tz is None):
        raise ValueError(
            f"freshness_check: latest_ts ({latest}) and now ({ref}) must both be timezone-aware "
            "or both naive"
        )
    age = ref - latest
    breached = bool(age > limit)
    detail = f"latest live row {_ts_text(latest)}, clock {_ts_text(ref)}"
    if last_row_ts is not None and pd.Timestamp(last_row_ts) > latest:
        detail += f"; the rows up to {_ts_text(pd.Timestamp(last_row_ts))} repeat the same price"
    return Check("freshness", symbol, age / pd.Timedelta("1h"), thr, breached, detail, "hours")


def _ts_text(ts: pd.Timestamp) -> str:
    t = pd.Timestamp(ts)
    if t.tz is not None:
        return t.tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")
    return t.strftime("%Y-%m-%d %H:%M")


# ---- out-of-sample forecast checks ---------------------------------------------------------------
def log_ratio(y: object, f: object) -> np.ndarray:
    """``log(y / f)``: NaN where either is not finite and > 0."""
    ya, fa = _finite_pairs("log_ratio", y, f)
    ok = np.isfinite(ya) & np.isfinite(fa) & (ya > 0) & (fa > 0)
    out = np.full(ya.shape, np.nan)
    out[ok] = np.log(ya[ok] / fa[ok])
    return out


def split_windows(
    known: object, *, window: int, horizon: int = 1, reference: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the scored window and of its out-of-sample reference.

    Parameters
    ----------
    known : bool per origin (one row per period, in time order): the origin has a usable pair.
    window : the scored window: the last ``window`` known origins.
    horizon : forecast horizon in periods; the target of origin ``i`` is complete at ``i + h``.
    reference : keep only the last ``reference`` reference origins; None = all of them.

    Returns
    -------
    (scored, reference) integer positions. Reference origins ``i`` have ``i + horizon <= s``, with
    ``s`` the first scored origin: their targets were complete before the scored window began.
    """
    k = np.asarray(known, dtype=bool).reshape(-1)
    if int(window) != window or window < 1:
        raise ValueError(
            f"The 'window' parameter of split_windows must be an int >= 1. Got {window!r} instead."
        )
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(
            f"The 'horizon' parameter of split_windows must be an int >= 1. Got {horizon!r} instead."
        )
    pos = np.flatnonzero(k)
    scored = pos[-int(window) :]
    if scored.size == 0:
        return scored, scored
    ref = pos[pos + int(horizon) <= scored[0]]
    if reference is not None:
        ref = ref[-int(reference) :]
    return scored, ref


def forecast_drift_check(
    reference_ratio: object,
    scored_ratio: object,
    *,
    max_psi: float = 0.25,
    bins: int = 10,
    min_obs: int = 50,
    min_reference: int | None = None,
    symbol: str | None = None,
) -> Check:
    """PSI of ``log(realized / forecast)`` in the scored window against the reference.

    Parameters
    ----------
    reference_ratio, scored_ratio : ``log(y / f)`` (:func:`log_ratio`) of the reference and the
        scored origins; non-finite values are ignored.
    max_psi : breach above this PSI.
    bins : quantile bins of the reference.
    min_obs : fewer finite values in either sample -> a non-breaching check with NaN.
    min_reference : fewer reference values than this -> not tested either (None = ``min_obs``).
        The PSI of two samples from one distribution is about ``(bins - 1) (1/n_scored +
        1/n_reference)``, so a short reference alone makes it cross the limit.
    symbol : recorded on the check.
    """
    if not max_psi > 0:
        raise ValueError(
            f"The 'max_psi' parameter of forecast_drift_check must be > 0. Got {max_psi!r} instead."
        )
    r = np.asarray(reference_ratio, dtype="float64").reshape(-1)
    c = np.asarray(scored_ratio, dtype="float64").reshape(-1)
    r, c = r[np.isfinite(r)], c[np.isfinite(c)]
    name, thr = "drift:log_rv_ratio", f"<= {max_psi:g}"
    need_r = min_obs if min_reference is None else max(min_obs, int(min_reference))
    if c.size < min_obs or r.size < need_r:
        return Check(
            name,
            symbol,
            math.nan,
            thr,
            False,
            f"{c.size} scored and {r.size} earlier out-of-sample origins (needs {min_obs} and "
            f"{need_r}); not tested",
        )
    value = psi(r, c, bins=bins)
    breached = bool(value > max_psi)
    med_c, med_r = float(np.exp(np.median(c))), float(np.exp(np.median(r)))
    detail = (
        f"realized/forecast median {med_c:.2f} over the last {c.size} origins vs {med_r:.2f} "
        f"over {r.size} earlier out-of-sample origins, PSI {value:.3f}"
    )
    if breached:
        detail += (
            (": forecasts are too low" if med_c > med_r else ": forecasts are too high")
            if abs(math.log(med_c / med_r)) > 0.1
            else ": the error distribution changed shape"
        )
    return Check(name, symbol, value, thr, breached, detail)


def forecast_checks(
    frame: pd.DataFrame,
    *,
    horizon: int = 1,
    window: int = 250,
    drift_window: int = 250,
    drift_reference: int | None = None,
    max_qlike_ratio: float = 1.10,
    mz_slope_min: float = 0.5,
    mz_slope_max: float = 1.5,
    mz_log: bool = True,
    coverage_alpha: float = 0.01,
    max_psi: float = 0.25,
    symbol: str | None = None,
) -> list[Check]:
    """Every model check of one symbol on its out-of-sample forecasts.

    Parameters
    ----------
    frame : one row per origin in time order (one per period; rows may hold NaN), with ``y`` (the
        realized target of the origin, NaN while unknown), ``forecast_var`` (the champion's
        forecast), one ``b_<name>`` column per baseline (at least one) and optionally two quantile
        columns ``q_<level>`` of the realized target (an interval for the coverage check). Every
        forecast must have been issued by a model fitted on data before its origin.
    horizon : forecast horizon in periods.
    window : scored origins of the QLIKE, Mincer-Zarnowitz and coverage checks.
    drift_window : scored origins of the drift check; its reference is every earlier origin whose
        target was complete before the first scored origin (the last ``drift_reference``), and
        at least ``drift_window`` of them are needed (else the check is "not tested").
    max_qlike_ratio, mz_slope_min, mz_slope_max, coverage_alpha, max_psi : the thresholds.
    mz_log : run the Mincer-Zarnowitz regression on logs (see :func:`mz_check`).
    symbol : recorded on the checks.

    Returns
    -------
    [qlike_ratio, mz_slope, (coverage,) drift:log_rv_ratio].
    """
    base_cols = [c for c in frame.columns if c.startswith("b_")]
    if "y" not in frame.columns or "forecast_var" not in frame.columns or not base_cols:
        raise ValueError(
            "forecast_checks needs columns 'y', 'forecast_var' and at least one 'b_<baseline>'; "
            f"got {list(frame.columns)}"
        )
    qcols = sorted(
        (c for c in frame.columns if c.startswith("q_") and frame[c].notna().any()),
        key=lambda c: float(c[2:]),
    )
    cols = ["y", "forecast_var", *base_cols]
    num = frame[cols].to_numpy(dtype="float64", na_value=np.nan)
    known = np.isfinite(num).all(axis=1) & (num > 0).all(axis=1)
    scored, _ = split_windows(known, window=window, horizon=horizon)
    part = frame.iloc[scored]
    y = part["y"].to_numpy(dtype="float64")
    f = part["forecast_var"].to_numpy(dtype="float64")
    base = {c[2:]: part[c].to_numpy(dtype="float64") for c in base_cols}
    checks = [
        qlike_check(y, f, base, window=window, max_ratio=max_qlike_ratio, symbol=symbol),
        mz_check(
            y,
            f,
            horizon=horizon,
            slope_min=mz_slope_min,
            slope_max=mz_slope_max,
            log=mz_log,
            symbol=symbol,
        ),
    ]
    if len(qcols) >= 2:
        lo, hi = qcols[0], qcols[-1]
        qa = part[[lo, hi]].to_numpy(dtype="float64", na_value=np.nan)
        ok = np.isfinite(qa).all(axis=1)
        checks.append(
            coverage_check(
                y[ok],
                qa[ok, 0],
                qa[ok, 1],
                nominal=float(hi[2:]) - float(lo[2:]),
                alpha=coverage_alpha,
                symbol=symbol,
            )
        )
    pair = frame[["y", "forecast_var"]].to_numpy(dtype="float64", na_value=np.nan)
    ratio = log_ratio(pair[:, 0], pair[:, 1])
    d_scored, d_ref = split_windows(
        np.isfinite(ratio), window=drift_window, horizon=horizon, reference=drift_reference
    )
    checks.append(
        forecast_drift_check(
            ratio[d_ref],
            ratio[d_scored],
            max_psi=max_psi,
            min_reference=drift_window,
            symbol=symbol,
        )
    )
    return checks


def _clean(x: object) -> object:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


@dataclass(frozen=True)
class MonitorReport:
    """All checks of one monitoring run.

    Attributes
    ----------
    checks : the checks, in the order they were run.
    created_at : when the report was made (UTC).
    context : what was monitored (dataset, model version, windows, ...), JSON-serialisable values.
    """

    checks: tuple[Check, ...]
    created_at: pd.Timestamp
    context: Mapping[str, object] = field(default_factory=dict)

    @property
    def breaches(self) -> list[Check]:
        """The checks that breached."""
        return [c for c in self.checks if c.breached]

    @property
    def ok(self) -> bool:
        """True when no check breached."""
        return not self.breaches

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict: status, created_at, context, checks, breaches (non-finite -> None/"inf")."""
        checks = [{k: _clean(v) for k, v in asdict(c).items()} for c in self.checks]
        return {
            "status": "ok" if self.ok else "breach",
            "created_at": self.created_at.isoformat(),
            "context": dict(self.context),
            "n_checks": len(self.checks),
            "n_breaches": len(self.breaches),
            "checks": checks,
            "breaches": [c for c in checks if c["breached"]],
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_markdown(self) -> str:
        """A markdown report: status, context, a breaches section (when any) and all checks."""
        lines = [
            f"# Monitoring report {self.created_at.isoformat()}",
            "",
            f"**Status: {'OK' if self.ok else 'BREACH'}** "
            f"({len(self.breaches)} breach(es) of {len(self.checks)} checks)",
            "",
        ]
        if self.context:
            lines += ["## Context", ""]
            lines += [f"- {k}: {v}" for k, v in self.context.items()]
            lines.append("")
        if self.breaches:
            lines += ["## Breaches", ""]
            lines += [
                f"- **{c.name}** ({c.symbol or 'all'}): {c.value_text}, {c.detail} "
                f"(limit {c.threshold})"
                for c in self.breaches
            ]
            lines.append("")
        lines += [
            "## Checks",
            "",
            "| check | symbol | value | limit | breached | detail |",
            "|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            v = "" if math.isnan(c.value) else c.value_text
            lines.append(
                f"| {c.name} | {c.symbol or 'all'} | {v} | {c.threshold} | "
                f"{'yes' if c.breached else 'no'} | {c.detail} |"
            )
        return "\n".join(lines) + "\n"


def summarize_breaches(checks: Sequence[Check]) -> str:
    """One line naming each breached check, e.g. "qlike_ratio[BTC]=1.300 (<= 1.1); freshness..."."""
    parts = [
        f"{c.name}[{c.symbol or 'all'}]={c.value_text} ({c.threshold})"
        for c in checks
        if c.breached
    ]
    return "; ".join(parts) if parts else "no breach"
