"""Black-76 prices and analytic greeks for linear and inverse (coin-settled) European options.

Conventions (also in the README, "Instruments and pricing"):

- ``forward`` F and ``strike`` K in USD; ``t_yr`` time to expiry in years, ACT/365 (calendar
  seconds / (365 x 86400), see :func:`year_fraction`); ``vol`` the annualized Black (lognormal)
  volatility as a fraction (0.6 = 60 %); ``rate`` continuously compounded, annual, for the
  discount factor D = exp(-rate x t_yr) (crypto books use 0).
- **Linear** price V = D (F N(d1) - K N(d2)) (call), D (K N(-d2) - F N(-d1)) (put), in USD per
  unit of underlying. **Inverse** (Deribit) price c = V / F, in coin per unit of underlying, so
  c x F = V.
- Greeks, per unit of underlying:

  ========  ===========================================  ==============================================
  greek     linear (USD)                                 inverse (coin)
  ========  ===========================================  ==============================================
  delta     dV/dF: USD per 1 USD move of F               F dc/dF = delta_lin - c: the premium-adjusted
                                                         delta (coins), as Deribit reports it; the coin
                                                         P&L of a 1 USD move is delta / F
  gamma     d2V/dF2: per 1 USD of F                      d(delta_inv)/dF: per 1 USD of F
  vega      dV/dvol per 1 vol point (0.01)               dc/dvol per 1 vol point
  theta     -dV/dt_yr / 365: per calendar day (negative  -dc/dt_yr / 365: coin per calendar day
            for a long option with rate = 0)
  ========  ===========================================  ==============================================

- Zero vol, or t_yr <= 0 (at or after expiry): the (discounted, at t_yr > 0) intrinsic value;
  delta is then D (call) or -D (put) in the money (F > K for a call, F < K for a put), else 0;
  gamma = vega = 0.

The vectorized functions take numpy arrays (broadcast together); :func:`black76_scalar` is the
pure-Python reference pricer (``math.erfc``), used by the tests and the benchmark's loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from features.errors import DataError

__all__ = [
    "SECONDS_PER_YEAR",
    "Greeks",
    "black76_greeks",
    "black76_price",
    "black76_scalar",
    "intrinsic",
    "year_fraction",
]

SECONDS_PER_YEAR = 365.0 * 86400.0
"""ACT/365 fixed: a year is 365 calendar days of 86,400 s."""

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def year_fraction(start: object, end: object) -> float:
    """Years from ``start`` to ``end`` (timestamps, UTC if naive), ACT/365; negative if end < start."""
    s = pd.Timestamp(start)
    e = pd.Timestamp(end)
    s = s.tz_localize("UTC") if s.tzinfo is None else s
    e = e.tz_localize("UTC") if e.tzinfo is None else e
    return (e - s).total_seconds() / SECONDS_PER_YEAR


@dataclass(frozen=True)
class Greeks:
    """Price and greeks, arrays of the broadcast shape of the inputs (units: module docstring)."""

    price: NDArray[np.float64]
    delta: NDArray[np.float64]
    gamma: NDArray[np.float64]
    vega: NDArray[np.float64]
    theta: NDArray[np.float64]


def _prep(forward: ArrayLike, strike: ArrayLike, t_yr: ArrayLike, vol: ArrayLike,
          is_call: ArrayLike, rate: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    f, k, t, v, c, r = np.broadcast_arrays(
        np.asarray(forward, dtype=np.float64), np.asarray(strike, dtype=np.float64),
        np.asarray(t_yr, dtype=np.float64), np.asarray(vol, dtype=np.float64),
        np.asarray(is_call, dtype=bool), np.asarray(rate, dtype=np.float64))
    return f, k, t, v, c, r


def _check(f: NDArray[np.float64], k: NDArray[np.float64], t: NDArray[np.float64],
           v: NDArray[np.float64], r: NDArray[np.float64]) -> None:
    """Raise DataError naming the first bad input (forward/strike > 0, vol >= 0, all finite)."""
    for name, a, lo, strict in (("forward", f, 0.0, True), ("strike", k, 0.0, True),
                                ("vol", v, 0.0, False), ("t_yr", t, -np.inf, False),
                                ("rate", r, -np.inf, False)):
        bad = ~np.isfinite(a) | ((a <= lo) if strict else (a < lo))
        if bad.any():
            i = np.flatnonzero(bad.ravel())[0]
            want = "finite" + (f" and {'>' if strict else '>='} {lo:g}" if np.isfinite(lo) else "")
            raise DataError(f"{name} must be {want}. Got {float(a.ravel()[i])!r} at element {i}.",
                            column=name)


def intrinsic(forward: ArrayLike, strike: ArrayLike, is_call: ArrayLike) -> NDArray[np.float64]:
    """Undiscounted intrinsic value max(F - K, 0) (call) or max(K - F, 0) (put), USD."""
    f = np.asarray(forward, dtype=np.float64)
    k = np.asarray(strike, dtype=np.float64)
    return np.where(np.asarray(is_call, dtype=bool), np.maximum(f - k, 0.0), np.maximum(k - f, 0.0))


def black76_price(forward: ArrayLike, strike: ArrayLike, t_yr: ArrayLike, vol: ArrayLike,
                  is_call: ArrayLike, rate: ArrayLike = 0.0, *,
                  inverse: bool = False) -> NDArray[np.float64]:
    """Black-76 price: USD per unit of underlying (linear) or coin (``inverse``: V / F).

    Parameters
    ----------
    forward, strike : USD, > 0.
    t_yr : years to expiry (ACT/365); <= 0 gives the intrinsic value.
    vol : annualized Black vol (fraction), >= 0; 0 gives the discounted intrinsic value.
    is_call : True for calls, False for puts.
    rate : continuously compounded discount rate.
    inverse : return the coin price V / F.
    """
    return black76_greeks(forward, strike, t_yr, vol, is_call, rate, inverse=inverse,
                          price_only=True).price


def black76_greeks(forward: ArrayLike, strike: ArrayLike, t_yr: ArrayLike, vol: ArrayLike,
                   is_call: ArrayLike, rate: ArrayLike = 0.0, *, inverse: bool = False,
                   price_only: bool = False) -> Greeks:
    """Black-76 price, delta, gamma, vega (per vol point) and theta (per calendar day).

    Arguments as :func:`black76_price`; units in the module docstring (linear: USD; inverse: the
    coin price c = V / F, delta premium-adjusted F dc/dF). With ``price_only`` the greeks are
    left as empty arrays.
    """
    f, k, t, v, c, r = _prep(forward, strike, t_yr, vol, is_call, rate)
    _check(f, k, t, v, r)
    sign = np.where(c, 1.0, -1.0)
    live = (t > 0) & (v > 0)
    tt = np.where(live, t, 1.0)
    vv = np.where(live, v, 1.0)
    sq = vv * np.sqrt(tt)
    d1 = (np.log(f / k) + 0.5 * sq * sq) / sq
    d2 = d1 - sq
    disc = np.exp(-r * np.maximum(t, 0.0))
    nd1 = ndtr(sign * d1)
    nd2 = ndtr(sign * d2)
    price = np.where(live, disc * sign * (f * nd1 - k * nd2), disc * intrinsic(f, k, c))
    if price_only:
        empty = np.empty(0)
        return Greeks(price / f if inverse else price, empty, empty, empty, empty)
    pdf1 = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    itm = np.where(c, f > k, f < k)
    delta = np.where(live, disc * sign * nd1, np.where(itm, disc * sign, 0.0))
    gamma = np.where(live, disc * pdf1 / (f * sq), 0.0)
    vega_ann = np.where(live, disc * f * pdf1 * np.sqrt(tt), 0.0)
    # dV/dt_yr (time to expiry) = -r V + D F pdf(d1) vol / (2 sqrt(t)); theta = -that / 365
    dv_dt = -r * price + np.where(live, disc * f * pdf1 * vv / (2.0 * np.sqrt(tt)), 0.0)
    dv_dt = np.where(t > 0, dv_dt, 0.0)
    theta = -dv_dt / 365.0
    if not inverse:
        return Greeks(price, delta, gamma, vega_ann / 100.0, theta)
    coin = price / f
    delta_inv = delta - coin  # F dc/dF
    gamma_inv = gamma - delta_inv / f  # d(delta - V/F)/dF = gamma - (delta - c)/F
    return Greeks(coin, delta_inv, gamma_inv, vega_ann / f / 100.0, theta / f)


def _ncdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


def black76_scalar(forward: float, strike: float, t_yr: float, vol: float, is_call: bool,
                   rate: float = 0.0, *, inverse: bool = False) -> float:
    """Reference Black-76 price of one option (pure Python, ``math.erfc``); units as
    :func:`black76_price`."""
    if not (forward > 0 and strike > 0 and vol >= 0 and math.isfinite(forward + strike + vol)
            and math.isfinite(t_yr) and math.isfinite(rate)):
        _check(*(np.asarray([x], dtype=np.float64) for x in (forward, strike, t_yr, vol, rate)))
    disc = math.exp(-rate * max(t_yr, 0.0))
    if t_yr <= 0.0 or vol <= 0.0:
        iv = max(forward - strike, 0.0) if is_call else max(strike - forward, 0.0)
        v = disc * iv
    else:
        sq = vol * math.sqrt(t_yr)
        d1 = (math.log(forward / strike) + 0.5 * sq * sq) / sq
        d2 = d1 - sq
        if is_call:
            v = disc * (forward * _ncdf(d1) - strike * _ncdf(d2))
        else:
            v = disc * (strike * _ncdf(-d2) - forward * _ncdf(-d1))
    return v / forward if inverse else v
