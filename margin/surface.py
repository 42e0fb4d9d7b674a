"""Implied-volatility smiles per expiry (raw SVI), their arbitrage checks, and the surface.

Model: raw SVI per expiry
-------------------------
Total implied variance ``w(k) = sigma_impl(k)^2 t`` at forward log-moneyness ``k = ln(K / F)``::

    w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + s^2))

one five-parameter slice per expiry. Why raw SVI and not SSVI: SSVI shares its skew/curvature
function across expiries (three parameters for the whole surface plus the ATM variances), which
rules out calendar arbitrage by construction but cannot follow the short crypto expiries (1 day
to 1 week on Deribit) whose skew flips sign from one day to the next; the goal here is a fit inside
the bid-ask spread of each strike, which needs each slice's own five degrees of freedom. Calendar
and butterfly arbitrage are then *checked* and reported per expiry (below), not assumed away.

The fit is parametrized as ``(w_min, b, rho, m, s)`` with ``a = w_min - b s sqrt(1 - rho^2)``
and box bounds ``w_min >= 0``, ``0 <= b <= 2``, ``|rho| < 1``, ``s > 0``: the minimum of
``w`` is ``w_min``, so total variance is never negative, and ``b (1 + |rho|) <= 4`` (Roger Lee's
moment bound on the wings) holds for every admissible point. ``scipy.optimize.least_squares``
(trust-region reflective; eight starting points on the quotes alone, the best one then polished
with the butterfly penalty below) does the fitting.

What the fit targets (the weighting rules)
------------------------------------------
Per strike the out-of-the-money option is used (a call at ``K >= F``, a put below): its price
carries the most volatility information per tick.

- **Bid/ask chains** (the ETH snapshot): the target is the bid-ask interval in volatility,
  ``[iv(bid), iv(ask)]``, which holds the fitted price inside ``[bid, ask]`` exactly where the
  fitted vol lies inside it (Black prices are increasing in vol). Residual =
  ``(vol_fit - centre) / half_width`` (``half_width`` floored at 0.05 vol points), so a strike
  counts in proportion to how tightly the market pins it. A quote with **no bid** (bid missing or
  0), no ask, a crossed or locked market, or a side without an implied volatility is
  **dropped** from the fit (counted per reason); it is priced off the fitted smile instead.
  A quote whose timestamp is older than ``stale_after`` before the snapshot's time is **weighted
  down** by ``stale_weight``.
- **Mark-only chains** (the BTC file): the target is the venue's mark IV (from ``mark_iv``, or
  inverted from ``mark_px`` where the chain has no IV), residual in vol points. Marks are the
  venue's current model values, not trades, so no staleness rule applies to them (the BTC file's
  per-row time is not an observation time; see ``features/readers/deribit.py``). The fit error
  is reported in vol points against the marks; it is not a test of the fit against the market.
  A mark under one tick (``min_mark_px``) is dropped: its IV says nothing (the BTC file puts a
  placeholder 100 % there).

A butterfly penalty keeps ``g(k) >= 0`` on the check grid where the quotes allow it (residuals
``butterfly_penalty * max(-g(k_j), 0)``); whatever remains is reported.

Arbitrage checks
----------------
- **Butterfly** (Gatheral-Jacquier 2014, Lemma 2.2): the density is non-negative iff
  ``g(k) = (1 - k w'/(2w))^2 - (w'^2/4)(1/w + 1/4) + w''/2 >= 0``; evaluated on a grid spanning
  the quoted log-moneyness range widened each side by ``k_margin_sd`` ATM standard deviations
  (``vol_atm sqrt(t)``: the wings the quotes say something about).
- **Calendar**: total variance non-decreasing in expiry at fixed ``k``:
  ``w_{i+1}(k) - w_i(k) >= 0`` where both slices' grids overlap, reported on the later slice.

Times are ACT/365 year fractions from the snapshot (:func:`margin.pricing.year_fraction`);
prices in the chain's units (Deribit: coin, ``inverse``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from features.errors import ConfigError, Failure, FailureReason
from features.schema import (
    ASK_PX,
    BID_PX,
    CLOSE,
    EXPIRY,
    MARK_IV,
    MARK_PX,
    OPTION_TYPE,
    STRIKE,
    SYMBOL,
    TS,
    UNDERLYING,
    UNDERLYING_PX,
)
from margin.iv import implied_vol
from margin.pricing import SECONDS_PER_YEAR, black76_price

__all__ = [
    "ArbitrageCheck",
    "DvolValue",
    "FitParams",
    "SVIParams",
    "SmileFit",
    "VolSurface",
    "butterfly_check",
    "calendar_check",
    "dvol_at",
    "fit_slice",
    "fit_surface",
    "parity_forward",
]

ForwardSource = Literal["auto", "parity", "underlying"]


# ---- raw SVI ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SVIParams:
    """Raw SVI parameters of one slice (total variance ``w``, not vol)."""

    a: float
    b: float
    rho: float
    m: float
    sigma: float

    def total_variance(self, k: ArrayLike) -> NDArray[np.float64]:
        """``w(k)`` at log-moneyness ``k`` (array)."""
        x = np.asarray(k, dtype=float) - self.m
        return self.a + self.b * (self.rho * x + np.sqrt(x * x + self.sigma**2))

    def derivatives(self, k: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
        """``(w, w', w'')`` at ``k``."""
        x = np.asarray(k, dtype=float) - self.m
        r = np.sqrt(x * x + self.sigma**2)
        w = self.a + self.b * (self.rho * x + r)
        return w, self.b * (self.rho + x / r), self.b * self.sigma**2 / r**3

    def g(self, k: ArrayLike) -> NDArray[np.float64]:
        """Gatheral-Jacquier's density function ``g(k)`` (>= 0 everywhere: no butterfly
        arbitrage); -inf where ``w(k) <= 0``."""
        kk = np.asarray(k, dtype=float)
        w, w1, w2 = self.derivatives(kk)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (1 - kk * w1 / (2 * w)) ** 2 - w1**2 / 4 * (1 / w + 0.25) + w2 / 2
        return np.where(w > 0, out, -np.inf)

    def to_dict(self) -> dict[str, float]:
        """The parameters as a JSON-ready dict."""
        return {"a": self.a, "b": self.b, "rho": self.rho, "m": self.m, "sigma": self.sigma}


def _from_fit_vector(x: Sequence[float]) -> SVIParams:
    w_min, b, rho, m, s = (float(v) for v in x)
    return SVIParams(w_min - b * s * np.sqrt(1 - rho * rho), b, rho, m, s)


# ---- arbitrage checks ------------------------------------------------------------------------
@dataclass(frozen=True)
class ArbitrageCheck:
    """The verdict of one arbitrage check on a log-moneyness grid.

    Attributes
    ----------
    ok : True when the checked quantity is >= ``-tol`` on the whole grid.
    min_value : the smallest value found (``g`` for butterfly, ``w_later - w_earlier`` for
        calendar).
    at_k : the log-moneyness of that minimum.
    k_range : (lowest, highest) log-moneyness checked.
    """

    ok: bool
    min_value: float
    at_k: float
    k_range: tuple[float, float]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {
            "ok": self.ok,
            "min_value": self.min_value,
            "at_k": self.at_k,
            "k_range": list(self.k_range),
        }


def _verdict(values: NDArray, k: NDArray, tol: float) -> ArbitrageCheck:
    i = int(np.argmin(values))
    return ArbitrageCheck(
        bool(values[i] >= -tol), float(values[i]), float(k[i]), (float(k.min()), float(k.max()))
    )


def butterfly_check(params: SVIParams, k: ArrayLike, *, tol: float = 1e-10) -> ArbitrageCheck:
    """No butterfly arbitrage on grid ``k``: ``g(k) >= -tol`` (Gatheral-Jacquier, Lemma 2.2)."""
    kk = np.asarray(k, dtype=float)
    return _verdict(params.g(kk), kk, tol)


def calendar_check(
    earlier: SVIParams, later: SVIParams, k: ArrayLike, *, tol: float = 1e-10
) -> ArbitrageCheck:
    """No calendar arbitrage between two slices on grid ``k``: ``w_later(k) >= w_earlier(k)``."""
    kk = np.asarray(k, dtype=float)
    return _verdict(later.total_variance(kk) - earlier.total_variance(kk), kk, tol)


# ---- forwards --------------------------------------------------------------------------------
def parity_forward(
    strike: ArrayLike,
    call_px: ArrayLike,
    put_px: ArrayLike,
    *,
    inverse: bool = True,
    near: float | None = None,
    n_strikes: int = 3,
) -> float:
    """The forward implied by put-call parity, median over the strikes nearest the money.

    ``inverse`` (coin prices c = V/F, undiscounted as on Deribit): ``C - P = 1 - K/F``, so
    ``F = K / (1 - (C - P))``; linear (rate 0): ``F = K + C - P``. ``near`` is the first guess
    of the forward (default: the median strike) used to pick the ``n_strikes`` strikes.
    Returns NaN when no strike has both prices.
    """
    k, c, p = (np.asarray(a, dtype=float) for a in (strike, call_px, put_px))
    ok = np.isfinite(k) & np.isfinite(c) & np.isfinite(p) & (k > 0)
    if inverse:
        ok &= (1 - (c - p)) > 0
    if not ok.any():
        return float("nan")
    k, c, p = k[ok], c[ok], p[ok]
    est = k / (1 - (c - p)) if inverse else k + c - p
    guess = float(np.median(k)) if near is None else float(near)
    for _ in range(2):  # pick strikes nearest the guess, re-centre once on the estimate
        idx = np.argsort(np.abs(np.log(k / guess)))[:n_strikes]
        guess = float(np.median(est[idx]))
    return guess


# ---- one slice -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitParams:
    """Settings of the smile fit (the weighting rules in the module docstring).

    Attributes
    ----------
    min_quotes : fewest usable quotes to fit a slice (5 parameters).
    min_half_width_vol : floor of a quote's half-spread in vol (fraction), 0.0005 = 0.05 points.
    min_mark_px : mark-only chains: a mark price below this (one tick, 0.0001 coin on Deribit)
        carries no volatility information and is dropped.
    stale_after : a bid/ask quote older than this before the snapshot is weighted down.
    stale_weight : the weight of such a quote (1 = no down-weighting).
    butterfly_penalty : weight of the ``max(-g, 0)`` residuals (0 disables the penalty).
    k_margin_sd : the check grid extends the quoted log-moneyness range each side by this many
        ATM standard deviations (``vol_atm sqrt(t)``).
    grid_points : points of the check grid.
    forward_tol : ``auto`` forwards: the file's underlying price is taken as the forward when it
        is within this relative distance of the parity forward for every expiry.
    """

    min_quotes: int = 5
    min_half_width_vol: float = 0.0005
    min_mark_px: float = 1e-4
    stale_after: pd.Timedelta = pd.Timedelta(hours=1)
    stale_weight: float = 0.1
    butterfly_penalty: float = 100.0
    k_margin_sd: float = 1.0
    grid_points: int = 201
    forward_tol: float = 0.0025

    def __post_init__(self) -> None:
        for name, ok, want in (
            ("min_quotes", self.min_quotes >= 5, ">= 5"),
            ("min_half_width_vol", self.min_half_width_vol > 0, "> 0"),
            ("stale_weight", 0 < self.stale_weight <= 1, "in (0, 1]"),
            ("butterfly_penalty", self.butterfly_penalty >= 0, ">= 0"),
            ("k_margin_sd", self.k_margin_sd >= 0, ">= 0"),
            ("grid_points", self.grid_points >= 11, ">= 11"),
            ("forward_tol", self.forward_tol > 0, "> 0"),
        ):
            if not ok:
                raise ConfigError(
                    f"The '{name}' parameter of FitParams must be {want}. "
                    f"Got {getattr(self, name)!r} instead."
                )


@dataclass(frozen=True)
class SmileFit:
    """One expiry's fitted smile with its quality figures and arbitrage verdicts.

    Attributes
    ----------
    expiry : expiry time (UTC). t_yr : years from the snapshot (ACT/365).
    forward : the forward used (USD). forward_source : "underlying", "parity" or
        "parity (interpolated)".
    params : raw SVI parameters. target : "bid_ask" or "mark_iv".
    n_quotes : quotes the fit used. dropped : reason -> count of quotes left out.
    rmse_vol_pts : RMSE of the fitted vol against the mid-price IV (bid/ask) or the mark IV, in
        vol points (1 = 1 %).
    inside_pct : share (%) of the used strikes whose fitted price is inside [bid, ask]; NaN for
        mark-only chains. inside_all_pct : the same over every two-sided quote of the expiry
        (calls and puts, in and out of the money).
    butterfly, calendar : the checks (calendar against the previous expiry; None for the first).
    iv_failures : the quote prices (bid, ask, mid, mark) with no implied volatility, one
        :class:`Failure` each (subject ``"SYMBOL side"``), e.g. an in-the-money bid under
        intrinsic value (``ARBITRAGE``).
    quotes : per option of the expiry: symbol, strike, k, option_type, bid/ask/mid/mark IVs,
        weight, used, fit_vol, fit_px, inside (the frame the plot and the tests read).
    """

    expiry: pd.Timestamp
    t_yr: float
    forward: float
    forward_source: str
    params: SVIParams
    target: str
    n_quotes: int
    dropped: dict[str, int]
    rmse_vol_pts: float
    inside_pct: float
    inside_all_pct: float
    butterfly: ArbitrageCheck
    calendar: ArbitrageCheck | None
    k_grid: NDArray[np.float64] = field(repr=False)
    quotes: pd.DataFrame = field(repr=False)
    iv_failures: tuple[Failure, ...] = ()

    def vol(self, k: ArrayLike) -> NDArray[np.float64]:
        """Fitted implied vol at log-moneyness ``k``."""
        return np.sqrt(np.maximum(self.params.total_variance(k), 0.0) / self.t_yr)

    def summary(self) -> dict[str, object]:
        """JSON-ready figures of the slice (no per-quote data)."""
        return {
            "expiry": self.expiry.isoformat(),
            "t_yr": self.t_yr,
            "forward": self.forward,
            "forward_source": self.forward_source,
            "target": self.target,
            "n_quotes": self.n_quotes,
            "dropped": dict(self.dropped),
            "rmse_vol_pts": self.rmse_vol_pts,
            "inside_pct": _none_if_nan(self.inside_pct),
            "inside_all_pct": _none_if_nan(self.inside_all_pct),
            "atm_vol": float(self.vol(0.0)),
            "params": self.params.to_dict(),
            "butterfly": self.butterfly.to_dict(),
            "calendar": None if self.calendar is None else self.calendar.to_dict(),
            "iv_failures": _count_reasons(self.iv_failures),
        }


def _count_reasons(failures: Sequence[Failure]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in failures:
        out[f.reason.value] = out.get(f.reason.value, 0) + 1
    return out


def _none_if_nan(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _fit_svi(
    k: NDArray,
    target: NDArray,
    scale: NDArray,
    weight: NDArray,
    t_yr: float,
    k_grid: NDArray,
    penalty: float,
) -> tuple[SVIParams, float]:
    """Least-squares raw SVI on ``(vol - target) / scale * sqrt(weight)`` + butterfly penalty."""
    from scipy.optimize import least_squares

    sw = np.sqrt(weight)

    def residuals(x: NDArray, penalized: bool) -> NDArray:
        p = _from_fit_vector(x)
        w = p.total_variance(k)
        vol = np.sqrt(np.maximum(w, 1e-16) / t_yr)
        r = (vol - target) / scale * sw
        if penalized:
            with np.errstate(all="ignore"):
                g = p.g(k_grid)
            r = np.concatenate([r, penalty * np.maximum(-np.nan_to_num(g, neginf=-1e3), 0.0)])
        return r

    kr = max(float(k.max() - k.min()), 0.01)
    w_atm = float(np.interp(0.0, k, target)) ** 2 * t_yr if k.size > 1 else target[0] ** 2 * t_yr
    w_hi = float(np.max(target)) ** 2 * t_yr
    lb = np.array([0.0, 0.0, -0.999, float(k.min()) - kr, 1e-3 * kr])
    ub = np.array([max(w_hi, 1e-8), 2.0, 0.999, float(k.max()) + kr, 2 * kr + 0.5])
    best = None
    # several starts on the quotes alone, then the best polished with the butterfly penalty
    for m0, s0, r0 in itertools.product(
        (0.0, float(np.median(k))), (0.1 * kr, 0.5 * kr), (-0.5, 0.3)
    ):
        x0 = np.clip([0.8 * w_atm, max(0.2 * w_atm / s0, 1e-4), r0, m0, s0], lb + 1e-9, ub - 1e-9)
        res = least_squares(
            residuals, x0, bounds=(lb, ub), x_scale="jac", max_nfev=1000, args=(False,)
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    if penalty > 0:
        best = least_squares(
            residuals,
            np.clip(best.x, lb, ub),
            bounds=(lb, ub),
            x_scale="jac",
            max_nfev=1000,
            args=(True,),
        )
    return _from_fit_vector(best.x), float(best.cost)


def fit_slice(
    quotes: pd.DataFrame,
    *,
    expiry: pd.Timestamp,
    t_yr: float,
    forward: float,
    forward_source: str,
    snapshot: pd.Timestamp,
    params: FitParams | None = None,
    inverse: bool = True,
    subject: str = "",
) -> SmileFit | Failure:
    """Fit one expiry's raw SVI smile to its quotes (the weighting rules: module docstring).

    Parameters
    ----------
    quotes : the expiry's rows of the canonical ``options`` table (one per instrument).
    expiry, t_yr : the expiry and its year fraction from ``snapshot``.
    forward, forward_source : the forward (USD) and where it came from.
    snapshot : the chain's time (staleness is measured against it).
    params : fit settings. inverse : prices are coin prices (Deribit).
    subject : the failure's subject (default ``UNDERLYING/EXPIRY``).

    Returns
    -------
    SmileFit, or Failure(MISSING_INPUTS) when fewer than ``params.min_quotes`` quotes are usable.
    """
    cfg = params or FitParams()
    q = quotes.sort_values([STRIKE, OPTION_TYPE]).reset_index(drop=True)
    subject = subject or f"{q[UNDERLYING].iloc[0] if len(q) else '?'}/{expiry:%d%b%y}".upper()
    n = len(q)
    strike = q[STRIKE].to_numpy(float)
    is_call = (q[OPTION_TYPE] == "C").to_numpy()
    f_arr = np.full(n, forward)
    t_arr = np.full(n, t_yr)
    names = q[SYMBOL].astype(str).tolist()
    col = {
        c: (q[c].to_numpy(float) if c in q.columns else np.full(n, np.nan))
        for c in (BID_PX, ASK_PX, MARK_PX, MARK_IV)
    }
    bid, ask, mark, mark_iv = col[BID_PX], col[ASK_PX], col[MARK_PX], col[MARK_IV]

    iv_failures: list[Failure] = []

    def inv(px: NDArray, side: str, wanted: NDArray | None = None) -> NDArray:
        have = np.isfinite(px) & (px > 0)
        if wanted is not None:
            have &= wanted
        out = np.full(n, np.nan)
        if have.any():
            res = implied_vol(
                px[have],
                f_arr[have],
                strike[have],
                t_arr[have],
                is_call[have],
                inverse=inverse,
                names=[f"{nm} {side}" for nm, h in zip(names, have, strict=True) if h],
            )
            out[have] = res.vol
            iv_failures.extend(res.failed())
        return out

    two_sided = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask > bid)
    bid_iv, ask_iv = inv(bid, "bid"), inv(ask, "ask")
    mid_iv = inv(np.where(two_sided, (bid + ask) / 2, np.nan), "mid")
    have_iv = np.isfinite(mark_iv) & (mark_iv > 0)
    mark_vol = np.where(have_iv, mark_iv, inv(mark, "mark", ~have_iv))
    otm = np.where(is_call, strike >= forward, strike < forward)
    k = np.log(strike / forward)
    use_bid_ask = bool((two_sided & otm).any())
    weight = np.ones(n)
    dropped: dict[str, int] = {}
    reason = np.full(n, "", dtype=object)
    reason[~otm] = "in the money"
    if use_bid_ask:
        target_kind = "bid_ask"
        no_bid = ~(np.isfinite(bid) & (bid > 0))
        no_ask = ~(np.isfinite(ask) & (ask > 0))
        crossed = ~no_bid & ~no_ask & (ask <= bid)
        no_iv = two_sided & ~(np.isfinite(bid_iv) & np.isfinite(ask_iv))
        for mask, why in (
            (no_iv, "no implied vol"),
            (crossed, "crossed or locked"),
            (no_ask, "no ask"),
            (no_bid, "no bid"),
        ):
            reason[otm & mask & (reason == "")] = why
        ts = pd.to_datetime(q[TS], utc=True)
        stale = ((snapshot - ts) > cfg.stale_after).to_numpy()
        weight = np.where(stale, cfg.stale_weight, 1.0)
        lo, hi = bid_iv, ask_iv
        centre = (lo + hi) / 2
        scale = np.maximum((hi - lo) / 2, cfg.min_half_width_vol)
    else:
        target_kind = "mark_iv"
        no_mark = ~np.isfinite(mark_vol)
        tiny = np.isfinite(mark) & (mark < cfg.min_mark_px)
        reason[otm & no_mark & (reason == "")] = "no mark"
        reason[otm & tiny & (reason == "")] = "mark under one tick"
        centre = mark_vol
        scale = np.full(n, 0.01)  # residuals in vol points
    used = reason == ""
    for why in reason[otm & ~used]:
        dropped[why] = dropped.get(why, 0) + 1
    if int(used.sum()) < cfg.min_quotes:
        return Failure(
            FailureReason.MISSING_INPUTS,
            subject,
            f"{int(used.sum())} usable quotes; at least {cfg.min_quotes} needed to fit "
            f"an SVI smile (dropped: {dropped or 'none'})",
            {"expiry": expiry.isoformat(), "n_quotes": int(used.sum()), "dropped": dropped},
        )
    ku = k[used]
    sd = float(np.interp(0.0, ku, centre[used]) * np.sqrt(t_yr))
    k_grid = np.linspace(
        ku.min() - cfg.k_margin_sd * sd, ku.max() + cfg.k_margin_sd * sd, cfg.grid_points
    )
    svi, _ = _fit_svi(
        ku, centre[used], scale[used], weight[used], t_yr, k_grid, cfg.butterfly_penalty
    )
    fit_vol = np.sqrt(np.maximum(svi.total_variance(k), 0.0) / t_yr)
    fit_px = black76_price(f_arr, strike, t_arr, fit_vol, is_call, inverse=inverse)
    inside = np.where(two_sided, (fit_px >= bid) & (fit_px <= ask), False)
    ref = mid_iv if target_kind == "bid_ask" else mark_vol
    err = (fit_vol - ref)[used]
    err = err[np.isfinite(err)]
    rmse = float(np.sqrt(np.mean(err**2)) * 100) if err.size else float("nan")
    if target_kind == "bid_ask":
        inside_pct = float(inside[used].mean() * 100)
        inside_all = float(inside[two_sided].mean() * 100)
    else:
        inside_pct = inside_all = float("nan")
    frame = pd.DataFrame(
        {
            SYMBOL: names,
            STRIKE: strike,
            "k": k,
            OPTION_TYPE: q[OPTION_TYPE].to_numpy(),
            BID_PX: bid,
            ASK_PX: ask,
            MARK_PX: mark,
            "bid_iv": bid_iv,
            "ask_iv": ask_iv,
            "mid_iv": mid_iv,
            "mark_iv": mark_vol,
            "weight": weight,
            "used": used,
            "dropped": reason,
            "fit_vol": fit_vol,
            "fit_px": fit_px,
            "inside": np.where(two_sided, inside, np.nan),
        }
    )
    return SmileFit(
        expiry=expiry,
        t_yr=t_yr,
        forward=forward,
        forward_source=forward_source,
        params=svi,
        target=target_kind,
        n_quotes=int(used.sum()),
        dropped=dropped,
        rmse_vol_pts=rmse,
        inside_pct=inside_pct,
        inside_all_pct=inside_all,
        butterfly=butterfly_check(svi, k_grid),
        calendar=None,
        k_grid=k_grid,
        quotes=frame,
        iv_failures=tuple(iv_failures),
    )


# ---- the surface -----------------------------------------------------------------------------
@dataclass(frozen=True)
class VolSurface:
    """The fitted smiles of one underlying at one snapshot (what the market state holds).

    Between two expiries total variance is interpolated linearly in time at fixed
    log-moneyness, and the log-forward linearly in time; before the first expiry ``w`` scales
    with ``t`` (the first slice's vols), after the last the last slice's vols are kept; the
    forward is held flat outside the fitted expiries.

    Attributes
    ----------
    underlying : the coin ("BTC"). snapshot : the chain's time (UTC).
    slices : the fitted expiries in time order. failures : the expiries that could not be fitted.
    """

    underlying: str
    snapshot: pd.Timestamp
    slices: tuple[SmileFit, ...]
    failures: tuple[Failure, ...] = ()

    def _t(self, expiry: object) -> float:
        e = pd.Timestamp(expiry)
        e = e.tz_localize("UTC") if e.tzinfo is None else e
        return (e - self.snapshot).total_seconds() / SECONDS_PER_YEAR

    def forward(self, expiry: object) -> float:
        """The forward (USD) for an expiry (interpolated; class notes)."""
        ts = np.array([s.t_yr for s in self.slices])
        lf = np.log([s.forward for s in self.slices])
        return float(np.exp(np.interp(self._t(expiry), ts, lf)))

    def total_variance(self, k: ArrayLike, t_yr: float) -> NDArray[np.float64]:
        """Total variance at log-moneyness ``k`` and ``t_yr`` years (class notes)."""
        if not self.slices:
            raise ConfigError(f"the {self.underlying} surface has no fitted expiry")
        if t_yr <= 0:
            raise ConfigError(f"The 't_yr' argument must be > 0. Got {t_yr!r} instead.")
        ts = [s.t_yr for s in self.slices]
        kk = np.asarray(k, dtype=float)
        if t_yr <= ts[0]:
            return np.maximum(self.slices[0].params.total_variance(kk), 0.0) * t_yr / ts[0]
        if t_yr >= ts[-1]:
            return np.maximum(self.slices[-1].params.total_variance(kk), 0.0) * t_yr / ts[-1]
        j = int(np.searchsorted(ts, t_yr))
        a, b = self.slices[j - 1], self.slices[j]
        u = (t_yr - a.t_yr) / (b.t_yr - a.t_yr)
        wa = np.maximum(a.params.total_variance(kk), 0.0)
        wb = np.maximum(b.params.total_variance(kk), 0.0)
        return (1 - u) * wa + u * wb

    def implied_vol(self, strike: ArrayLike, expiry: object) -> NDArray[np.float64]:
        """Implied vol off the surface for strikes (USD) at an expiry."""
        t = self._t(expiry)
        k = np.log(np.asarray(strike, dtype=float) / self.forward(expiry))
        return np.sqrt(self.total_variance(k, t) / t)

    def price(
        self, strike: ArrayLike, expiry: object, is_call: ArrayLike, *, inverse: bool = True
    ) -> NDArray[np.float64]:
        """Black-76 price off the surface (coin if ``inverse``, else USD), rate 0."""
        t = self._t(expiry)
        f = self.forward(expiry)
        return black76_price(
            f, strike, t, self.implied_vol(strike, expiry), is_call, inverse=inverse
        )


def _forwards(
    chain: pd.DataFrame,
    times: dict[pd.Timestamp, float],
    source: ForwardSource,
    cfg: FitParams,
    inverse: bool,
) -> tuple[dict[pd.Timestamp, float], str]:
    """Per-expiry forwards and the rule used (``underlying`` or ``parity``)."""
    under: dict[pd.Timestamp, float] = {}
    parity: dict[pd.Timestamp, float] = {}
    for exp, g in chain.groupby(EXPIRY):
        under[exp] = float(g[UNDERLYING_PX].median())
        # the venue's marks are one consistent set; a mid only where a strike has no mark
        px = g[MARK_PX].copy() if MARK_PX in g else pd.Series(np.nan, index=g.index)
        if BID_PX in g and ASK_PX in g:
            mid = (g[BID_PX] + g[ASK_PX]) / 2
            two = (g[BID_PX] > 0) & (g[ASK_PX] > g[BID_PX])
            px = px.where(px.notna() & (px > 0), mid.where(two))
        frame = pd.DataFrame({STRIKE: g[STRIKE], OPTION_TYPE: g[OPTION_TYPE], "px": px})
        wide = frame.pivot_table(index=STRIKE, columns=OPTION_TYPE, values="px", aggfunc="last")
        if {"C", "P"} <= set(wide.columns):
            parity[exp] = parity_forward(
                wide.index.to_numpy(float),
                wide["C"].to_numpy(),
                wide["P"].to_numpy(),
                inverse=inverse,
                near=under[exp],
            )
    parity = {e: f for e, f in parity.items() if np.isfinite(f)}
    if source == "auto":
        agree = bool(parity) and all(
            abs(under[e] / f - 1) <= cfg.forward_tol for e, f in parity.items()
        )
        source = "underlying" if agree else "parity"
    if source == "underlying":
        return under, "underlying"
    out: dict[pd.Timestamp, float] = {}
    if parity:
        known = sorted(parity)
        tk = np.array([times[e] for e in known])
        lf = np.log([parity[e] for e in known])
        for e in times:
            out[e] = parity.get(e, float(np.exp(np.interp(times[e], tk, lf))))
    return out, "parity"


def fit_surface(
    chain: pd.DataFrame,
    *,
    underlying: str,
    snapshot: pd.Timestamp,
    forward_source: ForwardSource = "auto",
    params: FitParams | None = None,
    inverse: bool = True,
) -> VolSurface:
    """Fit every expiry of one underlying's chain and check calendar arbitrage between them.

    Parameters
    ----------
    chain : canonical ``options`` rows of ``underlying`` at or before ``snapshot``, one per
        instrument (the latest); expired instruments are left out.
    underlying : the coin. snapshot : the chain's time (UTC).
    forward_source : "underlying" (the chain's ``underlying_px`` is the expiry's future),
        "parity" (put-call parity; expiries without a call/put pair interpolated), or "auto":
        ``underlying`` when it agrees with parity within ``params.forward_tol`` on every expiry
        (an index price does not: it lacks the basis), else parity.
    params : fit settings. inverse : coin prices (Deribit).
    """
    cfg = params or FitParams()
    if forward_source not in ("auto", "parity", "underlying"):
        raise ConfigError(
            f"The 'forward_source' parameter must be one of auto, parity, "
            f"underlying. Got {forward_source!r} instead."
        )
    snap = pd.Timestamp(snapshot)
    snap = snap.tz_localize("UTC") if snap.tzinfo is None else snap
    live = chain[(chain[UNDERLYING] == underlying) & (chain[EXPIRY] > snap) & (chain[TS] <= snap)]
    live = live.sort_values(TS, kind="stable").drop_duplicates(SYMBOL, keep="last")
    times = {
        e: (e - snap).total_seconds() / SECONDS_PER_YEAR for e in sorted(live[EXPIRY].unique())
    }
    fwd, rule = _forwards(live, times, forward_source, cfg, inverse)
    slices: list[SmileFit] = []
    failures: list[Failure] = []
    for exp in times:
        subject = f"{underlying}/{exp:%d%b%y}".upper()
        if exp not in fwd or not np.isfinite(fwd[exp]):
            failures.append(
                Failure(
                    FailureReason.MISSING_PRICE,
                    subject,
                    "no forward: no call/put pair for put-call parity in the chain",
                    {"expiry": exp.isoformat()},
                )
            )
            continue
        src = rule
        if rule == "parity":
            g = live[live[EXPIRY] == exp]
            src = "parity" if {"C", "P"} <= set(g[OPTION_TYPE]) else "parity (interpolated)"
        res = fit_slice(
            live[live[EXPIRY] == exp],
            expiry=exp,
            t_yr=times[exp],
            forward=fwd[exp],
            forward_source=src,
            snapshot=snap,
            params=cfg,
            inverse=inverse,
            subject=subject,
        )
        if isinstance(res, Failure):
            failures.append(res)
        else:
            slices.append(res)
    checked: list[SmileFit] = []
    for i, s in enumerate(slices):
        if i == 0:
            checked.append(s)
            continue
        prev = slices[i - 1]
        lo, hi = max(prev.k_grid[0], s.k_grid[0]), min(prev.k_grid[-1], s.k_grid[-1])
        grid = np.linspace(lo, hi, cfg.grid_points) if hi > lo else s.k_grid
        cal = calendar_check(prev.params, s.params, grid)
        checked.append(replace(s, calendar=cal))
    return VolSurface(underlying, snap, tuple(checked), tuple(failures))


# ---- DVOL ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DvolValue:
    """The DVOL index value in force at an as-of: ``vol`` annualized (fraction), ``ts`` the
    close of the day it belongs to, ``symbol`` (``BTC-DVOL``)."""

    symbol: str
    vol: float
    ts: pd.Timestamp


def dvol_at(bars: pd.DataFrame, underlying: str, as_of: object) -> DvolValue | Failure:
    """The last DVOL close at or before ``as_of`` (canonical ``bars`` of table ``dvol_1d``,
    percent values as published, ``ts`` the day's close); Failure(MISSING_INPUTS) if none."""
    sym = f"{underlying.upper()}-DVOL"
    t = pd.Timestamp(as_of)
    t = t.tz_localize("UTC") if t.tzinfo is None else t
    rows = bars[(bars[SYMBOL] == sym) & (bars[TS] <= t)]
    if rows.empty:
        first = bars.loc[bars[SYMBOL] == sym, TS].min() if (bars[SYMBOL] == sym).any() else None
        return Failure(
            FailureReason.MISSING_INPUTS,
            sym,
            f"no DVOL value at or before {t.isoformat()}"
            + (
                f"; first is {first.isoformat()}"
                if first is not None
                else f"; symbols: {sorted(bars[SYMBOL].unique())}"
            ),
            {"as_of": t.isoformat()},
        )
    last = rows.loc[rows[TS].idxmax()]
    return DvolValue(sym, float(last[CLOSE]) / 100.0, pd.Timestamp(last[TS]))
