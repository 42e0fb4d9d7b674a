"""Implied volatility from option prices: Black-76 on the forward, vectorized over a chain.

The inversion is Peter Jaeckel's "Let's Be Rational" as packaged by ``vollib`` (machine precision
in two iterations for any input inside the bounds); this module adds the vector interface and
the checks that turn every price without an implied volatility into a :class:`Failure` instead of a
silent NaN.

Conventions are those of :mod:`margin.pricing`: ``forward`` and ``strike`` in USD, ``t_yr`` in
years (ACT/365), ``rate`` continuously compounded (crypto books use 0), a **linear** price is the
discounted USD price per unit of underlying, an **inverse** (Deribit, coin-settled) price is the
coin price ``c = V / F`` (so ``c x F`` is the USD price).

No-arbitrage bounds, on the undiscounted USD price ``U = V / D`` (``D = exp(-rate t_yr)``)::

    call: max(F - K, 0) < U < F        put: max(K - F, 0) < U < K

A price at or below intrinsic, or at or above the upper bound, has no (positive, finite) implied
volatility: it gets ``Failure(ARBITRAGE)``. Non-finite or non-positive inputs get
``Failure(NON_FINITE)`` / ``Failure(INVALID_VALUE)``, an expired option (``t_yr <= 0``)
``Failure(EXPIRED)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from features.errors import Failure, FailureReason

__all__ = ["ImpliedVols", "implied_vol"]


@dataclass(frozen=True)
class ImpliedVols:
    """Implied volatilities of a chain with a per-option failure where none exists.

    Attributes
    ----------
    vol : array of shape (n_options,), annualized Black vol (fraction); NaN exactly where
        ``failures[i]`` is not None.
    failures : one entry per option: None, or the :class:`Failure` saying why it has no vol.
    """

    vol: NDArray[np.float64]
    failures: tuple[Failure | None, ...]

    @property
    def ok(self) -> NDArray[np.bool_]:
        """Boolean mask of the options that have an implied volatility."""
        return np.array([f is None for f in self.failures], dtype=bool)

    def failed(self) -> list[Failure]:
        """The failures, in chain order."""
        return [f for f in self.failures if f is not None]


def _lbr() -> tuple[object, tuple[type[BaseException], ...]]:
    """vollib's Let's-Be-Rational inversion and the exceptions it raises outside the bounds."""
    import vollib.helpers.exceptions as vexc
    import vollib.lets_be_rational as lbr

    errors = (
        lbr.AboveMaximumException,
        lbr.BelowIntrinsicException,
        vexc.PriceIsAboveMaximum,
        vexc.PriceIsBelowIntrinsic,
    )
    return lbr.implied_volatility_from_a_transformed_rational_guess, errors


def implied_vol(
    price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    t_yr: ArrayLike,
    is_call: ArrayLike,
    rate: ArrayLike = 0.0,
    *,
    inverse: bool = False,
    names: Sequence[str] | None = None,
) -> ImpliedVols:
    """Black-76 implied volatility of each option (arguments broadcast together).

    Parameters
    ----------
    price : the option price: discounted USD per unit (linear) or coin (``inverse``).
    forward, strike : USD, > 0.
    t_yr : years to expiry (ACT/365), > 0.
    is_call : True for calls, False for puts.
    rate : continuously compounded discount rate.
    inverse : ``price`` is a coin price c = V / F.
    names : instrument names for the failures' subjects (default ``option[i]``).

    Returns
    -------
    ImpliedVols with ``vol`` of shape (n_options,) and one failure slot per option.
    """
    p, f, k, t, c, r = (
        np.asarray(a, dtype=float)
        for a in np.broadcast_arrays(price, forward, strike, t_yr, is_call, rate)
    )
    p, f, k, t, r = (a.ravel() for a in (p, f, k, t, r))
    c = c.ravel().astype(bool)
    n = p.size
    if names is not None and len(names) != n:
        raise ValueError(
            f"The 'names' parameter must have one name per option ({n}). Got {len(names)} instead."
        )
    label = list(names) if names is not None else [f"option[{i}]" for i in range(n)]
    with np.errstate(all="ignore"):
        disc = np.exp(-r * np.where(np.isfinite(t), np.maximum(t, 0.0), 0.0))
        undisc = np.where(inverse, p * f, p) / disc
        intrinsic = np.where(c, np.maximum(f - k, 0.0), np.maximum(k - f, 0.0))
        upper = np.where(c, f, k)
    vol = np.full(n, np.nan)
    failures: list[Failure | None] = [None] * n
    invert, errors = _lbr()
    kind = "coin" if inverse else "USD"
    for i in range(n):
        typ = "call" if c[i] else "put"
        details = {
            "price": float(p[i]),
            "forward": float(f[i]),
            "strike": float(k[i]),
            "t_yr": float(t[i]),
            "option_type": typ,
            "rate": float(r[i]),
        }
        bad = next(
            (
                nm
                for nm, v in (
                    ("price", p[i]),
                    ("forward", f[i]),
                    ("strike", k[i]),
                    ("t_yr", t[i]),
                    ("rate", r[i]),
                )
                if not np.isfinite(v)
            ),
            None,
        )
        if bad is not None:
            failures[i] = Failure(
                FailureReason.NON_FINITE,
                label[i],
                f"{bad} is {details[bad]}; expected a finite number",
                details,
            )
            continue
        if f[i] <= 0 or k[i] <= 0:
            nm = "forward" if f[i] <= 0 else "strike"
            failures[i] = Failure(
                FailureReason.INVALID_VALUE, label[i], f"{nm} {details[nm]} must be > 0", details
            )
            continue
        if t[i] <= 0:
            failures[i] = Failure(
                FailureReason.EXPIRED,
                label[i],
                f"t_yr {t[i]} <= 0: expired, no implied volatility",
                details,
            )
            continue
        lo, hi = intrinsic[i], upper[i]
        if not undisc[i] > lo:
            failures[i] = Failure(
                FailureReason.ARBITRAGE,
                label[i],
                f"{typ} price {p[i]:.6g} {kind} is at or below intrinsic value "
                f"({lo * disc[i] / (f[i] if inverse else 1.0):.6g} {kind}): no implied volatility",
                {**details, "bound": "lower"},
            )
            continue
        if not undisc[i] < hi:
            failures[i] = Failure(
                FailureReason.ARBITRAGE,
                label[i],
                f"{typ} price {p[i]:.6g} {kind} is at or above its upper bound "
                f"({hi * disc[i] / (f[i] if inverse else 1.0):.6g} {kind}): no implied volatility",
                {**details, "bound": "upper"},
            )
            continue
        try:
            with np.errstate(all="ignore"):
                v = float(
                    invert(
                        float(undisc[i]),
                        float(f[i]),
                        float(k[i]),
                        float(t[i]),
                        1.0 if c[i] else -1.0,
                    )
                )
        except errors:
            failures[i] = Failure(
                FailureReason.ARBITRAGE,
                label[i],
                f"{typ} price {p[i]:.6g} {kind} lies outside the no-arbitrage "
                "bounds at machine precision: no implied volatility",
                details,
            )
            continue
        if not (np.isfinite(v) and v > 0):
            failures[i] = Failure(
                FailureReason.NON_FINITE,
                label[i],
                f"the inversion returned {v} for price {p[i]:.6g} {kind}; "
                "expected a positive finite volatility",
                details,
            )
            continue
        vol[i] = v
    return ImpliedVols(vol, tuple(failures))
