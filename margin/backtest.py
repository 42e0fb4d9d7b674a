"""Margin backtest statistics: coverage, ES, cost and procyclicality of a margin series against the
realized losses over the margin period of risk (pure computation on arrays; the day-by-day replay
that produces the series is :mod:`pipelines.backtest`).

Conventions: ``loss`` is the realized loss over the MPOR starting on a day (positive = a loss);
``margin`` and ``var`` are the amounts held or forecast on that day; a breach is ``loss > var`` (or
``loss > margin`` for the final margin). Every test takes the breach indicator and the nominal
probability ``p`` (0.01 for VaR99).

- :func:`kupiec_pof`: Kupiec's proportion-of-failures likelihood ratio (chi-square, 1 df); zero
  breaches in 250 days at 1% gives LR = -2 ln(0.99^250) = 5.025 (rejected at 5%: critical value
  3.84).
- :func:`christoffersen`: the independence LR (first-order Markov against i.i.d., 1 df) and the
  conditional-coverage LR = POF + independence (2 df, critical value 5.99).
- :func:`traffic_light`: the Basel zone of a breach count in a window from the binomial cumulative
  probability (green below 95%, red from 99.99%: 0-4 / 5-9 / 10+ in 250 days at 99%);
  :func:`window_zones` per consecutive window; :func:`yellow_band` the band of yellow windows a
  calibrated model produces.
- Overlap: with an MPOR of ``h > 1`` days sampled daily, consecutive losses share ``h - 1`` days
  and the standard tests over-reject. :func:`overlap_null` simulates the statistics under the null
  (i.i.d. daily normal returns, the same ``h``-day overlapping construction, breaches of the exact
  quantile) and :func:`coverage_tests` reports p-values against those simulated distributions.
- :func:`az_z2`: Acerbi and Szekely's (2014) Z2 ES test; critical values simulated by drawing each
  day's loss from that day's own predictive tail (:func:`az_z2_null`).
- :func:`shortfall`, :func:`excess`: mean/max shortfall when breached; excess margin quantiles.
- :func:`procyclicality`: peak-to-trough, the largest 1-, 5- and 30-day increase (ratios), margin
  volatility; :func:`crash_lead` the rise in the five days before a crash against the rise during
  it; :func:`step_response` the margin's response to a step in volatility.
- :func:`cost_multiplier` (walk-forward: the smallest multiplier that would have passed the
  one-sided coverage test on the data before each day) and :func:`ratio_interval` (moving-block
  bootstrap of a ratio of means).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from features.errors import DataError

__all__ = [
    "CoverageTests", "az_z2", "az_z2_null", "christoffersen", "cost_multiplier", "coverage_tests",
    "crash_lead", "excess", "holm", "kupiec_pof", "overlap_null", "procyclicality", "ratio_interval",
    "shortfall", "step_response", "traffic_light", "window_zones", "yellow_band",
]

GREEN_BELOW = 0.95
"""Basel traffic light: a count whose binomial cumulative probability is below this is green."""
RED_FROM = 0.9999
"""...and red from this cumulative probability (yellow between)."""


def _bool(x: ArrayLike, name: str = "breaches") -> NDArray[np.bool_]:
    a = np.asarray(x)
    if a.ndim != 1:
        raise DataError(f"{name} must be one-dimensional; got shape {a.shape}", column=name)
    return a.astype(bool)


def _p(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise DataError(f"p must be in (0, 1); got {p!r}", column="p")
    return float(p)


def _xlogy(x: float, y: float) -> float:
    """x log y with 0 log 0 = 0."""
    return 0.0 if x == 0 else x * math.log(y)


def kupiec_pof(n_breaches: int, n_obs: int, p: float) -> tuple[float, float]:
    """Kupiec's POF test: (LR, p-value from chi-square with 1 df) of ``n_breaches`` in ``n_obs``
    against the nominal probability ``p``."""
    p = _p(p)
    x, n = int(n_breaches), int(n_obs)
    if n <= 0 or not 0 <= x <= n:
        raise DataError(f"need 0 <= n_breaches <= n_obs and n_obs > 0; got {x} of {n}",
                        column="n_breaches")
    phat = x / n
    ll0 = _xlogy(n - x, 1 - p) + _xlogy(x, p)
    ll1 = _xlogy(n - x, 1 - phat) + _xlogy(x, phat)
    lr = max(0.0, -2.0 * (ll0 - ll1))
    return lr, float(stats.chi2.sf(lr, 1))


def _transitions(b: NDArray[np.bool_]) -> tuple[int, int, int, int]:
    prev, cur = b[:-1], b[1:]
    n00 = int(np.sum(~prev & ~cur))
    n01 = int(np.sum(~prev & cur))
    n10 = int(np.sum(prev & ~cur))
    n11 = int(np.sum(prev & cur))
    return n00, n01, n10, n11


def christoffersen(breaches: ArrayLike, p: float) -> dict[str, float]:
    """Christoffersen's tests of a breach sequence: ``lr_ind`` (independence, 1 df), ``lr_cc``
    (conditional coverage = POF + independence, 2 df) and their p-values; the transition counts
    ``n00, n01, n10, n11``."""
    b = _bool(breaches)
    p = _p(p)
    if b.size < 2:
        raise DataError(f"need at least 2 observations; got {b.size}", column="breaches")
    n00, n01, n10, n11 = _transitions(b)
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    ll_ind = (_xlogy(n00, 1 - pi01) + _xlogy(n01, pi01) + _xlogy(n10, 1 - pi11)
              + _xlogy(n11, pi11))
    ll_iid = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    lr_ind = max(0.0, -2.0 * (ll_iid - ll_ind))
    lr_pof, _ = kupiec_pof(int(b.sum()), int(b.size), p)
    lr_cc = lr_pof + lr_ind
    return {"lr_ind": lr_ind, "p_ind": float(stats.chi2.sf(lr_ind, 1)), "lr_cc": lr_cc,
            "p_cc": float(stats.chi2.sf(lr_cc, 2)), "n00": n00, "n01": n01, "n10": n10,
            "n11": n11}


def traffic_light(n_breaches: int, n_obs: int = 250, p: float = 0.01) -> str:
    """The Basel zone of ``n_breaches`` in ``n_obs`` days: "green" while the binomial cumulative
    probability P(X <= n) is below 95%, "red" from 99.99%, "yellow" between (250 days at 99%:
    green 0-4, yellow 5-9, red 10+)."""
    c = float(stats.binom.cdf(int(n_breaches), int(n_obs), _p(p)))
    return "green" if c < GREEN_BELOW else ("red" if c >= RED_FROM else "yellow")


def _zone_bounds(n_obs: int, p: float) -> tuple[int, int]:
    """(first yellow count, first red count) for windows of ``n_obs`` days."""
    k = np.arange(n_obs + 1)
    c = stats.binom.cdf(k, n_obs, p)
    return int(k[c >= GREEN_BELOW][0]), int(k[c >= RED_FROM][0])


def window_zones(breaches: ArrayLike, window: int = 250, p: float = 0.01) -> list[dict[str, object]]:
    """The zone of each consecutive, non-overlapping ``window``-day block (a final partial block is
    dropped): start index, breach count, zone."""
    b = _bool(breaches)
    out = []
    for k in range(b.size // window):
        x = int(b[k * window:(k + 1) * window].sum())
        out.append({"start": k * window, "breaches": x, "zone": traffic_light(x, window, p)})
    return out


def yellow_band(n_windows: int, window: int = 250, p: float = 0.01, level: float = 0.95
                ) -> tuple[int, int]:
    """The central ``level`` band of the number of yellow windows among ``n_windows`` independent
    windows of a calibrated model (breaches i.i.d. Bernoulli(p)): binomial with the exact yellow
    probability of one window."""
    y0, r0 = _zone_bounds(window, _p(p))
    py = float(stats.binom.cdf(r0 - 1, window, p) - stats.binom.cdf(y0 - 1, window, p))
    a = (1 - level) / 2
    return int(stats.binom.ppf(a, n_windows, py)), int(stats.binom.ppf(1 - a, n_windows, py))


@dataclass(frozen=True)
class CoverageTests:
    """Coverage of one breach series: counts, Kupiec, Christoffersen, and how the p-values were
    obtained (``null``: "chi2" for a 1-day MPOR, "simulated overlap" for ``h > 1``)."""

    n_obs: int
    n_breaches: int
    expected: float
    lr_pof: float
    p_pof: float
    p_pof_upper: float
    lr_ind: float
    p_ind: float
    lr_cc: float
    p_cc: float
    null: str

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


def overlap_null(n_obs: int, h: int, p: float, *, n_sim: int = 2000, seed: int = 0
                 ) -> dict[str, NDArray[np.float64]]:
    """Simulated null distributions of the POF, independence and CC statistics (and the breach
    count) for ``n_obs`` overlapping ``h``-day losses sampled daily: i.i.d. standard normal daily
    returns, the ``h``-day sums, breaches above their exact ``1 - p`` quantile ``sqrt(h) z``."""
    rng = np.random.default_rng(seed)
    q = math.sqrt(h) * float(stats.norm.ppf(1 - _p(p)))
    out = {k: np.empty(n_sim) for k in ("lr_pof", "lr_ind", "lr_cc", "count")}
    for i in range(n_sim):
        r = rng.standard_normal(n_obs + h - 1)
        s = np.convolve(r, np.ones(h), mode="valid")
        b = s > q
        c = christoffersen(b, p)
        lr, _ = kupiec_pof(int(b.sum()), n_obs, p)
        out["lr_pof"][i], out["lr_ind"][i], out["lr_cc"][i] = lr, c["lr_ind"], c["lr_cc"]
        out["count"][i] = b.sum()
    return out


def _sim_p(null: NDArray[np.float64], x: float) -> float:
    """Upper-tail p-value of ``x`` against a simulated null (with the +1 correction)."""
    return float((1 + np.sum(null >= x - 1e-12)) / (1 + null.size))


def coverage_tests(breaches: ArrayLike, p: float, *, h: int = 1,
                   null: Mapping[str, NDArray[np.float64]] | None = None) -> CoverageTests:
    """Kupiec and Christoffersen tests of one breach series. ``h == 1``: chi-square p-values;
    ``h > 1``: p-values against ``null`` (:func:`overlap_null`, simulated here when None).
    ``p_pof_upper`` is the one-sided p-value of too many breaches (binomial upper tail; against the
    simulated counts for ``h > 1``), the test of a buffered final margin."""
    b = _bool(breaches)
    n, x = int(b.size), int(b.sum())
    lr, pp = kupiec_pof(x, n, p)
    c = christoffersen(b, p)
    if h <= 1:
        upper = float(stats.binom.sf(x - 1, n, p))
        return CoverageTests(n, x, n * p, lr, pp, upper, c["lr_ind"], c["p_ind"], c["lr_cc"],
                             c["p_cc"], "chi2")
    nl = overlap_null(n, h, p) if null is None else null
    upper = _sim_p(nl["count"], float(x))
    return CoverageTests(n, x, n * p, lr, _sim_p(nl["lr_pof"], lr), upper, c["lr_ind"],
                         _sim_p(nl["lr_ind"], c["lr_ind"]), c["lr_cc"],
                         _sim_p(nl["lr_cc"], c["lr_cc"]), f"simulated overlap (h={h})")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    run = 0.0
    for rank, i in enumerate(order):
        run = max(run, min(1.0, (m - rank) * p[i]))
        adj[i] = run
    return adj.tolist()


def az_z2(loss: ArrayLike, var: ArrayLike, es: ArrayLike, alpha: float) -> float:
    """Acerbi-Szekely Z2 at tail probability ``alpha`` (0.025 for ES97.5) in the loss convention:
    ``Z2 = 1 - sum(L_t 1{L_t > VaR_t} / ES_t) / (T alpha)``; 0 in expectation under the null,
    negative when the ES underestimates the tail."""
    lo, v, e = (np.asarray(a, dtype=float) for a in (loss, var, es))
    if not (lo.shape == v.shape == e.shape) or lo.ndim != 1 or lo.size == 0:
        raise DataError("loss, var and es must be 1-d arrays of one length", column="loss")
    if np.any(e <= 0):
        raise DataError("ES must be > 0 for the Z2 test", column="es")
    hit = lo > v
    return float(1.0 - np.sum(lo[hit] / e[hit]) / (lo.size * alpha))


def az_z2_null(tails: Sequence[NDArray[np.float64]], n_scenarios: Sequence[int], var: ArrayLike,
               es: ArrayLike, alpha: float, *, n_sim: int = 2000, seed: int = 0
               ) -> NDArray[np.float64]:
    """Z2 simulated under the null that each day's loss is a draw from that day's own predictive
    distribution (its scenario losses, equal weights). Only losses beyond the day's VaR count, so
    each day needs only its worst losses ``tails[t]`` (those above the VaR, any order) out of
    ``n_scenarios[t]``: a draw lands in that tail with probability ``len(tails[t]) / n``."""
    v, e = np.asarray(var, float), np.asarray(es, float)
    rng = np.random.default_rng(seed)
    t_n = len(tails)
    u = rng.random((t_n, n_sim))
    total = np.zeros(n_sim)
    for t in range(t_n):
        tail = np.asarray(tails[t], float)
        if tail.size == 0:
            continue
        k = (u[t] * n_scenarios[t]).astype(np.int64)  # the draw's rank among all scenarios
        inside = k < tail.size
        x = tail[np.minimum(k, tail.size - 1)]
        total += np.where(inside & (x > v[t]), x / e[t], 0.0)
    return 1.0 - total / (t_n * alpha)


def shortfall(loss: ArrayLike, margin: ArrayLike) -> dict[str, float]:
    """Breach count and the mean and largest shortfall (loss - margin) on the breached days, also
    relative to the margin."""
    lo, m = np.asarray(loss, float), np.asarray(margin, float)
    hit = lo > m
    if not hit.any():
        return {"n": 0, "mean": 0.0, "max": 0.0, "mean_rel": 0.0, "max_rel": 0.0}
    s = lo[hit] - m[hit]
    rel = s / np.where(m[hit] > 0, m[hit], np.nan)
    return {"n": int(hit.sum()), "mean": float(s.mean()), "max": float(s.max()),
            "mean_rel": float(np.nanmean(rel)) if np.isfinite(rel).any() else float("nan"),
            "max_rel": float(np.nanmax(rel)) if np.isfinite(rel).any() else float("nan")}


def excess(loss: ArrayLike, margin: ArrayLike) -> dict[str, float]:
    """Excess margin (margin - realized loss): its median and 5th percentile."""
    x = np.asarray(margin, float) - np.asarray(loss, float)
    return {"median": float(np.median(x)), "p5": float(np.quantile(x, 0.05))}


def _max_increase(m: NDArray[np.float64], k: int) -> float:
    """Largest ratio m[t] / min(m[max(0, t-k)..t-1]) over t (the increase within k days)."""
    if m.size < 2:
        return float("nan")
    best = 0.0
    for t in range(1, m.size):
        lo = m[max(0, t - k):t].min()
        if lo > 0:
            best = max(best, m[t] / lo)
    return best


def procyclicality(margin: ArrayLike) -> dict[str, float]:
    """Procyclicality of a margin series (positive amounts, daily): ``peak_trough`` = max / min,
    ``max_1d``, ``max_5d``, ``max_30d`` = the largest m[t] / min of the previous k days (1 = no
    increase; the first days use the days they have), ``vol`` = the standard deviation of daily log changes."""
    m = np.asarray(margin, float)
    pos = m[m > 0]
    if pos.size < 2:
        return {"peak_trough": float("nan"), "max_1d": float("nan"), "max_5d": float("nan"),
                "max_30d": float("nan"), "vol": float("nan")}
    d = np.diff(np.log(pos))
    return {"peak_trough": float(pos.max() / pos.min()), "max_1d": _max_increase(pos, 1),
            "max_5d": _max_increase(pos, 5), "max_30d": _max_increase(pos, 30),
            "vol": float(d.std(ddof=1)) if d.size > 1 else 0.0}


def crash_lead(dates: Sequence[object], margin: ArrayLike, crash: object, *, before: int = 5,
               during: int = 5) -> dict[str, float] | None:
    """Margin's rise in the ``before`` days before a crash day against its rise from the crash day
    through ``during`` days after (each as a ratio - 1 of the margin at the start); ``lead`` =
    rise_before / (rise_before + rise_during) when the total rise is positive. None when the dates
    do not cover the window."""
    import pandas as pd

    idx = pd.DatetimeIndex(pd.to_datetime(list(dates), utc=True)).normalize()
    c = pd.Timestamp(crash)
    c = (c.tz_localize("UTC") if c.tzinfo is None else c.tz_convert("UTC")).normalize()
    m = np.asarray(margin, float)
    k = int(np.searchsorted(idx.values, c.to_datetime64()))
    if k >= idx.size or k - before < 0 or k + during >= idx.size or abs(
            (idx[k] - c).days) > 3:
        return None
    m0, mc, m1 = m[k - before], m[k], m[k + during]
    if m0 <= 0:
        return None
    rb, rd = mc / m0 - 1.0, m1 / mc - 1.0 if mc > 0 else 0.0
    tot = max(rb, 0.0) + max(rd, 0.0)
    return {"rise_before": rb, "rise_during": rd,
            "lead": (max(rb, 0.0) / tot) if tot > 0 else float("nan")}


def step_response(margin: ArrayLike, step_at: int, *, horizons: Sequence[int] = (1, 5, 20, 60)
                  ) -> dict[int, float]:
    """Margin after a volatility step at index ``step_at`` relative to the margin just before it,
    at each horizon (days after the step)."""
    m = np.asarray(margin, float)
    base = m[step_at - 1]
    return {int(k): float(m[step_at + k - 1] / base) for k in horizons if step_at + k - 1 < m.size}


def _max_accepted(n: int, p: float, level: float) -> int:
    """The largest breach count in ``n`` days the one-sided binomial test at ``level`` accepts:
    max x with P(X >= x) >= level."""
    x = int(stats.binom.ppf(1 - level, n, p)) + 1
    while x > 0 and stats.binom.sf(x - 1, n, p) < level:
        x -= 1
    while stats.binom.sf(x, n, p) >= level:
        x += 1
    return x


def cost_multiplier(loss: ArrayLike, margin: ArrayLike, p: float, *, min_obs: int = 250,
                    level: float = 0.05, grid: Sequence[float] | None = None
                    ) -> NDArray[np.float64]:
    """Walk-forward multiplier per day: the smallest ``k`` on ``grid`` (0.5 to 3) such that
    ``k x margin`` over the days *before* it passes the one-sided binomial coverage test at
    ``level`` (too many breaches rejected); 1 until ``min_obs`` days exist. Day t's margin times
    its multiplier uses no information from day t on."""
    lo, m = np.asarray(loss, float), np.asarray(margin, float)
    g = np.round(np.arange(0.5, 3.0001, 0.01), 2) if grid is None else np.asarray(grid, float)
    out = np.ones(lo.size)
    ratio = np.where(m > 0, lo / np.where(m > 0, m, 1.0), np.where(lo > 0, np.inf, -np.inf))
    for t in range(min_obs, lo.size):
        r = ratio[:t]
        n = r.size
        x_max = _max_accepted(n, p, level)
        srt = np.sort(r)[::-1]
        # need count(r > k) <= x_max: k >= the (x_max+1)-th largest ratio
        need = srt[x_max] if x_max < n else -np.inf
        ok = g[g >= need]
        out[t] = float(ok[0]) if ok.size else float(g[-1])
    return out


def ratio_interval(a: ArrayLike, b: ArrayLike, *, block: int = 20, n_boot: int = 999,
                   level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """mean(a) / mean(b) and its moving-block bootstrap ``level`` interval (blocks of ``block``
    days resampled jointly from both series, so their dependence and autocorrelation are kept)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    n = x.size
    if n != y.size or n < block:
        raise DataError(f"need two series of one length >= block {block}; got {n}, {y.size}",
                        column="margin")
    rng = np.random.default_rng(seed)
    starts = np.arange(n - block + 1)
    k = math.ceil(n / block)
    rs = np.empty(n_boot)
    for i in range(n_boot):
        s = rng.choice(starts, size=k)
        idx = (s[:, None] + np.arange(block)[None, :]).ravel()[:n]
        rs[i] = x[idx].mean() / y[idx].mean()
    a_ = (1 - level) / 2
    return float(x.mean() / y.mean()), float(np.quantile(rs, a_)), float(np.quantile(rs, 1 - a_))
