"""Monitoring maths for a deployed volatility forecaster: pure functions, no I/O, no engines.

Each check returns a :class:`Check` (name, symbol, value, threshold, breached, detail) and a
:class:`MonitorReport` collects them with a JSON and a markdown rendering. The monitor flow
(:mod:`pipelines.flows`) computes the inputs and decides what a breach does.

Checks
------
- **Rolling QLIKE vs the best baseline** (:func:`qlike_check`): mean QLIKE of the champion over the
  last ``window`` origins divided by the lowest mean QLIKE of the baselines over the same origins.
  Breach when the ratio exceeds ``max_ratio`` (1.10: the champion is 10% worse than the simplest
  alternative).
- **Mincer-Zarnowitz slope** (:func:`mz_check`): OLS slope of realized on forecast variance
  (Newey-West lag ``h - 1``). Breach when it leaves ``[slope_min, slope_max]``.
- **Interval coverage** (:func:`coverage_check`): share of realized values inside a forecast
  interval, with an exact two-sided binomial test against the nominal coverage. Breach when the
  p-value is below ``alpha``.
- **Feature drift** (:func:`psi`, :func:`drift_check`): population stability index of the current
  window against the training window, with quantile bins of the reference (so it is invariant to
  monotone transforms such as logs). Breach above ``max_psi`` (0.25 is the usual "major shift").
- **Data freshness** (:func:`freshness_check`): age of the latest observation at ``now``. Breach when
  it exceeds ``max_age`` (the schedule's period plus a grace period).
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
    """

    name: str
    symbol: str | None
    value: float
    threshold: str
    breached: bool
    detail: str


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
    symbol: str | None = None,
) -> Check:
    """Mincer-Zarnowitz slope of realized on forecast variance (HAC lag ``horizon - 1``).

    A calibrated forecast has slope 1; a slope far below 1 means forecasts move too much, far above
    1 that they move too little. Fewer than ``min_obs`` pairs -> a non-breaching check with NaN.
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
    res = mincer_zarnowitz(ya, fa, lag=max(int(horizon) - 1, 0))
    breached = bool(not slope_min <= res.beta <= slope_max)
    detail = (
        f"slope {res.beta:.3f} (HAC s.e. {res.beta_se:.3f}), intercept {res.alpha:.3g}, "
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
    r_share = (
        np.bincount(np.searchsorted(inner, r, side="left"), minlength=inner.size + 1) / r.size
    )
    c_share = (
        np.bincount(np.searchsorted(inner, c, side="left"), minlength=inner.size + 1) / c.size
    )
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


def freshness_check(
    latest_ts: pd.Timestamp | None,
    now: pd.Timestamp,
    max_age: pd.Timedelta | str,
    *,
    symbol: str | None = None,
) -> Check:
    """Age of the latest observation at ``now`` (hours in ``value``); breach above ``max_age``."""
    limit = pd.Timedelta(max_age)
    if limit <= pd.Timedelta(0):
        raise ValueError(
            f"The 'max_age' parameter of freshness_check must be > 0. Got {max_age!r} instead."
        )
    thr = f"age <= {limit}"
    if latest_ts is None or pd.isna(latest_ts):
        return Check("freshness", symbol, math.inf, thr, True, "no data at all")
    latest, ref = pd.Timestamp(latest_ts), pd.Timestamp(now)
    if (latest.tz is None) != (ref.tz is None):
        raise ValueError(
            f"freshness_check: latest_ts ({latest}) and now ({ref}) must both be timezone-aware "
            "or both naive"
        )
    age = ref - latest
    breached = bool(age > limit)
    detail = f"latest observation {latest} is {age} old at {ref}"
    return Check("freshness", symbol, age / pd.Timedelta("1h"), thr, breached, detail)


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
                f"- **{c.name}** ({c.symbol or 'all'}): {c.detail} (limit {c.threshold})"
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
            v = "" if math.isnan(c.value) else f"{c.value:.4g}"
            lines.append(
                f"| {c.name} | {c.symbol or 'all'} | {v} | {c.threshold} | "
                f"{'yes' if c.breached else 'no'} | {c.detail} |"
            )
        return "\n".join(lines) + "\n"


def summarize_breaches(checks: Sequence[Check]) -> str:
    """One line naming each breached check, e.g. "qlike_ratio[BTC]=1.3 (<= 1.1); freshness=50 ..."."""
    parts = [
        f"{c.name}[{c.symbol or 'all'}]={c.value:.4g} ({c.threshold})" for c in checks if c.breached
    ]
    return "; ".join(parts) if parts else "no breach"
